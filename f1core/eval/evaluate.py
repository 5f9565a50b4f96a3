"""Score images against their specs: from a renderer hook, from a folder of images with sidecar JSON specs,
or from any (name, image, spec) stream. The result aggregates per category (and the rare subset)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
from PIL import Image
from tqdm import tqdm

from ..data.captions import caption, parse_caption
from ..data.spec import CATEGORIES, SIZES, SceneSpec, coerce_spec
from .detector import Detection, as_rgb_array, detect
from .scoring import SpecScore, score_detection

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


@dataclass
class EvalItem:
    name: str
    spec: SceneSpec
    score: SpecScore
    detection: Detection


@dataclass
class EvalReport:
    items: list[EvalItem]
    samples: list[tuple[np.ndarray, EvalItem]] = field(default_factory=list)  # a few images for the grid

    def by_category(self) -> dict[str, float]:
        """Accuracy per category present, in the standard order, then the rare subset."""
        out = {}
        for category in CATEGORIES:
            scores = [i.score.passed for i in self.items if i.score.category == category]
            if scores:
                out[category] = float(np.mean(scores))
        rare = [i.score.passed for i in self.items if i.score.rare]
        if rare:
            out["rare"] = float(np.mean(rare))
        return out

    def counts(self) -> dict[str, int]:
        out = {c: sum(i.score.category == c for i in self.items) for c in CATEGORIES}
        out = {c: n for c, n in out.items() if n}
        rare = sum(i.score.rare for i in self.items)
        return out | ({"rare": rare} if rare else {})

    @property
    def overall(self) -> float:
        return float(np.mean([i.score.passed for i in self.items])) if self.items else 0.0

    def to_dict(self) -> dict:
        items = [{"name": i.name, "caption": caption(i.spec), "spec": i.spec.to_dict(),
                       "passed": i.score.passed, "failures": list(i.score.failures),
                       "detected": [{"shape": o.shape, "colour": o.colour, "style": o.style, "size": o.size,
                                     "x": round(o.x, 4), "y": round(o.y, 4)} for o in i.detection.objects],
                       "background": i.detection.background} for i in self.items]
        return {"overall": self.overall, "categories": self.by_category(), "counts": self.counts(),
                "attributes": attribute_recall(items), "items": items}


def attribute_recall(items: list[dict]) -> dict[str, float]:
    """Partial credit where whole scenes fail, from report items (spec + detections): the share of asked
    colours and shapes that appear among the detected objects, of scenes with the asked number of objects,
    and of asked backgrounds that were drawn. Shape recall is also split by the size asked for, which tells
    a decoder that cannot draw small shapes from a U-Net that does not follow the shape word."""
    tallies = {"colour_recall": [], "shape_recall": [], "object_count": [], "background": []}
    tallies |= {f"shape_recall_{size}": [] for size in SIZES}
    for item in items:
        detected = item["detected"]
        for obj in item["spec"]["objects"]:
            for key in ("colour", "shape"):
                if key in obj:
                    tallies[f"{key}_recall"].append(any(d[key] == obj[key] for d in detected))
            if "shape" in obj and "size" in obj:
                tallies[f"shape_recall_{obj['size']}"].append(any(d["shape"] == obj["shape"] for d in detected))
        tallies["object_count"].append(len(detected) == sum(o.get("count", 1) for o in item["spec"]["objects"]))
        if "background" in item["spec"]:
            tallies["background"].append(item["background"] == item["spec"]["background"])
    return {key: float(np.mean(values)) for key, values in tallies.items() if values}


def evaluate_pairs(pairs: Iterable[tuple[str, object, object]], total: int | None = None, progress: bool = True,
                   keep: int = 16, desc: str = "scoring") -> EvalReport:
    """Detect and score each (name, image, spec); keep `keep` images, spread over the run, for the report grid."""
    report = EvalReport([])
    stride = max(1, (total or keep) // max(1, keep))
    for index, (name, image, spec) in enumerate(tqdm(pairs, total=total, disable=not progress, desc=desc,
                                                     leave=False)):
        spec = coerce_spec(spec)
        rgb = as_rgb_array(image)
        detection = detect(rgb)
        item = EvalItem(name, spec, score_detection(spec, detection), detection)
        report.items.append(item)
        if len(report.samples) < keep and index % stride == 0:
            report.samples.append((rgb, item))
    return report


def evaluate_renderer(render_fn: Callable[[SceneSpec], object], specs, progress: bool = True,
                      keep: int = 16) -> EvalReport:
    """Score a model: `render_fn(spec) -> image` (PIL, array or [H,W,3] / [3,H,W] tensor in [0, 1]) is called
    once per spec; the caption is `f1core.data.captions.caption(spec)`."""
    specs = [coerce_spec(s) for s in specs]
    pairs = ((f"{i:04d}", render_fn(spec), spec) for i, spec in enumerate(specs))
    return evaluate_pairs(pairs, total=len(specs), progress=progress, keep=keep, desc="rendering")


def read_sidecar(path: Path) -> SceneSpec:
    """A sidecar holds a spec ({"objects": [...]}) or just {"caption": "..."}."""
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: cannot read the spec sidecar ({err})") from None
    try:
        if isinstance(data, dict) and "objects" not in data and isinstance(data.get("caption"), str):
            return parse_caption(data["caption"])
        return SceneSpec.from_dict(data)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


def folder_pairs(folder) -> list[tuple[str, Path, Path]]:
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"folder: {folder} is not a directory of images with sidecar .json specs")
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    pairs = [(p.stem, p, p.with_suffix(".json")) for p in images if p.with_suffix(".json").exists()]
    if not pairs:
        raise ValueError(f"folder: no image in {folder} has a sidecar spec (e.g. 0001.png + 0001.json)")
    return pairs


def evaluate_folder(folder, progress: bool = True, keep: int = 16) -> EvalReport:
    """Score every image in `folder` that has a same-named .json spec beside it."""
    pairs = folder_pairs(folder)
    stream = ((name, Image.open(image).convert("RGB"), read_sidecar(sidecar)) for name, image, sidecar in pairs)
    return evaluate_pairs(stream, total=len(pairs), progress=progress, keep=keep)
