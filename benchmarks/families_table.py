"""The Markdown tables of the issue-15 comparison (benchmarks/omniglot_families.sh): few-shot accuracy with
its 95% interval, by the learner's own adaptation and by prototypes on its frozen features, and few-shot
clustering (Hungarian accuracy and NMI); steps from the summary that the training command printed into
``RUN.train.log`` beside the run directory.

    python benchmarks/families_table.py runs/f15/*/
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() and path.stat().st_size else None


def pct(result: dict | None, key: str = "accuracy", ci: str = "ci95") -> str:
    return "-" if result is None else f"{100 * result[key]:.2f} ± {100 * result[ci]:.2f}"


def steps(run: Path) -> str:
    log = run.parent / f"{run.name}.train.log"
    lines = log.read_text().strip().splitlines() if log.is_file() else []
    summary = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else None
    return f"{summary['steps']} in {summary['seconds']:.0f}" if summary else "-"


def main() -> None:
    runs = [Path(p) for p in sys.argv[1:]]
    print("| run | steps in s | 5w1s own | 5w5s own | 5w1s prototypes | 5w5s prototypes |")
    print("|---|---:|---:|---:|---:|---:|")
    for run in runs:
        cells = [pct(load(run / f"fewshot-5w{k}s-{a}.json")) for a in ("finetune", "prototype") for k in (1, 5)]
        print(f"| {run.name} | {steps(run)} | {' | '.join(cells)} |")
    print()
    print("| run | clustering | 5-way accuracy | 5-way NMI | 20-way accuracy | 20-way NMI |")
    print("|---|---|---:|---:|---:|---:|")
    for run in runs:
        for adapt in ("finetune", "balanced", "prototype", "cosine"):
            results = [load(run / f"cluster-{n}w5s-{adapt}.json") for n in (5, 20)]
            if not any(results):
                continue
            how = next(r["clustering"] for r in results if r)
            cells = [pct(r, key, f"{key}_ci95") for r in results for key in ("accuracy", "nmi")]
            print(f"| {run.name} | {how} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
