"""VAE decode speed (issue 16): the shipped F.1 decoder at 1024², the path F1VAEDecode took before against
candidate speed-ups, side by side in one run, each checked for quality on real latents.

    python benchmarks/vae_decode.py [--repeats 3] [--threads 1]   # about 5 minutes on one thread

Latents: scene-engine renders of the val split (f1core.data.splits), encoded by the shipped VAE
(models/f1-tiny-scenes.safetensors) at 64²: `--per-category` scenes of each category, and `--large` mosaics of
16x16 val scenes at 1024², each scene's latent encoded on its own and laid side by side (real latents at 1024²).
Time: every candidate decodes a 1024² latent ([1, 10, 128, 128] at /8) in turn, round after round (interleaved, so a
busy neighbour slows all alike); the median per candidate, speed-up = the baseline's median over its.
Quality: at 64², PSNR of each decode against the renders, its drop from the baseline's (the PSNR loss, limit
0.5 dB), and the judge (f1core.eval), which may lose at most one scene. The shipped VAE only draws at 64², where
it was trained (a val scene rendered at 128² comes back at 19 dB, a decoded 1024² mosaic at 10 dB, against 33 dB
at 64²), so at 1024² there is no render to compare with: there each decode is compared with the whole-image fp32
decode, which tiles approximate, and may not fall more than 0.5 dB below the baseline's PSNR to it.

Candidates:
  3x3 tiles, fp32 (baseline)  F1VAEDecode before: tiles of 512 px (64 latent px at /8) with 8 latent px of overlap,
                              which is 3x3 tiles and 2.25x the pixels of the image at 1024²
  2x2 tiles, fp32             the same bound on a tile's memory, 512 px plus the overlap: 2x2 tiles at 1024²
  whole, fp32                 no tiles (memory grows with the image)
  ..., bf16                   F1VAE.decode(bf16=True): bfloat16 autocast on channels-last tensors
  2x2 tiles, int8             post-training static int8 quantization of the decoder's convolutions and linear
                              layers (torch.ao FX, x86 backend), calibrated on other val scenes. quantize_dynamic
                              only covers Linear, and the decoder's two Linear layers are a rounding error of its
                              work.
Then: how much each latent channel carries (variance and 8-bit code entropy of the quantized latent, PSNR loss
when it is set to its mean), and the share of decode work that reads the latent at all, which bounds what a
reduced latent can save with this decoder.

The last line is `decode_speedup: X`: the fastest candidate within the limits, over the baseline.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn as nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from f1core.checkpoint import load_checkpoint  # noqa: E402
from f1core.data.scenes import render_scene  # noqa: E402
from f1core.data.spec import CATEGORIES  # noqa: E402
from f1core.data.splits import load_split  # noqa: E402
from f1core.eval.diagnose import judge, render_truth  # noqa: E402
from f1core.quantize import quantize_latent  # noqa: E402

SHIPPED = ROOT / "models" / "f1-tiny-scenes.safetensors"
LARGE = 1024
TILE_PIXELS, OVERLAP = 512, 8   # F1VAEDecode's tile before this benchmark (image px) and decode_tiled's overlap
PSNR_LIMIT = 0.5                # dB
CALIBRATION_SCENES = 4          # per category, taken after the scenes the quality check uses


def psnr(images, reference) -> float:
    """Mean over images of PSNR in dB, both in [0, 1]."""
    mse = (images - reference).pow(2).flatten(1).mean(1).clamp_min(1e-12)
    return (-10 * mse.log10()).mean().item()


def to_unit(image):
    return (image.float() + 1) / 2


def mosaic(tiles, side: int):
    """[side * side, C, h, w] -> [1, C, side * h, side * w], row by row."""
    _, c, h, w = tiles.shape
    return tiles.reshape(side, side, c, h, w).permute(2, 0, 3, 1, 4).reshape(1, c, side * h, side * w)


def int8_vae(vae, calibration):
    """A copy of `vae` whose decoder runs int8 convolutions and linear layers (static, per-tensor activations),
    its ranges observed on decoding `calibration` latents."""
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx
    torch.backends.quantized.engine = "x86"
    quantized = copy.deepcopy(vae)
    example = vae.unpack(calibration[:1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notices
        prepared = prepare_fx(quantized.decoder, get_default_qconfig_mapping("x86"), example_inputs=example)
        with torch.inference_mode():
            raw = calibration * vae._stat(vae.latent_std, calibration) + vae._stat(vae.latent_mean, calibration)
            prepared(*vae.unpack(raw))
        quantized.decoder = convert_fx(prepared)
    return quantized


def candidates(vae, calibration):
    tile = TILE_PIXELS // vae.config.downscale  # in latent pixels
    large_tile = tile + OVERLAP
    q8 = int8_vae(vae, calibration)
    return {
        "3x3 tiles, fp32 (baseline)": lambda z: vae.decode_tiled(z, tile, OVERLAP),
        "2x2 tiles, fp32": lambda z: vae.decode_tiled(z, large_tile, OVERLAP),
        "whole, fp32": lambda z: vae.decode(z),
        "3x3 tiles, bf16": lambda z: vae.decode_tiled(z, tile, OVERLAP, bf16=True),
        "2x2 tiles, bf16": lambda z: vae.decode_tiled(z, large_tile, OVERLAP, bf16=True),
        "2x2 tiles, int8": lambda z: q8.decode_tiled(z, large_tile, OVERLAP),
    }


def decode_work(vae, latent) -> dict[str, int]:
    """Multiply-accumulates of one decode by where they run: the layers that read the latent, then the rest
    by output side."""
    macs: dict[str, int] = {}
    readers = {vae.decoder.fine_in, vae.decoder.coarse[0]}

    def hook(module, args, out):
        k = module.kernel_size[0] * module.kernel_size[1] if isinstance(module, nn.Conv2d) else 1
        fan_in = module.in_channels // module.groups if isinstance(module, nn.Conv2d) else module.in_features
        key = ("reads the latent" if module in readers else "attention (linear, /16)" if isinstance(module, nn.Linear)
               else f"output at {out.shape[-1]} px")
        macs[key] = macs.get(key, 0) + out.numel() * fan_in * k

    handles = [m.register_forward_hook(hook) for m in vae.decoder.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.inference_mode():
        vae.decode(latent)
    for h in handles:
        h.remove()
    return macs


def channel_information(vae, latents, truth, baseline_psnr):
    """Per latent channel: variance and code entropy of the 8-bit tile-quantized latent, and the PSNR loss of
    decoding with the channel at its mean (0 in the normalised latent); then each level whole. The first row is
    the quantization alone; the others are measured from it."""
    quantized = quantize_latent(latents, 8, "tile")
    values, codes = quantized.dequantize(), quantized.codes
    fine = vae.config.fine_channels
    with torch.inference_mode():
        stored = psnr(to_unit(vae.decode(values)), truth)
    rows = [("none (8-bit quantized)", values.var().item(), None, baseline_psnr - stored)]
    groups = [([c], f"{c}: fine /{vae.config.downscale}" if c < fine else
               f"{c}: coarse /{2 * vae.config.downscale}, packed (4 channels)") for c in range(latents.shape[1])]
    groups += [(list(range(fine)), "fine level (all)"), (list(range(fine, latents.shape[1])), "coarse level (all)")]
    for channels, name in groups:
        kept = values.clone()
        kept[:, channels] = 0
        with torch.inference_mode():
            loss = stored - psnr(to_unit(vae.decode(kept)), truth)
        if len(channels) == 1:
            counts = torch.bincount(codes[:, channels[0]].flatten().long() + 128, minlength=256).float()
            p = counts[counts > 0] / counts.sum()
            rows.append((name, values[:, channels[0]].var().item(), -(p * p.log2()).sum().item(), loss))
        else:
            rows.append((name, values[:, channels].var().item(), None, loss))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds at 1024² (at least --large)")
    parser.add_argument("--large", type=int, default=3, help="mosaics of val scenes checked at 1024²")
    parser.add_argument("--per-category", type=int, default=16, help="val scenes per category at 64²")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.time()

    checkpoint = load_checkpoint(SHIPPED, parts=("vae",))
    vae, size = checkpoint.vae.eval(), checkpoint.config.resolution
    val = load_split("val")
    per_split = len(val) // len(CATEGORIES)  # the split lists each category's specs in turn
    take = args.per_category + CALIBRATION_SCENES
    picked = [val[c * per_split + i] for c in range(len(CATEGORIES)) for i in range(take)]
    specs = [s for i, s in enumerate(picked) if i % take < args.per_category]
    calibration_specs = [s for i, s in enumerate(picked) if i % take >= args.per_category]
    side = LARGE // size
    with torch.inference_mode():
        truth = render_truth(specs, size)
        latents = vae.encode(truth * 2 - 1)
        calibration = vae.encode(render_truth(calibration_specs, size) * 2 - 1)
        large_latents = []
        for m in range(args.large):  # every val spec in turn, each mosaic with its own render seeds
            first = m * side * side
            scenes = torch.stack([render_scene(val[i % len(val)], size, seed=i).image.permute(2, 0, 1)
                                  for i in range(first, first + side * side)])
            large_latents.append(mosaic(vae.encode(scenes * 2 - 1), side))
    print(f"latents: {len(specs)} val scenes at {size}² ({tuple(latents.shape[1:])}), {args.large} mosaics of "
          f"{side}x{side} at {LARGE}² ({tuple(large_latents[0].shape[1:])}); encoded in "
          f"{time.time() - started:.0f} s", flush=True)

    decoders = candidates(vae, calibration)
    names = list(decoders)
    times = {n: [] for n in names}
    large_out = {n: {} for n in names}
    with torch.inference_mode():
        for r in range(max(args.repeats, args.large)):
            scene = r % len(large_latents)
            for n in names:
                start = time.perf_counter()
                image = decoders[n](large_latents[scene])
                times[n].append(time.perf_counter() - start)
                large_out[n].setdefault(scene, to_unit(image))
            print(f"round {r + 1}: " + ", ".join(f"{times[n][-1]:.1f}" for n in names), flush=True)
        small_out = {n: to_unit(decoders[n](latents)) for n in names}
    reports = {n: judge(small_out[n], specs) for n in names}

    base = names[0]
    whole = "whole, fp32"
    median = {n: statistics.median(times[n]) for n in names}

    def large(n):
        return torch.cat([large_out[n][i] for i in range(len(large_latents))])

    def to_whole(n):
        return psnr(large(n), large(whole)) if n != whole else float("inf")

    base_small = psnr(small_out[base], truth)
    judge_slack = 1 / len(specs) + 1e-9
    print(f"\nDecode at {LARGE}² (median of {len(times[base])} interleaved rounds, {args.threads} thread(s)); "
          f"quality at {size}² against the renders ({len(specs)} val scenes; loss = baseline's PSNR - candidate's) "
          f"and at {LARGE}² against the whole fp32 decode ({args.large} mosaics)")
    print(f"| candidate | s at {LARGE}² | speed-up | vs whole fp32 | PSNR {size}² | loss | judge {size}² | "
          f"PSNR {LARGE}² vs whole fp32 | within limits |")
    print("|---|---|---|---|---|---|---|---|---|")
    best = (1.0, base)
    for n in names:
        loss_small = base_small - psnr(small_out[n], truth)
        ok = (loss_small <= PSNR_LIMIT and to_whole(n) >= to_whole(base) - PSNR_LIMIT
              and reports[n].overall >= reports[base].overall - judge_slack)
        speedup = median[base] / median[n]
        if ok and speedup > best[0]:
            best = (speedup, n)
        print(f"| {n} | {median[n]:.2f} | {speedup:.2f}x | {median[whole] / median[n]:.2f}x | "
              f"{psnr(small_out[n], truth):.2f} | {loss_small:+.2f} | {reports[n].overall:.3f} | "
              f"{to_whole(n):.1f} | {'yes' if ok else 'no'} |")

    print(f"\nLatent information ({len(specs)} val scenes at {size}², 8-bit tile-quantized latent as F1VAEEncode "
          "stores it; loss: PSNR drop when the channel is set to its mean)")
    print("| channel | variance | code entropy, bits | PSNR loss, dB |")
    print("|---|---|---|---|")
    for name, var, entropy, loss in channel_information(vae, latents, truth, base_small):
        print(f"| {name} | {var:.3f} | {'-' if entropy is None else f'{entropy:.2f}'} | {loss:+.2f} |")

    macs = decode_work(vae, large_latents[0])
    total = sum(macs.values())
    print(f"\nDecoder work at {LARGE}² (whole): {total / 1e9:.1f} GMAC")
    for key, value in sorted(macs.items(), key=lambda kv: -kv[1]):
        print(f"  {key}: {100 * value / total:.1f}%")
    print(f"({time.time() - started:.0f} s; best: {best[1]})")
    print(f"decode_speedup: {best[0]:.2f}")


if __name__ == "__main__":
    main()
