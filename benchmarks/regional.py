"""Regional prompts (issue 12), side by side in one run on one model:

    python benchmarks/regional.py [--model NAME] [--scenes N] [--steps 20]

Scenes: the test split's two_objects, position and colour_attribution specs (the first --scenes of each; --split val
to compare candidate models without touching test).
Masks, two sources per scene: the scene engine's ground-truth instance masks (render_scene of the spec; the
instances of one object merged) and F1LayoutFromPrompt's masks of its caption. Conditions, same seed and noise:

- none: the caption alone;
- core_mask: core's ConditioningSetMask (latent composition): each object's phrase under its mask, the caption
  under the uncovered rest, combined (a model pass per prompt and step);
- f1_regions: F1Region + F1ApplyRegions (cross-attention, one pass), the caption as the base prompt;
- f1_decoupled: F1DecoupledTextEncode + F1ApplyRegions: each entity encoded on its own under its mask, style
  words only in the default style blocks, the layout prompt (no attributes) as the base.

All run in-process through core's sampler (dpmpp_2m, Karras, cfg 4) with the pack's nodes. Measures, per
condition and mask source, over the asked objects:

- colour_recall: the object is detected with its centroid inside its mask and with its colour (its shape when
  the spec names no colour);
- miou: box IoU between the mask's bounding box and the best-matching detected object's (0 if none matches);
- judge accuracy per category (F1Evaluate's detector and scoring on the whole spec);
- s/step: sampling wall time over steps.

Decoupling (ground-truth masks; none, f1_regions, f1_decoupled): the scene again with the same seed and only
the first object's style word changed (none -> striped, then the next style), then only its colour (the next
palette colour no other object has); the IoU of the detected objects' pixels between the two pictures.

"none" does not use the masks; its recall and mIoU are measured against each source's masks. Ceilings, with the
ground-truth masks and no sampling: the scene's own render (the detector's ceiling), and its VAE reconstruction
(what the model's decoder can draw at all). The last line is `region_colour_recall: X` (f1_regions, ground-truth
masks).
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from comfy_inprocess import import_comfy, import_pack  # noqa: E402
from f1core.data.captions import caption  # noqa: E402
from f1core.data.scenes import render_scene  # noqa: E402
from f1core.data.spec import COLOURS, STYLES  # noqa: E402
from f1core.data.splits import load_split  # noqa: E402
from f1core.eval.detector import as_rgb_array, detect  # noqa: E402
from f1core.eval.scoring import layout_iou, score_detection  # noqa: E402
from f1core.regions import STYLE_BLOCKS, layout_from_prompt  # noqa: E402

CATEGORIES = ("two_objects", "position", "colour_attribution")
CONDITIONS = ("none", "core_mask", "f1_regions", "f1_decoupled")
SOURCES = ("truth", "layout")
CHANGES = ("style", "colour")
DECOUPLING = ("none", "f1_regions", "f1_decoupled")
CEILINGS = ("scene render", "VAE reconstruction")
CFG = 4.0


class Bench:
    """The shipped nodes in-process on one model: encode (cached), regions, and sampling at one size."""

    def __init__(self, model: str, side: int, steps: int):
        import_comfy()
        import comfy.sample
        loaders, text, latent = (import_pack(f"nodes.{m}") for m in ("nodes_loaders", "nodes_text", "nodes_latent"))
        self.nodes = import_pack("nodes.nodes_regions")
        self.text, self.comfy_sample = text, comfy.sample
        self.model, self.clip, self.vae = loaders.F1CheckpointLoader.execute(model).result
        self.latent = latent.F1EmptyLatent.execute(self.vae, side, side, 1).result[0]["samples"]
        self.side, self.steps = side, steps
        self._encoded = {}

    def cond(self, phrase: str):
        if phrase not in self._encoded:
            self._encoded[phrase] = self.text.F1TextEncode.execute(self.clip, phrase).result[0]
        return self._encoded[phrase]

    def regional(self, regions):
        """The model with regions in cross-attention (base_weight 0, no feather or grow, all steps)."""
        return self.nodes.F1ApplyRegions.execute(self.model, regions, 0.0, 0.0, 0, 1.0, 0.0).result[0]

    def sample(self, model, positive, seed: int):
        """(RGB [H, W, 3] in 0..1, seconds per step)."""
        noise = self.comfy_sample.prepare_noise(self.latent, seed)
        start = time.perf_counter()
        out = self.comfy_sample.sample(model, noise, self.steps, CFG, "dpmpp_2m", "karras", positive, self.cond(""),
                                       self.latent, seed=seed, disable_pbar=True)
        seconds = (time.perf_counter() - start) / self.steps
        return as_rgb_array(self.vae.decode(out)[0]), seconds

    def reconstruct(self, image: torch.Tensor) -> np.ndarray:
        """The VAE's encode and decode of an RGB [H, W, 3] image."""
        return as_rgb_array(self.vae.decode(self.vae.encode(image[None]))[0])


def box_iou(a, b) -> float:
    """Boxes (x0, y0, x1, y1), exclusive ends."""
    w = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union if union else 0.0


def mask_box(mask: torch.Tensor):
    ys, xs = torch.nonzero(mask > 0.5, as_tuple=True)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def object_scores(spec, detection, masks) -> list[tuple[bool, float]]:
    """(colour in region, box IoU) per asked object."""
    out = []
    for obj, mask in zip(spec.objects, masks):
        same = [d for d in detection.objects
                if (d.colour == obj.colour if obj.colour else d.shape == obj.shape)]
        h, w = mask.shape
        inside = any(mask[min(int(d.y * h), h - 1), min(int(d.x * w), w - 1)] > 0.5 for d in same)
        iou = max((box_iou(mask_box(mask), d.bbox) for d in same), default=0.0)
        out.append((inside, iou))
    return out


def changed(spec, change: str):
    """The spec with only its first object's style (or colour) changed."""
    first = spec.objects[0]
    if change == "style":
        value = "striped" if first.style is None else STYLES[(STYLES.index(first.style) + 1) % len(STYLES)]
        return replace(spec, objects=(replace(first, style=value), *spec.objects[1:]))
    taken = {o.colour for o in spec.objects}
    names = list(COLOURS)
    start = names.index(first.colour) + 1 if first.colour else 0
    value = next(name for name in names[start:] + names[:start] if name not in taken)
    return replace(spec, objects=(replace(first, colour=value), *spec.objects[1:]))


def save_picture(path: Path, pictured, model: str):
    """Columns: scenes; rows: the masks (one colour per object), no masks, F1ApplyRegions over the masks."""
    import textwrap

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    palette = torch.tensor([[0.9, 0.2, 0.2], [0.2, 0.4, 0.9], [0.2, 0.75, 0.3], [0.95, 0.8, 0.2]])
    rows = ("masks", "no masks", "F1ApplyRegions")
    fig, axes = plt.subplots(len(rows), len(pictured), figsize=(2.3 * len(pictured), 2.3 * len(rows) + 0.6),
                             squeeze=False)
    for column, (spec, masks, plain, regional) in enumerate(pictured):
        shown = 1 - (masks[..., None] * (1 - palette[:len(masks), None, None])).amax(0)
        for row, image in enumerate((shown.numpy(), plain, regional)):
            ax = axes[row, column]
            ax.imshow(image, interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            if column == 0:
                ax.set_ylabel(rows[row])
        axes[0, column].set_title("\n".join(textwrap.wrap(caption(spec), 24)), fontsize=8)
    fig.suptitle(f"{model}: the same seed without and with regions (ground-truth masks)", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="f1-tiny-scenes.safetensors",
                        help="an F.1 checkpoint the loader lists (default: the shipped default, trained with regions)")
    parser.add_argument("--scenes", type=int, default=40, help="scenes per category (the split has 40-48)")
    parser.add_argument("--split", default="test", choices=("val", "test"), help="val to choose between models")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--side", type=int, default=64, help="image side (the shipped default draws 64x64)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--picture", type=Path, help="also save the first scene of each category as a PNG: "
                                                      "its masks, no masks, and F1ApplyRegions over the masks")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    bench = Bench(args.model, args.side, args.steps)
    import nodes as core_nodes  # core's nodes.py, on the path once Bench has imported ComfyUI
    nodes, side = bench.nodes, args.side

    def run(condition, spec, masks, seed):
        """(image, s/step) of one condition; masks [objects, side, side]."""
        prompt = caption(spec)
        if condition == "none":
            return bench.sample(bench.model, bench.cond(prompt), seed)
        if condition == "f1_decoupled":
            positive, regions, _, _ = nodes.F1DecoupledTextEncode.execute(
                bench.clip, prompt, side, side, STYLE_BLOCKS, 0.0, 1.0, masks).result
            return bench.sample(bench.regional(regions), positive, seed)
        phrases = [phrase for phrase, _ in layout_from_prompt(prompt, side, side)]
        if condition == "core_mask":
            uncovered = (1 - masks.amax(0)).clamp(0, 1)
            positive = core_nodes.ConditioningSetMask().append(bench.cond(prompt), uncovered, "default", 1.0)[0]
            for phrase, mask in zip(phrases, masks):
                positive += core_nodes.ConditioningSetMask().append(bench.cond(phrase), mask, "default", 1.0)[0]
            return bench.sample(bench.model, positive, seed)
        chain = None
        for phrase, mask in zip(phrases, masks):
            chain = nodes.F1Region.execute(bench.clip, phrase, mask, 1.0, chain).result[0]
        return bench.sample(bench.regional(chain), bench.cond(prompt), seed)

    specs = [s for c in CATEGORIES for s in [x for x in load_split(args.split) if x.category == c][:args.scenes]]
    rows = {(c, s): {"objects": [], "judge": {k: [] for k in CATEGORIES}, "step_s": []}
            for c in CONDITIONS for s in SOURCES}
    kept = {(c, change): [] for c in DECOUPLING for change in CHANGES}
    ceilings = {name: {"objects": [], "judge": {k: [] for k in CATEGORIES}} for name in CEILINGS}
    pictured = []
    started = time.time()
    for index, spec in enumerate(specs):
        prompt = caption(spec)
        layout = layout_from_prompt(prompt, side, side)
        render = render_scene(spec, side, side, seed=index)
        masks = {"truth": render.object_masks(), "layout": torch.stack([m for _, m in layout])}
        for name, image in zip(CEILINGS, (as_rgb_array(render.image), bench.reconstruct(render.image))):
            detection = detect(image)
            ceilings[name]["objects"] += object_scores(spec, detection, masks["truth"])
            ceilings[name]["judge"][spec.category].append(score_detection(spec, detection).passed)
        images = {("none", source): run("none", spec, None, index) for source in SOURCES[:1]}
        images[("none", "layout")] = images[("none", "truth")]
        for condition in CONDITIONS[1:]:
            for source in SOURCES:
                images[(condition, source)] = run(condition, spec, masks[source], index)
        detections = {key: detect(image) for key, (image, _) in images.items()}
        for (condition, source), (_, step_s) in images.items():
            row = rows[(condition, source)]
            row["objects"] += object_scores(spec, detections[(condition, source)], masks[source])
            row["judge"][spec.category].append(score_detection(spec, detections[(condition, source)]).passed)
            row["step_s"].append(step_s)
        for condition in DECOUPLING:
            for change in CHANGES:
                image, _ = run(condition, changed(spec, change), masks["truth"], index)
                kept[(condition, change)].append(layout_iou(detections[(condition, "truth")], detect(image)))
        if args.picture and spec.category not in {p[0].category for p in pictured}:
            pictured.append((spec, masks["truth"], images[("none", "truth")][0], images[("f1_regions", "truth")][0]))
        print(f"[{index + 1}/{len(specs)}] {prompt} ({time.time() - started:.0f} s)", file=sys.stderr, flush=True)
    if args.picture:
        save_picture(args.picture, pictured, args.model)

    counts = {c: sum(s.category == c for s in specs) for c in CATEGORIES}
    print(f"\n{len(specs)} scenes ({', '.join(f'{c} {n}' for c, n in counts.items())}), model {args.model}, "
          f"{side}x{side}, {args.steps} steps, seed = scene index; style blocks {STYLE_BLOCKS}\n")
    print("| condition | masks | colour-in-region recall | region mIoU (box) | "
          + " | ".join(f"judge {c}" for c in CATEGORIES) + " | s/step |")
    print("|---|---|---|---|" + "---|" * len(CATEGORIES) + "---|")
    summary = {}

    def measures(row) -> tuple[float, float, str]:
        recall = float(np.mean([inside for inside, _ in row["objects"]]))
        miou = float(np.mean([iou for _, iou in row["objects"]]))
        return recall, miou, " | ".join(f"{np.mean(v):.2f}" for v in row["judge"].values())

    for name, row in ceilings.items():
        recall, miou, judge = measures(row)
        print(f"| {name} (ceiling) | truth | {recall:.3f} | {miou:.3f} | {judge} | |")
    for (condition, source), row in rows.items():
        recall, miou, judge = measures(row)
        summary[(condition, source)] = (recall, miou, float(np.mean(row["step_s"])))
        print(f"| {condition} | {source} | {recall:.3f} | {miou:.3f} | {judge} | {np.mean(row['step_s']):.4f} |")
    base_step = summary[("none", "truth")][2]
    for condition in CONDITIONS[1:]:
        for source in SOURCES:
            recall, miou, step = summary[(condition, source)]
            print(f"{condition} ({source}): recall {recall - summary[('none', source)][0]:+.3f}, mIoU "
                  f"{miou - summary[('none', source)][1]:+.3f} vs none; time per step {step / base_step - 1:+.0%}")
    print("\nLayout kept (detected-object mask IoU, same seed, ground-truth masks):\n")
    print("| condition | only the style word changed | only a colour changed |")
    print("|---|---|---|")
    for condition in DECOUPLING:
        print(f"| {condition} | " + " | ".join(f"{np.mean(kept[(condition, c)]):.3f}" for c in CHANGES) + " |")
    print(f"region_colour_recall: {summary[('f1_regions', 'truth')][0]:.3f}")


if __name__ == "__main__":
    main()
