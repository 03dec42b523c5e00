#!/bin/bash
# The issue-3 CIFAR-10 comparison (the JPEG copy in ../shared/data/cifar10-jpg): ResNet-18 (CIFAR variant),
# SimCLR, MoCo v2 and BYOL for the same 30 CPU minutes each on one core with one thread (taskset), one after
# the other, then kNN and linear probes on frozen features by benchmarks/frozen_features.py.
#   bash benchmarks/cifar10_methods.sh OUT_DIR [method ...]     (default: simclr moco byol)
#   python benchmarks/method_table.py OUT_DIR/*/                (the Markdown table)
set -u
out=${1:?usage: cifar10_methods.sh OUT_DIR [method ...]}; shift
methods=${*:-simclr moco byol}
core=${CORE:-0}
budget=${BUDGET:-1800}
data=../shared/data/cifar10-jpg/cifar10-jpg.zip
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
mkdir -p "$out"
for m in $methods; do
  taskset -c "$core" selfmeta pretrain --data $data --method "$m" --encoder resnet18 --out "$out/$m" \
      --time-budget "$budget" --no-progress > "$out/$m.train.log" 2>&1
  taskset -c "$core" python benchmarks/frozen_features.py "$out/$m" --data $data --labels-per-class 10 \
      --no-baselines > "$out/$m.eval.log" 2>&1
done
