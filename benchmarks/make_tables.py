"""Write numeric tables from scikit-learn's bundled data sets as CSV files, for the tabular benchmark.

    python benchmarks/make_tables.py OUT_DIR

``digits.csv`` (1,797 rows, 64 pixel-count columns, 10 classes) and ``breast_cancer.csv`` (569 rows,
30 measurements on very different scales, 2 classes), each with a ``label`` column. selfmeta reads them
with its CSV source and scores them on its fixed, stratified 80/20 split.
"""

from __future__ import annotations

import sys
from pathlib import Path

from sklearn.datasets import load_breast_cancer, load_digits


def main() -> None:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    for name, loader in (("digits", load_digits), ("breast_cancer", load_breast_cancer)):
        frame = loader(as_frame=True).frame.rename(columns={"target": "label"})
        frame.to_csv(out / f"{name}.csv", index=False)
        print(out / f"{name}.csv", frame.shape)


if __name__ == "__main__":
    main()
