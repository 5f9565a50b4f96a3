#!/usr/bin/env bash
# The seed's architectural claim, measured: F.1 (ConvFormer blocks with cross-scale attention, CLIP + RoBERTa
# fused by the adapter) against an SD-style baseline (the same blocks without cross-scale attention, one CLIP
# tower, no adapter) on the same data, the same frozen VAE and the same steps x batch; both scored by
# `python -m f1core.eval model` on the test split at the default sampler settings. Results: benchmarks/README.md.
#
#   benchmarks/architecture.sh        # needs the F.1 run's finished VAE stage (scripts/train_default.sh)
#
# Each run resumes where it stopped. STEPS must not exceed where the F.1 run is compared: export it first.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
F1_RUN=${F1_RUN:-runs/f1-tiny-scenes}
BASELINE_RUN=${BASELINE_RUN:-runs/sd-baseline}
STEPS=${STEPS:-10000}
THREADS=${THREADS:-1}
OUT=${OUT:-output/architecture}
TRAIN=(--steps "$STEPS" --batch-size 32 --lr 3e-4 --threads "$THREADS" --no-progress --set checkpoint_every=500)

if [ ! -f "$BASELINE_RUN/base.safetensors" ]; then
    $PY -m f1core.train init "$BASELINE_RUN" --preset scenes_baseline --data scenes
    cp "$F1_RUN/vae.pt" "$BASELINE_RUN/vae.pt"   # the same frozen VAE: only the U-Net and text side differ
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
