"""The episode sampler: layout, invariants, seeds, and clear errors."""

from __future__ import annotations

import pytest
import torch

from selfmeta.data.episodes import EpisodeSampler, EpisodeSpec, class_members, episode_generator
from selfmeta.errors import SelfmetaError


def labels_with_counts(counts: list[int]) -> torch.Tensor:
    y = torch.cat([torch.full((c,), i) for i, c in enumerate(counts)])
    return y[torch.randperm(len(y), generator=torch.Generator().manual_seed(1))]


def test_class_members_against_a_loop():
    y = torch.tensor([3, 1, 3, 3, 7, 1, 7, 3])
    members, counts = class_members(y)
    assert counts.tolist() == [2, 4, 2] and members.shape == (3, 4)
    for row, value in zip(members, (1, 3, 7)):
        kept = row[row >= 0]
        assert kept.tolist() == [i for i, v in enumerate(y.tolist()) if v == value]
        assert (row[len(kept):] == -1).all()


@pytest.mark.parametrize("ways,shots,queries", [(5, 1, 15), (20, 5, 5), (3, 2, 1)])
def test_episodes_have_n_classes_and_k_plus_q_distinct_items_each(ways, shots, queries):
    y = labels_with_counts([20] * 30 + [25] * 5)
    spec = EpisodeSpec(ways, shots, queries)
    idx = EpisodeSampler(y, spec).sample(64, torch.Generator().manual_seed(0))
    assert idx.shape == (64, ways, shots + queries) and idx.dtype == torch.int64
    classes = y[idx]                                                  # (T, N, K+Q)
    assert (classes == classes[:, :, :1]).all()                        # a row is one class
    for t in range(64):
        assert len(set(classes[t, :, 0].tolist())) == ways             # N distinct classes
        items = idx[t].flatten().tolist()
        assert len(set(items)) == len(items)                           # support and queries never share items
    support, query = spec.split(torch.arange(64 * spec.size))
    assert support.shape == (64, ways * shots) and query.shape == (64, ways * queries)
    s_y, q_y = spec.labels()
    # the episode label of a support/query position is its row in the (N, K+Q) layout
    layout = torch.arange(ways).view(1, ways, 1).expand(64, ways, shots + queries).flatten()
    s_lab, q_lab = spec.split(layout)
    assert torch.equal(s_lab[0], s_y) and torch.equal(q_lab[0], q_y)


def test_every_class_and_item_can_be_drawn():
    y = labels_with_counts([4] * 6)
    idx = EpisodeSampler(y, EpisodeSpec(2, 1, 1)).sample(2000, torch.Generator().manual_seed(0))
    assert set(idx.flatten().tolist()) == set(range(24))


def test_the_same_seed_gives_the_same_episodes():
    y = labels_with_counts([10] * 12)
    sampler = EpisodeSampler(y, EpisodeSpec(5, 1, 3))
    a = sampler.sample(8, torch.Generator().manual_seed(3))
    assert torch.equal(a, sampler.sample(8, torch.Generator().manual_seed(3)))
    assert not torch.equal(a, sampler.sample(8, torch.Generator().manual_seed(4)))
    g1, g2 = episode_generator(0, 5, 0), episode_generator(0, 5, 1)
    assert not torch.equal(sampler.sample(8, g1), sampler.sample(8, g2))  # ranks draw different episodes


def test_clear_errors():
    y = labels_with_counts([10, 10, 3])
    with pytest.raises(SelfmetaError, match="fewer than shots \\+ queries = 5"):
        EpisodeSampler(y, EpisodeSpec(2, 1, 4))
    with pytest.raises(SelfmetaError, match="at least 5 classes, the data has 3"):
        EpisodeSampler(y, EpisodeSpec(5, 1, 1))
    with pytest.raises(SelfmetaError, match="need labels"):
        EpisodeSampler(None, EpisodeSpec(2, 1, 1))
    for bad in ({"ways": 1}, {"shots": 0}, {"queries": -1}):
        with pytest.raises(SelfmetaError, match=next(iter(bad))):
            EpisodeSpec(**{"ways": 5, "shots": 1, "queries": 1, **bad})
    assert EpisodeSpec(5, 2, 0).size == 10  # no queries: an episode of items to cluster
