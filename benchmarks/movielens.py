"""Recommendation (issue 17): MovieLens 100K, leave-one-out, full ranking; and cold-start users.

Data: ``../shared/data/movielens-100k/ml-100k`` (943 users, 1,682 movies, every rating an interaction, in
time order). Splits are the source's (``selfmeta.data.sources.interactions``): each user's last item is the
test target, the one before it the validation target; training rows end before both. Settings are chosen on
the validation targets (``--split val``), and the test figures are read once for the chosen settings.

    python benchmarks/movielens.py train sasrec runs/ml-sasrec --budget 300 [key=value ...]
    python benchmarks/movielens.py rank runs/ml-sasrec            # validation and test, full and sampled-100
    python benchmarks/movielens.py cold-train sasrec runs/ml-cold-sasrec --budget 300
    python benchmarks/movielens.py cold-train coldstart runs/ml-cold-meta --budget 300
    python benchmarks/movielens.py cold runs/ml-cold-sasrec --adapt finetune --users coldval steps=5 lr=0.5
    python benchmarks/movielens.py cold runs/ml-cold-meta --users cold
    taskset -c 0 python benchmarks/movielens.py speed        # steps per second, fp32 and bf16, one process

Every command appends its JSON results to ``runs/movielens.jsonl`` and prints them. Cold start: the runs
train on the warm users only (``--users warm``, every interaction of theirs); the cold users (a fixed tenth,
by a hash of the ID) are scored from their first 3 and 5 interactions, and ``coldval`` (another tenth) is
where the fine-tuning baseline's rate and steps are chosen.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE.parent / ".." / "shared" / "data" / "movielens-100k" / "ml-100k"
RESULTS = Path("runs/movielens.jsonl")


def selfmeta(*args: str) -> dict:
    """Run the CLI as a user types it; its last stdout line as JSON."""
    proc = subprocess.run([sys.executable, "-m", "selfmeta", *map(str, args)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr.strip())
    return json.loads(proc.stdout.strip().splitlines()[-1])


def record(result: dict) -> None:
    print(json.dumps(result))
    RESULTS.parent.mkdir(exist_ok=True)
    with RESULTS.open("a") as f:
        f.write(json.dumps(result) + "\n")


def speed(steps: int) -> None:
    """Training steps per second of each method on ML-100K's training rows (batch 128, the defaults), in fp32
    and under bf16 autocast, measured in one process (ratios, on a shared machine)."""
    import time

    import torch

    from selfmeta.data import load_data
    from selfmeta.engine.config import TrainConfig
    from selfmeta.engine.model import build_method, fit_preprocessor
    from selfmeta.runtime import cpu_description

    data = fit_preprocessor(TrainConfig(), load_data(DATA, "train"))
    x = data.take(torch.arange(128)).long()
    index = torch.arange(128)
    for method in ("sasrec", "cl4srec", "duorec"):
        model = build_method(TrainConfig(method=method, encoder="sasrec"), data)
        model.on_epoch_start(0, data)
        optimizer = torch.optim.AdamW(model.parameters(), 1e-3)
        for precision in ("fp32", "bf16"):
            def step() -> None:
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                    loss = model(x, index).loss
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            step()
            start = time.perf_counter()
            for _ in range(steps):
                step()
            seconds = (time.perf_counter() - start) / steps
            record({"command": "speed", "method": method, "precision": precision, "cpu": cpu_description(),
                    "threads": torch.get_num_threads(), "ms_per_step": round(1000 * seconds, 1),
                    "sequences_per_s": round(128 / seconds, 1)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("train", "cold-train"):
        p = sub.add_parser(name)
        p.add_argument("method")
        p.add_argument("out")
        p.add_argument("--budget", type=float, default=300)
        p.add_argument("--steps", type=int, default=None, help="optimizer steps instead of --budget seconds")
        p.add_argument("overrides", nargs="*")
    p = sub.add_parser("speed")
    p.add_argument("--steps", type=int, default=20)
    p = sub.add_parser("rank")
    p.add_argument("run")
    p = sub.add_parser("cold")
    p.add_argument("run")
    p.add_argument("--users", default="cold")
    p.add_argument("--adapt", default="prototype")
    p.add_argument("--shots", type=int, nargs="+", default=[3, 5])
    p.add_argument("overrides", nargs="*")
    args, extra = parser.parse_known_args()
    if extra and all("=" in e and not e.startswith("-") for e in extra) and hasattr(args, "overrides"):
        args.overrides = [*args.overrides, *extra]   # key=value options after the flags
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")

    if args.command == "speed":
        speed(args.steps)
    elif args.command in ("train", "cold-train"):
        data = ["--data", DATA] + (["--users", "warm", "--split", "all"] if args.command == "cold-train" else [])
        if args.command == "cold-train" and args.method == "coldstart":
            args.overrides = ["input.keep=first", "input.max_length=50", *args.overrides]
        length = ["--steps", args.steps] if args.steps else ["--time-budget", args.budget]
        result = selfmeta("pretrain", *data, "--method", args.method, "--out", args.out, *length, "--no-progress",
                          *args.overrides)
        record({"command": args.command, "method": args.method, "overrides": args.overrides, **result})
    elif args.command == "rank":
        for split in ("val", "test"):
            result = selfmeta("evaluate", args.run, "--data", DATA, "--protocol", "ranking", "--split", split)
            record({"run": args.run, **result})
    else:
        for shots in args.shots:
            result = selfmeta("evaluate", args.run, "--data", DATA, "--users", args.users, "--split", "all",
                              "--protocol", "coldstart", "--shots", shots, "--adapt", args.adapt, *args.overrides)
            record({"run": args.run, "user_set": args.users, **result})


if __name__ == "__main__":
    main()
