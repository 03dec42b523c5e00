#!/bin/bash
# A short UMTRA + ProtoNet pilot for choosing settings on Omniglot's validation characters, never the test
# ones: meta-train without labels on the train split for BUDGET seconds (default 600) on one core, then
# score 5-way and 20-way 1-shot on the val split (2000 episodes) and append a line to OUT_DIR/results.txt.
#   CORE=0 bash benchmarks/omniglot_val_pilot.sh OUT_DIR NAME [metatrain options and key=value ...]
# e.g. ... runs/pilots E --ways 80 --shots 1 --queries 3 --tasks-per-step 1 views.elastic=2.0
set -u
dir=${1:?usage: omniglot_val_pilot.sh OUT_DIR NAME [options]}; name=${2:?missing NAME}; shift 2
out=$dir/$name
core=${CORE:-0}
omni=../shared/data/omniglot
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
mkdir -p "$dir"
taskset -c "$core" selfmeta metatrain --tasks umtra --method protonet --data $omni --out "$out" \
    --time-budget "${BUDGET:-600}" --no-progress views.hflip=0 "$@" > "$out.train.log" 2>&1 \
    || { echo "$name failed: see $out.train.log" >&2; exit 1; }
scores=()
for ways in 5 20; do
  taskset -c "$core" selfmeta evaluate "$out" --data $omni --split val --protocol fewshot --ways $ways \
      --shots 1 --episodes 2000 | tail -1 > "$out/val-${ways}w1s.json"
  scores+=("$(python -c "import json, sys; print(f\"{100 * json.load(open(sys.argv[1]))['accuracy']:.2f}\")" \
      "$out/val-${ways}w1s.json")")
done
echo "$name val 5w1s ${scores[0]} 20w1s ${scores[1]} : $*" >> "$dir/results.txt"
