"""Training logs: one JSON object per line, and a PNG plot of every logged loss drawn with PIL."""
from __future__ import annotations

import json
import math
from pathlib import Path

from PIL import Image, ImageDraw

COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]


def append_jsonl(path, record: dict):
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")


def read_jsonl(path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _smooth(values: list[float], window: int) -> list[float]:
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def loss_series(records: list[dict], keys: list[str] | None = None) -> dict[str, list[tuple[int, float]]]:
    """'stage/key' -> (step, log10 value) points in step order, smoothed. Stages are kept apart: they share key
    names ('loss') and may log into one file at the same time (e.g. the decoder stage beside diffusion)."""
    keys = keys or sorted({k for r in records for k in r if k.endswith("loss")})
    series = {}
    for stage in dict.fromkeys(r.get("stage", "") for r in records):
        for key in keys:
            points = sorted((r["step"], r[key]) for r in records if r.get("stage", "") == stage
                            and isinstance(r.get(key), (int, float)) and r[key] > 0)
            if points:
                steps, values = zip(*points)
                logs = _smooth([math.log10(v) for v in values], max(1, len(values) // 50))
                series[f"{stage}/{key}" if stage else key] = list(zip(steps, logs))
    return series


def plot_losses(records: list[dict], path, keys: list[str] | None = None, size=(900, 500)) -> Path:
    """One panel, log10 y axis, a smoothed line per stage and loss key (keys ending in 'loss')."""
    width, height = size
    left, right, top, bottom = 70, 220, 20, 40
    img = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(img)
    series = loss_series(records, keys)
    draw.rectangle([left, top, width - right, height - bottom], outline=(0, 0, 0))
    if series:
        xs = [s for pts in series.values() for s, _ in pts]
        ys = [v for pts in series.values() for _, v in pts]
        x0, x1 = min(xs), max(max(xs), min(xs) + 1)
        y0, y1 = math.floor(min(ys)), math.ceil(max(max(ys), min(ys) + 1e-6))
        y1 = max(y1, y0 + 1)

        def to_px(step, value):
            return (left + (step - x0) / (x1 - x0) * (width - left - right),
                    height - bottom - (value - y0) / (y1 - y0) * (height - top - bottom))

        for decade in range(y0, y1 + 1):
            _, y = to_px(x0, decade)
            draw.line([left, y, width - right, y], fill=(225, 225, 225))
            draw.text((5, y - 6), f"1e{decade}", fill=(0, 0, 0))
        draw.text((left, height - bottom + 8), f"step {x0}", fill=(0, 0, 0))
        draw.text((width - right - 80, height - bottom + 8), f"step {x1}", fill=(0, 0, 0))
        for n, (key, pts) in enumerate(series.items()):
            colour = COLOURS[n % len(COLOURS)]
            if len(pts) > 1:
                draw.line([to_px(s, v) for s, v in pts], fill=colour, width=2)
            draw.text((width - right + 10, top + 16 * n), f"{key} {10 ** pts[-1][1]:.4g}", fill=colour)
    path = Path(path)
    img.save(path)
    return path
