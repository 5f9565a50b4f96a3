"""Render a labelled grid of a checkpoint's outputs for varied prompts (the README's picture).

    .venv/bin/python scripts/grid.py models/f1-tiny-scenes.safetensors docs/f1-tiny-scenes-grid.png

Each tile is the prompt rendered at the model's resolution with the default sampler settings (DPM++ 2M,
20 steps, CFG 4), seed = --seed + its index, enlarged without smoothing so the model's own pixels show."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from batch import contact_sheet  # noqa: E402
from f1core.pipeline import F1Pipeline  # noqa: E402

PROMPTS = (
    "a red circle",
    "a blue square on the left",
    "a yellow star on a black background",
    "a large green triangle",
    "two purple hexagons",
    "three orange circles",
    "a red circle on the left of a blue square",
    "a green star above a yellow square",
    "a pink square and a blue triangle on a white background",
    "an outlined blue hexagon",
    "a striped yellow square",
    "a purple star",  # a held-out combination: never seen in training
)


def render_grid(checkpoint, prompts=PROMPTS, columns: int = 4, scale: int = 3, seed: int = 0) -> Image.Image:
    pipe = F1Pipeline.from_file(checkpoint)
    images = pipe(list(prompts), seed=seed)
    tiles = [Image.fromarray((image.permute(1, 2, 0) * 255).round().byte().numpy()) for image in images]
    return contact_sheet(tiles, list(prompts), columns, tile=images.shape[-1] * scale)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("out")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    render_grid(args.checkpoint, seed=args.seed).save(args.out)
    print(args.out)


if __name__ == "__main__":
    main()
