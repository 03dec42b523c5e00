#!/bin/bash
# The issue-5 Omniglot comparison: meta-training without labels on Omniglot's train split, one task
# constructor after the other, each for the same 30 CPU minutes on one core with one thread (taskset), and
# SimCLR for the same budget, and an untrained Conv-4 (random); then every run is scored on the test
# characters (5w1s, 5w5s, 20w1s, 20w5s, 2000 episodes each) and across domains on MNIST's test digits
# (5w1s, 5w5s).
#   bash benchmarks/omniglot_unsup.sh OUT_DIR [run ...]   (runs: simclr umtra metacontrastive psco cactus random)
#   python benchmarks/fewshot_table.py OUT_DIR/*/         (the Markdown table)
# CACTUs clusters the SimCLR run's features, so simclr must come before cactus. CORE=N picks the core; a
# run whose log says it finished is not trained again, only scored. VIEWS="key=value ..." adds view options
# to every run, e.g. the character views chosen on the val split (omniglot_val_pilot.sh):
#   VIEWS="views.crop_scale=[0.5,1.0] views.rotation=15 views.elastic=2.0"
set -u
out=${1:?usage: omniglot_unsup.sh OUT_DIR [run ...]}; shift
runs=${*:-simclr umtra metacontrastive psco cactus}
core=${CORE:-1}
budget=${BUDGET:-1800}
omni=../shared/data/omniglot
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
mkdir -p "$out"
read -ra views <<< "${VIEWS:-}"                    # split on spaces, no globbing of [0.5,1.0]
common=(--data $omni --out "$out/RUN" --time-budget "$budget" --no-progress views.hflip=0
        "${views[@]}")
for r in $runs; do
  args=("${common[@]/RUN/$r}")
  case $r in
    simclr)          cmd=(selfmeta pretrain --method simclr --encoder conv4 "${args[@]}") ;;
    umtra)           cmd=(selfmeta metatrain --tasks umtra --method protonet --ways 80 --shots 1 --queries 3
                          --tasks-per-step 1 "${args[@]}") ;;
    metacontrastive) cmd=(selfmeta metatrain --tasks metacontrastive --method protonet --ways 64 --shots 1
                          --queries 1 --tasks-per-step 4 "${args[@]}" method.distance=cosine) ;;
    psco)            cmd=(selfmeta metatrain --tasks umtra --method psco --ways 64 --shots 1 --queries 1
                          --tasks-per-step 4 "${args[@]}") ;;
    cactus)          cmd=(selfmeta metatrain --tasks cactus --method protonet --ways 20 --shots 1 --queries 3
                          --tasks-per-step 4 "${args[@]}" tasks.encoder="$out/simclr" tasks.clusters=500
                          tasks.partitions=10) ;;
    random)          cmd=(python benchmarks/random_encoder.py "$out/random" --data $omni) ;;
    *) echo "unknown run $r" >&2; exit 2 ;;
  esac
  if ! grep -qs '"stopped_by"' "$out/$r.train.log"; then           # a finished run is only scored again
    echo "${cmd[*]}" > "$out/$r.train.log"
    taskset -c "$core" "${cmd[@]}" >> "$out/$r.train.log" 2>&1 || { echo "$r failed: see $out/$r.train.log" >&2; continue; }
  fi
  for setting in "omniglot 5 1" "omniglot 5 5" "omniglot 20 1" "omniglot 20 5" "mnist 5 1" "mnist 5 5"; do
    set -- $setting
    taskset -c "$core" selfmeta evaluate "$out/$r" --data ../shared/data/$1 --split test --protocol fewshot \
        --ways "$2" --shots "$3" --episodes 2000 | tail -1 > "$out/$r/fewshot-$1-$2w$3s.json"
  done
done
