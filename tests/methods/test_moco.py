"""MoCo: InfoNCE against a naive loop, the FIFO queue, the momentum key encoder, checkpointed state, and
(slow) the cross-rank queue and shuffled batch norm under two processes."""

from __future__ import annotations

import math

import pytest
import torch
from method_testing import D, ScaledViews, option_error, tiny_parts

from selfmeta.engine.optim import build_optimizer
from selfmeta.errors import SelfmetaError
from selfmeta.methods import METHODS
from selfmeta.methods.moco import MoCo
from selfmeta.objectives.infonce import info_nce


def tiny_moco(**options) -> MoCo:
    backbone, views = tiny_parts()
    options = {"proj_hidden": 8, "proj_dim": 4, "queue_size": 16, **options}
    return MoCo(backbone, views, **options)

def naive_info_nce(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float) -> float:
    """He et al. 2020, eq. 1, one query at a time, in Python floats."""
    q, k, queue = q.double().tolist(), k.double().tolist(), queue.double().tolist()

    def cos(u, v):
        dot = sum(a * c for a, c in zip(u, v))
        return dot / (math.sqrt(sum(a * a for a in u)) * math.sqrt(sum(c * c for c in v)))

    total = 0.0
    for qi, ki in zip(q, k):
        positive = math.exp(cos(qi, ki) / temperature)
        negatives = sum(math.exp(cos(qi, n) / temperature) for n in queue)
        total += -math.log(positive / (positive + negatives))
    return total / len(q)


@pytest.mark.parametrize("b,k,d,temperature", [(1, 1, 3, 0.5), (4, 7, 5, 0.2), (8, 16, 4, 0.07), (3, 32, 8, 1.0)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_info_nce_matches_naive_loop(b, k, d, temperature, dtype):
    g = torch.Generator().manual_seed(b * 100 + k)
    q = torch.randn(b, d, generator=g, dtype=dtype)
    keys = torch.randn(b, d, generator=g, dtype=dtype)
    queue = torch.randn(k, d, generator=g, dtype=dtype)
    loss = info_nce(q, keys, queue, temperature)
    assert loss.dtype == dtype and loss.shape == ()
    tol = 1e-10 if dtype == torch.float64 else 2e-4
    assert loss.item() == pytest.approx(naive_info_nce(q, keys, queue, temperature), rel=tol, abs=tol)


def test_info_nce_default_temperature_and_gradient_only_to_queries():
    g = torch.Generator().manual_seed(0)
    q = torch.randn(4, 5, generator=g, requires_grad=True)
    k, queue = torch.randn(4, 5, generator=g), torch.randn(9, 5, generator=g)
    loss = info_nce(q, k, queue)
    assert loss.item() == pytest.approx(naive_info_nce(q.detach(), k, queue, 0.2), rel=1e-5)
    loss.backward()
    assert q.grad is not None and q.grad.abs().sum() > 0
    # A key equal to its query beats a random key.
    assert info_nce(k, k, queue, 0.2) < info_nce(k, torch.randn(4, 5, generator=g), queue, 0.2)


def test_queue_holds_the_newest_keys_in_order_with_wrap_around():
    method = tiny_moco(queue_size=12, proj_dim=3)
    batches = [torch.full((4, 3), float(i)) + torch.arange(4.0).view(4, 1) / 10 for i in range(1, 6)]
    for i, keys in enumerate(batches, start=1):
        method.enqueue(keys)
        assert int(method.queue_ptr) == (4 * i) % 12
    # 5 batches of 4 in 12 rows: the last 3 batches remain; reading from the pointer on gives oldest first.
    ordered = torch.roll(method.queue, shifts=-int(method.queue_ptr), dims=0)
    torch.testing.assert_close(ordered, torch.cat(batches[-3:]))
    torch.testing.assert_close(method.queue[:4], batches[3])  # batch 4 wrapped around to the start


def test_queue_is_clipped_to_a_multiple_of_the_batch():
    method = tiny_moco(queue_size=10, proj_dim=3)
    untouched = method.queue[8:].clone()
    assert method.queue_length(4) == 8 and method.queue_length(10) == 10 and method.queue_length(3) == 9
    batches = [torch.full((4, 3), float(i)) for i in range(1, 4)]
    for keys in batches:
        method.enqueue(keys)
    assert int(method.queue_ptr) == 4
    torch.testing.assert_close(method.queue[:8], torch.cat([batches[2], batches[1]]))
    torch.testing.assert_close(method.queue[8:], untouched)  # rows past the clipped length are never used
    with pytest.raises(SelfmetaError, match="queue_size 10 is smaller than the global batch"):
        method.queue_length(11)


def test_forward_uses_the_old_queue_then_enqueues_the_second_views_keys():
    method = tiny_moco(queue_size=16)
    method.views = ScaledViews(offset=False)
    x = torch.randn(4, D, generator=torch.Generator().manual_seed(1))
    v = torch.cat([x * 1.1, x * 1.2])                      # the two views the forward will draw
    old_queue = method.queue.clone()
    q = method.projector(method.backbone(v))
    k = method._encode_keys(v)
    expected = (naive_info_nce(q[:4], k[4:], old_queue, 0.2) + naive_info_nce(q[4:], k[:4], old_queue, 0.2)) / 2

    out = method(x, torch.arange(4))
    assert out.loss.item() == pytest.approx(expected, rel=1e-5)
    assert int(method.queue_ptr) == 4
    torch.testing.assert_close(method.queue[:4], torch.nn.functional.normalize(k[4:].detach(), dim=1))
    torch.testing.assert_close(method.queue[4:], old_queue[4:])
    out.loss.backward()  # the in-place enqueue did not break the graph


def test_key_encoder_gets_no_gradient_and_moves_by_the_ema_rule():
    method = tiny_moco(momentum=0.9)
    key_params = list(method.key_backbone.parameters()) + list(method.key_projector.parameters())
    online_params = list(method.backbone.parameters()) + list(method.projector.parameters())
    assert key_params and all(not p.requires_grad for p in key_params)
    optimizer = build_optimizer("adamw", method, 0.1, 0.0)
    optimized = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert not optimized & {id(p) for p in key_params}

    x = torch.randn(8, D, generator=torch.Generator().manual_seed(2))
    method(x, torch.arange(8)).loss.backward()
    assert all(p.grad is None for p in key_params)
    assert all(p.grad is not None for p in online_params)
    optimizer.step()  # the online encoder moves away from its copy

    before = [p.detach().clone() for p in key_params]
    online = [p.detach().clone() for p in online_params]
    assert any(not torch.equal(b, o) for b, o in zip(before, online))
    method.on_step_end(0.5)
    for p, b, o in zip(key_params, before, online):
        torch.testing.assert_close(p, 0.9 * b + 0.1 * o)


def test_queue_and_key_encoder_are_in_the_state_dict():
    method = tiny_moco()
    method(torch.randn(8, D), torch.arange(8))
    state = method.state_dict()
    assert {"queue", "queue_ptr"} <= set(state) and state["queue"].shape == (16, 4)
    assert any(k.startswith("key_backbone.") for k in state) and any(k.startswith("key_projector.") for k in state)
    fresh = tiny_moco()
    assert not torch.equal(fresh.queue, method.queue)
    fresh.load_state_dict(state)
    torch.testing.assert_close(fresh.queue, method.queue)
    assert int(fresh.queue_ptr) == int(method.queue_ptr) == 8


def test_options_are_validated_and_registered():
    assert METHODS.get("moco") is MoCo
    assert "option temperature takes a number > 0, got 0.0" in option_error("moco", temperature=0.0)
    assert "option momentum takes a number >= 0 and <= 1, got 1.5" in option_error("moco", momentum=1.5)
    assert "option queue_size takes an integer >= 1, got 'big'" in option_error("moco", queue_size="big")


def _moco_work(rank: int, world: int) -> dict:
    method = tiny_moco()                                   # identical weights and queue on every rank
    x = torch.randn(8, D, generator=torch.Generator().manual_seed(3))
    mine = x[rank * 4 : (rank + 1) * 4]
    views = torch.cat([mine * 1.1, mine * 1.2])            # this rank's two views, (2B, D)
    method.eval()                                          # batch norm per item: shuffling must not matter
    eval_k, eval_all_k = method.keys(views)
    method.train()
    torch.manual_seed(10 + rank)
    train_k, _ = method.keys(views)
    method.views = ScaledViews(offset=False)
    out = method(mine, torch.arange(4))
    out.loss.backward()
    return {"eval_k": eval_k, "eval_all_k": eval_all_k, "train_k": train_k, "queue": method.queue,
            "queue_ptr": method.queue_ptr}


@pytest.mark.slow
def test_two_processes_share_the_queue_and_shuffle_the_key_batch(spawn_ranks):
    world = 2
    ranks = spawn_ranks(_moco_work, world)

    method = tiny_moco()
    initial_queue = method.queue.clone()
    x = torch.randn(8, D, generator=torch.Generator().manual_seed(3))
    chunks = [torch.cat([x[r * 4 : (r + 1) * 4] * 1.1, x[r * 4 : (r + 1) * 4] * 1.2]) for r in range(world)]
    method.eval()
    expected_all = torch.cat([method._encode_keys(c) for c in chunks])  # every rank's keys, in rank order
    method.train()
    for r, state in enumerate(ranks):
        # The permutation is undone: each rank gets its own items' keys, and everyone's in rank order.
        torch.testing.assert_close(state["eval_all_k"], expected_all)
        torch.testing.assert_close(state["eval_k"], expected_all[r * 8 : (r + 1) * 8])
        # In train mode the key encoder's batch statistics come from a shuffled mix of both ranks' items.
        assert not torch.allclose(state["train_k"], method._encode_keys(chunks[r]), atol=1e-4)
    # Every rank enqueued every rank's newest keys: the queues agree.
    torch.testing.assert_close(ranks[0]["queue"], ranks[1]["queue"])
    assert int(ranks[0]["queue_ptr"]) == int(ranks[1]["queue_ptr"]) == world * 4
    assert not torch.allclose(ranks[0]["queue"][:8], initial_queue[:8])
    torch.testing.assert_close(ranks[0]["queue"][8:], initial_queue[8:])
