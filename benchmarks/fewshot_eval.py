"""Time of a 2000-episode few-shot evaluation of a frozen encoder: batched against episode by episode.

    python benchmarks/fewshot_eval.py RUN_DIR --data ../shared/data/omniglot [--ways 5 --shots 1 --episodes 2000]

"batched" is what ``selfmeta evaluate --protocol fewshot`` does: embed every test item once, then solve
all episodes as tensor operations. "per episode" embeds each episode's N*(K+Q) items when the episode
comes, as a loop over episodes would. Both score the same episodes, so their accuracies must agree
(to float rounding: the per-episode path embeds smaller batches).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from selfmeta.data import load_data
from selfmeta.data.episodes import EpisodeSpec
from selfmeta.encoders import to_unit
from selfmeta.engine.model import embed, load_backbone
from selfmeta.evaluation.fewshot import episode_accuracy, fewshot_episodes, summarize


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir")
    parser.add_argument("--data", required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--ways", type=int, default=5)
    parser.add_argument("--shots", type=int, default=1)
    parser.add_argument("--queries", type=int, default=15)
    parser.add_argument("--episodes", type=int, default=2000)
    args = parser.parse_args()

    t0 = time.perf_counter()
    data = load_data(args.data, args.split)
    backbone, _ = load_backbone(args.run_dir)
    spec = EpisodeSpec(args.ways, args.shots, args.queries)
    loaded = time.perf_counter()

    episodes = fewshot_episodes(data.y, spec, args.episodes)
    features = embed(backbone, data)
    embedded = time.perf_counter()
    batched = summarize(episode_accuracy(features, episodes, spec.shots, "prototype"))
    batched_done = time.perf_counter()

    per_episode = []
    with torch.no_grad():
        backbone.eval()
        for e in range(args.episodes):
            idx = episodes[e : e + 1]                                        # (1, N, K+Q)
            f = backbone(to_unit(data.x[idx.flatten()])).float()            # (N*(K+Q), F)
            local = torch.arange(f.shape[0]).view(1, spec.ways, spec.per_class)
            per_episode.append(episode_accuracy(f, local, spec.shots, "prototype"))
    looped = summarize(torch.cat(per_episode))
    looped_done = time.perf_counter()

    print(json.dumps({
        "items": len(data), "episodes": args.episodes, "setting": f"{spec.ways}-way {spec.shots}-shot",
        "load_seconds": round(loaded - t0, 2),
        "batched": {"seconds": round(batched_done - loaded, 2), "embed_seconds": round(embedded - loaded, 2), **batched},
        "per_episode": {"seconds": round(looped_done - batched_done, 2), **looped},
        "speedup": round((looped_done - batched_done) / (batched_done - loaded), 1),
    }, indent=1))


if __name__ == "__main__":
    main()
