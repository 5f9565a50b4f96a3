"""ControlNet hints from what a user has: a sketch turned into clean edges or line art, any depth image normalised to
the scene engine's convention (near = bright, 0..1), and instance masks or a layout turned into an edge or depth
hint. Core's Canny node covers edges of photographs; these cover what F.1's conditions need beyond it.

Maps are [B, H, W] floats in [0, 1] (white lines on black, as the scene engine draws edges). Plain torch and kornia.
"""
from __future__ import annotations

import kornia
import torch
import torch.nn.functional as F

INK = ("auto", "dark lines", "light lines")


def _gray(image: torch.Tensor) -> torch.Tensor:
    """IMAGE [B, H, W, C] (C = 1, 3 or 4) -> [B, 1, H, W]."""
    if image.ndim != 4 or image.shape[-1] not in (1, 3, 4):
        raise ValueError(f"expected an IMAGE [B, H, W, 3], got shape {tuple(image.shape)}")
    chw = image[..., :3].movedim(-1, 1).float()
    return chw if chw.shape[1] == 1 else kornia.color.rgb_to_grayscale(chw)


def _square(width: int, like: torch.Tensor) -> torch.Tensor:
    return torch.ones(width, width, dtype=like.dtype, device=like.device)


def thin(binary: torch.Tensor, max_iterations: int = 256) -> torch.Tensor:
    """Zhang-Suen thinning of [B, 1, H, W] {0, 1} to one-pixel, connected centre lines (stops when stable)."""
    x = binary.float()
    for _ in range(max_iterations):
        before = x
        for first in (True, False):
            p = F.pad(x, (1, 1, 1, 1))
            h, w = x.shape[-2:]
            n = [p[..., 0:h, 1:w + 1], p[..., 0:h, 2:], p[..., 1:h + 1, 2:], p[..., 2:, 2:],       # P2..P5
                 p[..., 2:, 1:w + 1], p[..., 2:, 0:w], p[..., 1:h + 1, 0:w], p[..., 0:h, 0:w]]     # P6..P9
            count = sum(n)
            transitions = sum(((a == 0) & (b == 1)).float() for a, b in zip(n, n[1:] + n[:1]))
            if first:
                side = (n[0] * n[2] * n[4] == 0) & (n[2] * n[4] * n[6] == 0)
            else:
                side = (n[0] * n[2] * n[6] == 0) & (n[0] * n[4] * n[6] == 0)
            remove = (x == 1) & (count >= 2) & (count <= 6) & (transitions == 1) & side
            x = x * (~remove).float()
        if torch.equal(x, before):
            break
    return x


def remove_specks(binary: torch.Tensor, min_area: int) -> torch.Tensor:
    """Drop 8-connected components of fewer than `min_area` pixels (kornia's connected components)."""
    if min_area <= 1 or not binary.any():
        return binary
    h, w = binary.shape[-2:]
    # label propagation moves one pixel per iteration: H + W reaches across any stroke short of a spiral
    labels = kornia.contrib.connected_components(binary.float(), num_iterations=h + w)
    out = torch.zeros_like(binary)
    for b in range(binary.shape[0]):
        ids, counts = labels[b].unique(return_counts=True)
        keep = ids[(ids > 0) & (counts >= min_area)]
        out[b] = torch.isin(labels[b], keep).to(binary.dtype)
    return out


def sketch_to_edges(image: torch.Tensor, threshold: float = 0.5, ink: str = "auto", thin_lines: bool = True,
                    line_width: int = 2, min_area: int = 8) -> torch.Tensor:
    """A sketch or line drawing (any IMAGE) -> binary edges [B, H, W]: ink found (dark lines on light paper or
    light on dark; `auto` reads the paper from the mean), thresholded, specks under `min_area` pixels removed,
    thinned to centre lines and drawn `line_width` pixels wide (the scene engine's edges are about 2 px)."""
    if ink not in INK:
        raise ValueError(f"ink: expected one of {INK}, got {ink!r}")
    gray = _gray(image)
    dark = ink == "dark lines" or (ink == "auto" and float(gray.mean()) > 0.5)
    strength = 1 - gray if dark else gray
    binary = (strength > threshold).float()
    binary = remove_specks(binary, min_area)
    if thin_lines:
        binary = thin(binary)
        if line_width > 1:
            binary = kornia.morphology.dilation(binary, _square(line_width, binary))
    return binary[:, 0]


def normalize_depth(image: torch.Tensor, near: str = "bright", low: float = 0.0, high: float = 1.0,
                    blur: float = 0.0) -> torch.Tensor:
    """Any depth IMAGE (a scene render, a depth estimator's output, metric depth) -> [B, H, W] in [0, 1] with
    near = bright: the `low`..`high` quantiles of each image (min and max by default: small objects are a few
    percent of a scene) stretched to 0..1, so estimators with other ranges give the hint the ControlNet was
    trained on. `near="dark"` for metric depth (small = near)."""
    if near not in ("bright", "dark"):
        raise ValueError(f"near: expected 'bright' or 'dark', got {near!r}")
    if not 0 <= low < high <= 1:
        raise ValueError(f"low/high: expected 0 <= low < high <= 1, got {low}, {high}")
    depth = _gray(image)
    flat = depth.flatten(1)
    if flat.shape[1] > 1 << 20:  # torch.quantile's input limit; a strided sample estimates the same quantiles
        flat = flat[:, :: flat.shape[1] // (1 << 20) + 1]
    q = torch.quantile(flat, torch.tensor([low, high], dtype=flat.dtype, device=flat.device), dim=1)  # [2, B]
    lo, hi = q[0].view(-1, 1, 1, 1), q[1].view(-1, 1, 1, 1)
    depth = ((depth - lo) / (hi - lo).clamp_min(1e-6)).clamp(0, 1)
    if near == "dark":
        depth = 1 - depth
    if blur > 0:
        size = 2 * int(3 * blur) + 1
        depth = kornia.filters.gaussian_blur2d(depth, (size, size), (blur, blur), border_type="replicate")
    return depth[:, 0]


LAYOUT_MODES = ("edges", "depth", "silhouettes")


def layout_to_hint(masks: torch.Tensor, mode: str = "edges", line_width: int = 2) -> torch.Tensor:
    """Instance masks [N, H, W] (one per object, e.g. F1SceneRender's or drawn by hand) -> one hint [1, H, W]:
    `edges` the objects' contours (for the edge ControlNet), `depth` each object as a near plate on a receding
    ground, lower objects nearer (the scene engine's convention, for the depth ControlNet), `silhouettes` the
    filled union."""
    if mode not in LAYOUT_MODES:
        raise ValueError(f"mode: expected one of {LAYOUT_MODES}, got {mode!r}")
    if masks.ndim == 2:
        masks = masks[None]
    if masks.ndim != 3 or masks.shape[0] == 0:
        raise ValueError(f"expected masks [N, H, W] with at least one mask, got shape {tuple(masks.shape)}")
    m = (masks.float() > 0.5).float()[:, None]  # [N, 1, H, W]
    h, w = m.shape[-2:]
    if mode == "silhouettes":
        return m.amax(0)
    if mode == "edges":
        kernel = _square(2 * ((line_width + 1) // 2) + 1, m)  # odd: a band centred on the boundary
        return kornia.morphology.gradient(m, kernel).clamp(0, 1).amax(0)
    ys = (torch.arange(h, dtype=m.dtype, device=m.device) + 0.5) / h
    depth = (0.1 + 0.25 * ys)[:, None].expand(h, w).clone()  # the ground plane the scene engine draws
    area = m.sum(dim=(1, 2, 3)).clamp_min(1)
    centre_y = (m[:, 0] * ys[:, None]).sum(dim=(1, 2)) / area
    for index in centre_y.argsort():  # far (high up) first, so nearer objects cover them
        depth = torch.where(m[index, 0] > 0, 0.45 + 0.2 * centre_y[index] + 0.15, depth)
    return normalize_depth(depth[None, :, :, None])  # the range every depth hint is given in


def scene_hint(sample, condition: str) -> torch.Tensor:
    """The training hint [H, W] of a scene render (f1core.data.scenes.SceneSample) for one ControlNet condition: its
    edges, its depth normalised as F1DepthNormalize gives it, or its objects' silhouettes."""
    if condition == "edges":
        return sample.edges
    if condition == "depth":
        return normalize_depth(sample.depth[None, :, :, None])[0]
    if condition == "layout":
        return layout_to_hint(sample.masks, "silhouettes")[0] if len(sample.masks) else torch.zeros_like(sample.edges)
    raise ValueError(f"condition: expected edges, depth or layout, got {condition!r}")
