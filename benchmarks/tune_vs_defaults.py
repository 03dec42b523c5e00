"""selfmeta tune against the fixed defaults, for the same total CPU budget, as a user types them.

    python benchmarks/tune_vs_defaults.py --data ../shared/data/mnist --budget 600 --out runs/tune-mnist-600 \
        [--arms defaults tuned] [-- extra key=value options for every arm]

Arms (each a run directory under OUT):
- ``defaults``: ``selfmeta pretrain --data D --method simclr --time-budget B`` (the data's view rule included);
- ``plain``: the same with the view rule's options set back to the fixed defaults (what selfmeta did before
  the rule: flip 0.5, colour jitter 0.8, crops of 20-100%, no rotation), to check the rule;
- ``tuned``: ``selfmeta tune --data D --method simclr --time-budget B [--score S]`` (search and training in B).
Each is scored by ``selfmeta evaluate RUN --protocol linear --labels-per-class 10`` (5 label draws: mean and
spread) on the test split. One thread; results to OUT/results.json and a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

EXE = str(Path(sys.executable).with_name("selfmeta"))
PLAIN = ["views.hflip=0.5", "views.jitter=0.8", "views.crop_scale=[0.2,1.0]", "views.rotation=0"]


def selfmeta(*args: str) -> tuple[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([EXE, *args], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"selfmeta {' '.join(args)} failed:\n{proc.stderr}")
    return proc.stdout.strip().splitlines()[-1], proc.stderr


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--budget", type=float, default=600)
    parser.add_argument("--method", default="simclr")
    parser.add_argument("--arms", nargs="*", default=["defaults", "tuned"])
    parser.add_argument("--labels-per-class", type=int, default=10)
    parser.add_argument("--score", default=None, help="the tuned arm's --score (default: tune's own)")
    parser.add_argument("options", nargs="*", help="key=value options for every arm")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    common = ["--data", args.data, "--method", args.method, "--time-budget", str(args.budget), "--no-progress"]
    for arm in args.arms:
        run = args.out / arm
        if arm not in results:
            start = time.perf_counter()
            if arm == "tuned":
                score = ["--score", args.score] if args.score else []
                summary, log = selfmeta("tune", *common, "--out", str(run), *score, *args.options)
            else:
                summary, log = selfmeta("pretrain", *common, "--out", str(run), *args.options,
                                        *(PLAIN if arm == "plain" else []))
            (args.out / f"{arm}.log").write_text(log)
            results[arm] = {"wall_s": round(time.perf_counter() - start, 1), "summary": json.loads(summary)}
        scores, _ = selfmeta("evaluate", str(run), "--data", args.data, "--protocol", "linear",
                             "--labels-per-class", str(args.labels_per_class))
        scores = json.loads(scores)
        results[arm].update(accuracy=scores["accuracy"], accuracy_std=scores["accuracy_std"])
        results_path.write_text(json.dumps(results, indent=2) + "\n")
        print(arm, json.dumps(results[arm]), flush=True)

    print(f"\n| arm | wall s | linear, {args.labels_per_class}/class (5 draws) | spread |")
    print("|---|---:|---:|---:|")
    for arm in args.arms:
        r = results[arm]
        print(f"| {arm} | {r['wall_s']:.0f} | {100 * r['accuracy']:.2f}% | {100 * r['accuracy_std']:.2f} |")


if __name__ == "__main__":
    main()
