#!/bin/bash
# The issue-15 Omniglot comparison: the meta-learning families (memory, hypernet, leo, lstm, metacluster) with a
# Conv-4, each trained for the same CPU budget on one core with one thread (taskset), once on labelled
# episodes (RUN-sup) and once on UMTRA tasks built without labels with the handwriting views of the README's
# UMTRA command (RUN-umtra); then each run is scored on the test characters with its own adaptation
# (--adapt finetune) and with prototypes on its frozen features, 5-way 1-shot and 5-shot, 2000 episodes. The
# baselines for few-shot clustering (protonet-umtra, simclr) are trained the same way. Every run is scored by
# --protocol episode-cluster (5-way and 20-way, 5 items per class): k-means on its features and on its
# normalized features; metacluster-umtra and its baselines (protonet-umtra, simclr) also by balanced k-means,
# and a metacluster run by its own clustering too.
#   CORE=0 BUDGET=600 bash benchmarks/omniglot_families.sh OUT_DIR memory-sup leo-umtra ... simclr
#   python benchmarks/families_table.py OUT_DIR/*/
# A run whose log says it finished is not trained again, only scored.
set -u
out=${1:?usage: omniglot_families.sh OUT_DIR RUN...}; shift
core=${CORE:-0}
budget=${BUDGET:-1800}
omni=../shared/data/omniglot
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
mkdir -p "$out"
umtra_views=(views.hflip=0 "views.crop_scale=[0.5,1.0]" views.rotation=15 views.elastic=2.0)
for r in "$@"; do
  method=${r%-*}
  # The optimization-based learners train on 5-way tasks, the ways they are tested on (as MAML, LEO and Ravi &
  # Larochelle do: their inner loops learn a step for that many ways); the others on many ways, as ProtoNet.
  case $method in
    leo|lstm) sup=(--ways 5 --queries 5 --tasks-per-step 8); unsup=(--ways 5 --queries 3 --tasks-per-step 8) ;;
    *)        sup=(--ways 20 --queries 5 --tasks-per-step 4); unsup=(--ways 80 --queries 3 --tasks-per-step 1) ;;
  esac
  case $r in
    simclr)  cmd=(selfmeta pretrain --method simclr --encoder conv4 views.hflip=0) ;;
    *-sup)   cmd=(selfmeta metatrain --method "$method" --shots 1 "${sup[@]}") ;;
    *-umtra) cmd=(selfmeta metatrain --tasks umtra --method "$method" --shots 1 "${unsup[@]}" "${umtra_views[@]}") ;;
    *) echo "unknown run $r (NAME-sup, NAME-umtra or simclr)" >&2; exit 2 ;;
  esac
  cmd+=(--data $omni --out "$out/$r" --time-budget "$budget" --no-progress)
  if ! grep -qs '"stopped_by"' "$out/$r.train.log"; then           # a finished run is only scored again
    echo "${cmd[*]}" > "$out/$r.train.log"
    taskset -c "$core" "${cmd[@]}" >> "$out/$r.train.log" 2>&1 || { echo "$r failed: see $out/$r.train.log" >&2; continue; }
  fi
  for shots in 1 5; do
    adapts="prototype"
    [ "$r" != simclr ] && adapts="finetune prototype"
    for adapt in $adapts; do
      taskset -c "$core" selfmeta evaluate "$out/$r" --data $omni --split test --protocol fewshot --ways 5 \
          --shots $shots --episodes 2000 --adapt $adapt | tail -1 > "$out/$r/fewshot-5w${shots}s-$adapt.json"
    done
  done
  for ways in 5 20; do
    adapts="prototype cosine"
    case $r in protonet-umtra|metacluster-umtra|simclr) adapts="prototype cosine balanced" ;; esac
    [ "$method" = metacluster ] && adapts="finetune $adapts"
    for adapt in $adapts; do
      taskset -c "$core" selfmeta evaluate "$out/$r" --data $omni --split test --protocol episode-cluster \
          --ways $ways --shots 5 --episodes 2000 --adapt $adapt | tail -1 > "$out/$r/cluster-${ways}w5s-$adapt.json"
    done
  done
done
