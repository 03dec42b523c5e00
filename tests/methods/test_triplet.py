"""The triplet method: two views per item are each other's positive, every other view a negative; its loss
against FaceNet's formula in a naive loop over the anchors of the method's own projections."""

from __future__ import annotations

import pytest
import torch
from method_testing import option_error
import torch.nn.functional as F

from selfmeta.modalities.image import ImageViews
from selfmeta.modalities.table import TableViews
from selfmeta.encoders import Backbone, Normalize
from selfmeta.encoders.models import MLP, Conv4
from selfmeta.methods.triplet import Triplet



def table_triplet(d: int = 6, **options) -> Triplet:
    torch.manual_seed(0)
    mean, std = torch.zeros(1, d), torch.ones(1, d)
    return Triplet(Backbone(Normalize(mean, std), MLP((d,), widths=(16,))), TableViews((d,), mean, std),
                   proj_hidden=16, proj_dim=8, **options)


def projections(method: torch.nn.Module, x: torch.Tensor):
    """Run the method, keeping the projector's output: (loss, logs, (2B, d) unit projections)."""
    seen = {}

    def keep(module, args, output):  # returns None: the method's output stays as it is
        seen["z"] = output.detach()

    handle = method.projector.register_forward_hook(keep)
    out = method(x, torch.arange(len(x)))
    handle.remove()
    return out, F.normalize(seen["z"].double(), dim=1)


def naive_two_view_triplet(z: torch.Tensor, margin: float, mining: str, world: int = 1, rank: int = 0) -> float:
    """``z`` holds ``world`` blocks of 2B rows, one per rank; in each, rows i and i + B are two views of one
    item. Per anchor of block ``rank``: its one positive (the other view), the negatives all other rows of
    every block; FaceNet's hinge on squared distances, averaged over the anchors."""
    z = z.tolist()
    n = len(z)
    b = n // world // 2

    def sq(u, v):
        return sum((p - q) ** 2 for p, q in zip(u, v))

    total = 0.0
    anchors = range(rank * 2 * b, (rank + 1) * 2 * b)
    for a in anchors:
        p = a + b if a - rank * 2 * b < b else a - b
        d_ap = sq(z[a], z[p])
        d_neg = [sq(z[a], z[k]) for k in range(n) if k not in (a, p)]
        if mining == "batch_hard":
            d_an = min(d_neg)
        else:
            window = [d for d in d_neg if d_ap < d < d_ap + margin]
            d_an = min(window) if window else min(d_neg)
        total += max(0.0, d_ap - d_an + margin)
    return total / len(anchors)


@pytest.mark.parametrize("mining", ["batch_hard", "semi_hard"])
@pytest.mark.parametrize("margin", [0.2, 1.0])
def test_loss_is_facenet_on_the_two_views(mining, margin):
    method = table_triplet(margin=margin, mining=mining)
    x = torch.randn(10, 6, generator=torch.Generator().manual_seed(1))
    out, z = projections(method, x)
    assert z.shape == (20, 8)
    assert out.loss.item() == pytest.approx(naive_two_view_triplet(z, margin, mining), rel=1e-5, abs=1e-6)
    assert out.loss.requires_grad and set(out.logs) == {"active", "pos_dist", "neg_dist"}
    assert 0 <= out.logs["active"] <= 1


@pytest.mark.parametrize("rank", [0, 1, 2])
@pytest.mark.parametrize("mining", ["batch_hard", "semi_hard"])
def test_rank_sees_the_global_batch(monkeypatch, rank, mining):
    """Simulated rank ``rank`` of 3: the gather puts this rank's projections (with their gradient) among the
    other ranks' in rank order; the loss is the naive one over this rank's anchors and every rank's views."""
    from selfmeta import distributed

    world, b, d = 3, 5, 8
    others = F.normalize(torch.randn(world, 2 * b, d, generator=torch.Generator().manual_seed(3)), dim=2)

    def gather(z):
        return torch.cat([z if r == rank else others[r] for r in range(world)])

    monkeypatch.setattr(distributed, "rank", lambda: rank)
    monkeypatch.setattr(distributed, "world_size", lambda: world)
    monkeypatch.setattr(distributed, "all_gather_with_grad", gather)
    method = table_triplet(mining=mining)
    out, z = projections(method, torch.randn(b, 6, generator=torch.Generator().manual_seed(4)))
    everyone = gather(z.float()).double()
    expected = naive_two_view_triplet(everyone, 0.2, mining, world, rank)
    assert out.loss.item() == pytest.approx(expected, rel=1e-5, abs=1e-6)
    out.loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in method.backbone.parameters())


def test_image_views_train_the_backbone():
    torch.manual_seed(0)
    shape = (1, 8, 8)
    method = Triplet(Backbone(Normalize(torch.full((1, 1, 1, 1), 0.5), torch.full((1, 1, 1, 1), 0.25)),
                              Conv4(shape, width=8)), ImageViews(shape, hflip=0.0), proj_hidden=16, proj_dim=8)
    out = method(torch.rand(6, *shape), torch.arange(6))
    out.loss.backward()
    grads = [p.grad for p in method.backbone.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("options,message", [({"mining": "all"}, "one of: batch_hard, semi_hard, got 'all'"),
                                             ({"margin": 0.0}, "margin takes a number > 0")])
def test_bad_options_are_refused(options, message):
    assert message in option_error("triplet", **options)
