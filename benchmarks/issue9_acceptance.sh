#!/usr/bin/env bash
# Issue 9 acceptance, from the CLI: every model family train -> evaluate -> predict -> explain on built-in data,
# one compare leaderboard across families, and the multilabel / regression AV-MNIST variants.
#   bash benchmarks/issue9_acceptance.sh [OUT]     (default OUT=runs/issue9; logs in OUT/*.log)
set -euo pipefail
cd "$(dirname "$0")/.."
MM=.venv/bin/mmfuse
OUT=${1:-runs/issue9}
mkdir -p "$OUT"
BASE=examples/avmnist_families.yaml
run() {  # name, then train arguments
  local name=$1; shift
  echo "=== $name" | tee "$OUT/$name.log"
  /usr/bin/time -f "train wall %e s" $MM train "$@" --out "$OUT/$name" 2>&1 | tee -a "$OUT/$name.log"
  $MM evaluate "$OUT/$name/checkpoint" 2>&1 | tee -a "$OUT/$name.log"
  $MM predict "$OUT/$name/checkpoint" --out "$OUT/$name/predictions.csv" 2>&1 | tee -a "$OUT/$name.log"
  $MM explain "$OUT/$name/checkpoint" --method shapley --max-samples 50 --out "$OUT/$name/explain" 2>&1 | tee -a "$OUT/$name.log"
}
run fusion $BASE
run intermediate $BASE --set model.family=intermediate
run smil $BASE --set model.family=smil --set model.full=image --set training.optimizer=adam
run ngiam $BASE --set model.family=ngiam --set model.setting=fusion --set model.hidden_dims=128 --set model.shared_dim=64
run mea examples/mea_basicmotions.yaml --set training.max_epochs=12
# the AV-MNIST variants whose image and audio show different digits
for T in set sum; do
  for M in "feature:--set model.strategy=feature --set model.fusion.name=concat" "late:--set model.strategy=late --set model.late.name=mean_prob" "intermediate:--set model.family=intermediate"; do
    run "avmnist_${T}_${M%%:*}" $BASE --set data.options.target=$T --set training.max_epochs=4 --set data.batch_size=32 ${M#*:}
  done
done
# one leaderboard across families, same seeds
/usr/bin/time -f "compare wall %e s" $MM compare examples/avmnist_compare.yaml --set compare.seeds=[0,1] \
  --set training.max_epochs=2 --set 'compare.methods=[fusion:concat,fusion:gated,late:mean_prob,intermediate:mmtm,smil,ngiam:fusion,mea,unimodal:image,unimodal:audio]' \
  --set 'compare.overlays={}' --set data.options.variant=clean --set model.encoders.image.options.channels=[8,16] \
  --set model.encoders.audio.options.channels=[16,32] --out "$OUT/compare" 2>&1 | tee "$OUT/compare.log"
