"""Verifies the detector on rendered ground truth: the test split rendered clean must score at least
REQUIRED_ACCURACY in every category; blur, noise and JPEG figures state how far it can be trusted on softer
images (diffusion outputs)."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image
from scipy import ndimage

from ..data.scenes import render_scene
from ..data.splits import load_split
from .evaluate import EvalReport, evaluate_pairs
from .report import markdown_table, write_report

REQUIRED_ACCURACY = 0.99


def gaussian_blur(rgb: np.ndarray, sigma: float) -> np.ndarray:
    return ndimage.gaussian_filter(rgb, sigma=(sigma, sigma, 0))


def gaussian_noise(rgb: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    return np.clip(rgb + np.random.default_rng(seed).normal(0.0, sigma, rgb.shape), 0, 1).astype(np.float32)


def jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray((np.clip(rgb, 0, 1) * 255).round().astype(np.uint8)).save(buffer, "JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"), dtype=np.float32) / 255.0


DEGRADATIONS = {
    "blur s=1px": lambda rgb, seed: gaussian_blur(rgb, 1.0),
    "noise s=0.04": lambda rgb, seed: gaussian_noise(rgb, 0.04, seed),
    "jpeg q=50": lambda rgb, seed: jpeg(rgb, 50),
}


def run_selftest(size: int = 128, out_dir=None, progress: bool = True, split: str = "test",
                 limit: int | None = None) -> tuple[dict[str, dict[str, float]], EvalReport, bool]:
    """Render the split, score it clean and under each degradation. Returns the per-category series, the clean
    report, and whether every clean category reached REQUIRED_ACCURACY."""
    specs = load_split(split)[:limit]
    renders = [render_scene(spec, size, seed=i).image.numpy() for i, spec in enumerate(specs)]
    clean = evaluate_pairs(((f"{i:04d}", rgb, spec) for i, (rgb, spec) in enumerate(zip(renders, specs))),
                           total=len(specs), progress=progress, desc="clean")
    series = {"clean": clean.by_category()}
    for name, degrade in DEGRADATIONS.items():
        pairs = ((f"{i:04d}", degrade(rgb, i), spec) for i, (rgb, spec) in enumerate(zip(renders, specs)))
        series[name] = evaluate_pairs(pairs, total=len(specs), progress=progress, desc=name, keep=0).by_category()
    ok = all(v >= REQUIRED_ACCURACY for v in series["clean"].values())
    if out_dir is not None:
        write_report(clean, out_dir, title=f"Detector self-test: {split} split rendered at {size}x{size}", label="clean",
                     extra_series={k: v for k, v in series.items() if k != "clean"},
                     notes=f"Required on clean renders: every category >= {REQUIRED_ACCURACY}.")
    return series, clean, ok


def format_selftest(series: dict[str, dict[str, float]], clean: EvalReport) -> str:
    return markdown_table(series, clean.counts())
