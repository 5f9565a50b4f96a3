"""F.1 training from the command line. A run directory is created once, then each stage runs (and resumes) in it:

    python -m f1core.train init RUN_DIR --preset scenes [--data scenes|IMAGE_FOLDER]
    python -m f1core.train init RUN_DIR --from CKPT.safetensors   (fine-tune or continue a trained checkpoint)
    python -m f1core.train vae RUN_DIR --steps 4000 [--batch-size 16] [--set kl_weight=1e-6 ...]
    python -m f1core.train diffusion RUN_DIR --steps 60000 [--set unet_adversarial_weight=0.05 ...]
    python -m f1core.train export RUN_DIR OUT.safetensors [--dtype float16]
    python -m f1core.train export-vae RUN_DIR VAE.safetensors   (the vae stage alone; init --vae-from reads it)
    python -m f1core.train control_edges RUN_DIR --steps 4000   (a ControlNet; RUN_DIR from init --from MODEL)
    python -m f1core.train export-control RUN_DIR control_edges OUT.safetensors

--data is `scenes` or `scenes:N` (the scene engine's train split, or N specs drawn per category, with
paraphrased captions and long-tail oversampling) or a
folder of images with same-stem .txt captions. Scale out with `torchrun --nproc_per_node N -m f1core.train ...`.
Ctrl-C or SIGTERM saves the state after the current step; running the same command again continues it.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch

from .. import config as f1config
from ..checkpoint import read_metadata
from . import distributed as dist_utils
from .data import ImageFolderDataset, SceneDataset
from .trainer import BASE_NAME, STAGES, TrainConfig, create_run, create_run_from_checkpoint, export, export_vae, train

STORAGE_DTYPES = {"float32": None, "float16": torch.float16, "bfloat16": torch.bfloat16}


def make_dataset(data: str, resolution: int):
    """`scenes` (the train split), `scenes:N` (N specs drawn per category, for a larger pool), or a folder."""
    name, _, per_category = data.partition(":")
    if name == "scenes":
        return SceneDataset.split("train", int(per_category) if per_category else None, resolution=resolution)
    return ImageFolderDataset(data, resolution=resolution)


def parse_overrides(pairs: list[str]) -> dict:
    """`key=value` pairs typed by TrainConfig's field defaults."""
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key not in fields or key in ("stage", "steps"):
            raise ValueError(f"--set {pair!r}: expected key=value with key one of "
                             f"{sorted(set(fields) - {'stage', 'steps'})}")
        kind = type(fields[key].default)
        out[key] = kind(float(value)) if kind is int else kind(value)
    return out


def parse_config_overrides(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            sep = ""
        if not sep:
            raise ValueError(f"--config {pair!r}: expected FIELD=JSON, e.g. unet.attention_levels=[2]")
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m f1core.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    init = sub.add_parser("init", help="create a run directory: config, vocabularies, random init")
    init.add_argument("run_dir")
    init.add_argument("--preset", default="scenes", choices=sorted(f1config.PRESETS))
    init.add_argument("--vocab-size", type=int, default=1024)
    init.add_argument("--data", default="scenes")
    init.add_argument("--seed", type=int, default=0)
    init.add_argument("--config", action="append", default=[], metavar="FIELD=JSON",
                      help="override a preset field, e.g. unet.attention_levels=[2] or unet.model_channels=96")
    init.add_argument("--vae-from", metavar="VAE_CKPT",
                      help="take the VAE from a checkpoint written by export-vae (same preset's VAE shape)")
    init.add_argument("--text-from", metavar="CKPT",
                      help="take the text towers, adapter and vocabularies from an F.1 checkpoint of the same "
                           "text shape (pre-trained text instead of a random init)")
    init.add_argument("--unet-from", metavar="CKPT",
                      help="take the U-Net's body from an F.1 checkpoint whose U-Net differs only in its latent "
                           "(in_channels, patch_size): a U-Net for a new VAE that keeps the old one's composition")
    init.add_argument("--from", dest="init_from", metavar="CKPT",
                      help="start from a trained F.1 checkpoint's weights, config and vocabularies (--preset, "
                           "--vocab-size and --data are then unused)")
    for stage in STAGES:
        p = sub.add_parser(stage, help=f"train (or resume) the {stage} stage")
        p.add_argument("run_dir")
        p.add_argument("--data", default="scenes")
        p.add_argument("--steps", type=int, required=True)
        p.add_argument("--batch-size", type=int, default=16)
        p.add_argument("--lr", type=float, default=2e-4)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any TrainConfig field")
        p.add_argument("--no-progress", action="store_true")
    out = sub.add_parser("export", help="write the EMA weights as one F.1 .safetensors checkpoint")
    out.add_argument("run_dir")
    out.add_argument("out_path")
    out.add_argument("--dtype", choices=sorted(STORAGE_DTYPES), default="float32",
                     help="store the weights in 16 bits (half the file; float16 keeps 3 more mantissa bits than bfloat16)")
    out_vae = sub.add_parser("export-vae", help="write the vae stage's EMA VAE alone as an F.1 checkpoint")
    out_vae.add_argument("run_dir")
    out_vae.add_argument("out_path")
    out_control = sub.add_parser("export-control", help="write a ControlNet stage's EMA ControlNet as an F.1 ControlNet")
    out_control.add_argument("run_dir")
    out_control.add_argument("stage", choices=[s for s in STAGES if s.startswith("control_")])
    out_control.add_argument("out_path")
    args = parser.parse_args(argv)

    if args.command == "init" and args.init_from:
        print(create_run_from_checkpoint(args.run_dir, args.init_from))
        return
    if args.command == "init":
        preset = f1config.PRESETS[args.preset]
        config = preset(vocab_size=args.vocab_size) if args.preset != "full" else preset()
        config = f1config.with_overrides(config, parse_config_overrides(args.config))
        dataset = make_dataset(args.data, config.resolution)
        # ~1,024 scenes spread over the dataset (every category), whose two latents fit --unet-from's bridge
        # (which needs the run's trained VAE, --vae-from)
        bridge_images = (torch.stack([dataset.image(i) for i in range(0, len(dataset), max(1, len(dataset) // 1024))])
                         if args.unet_from and args.vae_from else None)
        print(create_run(args.run_dir, config, dataset.corpus(), seed=args.seed, vae_from=args.vae_from,
                         text_from=args.text_from, unet_from=args.unet_from,
                         bridge_images=bridge_images))
        return
    if args.command == "export":
        print(export(args.run_dir, args.out_path, dtype=STORAGE_DTYPES[args.dtype]))
        return
    if args.command == "export-vae":
        print(export_vae(args.run_dir, args.out_path))
        return
    if args.command == "export-control":
        from .control_stage import export_control
        print(export_control(args.run_dir, args.stage, args.out_path))
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    device = dist_utils.init_from_environment()
    metadata = read_metadata(Path(args.run_dir) / BASE_NAME)
    resolution = f1config.F1Config.from_json(metadata["f1.config"]).resolution
    config = TrainConfig(stage=args.command, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                         seed=args.seed, **parse_overrides(args.set))
    result = train(args.run_dir, make_dataset(args.data, resolution), config, device=device,
                   progress=not args.no_progress)
    if dist_utils.rank() == 0:
        print(f"{args.command}: step {result['step']}; last losses {result['losses']}")
    if result["step"] < config.steps:
        # stopped early (Ctrl-C / SIGTERM): a script chaining the stages must not go on to the next one
        print(f"{args.command}: stopped at step {result['step']} of {config.steps}; run again to continue",
              file=sys.stderr)
        return STOPPED_EARLY


STOPPED_EARLY = 3


if __name__ == "__main__":
    sys.exit(main())
