"""The label-free quality signals against hand computations, and the probe's fixed sample and views."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from selfmeta.evaluation.quality import QualityProbe, alignment, lidar, rankme, retrieval, uniformity


def test_rankme_of_a_rank_one_matrix_is_one():
    z = torch.randn(50, 1) @ torch.randn(1, 16)
    assert rankme(z) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("size", [2, 7, 32])
def test_rankme_of_an_orthogonal_matrix_is_its_size(size):
    q, _ = torch.linalg.qr(torch.randn(size, size, dtype=torch.float64))
    assert rankme(3.0 * q) == pytest.approx(size, rel=1e-4)


def test_rankme_against_a_hand_computation():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(40, 6)) * np.array([5.0, 3.0, 1.0, 0.5, 0.1, 0.01])   # unequal directions
    s = np.linalg.svd(z, compute_uv=False)
    p = s / s.sum() + 1e-7
    expected = math.exp(-sum(pk * math.log(pk) for pk in p))
    assert rankme(torch.as_tensor(z, dtype=torch.float32)) == pytest.approx(expected, rel=1e-5)
    assert 1.0 < expected < 6.0


def test_alignment_and_uniformity_against_loops():
    torch.manual_seed(0)
    a, b = torch.randn(12, 5), torch.randn(12, 5)
    na, nb = a / a.norm(dim=1, keepdim=True), b / b.norm(dim=1, keepdim=True)
    expected_alignment = sum(float((na[i] - nb[i]).norm() ** 2) for i in range(12)) / 12
    assert alignment(a, b) == pytest.approx(expected_alignment, rel=1e-6)
    assert alignment(a, 3 * a) == pytest.approx(0.0, abs=1e-12)       # scale does not matter: normalized
    assert alignment(a, -a) == pytest.approx(4.0, rel=1e-9)            # antipodal views: 2 squared
    potentials = [math.exp(-2 * float((na[i] - na[j]).norm() ** 2)) for i in range(12) for j in range(12) if i < j]
    assert uniformity(a) == pytest.approx(math.log(sum(potentials) / len(potentials)), rel=1e-6)
    collapsed = torch.ones(10, 5)
    assert uniformity(collapsed) == pytest.approx(0.0, abs=1e-12)      # every item at one point: the worst


def test_retrieval_against_a_loop():
    torch.manual_seed(0)
    a = torch.randn(30, 4)
    b = a + 0.8 * torch.randn(30, 4)                                   # noisy second views: some are missed
    na, nb = a / a.norm(dim=1, keepdim=True), b / b.norm(dim=1, keepdim=True)
    forward = sum(max(range(30), key=lambda j: float(na[i] @ nb[j])) == i for i in range(30)) / 30
    backward = sum(max(range(30), key=lambda j: float(nb[i] @ na[j])) == i for i in range(30)) / 30
    assert retrieval(a, b) == pytest.approx((forward + backward) / 2, abs=1e-12)
    assert 0.0 < retrieval(a, b) < 1.0
    assert retrieval(a, 2 * a) == 1.0                                  # views that agree exactly
    assert retrieval(torch.ones(30, 4), torch.ones(30, 4)) <= 1 / 30   # collapsed: no better than the first item


def _method(digits):
    from selfmeta.engine import TrainConfig
    from selfmeta.engine.model import build_method

    return build_method(TrainConfig(method="simclr", encoder="conv4", epochs=1, encoder_options={"width": 8}), digits)


def test_probe_is_fixed_and_leaves_the_random_stream_and_mode_alone(digits):
    method = _method(digits).train()
    probe = QualityProbe(digits, size=64, seed=3)
    assert len(probe.index) == 64 and torch.equal(probe.index, QualityProbe(digits, size=64, seed=3).index)
    torch.manual_seed(123)
    first = probe(method, torch.device("cpu"))
    after = torch.rand(3)
    torch.manual_seed(123)
    assert probe(method, torch.device("cpu")) == first                 # the same views each time
    assert torch.equal(torch.rand(3), after)                           # the caller's stream did not move
    assert method.training                                             # back in the mode it was in
    assert set(first) == {"rankme", "lidar", "uniformity", "alignment", "retrieval"}
    assert 1.0 < first["rankme"] <= 64 and first["alignment"] > 0 and first["uniformity"] < 0


@pytest.fixture
def digits():
    from selfmeta.data import load_data

    return load_data("digits", "train")


def test_training_logs_quality_every_epoch_and_at_the_end(digits, tmp_path):
    from selfmeta.engine import TrainConfig, train

    cfg = TrainConfig(method="simclr", encoder="conv4", steps=25, batch_size=128, quality_every=10, quality_sample=128,
                      encoder_options={"width": 8})
    result = train(cfg, digits, tmp_path / "run", progress=False)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    quality = [r for r in records if "rankme" in r]
    assert [r["step"] for r in quality] == [10, 20, 25] and all("loss" not in r for r in quality)
    assert result.quality == {k: quality[-1][k] for k in ("rankme", "lidar", "uniformity", "alignment", "retrieval")}
    off = train(TrainConfig(**{**cfg.to_dict(), "quality_every": 0}), digits, None, progress=False)
    assert result.quality_history == quality and all("rankme" not in r for r in result.history)
    assert off.quality == {} and off.quality_history == []


def test_evaluate_quality_on_another_split(cli, tmp_path):
    cli("pretrain", "--data", "digits", "--out", "run", "--steps", "3", "--no-progress", "encoder.width=8", check=True)
    proc = cli("evaluate", "run", "--data", "digits", "--split", "test", "--protocol", "quality", check=True)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["protocol"] == "quality" and result["split"] == "test" and result["items"] == 359  # the whole test split of digits
    assert 1.0 < result["rankme"] and result["alignment"] >= 0 and result["uniformity"] <= 0


def test_lidar_against_a_hand_computation_and_its_extremes():
    torch.manual_seed(0)
    n, q, d = 30, 4, 5
    z = torch.randn(n, 1, d) * torch.tensor([4.0, 2.0, 1.0, 0.5, 0.1]) + 0.3 * torch.randn(n, q, d)
    means = z.double().mean(1)
    between = sum(torch.outer(m - means.mean(0), m - means.mean(0)) for m in means) / (n - 1)
    within = sum(torch.outer(z[i, j].double() - means[i], z[i, j].double() - means[i])
                 for i in range(n) for j in range(q)) / (n * (q - 1))
    within = within + 1e-4 * within.diagonal().mean() * torch.eye(d, dtype=torch.float64)
    w, v = np.linalg.eigh(within.numpy())
    root = v @ np.diag(w ** -0.5) @ v.T
    lam = np.clip(np.linalg.eigvalsh(root @ between.numpy() @ root), 0, None)
    p = lam / lam.sum() + 1e-7
    assert lidar(z) == pytest.approx(math.exp(-(p * np.log(p)).sum()), rel=1e-6)
    assert lidar(3.0 * z) == pytest.approx(lidar(z), rel=1e-6)        # the features' scale does not matter
    # items apart along one direction only, views scattered in all: one discriminant direction
    one = torch.zeros(n, q, d)
    one[..., 0] = 10 * torch.arange(n, dtype=torch.float32)[:, None]
    one = one + 0.01 * torch.randn(n, q, d)
    assert lidar(one) == pytest.approx(1.0, abs=0.05)
    assert rankme(one.reshape(n * q, d)) == pytest.approx(1.0, abs=0.05)
    # the views of an item spread far along a second direction: RankMe counts it, LiDAR does not
    two = one.clone()
    two[..., 1] = 150 * torch.randn(n, q)
    assert rankme(two.reshape(n * q, d)) > 1.9 and lidar(two) < 1.2
