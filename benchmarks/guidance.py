"""Guidance on the trained default, judged: a CFG sweep and the guidance order (issue 11, item 7).

    python benchmarks/guidance.py --split val --scenes 10    # the tuning run
    python benchmarks/guidance.py --scenes 10                # test, to report

Scenes: the first N of each category of a split, scene i seeded i under every condition, so differences carry a
paired standard error. Sampling: F1Pipeline, DPM-Solver++(2M), 20 Karras steps. Conditions:
  cfg S               a constant scale S (core's CFG; 4 is the pack's default);
  fidelity F, ORDER   f1core.guidance.fidelity_to_curve(F, ORDER), the curve F1DynamicGuider follows:
                      structure_first guides hardest at high noise, texture_first at low noise.
The last line is `structure_first_minus_texture_first: X`, the mean over the fidelities of the two orders'
accuracy difference.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from adaptive import Run, mix_specs, save_accuracy_chart  # noqa: E402  (paired SEs, scenes, the chart's frame)

from f1core.data.captions import caption  # noqa: E402
from f1core.eval.diagnose import judge  # noqa: E402
from f1core.guidance import ORDERS, fidelity_to_curve  # noqa: E402
from f1core.pipeline import F1Pipeline  # noqa: E402
from f1core.plot import figure  # noqa: E402

SHIPPED = ROOT / "models" / "f1-tiny-scenes.safetensors"
STEPS = 20
BATCH = 50
DEFAULT_CFG = 4.0
SCALES = (1.5, 2.5, 4.0, 5.5, 7.0, 9.0)
FIDELITIES = (0.25, 0.5, 0.75)
SHOWN = ("position", "two_objects", "counting", "colour_attribution")


def render(pipe, specs, cfg):
    prompts = [caption(s) for s in specs]
    start, images = time.process_time(), []
    for b in range(0, len(specs), BATCH):
        chunk = list(range(b, min(b + BATCH, len(specs))))
        images.append(pipe([prompts[i] for i in chunk], seed=chunk, steps=STEPS, cfg=cfg))
    return torch.cat(images), time.process_time() - start


def judged(pipe, specs, kind, setting, cfg) -> tuple[Run, dict]:
    images, seconds = render(pipe, specs, cfg)
    report = judge(images, specs)
    run = Run(kind, setting, [STEPS] * len(specs), [i.score.passed for i in report.items], seconds / len(specs))
    print(f"  {kind:8s} {setting:26s} acc {run.accuracy:.3f}  {run.seconds:.3f} CPU s/image", flush=True)
    return run, report.by_category()


def table(rows, reference: Run) -> str:
    """rows: (run, accuracy per category) pairs."""
    lines = ["| guidance | setting | accuracy ± SE | Δ vs cfg 4 ± paired SE | " + " | ".join(SHOWN) + " |",
             "|---|---|---|---|" + "---|" * len(SHOWN)]
    for run, categories in rows:
        delta, se = run.paired(reference)
        lines.append(f"| {run.sampler} | {run.setting} | {run.accuracy:.3f} ± {run.stderr:.3f} | {delta:+.3f} ± "
                     f"{se:.3f} | " + " | ".join(f"{categories.get(c, 0.0):.2f}" for c in SHOWN) + " |")
    return "\n".join(lines)


def chart(scale_rows: dict, order_rows: dict, path: Path, title: str):
    """scale_rows: {scale: (run, categories)}; order_rows: {(fidelity, order): (run, categories)}."""
    fig, ax = figure((900, 480))
    runs = [run for run, _ in scale_rows.values()]
    ax.errorbar(list(scale_rows), [r.accuracy for r in runs], yerr=[r.stderr for r in runs],
                marker="o", capsize=2, label="constant cfg")
    for order in ORDERS:  # each fidelity's curve plotted at its peak scale
        curves = [fidelity_to_curve(f, order) for f in FIDELITIES]
        runs = [order_rows[f, order][0] for f in FIDELITIES]
        ax.errorbar([max(c.start, c.end) for c in curves], [r.accuracy for r in runs],
                    yerr=[r.stderr for r in runs], marker="s", capsize=2,
                    label=f"fidelity curve, {order} (at its peak scale)")
    return save_accuracy_chart(fig, ax, "guidance scale", title, path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default=str(SHIPPED))
    parser.add_argument("--split", choices=("val", "test"), default="test")
    parser.add_argument("--scenes", type=int, default=10, help="scenes per category")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--chart", help="where to save the chart (default benchmarks/guidance-SPLIT.png)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    specs = mix_specs(args.split, args.scenes, categories=None)
    pipe = F1Pipeline.from_file(args.checkpoint)
    print(f"{Path(args.checkpoint).name}, {args.split} split: {len(specs)} scenes ({args.scenes} per category), "
          f"dpmpp_2m {STEPS} steps", flush=True)
    scale_rows = {s: judged(pipe, specs, "cfg", f"{s:g}", s) for s in SCALES}
    order_rows = {(f, order): judged(pipe, specs, "fidelity", f"{f:g}, {order}", fidelity_to_curve(f, order))
                  for f in FIDELITIES for order in ORDERS}
    reference = scale_rows[DEFAULT_CFG][0]
    print()
    print(table([*scale_rows.values(), *order_rows.values()], reference))
    gaps = []
    for f in FIDELITIES:
        first, second = (order_rows[f, order][0] for order in ORDERS)
        delta, se = first.paired(second)
        gaps.append(delta)
        print(f"fidelity {f:g}: structure_first - texture_first {delta:+.3f} ± {se:.3f} (paired SE)")
    path = Path(args.chart) if args.chart else ROOT / "benchmarks" / f"guidance-{args.split}.png"
    title = f"{Path(args.checkpoint).name}, {args.split}, {len(specs)} scenes"
    print(f"chart: {chart(scale_rows, order_rows, path, title)}")
    print(f"structure_first_minus_texture_first: {sum(gaps) / len(gaps):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
