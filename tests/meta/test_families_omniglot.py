"""A short Omniglot run of ProtoNet and of each meta-learning family beyond the metric and MAML ones: trained in-process for a few
dozen 5-way 1-shot steps on the train characters, each learner's own adaptation is well above chance on
the test characters. Skips where ../shared/data/omniglot is absent."""

from __future__ import annotations

import pytest
import torch
from conftest import shared

from selfmeta.data import load_data
from selfmeta.data.episodes import EpisodeSpec
from selfmeta.engine.config import TrainConfig
from selfmeta.engine.trainer import train
from selfmeta.evaluation.fewshot import fewshot_episodes, learner_episode_accuracy

pytestmark = pytest.mark.slow
STEPS, THRESHOLD = 30, 0.4   # 5-way 1-shot, chance 0.2; after 30 steps 0.49 (hypernet) to 0.76 (memory)


@pytest.fixture(scope="module")
def omniglot():
    path = shared("omniglot")
    return load_data(str(path), "train"), load_data(str(path), "test")


@pytest.mark.parametrize("name", ["protonet", "memory", "hypernet", "leo", "lstm", "metacluster"])
def test_a_short_omniglot_run_is_far_above_chance(omniglot, name):
    train_data, test = omniglot
    torch.manual_seed(0)
    cfg = TrainConfig(method=name, tasks="labels", ways=5, shots=1, queries=5, tasks_per_step=4, steps=STEPS, quality_every=0,
                      seed=0)
    learner = train(cfg, train_data, progress=False).method.eval()
    episodes = fewshot_episodes(test.require_labels(), EpisodeSpec(5, 1, 5), 60)
    accuracy = learner_episode_accuracy(learner.adapt_predict, lambda i: test.spec.to_model(test.take(i), "cpu"),
                                        episodes, shots=1)
    assert float(accuracy.mean()) > THRESHOLD, name

