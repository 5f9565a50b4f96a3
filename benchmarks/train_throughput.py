"""Diffusion-stage training throughput on the CPU: fp32 against bf16 autocast and channels_last (issue 11's
throughput sweep). One U-Net + text training step (forward, backward, AdamW) of a preset at batch B, the
variants interleaved in rounds so machine noise hits them alike; reports the median seconds per step and the
ratio to fp32.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/train_throughput.py --preset scenes_x4 --rounds 5

bf16 autocast needs the CPU's avx512_bf16 (or AMX) to pay; without it oneDNN falls back to slow paths. The
last line is `bf16_speedup: X` (fp32 seconds per step over bf16's)."""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from f1core import config as f1config  # noqa: E402
from f1core.data.captions import caption  # noqa: E402
from f1core.data.splits import load_split  # noqa: E402
from f1core.train.trainer import DiffusionTrainee, _load_base, create_run  # noqa: E402

VARIANTS = {
    "fp32": dict(bf16=False, channels_last=False),
    "fp32 channels_last": dict(bf16=False, channels_last=True),
    "bf16 autocast": dict(bf16=True, channels_last=False),
    "bf16 autocast channels_last": dict(bf16=True, channels_last=True),
}


def build(preset: str, captions: list[str]):
    run = Path(tempfile.mkdtemp(prefix="f1-throughput-"))
    create_run(run, f1config.PRESETS[preset](), captions)
    base = _load_base(run)
    return base, DiffusionTrainee(base.config, base.unet.train(), base.text.train())


def step_seconds(trainee, optimizer, x0, tokens, bf16: bool, channels_last: bool) -> float:
    x = x0.contiguous(memory_format=torch.channels_last) if channels_last else x0
    sigma = torch.exp(torch.randn(x.shape[0]) * 1.2 - 1.2)
    noise = torch.randn_like(x)
    keep = torch.ones(x.shape[0], dtype=torch.bool)
    start = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext():
        out = trainee(x, tokens, keep, sigma, noise, 0.07)
        loss = out["diffusion"] + 0.1 * out["contrastive"] + 0.05 * out["token"]
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="scenes_x4", choices=sorted(f1config.PRESETS))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    captions = [caption(spec) for spec in load_split("val")][:args.batch_size]
    base, trainee = build(args.preset, captions)
    vae = base.config.vae
    side = 64 // vae.downscale
    x0 = torch.randn(args.batch_size, base.config.unet.in_channels, side, side)
    tokens = trainee.text.tokenize(captions)
    times = {name: [] for name in VARIANTS}
    for variant in VARIANTS.values():
        if variant["channels_last"]:
            trainee.to(memory_format=torch.channels_last)
        optimizer = torch.optim.AdamW(trainee.parameters(), lr=1e-5)
        step_seconds(trainee, optimizer, x0, tokens, **variant)    # warm-up: oneDNN picks its kernels
    optimizers = {}
    for _ in range(args.rounds):
        for name, variant in VARIANTS.items():
            trainee.to(memory_format=torch.channels_last if variant["channels_last"] else torch.contiguous_format)
            optimizer = optimizers.setdefault(name, torch.optim.AdamW(trainee.parameters(), lr=1e-5))
            times[name].append(step_seconds(trainee, optimizer, x0, tokens, **variant))
    fp32 = statistics.median(times["fp32"])
    print(f"{args.preset}, batch {args.batch_size}, {torch.get_num_threads()} thread(s), {args.rounds} rounds")
    print(f"{'variant':30s} {'s/step':>8s} {'img/s':>7s} {'speedup':>8s}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:30s} {median:8.3f} {args.batch_size / median:7.1f} {fp32 / median:7.2f}x")
    print(f"bf16_speedup: {fp32 / statistics.median(times['bf16 autocast']):.2f}")


if __name__ == "__main__":
    main()
