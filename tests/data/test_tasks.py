"""Task constructors: valid episodes, no label read by the unsupervised ones, and PsCo's pseudo-supports."""

from __future__ import annotations

import pytest
import torch

from selfmeta.data import load_data
from selfmeta.data.dataset import Dataset
from selfmeta.data.episodes import EpisodeSpec
from selfmeta.data.tasks import TASKS, build_tasks
from selfmeta.engine import TrainConfig, train
from selfmeta.engine.model import build_method, embed
from selfmeta.errors import SelfmetaError
from selfmeta.evaluation.fewshot import episode_accuracy, fewshot_episodes
from selfmeta.meta.psco import pseudo_supports
from selfmeta.objectives.sinkhorn import sinkhorn

UNSUPERVISED = [name for name in TASKS.names() if not TASKS.get(name).uses_labels]
OPTIONS = {"cactus": {"clusters": 20, "partitions": 3}}


@pytest.fixture(scope="module")
def digits():
    return load_data("digits", "train")


def constructor(name, data, spec, tasks=4):
    return build_tasks(name, data, spec, tasks, 1, 0, OPTIONS.get(name, {}))


@pytest.mark.parametrize("name", TASKS.names())
def test_valid_episodes(digits, name):
    spec = EpisodeSpec(5, 1, 1) if name == "metacontrastive" else EpisodeSpec(5, 2, 3)
    tasks = constructor(name, digits, spec)
    idx = tasks.indices(7, 0).view(4, spec.ways, spec.per_class)
    assert torch.equal(idx, tasks.indices(7, 0).view_as(idx))                    # a pure function of the step
    assert not torch.equal(idx, tasks.indices(8, 0).view_as(idx))
    for t in range(4):
        if tasks.augment:  # one item per class, repeated: its copies become different views
            assert (idx[t] == idx[t, :, :1]).all() and len(set(idx[t, :, 0].tolist())) == spec.ways
        else:              # K+Q distinct items per class, support and queries disjoint
            assert len(set(idx[t].flatten().tolist())) == spec.size
    if name == "labels":
        assert (digits.y[idx] == digits.y[idx][:, :, :1]).all()


def test_cactus_classes_are_clusters_of_one_partition(digits):
    tasks = constructor("cactus", digits, EpisodeSpec(5, 1, 4), tasks=16)
    idx = tasks.indices(0, 0).view(16, 5, 5)
    partitions = [s.members for s in tasks.samplers]
    for t in range(16):
        rows = [set(r.tolist()) for r in idx[t]]
        # some partition holds every row of the task inside one of its clusters
        assert any(all(any(row <= set(m[m >= 0].tolist()) for m in members) for row in rows) for members in partitions)


@pytest.mark.parametrize("name", UNSUPERVISED)
def test_no_label_is_read(digits, name):
    spec = EpisodeSpec(5, 1, 1)
    shuffled = Dataset(digits.x, digits.y[torch.randperm(len(digits.y))], digits.classes, "image", "shuffled")
    unlabeled = Dataset(digits.x, None, [], "image", "unlabeled")
    reference = constructor(name, digits, spec).indices(3, 0)
    for data in (shuffled, unlabeled):
        assert torch.equal(constructor(name, data, spec).indices(3, 0), reference)


def test_clear_errors(digits):
    with pytest.raises(SelfmetaError, match="no labels"):
        constructor("labels", Dataset(digits.x, None, [], "image", "u"), EpisodeSpec(5, 1, 1))
    with pytest.raises(SelfmetaError, match="--shots 1 --queries 1"):
        constructor("metacontrastive", digits, EpisodeSpec(5, 2, 1))
    with pytest.raises(SelfmetaError, match="unknown task constructor"):
        TrainConfig(tasks="clusters")
    with pytest.raises(SelfmetaError, match="unknown option 'clusters' for tasks 'umtra'; valid: none"):
        build_tasks("umtra", digits, EpisodeSpec(5, 1, 1), 4, 1, 0, {"clusters": 3})
    with pytest.raises(SelfmetaError, match="unknown option 'bogus' for tasks 'cactus'; valid: encoder, partitions, clusters"):
        build_tasks("cactus", digits, EpisodeSpec(5, 1, 1), 4, 1, 0, {"bogus": 1})
    with pytest.raises(SelfmetaError, match="clusters <= 1438"):
        build_tasks("cactus", digits, EpisodeSpec(5, 1, 1), 4, 1, 0, {"clusters": 5000})


# --- PsCo ----------------------------------------------------------------------------------------------------

def test_psco_supports_come_from_a_balanced_assignment():
    g = torch.Generator().manual_seed(0)
    queue = torch.nn.functional.normalize(torch.randn(64, 8, generator=g), dim=1)
    keys = torch.nn.functional.normalize(torch.randn(4, 8, generator=g), dim=1)
    plan = sinkhorn(queue @ keys.T, lam=20.0, iters=50).float()
    torch.testing.assert_close(plan.sum(0), torch.full((4,), 1 / 4), rtol=1e-3, atol=1e-4)   # equal class shares
    torch.testing.assert_close(plan.sum(1), torch.full((64,), 1 / 64), rtol=1e-3, atol=1e-4)
    rows = pseudo_supports(queue, keys, 3, 20.0, 50)
    assert rows.shape == (4, 3)
    for n in range(4):  # the largest shares of each class, as a loop over the queue finds them
        order = sorted(range(64), key=lambda m: -float(plan[m, n]))
        assert set(rows[n].tolist()) == set(order[:3])


def test_psco_queue_holds_the_newest_keys(digits):
    cfg = TrainConfig(method="psco", tasks="umtra", ways=8, shots=1, queries=1, tasks_per_step=2, steps=1,
                      device="cpu", method_options={"queue_size": 64, "support_shots": 2}, view_options={"hflip": 0})
    learner = build_method(cfg, digits)
    x = torch.rand(2 * 8 * 2, 1, 8, 8)
    support, _ = learner.spec.split(x)
    out = learner(x, None)
    assert torch.isfinite(out.loss) and {"psco", "moco", "accuracy"} <= set(out.logs)
    with torch.no_grad():
        keys, _ = learner.keys(support.flatten(0, 1))
    assert int(learner.queue_ptr) == 16
    torch.testing.assert_close(learner.queue[:16], keys, rtol=1e-4, atol=1e-5)  # key encoder unchanged since


# --- a short run of every constructor beats the random encoder ----------------------------------------------

@pytest.mark.parametrize("name,method", [("umtra", "protonet"), ("cactus", "protonet"), ("metacontrastive", "protonet"),
                                         ("umtra", "psco")])
def test_short_unsupervised_run_beats_the_random_encoder(digits, name, method):
    torch.set_num_threads(1)
    test = load_data("digits", "test")
    spec = EpisodeSpec(5, 1, 5)
    episodes = fewshot_episodes(test.y, spec, 300)
    ways, shots, queries = (16, 1, 1) if name == "metacontrastive" or method == "psco" else (5, 1, 3)
    cfg = TrainConfig(method=method, tasks=name, ways=ways, shots=shots, queries=queries, tasks_per_step=8,
                      steps=150, device="cpu", view_options={"hflip": 0}, task_options=OPTIONS.get(name, {}),
                      method_options={"queue_size": 1024} if method == "psco" else {})
    torch.manual_seed(cfg.seed)
    random_encoder = build_method(cfg, digits).backbone
    before = episode_accuracy(embed(random_encoder, test), episodes, 1).mean()
    trained = train(cfg, Dataset(digits.x, None, [], "image", "unlabeled"), progress=False).method.backbone
    after = episode_accuracy(embed(trained, test), episodes, 1).mean()
    assert after > before + 0.03, (float(before), float(after))
