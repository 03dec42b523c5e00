"""SASRec and the next-item methods: the encoder is causal and ignores padding, the user's state is the state
after the last item, special ids are never scored, the next-item loss and the cold-start adaptation against
slow references, the cold-start task windows and DuoRec's same-next-item positives."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from selfmeta.data.dataset import Dataset
from selfmeta.encoders import build_encoder
from selfmeta.engine.config import TrainConfig
from selfmeta.engine.model import build_method, fit_preprocessor
from selfmeta.methods.coldstart import windows
from selfmeta.methods.sasrec import next_item_loss
from selfmeta.modalities.interactions import ItemVocabulary
from selfmeta.objectives.coldstart import adapt_states, items_loss

V = 23          # ids: 0-2 special, 20 catalogue items
L = 10
TINY = {"dim": 16, "depth": 1, "heads": 1}


def encoder(dropout: float = 0.0):
    """A tiny SASRec over the 20 items of a vocabulary (ids 3..22), built as the engine builds it."""
    raw = np.empty(1, dtype=object)
    raw[0] = np.array([f"i{k}" for k in range(V - 3)])
    inputs = ItemVocabulary(max_length=L).fit(raw).encoder_inputs()
    assert inputs["num_items"] == V
    torch.manual_seed(0)
    return build_encoder("sasrec", (L,), "interactions", inputs, **TINY, dropout=dropout).eval()


def rows(b: int = 6, seed: int = 0, low: int = 1) -> torch.Tensor:
    """(b, L) left-aligned rows of ``low`` to L catalogue ids, padded with 0; the first row full."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(b, L, dtype=torch.long)
    for row in range(b):
        n = L if row == 0 else int(torch.randint(low, L + 1, (1,), generator=g))
        x[row, :n] = torch.randint(3, V, (n,), generator=g)
    return x


def lengths(x: torch.Tensor) -> torch.Tensor:
    return (x != 0).sum(1)


@torch.no_grad()
def test_sasrec_is_causal():
    model = encoder()
    x = rows()
    states = model.sequence(x)
    assert states.shape == (6, L, 16)
    g = torch.Generator().manual_seed(1)
    for t in (0, 3, 7):
        changed = x.clone()
        later = changed[:, t + 1:]
        later[later != 0] = torch.randint(3, V, (int((later != 0).sum()),), generator=g)  # other items after t
        other = model.sequence(changed)
        assert torch.allclose(other[:, : t + 1], states[:, : t + 1], atol=1e-5)
        if t < 7:
            assert not torch.allclose(other[0, t + 1:], states[0, t + 1:], atol=1e-3)  # the later ones do change


@torch.no_grad()
def test_the_users_state_is_the_state_after_the_last_item():
    model = encoder()
    x = rows(low=2)
    features = model.forward_features(x)
    states = model.sequence(x)
    n = lengths(x)
    assert features.shape == (6, 16)
    for row in range(6):
        assert torch.allclose(features[row], states[row, n[row] - 1], atol=1e-6)
        alone = model.forward_features(x[row: row + 1, : n[row]])       # the row cut to its length, alone
        assert torch.allclose(features[row], alone[0], atol=1e-5)
    # a history that ends one item earlier gives another state
    shorter = x.clone()
    shorter[torch.arange(6), n - 1] = 0
    assert not torch.allclose(model.forward_features(shorter), features, atol=1e-3)


@torch.no_grad()
def test_padding_columns_change_nothing():
    model = encoder()
    x = rows(low=1)[:, :6]                                                 # rows of at most 6 items
    wide = torch.cat([x, torch.zeros(6, L - 6, dtype=torch.long)], 1)      # 4 more padding columns
    states = model.sequence(wide)
    assert states.shape == (6, 6, 16)                                      # the padding columns are cut
    assert torch.allclose(states, model.sequence(x), atol=1e-6)
    assert torch.allclose(model.forward_features(wide), model.forward_features(x), atol=1e-6)
    # a row's states do not depend on the longer rows beside it
    short = int(torch.argmin(lengths(x)))
    n = int(lengths(x)[short])
    assert n < 6
    assert torch.allclose(model.sequence(x[short: short + 1])[0, :n], states[short, :n], atol=1e-5)


@torch.no_grad()
def test_scores_leave_out_the_special_ids():
    model = encoder()
    u = model.forward_features(rows())
    scores = model.scores(u)
    assert scores.shape == (6, V)
    assert bool(torch.isneginf(scores[:, :3]).all()) and bool(torch.isfinite(scores[:, 3:]).all())
    assert torch.allclose(scores[:, 3:], u @ model.item_embeddings()[3:].T, atol=1e-5)
    assert torch.allclose(model.catalogue_scores(u), scores[:, 3:])


def test_next_item_loss_against_a_loop():
    model = encoder()
    x = rows(low=1)
    x[1, 2] = 1                                                            # an unseen item: never a target
    x[2, 1] = 2                                                            # [MASK]: never a target
    states = model.sequence(x)
    loss = next_item_loss(model, states, x)
    items = model.item_embeddings()[3:]
    terms = []
    for row in range(len(x)):
        for t in range(int(lengths(x)[row]) - 1):
            target = int(x[row, t + 1])
            if target >= 3:
                terms.append(F.cross_entropy((states[row, t] @ items.T).unsqueeze(0), torch.tensor([target - 3])))
    assert torch.allclose(loss, torch.stack(terms).mean(), atol=1e-5)
    # rows of one item have no next item: the loss is 0, and still has a gradient path
    single = torch.tensor([[4, 0, 0], [5, 0, 0]])
    empty = next_item_loss(model, model.sequence(single), single)
    assert float(empty.detach()) == 0.0 and empty.requires_grad


def test_adapt_states_is_a_plain_gradient_step():
    g = torch.Generator().manual_seed(0)
    W = torch.randn(7, 4, generator=g, dtype=torch.float64)                # 7 catalogue items, d = 4
    u = torch.randn(3, 4, generator=g, dtype=torch.float64)

    def scores(state):
        return state @ W.T

    support = torch.tensor([[0, 5, 2], [3, 3, 0], [1, 2, 4]])
    valid = torch.tensor([[True, True, True], [True, True, False], [False, False, False]])

    def by_hand(state, lr):
        """d/du of the mean cross-entropy of a row's items: (softmax(u W^T) - mean one-hot of the items) W."""
        p = torch.softmax(state @ W.T, dim=1)
        hot = (F.one_hot(support, 7).double() * valid.unsqueeze(2)).sum(1) / valid.sum(1, keepdim=True).clamp_min(1)
        grad = (p - hot) @ W
        grad[~valid.any(1)] = 0.0                                          # no support item: no step
        return state - lr * grad

    adapted = adapt_states(scores, u, support, valid, 1, 0.5)
    assert torch.allclose(adapted, by_hand(u, 0.5))
    assert torch.allclose(adapted[2], u[2])
    twice = adapt_states(scores, u, support, valid, 2, 0.5)
    assert torch.allclose(twice, by_hand(by_hand(u, 0.5), 0.5))
    rates = torch.tensor([0.1, 1.0, 0.0, 2.0], dtype=torch.float64)       # per-dimension rates (Meta-SGD)
    assert torch.allclose(adapt_states(scores, u, support, valid, 1, rates), by_hand(u, rates))
    assert torch.equal(adapt_states(scores, u, support, valid, 0, 0.5), u)
    # the steps lower the support loss
    before = items_loss(scores, u, support, valid)[:2]
    after = items_loss(scores, adapt_states(scores, u, support, valid, 3, 0.5), support, valid)[:2]
    assert bool((after < before).all())


@pytest.mark.parametrize("first", [0.0, 0.5, 1.0])
def test_coldstart_windows_stay_inside_each_row(first):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    b = 200
    x = torch.zeros(b, 12, dtype=torch.long)
    for row in range(b):
        n = int(torch.randint(2, 13, (1,), generator=g))
        x[row, :n] = torch.randperm(40, generator=g)[:n] + 3               # distinct items: positions are findable
    shots, queries = 4, 3
    support, query, valid = windows(x, shots, queries, first)
    assert support.shape == (b, shots) and query.shape == valid.shape == (b, queries)
    starts = []
    for row in range(b):
        items = x[row][x[row] != 0].tolist()
        k = int((support[row] != 0).sum())
        assert 1 <= k <= min(shots, len(items) - 1)
        assert (support[row] != 0).tolist() == [True] * k + [False] * (shots - k)   # left-aligned
        s = items.index(int(support[row, 0]))
        assert support[row, :k].tolist() == items[s: s + k]
        expected = items[s + k: s + k + queries]                           # right after the support, within the row
        assert len(expected) >= 1
        assert valid[row].tolist() == [True] * len(expected) + [False] * (queries - len(expected))
        assert query[row, : len(expected)].tolist() == expected and query[row, len(expected):].eq(0).all()
        starts.append(s)
    share_first = np.mean(np.array(starts) == 0)
    if first == 1.0:
        assert share_first == 1.0
    elif first == 0.0:
        assert 0.0 < share_first < 0.5
    else:
        assert share_first > 0.5


def tiny_interactions(n: int = 40, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    raw = np.empty(n, dtype=object)
    raw[:] = [np.array([f"m{rng.integers(0, 12)}" for _ in range(rng.integers(2, 9))]) for _ in range(n)]
    raw[0] = np.array(["solo", "m1", "m2"])                                # "solo" is never a next item
    return fit_preprocessor(TrainConfig(input_options={"max_length": 8}),
                            Dataset(None, None, [], "interactions", "tiny", raw=raw))


def test_duorec_positives_follow_the_same_item():
    data = tiny_interactions()
    cfg = TrainConfig(method="duorec", encoder="sasrec", epochs=1, device="cpu", encoder_options=TINY)
    method = build_method(cfg, data)
    method.on_epoch_start(0, data)
    items = data.items.long()
    # the index: every (row, position >= 1) of a catalogue item, once, grouped by the item there
    expected = sorted((r, p) for r, p in zip(*torch.nonzero(items[:, 1:] >= 3, as_tuple=True)))
    entries = method.entries.tolist()
    assert sorted((r, p - 1) for r, p in entries) == [(int(r), int(p)) for r, p in expected]
    for item in range(3, int(items.max()) + 1):
        start, end = int(method.starts[item]), int(method.starts[item + 1])
        assert all(int(items[r, p]) == item for r, p in entries[start:end])
    # drawn positives: another row, whose item at the drawn position is the anchor's target
    torch.manual_seed(0)
    rows, positions = torch.nonzero(items[:, 1:] >= 3, as_tuple=True)
    targets = items[rows, positions + 1]
    found_any = 0
    for _ in range(5):
        prefixes, where, found = method.positives(rows, targets)
        assert bool((where >= 1).all())
        hit = prefixes[torch.arange(len(rows)), where]
        assert torch.equal(hit[found], targets[found])
        chosen_rows = method.entries[:, 0]
        assert bool((where[found] < (prefixes[found] != 0).sum(1)).all())
        found_any += int(found.sum())
        # not found: the draw fell on the anchor's own row (the only one, or one of several holding the item)
        for r, t in zip(rows[~found].tolist(), targets[~found].tolist()):
            owners = {int(chosen_rows[i]) for i in range(int(method.starts[t]), int(method.starts[t + 1]))}
            assert r in owners
    assert found_any > 0.8 * 5 * len(rows)
    # an item that never follows another has no positive to draw
    solo = int(data.preprocessor.encode(np.array(["solo"]))[0])
    assert solo >= 3 and int(method.starts[solo]) == int(method.starts[solo + 1])
    _, _, found = method.positives(torch.tensor([5, 6]), torch.tensor([solo, solo]))
    assert not bool(found.any())
    # a training step with the contrastive term runs and is finite
    x = data.spec.to_model(data.take(torch.arange(16)), "cpu")
    method.train()
    out = method(x, torch.arange(16))
    assert torch.isfinite(out.loss) and "contrast" in out.logs and 0 < out.logs["supervised"] <= 1
