"""F.1 ControlNet measurements (issue 13).

    python benchmarks/controlnet.py [--checkpoint CKPT] [--controlnet CN ...] [--split test] [--scenes N]
                                    [--pictures docs/controlnet-examples.png]
    python benchmarks/controlnet.py design [--checkpoint CKPT] [--steps N]   # XS vs adapter vs wider XS

The table: adherence measured as ControlNet++ does, by extracting the condition again from the output
(f1core.eval.adherence), side by side in one run with the same seeds and noise. Scenes: the first --scenes specs of
each category of a split (`val` for tuning, `test` to report), each rendered by the scene engine at the model's
resolution (render seed = scene index), which gives the asked edges, depth and instance masks. Rows:

- truth: the scene's own render, the ceiling of every measure (what the detector and Canny read back from it);
- VAE reconstruction: the render encoded and decoded by the checkpoint's VAE, what its decoder can draw at all;
- none: the base model, caption alone;
- one row per ControlNet: the same, with the ControlNet applied by core's Apply ControlNet (Advanced) to both
  prompts (strength --strength, whole schedule), its hint the scene's map for its condition.

Sampling is the shipped path in-process: F1CheckpointLoader, F1TextEncode, core's sampler (dpmpp_2m, Karras, cfg 4,
seed = scene index), F1VAEDecode. Measures per row: edge F1 at 2 px between kornia Canny edges of the output and
the scene's edges; depth RMSE between the depth drawn for the detected objects and the scene's depth (both
normalised to 0..1, as the depth hint is); mask mIoU between the detected objects' masks and the scene's instance
masks (matched one to one, a missing or extra object counts 0); the judge's accuracy overall and on the position
and counting categories; seconds per sampling step. The last line is `controlled_mask_miou: X` (the first
ControlNet's mask mIoU; by default the checkpoint's edge ControlNet, models/controlnet/<checkpoint>-edges).
--pictures saves hint -> output examples: one row per scene (the first of each category), columns the scene's
render, then for each row of the table its output, each ControlNet's hint before its output.

`design` trains each candidate ControlNet design with the trainer's ControlNet stage for the same number of steps
on one model, then measures on held-out val scenes how much the edge hint lowers the frozen model's denoising
error at high noise (where layout is decided): relative error reduction per parameter and per CPU-second. It is a
proxy for adherence that needs no sampling, so designs can be ranked in minutes on a CPU.
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
sys.path.insert(0, str(ROOT / "tests"))

from comfy_inprocess import import_comfy, import_pack  # noqa: E402
from f1core.checkpoint import load_checkpoint, open_checkpoint  # noqa: E402
from f1core.control import F1ControlNet, ControlConfig, parameter_count, read_control_metadata  # noqa: E402
from f1core.data.captions import caption  # noqa: E402
from f1core.data.scenes import render_scene  # noqa: E402
from f1core.data.spec import CATEGORIES  # noqa: E402
from f1core.data.splits import load_split  # noqa: E402
from f1core.diffusion import F1Denoiser, edm_coefficients, sigma_to_timestep  # noqa: E402
from f1core.eval.adherence import adherence  # noqa: E402
from f1core.hints import scene_hint  # noqa: E402
from f1core.train.control_stage import OPTIONS_NAME  # noqa: E402
from f1core.train.data import SceneDataset  # noqa: E402
from f1core.train.trainer import (TrainConfig, create_run_from_checkpoint, load_state, train,  # noqa: E402
                                  trainee_parts)

DESIGNS = {"xs": {"reads_latent": True}, "adapter": {"reads_latent": False},
           "xs_no_attention": {"reads_latent": True, "attention": False},
           "xs_wide": {"reads_latent": True, "width": 0.5}}
SIGMAS = (1.0, 2.0, 4.0)
MEASURES = ("edge_f1", "depth_rmse", "mask_miou")
JUDGED = ("position", "counting")
CEILINGS = ("truth", "VAE reconstruction")
CFG = 4.0


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
    model = load_checkpoint(args.checkpoint)
    train_data = SceneDataset.split("train", args.per_category, resolution=model.config.resolution)
    val = SceneDataset.split("val", 8, resolution=model.config.resolution)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.designs:
            run = Path(tmp) / name
            create_run_from_checkpoint(run, args.checkpoint)
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


class Sampler:
    """The shipped nodes in-process on one checkpoint file: text encoding (cached), core's Apply ControlNet
    (Advanced), core's sampler, F1VAEDecode."""

    def __init__(self, checkpoint: Path, steps: int):
        import_comfy()
        import comfy.sample
        import folder_paths
        import nodes as core_nodes
        self.comfy_sample, self.apply = comfy.sample, core_nodes.ControlNetApplyAdvanced()
        loaders, self.text = import_pack("nodes.nodes_loaders"), import_pack("nodes.nodes_text")
        self.load_control = import_pack("nodes.f1_control").load_core_controlnet
        folder_paths.add_model_folder_path("f1", str(checkpoint.parent))  # the loader opens listed files only
        self.model, self.clip, self.vae = loaders.F1CheckpointLoader.execute(checkpoint.name).result
        self.latent_node = import_pack("nodes.nodes_latent").F1EmptyLatent
        self.steps, self._encoded = steps, {}

    def cond(self, text: str):
        if text not in self._encoded:
            self._encoded[text] = self.text.F1TextEncode.execute(self.clip, text).result[0]
        return self._encoded[text]

    def __call__(self, prompt: str, side: int, seed: int, control=None, hint=None, strength=1.0):
        """(RGB [H, W, 3] in 0..1, seconds per step); hint [H, W] in 0..1 for the ControlNet `control`."""
        positive, negative = self.cond(prompt), self.cond("")
        if control is not None:
            image = hint[None, :, :, None].expand(1, *hint.shape, 3)
            positive, negative = self.apply.apply_controlnet(positive, negative, control, image, strength, 0.0, 1.0)
        latent = self.latent_node.execute(self.vae, side, side, 1).result[0]["samples"]
        noise = self.comfy_sample.prepare_noise(latent, seed)
        start = time.perf_counter()
        out = self.comfy_sample.sample(self.model, noise, self.steps, CFG, "dpmpp_2m", "karras", positive, negative,
                                       latent, seed=seed, disable_pbar=True)
        seconds = (time.perf_counter() - start) / self.steps
        return self.vae.decode(out)[0].float(), seconds

    def reconstruct(self, image: torch.Tensor) -> torch.Tensor:
        """The VAE's encode and decode of an RGB [H, W, 3] image."""
        return self.vae.decode(self.vae.encode(image[None]))[0].float()


def default_controlnets(checkpoint: Path) -> list[Path]:
    """The checkpoint's ControlNets as scripts/train_controlnet.sh exports them, edges first."""
    folder = ROOT / "models" / "controlnet"
    return [p for c in ("edges", "depth") if (p := folder / f"{checkpoint.stem}-{c}.safetensors").is_file()]


def table(args):
    checkpoint = Path(args.checkpoint)
    controlnets = [Path(p) for p in args.controlnet] if args.controlnet is not None else default_controlnets(checkpoint)
    sampler = Sampler(checkpoint, args.steps)
    side = open_checkpoint(checkpoint).config.resolution if args.side == 0 else args.side
    rows = {name: [] for name in (*CEILINGS, "none")}
    controls = {}
    for path in controlnets:
        condition = ControlConfig.from_json(read_control_metadata(path)["f1.control_config"]).condition
        name = f"{condition} ({path.name})"
        if name in controls:  # rows are keyed by name: a second file of the same name would replace the first
            raise SystemExit(f"--controlnet: two files named {path.name}; copy one under another name to compare")
        controls[name] = (sampler.load_control(path), condition)
        rows[name] = []
    specs = [s for c in CATEGORIES for s in [x for x in load_split(args.split) if x.category == c][:args.scenes]]
    picture_rows, pictured = [], set()  # the first scene of each category
    started = time.time()
    for index, spec in enumerate(specs):
        sample = render_scene(spec, side, side, seed=index)
        prompt = caption(spec)
        for name, image in zip(CEILINGS, (sample.image, sampler.reconstruct(sample.image))):
            rows[name].append({**adherence(image, sample), "category": spec.category, "step_s": None})
        image, step_s = sampler(prompt, side, index)
        rows["none"].append({**adherence(image, sample), "category": spec.category, "step_s": step_s})
        pictures = [sample.image, image]
        for name, (control, condition) in controls.items():
            hint = scene_hint(sample, condition)
            image, step_s = sampler(prompt, side, index, control, hint, args.strength)
            rows[name].append({**adherence(image, sample), "category": spec.category, "step_s": step_s})
            pictures += [hint[..., None].expand(*hint.shape, 3), image]
        if spec.category not in pictured:
            pictured.add(spec.category)
            picture_rows.append(pictures)
        progress = "  ".join(f"{name.split()[0]}: miou {r[-1]['mask_miou']:.2f} edge {r[-1]['edge_f1']:.2f}"
                             for name, r in rows.items())
        print(f"[{index + 1}/{len(specs)}] {time.time() - started:.0f}s {progress}", flush=True)

    def mean(values):
        values = [float(v) for v in values]
        return sum(values) / len(values) if values else float("nan")

    summary = {}
    for name, items in rows.items():
        summary[name] = {m: mean(r[m] for r in items) for m in MEASURES}
        summary[name]["judge"] = mean(r["passed"] for r in items)
        for category in JUDGED:
            summary[name][category] = mean(r["passed"] for r in items if r["category"] == category)
        summary[name]["step_s"] = mean(r["step_s"] for r in items) if items[0]["step_s"] is not None else None
    print(json.dumps(summary, indent=1))
    print(f"\n{args.split} split, {args.scenes} scenes per category ({len(specs)}), {side}x{side}, dpmpp_2m "
          f"{args.steps} steps, cfg {CFG}, strength {args.strength}; checkpoint {checkpoint.name}\n")
    print("| condition | edge F1 (2 px) | depth RMSE | mask mIoU | judge overall | judge position | judge counting "
          "| s/step |")
    print("|---|---|---|---|---|---|---|---|")
    base = summary["none"]["step_s"]
    for name, row in summary.items():
        step = "-" if row["step_s"] is None else f"{row['step_s']:.4f}" + (
            f" ({row['step_s'] / base - 1:+.0%})" if name != "none" else "")
        print(f"| {name} | {row['edge_f1']:.3f} | {row['depth_rmse']:.3f} | {row['mask_miou']:.3f} | "
              f"{row['judge']:.3f} | {row['position']:.3f} | {row['counting']:.3f} | {step} |")
    controlled = [name for name in summary if name not in (*CEILINGS, "none")]
    for name in controlled:
        print(f"{name}: edge F1 gain over none {summary[name]['edge_f1'] - summary['none']['edge_f1']:+.3f}")
    if args.pictures:
        save_pictures(picture_rows, Path(args.pictures))
    print(f"controlled_mask_miou: {summary[controlled[0]]['mask_miou']:.3f}" if controlled
          else "controlled_mask_miou: n/a (no ControlNet given or found in models/controlnet)")


def save_pictures(picture_rows: list[list[torch.Tensor]], path: Path, scale: int = 2):
    """Rows of [H, W, 3] images in 0..1 as one PNG, enlarged `scale` times (nearest) so 64 px scenes can be read."""
    from torchvision.utils import make_grid, save_image
    images = torch.stack([p.permute(2, 0, 1).clamp(0, 1) for row in picture_rows for p in row])
    images = torch.nn.functional.interpolate(images, scale_factor=scale, mode="nearest")
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(make_grid(images, nrow=len(picture_rows[0]), padding=4, pad_value=1.0), path)
    print(f"pictures: {path}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", nargs="?", default="table", choices=["table", "design"])
    parser.add_argument("--checkpoint", default=str(ROOT / "models" / "f1-tiny-scenes.safetensors"),
                        help="the base F.1 checkpoint (a file path)")
    parser.add_argument("--controlnet", nargs="*", default=None,
                        help="F.1 ControlNet files for the table (default: the checkpoint's in models/controlnet)")
    parser.add_argument("--split", default="test", choices=["val", "test"], help="val to tune, test to report")
    parser.add_argument("--scenes", type=int, default=40, help="table: specs per category (the split has 20-58)")
    parser.add_argument("--side", type=int, default=0, help="table: image side (0: the model's resolution)")
    parser.add_argument("--strength", type=float, default=1.0, help="table: the ControlNet's strength")
    parser.add_argument("--pictures", default=None, help="table: save hint -> output examples to this PNG")
    parser.add_argument("--steps", type=int, default=None,
                        help="sampling steps for the table (default 20); training steps for design (default 150)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--per-category", type=int, default=20, help="train specs drawn per category")
    parser.add_argument("--val-scenes", type=int, default=32)
    parser.add_argument("--designs", nargs="+", default=list(DESIGNS), choices=list(DESIGNS))
    args = parser.parse_args(argv)
    if args.steps is None:
        args.steps = 150 if args.command == "design" else 20
    torch.manual_seed(0)
    (design if args.command == "design" else table)(args)


if __name__ == "__main__":
    main()
