"""The memory meta-learner (Kaiser et al. 2017): the write rules and ageing against a hand-worked sequence,
the margin loss against a per-query loop, the training step, the few-shot adaptation and the stream."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_learners import SPEC, episodes, learner

from selfmeta.data.episodes import EpisodeSpec
from selfmeta.errors import SelfmetaError
from selfmeta.meta.memory import NO_KEY, margin_loss, read, write

D = 6


def memory(**options):
    """The memory learner on the tiny float64 MLP of tests/meta/test_learners.py."""
    return learner("memory", SPEC, **options)


def unit(*xs: float) -> torch.Tensor:
    return F.normalize(torch.tensor([xs], dtype=torch.float64), dim=1)


def by_value(keys, values, ages):
    """{value: (key, age)} of the filled slots: slot positions are random on ties, contents are not."""
    return {int(v): (keys[i], int(ages[i])) for i, v in enumerate(values) if v >= 0}


def test_write_rules_and_ageing_by_hand():
    g = torch.Generator().manual_seed(0)
    keys, values, ages = torch.zeros(4, 2, dtype=torch.float64), torch.full((4,), -1), torch.zeros(4, dtype=torch.long)
    a, b, c = unit(1, 0), unit(1, 1), unit(0, 1)
    # 1. an empty memory: a miss, into an empty slot; every slot ages
    state = write(keys, values, ages, a, torch.tensor([7]), g)
    assert torch.equal(values, torch.full((4,), -1)) and torch.equal(ages, torch.zeros(4, dtype=torch.long))  # inputs kept
    mem = by_value(*state)
    assert list(mem) == [7] and torch.equal(mem[7][0], a[0]) and mem[7][1] == 0
    assert sorted(state[2].tolist()) == [0, 1, 1, 1]
    # 2. b's nearest key holds its label: merged, key <- normalize(a + b), age 0
    state = write(*state, b, torch.tensor([7]), g)
    mem = by_value(*state)
    torch.testing.assert_close(mem[7][0], F.normalize(a[0] + b[0], dim=0))
    assert sorted(state[2].tolist()) == [0, 2, 2, 2]
    # 3. c's nearest key (7) holds another label: a miss, into an empty slot (empty before any filled one)
    state = write(*state, c, torch.tensor([8]), g)
    assert {k: v[1] for k, v in by_value(*state).items()} == {7: 1, 8: 0}
    # 4. two misses of one batch: distinct slots; the batch sees the memory before the write
    state = write(*state, torch.cat([unit(-1, 0), unit(0, -1)]), torch.tensor([9, 9]), g)
    assert sorted(state[1].tolist()) == [7, 8, 9, 9]
    assert sorted(state[2].tolist()) == [0, 0, 1, 2]
    # 5. a miss in a full memory evicts the oldest slot (7, age 3)
    f = unit(0.6, -0.8)                                                    # nearest: (0, -1), value 9
    state = write(*state, f, torch.tensor([11]), g)
    assert sorted(state[1].tolist()) == [8, 9, 9, 11]
    assert sorted(state[2].tolist()) == [0, 1, 1, 2]
    # 6. two hits of one slot are summed, then normalized once; the slot is not evicted by a miss of the batch
    h = unit(0.1, 1)
    state = write(*state, torch.cat([c, h, unit(-0.1, -1)]), torch.tensor([8, 8, 12]), g)
    mem = by_value(*state)
    eight = [i for i, v in enumerate(state[1]) if v == 8]
    assert len(eight) == 1
    torch.testing.assert_close(state[0][eight[0]], F.normalize(c[0] + c[0] + h[0], dim=0))
    assert sorted(state[1].tolist()) == [8, 9, 11, 12]                    # 12 evicted one of the two 9s (age 2)
    assert mem[8][1] == 0 and mem[12][1] == 0 and mem[11][1] == 1 and mem[9][1] == 2


def test_write_breaks_age_ties_at_random_and_refuses_a_batch_larger_than_the_memory():
    keys = torch.eye(3, dtype=torch.float64)
    values, ages = torch.tensor([0, 1, 2]), torch.tensor([5, 5, 1])
    evicted = set()
    for seed in range(20):
        _, new, _ = write(keys, values, ages, unit(-1, -1, -1), torch.tensor([3]), torch.Generator().manual_seed(seed))
        evicted.add(int((new == 3).nonzero()))
    assert evicted == {0, 1}                                               # the two oldest, never slot 2
    with pytest.raises(SelfmetaError, match="a write of 4 items does not fit a memory of 3 slots"):
        write(keys, values, ages, F.normalize(torch.randn(4, 3, dtype=torch.float64), dim=1), torch.arange(4))


def test_read_finds_the_nearest_filled_slot():
    keys = torch.cat([unit(1, 0), unit(0, 1), torch.zeros(1, 2, dtype=torch.float64)])
    # the second query is nearer the empty slot's zero key (similarity 0) than any filled one: ignored
    slot, value = read(keys, torch.tensor([4, 5, -1]), torch.cat([unit(1, 0.2), unit(-1, -0.5)]))
    assert slot.tolist() == [0, 1] and value.tolist() == [4, 5]
    _, empty = read(torch.zeros(2, 2), torch.tensor([-1, -1]), unit(1, 0).float())
    assert empty.tolist() == [-1]


def reference_margin_loss(q, keys, values, labels, margin):
    out = []
    for i in range(len(q)):
        pos, neg = None, None
        for j in range(len(keys)):
            s = float(q[i].detach() @ keys[j].detach())
            if values[j] == labels[i]:
                pos = s if pos is None else max(pos, s)
            elif values[j] >= 0:
                neg = s if neg is None else max(neg, s)
        out.append(0.0 if neg is None else max(0.0, neg - (pos if pos is not None else 0.0) + margin))
    return torch.tensor(out, dtype=torch.float64)


def test_margin_loss_against_a_per_query_loop():
    g = torch.Generator().manual_seed(3)
    q = F.normalize(torch.randn(8, 5, generator=g, dtype=torch.float64), dim=1).requires_grad_(True)
    keys = F.normalize(torch.randn(10, 5, generator=g, dtype=torch.float64), dim=1).requires_grad_(True)
    values = torch.tensor([0, 1, 2, 3, 0, 1, -1, 2, -1, 3])
    labels = torch.tensor([0, 1, 2, 3, 5, 6, 0, 2])                         # 5 and 6: no positive
    for margin in (0.1, 1.5):
        loss = margin_loss(q, keys, values, labels, margin)
        torch.testing.assert_close(loss, reference_margin_loss(q, keys, values, labels, margin))
    assert (loss > 0).all()
    loss.sum().backward()
    assert keys.grad is None and q.grad.abs().sum() > 0                   # the memory is not differentiated
    # no negative: every filled key holds the query's label (or the memory is empty) -> no loss
    alone = torch.tensor([1, -1, 1, -1, -1, -1, -1, -1, -1, -1])
    assert torch.equal(margin_loss(q.detach(), keys, alone, torch.ones(8, dtype=torch.long), 0.1), torch.zeros(8, dtype=torch.float64))
    assert torch.equal(margin_loss(q.detach(), keys, torch.full((10,), -1), labels, 0.1), torch.zeros(8, dtype=torch.float64))


def test_forward_trains_the_backbone_and_the_memory_persists_in_the_state_dict():
    model = memory(size=128, margin=1.0)
    x = episodes()
    out = model(x, torch.arange(len(x)))
    assert torch.isfinite(out.loss) and out.loss > 0 and 0 <= out.logs["accuracy"] <= 1
    out.loss.backward()
    assert all(p.grad is not None for p in model.backbone.parameters())
    assert sum(float(p.grad.abs().sum()) for p in model.backbone.parameters()) > 0
    assert int(model.next_value) == 4 * SPEC.ways
    first = set(model.values.tolist()) - {-1}
    assert first == set(range(12))                                         # 4 tasks x 3 fresh ids
    filled = model.values >= 0
    torch.testing.assert_close(model.keys[filled].norm(dim=1), torch.ones(int(filled.sum()), dtype=torch.float64))
    state = model.state_dict()
    assert {"keys", "values", "ages", "next_value"} <= set(state)
    copy = memory(size=128, margin=1.0)
    copy.load_state_dict(state)
    assert torch.equal(copy.keys, model.keys) and torch.equal(copy.ages, model.ages) and int(copy.next_value) == 12
    # a second step: fresh ids; the first step's entries (at most 48) stay in the 128 slots, untouched, and
    # age by one per write (support and queries of 4 tasks)
    old_keys, old_values, old_ages = model.keys[filled].clone(), model.values[filled].clone(), model.ages[filled].clone()
    model(x, None)
    assert set(model.values.tolist()) - {-1} == set(range(24))
    assert torch.equal(model.keys[filled], old_keys) and torch.equal(model.values[filled], old_values)
    assert torch.equal(model.ages[filled], old_ages + 8)


def test_a_memory_of_one_episode_evicts_and_a_smaller_one_is_refused():
    model = memory(size=SPEC.size)
    out = model(episodes(), None)
    # the oldest entries went first: nothing older than the third task is left, all of the last task is there
    assert torch.isfinite(out.loss) and (model.values >= 6).all() and {9, 10, 11} <= set(model.values.tolist())
    with pytest.raises(SelfmetaError, match=r"memory of 11 slots is smaller than one episode of 12 items"):
        memory(size=SPEC.size - 1)


def test_adapt_predict_scores_each_class_by_its_best_support_key_and_leaves_the_memory_alone():
    model = memory(size=64, key_dim=0)
    model(episodes(), None)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    spec = EpisodeSpec(ways=4, shots=2, queries=3)
    support, query = spec.split(episodes(tasks=2, spec=spec))
    s_y, _ = spec.labels()
    model.eval()
    with torch.no_grad():
        logits = model.adapt_predict(support, s_y, query)
        s = F.normalize(model.backbone(support.flatten(0, 1)), dim=1).view(2, 8, -1)
        q = F.normalize(model.backbone(query.flatten(0, 1)), dim=1).view(2, 12, -1)
    expected = torch.stack([(q @ s.transpose(1, 2))[:, :, s_y == n].amax(-1) for n in range(4)], -1)
    torch.testing.assert_close(logits, expected)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    # a class with no support item gets the finite floor
    partial = model.adapt_predict(support[:, :2], torch.tensor([0, 2]), query)
    assert torch.equal(partial[..., 1], torch.full((2, 12), NO_KEY, dtype=torch.float64))


def test_observe_recalls_a_class_at_its_second_sighting():
    model = memory(size=64).eval()
    g = torch.Generator().manual_seed(5)
    centres = torch.cat([torch.eye(D), -torch.eye(D)]).double() * 4          # 12 well-separated classes

    def sighting():
        return centres + 0.05 * torch.randn(centres.shape, generator=g, dtype=torch.float64)

    labels = torch.arange(100, 112)
    assert model.observe(sighting(), labels).tolist() == [-1] * 12          # an empty memory knows nothing
    assert torch.equal(model.observe(sighting(), labels), labels)
    assert int(model.next_value) == 112
    with pytest.raises(SelfmetaError, match="observe takes labels >= 0"):
        model.observe(sighting()[:1], torch.tensor([-1]))


def test_episode_negatives_ignore_earlier_episodes_and_memory_negatives_do_not():
    x = episodes()
    for negatives, same in (("episode", True), ("memory", False)):
        used, fresh = memory(size=128, margin=1.0, negatives=negatives), memory(size=128, margin=1.0, negatives=negatives)
        used(x, None)                                   # earlier episodes' entries now fill the memory
        fresh.load_state_dict({k: v for k, v in used.state_dict().items() if k not in ("keys", "values", "ages")},
                              strict=False)             # the same weights and ids, an empty memory
        with torch.no_grad():
            assert (float(used(x, None).loss) == pytest.approx(float(fresh(x, None).loss))) == same
