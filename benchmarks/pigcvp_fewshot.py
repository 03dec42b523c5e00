"""Few-shot classification of PigCVP's TEST pigs (52 classes, 4 series each, length 2000): 5-way episodes
from the TEST split, drawn with the fixed evaluation seed, scored by nearest prototype.

    python benchmarks/pigcvp_fewshot.py --out runs/pigcvp [--ucr-runs runs/ucr] [--budget 300]

Rows: prototypes of the raw series (z-normalized per channel with the TRAIN statistics), of TS2Vec and of
SimCLR features learned without labels on TRAIN (``benchmarks/ucr.py`` runs), and of a TS2Vec encoder meta-trained with
UMTRA tasks on TRAIN without labels (``selfmeta metatrain --tasks umtra``), for at most ``--budget`` s.
With 4 series per test pig an episode holds at most 4 per class: 1-shot with 3 queries, 3-shot with 1;
5-shot episodes cannot be drawn from this split.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from selfmeta.data import load_data
from selfmeta.data.episodes import EpisodeSpec
from selfmeta.evaluation.fewshot import episode_accuracy, fewshot_episodes, summarize

PIG = Path(__file__).resolve().parents[2] / "shared" / "data" / "ucr" / "PigCVP"
EXE = str(Path(sys.executable).with_name("selfmeta"))
SHOTS = ((1, 3), (3, 1))  # (shots, queries) of the 5-way episodes
EPISODES = 2000


def selfmeta(*args: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([EXE, *args], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"selfmeta {' '.join(args)} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def raw_prototypes(shots: int, queries: int) -> dict:
    train, test = load_data(PIG, "train"), load_data(PIG, "test")
    modality = test.spec
    normalize = modality.normalizer(train.x)
    features = torch.nan_to_num(normalize(test.x)).flatten(1)
    episodes = fewshot_episodes(test.y, EpisodeSpec(5, shots, queries), EPISODES)
    return summarize(episode_accuracy(features, episodes, shots))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("runs/pigcvp"))
    parser.add_argument("--ucr-runs", type=Path, default=Path("runs/ucr"), help="benchmarks/ucr.py's --out")
    parser.add_argument("--budget", type=float, default=300)
    parser.add_argument("--ways", type=int, default=20, help="UMTRA: items (pseudo-classes) per training task")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    umtra = args.out / "umtra"
    if not (umtra / "encoder.safetensors").is_file():
        print(selfmeta("metatrain", "--data", str(PIG), "--tasks", "umtra", "--method", "protonet", "--encoder", "ts2vec",
                       "--ways", str(args.ways), "--shots", "1", "--queries", "1", "--tasks-per-step", "2",
                       "--time-budget", str(args.budget), "--out", str(umtra), "--no-progress"))
    rows = {}
    for shots, queries in SHOTS:
        column = f"5-way {shots}-shot ({queries} queries)"
        rows.setdefault("raw series, prototypes", {})[column] = raw_prototypes(shots, queries)
        for label, run in (("TS2Vec features (no labels), prototypes", args.ucr_runs / "PigCVP-ts2vec"),
                           ("SimCLR features, series views (no labels), prototypes", args.ucr_runs / "PigCVP-simclr"),
                           ("UMTRA + ProtoNet, TS2Vec encoder (no labels)", umtra)):
            rows.setdefault(label, {})[column] = selfmeta(
                "evaluate", str(run), "--data", str(PIG), "--split", "test", "--protocol", "fewshot", "--ways", "5",
                "--shots", str(shots), "--queries", str(queries), "--episodes", str(EPISODES))
    (args.out / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
    columns = [f"5-way {s}-shot ({q} queries)" for s, q in SHOTS]
    print("| features | " + " | ".join(columns) + " |")
    print("|---|" + "---:|" * len(columns))
    for label, scores in rows.items():
        print(f"| {label} | " + " | ".join(f"{100 * scores[c]['accuracy']:.2f} ± {100 * scores[c]['ci95']:.2f}"
                                         for c in columns) + " |")


if __name__ == "__main__":
    main()
