"""Training throughput on series: a whole TS2Vec step (batch 64, length 512, one channel, the ts2vec encoder)
and a SimCLR step with the series views on the same encoder, and the share of each step spent making its
views (TS2Vec's two crops and masks; SimCLR's two batched views). One process, one thread.

    python benchmarks/series_throughput.py [--steps 12] [--length 512] [--batch 64]

Prints a Markdown table; medians over the timed steps (the first 3 are warm-up).
"""

from __future__ import annotations

import argparse

import torch

from selfmeta.data.dataset import Dataset
from selfmeta.engine.config import TrainConfig
from selfmeta.engine.model import build_method
from selfmeta.engine.optim import build_optimizer
from selfmeta.runtime import cpu_description, resolve_precision
from throughput import time_steps, training_step


def step_and_views(method_name: str, batch: int, length: int, bf16: bool):
    g = torch.Generator().manual_seed(0)
    data = Dataset(torch.randn(batch * 2, 1, length, generator=g).cumsum(-1), modality="series")
    cfg = TrainConfig(method=method_name, encoder="ts2vec", batch_size=batch, lr=1e-3, epochs=1)
    method = build_method(cfg, data)
    opt = build_optimizer("adamw", method, 1e-3, 1e-4)
    x, index = data.x[:batch], torch.arange(batch)

    step = training_step(method, opt, x, index, bf16)

    def views() -> None:
        with torch.no_grad():
            if method_name == "ts2vec":
                view1, view2, _ = method.crops(x)
                (torch.rand(batch, view1.shape[-1]) < 0.5, torch.rand(batch, view2.shape[-1]) < 0.5)
            else:
                torch.cat([method.views(x), method.views(x)])

    return step, views


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    auto = resolve_precision("auto", torch.device("cpu"))
    print(f"CPU: {cpu_description()}, one thread; batch {args.batch}, length {args.length}, median of "
          f"{args.steps - 3} steps; precision=auto here is {auto}\n")
    print("| step | precision | series/s | time steps/s | views' share of the step |")
    print("|---|---|---:|---:|---:|")
    for name in ("ts2vec", "simclr"):
        for bf16 in (False, True):
            step, views = step_and_views(name, args.batch, args.length, bf16)
            t_step, t_views = time_steps(step, args.steps), time_steps(views, args.steps)
            print(f"| {name}, ts2vec encoder | {'bf16' if bf16 else 'fp32'} | {args.batch / t_step:.1f} | "
                  f"{args.batch * args.length / t_step:,.0f} | {100 * t_views / t_step:.1f}% |")


if __name__ == "__main__":
    main()
