"""The procedural scene engine: a spec (or caption) and a seed in; an anti-aliased image, per-object instance masks,
an edge map and a depth-like map out. Deterministic by seed, any size from 64 to 1024 pixels a side.

Shapes are signed distance fields evaluated on each object's pixel crop, so large canvases stay cheap.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..interrupt import check_stop
from .captions import caption as caption_of, parse_caption
from .rng import StableRng, derive_seed
from .spec import BACKGROUNDS, COLOURS, SIZES, ObjectSpec, SceneSpec, coerce_spec

MIN_SIDE, MAX_SIDE = 64, 1024
STAR_INNER_RATIO = 0.45
DIAMOND_WIDTH = 0.72        # half-width / half-height: a diamond is taller than wide, unlike a turned square
OUTLINE_WIDTH = 0.35        # of the inradius, so thin shapes (stars) still show a hole
STRIPE_PERIOD = 0.6         # of the circumradius
SECONDARY_MIX = 0.6         # stripes and gradients run from the colour towards black (light bg) or white (dark bg)


@dataclass(frozen=True)
class PlacedObject:
    """One rendered instance: the ground truth the detector is checked against."""
    group: int          # index into spec.objects
    shape: str
    colour: str
    style: str
    size: str
    x: float            # centre, as a fraction of the width
    y: float            # centre, as a fraction of the height
    radius: float       # circumradius in pixels


@dataclass
class SceneSample:
    spec: SceneSpec
    background: str
    objects: list[PlacedObject]
    image: torch.Tensor   # [H, W, 3] float in [0, 1]
    masks: torch.Tensor   # [N, H, W] float in [0, 1], one per placed object
    edges: torch.Tensor   # [H, W] float in [0, 1]: silhouette (and outline) contours
    depth: torch.Tensor   # [H, W] float in [0, 1], 1 = near

    @property
    def caption(self) -> str:
        return caption_of(self.spec)

    def object_masks(self) -> torch.Tensor:
        """[objects of the spec, H, W]: the instance masks merged per spec object (a count's instances together)."""
        merged = torch.zeros(len(self.spec.objects), *self.masks.shape[1:])
        for placed, mask in zip(self.objects, self.masks):
            merged[placed.group] = torch.maximum(merged[placed.group], mask)
        return merged


def _polygon(shape: str) -> list[tuple[float, float]] | None:
    """Vertices on the unit circumcircle, y pointing down; None for the circle."""
    def ring(n, start, radii=(1.0,)):
        return [(radii[k % len(radii)] * math.cos(start + 2 * math.pi * k / n),
                 radii[k % len(radii)] * math.sin(start + 2 * math.pi * k / n)) for k in range(n)]
    if shape == "circle":
        return None
    if shape == "square":
        return ring(4, math.pi / 4)
    if shape == "triangle":
        return ring(3, -math.pi / 2)
    if shape == "star":
        return ring(10, -math.pi / 2, (1.0, STAR_INNER_RATIO))
    if shape == "hexagon":
        return ring(6, 0.0)
    if shape == "diamond":
        return [(0.0, -1.0), (DIAMOND_WIDTH, 0.0), (0.0, 1.0), (-DIAMOND_WIDTH, 0.0)]
    raise ValueError(f"shape: no geometry for {shape!r}")


def shape_sdf(shape: str, dx: torch.Tensor, dy: torch.Tensor, radius: float) -> torch.Tensor:
    """Signed distance in pixels (negative inside) from offsets (dx, dy) to the shape's boundary."""
    if shape == "circle":
        return torch.sqrt(dx * dx + dy * dy) - radius
    verts = torch.tensor(_polygon(shape), dtype=dx.dtype) * radius
    a, b = verts, verts.roll(-1, 0)
    px, py = dx[..., None], dy[..., None]
    ex, ey = b[:, 0] - a[:, 0], b[:, 1] - a[:, 1]
    wx, wy = px - a[:, 0], py - a[:, 1]
    t = ((wx * ex + wy * ey) / (ex * ex + ey * ey)).clamp(0, 1)
    dist = torch.sqrt((wx - t * ex) ** 2 + (wy - t * ey) ** 2).amin(-1)
    # even-odd rule: count the edges a ray to +x crosses
    crosses = ((a[:, 1] > py) != (b[:, 1] > py)) & (px < a[:, 0] + (py - a[:, 1]) * ex / (ey + 1e-12))
    inside = crosses.sum(-1) % 2 == 1
    return torch.where(inside, -dist, dist)


def _coverage(sdf: torch.Tensor) -> torch.Tensor:
    return (0.5 - sdf).clamp(0, 1)


def _rgb(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32) / 255.0


def secondary_colour(colour: str, background: str) -> torch.Tensor:
    bg = _rgb(BACKGROUNDS[background])
    toward = torch.ones(3) if float(bg.mean()) < 0.35 else torch.zeros(3)
    return torch.lerp(_rgb(COLOURS[colour]), toward, SECONDARY_MIX)


def _resolve(obj: ObjectSpec, rng: StableRng, instances: int, avoid) -> tuple[str, str, str]:
    """Fill the unset colour, style and size from the seed, never landing on an avoided combination."""
    sizes = list(SIZES) if instances <= 2 else ["small", "medium"]
    for _ in range(64):
        colour = obj.colour or rng.choice(COLOURS)
        style = obj.style or "flat"
        size = obj.size or rng.choice(sizes)
        values = {"shape": obj.shape, "colour": colour, "style": style, "size": size}
        if not any(all(values.get(k) == v for k, v in combo.items()) for combo in avoid):
            return colour, style, size
    raise ValueError(f"avoid: every completion of {obj} matches an avoided combination; loosen `avoid`")


def _region(obj: ObjectSpec, r: float, width: int, height: int, margin: float):
    """The box (x0, x1, y0, y1) in pixels where this object's centre may fall."""
    lo_x, hi_x, lo_y, hi_y = r + margin, width - r - margin, r + margin, height - r - margin
    if obj.position == "left":
        return lo_x, max(lo_x, 0.3 * width), max(lo_y, 0.35 * height), min(hi_y, 0.65 * height)
    if obj.position == "right":
        return min(hi_x, 0.7 * width), hi_x, max(lo_y, 0.35 * height), min(hi_y, 0.65 * height)
    if obj.position == "top":
        return max(lo_x, 0.35 * width), min(hi_x, 0.65 * width), lo_y, max(lo_y, 0.3 * height)
    if obj.position == "bottom":
        return max(lo_x, 0.35 * width), min(hi_x, 0.65 * width), min(hi_y, 0.7 * height), hi_y
    if obj.position == "centre":
        return 0.46 * width, 0.54 * width, 0.46 * height, 0.54 * height
    return lo_x, hi_x, lo_y, hi_y


def _relation_ok(kind: str, x, y, ax, ay, gap, width, height) -> bool:
    if kind in ("left of", "right of"):
        dx = ax - x if kind == "left of" else x - ax
        return dx >= gap and abs(y - ay) <= 0.12 * height
    dy = ay - y if kind == "above" else y - ay
    return dy >= gap and abs(x - ax) <= 0.12 * width


def _place_all(spec, resolved, order, rng, width, height, margin, gap) -> list[PlacedObject] | None:
    """One attempt at a non-overlapping placement that honours positions and relations; None if stuck."""
    side = min(width, height)
    placed: list[PlacedObject] = []
    by_group: dict[int, PlacedObject] = {}
    for g in order:
        obj = spec.objects[g]
        for colour, style, size in resolved[g]:
            r = SIZES[size] * side
            x0, x1, y0, y1 = _region(obj, r, width, height, margin)
            for _ in range(60):
                x, y = rng.uniform(x0, x1), rng.uniform(y0, y1)
                if any(math.hypot(x - p.x * width, y - p.y * height) < r + p.radius + gap for p in placed):
                    continue
                if obj.relation is not None:
                    anchor = by_group[obj.relation.anchor]
                    if not _relation_ok(obj.relation.kind, x, y, anchor.x * width, anchor.y * height,
                                        r + anchor.radius + gap, width, height):
                        continue
                break
            else:
                return None
            item = PlacedObject(g, obj.shape, colour, style, size, x / width, y / height, r)
            placed.append(item)
            by_group[g] = item
    return sorted(placed, key=lambda p: (p.group, p.y, p.x))


def _layout(spec: SceneSpec, rng: StableRng, width: int, height: int, avoid) -> list[PlacedObject]:
    side = min(width, height)
    margin, gap = 0.02 * side, max(3.0, 0.04 * side)
    instances = sum(o.count for o in spec.objects)
    resolved = [[_resolve(o, rng, instances, avoid) for _ in range(o.count)] for o in spec.objects]
    # anchors go first so the related object can be placed against them
    order = sorted(range(len(spec.objects)), key=lambda i: spec.objects[i].relation is not None)
    for _ in range(200):
        check_stop()  # a crowded scene can take many attempts
        placed = _place_all(spec, resolved, order, rng, width, height, margin, gap)
        if placed is not None:
            return placed
    raise ValueError(f"render_scene: cannot fit {instances} objects of these sizes into {width}x{height}; "
                     "use a larger canvas, smaller sizes or fewer objects")


def _check_size(name: str, value) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not MIN_SIDE <= value <= MAX_SIDE:
        raise ValueError(f"{name}: expected an int from {MIN_SIDE} to {MAX_SIDE} pixels, got {value!r}")
    return value


def _object_crop(p, xs: torch.Tensor, ys: torch.Tensor, width: int, height: int):
    """The pixel box around an object (a PlacedObject, or anything with shape, x, y and radius in pixels), its
    offsets from the centre and its signed distance field there."""
    cx, cy, r = p.x * width, p.y * height, p.radius
    top, bottom = max(0, int(cy - r - 2)), min(height, int(cy + r + 3))
    left, right = max(0, int(cx - r - 2)), min(width, int(cx + r + 3))
    dy, dx = ys[top:bottom] - cy, xs[:, left:right] - cx
    dx, dy = dx.expand(bottom - top, -1), dy.expand(-1, right - left)
    return (top, bottom, left, right), dx, dy, shape_sdf(p.shape, dx, dy, r)


def _grid(width: int, height: int) -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.arange(width, dtype=torch.float32)[None, :] + 0.5,
            torch.arange(height, dtype=torch.float32)[:, None] + 0.5)


def draw_layout(objects, width: int, height: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The instance masks [N, H, W] and the depth map [H, W] (1 = near) the engine draws for objects in this order: a
    receding ground plane, each object a dome standing nearer the lower it sits. Objects are PlacedObjects or anything
    with shape, x, y (fractions) and radius (pixels at this size), such as the detector's objects: an output's layout
    and depth are read back this way."""
    xs, ys = _grid(width, height)
    masks = torch.zeros(len(objects), height, width)
    depth = (0.1 + 0.25 * ys / height).expand(height, width).clone()
    for n, p in enumerate(objects):
        (top, bottom, left, right), _, _, sdf = _object_crop(p, xs, ys, width, height)
        silhouette = _coverage(sdf)
        masks[n, top:bottom, left:right] = silhouette
        dome = (-sdf / p.radius).clamp(0, 1).sqrt()
        near = 0.45 + 0.2 * p.y + 0.3 * dome
        region = depth[top:bottom, left:right]
        depth[top:bottom, left:right] = region * (1 - silhouette) + near * silhouette
    return masks, depth.clamp(0, 1)


def render_scene(spec, width: int = 128, height: int | None = None, seed: int = 0, avoid=()) -> SceneSample:
    """Render a spec (SceneSpec, dict, JSON string or caption). `avoid` lists attribute combinations
    (e.g. {"colour": "purple", "shape": "star"}) that seeded choices for unset attributes must not produce."""
    if isinstance(spec, str) and not spec.lstrip().startswith("{"):
        spec = parse_caption(spec)
    spec = coerce_spec(spec)
    width = _check_size("width", width)
    height = _check_size("height", width if height is None else height)
    rng = StableRng(derive_seed("scene", seed))
    background = spec.background or rng.choice(BACKGROUNDS)
    placed = _layout(spec, rng, width, height, avoid)

    xs, ys = _grid(width, height)
    image = _rgb(BACKGROUNDS[background]).expand(height, width, 3).clone()
    edges = torch.zeros(height, width)
    edge_width = max(1.0, min(width, height) / 128)

    for p in placed:
        check_stop()
        (top, bottom, left, right), dx, dy, sdf = _object_crop(p, xs, ys, width, height)
        r = p.radius
        silhouette = _coverage(sdf)
        colour = _rgb(COLOURS[p.colour])
        second = secondary_colour(p.colour, background)
        if p.style == "outlined":
            zero = torch.zeros(())
            thickness = max(1.5, OUTLINE_WIDTH * -float(shape_sdf(p.shape, zero, zero, r)))
            alpha = silhouette - _coverage(sdf + thickness)
            edges[top:bottom, left:right] = torch.maximum(
                edges[top:bottom, left:right], (1 - (sdf + thickness).abs() / edge_width).clamp(0, 1))
        else:
            alpha = silhouette
        if p.style == "striped":
            period = max(6.0, STRIPE_PERIOD * r)
            phase = (dx + dy) / math.sqrt(2) / period
            band = ((phase - torch.floor(phase) - 0.5).abs() - 0.25) * period  # px into the colour band
            mix = (0.5 - band).clamp(0, 1)
            fill = colour * (1 - mix[..., None]) + second * mix[..., None]
        elif p.style == "gradient":
            verts = _polygon(p.shape) or [(0.0, -1.0), (0.0, 1.0)]
            top_y, bottom_y = min(v[1] for v in verts) * r, max(v[1] for v in verts) * r
            mix = ((dy - top_y) / (bottom_y - top_y)).clamp(0, 1)  # over the shape's own height
            fill = colour * (1 - mix[..., None]) + second * mix[..., None]
        else:
            fill = colour.expand(bottom - top, right - left, 3)
        crop = image[top:bottom, left:right]
        image[top:bottom, left:right] = crop * (1 - alpha[..., None]) + fill * alpha[..., None]
        edges[top:bottom, left:right] = torch.maximum(edges[top:bottom, left:right],
                                                      (1 - sdf.abs() / edge_width).clamp(0, 1))

    masks, depth = draw_layout(placed, width, height)
    return SceneSample(spec, background, placed, image.clamp(0, 1), masks, edges, depth)
