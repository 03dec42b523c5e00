"""The contrastive method: two views per item are the positive pair, every other view a negative; its loss
against Hadsell et al.'s formula in a naive loop over the pairs of the method's own projections."""

from __future__ import annotations

import math

import pytest
import torch
from method_testing import option_error
import torch.nn.functional as F

from selfmeta.modalities.table import TableViews
from selfmeta.encoders import Backbone, Normalize
from selfmeta.encoders.models import MLP
from selfmeta.methods.contrastive import Contrastive



def table_contrastive(d: int = 6, **options) -> Contrastive:
    torch.manual_seed(0)
    mean, std = torch.zeros(1, d), torch.ones(1, d)
    return Contrastive(Backbone(Normalize(mean, std), MLP((d,), widths=(16,))), TableViews((d,), mean, std),
                       proj_hidden=16, proj_dim=8, **options)


def projections(method: torch.nn.Module, x: torch.Tensor):
    seen = {}

    def keep(module, args, output):  # returns None: the method's output stays as it is
        seen["z"] = output.detach()

    handle = method.projector.register_forward_hook(keep)
    out = method(x, torch.arange(len(x)))
    handle.remove()
    return out, F.normalize(seen["z"].double(), dim=1)


def naive_two_view_contrastive(z: torch.Tensor, margin: float, mining: str) -> float:
    """Rows i and i + B are two views of item i. 1/2 D^2 on positive pairs, 1/2 max(0, m - D)^2 on negative
    pairs, each kind averaged over the pairs the mining keeps."""
    z = z.tolist()
    n, b = len(z), len(z) // 2

    def dist(u, v):
        return math.sqrt(sum((p - q) ** 2 for p, q in zip(u, v)))

    pos_terms, neg_terms = [], []
    for a in range(n):
        p = a + b if a < b else a - b
        d_ap = dist(z[a], z[p])
        d_neg = [dist(z[a], z[k]) for k in range(n) if k not in (a, p)]
        if mining == "all":
            chosen = d_neg
        elif mining == "batch_hard":
            chosen = [min(d_neg)]
        else:
            window = [d for d in d_neg if d_ap < d < d_ap + margin]
            chosen = [min(window) if window else min(d_neg)]
        pos_terms.append(0.5 * d_ap**2)
        neg_terms += [0.5 * max(0.0, margin - d) ** 2 for d in chosen]
    return sum(pos_terms) / len(pos_terms) + sum(neg_terms) / len(neg_terms)


@pytest.mark.parametrize("mining", ["all", "batch_hard", "semi_hard"])
@pytest.mark.parametrize("margin", [0.5, 1.0, 1.5])
def test_loss_is_hadsell_on_the_two_views(mining, margin):
    method = table_contrastive(margin=margin, mining=mining)
    x = torch.randn(10, 6, generator=torch.Generator().manual_seed(2))
    out, z = projections(method, x)
    assert out.loss.item() == pytest.approx(naive_two_view_contrastive(z, margin, mining), rel=1e-5, abs=1e-6)
    assert out.loss.requires_grad and set(out.logs) == {"active", "pos_dist", "neg_dist"}


def test_default_is_batch_hard_with_margin_1():
    method = table_contrastive()
    assert method.mining == "batch_hard" and method.margin == 1.0


@pytest.mark.parametrize("options,message", [({"mining": "hardest"}, "one of: batch_hard, semi_hard, all"),
                                             ({"margin": -1.0}, "margin takes a number > 0")])
def test_bad_options_are_refused(options, message):
    assert message in option_error("contrastive", **options)
