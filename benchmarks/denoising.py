"""Held-out denoising error per noise level of F.1 checkpoints, side by side (a table and a chart).

    .venv/bin/python benchmarks/denoising.py A.safetensors B.safetensors [--names a b] [--chart docs/x.png]

The error is `f1core.eval.diagnose.denoising_error` (the captioned denoiser's mean squared error on the val
curve's scenes at fixed noise, in each model's own unit-variance latent). Beside it, for each checkpoint's VAE,
the best *linear* denoiser of its latent from a noisy 3x3 neighbourhood (least squares on train scenes): a U-Net
at that line has learned no more about its latent than local smoothing does, whatever its loss says.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from f1core.checkpoint import load_checkpoint  # noqa: E402
from f1core.data.splits import load_split  # noqa: E402
from f1core.eval.diagnose import denoising_error, render_truth  # noqa: E402
from f1core.pipeline import F1Pipeline  # noqa: E402
from f1core.plot import figure  # noqa: E402
from f1core.train.curve import curve_specs  # noqa: E402

SIGMAS = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0)


@torch.no_grad()
def linear_denoising_error(vae, train: torch.Tensor, val: torch.Tensor, sigma: float) -> float:
    """Mean squared error on `val` of the least-squares linear map from each noisy 3x3 latent neighbourhood
    (all channels, and a bias) to the clean latent cell, fitted on `train`."""
    generator = torch.Generator().manual_seed(0)

    def rows(images):
        latent = vae.encode(images * 2 - 1)
        noisy = latent + sigma * torch.randn(latent.shape, generator=generator)
        channels = latent.shape[1]
        inputs = F.unfold(noisy, 3, padding=1).transpose(1, 2).reshape(-1, channels * 9).double()
        inputs = torch.cat([inputs, torch.ones(len(inputs), 1, dtype=inputs.dtype)], 1)
        return inputs, latent.flatten(2).transpose(1, 2).reshape(-1, channels).double()

    inputs, targets = rows(train)
    weights = torch.linalg.lstsq(inputs, targets).solution
    inputs, targets = rows(val)
    return float((inputs @ weights - targets).square().mean())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--names", nargs="+", help="one per checkpoint (default: file names)")
    parser.add_argument("--scenes", type=int, default=98, help="val curve scenes (14 per category at 98)")
    parser.add_argument("--train-scenes", type=int, default=600, help="train scenes that fit the linear denoiser")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--chart", type=Path)
    args = parser.parse_args(argv)
    names = args.names or [Path(c).stem for c in args.checkpoints]
    if len(names) != len(args.checkpoints):
        parser.error(f"--names: got {len(names)} names for {len(args.checkpoints)} checkpoints")
    torch.set_num_threads(args.threads)
    specs = curve_specs(args.scenes)
    train_specs = load_split("train")[::max(1, len(load_split("train")) // args.train_scenes)][:args.train_scenes]

    series = {}
    for name, path in zip(names, args.checkpoints):
        pipe = F1Pipeline.from_file(path)
        resolution = pipe.config.resolution
        train, val = render_truth(train_specs, resolution), render_truth(specs, resolution)
        series[name] = denoising_error(pipe, specs, SIGMAS)
        series[f"{name}: linear 3x3"] = {s: linear_denoising_error(pipe.vae, train, val, s) for s in SIGMAS}

    print("| model | " + " | ".join(f"σ {s:g}" for s in SIGMAS) + " |")
    print("|---" * (len(SIGMAS) + 1) + "|")
    for name, errors in series.items():
        print(f"| {name} | " + " | ".join(f"{errors[s]:.4f}" for s in SIGMAS) + " |")
    if args.chart:
        fig, ax = figure((760, 420))
        for index, (name, errors) in enumerate(series.items()):
            model = index // 2
            ax.plot(SIGMAS, [errors[s] for s in SIGMAS], marker="o" if index % 2 == 0 else None,
                    linestyle="-" if index % 2 == 0 else ":", color=f"C{model}", label=name)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("noise level σ")
        ax.set_ylabel("held-out denoising error (MSE)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, frameon=False)
        fig.tight_layout()
        fig.savefig(args.chart)
        print(f"chart: {args.chart}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
