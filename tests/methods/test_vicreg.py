"""VICReg: each term and the weighted loss against naive loops, and (slow) the global-batch loss and
gradient under two processes."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from selfmeta import distributed
from selfmeta.data.views import TableViews
from selfmeta.encoders import Backbone, Normalize, build_encoder
from selfmeta.errors import SelfmetaError
from selfmeta.methods import METHODS
from selfmeta.methods.vicreg import VICReg
from selfmeta.objectives.vicreg import vicreg_loss, vicreg_terms



D = 6


class ScaledViews(nn.Module):
    """Deterministic views: the k-th call returns x * (1 + k / 10) + k / 10."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return x * (1 + self.calls / 10) + self.calls / 10


def tiny_vicreg(**options) -> VICReg:
    torch.manual_seed(0)
    encoder = build_encoder("mlp", (D,), widths=(8,))
    backbone = Backbone(Normalize(torch.zeros(1, D), torch.ones(1, D)), encoder)
    views = TableViews((D,), mean=torch.zeros(D), std=torch.ones(D))
    return VICReg(backbone, views, **{"proj_hidden": 8, "proj_dim": 5, **options})


def naive_terms(z1: torch.Tensor, z2: torch.Tensor, gamma: float = 1.0, eps: float = 1e-4) -> tuple[float, ...]:
    """Bardes et al. 2022, eqs. 1-5, element by element in Python floats."""
    a, b = z1.double().tolist(), z2.double().tolist()
    n, d = len(a), len(a[0])
    invariance = sum((a[i][j] - b[i][j]) ** 2 for i in range(n) for j in range(d)) / (n * d)

    def variance(z):
        total = 0.0
        for j in range(d):
            mean = sum(z[i][j] for i in range(n)) / n
            var = sum((z[i][j] - mean) ** 2 for i in range(n)) / (n - 1)
            total += max(0.0, gamma - math.sqrt(var + eps))
        return total / d

    def covariance(z):
        means = [sum(z[i][j] for i in range(n)) / n for j in range(d)]
        total = 0.0
        for j in range(d):
            for k in range(d):
                if j != k:
                    cov = sum((z[i][j] - means[j]) * (z[i][k] - means[k]) for i in range(n)) / (n - 1)
                    total += cov**2
        return total / d

    return invariance, variance(a) + variance(b), covariance(a) + covariance(b)


CASES = [(2, 1), (5, 3), (16, 8), (7, 12)]


@pytest.mark.parametrize("n,d", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_terms_and_loss_match_naive_loops(n, d, dtype):
    g = torch.Generator().manual_seed(n * 10 + d)
    z1 = torch.randn(n, d, generator=g, dtype=dtype) * torch.linspace(0.2, 2.0, d, dtype=dtype)  # some stds < 1
    z2 = z1 + 0.5 * torch.randn(n, d, generator=g, dtype=dtype)
    t = vicreg_terms(z1, z2)
    tol = 1e-9 if dtype == torch.float64 else 1e-4
    expected = naive_terms(z1, z2)
    for got, want in zip(t, expected):
        assert got.dtype == dtype and got.item() == pytest.approx(want, rel=tol, abs=tol)
    loss = vicreg_loss(z1, z2)
    assert loss.item() == pytest.approx(25 * expected[0] + 25 * expected[1] + expected[2], rel=tol, abs=tol)
    weighted = vicreg_loss(z1, z2, sim_coeff=2.0, std_coeff=3.0, cov_coeff=5.0, gamma=0.5, eps=1e-3)
    inv, var, cov = naive_terms(z1, z2, gamma=0.5, eps=1e-3)
    assert weighted.item() == pytest.approx(2 * inv + 3 * var + 5 * cov, rel=tol, abs=tol)


def test_term_properties():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(64, 4, generator=g, dtype=torch.float64)
    t = vicreg_terms(z, z)
    assert t.invariance.item() == 0.0
    assert vicreg_terms(10 * z, 10 * z).variance.item() == 0.0  # every std above gamma = 1: no hinge
    collapsed = vicreg_terms(torch.zeros(8, 4), torch.zeros(8, 4))
    assert collapsed.variance.item() == pytest.approx(2 * (1 - math.sqrt(1e-4)))  # both branches at the hinge
    h2 = torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=torch.float64)
    hadamard = torch.kron(torch.kron(h2, h2), h2)[:, 1:5]  # uncorrelated columns
    assert vicreg_terms(hadamard, hadamard).covariance.item() == pytest.approx(0.0, abs=1e-12)
    assert vicreg_terms(z[:, [0, 0, 1, 1]], z[:, [0, 0, 1, 1]]).covariance.item() > 0.1  # duplicated dimensions


def test_options_are_validated_and_registered():
    assert METHODS.get("vicreg") is VICReg
    with pytest.raises(SelfmetaError, match="cov_coeff"):
        tiny_vicreg(cov_coeff=-1.0)


def test_forward_logs_the_terms():
    method = tiny_vicreg(sim_coeff=1.0, std_coeff=2.0, cov_coeff=3.0)
    out = method(torch.randn(8, D), torch.arange(8))
    assert set(out.logs) == {"invariance", "variance", "covariance"}
    expected = out.logs["invariance"] + 2 * out.logs["variance"] + 3 * out.logs["covariance"]
    assert out.loss.item() == pytest.approx(expected, rel=1e-5)


def _deterministic(method: VICReg) -> VICReg:
    """Same weights on every rank, views without randomness, no per-process batch statistics in the network."""
    method.projector = nn.Linear(8, 5)
    method.views = ScaledViews()
    return method.eval()  # the encoder's batch norm uses its running statistics


def _batch() -> torch.Tensor:
    return torch.randn(8, D, generator=torch.Generator().manual_seed(4))


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        method = _deterministic(tiny_vicreg())
        b = 8 // world
        out = method(_batch()[rank * b : (rank + 1) * b], torch.arange(b))
        out.loss.backward()
        grads = {n: p.grad for n, p in method.named_parameters() if p.requires_grad}
        torch.save({"loss": out.loss.detach(), "grads": grads, "world": distributed.world_size()},
                   Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_processes_give_the_full_batch_loss_and_gradient(tmp_path):
    import torch.multiprocessing as mp

    world = 2
    mp.spawn(_worker, args=(world, str(tmp_path / "init"), str(tmp_path)), nprocs=world, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(world)]
    assert all(r["world"] == world for r in ranks)

    method = _deterministic(tiny_vicreg())
    full = method(_batch(), torch.arange(8)).loss
    full.backward()
    for r in ranks:
        assert r["loss"].item() == pytest.approx(full.item(), rel=1e-5)
    for name, p in method.named_parameters():
        if p.requires_grad:  # DDP averages the ranks' gradients
            torch.testing.assert_close(sum(r["grads"][name] for r in ranks) / world, p.grad, rtol=1e-4, atol=1e-6)

    # Control: each rank's half-batch statistics alone give another loss.
    half = _deterministic(tiny_vicreg())(_batch()[:4], torch.arange(4)).loss
    assert half.item() != pytest.approx(full.item(), rel=1e-3)
