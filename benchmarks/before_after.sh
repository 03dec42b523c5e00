#!/bin/bash
# Training speed and results of two versions of selfmeta, alternated on one machine: an MNIST SimCLR +
# Conv-4 run and a digits-table SimCLR + MLP run per version and round, then the digits probes.
#   bash benchmarks/before_after.sh BEFORE_COMMIT [ROUNDS] [OUT]      (run from the repository root)
# Each version runs from its own source tree (a git worktree of BEFORE_COMMIT, and this checkout) put
# first on PYTHONPATH, with its own benchmarks/frozen_features.py. Prints samples/s from metrics.jsonl.
set -euo pipefail
before=$1; rounds=${2:-2}; out=${3:-runs/before-after}
here=$(pwd); mnist=${MNIST:-../shared/data/mnist}
mkdir -p "$out"; out=$(cd "$out" && pwd)
[ -d "$out/tree" ] || git worktree add -f "$out/tree" "$before" >/dev/null
python benchmarks/make_tables.py "$out/data" >/dev/null
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
for round in $(seq 1 "$rounds"); do
  for version in before after; do
    if [ "$version" = before ]; then root=$out/tree; else root=$here; fi
    run=$out/$version-$round; rm -rf "$run"
    PYTHONPATH=$root/src selfmeta pretrain --data "$mnist" --method simclr --encoder conv4 --steps 150 \
        --out "$run/mnist" --no-progress >/dev/null
    PYTHONPATH=$root/src selfmeta pretrain --data "$out/data/digits.csv" --method simclr --encoder mlp \
        --out "$run/digits" --epochs 200 batch_size=256 --no-progress >/dev/null
    echo "$version round $round: $(tail -1 "$run/mnist/metrics.jsonl")"
    echo "$version round $round: $(tail -1 "$run/digits/metrics.jsonl")"
    PYTHONPATH=$root/src python "$root/benchmarks/frozen_features.py" "$run/digits" --data "$out/data/digits.csv" \
        --labels-per-class 10 --pca 16 | grep '^|'
  done
done
git worktree remove --force "$out/tree"
