#!/usr/bin/env bash
# Every GPU figure the docs ask for, in one run on one GPU (about 10 minutes), logs in OUT:
# the step-time table (benchmarks/gpu_step.py: today's DeepSpeed step and the fast paths),
# the GPU acceptance check (paper-scale line first), and coding speed (float and integer path).
#   OUT=/tmp/gpu-figures bash launch/gpu_measurements.sh        PY: the Python (default python3)
set -u
cd "$(dirname "$0")/.." || exit 2
OUT="${OUT:-gpu-figures}"
PY="${PY:-python3}"
mkdir -p "${OUT}"
export PY PYTHONUNBUFFERED=1
stage() { echo "[$(date -Is)] $*" | tee -a "${OUT}/timeline.txt"; }
stage "step times, eager (DeepSpeed, DDP without host synchronisation)"
timeout 120 "${PY}" benchmarks/gpu_step.py --paths deepspeed ddp --precision tf32 bf16 \
    --batch 16 4 --timeout 55 --out "${OUT}/gpu_step_eager.json" > "${OUT}/gpu_step_eager.log" 2>&1
stage "GPU check: paper scale, resume, launcher"
timeout 180 bash launch/gpu_check.sh --out "${OUT}/check_a" --only "paper-scale" "resume 3+3" \
    "SIGUSR1" > "${OUT}/gpu_check_a.log" 2>&1
stage "step times, compiled (CUDA graphs, full)"
timeout 140 "${PY}" benchmarks/gpu_step.py --paths graphs full --precision bf16 --batch 16 4 \
    --timeout 65 --out "${OUT}/gpu_step_compiled.json" > "${OUT}/gpu_step_compiled.log" 2>&1
stage "coding speed"
timeout 60 "${PY}" benchmarks/coding_speed.py --device cuda --channels 128 192 \
    --coders wavefront integer --repeats 2 > "${OUT}/coding_speed.log" 2>&1
stage "GPU check: the other lines"
timeout 150 bash launch/gpu_check.sh --out "${OUT}/check_b" --only environment "GPU visible" DALI \
    bf16 "NaN step" "Adam step" "GPU-encode" "integer entropy" "NT-Xent" > "${OUT}/gpu_check_b.log" 2>&1
stage "finished"
