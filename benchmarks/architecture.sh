#!/usr/bin/env bash
# The seed's architectural claim, measured: F.1 (ConvFormer blocks with cross-scale attention, CLIP + RoBERTa
# fused by the adapter) against an SD-style baseline (the same blocks without cross-scale attention, one CLIP
# tower, no adapter) on the same data, the same frozen VAE and the same steps x batch; both scored by
# `python -m f1core.eval model` on the test split at the default sampler settings. Results: benchmarks/README.md.
#
#   benchmarks/architecture.sh        # needs the default run's finished VAE stage (scripts/train_default.sh)
#
# Both runs start from the default run's init and VAE and resume where they stopped. With the same seeds, the
# F.1 run repeats the default run's first STEPS diffusion steps.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
SOURCE_RUN=${SOURCE_RUN:-runs/f1-tiny-scenes}
F1_RUN=${F1_RUN:-runs/architecture-f1}
BASELINE_RUN=${BASELINE_RUN:-runs/architecture-sd}
STEPS=${STEPS:-10000}
THREADS=${THREADS:-1}
OUT=${OUT:-output/architecture}
TRAIN=(--steps "$STEPS" --batch-size 32 --lr 3e-4 --threads "$THREADS" --no-progress --set checkpoint_every=500)

if [ ! -f "$F1_RUN/base.safetensors" ]; then
    mkdir -p "$F1_RUN"
    cp "$SOURCE_RUN/base.safetensors" "$SOURCE_RUN/vae.pt" "$F1_RUN/"
fi
if [ ! -f "$BASELINE_RUN/base.safetensors" ]; then
    $PY -m f1core.train init "$BASELINE_RUN" --preset scenes_baseline --data scenes
    cp "$SOURCE_RUN/vae.pt" "$BASELINE_RUN/vae.pt"   # the same frozen VAE: only the U-Net and text side differ
fi
$PY -m f1core.train diffusion "$F1_RUN" "${TRAIN[@]}"
$PY -m f1core.train diffusion "$BASELINE_RUN" "${TRAIN[@]}"
mkdir -p "$OUT"
for run in "$F1_RUN" "$BASELINE_RUN"; do
    name=$(basename "$run")
    $PY -m f1core.train export "$run" "$OUT/$name.safetensors"
    OMP_NUM_THREADS=$THREADS $PY -m f1core.eval model "$OUT/$name.safetensors" --no-progress --out "$OUT/eval-$name"
done
$PY benchmarks/compare_reports.py "$OUT/eval-$(basename "$F1_RUN")" "$OUT/eval-$(basename "$BASELINE_RUN")" \
    --names F.1 SD-style | tee "$OUT/comparison.md"
