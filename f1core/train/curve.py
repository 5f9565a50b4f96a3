"""The learning curve: the judge on a fixed validation subset, scored during training and logged beside the losses.

Loss says little about whether a model draws what it is asked, and runs with other noise distributions or
latents do not share a loss scale. The judge does, so every design choice is compared by accuracy per CPU-hour:

    VAE stage        the judge and PSNR on the VAE's reconstructions of the val subset (the ceiling of any U-Net)
    diffusion stage  the judge on text-to-image renders of the val subset at the default sampler settings

Records carry "curve": True, the samples seen and the stage's training CPU-hours (scoring time excluded), so
`plot_curve` can draw accuracy against either. The subset is fixed (val specs, render seed i for scene i,
sampler seed i), so two points differ only by the weights.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..checkpoint import F1Checkpoint
from ..data.captions import caption
from ..data.spec import CATEGORIES
from ..data.splits import load_split
# imported here, not when the first point is scored: a long run must not pick up half-edited modules later
from ..eval.diagnose import BATCH, judge, reconstruct, render_truth
from ..eval.metrics import psnr
from ..pipeline import F1Pipeline
from ..plot import figure

CURVE_SCENES = 98      # 14 val scenes per category
DEFAULT_STEPS = 20     # `python -m f1core.eval model`'s defaults, so the curve ends where the eval starts
DEFAULT_CFG = 4.0


def curve_specs(count: int = CURVE_SCENES):
    """The first count // 7 val specs of every category, in category order."""
    specs = load_split("val")
    per_category = max(1, count // len(CATEGORIES))
    return [s for c in CATEGORIES for s in [s for s in specs if s.category == c][:per_category]]


class ValCurve:
    def __init__(self, resolution: int, count: int = CURVE_SCENES):
        self.specs = curve_specs(count)
        self.truth = render_truth(self.specs, resolution)   # [N, 3, H, W] in [0, 1]

    @torch.no_grad()
    def score_vae(self, vae) -> dict:
        recon = reconstruct(vae, self.truth)
        report = judge(recon, self.specs)
        return _record(report) | {"psnr": float(psnr(recon, self.truth))}

    @torch.no_grad()
    def score_model(self, config, unet, vae, text) -> dict:
        pipe = F1Pipeline(F1Checkpoint(config=config, path="<training>", unet=unet, vae=vae, text=text))
        prompts = [caption(spec) for spec in self.specs]
        images = torch.cat([pipe(prompts[i:i + BATCH], steps=DEFAULT_STEPS, cfg=DEFAULT_CFG, seed=i)
                            for i in range(0, len(prompts), BATCH)])
        return _record(judge(images, self.specs))


def _record(report) -> dict:
    """Accuracy overall and per category, and the attribute recalls (partial credit: they move before whole
    scenes pass, so early points of a curve still rank runs)."""
    summary = report.to_dict()
    return {"overall": summary["overall"], **{f"acc_{k}": v for k, v in summary["categories"].items()},
            **{f"recall_{k.replace('_recall', '')}": v for k, v in summary["attributes"].items()}}


def curve_records(records: list[dict], stage: str | None = None) -> list[dict]:
    return [r for r in records if r.get("curve") and (stage is None or r.get("stage") == stage)]


def plot_curve(records: list[dict], path, title: str = "") -> Path:
    """Accuracy (overall and per category) against samples seen and against training CPU-hours, a row of
    panels per stage that logged a curve."""
    stages = list(dict.fromkeys(r["stage"] for r in curve_records(records)))
    rows = max(1, len(stages))
    fig, axes = figure((1100, 380 * rows), rows=rows, cols=2)
    for row, stage in zip(axes, stages):
        points = sorted(curve_records(records, stage), key=lambda r: r["samples"])
        keys = ["overall"] + sorted({k for r in points for k in r if k.startswith("acc_")})
        for ax, x_key, x_label in ((row[0], "samples", "samples seen"), (row[1], "cpu_hours", "training CPU-hours")):
            for key in keys:
                xs = [r[x_key] for r in points if key in r]
                ys = [r[key] for r in points if key in r]
                ax.plot(xs, ys, label=key.removeprefix("acc_"), lw=2.5 if key == "overall" else 1,
                        color="black" if key == "overall" else None, marker="o" if len(xs) < 20 else None, ms=3)
            ax.set_xlabel(x_label)
            ax.set_ylabel(f"{stage}: judge accuracy (val subset)")
            ax.set_ylim(0, 1)
            ax.grid(alpha=0.3)
        row[1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    return path
