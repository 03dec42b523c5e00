"""Rare-event recall of a memory run: accuracy the 1st, 2nd, ..., 10th time a class is seen in a stream.

    python benchmarks/memory_recall.py RUN_DIR --data ../shared/data/omniglot [--episodes 200 --ways 5]

The protocol of Santoro et al. (ICML 2016, one-shot learning with memory-augmented networks), which
Kaiser et al. (2017) cite for rare-event recall: a stream of episodes drawn with a fixed seed from the
test classes; each episode shows ``--ways`` classes ``--instances`` times each, in a random order, one item
at a time. The memory predicts each item (the value of its nearest key in the whole memory, which still
holds the earlier episodes' classes), then is told its label and writes it (``Memory.observe``). Every class
gets a fresh label in every episode, so the 1st sighting cannot be right: the memory has never been shown
that label (Santoro's network guesses among the episode's 5 labels, hence its chance-level 1st instance).
Reported twice: the nearest key among the whole memory, and among the keys of the episode's labels only
(Santoro's output layer has only those).
"""

from __future__ import annotations

import argparse
import json

import torch

from selfmeta.data import load_data
from selfmeta.data.episodes import EpisodeSpec
from selfmeta.engine.model import check_compatible, load_backbone, load_learner
from selfmeta.evaluation.fewshot import fewshot_episodes


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir")
    parser.add_argument("--data", required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--ways", type=int, default=5)
    parser.add_argument("--instances", type=int, default=10)
    parser.add_argument("--episodes", type=int, default=200)
    args = parser.parse_args()

    _, description = load_backbone(args.run_dir)
    data = check_compatible(description, load_data(args.data, args.split))
    learner = load_learner(args.run_dir, data)
    if learner is None or not hasattr(learner, "observe"):
        raise SystemExit(f"error: {args.run_dir} is not a memory run")
    spec = EpisodeSpec(args.ways, args.instances, 0)
    episodes = fewshot_episodes(data.y, spec, args.episodes)                 # (E, N, instances)
    g = torch.Generator().manual_seed(0)
    correct = {"memory": torch.zeros(args.instances), "episode": torch.zeros(args.instances)}
    for block in episodes:
        labels = (learner.next_value + torch.arange(args.ways)).repeat_interleave(args.instances)
        seen = [0] * args.ways                                              # sightings of each class so far
        order = torch.randperm(len(labels), generator=g)
        items = data.spec.to_model(data.take(block.flatten()[order]), "cpu")
        for i, j in enumerate(order.tolist()):                              # one item at a time: a stream
            c = j // args.instances
            x, y = items[i : i + 1], labels[j : j + 1]
            correct["episode"][seen[c]] += float(learner.predict(x, labels.unique())[0] == y[0])
            correct["memory"][seen[c]] += float(learner.observe(x, y)[0] == y[0])  # then remembered
            seen[c] += 1
    print(json.dumps({"ways": args.ways, "episodes": args.episodes, "memory_size": len(learner.values), **{
        f"accuracy_by_sighting_among_{among}": [round(float(a) / (args.episodes * args.ways), 4) for a in hits]
        for among, hits in correct.items()}}))


if __name__ == "__main__":
    main()
