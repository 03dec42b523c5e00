"""MAML's cost per meta-step, second order against first order: time and peak memory.

    python benchmarks/maml_cost.py [--tasks 32 --ways 5 --shots 1 --queries 15 --inner-steps 5 --steps 5]

Each variant runs in a fresh process (so peak memory is its own): Conv-4 on 28x28 single-channel items
(Omniglot's shape; the cost does not depend on the pixels), a meta-batch of ``tasks`` episodes, ``inner_steps``
SGD steps per task under ``vmap``, forward + backward + AdamW. Time is the median over ``steps`` meta-steps
after one warm-up step; peak memory is the process's peak resident set minus its size before the first step.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch


def measure(variant: str, args: argparse.Namespace) -> dict:
    from selfmeta.data.episodes import EpisodeSpec
    from selfmeta.modalities.image import ImageViews
    from selfmeta.encoders import Backbone, Normalize, build_encoder, to_unit
    from selfmeta.meta import METALEARNERS

    torch.manual_seed(0)
    spec = EpisodeSpec(args.ways, args.shots, args.queries)
    backbone = Backbone(Normalize(torch.zeros(1, 1, 1, 1), torch.ones(1, 1, 1, 1)), build_encoder("conv4", (1, 28, 28), "image"))
    learner = METALEARNERS.get(variant)(backbone, ImageViews((1, 28, 28)), spec, inner_steps=args.inner_steps,
                                        inner_lr=0.1)
    optimizer = torch.optim.AdamW(learner.parameters(), lr=1e-3)
    x = to_unit(torch.randint(0, 256, (args.tasks * spec.size, 1, 28, 28), dtype=torch.uint8))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    for _ in range(args.steps + 1):
        start = time.perf_counter()
        loss = learner(x, None).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"variant": variant, "seconds_per_meta_step": round(statistics.median(times[1:]), 3),
            "peak_memory_mb": round((peak - before) / 1024, 1), "threads": torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=32)
    parser.add_argument("--ways", type=int, default=5)
    parser.add_argument("--shots", type=int, default=1)
    parser.add_argument("--queries", type=int, default=15)
    parser.add_argument("--inner-steps", type=int, default=5)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--variant", default=None, help=argparse.SUPPRESS)  # one variant, in a child process
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(measure(args.variant, args)))
        return
    rows = []
    for variant in ("maml", "fomaml"):
        child = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--variant", variant],
                               capture_output=True, text=True, check=True)
        rows.append(json.loads(child.stdout.strip().splitlines()[-1]))
    print(f"meta-batch {args.tasks}, {args.ways}-way {args.shots}-shot, {args.queries} queries, {args.inner_steps} inner steps")
    print("| variant | s / meta-step | peak memory (MB) |\n|---|---:|---:|")
    for r in rows:
        print(f"| {'MAML (second order)' if r['variant'] == 'maml' else 'first-order MAML'} | "
              f"{r['seconds_per_meta_step']} | {r['peak_memory_mb']} |")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
