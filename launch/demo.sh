#!/usr/bin/env bash
# The README's first command (`make demo`): a small CPU demo of the whole system.
#   bash launch/demo.sh [--data DIR]      (DIR: your own photos instead of the bundled ones)
# 1. photos -> WebDataset shards   2. 2-rank torchrun + DeepSpeed training (gloo, CPU)
# 3. real-bitstream evaluation at noise level 4 on held-out photos, with AVIF and NLM -> AVIF
#    on the same photos and noise   4. a short summary and side-by-side panels
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${DEMO_DIR:-runs/demo}
DATA=""
if [ "${1:-}" = "--data" ]; then DATA=${2:?--data needs a folder}; fi
export OMP_NUM_THREADS=1 TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-$PWD/.cache/torch_extensions}

rm -rf "$OUT/photos" "$OUT/shards" "$OUT/results"
"$PY" launch/demo_photos.py "$OUT/photos"   # held-out photos always come from here
TRAIN_DIR=${DATA:-$OUT/photos/train}
"$PY" -m jicd prepare-shards "$TRAIN_DIR" "$OUT/shards" --min-side 256 --val-fraction 0.05 \
  --maxcount 16

"$PY" -m torch.distributed.run --standalone --nproc-per-node=2 launch/train.py \
  --config configs/demo.yaml train.run_dir="$OUT/run" data.shards="$OUT/shards"

"$PY" -m jicd evaluate --checkpoint "$OUT/run/export/model.pt" --name demo \
  --pipeline avif nlm+avif --save-images \
  --dataset heldout="$OUT/photos/heldout" --levels 4 --output "$OUT/results"
"$PY" launch/demo_summary.py "$OUT/results" "$OUT/run"
