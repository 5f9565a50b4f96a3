"""Which F.1 U-Net blocks carry style and which carry layout (as InstantStyle and B-LoRA did for SDXL):

    python benchmarks/style_blocks.py [--model NAME] [--scenes N] [--seeds K] [--steps 20]

Scenes: the validation split's `style` specs (never test), the first --scenes. For each, the plain prompt is the
caption without its style words and the styled prompt the caption. Every picture uses the plain prompt as the
base; a region over the whole image (which equals prompting it, tests/test_regions.py) carries the styled
prompt as its style context, read only in the named cross-attention blocks:

- plain: no styled prompt anywhere; the reference picture;
- all: the styled prompt in every block (the caption);
- one row per block: the styled prompt in that block only.

Measures, same seed and noise as `plain`, from the judge's detector (f1core.eval):
- style recall: share of the asked object styles that a detected object shows;
- layout kept: IoU of the detected objects' pixels with `plain`'s (1: the same layout);
- pixels changed: RMS difference from `plain` (0..1 RGB), over the whole picture and over the pixels that are
  object in both pictures (inside: how the objects' fill changed where the layout stayed).

A block that raises style recall while keeping the layout carries style; one that moves the objects carries
layout.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace

import numpy as np
import torch

from regional import Bench  # (also puts the pack and tests/ on sys.path)

from f1core.data.captions import caption  # noqa: E402
from f1core.data.splits import load_split  # noqa: E402
from f1core.eval.detector import detect  # noqa: E402
from f1core.eval.scoring import layout_iou  # noqa: E402
from f1core.regions import Region  # noqa: E402


def style_recall(spec, detection) -> list[bool]:
    return [any(d.style == obj.style for d in detection.objects) for obj in spec.objects if obj.style]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="f1-tiny-scenes.safetensors", help="an F.1 checkpoint the loader lists")
    parser.add_argument("--scenes", type=int, default=20, help="val-split style specs (the split has 20)")
    parser.add_argument("--seeds", type=int, default=1, help="seeds per scene")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--side", type=int, default=64)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    bench = Bench(args.model, args.side, args.steps)
    blocks = sorted({(name, number) for name, number, _ in
                     bench.nodes.attention_layers(bench.model.get_model_object("diffusion_model"))},
                    key=lambda b: (("input", "middle", "output").index(b[0]), b[1]))
    conditions = {"plain": frozenset(), "all": None, **{f"{n} {i}": frozenset({(n, i)}) for n, i in blocks}}
    whole = torch.ones(args.side, args.side)
    specs = [s for s in load_split("val") if s.category == "style"][:args.scenes]
    results = {name: {"style": [], "kept": [], "rms": [], "inside": []} for name in conditions}
    started = time.time()
    for index, spec in enumerate(specs):
        plain_spec = replace(spec, objects=tuple(replace(o, style=None) for o in spec.objects))
        plain, styled = bench.cond(caption(plain_spec)), bench.cond(caption(spec))
        for seed in range(index * args.seeds, (index + 1) * args.seeds):
            reference = None
            for name, chosen in conditions.items():
                if chosen == frozenset():
                    image, _ = bench.sample(bench.model, plain, seed)
                else:
                    region = Region(plain[0][0], whole, style_context=styled[0][0], style_blocks=chosen)
                    image, _ = bench.sample(bench.regional([region]), plain, seed)
                detection = detect(image)
                reference = reference or (image, detection)
                row = results[name]
                row["style"] += style_recall(spec, detection)
                row["kept"].append(layout_iou(reference[1], detection))
                squared = ((image - reference[0]) ** 2).mean(-1)
                row["rms"].append(float(np.sqrt(squared.mean())))
                both = reference[1].foreground & detection.foreground
                if both.any():
                    row["inside"].append(float(np.sqrt(squared[both].mean())))
        print(f"[{index + 1}/{len(specs)}] {caption(spec)} ({time.time() - started:.0f} s)", file=sys.stderr,
              flush=True)

    print(f"\n{len(specs)} val style scenes x {args.seeds} seeds, model {args.model}, {args.side}x{args.side}, "
          f"{args.steps} steps\n")
    print("| styled prompt in | style recall | style recall vs plain | layout kept (IoU) | pixels changed (RMS) | "
          "inside objects (RMS) |")
    print("|---|---|---|---|---|---|")
    base = float(np.mean(results["plain"]["style"]))
    for name, row in results.items():
        recall = float(np.mean(row["style"]))
        print(f"| {name} | {recall:.3f} | {recall - base:+.3f} | {np.mean(row['kept']):.3f} | "
              f"{np.mean(row['rms']):.4f} | {np.mean(row['inside']):.4f} |")
    print(f"\n{len(results['plain']['style'])} asked styles per row; {len(results['plain']['kept'])} pictures")


if __name__ == "__main__":
    main()
