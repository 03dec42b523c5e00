#!/bin/bash
# The issue-3 MNIST comparison: every method for the same 10 minutes of CPU training, one after the other,
# each pinned to one core with one thread (taskset), then scored by benchmarks/frozen_features.py.
#   bash benchmarks/mnist_methods.sh OUT_DIR [method ...]     (default: every registered method)
#   python benchmarks/method_table.py OUT_DIR/*/              (the Markdown table)
set -u
out=${1:?usage: mnist_methods.sh OUT_DIR [method ...]}; shift
methods=${*:-simclr moco byol barlow vicreg rotation reconstruction triplet contrastive deepcluster sela dec}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
mkdir -p "$out"
for m in $methods; do
  taskset -c 1 selfmeta pretrain --data ../shared/data/mnist --method "$m" --encoder conv4 --out "$out/$m" \
      --time-budget 600 views.hflip=0 views.crop_scale=[0.5,1.0] views.rotation=15 --no-progress \
      > "$out/$m.train.log" 2>&1
  taskset -c 1 python benchmarks/frozen_features.py "$out/$m" --data ../shared/data/mnist --labels-per-class 10 \
      --no-baselines > "$out/$m.eval.log" 2>&1
done
