"""F.1 ControlNet measurements.

    python benchmarks/controlnet.py design [--model CKPT] [--steps N]   # XS vs adapter vs wider XS, equal steps
    python benchmarks/controlnet.py [--model CKPT] [--edges CN] ...    # the issue's table (skeleton, see below)

`design` trains each candidate ControlNet design with the trainer's ControlNet stage for the same number of steps
on one model, then measures on held-out val scenes how much the edge hint lowers the frozen model's denoising
error at high noise (where layout is decided): relative error reduction per parameter and per CPU-second. It is a
proxy for adherence that needs no sampling, so designs can be ranked in minutes on a CPU.

The full benchmark (issue 13: mask mIoU, edge F1 at 2 px, depth RMSE, judge position/counting accuracy, time per
step, with and without control, last line `controlled_mask_miou: X`) needs the shipped default's ControlNets;
`table` below is its skeleton and reports what it can measure today.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from f1core.checkpoint import load_checkpoint  # noqa: E402
from f1core.control import F1ControlNet, ControlConfig, parameter_count  # noqa: E402
from f1core.diffusion import F1Denoiser, edm_coefficients, sigma_to_timestep  # noqa: E402
from f1core.hints import scene_hint  # noqa: E402
from f1core.train.control_stage import OPTIONS_NAME  # noqa: E402
from f1core.train.data import SceneDataset  # noqa: E402
from f1core.train.trainer import (TrainConfig, create_run_from_checkpoint, load_state, train,  # noqa: E402
                                  trainee_parts)

DESIGNS = {"xs": {"reads_latent": True}, "adapter": {"reads_latent": False},
           "xs_no_attention": {"reads_latent": True, "attention": False},
           "xs_wide": {"reads_latent": True, "width": 0.5}}
SIGMAS = (1.0, 2.0, 4.0)


@torch.no_grad()
def denoising_error(model, control, val: SceneDataset, condition: str, count: int, seed: int = 0) -> dict:
    """Mean EDM-weighted denoising MSE on `count` val scenes per sigma, with the ControlNet's hint and without."""
    denoiser = F1Denoiser(model.unet, model.config.schedule)
    out = {}
    count = min(count, len(val))
    items = [val.render(i) for i in range(count)]
    images = torch.stack([s.image.permute(2, 0, 1) * 2 - 1 for s in items])
    hints = torch.stack([scene_hint(s, condition) for s in items])[:, None].expand(-1, 3, -1, -1)
    x0 = model.vae.encode(images)
    enc = model.text.encode_ids(model.text.tokenize([val.caption(i, 0) for i in range(count)]))
    g = torch.Generator().manual_seed(seed)
    for sigma in SIGMAS:
        noise = torch.randn(x0.shape, generator=g)
        s = torch.full((count,), sigma)
        x = x0 + sigma * noise
        kwargs = dict(context=enc.context, y=enc.pooled, context_mask=enc.mask)
        plain = (denoiser(x, s, **kwargs) - x0).square().mean().item()
        c_in = edm_coefficients(s.reshape(-1, 1, 1, 1), model.config.schedule.sigma_data)[0]
        residuals = control(x * c_in, hints, sigma_to_timestep(s), enc.context, enc.pooled)
        controlled = (denoiser(x, s, control=residuals, **kwargs) - x0).square().mean().item()
        out[sigma] = (plain, controlled)
    return out


def design(args):
    model = load_checkpoint(args.model)
    train_data = SceneDataset.split("train", args.per_category, resolution=model.config.resolution)
    val = SceneDataset.split("val", 8, resolution=model.config.resolution)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.designs:
            run = Path(tmp) / name
            create_run_from_checkpoint(run, args.model)
            (run / OPTIONS_NAME).write_text(json.dumps(DESIGNS[name]))
            config = TrainConfig(stage="control_edges", steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                                 warmup_steps=10, log_every=max(1, args.steps // 4), checkpoint_every=10 ** 6,
                                 condition_dropout=0.2)
            cpu = time.process_time()
            train(run, train_data, config, progress=False)
            cpu = time.process_time() - cpu
            state = load_state(run, "control_edges")
            control = F1ControlNet(ControlConfig.from_json(state["control_config"]))
            control.load_state_dict(trainee_parts(state["trainee"])["control"])
            errors = denoising_error(model, control.eval(), val, "edges", args.val_scenes)
            params = parameter_count(control)
            gain = {s: 1 - c / p for s, (p, c) in errors.items()}
            rows.append({"design": name, "params": params, "share": params / parameter_count(model.unet),
                         "cpu_s": cpu, "s_per_step": cpu / args.steps, "errors": errors, "gain": gain})
            print(json.dumps(rows[-1]), flush=True)
    print("\n| design | params | share of U-Net | CPU s/step | error cut at sigma " + " / ".join(map(str, SIGMAS))
          + " | cut at 2 per M params |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        cuts = " / ".join(f"{r['gain'][s]:+.3f}" for s in SIGMAS)
        print(f"| {r['design']} | {r['params']:,} | {r['share']:.1%} | {r['s_per_step']:.2f} | {cuts} | "
              f"{r['gain'][2.0] / (r['params'] / 1e6):+.2f} |")


def table(args):
    """Skeleton of the issue's benchmark. What it needs: the shipped default's edge and depth ControlNets
    (scripts/train_controlnet.sh), then per test scene: sample with and without control (core's sampler path or
    f1core.pipeline), decode, and measure mask mIoU (detector boxes/masks vs the hint's instance masks), edge F1 at
    2 px (kornia Canny of the output vs the hint), depth RMSE (hint vs the depth of the detected layout), the
    judge's position and counting accuracy, and time per step."""
    raise SystemExit("benchmarks/controlnet.py: the full table needs trained ControlNets for the final default "
                     "(scripts/train_controlnet.sh); run `design` for the design comparison."
                     "\ncontrolled_mask_miou: n/a")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", nargs="?", default="table", choices=["table", "design"])
    parser.add_argument("--model", default=str(ROOT / "models" / "f1-tiny-scenes.safetensors"))
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--per-category", type=int, default=20, help="train specs drawn per category")
    parser.add_argument("--val-scenes", type=int, default=32)
    parser.add_argument("--designs", nargs="+", default=list(DESIGNS), choices=list(DESIGNS))
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    (design if args.command == "design" else table)(args)


if __name__ == "__main__":
    main()
