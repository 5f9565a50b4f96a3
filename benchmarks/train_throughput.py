"""Diffusion-stage training throughput on the CPU: variants of one training step side by side (issue 11's
throughput sweep). One U-Net + text training step of a preset at batch B as the trainer takes it (forward,
backward, gradient clipping, AdamW, EMA), each variant on its own copy of the same init and fed the same batch,
interleaved in rounds so machine noise hits them alike. Reports the median thread CPU seconds per step (wall time
on a shared machine counts other jobs), the ratio to fp32, and how far each variant's losses drift from fp32's.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/train_throughput.py --preset scenes_x4_patch --rounds 8
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/train_throughput.py --variants fp32,torch.compile --parts

bf16 autocast needs the CPU's avx512_bf16 (or AMX) to pay; without it oneDNN falls back to slow paths.
torch.compile (inductor, needs a C++ compiler) compiles in the first step; its seconds are printed. --parts
splits fp32's step by phase. The last line is `bf16_speedup: X` (fp32 seconds per step over bf16's)."""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from f1core import config as f1config  # noqa: E402
from f1core.data.captions import caption  # noqa: E402
from f1core.data.splits import load_split  # noqa: E402
from f1core.train.ema import EMA  # noqa: E402
from f1core.train.losses import log_normal_sigmas  # noqa: E402
from f1core.train.trainer import DiffusionTrainee, TrainConfig, _load_base, create_run  # noqa: E402

VARIANTS = {
    "fp32": dict(),
    "fp32 channels_last": dict(channels_last=True),
    "bf16 autocast": dict(bf16=True),
    "bf16 autocast channels_last": dict(bf16=True, channels_last=True),
    "AdamW fused": dict(fused=True),
    "torch.compile": dict(compile=True),
}
DEFAULT_VARIANTS = [name for name in VARIANTS if name != "torch.compile"]   # compiling takes minutes
CONFIG = TrainConfig(stage="diffusion", steps=1, lr=1e-3, p_mean=-0.4)      # scenes_x4_patch's recipe


class Arm:
    """One variant: its own trainee, optimiser and EMA, stepped as `_Stage.optimise` steps the real ones."""

    def __init__(self, trainee, bf16=False, channels_last=False, fused=False, compile=False):
        self.trainee = copy.deepcopy(trainee)
        self.bf16, self.channels_last = bf16, channels_last
        if channels_last:
            self.trainee.to(memory_format=torch.channels_last)
        if compile:
            self.trainee.compile()   # in place: state-dict keys, and so the EMA's, stay the same
        self.optimizer = torch.optim.AdamW(self.trainee.parameters(), lr=CONFIG.lr, betas=(0.9, 0.99),
                                           eps=CONFIG.adam_eps, weight_decay=0.0, fused=fused or None)
        self.ema = EMA(self.trainee, CONFIG.ema_decay)
        self.seconds, self.losses = [], []

    def step(self, batch, marks=None) -> float:
        """One training step on `batch`; its thread CPU seconds are recorded. `marks(phase)` is called as each
        phase ends."""
        mark = marks or (lambda phase: None)
        x0, tokens, keep, sigma, noise = batch
        x = x0.contiguous(memory_format=torch.channels_last) if self.channels_last else x0
        start = time.thread_time()
        with torch.autocast("cpu", dtype=torch.bfloat16) if self.bf16 else nullcontext():
            out = self.trainee(x, tokens, keep, sigma, noise, CONFIG.contrastive_temperature)
            loss = (out["diffusion"] + CONFIG.contrastive_weight * out["contrastive"]
                    + CONFIG.token_weight * out["token"])
        mark("loss terms forward")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        mark("backward (all)")
        nn.utils.clip_grad_norm_(self.trainee.parameters(), CONFIG.grad_clip)
        mark("clip_grad_norm_")
        self.optimizer.step()
        mark("AdamW")
        self.ema.update(self.trainee, len(self.losses))
        mark("EMA")
        self.seconds.append(time.thread_time() - start)
        self.losses.append(float(loss.detach()))
        return self.seconds[-1]


def build(preset: str, captions: list[str]) -> tuple[f1config.F1Config, DiffusionTrainee]:
    run = Path(tempfile.mkdtemp(prefix="f1-throughput-"))
    create_run(run, f1config.PRESETS[preset](), captions)
    base = _load_base(run)
    return base.config, DiffusionTrainee(base.config, base.unet.train(), base.text.train())


def phase_split(arm: Arm, batch, captions: list[str], steps: int) -> dict[str, float]:
    """Median thread CPU seconds of each phase of `arm`'s step, tokenisation included; the forward is split
    by hooks at the denoiser (text towers before it, U-Net inside, the loss terms and their heads after)."""
    times: dict[str, list[float]] = {}
    clock = [0.0]

    def mark(phase):
        now = time.thread_time()
        times.setdefault(phase, []).append(now - clock[0])
        clock[0] = now

    hooks = [arm.trainee.register_forward_pre_hook(lambda *_: mark("(before the forward)")),
             arm.trainee.denoiser.register_forward_pre_hook(lambda *_: mark("text towers forward")),
             arm.trainee.denoiser.register_forward_hook(lambda *_: mark("U-Net forward"))]
    for _ in range(steps):
        clock[0] = time.thread_time()
        arm.trainee.text.tokenize(captions)
        mark("tokenize captions")
        arm.step(batch, mark)
    for hook in hooks:
        hook.remove()
    times.pop("(before the forward)")
    return {phase: statistics.median(values) for phase, values in times.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="scenes_x4_patch", choices=sorted(f1config.PRESETS))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                        help=f"comma-separated, the first is the reference; of {', '.join(VARIANTS)}")
    parser.add_argument("--parts", action="store_true", help="also split the first variant's step by phase")
    args = parser.parse_args(argv)
    names = args.variants.split(",")
    unknown = [name for name in names if name not in VARIANTS]
    if unknown:
        parser.error(f"--variants: unknown {unknown}; choose from {list(VARIANTS)}")
    torch.manual_seed(0)
    captions = [caption(spec) for spec in load_split("val")][:args.batch_size]
    config, trainee = build(args.preset, captions)
    side = config.resolution // config.vae.downscale
    generator = torch.Generator().manual_seed(1)
    x0 = torch.randn(args.batch_size, config.unet.in_channels, side, side, generator=generator)
    tokens = trainee.text.tokenize(captions)
    keep = torch.ones(args.batch_size, dtype=torch.bool)

    def batch():   # the same draw for every variant of a round
        sigma = log_normal_sigmas(torch.randn(args.batch_size, generator=generator), CONFIG.p_mean, CONFIG.p_std)
        return x0, tokens, keep, sigma, torch.randn(x0.shape, generator=generator)

    arms = {name: Arm(trainee, **VARIANTS[name]) for name in names}
    first = batch()
    for name, arm in arms.items():   # warm-up: oneDNN picks its kernels, torch.compile compiles
        start = time.perf_counter()
        arm.step(first)
        print(f"warm-up {name}: {time.perf_counter() - start:.1f} s wall", flush=True)
    for _ in range(args.rounds):
        shared = batch()
        for arm in arms.values():
            arm.step(shared)
    reference = arms[names[0]]
    ref_seconds = statistics.median(reference.seconds[1:])
    print(f"{args.preset}, batch {args.batch_size}, {torch.get_num_threads()} thread(s), {args.rounds} rounds, "
          "thread CPU seconds")
    print(f"{'variant':30s} {'s/step':>8s} {'img/s':>7s} {'speedup':>8s} {'max |loss - ' + names[0] + '|':>20s}")
    for name, arm in arms.items():
        median = statistics.median(arm.seconds[1:])
        drift = max(abs(a - b) for a, b in zip(arm.losses, reference.losses))
        print(f"{name:30s} {median:8.3f} {args.batch_size / median:7.1f} {ref_seconds / median:7.2f}x {drift:20.2e}")
    if args.parts:
        split = phase_split(reference, batch(), captions, args.rounds)
        total = sum(split.values())
        print(f"\n{names[0]}'s step by phase (median thread CPU ms over {args.rounds} steps)")
        for phase, seconds in split.items():
            print(f"{phase:30s} {1000 * seconds:8.1f} {100 * seconds / total:5.1f}%")
    if "bf16 autocast" in arms and "fp32" in arms:
        fp32, bf16 = (statistics.median(arms[name].seconds[1:]) for name in ("fp32", "bf16 autocast"))
        print(f"bf16_speedup: {fp32 / bf16:.2f}")


if __name__ == "__main__":
    main()
