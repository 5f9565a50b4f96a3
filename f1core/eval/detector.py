"""Reads a picture back into objects (shape, colour, style, size, position) with no help from the generator.

Pipeline: background from the border pixels; foreground where the Lab distance to it is large; connected
components; shape by the best area-matched overlap with the detector's own shape prototypes; colour by the
most saturated pixels' nearest palette entry in Lab; style from hollowness and the spatial structure of the
colour variation inside. Everything is measured relative to the object, so soft diffusion outputs still read.
Verified (python -m f1core.eval selftest) at 128 px and above; below ~100 px thin outlines of small objects fade.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image, ImageDraw
from scipy import ndimage

from ..data.spec import BACKGROUNDS, COLOURS, SIZES

FOREGROUND_DELTA_E = 20.0   # half the smallest colour-to-background distance in the palette
MIN_AREA_FRACTION = 0.0012  # smaller components are specks
HOLLOW_CORE = 0.6           # the core: silhouette pixels at least this share of its inradius from the edge
NOISE_SPREAD = 1.0          # ... plus the spread the background itself shows (noise)
FLAT_SPREAD = 12.0          # Lab spread (5th-95th percentile) below which the fill is flat
GRADIENT_R2 = 0.6           # a planar ramp explains at least this share of a gradient's colour variation
CORE_DEPTH = 0.35           # fills are judged on pixels at least this share of the inradius inside
TOP_CHROMA = 0.3            # colour is read from the most saturated share of the pixels


def _regular(n: int, start: float, radii=(1.0,)) -> list[tuple[float, float]]:
    return [(radii[k % len(radii)] * math.cos(start + 2 * math.pi * k / n),
             radii[k % len(radii)] * math.sin(start + 2 * math.pi * k / n)) for k in range(n)]


# The detector's own idea of each shape (unit circumradius, y down); several variants allow some slack.
PROTOTYPES = {
    "circle": [_regular(64, 0.0)],
    "square": [_regular(4, math.pi / 4)],
    "triangle": [_regular(3, -math.pi / 2)],
    "star": [_regular(10, -math.pi / 2, (1.0, 0.42)), _regular(10, -math.pi / 2, (1.0, 0.5))],
    "hexagon": [_regular(6, 0.0), _regular(6, math.pi / 6)],
    "diamond": [[(0, -1), (0.7, 0), (0, 1), (-0.7, 0)], [(0, -1), (1, 0), (0, 1), (-1, 0)]],
}


def _polygon_area_centroid(verts) -> tuple[float, float, float]:
    v = np.asarray(verts, dtype=np.float64)
    x, y = v[:, 0], v[:, 1]
    xn, yn = np.roll(x, -1), np.roll(y, -1)
    cross = x * yn - xn * y
    area = cross.sum() / 2
    return abs(area), ((x + xn) * cross).sum() / (6 * area), ((y + yn) * cross).sum() / (6 * area)


_PROTOTYPE_GEOMETRY = {name: [(verts, *_polygon_area_centroid(verts)) for verts in variants]
                       for name, variants in PROTOTYPES.items()}


@dataclass(frozen=True)
class DetectedObject:
    shape: str
    colour: str
    style: str
    size: str
    x: float              # centroid, fraction of the width
    y: float              # centroid, fraction of the height
    radius: float         # fitted circumradius in pixels
    area: int             # silhouette pixels
    shape_iou: float      # overlap with the best prototype: a confidence
    bbox: tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive)
    lab: tuple[float, float, float] = field(default=(0.0, 0.0, 0.0))  # measured colour


@dataclass(frozen=True)
class Detection:
    objects: list[DetectedObject]
    background: str
    width: int
    height: int
    # [height, width] bool: the pixels of the detected objects (their components), for comparing layouts
    foreground: np.ndarray | None = field(default=None, repr=False, compare=False)


def as_rgb_array(image) -> np.ndarray:
    """[H, W, 3] float32 in [0, 1] from a PIL image, a uint8/float array or a [H,W,3] / [3,H,W] tensor."""
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    if isinstance(image, torch.Tensor):
        image = image.detach().float().cpu()
        if image.ndim == 4 and image.shape[0] == 1:
            image = image[0]
        if image.ndim == 3 and image.shape[0] == 3 and image.shape[-1] != 3:
            image = image.permute(1, 2, 0)
        image = image.numpy()
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"image: expected an RGB image [H, W, 3] (or [3, H, W] tensor), got shape {image.shape}")
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    return np.clip(image.astype(np.float32), 0.0, 1.0)


_RGB_TO_XYZ = np.array([[0.412453, 0.357580, 0.180423],
                        [0.212671, 0.715160, 0.072169],
                        [0.019334, 0.119193, 0.950227]], dtype=np.float32)
_D65_WHITE = np.array([0.950456, 1.0, 1.088754], dtype=np.float32)


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB in [0, 1] to CIE Lab (D65), the same convention as kornia.color.rgb_to_lab."""
    linear = np.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    xyz = (linear @ _RGB_TO_XYZ.T) / _D65_WHITE
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 4.0 / 29.0)
    return np.stack([116.0 * f[..., 1] - 16.0, 500.0 * (f[..., 0] - f[..., 1]),
                     200.0 * (f[..., 1] - f[..., 2])], -1).astype(np.float32)


def _palette_lab(palette: dict) -> tuple[list[str], np.ndarray]:
    names = list(palette)
    rgb = np.array([palette[n] for n in names], dtype=np.float32)[None] / 255.0
    return names, rgb_to_lab(rgb)[0]


_COLOUR_NAMES, _COLOUR_LAB = _palette_lab(COLOURS)
_BACKGROUND_NAMES, _BACKGROUND_LAB = _palette_lab(BACKGROUNDS)
_SIZE_NAMES = list(SIZES)
_SIZE_BOUNDS = [math.sqrt(a * b) for a, b in zip(list(SIZES.values()), list(SIZES.values())[1:])]


def _nearest(lab: np.ndarray, names: list[str], table: np.ndarray) -> str:
    return names[int(np.argmin(np.linalg.norm(table - lab, axis=1)))]


SUPERSAMPLE = 4  # shapes are compared at 4x resolution so small objects keep their corners


def _rasterise(verts, scale: float, cx: float, cy: float, ccx: float, ccy: float, shape) -> np.ndarray:
    """Boolean mask of the polygon placed with its centroid at (cx, cy)."""
    canvas = Image.new("1", (shape[1], shape[0]), 0)
    ImageDraw.Draw(canvas).polygon([(cx + scale * (vx - ccx), cy + scale * (vy - ccy)) for vx, vy in verts], fill=1)
    return np.asarray(canvas, dtype=bool)


def fine_silhouette(delta: np.ndarray, component: np.ndarray) -> np.ndarray:
    """The object's filled outline at SUPERSAMPLE x resolution: the colour distance to the background,
    interpolated, cut at half the object's own contrast, which is where an anti-aliased or blurred edge truly lies."""
    solid = component & (delta > FOREGROUND_DELTA_E)
    inner = ndimage.binary_erosion(solid) if ndimage.binary_erosion(solid).sum() >= 4 else solid
    level = max(FOREGROUND_DELTA_E, 0.5 * float(np.percentile(delta[inner], 10)))
    fine = ndimage.zoom(delta, SUPERSAMPLE, order=1, grid_mode=True, mode="nearest") > level
    near = ndimage.zoom(ndimage.binary_dilation(component), SUPERSAMPLE, order=0, grid_mode=True, mode="nearest")
    fine = ndimage.binary_closing(np.pad(fine & near, SUPERSAMPLE), iterations=SUPERSAMPLE)
    return ndimage.binary_fill_holes(fine)[SUPERSAMPLE:-SUPERSAMPLE, SUPERSAMPLE:-SUPERSAMPLE]


def classify_shape(silhouette: np.ndarray) -> tuple[str, float, float]:
    """(shape, IoU with the best prototype, fitted circumradius in the silhouette's pixels) for a boolean
    silhouette, each prototype scaled to the same area and centred on the same centroid."""
    area = float(silhouette.sum())
    pad = int(math.sqrt(area)) + 2
    mask = np.pad(silhouette, pad)
    ys, xs = np.nonzero(mask)
    cy, cx = ys.mean() + 0.5, xs.mean() + 0.5
    best = ("circle", -1.0, 0.0)
    for name, variants in _PROTOTYPE_GEOMETRY.items():
        for verts, proto_area, ccx, ccy in variants:
            scale = math.sqrt(area / proto_area)
            template = _rasterise(verts, scale, cx, cy, ccx, ccy, mask.shape)
            iou = float((template & mask).sum() / max(1, (template | mask).sum()))
            if iou > best[1]:
                best = (name, iou, scale)
    return best


def _spread(values: np.ndarray, with_projection: bool = False):
    """5th-95th percentile range of Lab values along their main axis of variation."""
    centred = values.astype(np.float64) - values.mean(0)
    _, _, axes = np.linalg.svd(centred, full_matrices=False)
    t = centred @ axes[0]
    spread = float(np.percentile(t, 95) - np.percentile(t, 5))
    return (spread, t) if with_projection else spread


def _style(component: np.ndarray, silhouette: np.ndarray, lab: np.ndarray, solid: np.ndarray, noise: float) -> str:
    """lab: the median-filtered crop; solid: its pixels clearly off the background; noise: the spread of the
    background's own colour jitter (Lab units)."""
    inside = ndimage.distance_transform_edt(silhouette)
    core = inside >= max(1.0, HOLLOW_CORE * inside.max())
    if component[core].mean() < 0.5:  # the heart of the silhouette shows background: hollow
        return "outlined"
    depth = ndimage.distance_transform_edt(solid & component)
    interior = depth >= 2.0  # clear of the anti-aliased rim
    if interior.sum() < 8:
        interior = depth >= 1.0
    threshold = FLAT_SPREAD + NOISE_SPREAD * noise
    _, t = _spread(lab[interior], with_projection=True)
    ys, xs = np.nonzero(interior)
    design = np.stack([np.ones_like(xs), xs, ys], 1).astype(np.float64)
    coef, *_ = np.linalg.lstsq(design, t, rcond=None)
    planar = design @ coef
    r2 = 1 - ((t - planar) ** 2).sum() / max(1e-9, (t ** 2).sum())
    # a ramp: a large planar trend that explains most of the variation (a soft rim has no planar trend)
    if np.percentile(planar, 95) - np.percentile(planar, 5) >= threshold and r2 >= GRADIENT_R2:
        return "gradient"
    # stripes: variation left in the core, away from any soft rim
    core = depth >= max(2.0, CORE_DEPTH * depth.max())
    if core.sum() >= 4 and _spread(lab[core]) >= threshold:
        return "striped"
    return "flat"


def _colour(component: np.ndarray, lab: np.ndarray) -> tuple[str, np.ndarray]:
    core = ndimage.binary_erosion(component)
    values = lab[core if core.sum() >= 8 else component]
    chroma = np.hypot(values[:, 1], values[:, 2])
    keep = chroma >= np.quantile(chroma, 1 - TOP_CHROMA)
    measured = np.median(values[keep], axis=0)
    return _nearest(measured, _COLOUR_NAMES, _COLOUR_LAB), measured


def detect(image) -> Detection:
    rgb = as_rgb_array(image)
    height, width = rgb.shape[:2]
    lab = rgb_to_lab(rgb)
    border = np.concatenate([lab[:2].reshape(-1, 3), lab[-2:].reshape(-1, 3),
                             lab[:, :2].reshape(-1, 3), lab[:, -2:].reshape(-1, 3)])
    background_lab = np.median(border, axis=0)
    denoised = ndimage.median_filter(lab, size=(3, 3, 1))  # keeps edges and stripes, drops pixel noise
    noise = _spread(np.concatenate([denoised[:3, 3:-3].reshape(-1, 3), denoised[-3:, 3:-3].reshape(-1, 3)]))
    smooth = ndimage.uniform_filter(lab, size=(3, 3, 1))  # tames sensor-like noise before any threshold
    foreground = np.linalg.norm(smooth - background_lab, axis=-1) > FOREGROUND_DELTA_E
    delta = np.linalg.norm(lab - background_lab, axis=-1)
    solid = delta > FOREGROUND_DELTA_E
    labels, _ = ndimage.label(foreground, structure=np.ones((3, 3)))
    min_area = max(12, MIN_AREA_FRACTION * height * width)
    objects = []
    kept = np.zeros((height, width), dtype=bool)
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        y0, y1 = max(0, box[0].start - 1), min(height, box[0].stop + 1)
        x0, x1 = max(0, box[1].start - 1), min(width, box[1].stop + 1)
        component = labels[y0:y1, x0:x1] == index
        if component.sum() < min_area:
            continue
        closed = ndimage.binary_closing(np.pad(component, 2), iterations=1)[2:-2, 2:-2] | component
        silhouette = ndimage.binary_fill_holes(closed)
        fine = fine_silhouette(delta[y0:y1, x0:x1], component)
        if fine.sum() < SUPERSAMPLE ** 2 * min_area / 2:
            continue
        kept[y0:y1, x0:x1] |= component
        shape, iou, radius = classify_shape(fine)
        radius /= SUPERSAMPLE
        colour, measured = _colour(component, smooth[y0:y1, x0:x1])
        style = _style(component, silhouette, denoised[y0:y1, x0:x1], solid[y0:y1, x0:x1], noise)
        ys, xs = np.nonzero(fine)
        size = _SIZE_NAMES[int(np.searchsorted(_SIZE_BOUNDS, radius / min(width, height)))]
        objects.append(DetectedObject(shape, colour, style, size, (x0 + (xs.mean() + 0.5) / SUPERSAMPLE) / width,
                                      (y0 + (ys.mean() + 0.5) / SUPERSAMPLE) / height, radius,
                                      int(fine.sum()) // SUPERSAMPLE ** 2, iou,
                                      (x0, y0, x1, y1), tuple(float(v) for v in measured)))
    background = _nearest(background_lab, _BACKGROUND_NAMES, _BACKGROUND_LAB)
    return Detection(sorted(objects, key=lambda o: (o.y, o.x)), background, width, height, kept)
