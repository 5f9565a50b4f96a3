"""Run a spatial function over overlapping tiles and blend the results with feathered weights.

Used by the VAE for tiled encode (scale 1/8) and decode (scale 8), so memory stays bounded at any resolution.
Inside each overlap the weights ramp linearly, so a seam fades across the overlap instead of cutting.
"""
import math
from typing import Callable

import torch

from .interrupt import check_stop


def tiled_apply(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, tile: int, overlap: int,
                scale: float, align: int) -> torch.Tensor:
    """Apply `fn` ([B, C, h, w] -> [B, C', h*scale, w*scale]) to `x` [B, C, H, W] tile by tile.

    `tile` and `overlap` are in input units and are snapped down to multiples of `align`, the granularity `fn`
    accepts (16 for images going into the VAE encoder, 2 for latents going into the decoder). An input that fits in
    one tile is passed to `fn` whole, so the result is then identical to `fn(x)`. A stop check (see
    f1core.interrupt) runs before every tile.
    """
    if x.ndim != 4:
        raise ValueError(f"x must be [B, C, H, W], got shape {tuple(x.shape)}")
    if align < 1 or not _is_integer(align * scale):
        raise ValueError(f"align * scale must be a positive integer so tiles map to whole output pixels; "
                         f"got align={align}, scale={scale}")
    height, width = x.shape[-2:]
    if height % align or width % align:
        raise ValueError(f"x size {height}x{width} must be a multiple of align={align}")
    tile = max(align, tile // align * align)
    overlap = overlap // align * align
    if overlap < 0 or overlap >= tile:
        raise ValueError(f"overlap must be in [0, tile) after snapping to align={align}; got overlap={overlap}, "
                         f"tile={tile}: lower overlap or raise tile")
    if height <= tile and width <= tile:
        check_stop()
        return fn(x)

    ramp = round(overlap * scale)
    th, tw = min(tile, height), min(tile, width)
    out = weight = None
    for top in _starts(height, tile, overlap, align):
        for left in _starts(width, tile, overlap, align):
            check_stop()
            y = fn(x[..., top:top + th, left:left + tw])
            oh, ow, otop, oleft = (round(v * scale) for v in (th, tw, top, left))
            if y.shape[-2:] != (oh, ow):
                raise ValueError(f"fn returned size {tuple(y.shape[-2:])} for a {th}x{tw} tile; "
                                 f"expected {oh}x{ow} from scale={scale}")
            if out is None:
                out = y.new_zeros(*y.shape[:2], round(height * scale), round(width * scale), dtype=torch.float32)
                weight = out.new_zeros(1, 1, *out.shape[-2:])
            w = (_feather(oh, ramp, top > 0, top + th < height, y.device)[:, None]
                 * _feather(ow, ramp, left > 0, left + tw < width, y.device)[None, :])
            out[..., otop:otop + oh, oleft:oleft + ow] += y.float() * w
            weight[..., otop:otop + oh, oleft:oleft + ow] += w
    return (out / weight).to(y.dtype)


def _starts(size: int, tile: int, overlap: int, align: int) -> list[int]:
    """Tile origins spread evenly from 0 to size - tile, each neighbour overlapping by at least `overlap`."""
    if size <= tile:
        return [0]
    count = math.ceil((size - overlap) / (tile - overlap))
    step = (size - tile) / (count - 1)
    return [round(i * step / align) * align for i in range(count)]


def _feather(length: int, ramp: int, ramp_start: bool, ramp_end: bool, device) -> torch.Tensor:
    """1-D weights: 1 in the middle, a linear ramp (never reaching 0) on edges shared with a neighbouring tile."""
    w = torch.ones(length, device=device)
    ramp = min(ramp, length // 2)
    if ramp > 0:
        up = torch.arange(1, ramp + 1, device=device, dtype=torch.float32) / (ramp + 1)
        if ramp_start:
            w[:ramp] = up
        if ramp_end:
            w[-ramp:] = up.flip(0)
    return w


def _is_integer(value: float) -> bool:
    return value > 0 and abs(value - round(value)) < 1e-9
