"""Whole training runs with glibc's default allocator settings and with ``selfmeta.runtime.tune_allocator``
(what the command line sets), in one session, alternating, each run in a fresh process.

    python benchmarks/allocator.py [--scale 1.0] [--rounds 2] [--workloads simclr protonet maml]

Workloads (MNIST from ../shared/data, one intra-op thread, precision=auto):
- SimCLR + Conv-4, batch 256 (``selfmeta pretrain`` defaults);
- ProtoNet and MAML meta-training on Omniglot with ``selfmeta metatrain`` defaults (5-way 1-shot, 15
  queries, 32 tasks per step).
The time is the training's alone (data loading excluded), from ``getrusage`` in the training process.
Prints user, system and wall seconds and minor page faults per run, and the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
WORKLOADS = {  # name: data, configuration, steps per run
    "simclr": ("mnist", dict(method="simclr", encoder="conv4", batch_size=256), 150),
    "protonet": ("omniglot", dict(method="protonet", encoder="conv4", tasks="labels"), 40),
    "maml": ("omniglot", dict(method="maml", encoder="conv4", tasks="labels"), 8),
}


def child(name: str, tune: bool, steps: int) -> None:
    import torch

    from selfmeta.data import load_data
    from selfmeta.engine import TrainConfig, train
    from selfmeta.runtime import tune_allocator

    torch.set_num_threads(1)
    if tune:
        assert tune_allocator()
    folder, cfg, _ = WORKLOADS[name]
    data = load_data(SHARED / folder, "train")
    before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()   # training only
    train(TrainConfig(**cfg, steps=steps, epochs=None), data, None, progress=False)
    after = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"wall": time.perf_counter() - start, "user": after.ru_utime - before.ru_utime,
                      "sys": after.ru_stime - before.ru_stime, "minflt": after.ru_minflt - before.ru_minflt,
                      "peak_mb": after.ru_maxrss / 1024}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies every workload's steps")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workloads", nargs="*", default=list(WORKLOADS))
    parser.add_argument("--child", nargs=2, metavar=("WORKLOAD", "TUNE"))
    parser.add_argument("--steps", type=int, default=1, help=argparse.SUPPRESS)  # the child's
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1] == "1", args.steps)
        return
    from selfmeta.runtime import cpu_description

    steps = ", ".join(f"{n} {max(1, round(WORKLOADS[n][2] * args.scale))}" for n in args.workloads)
    print(f"CPU: {cpu_description()}, {os.cpu_count()} cores; steps per run: {steps}; one thread\n")
    print("| workload | allocator | user s | system s | wall s | minor faults | peak memory MB |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name in args.workloads:
        results: dict[bool, list[dict]] = {False: [], True: []}
        for r in range(args.rounds):
            for tune in ((False, True) if r % 2 == 0 else (True, False)):
                steps = max(1, round(WORKLOADS[name][2] * args.scale))
                out = subprocess.run([sys.executable, __file__, "--steps", str(steps), "--child", name,
                                      str(int(tune))], capture_output=True, text=True, check=True)
                results[tune].append(json.loads(out.stdout.strip().splitlines()[-1]))
        mean = {t: {k: sum(r[k] for r in rs) / len(rs) for k in rs[0]} for t, rs in results.items()}
        for tune in (False, True):
            m = mean[tune]
            label = "tuned (the CLI)" if tune else "glibc default"
            print(f"| {name} | {label} | {m['user']:.1f} | {m['sys']:.1f} | {m['wall']:.1f} | {m['minflt']:,.0f} | "
                  f"{m['peak_mb']:,.0f} |")
        print(f"| {name} | ratio default/tuned | {mean[False]['user'] / mean[True]['user']:.2f} | "
              f"{mean[False]['sys'] / max(mean[True]['sys'], 1e-9):.1f} | {mean[False]['wall'] / mean[True]['wall']:.2f} | | "
              f"{mean[False]['peak_mb'] / mean[True]['peak_mb']:.2f} |")


if __name__ == "__main__":
    main()
