#!/usr/bin/env bash
# The next default, f1-tiny-scenes on the /4 latent (16 channels at 16x16 for 64² images, read by the U-Net as
# 2x2 patches: preset scenes_x4_patch) with a 96-wide U-Net, on one CPU thread beside other work. It replaces
# scripts/train_default.sh once its val curve beats the shipped model (issue 11); until then the shipped file is the
# old /8 model and that script reproduces it.
#
#   scripts/train_default_x4.sh     # or: nohup scripts/train_default_x4.sh > runs/x4w.out 2>&1 &
#   FROM=training/f1-scenes-x4w-progress.safetensors scripts/train_default_x4.sh   # continue the committed progress
#
# Every stage logs the learning curve (the judge on 98 val scenes) into $RUN/log.jsonl and $RUN/curve.png, and
# resumes where it stopped. The VAE's progress is exported to training/ after its stage ($VAE_OUT, committed), so
# a lost run directory costs only the optimizer state: `init --vae-from` starts again from the file.
#
#   VAE       the vae stage until VAE_STEPS, no discriminator (it cost PSNR at /8); skipped when FROM continues a
#             U-Net, whose latent space is its VAE's
#   U-Net     96 channels wide at level 0 (WIDTH; 2x less CPU than 64 to the same low-noise denoising error), on
#             the frozen encoder's latents of a ~60k-scene pool (scenes:12000); lr 1e-3 and noise levels centred
#             higher than EDM's (p_mean 0.4: more training at sigma 2-11, where shapes must come from the words),
#             half of each batch under its objects' masks (regional prompts), from the sweeps in benchmarks/
#   decoder   the decoder alone on the same latents, sharper images without moving the U-Net's latent space
#   export    in float16 (a 96-wide model is 48 MB in float32; 16 bits measured no change in denoising error)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
RUN=${RUN:-runs/x4w}
VAE_OUT=${VAE_OUT:-training/f1-scenes-x4-vae.safetensors}
OUT=${OUT:-models/f1-tiny-scenes-x4.safetensors}
VAE_STEPS=${VAE_STEPS:-2000}
DIFFUSION_STEPS=${DIFFUSION_STEPS:-60000}
DECODER_STEPS=${DECODER_STEPS:-20000}
TRAIN="nice -n 10 $PY -m f1core.train"
export OMP_NUM_THREADS=1

FROM=${FROM:-}
WIDTH=${WIDTH:-96}
# UNET_FROM=models/f1-tiny-scenes.safetensors WIDTH=64 starts the U-Net and text from the shipped /8 default (init
# --unet-from: the same body, conv_in/conv_out bridged to the /4 latent) instead of a random init
UNET_FROM=${UNET_FROM:-}
if [ ! -f "$RUN/base.safetensors" ]; then
  if [ -n "$FROM" ]; then
    $PY -m f1core.train init "$RUN" --from "$FROM"
  else
    vae_from=(); [ -f "$VAE_OUT" ] && vae_from=(--vae-from "$VAE_OUT")
    unet_from=(); [ -n "$UNET_FROM" ] && unet_from=(--unet-from "$UNET_FROM" --text-from "$UNET_FROM")
    $PY -m f1core.train init "$RUN" --preset scenes_x4_patch --data scenes:4000 --config unet.model_channels="$WIDTH" \
        "${vae_from[@]}" "${unet_from[@]}"
  fi
fi
if [ -z "$FROM" ]; then
  $TRAIN vae "$RUN" --data scenes:4000 --steps "$VAE_STEPS" --batch-size 16 --lr 5e-4 --threads 1 --no-progress \
      --set vae_adversarial_weight=0 --set checkpoint_every=250 --set curve_every=8000
  $PY -m f1core.train export-vae "$RUN" "$VAE_OUT"
fi
$TRAIN diffusion "$RUN" --data scenes:12000 --steps "$DIFFUSION_STEPS" --batch-size 32 --lr 1e-3 --threads 1 \
    --no-progress --set p_mean=0.4 --set regional_share=0.5 --set warmup_steps=300 --set checkpoint_every=500 \
    --set curve_every=32000
$TRAIN decoder "$RUN" --data scenes:4000 --steps "$DECODER_STEPS" --batch-size 16 --lr 2e-4 --threads 1 \
    --no-progress --set checkpoint_every=250 --set curve_every=16000
$PY -m f1core.train export "$RUN" "$OUT" --dtype float16
