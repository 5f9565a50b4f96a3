"""Dynamic symmetric quantization of latents: the scale is the data's absmax, found at run time.

Scales are per (sample, channel) or per (sample, channel, tile x tile block); finer blocks follow a latent whose
magnitude varies across the image. Codes are stored one per int8 (bits <= 8) or int16 element with no bit
packing, so the memory saving is exactly 4x (int8) or 2x (int16) against float32, less the small scale tensor.
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F

GRANULARITIES = ("channel", "tile")


@dataclass(frozen=True)
class QuantizedLatent:
    codes: torch.Tensor   # int8 or int16, the latent's shape, in [-qmax, qmax]
    scale: torch.Tensor   # float32, [B, C, 1, 1] ("channel") or [B, C, ceil(H/tile), ceil(W/tile)] ("tile")
    bits: int
    granularity: str
    tile: int
    shape: torch.Size
    dtype: torch.dtype    # the dtype `dequantize` returns

    def dequantize(self) -> torch.Tensor:
        return (self.codes.float() * _expand(self.scale, self.granularity, self.tile, self.shape)).to(self.dtype)

    @property
    def nbytes(self) -> int:
        return self.codes.numel() * self.codes.element_size() + self.scale.numel() * self.scale.element_size()


def quantize_latent(z: torch.Tensor, bits: int = 8, granularity: str = "channel", tile: int = 8) -> QuantizedLatent:
    """Round `z` [B, C, H, W] to `bits`-bit signed codes; elementwise error is at most scale / 2."""
    _check(z, bits, granularity, tile)
    if not torch.isfinite(z).all():
        raise ValueError("z contains NaN or inf; quantize only finite latents")
    qmax = 2 ** (bits - 1) - 1
    values = z.detach().float()
    absmax = _absmax(values, granularity, tile)
    scale = torch.where(absmax > 0, absmax / qmax, torch.ones_like(absmax))  # an all-zero block keeps codes 0
    codes = (values / _expand(scale, granularity, tile, z.shape)).round().clamp(-qmax, qmax)
    return QuantizedLatent(codes=codes.to(torch.int8 if bits <= 8 else torch.int16), scale=scale, bits=bits,
                           granularity=granularity, tile=tile, shape=z.shape, dtype=z.dtype)


def fake_quantize(z: torch.Tensor, bits: int = 8, granularity: str = "channel", tile: int = 8) -> torch.Tensor:
    """Quantize-dequantize in the forward pass; the gradient passes straight through (identity)."""
    rounded = quantize_latent(z.detach(), bits, granularity, tile).dequantize()
    return z + (rounded - z).detach()


def _check(z, bits, granularity, tile):
    if z.ndim != 4:
        raise ValueError(f"z must be a latent [B, C, H, W]; got shape {tuple(z.shape)}")
    if not isinstance(bits, int) or not 2 <= bits <= 16:
        raise ValueError(f"bits must be an integer from 2 to 16; got {bits!r}")
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {GRANULARITIES}; got {granularity!r}")
    if granularity == "tile" and (not isinstance(tile, int) or tile < 1):
        raise ValueError(f"tile must be a positive integer (block side in latent pixels); got {tile!r}")


def _absmax(values, granularity, tile):
    if granularity == "channel":
        return values.abs().amax(dim=(-2, -1), keepdim=True)
    h, w = values.shape[-2:]
    padded = F.pad(values.abs(), (0, -w % tile, 0, -h % tile))  # zero padding never raises an absmax
    return F.max_pool2d(padded, tile)


def _expand(scale, granularity, tile, shape):
    if granularity == "channel":
        return scale
    full = scale.repeat_interleave(tile, dim=-2).repeat_interleave(tile, dim=-1)
    return full[..., :shape[-2], :shape[-1]]
