"""Training logs: one JSON object per line, and a PNG plot of every logged loss drawn with matplotlib."""
from __future__ import annotations

import json
import math
from pathlib import Path

from ..plot import figure


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
    """One panel, log y axis, a smoothed line per stage and loss key (keys ending in 'loss'); the legend, with
    each line's last value, sits beside the panel so it never covers a line."""
    fig, ax = figure(size)
    for key, points in loss_series(records, keys).items():
        steps = [s for s, _ in points]
        values = [10 ** v for _, v in points]
        ax.plot(steps, values, lw=1.5, marker="o" if len(points) == 1 else None, label=f"{key}  {values[-1]:.4g}")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (smoothed)")
    ax.grid(alpha=0.3, which="both")
    if ax.lines:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    return path
