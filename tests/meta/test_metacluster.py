"""Meta-learned clustering: the co-assignment loss against a loop over pairs, gradients through the soft
k-means into the embedding and the temperature, and the learner's clustering of separable tasks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_learners import episodes, learner

from selfmeta.data.episodes import EpisodeSpec
from selfmeta.errors import SelfmetaError
from selfmeta.meta.metacluster import co_assignment_loss


def test_co_assignment_loss_against_a_loop_over_pairs():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(2, 6, 3, generator=g, dtype=torch.float64).softmax(-1)
    classes = torch.tensor([0, 0, 1, 1, 2, 2])
    terms = []
    for b in range(2):
        for i in range(6):
            for j in range(6):
                if i != j:
                    p = float((a[b, i] * a[b, j]).sum())
                    terms.append((-torch.log(torch.tensor(p, dtype=torch.float64)) if classes[i] == classes[j]
                                 else -torch.log(torch.tensor(1 - p, dtype=torch.float64))))
    assert float(co_assignment_loss(a, classes)) == pytest.approx(float(torch.stack(terms).mean()), rel=1e-9)
    perfect = F.one_hot(classes, 3).double().unsqueeze(0)                  # any numbering of the clusters
    assert float(co_assignment_loss(perfect[..., [2, 0, 1]], classes)) < 1e-5


def test_the_loss_reaches_the_embedding_and_the_temperature():
    spec = EpisodeSpec(ways=3, shots=2, queries=2)
    for weight in (0.0, 1.0):
        model = learner("metacluster", spec, proto_weight=weight)
        x = episodes(spec=spec)
        out = model(x, torch.arange(len(x)))
        out.loss.backward()
        assert model.log_temperature.grad is not None and model.log_temperature.grad != 0
        assert all(p.grad is not None for p in model.backbone.parameters() if p.requires_grad)
        assert ("accuracy" in out.logs) == (weight > 0)


def test_it_clusters_separable_tasks_into_their_classes():
    model = learner("metacluster", EpisodeSpec(ways=3, shots=2, queries=2)).eval()
    g = torch.Generator().manual_seed(3)
    centres = torch.randn(5, 4, 1, 8, generator=g, dtype=torch.float64) * 3
    features = (centres + 0.3 * torch.randn(5, 4, 5, 8, generator=g, dtype=torch.float64)).flatten(1, 2)  # (5, 20, 8)
    clusters = model._cluster(features, 4, torch.Generator().manual_seed(0), restarts=5).argmax(-1)
    truth = torch.arange(4).repeat_interleave(5)
    for e in range(5):  # the same partition as the classes, whatever the cluster numbers
        assert all(len(set(clusters[e][truth == c].tolist())) == 1 for c in range(4))
        assert len(set(clusters[e].tolist())) == 4
    # on raw items, through the backbone: one id in [0, k) per item
    x = episodes(tasks=2, spec=EpisodeSpec(ways=4, shots=5, queries=0)).view(2, 20, -1)
    ids = model.cluster_items(x, 4)
    assert ids.shape == (2, 20) and int(ids.min()) >= 0 and int(ids.max()) < 4


def test_option_errors():
    from selfmeta.engine.config import TrainConfig

    with pytest.raises(SelfmetaError, match="meta-learner 'metacluster' option iters takes an integer >= 1"):
        TrainConfig(method="metacluster", tasks="labels", steps=1, method_options={"iters": 0})
