#!/usr/bin/env bash
# The GPU check of issue 8, ready to run on ONE fresh CUDA machine, from the repository root:
#
#     OUT=/tmp/gpu-check bash benchmarks/gpu_check.sh
#
# 1. installs mcrx (an existing .venv is reused; else `make install`, else pip into a venv
#    that sees the system's CUDA torch);
# 2. runs the demo recipe on CUDA and again with `device: cpu` (same cache: the memories are
#    encoded once) and compares every R@1: within 0.01 of each other or the check fails
#    (the CUDA run draws its noise on the GPU, so the figures are close, not identical);
# 3. runs the retrieval benchmark (tf32 and fp16 inputs, the torch.mm yardstick on the same
#    GPU in the same dtype) and the aligner benchmark (fp32, tf32 and bf16, batch 4096),
#    sized so that steps 2–3 take about 5 minutes on an H100/H200 (under 8 in all).
#
# Everything lands under $OUT (default ./gpu-check): one log per step, the JSON line of each
# benchmark, both runs' metrics.json, and summary.json (the figures the issue asks for).
# Environment: OUT, PYTHON (python3), RETRIEVAL_SIZE (262144 queries = memory rows),
# ALIGNER_STEPS (40), SKIP_INSTALL=1.
set -euo pipefail

OUT="${OUT:-$PWD/gpu-check}"
PYTHON="${PYTHON:-python3}"
RETRIEVAL_SIZE="${RETRIEVAL_SIZE:-262144}"
ALIGNER_STEPS="${ALIGNER_STEPS:-40}"
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 MCRX_CACHE_DIR="$OUT/cache"
exec > >(tee -a "$OUT/gpu_check.log") 2>&1
began=$(date +%s)
step() { echo; echo "== $(date -u +%H:%M:%S) (+$(( $(date +%s) - began )) s) $*"; }

step "0 · machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
nproc; free -g | head -2

step "1 · install"
VENV=.venv
if [[ "${SKIP_INSTALL:-0}" != 1 && ! -x "$VENV/bin/mcrx" ]]; then
    if ! make install PYTHON="$PYTHON" >"$OUT/install.log" 2>&1; then
        echo "make install failed (see install.log); pip into a venv over the system torch"
        VENV=.venv-gpu
        "$PYTHON" -m venv --system-site-packages "$VENV"
        "$VENV/bin/python" -m pip install --quiet -e . -e plugins/toy -e plugins/clip \
            -e plugins/clap -e plugins/ulip >>"$OUT/install.log" 2>&1
    fi
fi
PY="$VENV/bin/python"
MCRX="$VENV/bin/mcrx"
"$PY" - <<'EOF'
import torch
assert torch.cuda.is_available(), "no CUDA device visible: this check needs one"
print("torch", torch.__version__, "CUDA", torch.version.cuda, torch.cuda.get_device_name(0))
EOF

step "2 · demo on CUDA, then on the CPU"
"$MCRX" extend recipes/demo.yaml --no-progress --set output="$OUT/demo-cuda" \
    >"$OUT/demo-cuda.log" 2>&1 || { tail -30 "$OUT/demo-cuda.log"; exit 1; }
"$MCRX" extend recipes/demo.yaml --no-progress --set output="$OUT/demo-cpu" --set device=cpu \
    >"$OUT/demo-cpu.log" 2>&1 || { tail -30 "$OUT/demo-cpu.log"; exit 1; }
grep -h "steps in\|pseudo pairs in" "$OUT/demo-cuda.log" "$OUT/demo-cpu.log" || true

step "3 · retrieval benchmark (GPU, mm yardstick on the GPU in the same dtype)"
for precision in tf32 fp16; do
    "$PY" benchmarks/bench_retrieval.py --device cuda --precision "$precision" \
        --queries "$RETRIEVAL_SIZE" --memory "$RETRIEVAL_SIZE" --sweep-queries 32768 \
        --blocks 8192x32768,16384x32768,4096x16384,2048x8192 --mm-seconds 2 \
        >"$OUT/retrieval-$precision.log" 2>&1 || { tail -30 "$OUT/retrieval-$precision.log"; exit 1; }
    tail -1 "$OUT/retrieval-$precision.log" >"$OUT/retrieval-$precision.json"
    grep "FULL" "$OUT/retrieval-$precision.log"
done

step "4 · aligner benchmark (Ex-MCR, batch 4096, on the GPU)"
for precision in fp32 tf32 bf16; do
    "$PY" benchmarks/bench_aligner.py --device cuda --precision "$precision" \
        --steps "$ALIGNER_STEPS" --mm-seconds 2 \
        >"$OUT/aligner-$precision.log" 2>&1 || { tail -30 "$OUT/aligner-$precision.log"; exit 1; }
    tail -1 "$OUT/aligner-$precision.log" >"$OUT/aligner-$precision.json"
    grep "with retain" "$OUT/aligner-$precision.log"
done

step "5 · summary"
"$PY" - "$OUT" <<'EOF'
import json, sys
from pathlib import Path

out = Path(sys.argv[1])

def recalls(node, path=""):
    """Every R@1 in a metrics.json, by its path."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "R@1" and isinstance(value, (int, float)):
                yield path, float(value)
            else:
                yield from recalls(value, f"{path}/{key}")

cuda = dict(recalls(json.loads((out / "demo-cuda" / "metrics.json").read_text())))
cpu = dict(recalls(json.loads((out / "demo-cpu" / "metrics.json").read_text())))
differences = {p: round(cuda[p] - cpu[p], 4) for p in sorted(cuda.keys() & cpu.keys())}
worst = max((abs(d) for d in differences.values()), default=float("nan"))
summary = {"demo_r1_pairs": len(differences), "demo_r1_max_abs_difference": worst,
           "demo_ok": bool(differences) and worst <= 0.01,
           "demo_r1_differences": differences}
for name in ("retrieval-tf32", "retrieval-fp16", "aligner-fp32", "aligner-tf32", "aligner-bf16"):
    run = json.loads((out / f"{name}.json").read_text())
    keep = ("device", "precision", "gflops", "mm_gflops", "ratio_to_mm", "seconds",
            "samples_per_s", "step_seconds", "mean_one_minus_cos_vs_fp64", "gpu_peak_gib",
            "best_query_block", "best_memory_block", "queries", "memory")
    summary[name] = {k: run[k] for k in keep if k in run}
    if "step_seconds" in run:
        summary[name]["step_ms"] = round(1000 * run["step_seconds"], 2)
        summary[name]["vs_45ms_host_fed_step"] = round(45e-3 / run["step_seconds"], 2)
(out / "summary.json").write_text(json.dumps(summary, indent=2))
print(json.dumps(summary, indent=2))
if not summary["demo_ok"]:
    sys.exit(f"demo: R@1 on CUDA and on the CPU differ by {worst} (> 0.01)")
EOF
step "done: $OUT"
