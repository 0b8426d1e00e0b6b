#!/usr/bin/env bash
# Top-k protocol, every encoder, one process per encoder (so each run's peak memory is its own), two at a
# time with one thread each (a 2-core machine), then one summary table:
#   bash bench/topk_encoders.sh OUT_DIR [extra overrides...]
#   bash bench/topk_encoders.sh /tmp/topk_ml100k
#   bash bench/topk_encoders.sh /tmp/topk_ml1m dataset.name=ml-1m trainer.max_epochs=30
set -euo pipefail
out=$1; shift
mkdir -p "$out"
encoders=(${ENCODERS:-mamba mamba2 s4d sasrec gru none})
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
run() {
  python -m ghrs.train +experiment=topk encoder="$1" trainer.progress=false "${@:2}" \
    hydra.run.dir="$out/$1" > "$out/$1.log" 2>&1 && echo "done $1" || echo "FAILED $1 (see $out/$1.log)"
}
for ((i = 0; i < ${#encoders[@]}; i += ${PARALLEL:-2})); do
  for e in "${encoders[@]:i:${PARALLEL:-2}}"; do run "$e" "$@" & done
  wait
done
python -m ghrs.summary "$out"
