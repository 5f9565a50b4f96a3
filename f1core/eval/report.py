"""Writes an evaluation as report.json and report.md, with two plots drawn in PIL: a sample grid annotated with
the detections, and per-category accuracy bars."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..data.captions import caption
from .detector import Detection
from .evaluate import EvalReport

TILE = 192
_PASS, _FAIL = (40, 160, 70), (210, 40, 40)
_SERIES_COLOURS = [(60, 110, 200), (230, 140, 40), (120, 170, 60), (170, 80, 170), (100, 100, 100)]


def annotate(rgb: np.ndarray, detection: Detection, passed: bool, side: int = TILE) -> Image.Image:
    """One image [H, W, 3] in [0, 1], scaled so its longer side is `side`: a box and label per detected object
    and a green (pass) or red (fail) frame."""
    font = ImageFont.load_default()
    scale = side / max(detection.width, detection.height)
    size = (max(1, round(detection.width * scale)), max(1, round(detection.height * scale)))
    tile = Image.fromarray((np.clip(rgb, 0, 1) * 255).astype(np.uint8)).resize(size, Image.BILINEAR)
    draw = ImageDraw.Draw(tile)
    for obj in detection.objects:
        x0, y0, x1, y1 = obj.bbox
        box = (x0 * scale, y0 * scale, x1 * scale - 1, y1 * scale - 1)
        draw.rectangle(box, outline=(0, 200, 255), width=1)
        draw.text((box[0] + 1, box[1] + 1), f"{obj.colour} {obj.shape}\n{obj.style}", fill=(0, 200, 255),
                  font=font, stroke_width=1, stroke_fill=(0, 0, 0))
    draw.rectangle((0, 0, size[0] - 1, size[1] - 1), outline=_PASS if passed else _FAIL, width=3)
    return tile


def draw_grid(report: EvalReport, columns: int = 4) -> Image.Image:
    """Each kept sample annotated with its detections and pass/fail frame, above its caption."""
    font = ImageFont.load_default()
    samples = report.samples or []
    rows = max(1, -(-len(samples) // columns))
    text_h = 48
    grid = Image.new("RGB", (columns * TILE, rows * (TILE + text_h)), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    for k, (rgb, item) in enumerate(samples):
        ox, oy = (k % columns) * TILE, (k // columns) * (TILE + text_h)
        grid.paste(annotate(rgb, item.detection, item.score.passed), (ox, oy))
        lines = textwrap.wrap(caption(item.spec), 34)[:3]
        draw.multiline_text((ox + 3, oy + TILE + 2), "\n".join(lines), fill=(0, 0, 0), font=font)
    return grid


def draw_bars(series: dict[str, dict[str, float]]) -> Image.Image:
    """Grouped horizontal bars: one group per category, one bar per series (e.g. clean, blur, noise)."""
    font = ImageFont.load_default()
    categories = list(dict.fromkeys(c for values in series.values() for c in values))
    label_w, bar_w, bar_h, pad = 130, 360, 12, 8
    group_h = bar_h * len(series) + pad
    legend_h = 18 * len(series) + 10
    image = Image.new("RGB", (label_w + bar_w + 60, legend_h + group_h * len(categories) + pad), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    for s, name in enumerate(series):
        colour = _SERIES_COLOURS[s % len(_SERIES_COLOURS)]
        draw.rectangle((label_w, 6 + 18 * s, label_w + 12, 18 + 18 * s), fill=colour)
        draw.text((label_w + 18, 6 + 18 * s), name, fill=(0, 0, 0), font=font)
    for c, category in enumerate(categories):
        top = legend_h + c * group_h
        draw.text((4, top + 2), category, fill=(0, 0, 0), font=font)
        for s, (name, values) in enumerate(series.items()):
            value = values.get(category)
            if value is None:
                continue
            y = top + s * bar_h
            draw.rectangle((label_w, y, label_w + int(bar_w * value), y + bar_h - 2),
                           fill=_SERIES_COLOURS[s % len(_SERIES_COLOURS)])
            draw.text((label_w + int(bar_w * value) + 4, y), f"{value:.3f}", fill=(0, 0, 0), font=font)
    draw.line((label_w, legend_h, label_w, image.height - pad), fill=(0, 0, 0))
    return image


def markdown_table(series: dict[str, dict[str, float]], counts: dict[str, int] | None = None) -> str:
    names = list(series)
    categories = list(dict.fromkeys(c for values in series.values() for c in values))
    columns = ["category"] + (["n"] if counts else []) + names
    head = "| " + " | ".join(columns) + " |"
    rule = "|" + "---|" * len(columns)
    rows = []
    for category in categories:
        cells = [category] + ([str(counts.get(category, ""))] if counts else [])
        cells += [f"{series[n][category]:.3f}" if category in series[n] else "-" for n in names]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join([head, rule] + rows)


def write_report(report: EvalReport, out_dir, title: str = "F.1 compositional evaluation", label: str = "accuracy",
                 extra_series: dict[str, dict[str, float]] | None = None, notes: str = "",
                 measures: dict[str, float] | None = None) -> dict[str, Path]:
    """Write report.json, report.md, grid.png and categories.png into out_dir; returns their paths.
    `measures` (e.g. the VAE's PSNR) are stored under "measures" and listed below the table."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    series = {label: report.by_category()} | (extra_series or {})
    data = report.to_dict() | ({"series": series} if extra_series else {}) | ({"measures": measures} if measures else {})
    paths = {"json": out / "report.json", "markdown": out / "report.md",
             "grid": out / "grid.png", "bars": out / "categories.png"}
    paths["json"].write_text(json.dumps(data, indent=2))
    draw_grid(report).save(paths["grid"])
    draw_bars(series).save(paths["bars"])
    failures = [i for i in report.items if not i.score.passed][:20]
    lines = [f"# {title}", "", f"Scenes scored: {len(report.items)}. Overall: **{report.overall:.3f}**.", "",
             markdown_table(series, report.counts()), "",
             *[f"- {name}: {value:.4g}" for name, value in (measures or {}).items()], "", notes, "",
             "![per-category accuracy](categories.png)", "", "![samples with detections](grid.png)", ""]
    if failures:
        lines += ["## First failures", ""]
        lines += [f"- `{i.name}` {caption(i.spec)}: {'; '.join(i.score.failures)}" for i in failures]
    paths["markdown"].write_text("\n".join(lines) + "\n")
    return paths
