#!/usr/bin/env bash
# The model sweep: U-Net variants trained for equal CPU time on one trained VAE, each logging the learning curve
# (the judge on 98 val scenes), so variants compare by accuracy per CPU-hour, not by loss.
#
#   SRC=runs/x4 benchmarks/sweep.sh          # SRC: a run whose vae stage has trained (its vae.pt is copied)
#   .venv/bin/python benchmarks/sweep_report.py runs/sweep/*   # table + chart into benchmarks/
#
# Every variant shares the first one's encoded pool (latents.pt is keyed by the VAE and data, so a match is
# reused). Variants run one after another on one thread; rerunning resumes the one that was stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
SRC=${SRC:-runs/x4}
SWEEP=${SWEEP:-runs/sweep}
PRESET=${PRESET:-scenes_x4}
DATA=${DATA:-scenes:4000}
CPU_HOURS=${CPU_HOURS:-0.4}
BATCH=${BATCH:-32}
CURVE_EVERY=${CURVE_EVERY:-8000}
TRAIN="nice -n 10 $PY -m f1core.train"

# name | extra init arguments | diffusion-stage arguments
VARIANTS=${VARIANTS:-"
base||--lr 3e-4
attention-4x4-only|--config unet.attention_levels=[2] --config unet.cross_scale_levels=[2]|--lr 3e-4
lr-1e-3||--lr 1e-3
text-pretrained|--text-from models/f1-tiny-scenes.safetensors|--lr 3e-4
high-noise||--lr 3e-4 --set p_mean=-0.4
"}

mkdir -p "$SWEEP"
[ -f "$SWEEP/vae.pt" ] || cp "$SRC/vae.pt" "$SWEEP/vae.pt"   # one VAE snapshot for every variant
first=""
while IFS='|' read -r name init_args train_args; do
  [ -n "$name" ] || continue
  run=$SWEEP/$name
  if [ ! -f "$run/base.safetensors" ]; then
    # shellcheck disable=SC2086
    $PY -m f1core.train init "$run" --preset "$PRESET" --data "$DATA" $init_args
    ln -f "$SWEEP/vae.pt" "$run/vae.pt"
  fi
  if [ -n "$first" ] && [ -f "$first/latents.pt" ] && [ ! -f "$run/latents.pt" ]; then ln -f "$first/latents.pt" "$run/latents.pt"; fi
  echo "sweep: $name ($init_args $train_args)"
  # shellcheck disable=SC2086
  OMP_NUM_THREADS=1 $TRAIN diffusion "$run" --data "$DATA" --steps 1000000 --batch-size "$BATCH" --threads 1 \
      --no-progress $train_args --set cpu_hours="$CPU_HOURS" --set curve_every="$CURVE_EVERY" || [ $? -eq 3 ]
  first=${first:-$run}
done <<< "$VARIANTS"
