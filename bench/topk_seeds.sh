#!/usr/bin/env bash
# Seeded top-k table in one command: the ranking baselines (pop, itemknn, ease, genrepop: deterministic, one
# run each) and the neural models (the full hybrid and the plain-SASRec baseline, model=sasrec) over seeds,
# two processes at a time with one thread each, then the mean ± std Markdown table of ghrs.summary.
#   bash bench/topk_seeds.sh OUT_DIR [extra overrides for the neural runs...]
#   SEEDS=0,1,2 ENCODERS=gru,s4d bash bench/topk_seeds.sh /tmp/topk_seeds trainer.max_epochs=10
#   SPLIT=temporal_global bash bench/topk_seeds.sh /tmp/topk_global
# Differences in standard errors (seeds and user-paired), e.g. hybrid vs SASRec-only vs EASE (baselines/2):
#   python bench/topk_paired.py OUT_DIR/hybrid OUT_DIR/sasrec OUT_DIR/baselines/2
set -euo pipefail
out=$1; shift
mkdir -p "$out"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
split=${SPLIT:-temporal_loo}
python -m ghrs.train -m model=pop,itemknn,ease,genrepop split="$split" trainer.progress=false \
  hydra.sweep.dir="$out/baselines" > "$out/baselines.log" 2>&1
python -m ghrs.train -m +experiment=topk split="$split" model=sasrec seed="${SEEDS:-0,1,2}" trainer.progress=false \
  "$@" hydra.sweep.dir="$out/sasrec" > "$out/sasrec.log" 2>&1 &
python -m ghrs.train -m +experiment=topk split="$split" model=hybrid encoder="${ENCODERS:-gru}" \
  seed="${SEEDS:-0,1,2}" trainer.progress=false "$@" hydra.sweep.dir="$out/hybrid" > "$out/hybrid.log" 2>&1 &
wait
python -m ghrs.summary "$out"
