"""TS2Vec: the crops share their segment step for step, the encoder hides masked steps, and the method
refuses what it cannot train on."""

from __future__ import annotations

import pytest
import torch

from selfmeta.data.dataset import Dataset
from selfmeta.engine import TrainConfig, train
from selfmeta.engine.model import build_method
from selfmeta.errors import SelfmetaError
from selfmeta.encoders import build_encoder


def steps_dataset(n=16, c=2, t=60) -> Dataset:
    """Series whose values are their own step numbers (channel c adds 1000 c): crops say where they came from."""
    x = torch.arange(t, dtype=torch.float32).expand(n, c, t) + 1000 * torch.arange(c).view(1, c, 1)
    return Dataset(x + torch.arange(n).view(n, 1, 1) * 0.001, None, [], "series", "steps")


def method(**options):
    return build_method(TrainConfig(method="ts2vec", encoder="ts2vec", epochs=1, encoder_options={"depth": 2},
                                    method_options=options), steps_dataset())


@pytest.mark.parametrize("seed", range(5))
def test_the_two_crops_share_their_segment(seed):
    torch.manual_seed(seed)
    m = method()
    x = steps_dataset().x
    view1, view2, length = m.crops(x)
    assert 2 <= length <= x.shape[-1]
    assert torch.equal(view1[..., -length:], view2[..., :length])        # the same steps of each series
    step = view1[:, 0, 1:] - view1[:, 0, :-1]
    assert torch.allclose(step, torch.ones_like(step))                   # contiguous steps, in order
    assert view1[:, 0, 0].min() >= 0 and view2[:, 0, -1].max() < x.shape[-1]


def test_long_series_are_cut_to_max_length():
    torch.manual_seed(0)
    view1, view2, length = method(max_length=20).crops(steps_dataset().x)
    assert view1.shape[-1] <= 20 and view2.shape[-1] <= 20 and length <= 20


def test_a_masked_step_reads_as_a_missing_one():
    encoder = build_encoder("ts2vec", (2, 30), "series", depth=2).eval()
    x = torch.randn(3, 2, 30)
    mask = torch.ones(3, 30, dtype=torch.bool)
    mask[:, 10:14] = False
    missing = x.clone()
    missing[:, :, 10:14] = float("nan")
    with torch.no_grad():
        assert torch.allclose(encoder.forward_timesteps(x, mask), encoder.forward_timesteps(missing))
        assert not torch.allclose(encoder.forward_timesteps(x), encoder.forward_timesteps(missing))


def test_training_lowers_the_loss_and_runs_on_padded_series():
    data = steps_dataset()
    data.x[::3, :, 45:] = float("nan")
    data.x.add_(torch.randn(data.x.shape, generator=torch.Generator().manual_seed(0)))
    result = train(TrainConfig(method="ts2vec", encoder="ts2vec", steps=30, log_every=1, seed=0,
                               encoder_options={"depth": 3}), data, progress=False)
    losses = [r["loss"] for r in result.history]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5


def test_ts2vec_refuses_other_encoders_and_modalities():
    with pytest.raises(SelfmetaError, match="ts2vec needs an encoder with a representation per time step"):
        build_method(TrainConfig(method="ts2vec", encoder="resnet1d", epochs=1), steps_dataset())
    images = Dataset(torch.zeros(8, 1, 8, 8, dtype=torch.uint8), None, [], "image", "img")
    with pytest.raises(SelfmetaError, match="method 'ts2vec' does not take image data"):
        build_method(TrainConfig(method="ts2vec", encoder="conv4", epochs=1), images)


def test_the_paper_s_batch_and_learning_rate_are_the_defaults():
    cfg = TrainConfig(method="ts2vec", encoder="ts2vec", epochs=1).resolved(items=50)
    assert (cfg.batch_size, cfg.lr) == (8, 1e-3)
    assert TrainConfig(method="ts2vec", encoder="ts2vec", epochs=1, batch_size=16, lr=5e-4).resolved(50).batch_size == 16
    simclr = TrainConfig(method="simclr", epochs=1).resolved(items=50)
    assert simclr.batch_size == 50 and simclr.lr is None                # 256 capped to the data; lr scaled
