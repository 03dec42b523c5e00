"""The Numenta Anomaly Benchmark, whole corpus, online: selfmeta's series detectors beside NAB's windowed
Gaussian (reproduced) and the published scoreboard.

    python benchmarks/nab.py --out runs/nab [--budget 90] [--method ts2vec]

1. A series encoder is trained without labels on windows (32 rows) of the probationary periods of all 58
   series (the first 15% of each, at most 750 rows: the rows every detector may learn from; nothing after
   them is seen in training). The windows are written as a ``.ts`` file and trained on with the command a
   user types (``selfmeta pretrain --data windows.ts --split all --method ts2vec ...``).
2. ``selfmeta nab`` runs each detector over the corpus online and scores it with NAB's three profiles; the
   threshold is NAB's (tuned on the whole corpus), and ``cross_threshold`` is the score with the threshold
   chosen on one half of the series and applied to the other (Wu & Keogh 2021's objection).

Every run is one thread. Writes ``results.json`` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path


NAB = Path(__file__).resolve().parents[2] / "shared" / "data" / "nab"
WINDOW = 32
PUBLISHED = {"ARTime": (74.9, 65.1, 80.4), "Numenta HTM": (70.1, None, None), "CAD OSE": (69.9, None, None),
             "KNN-CAD": (58.0, None, None), "Random Cut Forest": (51.7, None, None),
             "windowed Gaussian (NAB)": (39.6, 20.9, 47.4)}


def run(cmd: list[str]) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def probation_windows(path: Path) -> int:
    """Every window of WINDOW rows inside each series' probationary period, in that period's units, as a
    ``.ts`` file without labels; returns how many."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from selfmeta.anomaly.learned import causal_windows, probation_units
    from selfmeta.anomaly.nab import read_corpus

    lines = []
    for series in read_corpus(NAB):
        p = series.probation
        units = probation_units(series.values[:, None], p)[:p]                   # (p, 1)
        for w in causal_windows(units, WINDOW)[WINDOW - 1::2]:                  # (1, WINDOW), every other row
            lines.append(",".join(f"{v:.5g}" for v in w[0]))
    header = ["@problemName nab_probation", "@timeStamps false", "@univariate true", "@equalLength true",
              f"@seriesLength {WINDOW}", "@classLabel false", "@data"]
    path.write_text("\n".join(header + lines) + "\n")
    return len(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--method", default="ts2vec")
    parser.add_argument("--budget", type=float, default=90.0, help="seconds of encoder pretraining")
    args = parser.parse_args()
    if not NAB.is_dir():
        sys.exit(f"{NAB} is missing")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    selfmeta = [sys.executable, "-m", "selfmeta"]

    windows = out / "probation_windows.ts"
    count = probation_windows(windows)
    encoder = out / f"encoder-{args.method}"
    trained = run([*selfmeta, "pretrain", "--data", str(windows), "--split", "all", "--method", args.method,
                   "--encoder", "ts2vec", "--time-budget", str(args.budget), "--out", str(encoder), "--no-progress",
                   "batch_size=256", "encoder.hidden=32", "encoder.output=64", "encoder.depth=4"])
    print(json.dumps({"encoder": str(encoder), "windows": count, **trained}), flush=True)

    configs = {
        "memory, raw windows (adapted)": ["--detector", "memory"],
        "raw windows, not adapted": ["--detector", "memory", "adapt=none"],
        f"memory, {args.method} encoder (adapted)": ["--detector", "memory", "--encoder", str(encoder)],
        f"{args.method} encoder, not adapted": ["--detector", "memory", "--encoder", str(encoder), "adapt=none"],
        "windowed Gaussian (reproduced)": ["--detector", "windowed_gaussian"],
        "null": ["--detector", "null"],
    }
    results = {}
    for name, flags in configs.items():
        target = out / ("nab-" + "".join(c if c.isalnum() else "-" for c in name).strip("-"))
        results[name] = run([*selfmeta, "nab", "--data", str(NAB), "--out", str(target), *flags])
        print(json.dumps({"config": name, **results[name]}), flush=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))

    print("\n| detector | standard | low FP | low FN | standard, threshold from the other half | points/s |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['standard']:.1f} | {r['reward_low_FP_rate']:.1f} | {r['reward_low_FN_rate']:.1f} | "
              f"{r['cross_threshold']['standard']:.1f} | {r['points_per_second']:,.0f} |")
    for name, (s, fp, fn) in PUBLISHED.items():
        cells = " | ".join("" if v is None else f"{v}" for v in (s, fp, fn))
        print(f"| {name}, published | {cells} | | |")
    print(f"\n{count} probationary windows; encoder trained {trained['seconds']} s, {trained['steps']} steps")


if __name__ == "__main__":
    main()
