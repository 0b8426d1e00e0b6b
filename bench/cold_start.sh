#!/usr/bin/env bash
# Cold-start protocol: cold_user with k revealed ratings and cold_item, for bias, GHRS and the hybrid
# (one process per run, OMP_NUM_THREADS=1), then one summary table:
#   bash bench/cold_start.sh OUT_DIR [extra overrides...]
#   bash bench/cold_start.sh /tmp/cold_ml100k
#   bash bench/cold_start.sh /tmp/cold_ml1m dataset.name=ml-1m
# Every model gets the same training ratings (a 10% validation carve, used by the hybrid for early
# stopping, is left out for all three).
set -euo pipefail
out=$1; shift
mkdir -p "$out"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
models=(${MODELS:-bias ghrs hybrid})
run() {  # name, overrides...
  python -m ghrs.train trainer.progress=false "${@:2}" hydra.run.dir="$out/$1" > "$out/$1.log" 2>&1 \
    && echo "done $1" || echo "FAILED $1 (see $out/$1.log)"
}
model_args() { [[ $1 == hybrid ]] && echo "model=hybrid encoder=${ENCODER:-gru}" || echo "model=$1"; }
for m in "${models[@]}"; do
  for k in ${REVEAL:-0 1 3 5 10}; do
    run "cold_user_k${k}_$m" $(model_args "$m") split=cold_user split.reveal=$k split.valid_ratio=0.1 "$@"
  done
  run "cold_item_$m" $(model_args "$m") split=cold_item split.valid_ratio=0.1 "$@"
done
python -m ghrs.summary "$out"
