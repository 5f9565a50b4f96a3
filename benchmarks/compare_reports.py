"""Side-by-side table of `python -m f1core.eval model` reports (per category, the rare subset, overall, VAE).

    python benchmarks/compare_reports.py output/eval-f1 output/eval-baseline --names F.1 SD-style
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from f1core.eval.evaluate import attribute_recall  # noqa: E402
from f1core.eval.report import markdown_table  # noqa: E402


def load_series(report_dir) -> dict[str, float]:
    data = json.loads((Path(report_dir) / "report.json").read_text())
    attributes = data.get("attributes") or attribute_recall(data["items"])  # reports written before it existed
    return data["categories"] | {"overall": data["overall"]} | attributes | data.get("measures", {})


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reports", nargs="+", help="report folders (each holds report.json)")
    parser.add_argument("--names", nargs="+", help="column names, one per report (default: folder names)")
    args = parser.parse_args(argv)
    names = args.names or [Path(r).name for r in args.reports]
    if len(names) != len(args.reports):
        parser.error(f"--names: got {len(names)} names for {len(args.reports)} reports")
    table = markdown_table({name: load_series(r) for name, r in zip(names, args.reports)})
    print(table)
    return table


if __name__ == "__main__":
    main()
