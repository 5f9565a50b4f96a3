"""ControlNet adherence, measured as ControlNet++ does: the condition is extracted again from the output and
compared with the one asked for. For a scene-engine scene (its render gives the asked edges, depth and instance
masks) the output's

- edges are kornia's Canny edges (per colour channel), scored by F1 against the scene's edges with a pixel tolerance;
- instance masks and depth are the scene engine's drawing of the detected objects (each read as a shape, centre
  and radius), so they are exact wherever the objects are read right. Masks are matched one to one with the
  scene's (mask mIoU); depth is compared by RMSE with the scene's, both normalised as the depth ControlNet's
  hint is.

`adherence(sample.image, sample)` scores the ground truth itself: the ceiling of every measure."""
from __future__ import annotations

from dataclasses import replace

import kornia
import torch
from scipy.optimize import linear_sum_assignment

from ..data.scenes import SceneSample, draw_layout
from ..hints import normalize_depth
from ..pipeline import upscale_for_detector
from .detector import Detection, detect
from .scoring import score_detection


def canny(image: torch.Tensor, low: float = 0.1, high: float = 0.2) -> torch.Tensor:
    """RGB [H, W, 3] in [0, 1] -> bool edges [H, W]: kornia's Canny (its default thresholds) on each channel, edges
    of any. On grey alone a red object on a green ground of the same brightness has no edge (edge F1 of the test
    split's renders: 0.88 on grey, 0.99 per channel)."""
    return (kornia.filters.canny(image.permute(2, 0, 1)[:, None].float(), low, high)[1][:, 0] > 0.5).any(0)


def _near(edges: torch.Tensor, tolerance: int) -> torch.Tensor:
    """Pixels within `tolerance` (Euclidean) of an edge pixel."""
    r = torch.arange(-tolerance, tolerance + 1, dtype=torch.float32)
    disk = ((r[:, None] ** 2 + r[None, :] ** 2) <= tolerance ** 2).float()
    return kornia.morphology.dilation(edges[None, None].float(), disk)[0, 0] > 0.5


def edge_f1(found: torch.Tensor, asked: torch.Tensor, tolerance: int = 2) -> float:
    """F1 of two bool edge maps [H, W]: precision is the share of found pixels within `tolerance` px of an asked
    one, recall the share of asked pixels within `tolerance` px of a found one. Two empty maps agree: 1."""
    if not found.any() or not asked.any():
        return float(not found.any() and not asked.any())
    precision = float((found & _near(asked, tolerance)).sum() / found.sum())
    recall = float((asked & _near(found, tolerance)).sum() / asked.sum())
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def mask_miou(found: torch.Tensor, asked: torch.Tensor) -> float:
    """Bool masks [M, H, W] and [N, H, W] matched one to one for the largest summed IoU; the mean over
    max(M, N) instances, so a missing object and an extra one each count as 0. No masks on either side: 1."""
    if len(found) == 0 or len(asked) == 0:
        return float(len(found) == len(asked))
    a, b = found.flatten(1).float(), asked.flatten(1).float()
    inter = a @ b.T
    iou = (inter / (a.sum(1)[:, None] + b.sum(1)[None] - inter).clamp_min(1)).numpy()
    rows, cols = linear_sum_assignment(iou, maximize=True)
    return float(iou[rows, cols].sum() / max(iou.shape))


def detected_layout(detection: Detection, width: int, height: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Instance masks [N, H, W] and depth [H, W] of a picture read back from its detected objects, drawn top to
    bottom (the detector's order), so lower, nearer objects cover higher ones as in the engine."""
    scale = width / detection.width
    return draw_layout([replace(o, radius=o.radius * scale) for o in detection.objects], width, height)


def _normalised(depth: torch.Tensor) -> torch.Tensor:
    return normalize_depth(depth[None, :, :, None])[0]


def adherence(image: torch.Tensor, sample: SceneSample, tolerance: int = 2) -> dict:
    """How well an RGB [H, W, 3] picture in [0, 1] of the scene's size keeps the scene's conditions: edge_f1,
    depth_rmse, mask_miou, and the judge's verdict on the scene's spec (passed)."""
    height, width = image.shape[:2]
    detection = detect(upscale_for_detector(image.permute(2, 0, 1)[None].float())[0])
    masks, depth = detected_layout(detection, width, height)
    depth_error = _normalised(depth) - _normalised(sample.depth)
    return {"edge_f1": edge_f1(canny(image), sample.edges > 0.5, tolerance),
            "depth_rmse": float(depth_error.square().mean().sqrt()),
            "mask_miou": mask_miou(masks > 0.5, sample.masks > 0.5),
            "passed": score_detection(sample.spec, detection).passed}
