#!/usr/bin/env bash
# One prepared GPU check (issue 11): kernel tests on CUDA, scan bandwidth, Mamba vs SASRec, a 3-epoch run.
#
#   bash bench/gpu_check.sh [OUT.json]        # default: $OUT/gpu_check.json, else ./gpu_check.json
#   GPU_CHECK_DRY=1 bash bench/gpu_check.sh /tmp/dry.json   # no GPU: the same steps, tiny and on the CPU,
#                                                             # to check the script itself (figures meaningless)
#
# Steps (each with its own time limit; the whole script stays under 8 minutes on one GPU):
#   0. build the compiled CPU kernels in place (setup.py build_ext; a copied tree lacks them);
#   1. tests/kernels + the scan/state-update tests, compiled Triton (no interpreter), fp32/bf16/fp16 cases;
#   2. bench/bench_selective_scan.py: reference vs triton, the Triton forward's effective GB/s and a
#      device-to-device copy of the same bytes;
#   3. bench/bench_encoders.py: mamba vs sasrec at length 200 (time, torch.cuda.max_memory_allocated);
#   4. python -m ghrs.train +experiment=topk encoder=mamba trainer.device=cuda trainer.max_epochs=3
#      (needs GHRS_DATA_DIR with ml-100k.zip: the GPU machine has no network).
# Writes ONE JSON file: GPU name, versions, and per step its exit code, seconds, and parsed results.
# Exits non-zero when there is no GPU (outside the dry mode) or when any step failed.
set -uo pipefail

cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
JSON_OUT="${1:-${OUT:+$OUT/gpu_check.json}}"
JSON_OUT="${JSON_OUT:-gpu_check.json}"
DRY="${GPU_CHECK_DRY:-0}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

if [ "$DRY" = "1" ]; then
    DEVICE=cpu
    export TRITON_INTERPRET=1
else
    DEVICE=cuda
    unset TRITON_INTERPRET  # compiled kernels
    if ! python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
        echo "gpu_check: FAILED: no CUDA GPU visible to torch (torch.cuda.is_available() is False)." >&2
        echo "gpu_check: run it on a GPU machine, or GPU_CHECK_DRY=1 to check the script on a CPU." >&2
        exit 3
    fi
fi

# run NAME LIMIT_S CMD...: stdout+stderr to $WORK/NAME.log, "rc seconds" to $WORK/NAME.status
run() {
    local name=$1 limit=$2
    shift 2
    echo "gpu_check: [$name] $*" >&2
    local start=$SECONDS
    timeout "$limit" "$@" >"$WORK/$name.log" 2>&1
    local rc=$?
    echo "$rc $((SECONDS - start))" >"$WORK/$name.status"
    echo "gpu_check: [$name] exit $rc after $((SECONDS - start)) s" >&2
    tail -n 5 "$WORK/$name.log" >&2
}

# the compiled CPU kernels (ignored by git, so absent from a copied tree): the CPU-kernel tests need them
run build_ext 180 python setup.py -q build_ext --inplace

if [ "$DRY" = "1" ]; then
    run kernel_tests 300 python -m pytest -q -p no:cacheprovider --junitxml="$WORK/junit.xml" \
        tests/kernels/test_selective_state_update_triton.py -k "strided or dtypes"
    run scan_bench 120 python bench/bench_selective_scan.py --device cpu --threads 1 --batch 1 --dim 8 \
        --length 16 --repeats 1 --backends reference chunked --json "$WORK/scan.json"
    run encoders 300 python bench/bench_encoders.py --device cpu --threads 1 --layers mamba sasrec \
        --lengths 8 --batch 4 --steps 1 --warmup 1 --json "$WORK/encoders.json"
    TRAIN_ARGS=(dataset=synthetic trainer.device=cpu trainer.max_epochs=1)
    TRAIN_LIMIT=900  # CPU: the hybrid's set-up and one Mamba epoch on a shared 2-core VM
else
    run kernel_tests 180 python -m pytest -q -p no:cacheprovider --junitxml="$WORK/junit.xml" \
        tests/kernels tests/ssm/test_selective_scan.py tests/ssm/test_mamba_ssm_compat.py
    run scan_bench 60 python bench/bench_selective_scan.py --device cuda --batch 8 --dim 64 1536 \
        --length 1024 4096 --repeats 5 --ref-repeats 1 --ref-max-length 1024 --backends reference triton \
        --json "$WORK/scan.json"
    run encoders 60 python bench/bench_encoders.py --device cuda --layers mamba sasrec --lengths 200 \
        --steps 5 --warmup 2 --json "$WORK/encoders.json"
    TRAIN_ARGS=(trainer.device=cuda trainer.max_epochs=3)
    TRAIN_LIMIT=140
fi
run train "$TRAIN_LIMIT" python -m ghrs.train +experiment=topk encoder=mamba "${TRAIN_ARGS[@]}" \
    hydra.run.dir="$WORK/train_run"

python - "$WORK" "$JSON_OUT" "$DRY" <<'PY'
import json, os, platform, sys, xml.etree.ElementTree as ET
from pathlib import Path

import torch

work, out, dry = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] == "1"


def step(name: str, extra: dict) -> dict:
    rc, seconds = (work / f"{name}.status").read_text().split()
    log = (work / f"{name}.log").read_text(errors="replace")
    return {"rc": int(rc), "seconds": int(seconds), **extra, "log_tail": log[-3000:]}


def load(name: str):
    p = work / name
    return json.loads(p.read_text()) if p.exists() else None


tests = {}
if (work / "junit.xml").exists():
    suite = ET.parse(work / "junit.xml").getroot()
    suite = suite if suite.tag == "testsuite" else suite[0]
    tests = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
metrics = load("train_run/metrics.json")
report = {
    "dry_run": dry,
    "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    "torch": torch.__version__,
    "cuda": torch.version.cuda,
    "python": platform.python_version(),
    "host": platform.node(),
    "ghrs_data_dir": os.environ.get("GHRS_DATA_DIR"),
    "steps": {
        "build_ext": step("build_ext", {}),
        "kernel_tests": step("kernel_tests", {"junit": tests}),
        "scan_bench": step("scan_bench", {"result": load("scan.json")}),
        "encoders": step("encoders", {"result": load("encoders.json")}),
        "train": step("train", {"metrics": metrics}),
    },
}
report["ok"] = all(s["rc"] == 0 for s in report["steps"].values())
out.parent.mkdir(parents=True, exist_ok=True)
tmp = out.with_suffix(out.suffix + ".tmp")
tmp.write_text(json.dumps(report, indent=1))
os.replace(tmp, out)
print(f"gpu_check: wrote {out} (ok={report['ok']})", file=sys.stderr)
sys.exit(0 if report["ok"] else 1)
PY
