"""Summarise learning-curve runs (the sweep's variants, or any runs trained with `curve_every`) side by side.

    .venv/bin/python benchmarks/sweep_report.py runs/sweep/* [--stage diffusion] [--out benchmarks/sweep]

Prints a markdown table (a row per run: its last point, and accuracy per CPU-hour) and writes a chart of overall
val accuracy against training CPU-hours for every run. The last line is `best: NAME overall X at H CPU-hours`.
`--loss` adds a panel of the diffusion loss against the same CPU-hours (loss moves long before the judge does).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from f1core.train.curve import curve_records  # noqa: E402
from f1core.plot import figure  # noqa: E402
from f1core.train.logplot import read_jsonl  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--stage", default="diffusion")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/sweep"))
    parser.add_argument("--recalls", nargs="+", default=["colour", "background"],
                        help="the attribute recalls charted beside accuracy (colour, shape, object_count, background)")
    parser.add_argument("--loss", action="store_true", help="chart the diffusion loss against CPU-hours too")
    args = parser.parse_args(argv)

    curves, losses = {}, {}
    for run in args.runs:
        records = read_jsonl(run / "log.jsonl")
        points = sorted(curve_records(records, args.stage), key=lambda r: r["cpu_hours"])
        if points:
            curves[run.name] = points
            losses[run.name] = loss_by_cpu_hours(records, args.stage, points[-1]["samples"] // points[-1]["step"])
    if not curves:
        print(f"no {args.stage} learning-curve points in {[str(r) for r in args.runs]}", file=sys.stderr)
        return 1

    keys = sorted({k for points in curves.values() for p in points for k in p if k.startswith("acc_")})
    print("| run | CPU-hours | samples | overall | " + " | ".join(k.removeprefix("acc_") for k in keys) + " |")
    print("|---" * (4 + len(keys)) + "|")
    for name, points in curves.items():
        last = points[-1]
        print(f"| {name} | {last['cpu_hours']:.2f} | {last['samples']} | {last['overall']:.3f} | "
              + " | ".join(f"{last.get(k, float('nan')):.2f}" for k in keys) + " |")

    # accuracy, and the attribute recalls that move before whole scenes pass (early runs rank by them)
    panels = (("overall", "judge accuracy"),
              *((f"recall_{name}", f"{name.replace('_', ' ')} recall") for name in args.recalls))
    fig, axes = figure((1200 + 300 * args.loss, 380), cols=len(panels) + args.loss)
    if args.loss:
        ax = axes[0][-1]
        for name, (hours, loss) in losses.items():
            ax.plot(hours, loss, label=name)
        ax.set_xlabel("training CPU-hours")
        ax.set_ylabel("diffusion loss (mean of 250 steps)")
        ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both")
    for ax, (key, label) in zip(axes[0], panels):
        for name, points in curves.items():
            ax.plot([p["cpu_hours"] for p in points], [p.get(key, float("nan")) for p in points], marker="o", ms=3,
                    label=name)
        ax.set_xlabel("training CPU-hours")
        ax.set_ylabel(f"{label}, 98 val scenes")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out.with_suffix(".png"))
    print(f"chart: {args.out.with_suffix('.png')}")
    name, points = max(curves.items(), key=lambda item: item[1][-1]["overall"])
    print(f"best: {name} overall {points[-1]['overall']:.3f} at {points[-1]['cpu_hours']:.2f} CPU-hours")
    return 0


def loss_by_cpu_hours(records: list[dict], stage: str, batch_size: int, window: int = 250):
    """The stage's diffusion loss, a mean per `window` steps, against training CPU-hours. Each log line's
    training time is its steps' images over its throughput, so the curve's scoring time is left out, as it is
    from the curve's own CPU-hours."""
    hours, loss, seconds, previous, pending = [], [], 0.0, None, []
    for record in records:
        if record.get("stage") != stage or "diffusion_loss" not in record:
            continue
        if previous is not None and record["step"] > previous:
            seconds += (record["step"] - previous) * batch_size / record["images_per_s"]
        previous = record["step"]
        pending.append(record["diffusion_loss"])
        if record["step"] % window == 0:
            hours.append(seconds / 3600)
            loss.append(sum(pending) / len(pending))
            pending = []
    return hours, loss


if __name__ == "__main__":
    sys.exit(main())
