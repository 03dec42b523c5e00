"""The Markdown table of the Omniglot comparison (benchmarks/omniglot_unsup.sh): few-shot accuracy with a
95% interval from each run's ``fewshot-DATA-NwKs.json`` files, and steps from the summary that the training
command printed into ``RUN.train.log`` beside the run directory.

    python benchmarks/fewshot_table.py runs/o5/*/
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

COLUMNS = [("omniglot", 5, 1), ("omniglot", 5, 5), ("omniglot", 20, 1), ("omniglot", 20, 5), ("mnist", 5, 1),
           ("mnist", 5, 5)]


def cell(path: Path) -> str:
    if not path.is_file():
        return "-"
    result = json.loads(path.read_text())
    return f"{100 * result['accuracy']:.2f} ± {100 * result['ci95']:.2f}"


def main() -> None:
    names = " | ".join(f"{'Omniglot' if d == 'omniglot' else 'MNIST'} {n}w{k}s" for d, n, k in COLUMNS)
    print(f"| run | steps in s | {names} |")
    print("|---|---:|" + "---:|" * len(COLUMNS))
    for run in map(Path, sys.argv[1:]):
        log = run.parent / f"{run.name}.train.log"
        lines = log.read_text().strip().splitlines() if log.is_file() else []
        summary = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else None
        steps = f"{summary['steps']} in {summary['seconds']:.0f}" if summary else "-"
        cells = " | ".join(cell(run / f"fewshot-{d}-{n}w{k}s.json") for d, n, k in COLUMNS)
        print(f"| {run.name} | {steps} | {cells} |")


if __name__ == "__main__":
    main()
