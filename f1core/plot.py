"""Charts drawn with matplotlib's Agg canvas, without pyplot: no global backend switch or figure registry, so
drawing is safe inside a ComfyUI server beside other packs. `figure` gives the shared size and style (training
plots use it too); `to_image` turns a figure into a ComfyUI IMAGE; the sampling nodes' charts live here."""
from __future__ import annotations

import numpy as np
import torch

DPI = 100
NODE_PLOT_SIZE = (640, 400)  # pixels: readable on a node preview and in a saved image


def figure(size=NODE_PLOT_SIZE, rows: int = 1, cols: int = 1):
    """(figure, axes) of `size` pixels on an Agg canvas; one axes, or a [rows, cols] array of them."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(size[0] / DPI, size[1] / DPI), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig, fig.subplots() if (rows, cols) == (1, 1) else fig.subplots(rows, cols, squeeze=False)


def to_image(fig) -> torch.Tensor:
    """The drawn figure as a ComfyUI IMAGE: float [1, H, W, 3] in [0, 1]."""
    fig.tight_layout()
    fig.canvas.draw()
    rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3]
    return torch.from_numpy(rgb.astype(np.float32) / 255.0).unsqueeze(0)


def schedule_plot(schedules: dict[str, list[float]], title: str) -> torch.Tensor:
    """Each schedule's noise levels against step index, log sigma. The first schedule is the one in use (drawn
    with markers); the trailing sigma 0 is left off, as a log axis cannot show it."""
    from matplotlib.ticker import MaxNLocator

    fig, ax = figure()
    for index, (label, sigmas) in enumerate(schedules.items()):
        levels = [s for s in sigmas if s > 0]
        style = dict(lw=1.5, marker="o", ms=3) if index == 0 else dict(lw=1, ls="--", alpha=0.7)
        ax.plot(range(len(levels)), levels, label=label, **style)
    ax.set_yscale("log")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("step")
    ax.set_ylabel("sigma (noise level)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
    return to_image(fig)


def guidance_plot(sigmas: list[float], scales: list[float], switch_sigma: float, title: str) -> torch.Tensor:
    """Guidance scale against sigma, highest noise on the left as sampling runs; the structure phase (above
    `switch_sigma`) is shaded and scale 1 (no guidance) dotted."""
    fig, ax = figure()
    ax.axvspan(max(sigmas), switch_sigma, color="C1", alpha=0.12, lw=0, label="structure phase")
    ax.axvspan(switch_sigma, min(sigmas), color="C2", alpha=0.12, lw=0, label="texture phase")
    ax.axhline(1.0, color="grey", lw=1, ls=":", label="scale 1: no guidance")
    ax.plot(sigmas, scales, color="C0", lw=2, label="guidance scale")
    ax.set_xscale("log")
    ax.set_xlim(max(sigmas), min(sigmas))
    ax.set_ylim(bottom=min(0.0, *scales), top=max(scales) * 1.1 + 0.5)
    ax.set_xlabel("sigma (noise level), sampling runs left to right")
    ax.set_ylabel("CFG scale")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
    return to_image(fig)
