"""Training data: image-caption datasets and the global-batch sampler that makes every rank's share deterministic.

A dataset has `__len__`, `image(i) -> [3, H, W]` in [-1, 1], `caption(i, variant) -> str` (variants are
paraphrases of the same meaning) and `sample_weights() -> [N]` (long-tail oversampling); `__getitem__(i)`
is `(image(i), caption(i, 0))`.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..data.captions import caption as canonical_caption, paraphrase
from ..data.rng import derive_seed
from ..data.longtail import HELD_OUT
from ..data.scenes import render_scene
from ..data.splits import generate_split
from ..regions import object_phrase

HELD_OUT_COMBOS = list(HELD_OUT.values())
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def _to_model_range(image_uint8: torch.Tensor) -> torch.Tensor:
    return image_uint8.float().div(127.5).sub(1.0)


class SceneDataset:
    """Scenes of a split, rendered once per (spec, render) and cached as uint8; captions are the canonical
    caption (every third variant) or concept-graph paraphrases."""

    def __init__(self, specs, resolution: int = 64, renders_per_spec: int = 1, longtail_power: float = 0.5):
        if not specs:
            raise ValueError("specs: need at least one scene spec, e.g. f1core.data.splits.generate_split('train')")
        if renders_per_spec < 1:
            raise ValueError(f"renders_per_spec: must be at least 1, got {renders_per_spec}")
        self.specs = list(specs)
        self.resolution = resolution
        self.renders_per_spec = renders_per_spec
        self.longtail_power = longtail_power
        self._cache: dict[int, torch.Tensor] = {}

    @classmethod
    def split(cls, name: str = "train", per_category: int | None = None, **kwargs) -> "SceneDataset":
        return cls(generate_split(name, per_category), **kwargs)

    def __len__(self) -> int:
        return len(self.specs) * self.renders_per_spec

    def _spec(self, index: int):
        return self.specs[index // self.renders_per_spec]

    def render(self, index: int):
        """The item's whole scene render (image, masks, edges, depth): ControlNet hints come from the same one."""
        # unset attributes are drawn at random; they must not draw a held-out combination into training
        return render_scene(self._spec(index), self.resolution, seed=derive_seed("train-render", index),
                            avoid=HELD_OUT_COMBOS)

    def image(self, index: int) -> torch.Tensor:
        cached = self._cache.get(index)
        if cached is None:
            sample = self.render(index)
            cached = (sample.image * 255).round().to(torch.uint8).permute(2, 0, 1).contiguous()
            self._cache[index] = cached
        return _to_model_range(cached)

    def regions(self, index: int) -> tuple[list[str], torch.Tensor]:
        """Each object's phrase (object_phrase) and its instance mask [objects, H, W] in the item's render: what
        regional training puts under each region."""
        sample = self.render(index)
        return [object_phrase(obj) for obj in sample.spec.objects], sample.object_masks()

    def caption(self, index: int, variant: int = 0) -> str:
        spec = self._spec(index)
        if variant % 3 == 0:
            return canonical_caption(spec)
        return paraphrase(spec, derive_seed("train-caption", index, variant))

    def __getitem__(self, index: int):
        return self.image(index), self.caption(index, 0)

    def sample_weights(self) -> torch.Tensor:
        """Oversample rare concept pairs: weight (1 / frequency of the spec's rarest shape-colour pair)^power."""
        def pairs(spec):
            return [(o.shape, o.colour) for o in spec.objects] or [("", "")]
        counts = Counter(p for spec in self.specs for p in pairs(spec))
        per_spec = torch.tensor([max(1.0 / counts[p] for p in pairs(s)) for s in self.specs], dtype=torch.float64)
        weights = per_spec.pow(self.longtail_power)
        return (weights / weights.sum()).repeat_interleave(self.renders_per_spec)

    def corpus(self, variants: int = 6) -> list[str]:
        """Caption text for building a vocabulary: canonical captions and paraphrases."""
        return [self.caption(i, v) for i in range(len(self)) for v in range(variants)]


class ImageFolderDataset:
    """A folder of images, each with a caption file of the same stem (`cat.png` + `cat.txt`); a caption file
    with several non-empty lines gives one caption variant per line. Images are resized (shorter side) and
    centre-cropped to `resolution`."""

    def __init__(self, folder, resolution: int = 64):
        folder = Path(folder)
        if not folder.is_dir():
            raise ValueError(f"folder: {folder} is not a directory; pass a folder of images with .txt captions")
        self.resolution = resolution
        self.items = []
        for path in sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
            text_path = path.with_suffix(".txt")
            if text_path.is_file():
                lines = [ln.strip() for ln in text_path.read_text(encoding="utf-8").splitlines() if ln.strip()]
                if lines:
                    self.items.append((path, lines))
        if not self.items:
            raise ValueError(f"folder: no image in {folder} has a non-empty caption file (image stem + .txt)")
        self._cache: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.items)

    def image(self, index: int) -> torch.Tensor:
        cached = self._cache.get(index)
        if cached is None:
            with Image.open(self.items[index][0]) as img:
                img = img.convert("RGB")
                scale = self.resolution / min(img.size)
                img = img.resize((max(self.resolution, round(img.width * scale)),
                                  max(self.resolution, round(img.height * scale))), Image.Resampling.BICUBIC)
                left, top = (img.width - self.resolution) // 2, (img.height - self.resolution) // 2
                img = img.crop((left, top, left + self.resolution, top + self.resolution))
                cached = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).contiguous()
            self._cache[index] = cached
        return _to_model_range(cached)

    def caption(self, index: int, variant: int = 0) -> str:
        lines = self.items[index][1]
        return lines[variant % len(lines)]

    def __getitem__(self, index: int):
        return self.image(index), self.caption(index, 0)

    def sample_weights(self) -> torch.Tensor:
        return torch.full((len(self),), 1.0 / len(self), dtype=torch.float64)

    def corpus(self, variants: int = 1) -> list[str]:
        return [line for _, lines in self.items for line in lines]


def step_generator(seed: int, step: int, purpose: str) -> torch.Generator:
    """The random source for one step and purpose, the same on every rank and after a resume."""
    return torch.Generator().manual_seed(derive_seed("train", seed, step, purpose))


def global_indices(weights: torch.Tensor, batch_size: int, seed: int, step: int) -> torch.Tensor:
    """The global batch of dataset indices for `step`, drawn with replacement by `weights`."""
    return torch.multinomial(weights, batch_size, replacement=True, generator=step_generator(seed, step, "batch"))


def global_randn(batch_size: int, shape, seed: int, step: int, purpose: str) -> torch.Tensor:
    return torch.randn((batch_size, *shape), generator=step_generator(seed, step, purpose))


def global_rand(batch_size: int, seed: int, step: int, purpose: str) -> torch.Tensor:
    return torch.rand(batch_size, generator=step_generator(seed, step, purpose))
