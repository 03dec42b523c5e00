"""Adaptation to few labels: the Tip-Adapter cache against a naive loop, its selection on the support set
only, and few-shot fine-tuning of a whole backbone; both through ``selfmeta evaluate``."""

from __future__ import annotations

import inspect
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from selfmeta.cli import main
from selfmeta.data.dataset import Dataset
from selfmeta.encoders import build_encoder
from selfmeta.encoders.base import Backbone, Normalize
from selfmeta.errors import SelfmetaError
from selfmeta.evaluation import (
    few_labels, finetune_backbone, finetune_predict, finetune_probe, linear_probe, run_tip, select_tip,
    tip_adapter_logits, tip_probe,
)
from selfmeta.evaluation import adapt
from selfmeta.evaluation.adapt import TIP_ALPHAS, TIP_BETAS, TIP_DEFAULT, PrototypeHead
from selfmeta.modalities import get_modality

SCORES = ("accuracy", "precision_macro", "recall_macro", "f1_macro")


def blobs(n_per_class: int, classes: int = 3, d: int = 6, seed: int = 0, spread: float = 1.0):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(classes), n_per_class)
    x = 2.0 * np.eye(d)[:classes][y] + spread * rng.normal(size=(len(y), d))
    order = rng.permutation(len(y))
    return x[order].astype(np.float32), y[order]


# ------------------------------------------------------------------------------------------------ tip


def naive_tip(support_x, support_y, query_x, alpha, beta, head):
    """One query, one key at a time, from the formula."""
    out = np.array(head, dtype=np.float64)
    for q in range(len(query_x)):
        qn = query_x[q] / math.sqrt(sum(v * v for v in query_x[q]))
        for s in range(len(support_x)):
            kn = support_x[s] / math.sqrt(sum(v * v for v in support_x[s]))
            affinity = math.exp(-beta * (1.0 - float(np.dot(qn, kn))))
            out[q, support_y[s]] += alpha * affinity
    return out


@pytest.mark.parametrize("alpha,beta", [(1.0, 5.5), (0.5, 1.0), (4.0, 10.0)])
def test_tip_adapter_logits_match_a_loop(alpha, beta):
    rng = np.random.default_rng(1)
    support_x, support_y = rng.normal(size=(12, 5)), rng.integers(0, 4, 12)
    query_x, head = rng.normal(size=(7, 5)), rng.normal(size=(7, 4))
    expected = naive_tip(support_x, support_y, query_x, alpha, beta, head)
    got = tip_adapter_logits(support_x, support_y, query_x, alpha, beta, head)
    assert isinstance(got, np.ndarray) and got.shape == (7, 4)
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)
    tensor = tip_adapter_logits(torch.tensor(support_x), torch.tensor(support_y), torch.tensor(query_x), alpha, beta,
                                torch.tensor(head))
    assert isinstance(tensor, torch.Tensor)
    np.testing.assert_allclose(tensor.numpy(), expected, rtol=1e-10, atol=1e-12)


def test_tip_with_alpha_zero_is_the_head_alone(monkeypatch):
    rng = np.random.default_rng(2)
    head = rng.normal(size=(5, 3))
    out = tip_adapter_logits(rng.normal(size=(6, 4)), rng.integers(0, 3, 6), rng.normal(size=(5, 4)), 0.0, 5.5, head)
    np.testing.assert_array_equal(out, head)
    # the probe with alpha = 0 predicts as the linear probe does (the same head)
    monkeypatch.setattr(adapt, "select_tip", lambda x, y: {"alpha": 0.0, "beta": 5.5, "cv_accuracy": None})
    train_x, train_y = blobs(4, seed=3, spread=2.0)
    test_x, test_y = blobs(30, seed=4, spread=2.0)
    tip = tip_probe(train_x, train_y, test_x, test_y)
    assert tip["alpha"] == 0.0
    linear = linear_probe(train_x, train_y, test_x, test_y)
    assert {k: tip[k] for k in SCORES} == pytest.approx(linear)


def test_tip_selection_sees_the_support_set_only(monkeypatch):
    assert list(inspect.signature(select_tip).parameters)[:2] == ["support_x", "support_y"]
    assert not any("test" in p or "query" in p for p in inspect.signature(select_tip).parameters)
    train_x, train_y = blobs(20, seed=5)
    test_x, test_y = blobs(25, seed=6)
    calls = []

    def spy(x, y):
        calls.append((np.array(x), np.array(y)))
        return select_tip(x, y)

    monkeypatch.setattr(adapt, "select_tip", spy)
    result = run_tip(train_x, train_y, test_x, test_y, labels_per_class=3, seeds=2)
    assert len(calls) == 2
    train_rows = {row.tobytes() for row in train_x}
    for x, y in calls:  # K items of every class, all of them training items
        assert len(x) == 9 and np.bincount(y).tolist() == [3, 3, 3]
        assert all(row.tobytes() in train_rows for row in x.astype(np.float32))
    # scrambled test labels change the scores, never the chosen alpha and beta
    scrambled = run_tip(train_x, train_y, test_x, np.random.default_rng(0).permutation(test_y), 3, 2)
    assert (scrambled["alpha"], scrambled["beta"]) == (result["alpha"], result["beta"])
    assert result["protocol"] == "tip" and result["labels_per_class"] == 3 and result["seeds"] == 2
    assert set(SCORES) | {"accuracy_std"} <= set(result) and result["accuracy"] > 0.5


def test_select_tip_picks_from_the_grid():
    x, y = blobs(4, seed=7)
    chosen = select_tip(x, y)
    assert chosen["alpha"] in TIP_ALPHAS and chosen["beta"] in TIP_BETAS
    assert 0.0 <= chosen["cv_accuracy"] <= 1.0
    assert select_tip(x, y) == chosen  # deterministic
    one = select_tip(x[np.unique(y, return_index=True)[1]], np.arange(3))  # one item per class: the defaults
    assert (one["alpha"], one["beta"]) == TIP_DEFAULT and one["cv_accuracy"] is None


def test_tip_cache_fixes_what_a_linear_head_cannot():
    """Each class two far-apart clusters (XOR): a linear head is near chance, the cache is not; the
    selection, on the support set only, must then give the cache weight."""
    rng = np.random.default_rng(8)

    def xor(n):
        corners = np.array([[1, 1], [-1, -1], [1, -1], [-1, 1]], dtype=np.float64)
        c = rng.integers(0, 4, n)
        x = corners[c] * 3 + 0.3 * rng.normal(size=(n, 2))
        return np.hstack([x, np.ones((n, 1))]), (c >= 2).astype(np.int64)   # a constant: not all cosines equal

    train_x, train_y = xor(200)
    test_x, test_y = xor(200)
    result = few_labels(tip_probe, train_x, train_y, test_x, test_y, 8, seeds=2)
    linear = few_labels(linear_probe, train_x, train_y, test_x, test_y, 8, seeds=2)
    assert result["alpha"] > 0 and result["accuracy"] > linear["accuracy"] + 0.2


def test_tip_errors():
    x, y = blobs(4)
    with pytest.raises(SelfmetaError, match="labels-per-class"):
        run_tip(x, y, x, y, None)
    with pytest.raises(SelfmetaError, match="seeds"):
        run_tip(x, y, x, y, 2, seeds=0)
    with pytest.raises(SelfmetaError, match="classes"):
        tip_adapter_logits(x, y + 5, x, 1.0, 1.0, np.zeros((len(x), 3)))


# ------------------------------------------------------------------------------------------- finetune

TABLE = get_modality("table")


def table_backbone(d: int = 4, seed: int = 0) -> Backbone:
    torch.manual_seed(seed)
    encoder = build_encoder("mlp", (d,), "table", widths=(16, 8))
    return Backbone(Normalize(torch.zeros(d), torch.ones(d)), encoder).eval()


def table_problem(n: int, seed: int, d: int = 4):
    """Two classes told apart by the sign of feature 0 alone, the other features larger noise."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g) * torch.tensor([1.0] + [3.0] * (d - 1))
    y = (x[:, 0] > 0).long()
    x[:, 0] += torch.where(y == 1, 0.5, -0.5)
    return x, y


def support_accuracy(backbone, head, x, y) -> float:
    with torch.no_grad():
        return float((head(backbone(x)).argmax(1) == y).float().mean())


def test_finetune_tunes_a_copy_and_fits_the_support_set():
    backbone = table_backbone()
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    x, y = table_problem(24, seed=1)
    with torch.no_grad():
        start = support_accuracy(backbone, PrototypeHead(backbone(x), y, 2), x, y)
    tuned, head = finetune_backbone(backbone, TABLE, x, y, 2, steps=60, lr=1e-2, head_lr=3e-2, batch_size=8)
    assert tuned is not backbone and not tuned.training and not backbone.training
    after = backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)               # the original is untouched
    assert any(not torch.equal(before[k], v) for k, v in tuned.state_dict().items() if k.endswith("weight"))
    bn = [m for m in tuned.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    assert all(torch.equal(m.running_mean, before[f"encoder.body.{i}.running_mean"])   # BN statistics kept
               for m, i in zip(bn, (2, 5)))
    end = support_accuracy(tuned, head, x, y)
    assert end > start and end == 1.0
    np.testing.assert_array_equal(finetune_predict(tuned, head, Dataset(x, y, ["a", "b"], "table")),
                                  head(tuned(x)).argmax(1).numpy())


def test_finetune_is_deterministic_and_leaves_the_global_random_state():
    backbone = table_backbone()
    x, y = table_problem(10, seed=2)
    state = torch.random.get_rng_state()
    a, head_a = finetune_backbone(backbone, TABLE, x, y, 2, steps=5, seed=3)
    b, head_b = finetune_backbone(backbone, TABLE, x, y, 2, steps=5, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k
    assert torch.equal(head_a.linear.weight, head_b.linear.weight)
    c, _ = finetune_backbone(backbone, TABLE, x, y, 2, steps=5, seed=4, batch_size=4)
    assert any(not torch.equal(va, vc) for va, vc in zip(a.state_dict().values(), c.state_dict().values()))


@pytest.mark.parametrize("options,match", [
    ({"steps": 0}, "steps"), ({"lr": -1.0}, "lr"), ({"head_lr": float("nan")}, "head_lr"),
    ({"weight_decay": -0.1}, "weight_decay"), ({"batch_size": 1.5}, "batch_size"), ({"steps": True}, "steps"),
])
def test_finetune_rejects_nonsense_options(options, match):
    x, y = table_problem(6, seed=0)
    with pytest.raises(SelfmetaError, match=match) as info:
        finetune_backbone(table_backbone(), TABLE, x, y, 2, **options)
    assert "\n" not in str(info.value)


def test_finetune_rejects_bad_labels_and_unknown_options():
    x, y = table_problem(6, seed=0)
    with pytest.raises(SelfmetaError, match="classes in"):
        finetune_backbone(table_backbone(), TABLE, x, y + 1, 2)
    with pytest.raises(SelfmetaError, match="one label per support item"):
        finetune_backbone(table_backbone(), TABLE, x, y[:3], 2)
    with pytest.raises(SelfmetaError, match="unknown fine-tuning option 'momentum'"):
        finetune_probe(table_backbone(), Dataset(x, y, ["a", "b"], "table"), Dataset(x, y, ["a", "b"], "table"), 2,
                       momentum=0.9)


def test_finetune_probe_has_the_shape_of_few_labels():
    train_x, train_y = table_problem(40, seed=5)
    test_x, test_y = table_problem(30, seed=6)
    train, test = Dataset(train_x, train_y, ["neg", "pos"], "table"), Dataset(test_x, test_y, ["neg", "pos"], "table")
    backbone = table_backbone()
    result = finetune_probe(backbone, train, test, labels_per_class=3, seeds=2, steps=5)
    assert set(result) == {*SCORES, "accuracy_std", "labels_per_class", "seeds"}
    assert result["labels_per_class"] == 3 and result["seeds"] == 2 and all(0 <= result[k] <= 1 for k in SCORES)
    assert result == finetune_probe(backbone, train, test, labels_per_class=3, seeds=2, steps=5)   # deterministic
    with pytest.raises(SelfmetaError, match="only"):
        finetune_probe(backbone, train, test, labels_per_class=100, seeds=1)


# ------------------------------------------------------------------------------------------------ CLI


def cli_run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def table_run(tmp_path_factory) -> tuple[Path, Path]:
    """A 3-class CSV of 90 rows and a run pretrained on it for a few steps."""
    folder = tmp_path_factory.mktemp("adapt")
    rng = np.random.default_rng(0)
    labels = np.repeat(["a", "b", "c"], 30)
    centres = {"a": 0.0, "b": 3.0, "c": -3.0}
    lines = ["x0,x1,x2,x3,label"] + [",".join(f"{v:.4f}" for v in rng.normal(centres[c], 1.0, 4)) + f",{c}"
                                     for c in labels]
    (folder / "t.csv").write_text("\n".join(lines) + "\n")
    assert main(["pretrain", "--data", str(folder / "t.csv"), "--out", str(folder / "run"), "--steps", "3",
                 "batch_size=16", "encoder.widths=[16]", "--no-progress"]) == 0
    return folder / "t.csv", folder / "run"


@pytest.mark.parametrize("protocol", ["tip", "finetune"])
def test_cli_evaluate_adapts_with_few_labels(capsys, table_run, protocol):
    data, run = table_run
    capsys.readouterr()
    extra = ["steps=10"] if protocol == "finetune" else []
    code, out, err = cli_run(capsys, "evaluate", run, "--data", data, "--protocol", protocol, "--labels-per-class", 3,
                             "--seeds", 2, *extra)
    assert code == 0, err
    result = json.loads(out.strip())
    assert result["protocol"] == protocol and result["labels_per_class"] == 3 and result["seeds"] == 2
    assert 0.0 <= result["f1_macro"] <= 1.0 and result["accuracy"] > 0.5 and result["accuracy_std"] >= 0
    assert json.loads((run / "metrics.json").read_text()) == result
    if protocol == "finetune":
        assert result["finetune_options"]["steps"] == 10 and result["finetune_options"]["lr"] == 1e-4


@pytest.mark.parametrize("argv,fragment", [
    (["--protocol", "tip"], "--protocol tip needs --labels-per-class"),
    (["--protocol", "finetune"], "--protocol finetune needs --labels-per-class"),
    (["--protocol", "finetune", "--labels-per-class", "2", "steps=0"], "steps must be an integer"),
    (["--protocol", "finetune", "--labels-per-class", "2", "momentum=1"], "unknown fine-tuning option"),
    (["--protocol", "tip", "--labels-per-class", "2", "steps=3"], "steps=3 is for --protocol anomaly, finetune or coldstart"),
    (["--protocol", "finetune", "--labels-per-class", "2", "--detector", "knn"], "--detector is for --protocol anomaly"),
])
def test_cli_adapt_errors(capsys, table_run, argv, fragment):
    data, run = table_run
    capsys.readouterr()
    code, out, err = cli_run(capsys, "evaluate", run, "--data", data, *argv)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], err
