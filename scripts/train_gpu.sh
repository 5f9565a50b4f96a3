#!/usr/bin/env bash
# The default model's recipe in one GPU call of under 9 minutes: init, VAE, diffusion, export, with the learning
# curve on. Written for the lent device machine (its python3 has torch; kornia travels as wheels in .whl/):
#
#   here:   mkdir -p .whl && pip download --no-deps --only-binary=:all: --python-version 3.12 \
#               --implementation cp --platform manylinux_2_17_x86_64 -d .whl kornia kornia_rs
#   device: run(command="bash scripts/train_gpu.sh", carry=[".whl"], timeout_s=560)
#
# $OUT gets the export (split into 15 MB parts: `cat f1-gpu.safetensors.part-* > f1-gpu.safetensors`), the run's
# log.jsonl, curve.png and loss.png. Budgets are wall-clock minutes per stage, so the call ends in time whatever
# the throughput; steps are upper bounds. Any machine works: without a GPU it is the same recipe, slower.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
OUT=${OUT:-output/gpu}
RUN=${RUN:-/tmp/f1-gpu-run}
PRESET=${PRESET:-scenes_x4_patch}
# the CPU sessions' furthest point of this recipe (its EMA; VAE, U-Net and text; the 96-wide U-Net): the GPU call
# continues it. FROM= (empty) starts the U-Net and text from scratch on the committed VAE, WIDTH channels wide;
# FROM=training/f1-scenes-x4p-progress.safetensors continues the older 64-wide line (more samples, but 2x the CPU per unit of denoising error)
FROM=${FROM-training/f1-scenes-x4w-progress.safetensors}
WIDTH=${WIDTH:-96}
# FROM=training/f1-tiny-scenes-phase3-progress.safetensors LR=2e-4 continues the shipped /8 default's phase 3
# (its recipe at p_mean 0.4; README, "The shipped default") instead
LR=${LR:-6e-4}
# the committed /4 VAE (training/, 11,000 CPU steps, val 38.2 dB) lets the whole budget go to the U-Net, the part
# that lags; VAE_FROM= (empty) trains a VAE from scratch first. FROM's own VAE wins when FROM is set (the 96-wide
# progress file's is this VAE; the 64-wide one's is the same VAE at 6,250 steps)
VAE_FROM=${VAE_FROM-training/f1-scenes-x4-vae.safetensors}
# FROM= UNET_FROM=models/f1-tiny-scenes.safetensors WIDTH=64 starts the U-Net and text from the shipped /8 default's instead
# (init --unet-from: its body and text, conv_in/conv_out bridged to the /4 latent; benchmarks/README, "transplant")
UNET_FROM=${UNET_FROM-}
if [ -n "$VAE_FROM" ]; then VAE_MINUTES=${VAE_MINUTES:-0}; DIFFUSION_MINUTES=${DIFFUSION_MINUTES:-6.5}
else VAE_MINUTES=${VAE_MINUTES:-3}; DIFFUSION_MINUTES=${DIFFUSION_MINUTES:-4.5}; fi
VAE_DATA=${VAE_DATA:-scenes:4000}         # ~20k train scenes
DIFFUSION_DATA=${DIFFUSION_DATA:-scenes:12000}   # ~60k, encoded once into the run's latents.pt
# the share of each batch trained under its objects' masks (regional prompts, issue 12; the 96-wide progress file
# trained at 0.5); 0 trains captions only
REGIONAL_SHARE=${REGIONAL_SHARE:-0.5}
mkdir -p "$OUT"
if ! $PY -c "import kornia" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
$PY -c "import torch; print('device:', torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu')"
TRAIN="$PY -m f1core.train"
stage() {  # a budget that ends a stage early is its normal end here (exit status 3)
  $TRAIN "$@" --no-progress; rc=$?; [ $rc -eq 0 ] || [ $rc -eq 3 ] || exit $rc
}

if [ -n "$FROM" ]; then VAE_MINUTES=0; [ -f "$RUN/base.safetensors" ] || $TRAIN init "$RUN" --from "$FROM" || exit 1
else [ -f "$RUN/base.safetensors" ] || $TRAIN init "$RUN" --preset "$PRESET" --data "$VAE_DATA" \
    --config unet.model_channels="$WIDTH" \
    ${VAE_FROM:+--vae-from "$VAE_FROM"} ${UNET_FROM:+--unet-from "$UNET_FROM" --text-from "$UNET_FROM"} || exit 1; fi
[ "$VAE_MINUTES" = 0 ] || stage vae "$RUN" --data "$VAE_DATA" --steps 100000 --batch-size 128 --lr 1e-3 \
    --set vae_adversarial_weight=0 --set minutes="$VAE_MINUTES" --set curve_every=64000 --set checkpoint_every=2000
stage diffusion "$RUN" --data "$DIFFUSION_DATA" --steps 200000 --batch-size 256 --lr "$LR" --set p_mean=0.4 \
    --set regional_share="$REGIONAL_SHARE" --set minutes="$DIFFUSION_MINUTES" --set curve_every=256000 \
    --set checkpoint_every=2000
$TRAIN export "$RUN" "$OUT/f1-gpu.safetensors" --dtype float16 || exit 1
split -b 15M -d "$OUT/f1-gpu.safetensors" "$OUT/f1-gpu.safetensors.part-" && rm "$OUT/f1-gpu.safetensors"
cp "$RUN"/log.jsonl "$RUN"/curve.png "$RUN"/loss.png "$OUT"/ 2>/dev/null
grep '"curve": true' "$RUN/log.jsonl" | tail -4
