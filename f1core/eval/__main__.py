"""python -m f1core.eval {selftest, score, model, diagnose, export, fid} — see --help of each."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..data.captions import caption
from ..data.scenes import render_scene
from ..data.splits import SPLIT_SIZES, load_split
from .detector import as_rgb_array, detect
from .diagnose import denoising_error, diagnose, diagnosis_table, judge, truth_and_reconstruction
from .evaluate import IMAGE_SUFFIXES, evaluate_folder, evaluate_renderer
from .metrics import (FID_WEIGHTS_ENV, InceptionFeatures, InceptionUnavailable, detector_features, fid,
                      frechet_distance_of_features)
from .report import write_report
from .selftest import REQUIRED_ACCURACY, format_selftest, run_selftest


def _selftest(args) -> int:
    series, clean, ok = run_selftest(args.size, args.out, progress=not args.no_progress)
    print(f"Detector self-test: test split, {len(clean.items)} scenes rendered at {args.size}x{args.size}")
    print(format_selftest(series, clean))
    for name, values in series.items():
        if name != "clean":
            print(f"robustness {name}: mean over categories {np.mean(list(values.values())):.3f}")
    print(f"clean renders, every category >= {REQUIRED_ACCURACY}: {'yes' if ok else 'NO'}")
    if args.out:
        print(f"report: {Path(args.out) / 'report.md'}")
    print(f"overall: {clean.overall:.4f}")
    return 0 if ok else 1


def _score(args) -> int:
    report = evaluate_folder(args.folder, progress=not args.no_progress)
    out = args.out or args.folder
    paths = write_report(report, out, title=f"Compositional evaluation of {args.folder}")
    for category, value in report.by_category().items():
        print(f"{category:20s} {value:.3f}")
    print(f"report: {paths['markdown']}")
    print(f"overall: {report.overall:.4f}")
    return 0


def _model(args) -> int:
    """Render a split's captions through an F.1 checkpoint at default sampler settings, and score them."""
    from ..pipeline import F1Pipeline, upscale_for_detector
    from .metrics import psnr, ssim

    pipe = F1Pipeline.from_file(args.checkpoint)
    specs = load_split(args.split)[:args.limit]

    seeds = iter(range(args.seed, args.seed + len(specs)))  # one seed per scene, in split order

    def render(spec):
        image = pipe([caption(spec)], steps=args.steps, cfg=args.cfg, seed=next(seeds))
        return upscale_for_detector(image)[0]

    report = evaluate_renderer(render, specs, progress=not args.no_progress)
    # the VAE alone, on the same split's ground-truth renders at the model's resolution
    truth, recon = truth_and_reconstruction(pipe, specs)
    measures = {"vae_psnr_db": float(psnr(recon, truth)), "vae_ssim": float(ssim(recon, truth))}
    # the same judge on the VAE's reconstructions: no U-Net can score above what its decoder can draw
    ceiling = judge(recon, specs)
    measures["vae_reconstruction_overall"] = ceiling.overall
    out = args.out or Path("output") / f"eval-{Path(args.checkpoint).stem}-{args.split}"
    paths = write_report(report, out, title=f"{Path(args.checkpoint).name} on the {args.split} split "
                                             f"({args.steps} steps, cfg {args.cfg})", measures=measures,
                         label="model", extra_series={"VAE reconstruction (ceiling)": ceiling.by_category()})
    print(f"{'category':20s} model  VAE reconstruction")
    for category, value in report.by_category().items():
        print(f"{category:20s} {value:.3f}  {ceiling.by_category().get(category, 0.0):.3f}")
    print(f"vae psnr (dB)        {measures['vae_psnr_db']:.2f}")
    print(f"vae ssim             {measures['vae_ssim']:.4f}")
    print(f"vae reconstruction overall: {ceiling.overall:.4f}")
    print(f"report: {paths['markdown']}")
    print(f"overall: {report.overall:.4f}")
    return 0


def _diagnose(args) -> int:
    """The judge along the path from ground truth to text-to-image (f1core.eval.diagnose)."""
    from ..pipeline import F1Pipeline

    pipe = F1Pipeline.from_file(args.checkpoint)
    specs = load_split(args.split)[:args.limit]
    reports = diagnose(pipe, specs, args.denoise, steps=args.steps, cfg=args.cfg, seed=args.seed)
    errors = denoising_error(pipe, specs, seed=args.seed)
    others = denoising_error(pipe, specs, seed=args.seed, other_captions=True)
    table = diagnosis_table(reports) + "\n\nHeld-out denoising error (latent MSE, unguided, fixed noise), with each " \
        "scene's caption and with another scene's (their ratio: how much the U-Net reads the text):\n\n" + \
        "| sigma | " + " | ".join(f"{s:g}" for s in errors) + " |\n|" + "---|" * (len(errors) + 1) + \
        "\n| MSE | " + " | ".join(f"{e:.4f}" for e in errors.values()) + " |" + \
        "\n| MSE, another caption | " + " | ".join(f"{e:.4f}" for e in others.values()) + " |" + \
        "\n| ratio | " + " | ".join(f"{others[s] / errors[s]:.2f}" for s in errors) + " |"
    out = Path(args.out or Path("output") / f"diagnose-{Path(args.checkpoint).stem}-{args.split}")
    out.mkdir(parents=True, exist_ok=True)
    title = (f"# Where {Path(args.checkpoint).name} loses the scene\n\n{args.split} split, {len(specs)} scenes, "
             f"{args.steps} steps, cfg {args.cfg}\n")
    (out / "diagnose.md").write_text(f"{title}\n{table}\n")
    (out / "diagnose.json").write_text(json.dumps(
        {name: {"overall": r.overall, "categories": r.by_category(), "attributes": r.to_dict()["attributes"]}
         for name, r in reports.items()} | {"denoising_error": {f"{s:g}": e for s, e in errors.items()},
                                                    "denoising_error_other_captions": {f"{s:g}": e for s, e in
                                                                                       others.items()}}, indent=2))
    print(table)
    print(f"report: {out / 'diagnose.md'}")
    return 0


def _export(args) -> int:
    specs = load_split(args.split)[:args.limit]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for i, spec in enumerate(specs):
        sample = render_scene(spec, args.size, seed=i)
        Image.fromarray((sample.image.numpy() * 255).round().astype(np.uint8)).save(out / f"{i:04d}.png")
        (out / f"{i:04d}.json").write_text(json.dumps(spec.to_dict() | {"caption": caption(spec)}))
    print(f"wrote {len(specs)} images with sidecar specs to {out}")
    return 0


def _load_folder(folder) -> list[np.ndarray]:
    paths = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if len(paths) < 2:
        raise ValueError(f"{folder}: need at least 2 images for a Fréchet distance")
    return [as_rgb_array(Image.open(p)) for p in paths]


def _fid(args) -> int:
    real, fake = _load_folder(args.real), _load_folder(args.fake)
    feats = [torch.stack([detector_features(detect(x)) for x in images]) for images in (real, fake)]
    print(f"detector Fréchet distance: {frechet_distance_of_features(*feats):.4f}")
    try:
        extractor = InceptionFeatures(args.inception_weights)
    except InceptionUnavailable as err:
        print(err)
        return 0
    def batch(images):
        size = images[0].shape[:2]
        return torch.stack([torch.from_numpy(np.array(Image.fromarray((x * 255).astype(np.uint8)).resize(
            size[::-1]))).permute(2, 0, 1).float() / 255 for x in images])
    print(f"{extractor.name}: {fid(batch(real), batch(fake), extractor):.4f} (Inception weights: {extractor.weights})")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m f1core.eval", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("selftest", help="render the test split and check the detector on it")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--out", help="also write report.json/.md and plots here")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(run=_selftest)
    p = sub.add_parser("score", help="score a folder of images with sidecar .json specs")
    p.add_argument("folder")
    p.add_argument("--out", help="report folder (default: the image folder)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(run=_score)
    p = sub.add_parser("model", help="render a split through an F.1 checkpoint and score it (and its VAE)")
    p.add_argument("checkpoint")
    p.add_argument("--split", choices=list(SPLIT_SIZES), default="test")
    p.add_argument("--limit", type=int)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--cfg", type=float, default=4.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="report folder (default: output/eval-<checkpoint>-<split>)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(run=_model)
    p = sub.add_parser("diagnose", help="score ground truth, VAE reconstruction, img2img and text-to-image "
                                        "side by side: which stage loses the scene")
    p.add_argument("checkpoint")
    p.add_argument("--split", choices=list(SPLIT_SIZES), default="val")
    p.add_argument("--limit", type=int)
    p.add_argument("--denoise", type=float, nargs="+", default=[0.3, 0.5, 0.7, 0.9])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--cfg", type=float, default=4.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="report folder (default: output/diagnose-<checkpoint>-<split>)")
    p.set_defaults(run=_diagnose)
    p = sub.add_parser("export", help="render a fixed split as images with sidecar specs")
    p.add_argument("--split", choices=list(SPLIT_SIZES), default="test")
    p.add_argument("--out", required=True)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--limit", type=int)
    p.set_defaults(run=_export)
    p = sub.add_parser("fid", help="Fréchet distances between two image folders")
    p.add_argument("real")
    p.add_argument("fake")
    p.add_argument("--inception-weights",
                   help="local Inception-v3 weights: the standard FID file gives FID, a torchvision inception_v3 "
                        f"state dict FD-Inception (not published FID); default ${FID_WEIGHTS_ENV}, else the FID "
                        "file in the pack's models/ or torch's hub cache; skipped without")
    p.set_defaults(run=_fid)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
