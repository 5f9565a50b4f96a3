"""Classifier-free guidance whose strength depends on the noise level.

D = D_uncond + scale * (D_cond - D_uncond); scale = 1 is the conditional model alone. A GuidanceCurve gives
the scale at each sigma; progress t runs from 0 at sigma_max to 1 at sigma_min, linear in log sigma.
High noise decides composition ("structure"), low noise fine detail ("texture").
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

CURVE_KINDS = ("constant", "linear", "cosine", "interval", "points")
ORDERS = ("structure_first", "texture_first")


def _as_tensor(sigma) -> torch.Tensor:
    return torch.as_tensor(sigma, dtype=torch.float64)


@dataclass(frozen=True)
class GuidanceCurve:
    """Guidance scale as a function of sigma; build one with the classmethods.

    constant: `start` everywhere.  linear / cosine: from `start` at sigma_max to `end` at sigma_min
    (cosine eases in and out).  interval: `start` for sigma in [sigma_lo, sigma_hi], 1 (no guidance)
    elsewhere (Kynkäänniemi et al. 2024, "Applying guidance in a limited interval").  points: piecewise
    linear in log sigma through (sigma, scale) pairs, constant beyond the outermost points.
    """
    kind: str
    start: float = 1.0
    end: float = 1.0
    sigma_lo: float = 0.0
    sigma_hi: float = math.inf
    points: tuple[tuple[float, float], ...] = ()

    def __post_init__(self):
        if self.kind not in CURVE_KINDS:
            raise ValueError(f"kind must be one of {CURVE_KINDS}, got {self.kind!r}")
        if self.kind == "interval" and not 0 <= self.sigma_lo <= self.sigma_hi:
            raise ValueError(f"interval needs 0 <= sigma_lo <= sigma_hi, got {self.sigma_lo}, {self.sigma_hi}")
        if self.kind == "points":
            if not self.points:
                raise ValueError("points needs at least one (sigma, scale) pair")
            sigmas = [s for s, _ in self.points]
            if min(sigmas) <= 0 or len(set(sigmas)) != len(sigmas):
                raise ValueError(f"points need distinct positive sigmas, got {sigmas}")

    @classmethod
    def constant(cls, scale: float) -> "GuidanceCurve":
        return cls("constant", start=scale, end=scale)

    @classmethod
    def linear(cls, start: float, end: float) -> "GuidanceCurve":
        return cls("linear", start=start, end=end)

    @classmethod
    def cosine(cls, start: float, end: float) -> "GuidanceCurve":
        return cls("cosine", start=start, end=end)

    @classmethod
    def interval(cls, scale: float, sigma_lo: float, sigma_hi: float) -> "GuidanceCurve":
        return cls("interval", start=scale, sigma_lo=sigma_lo, sigma_hi=sigma_hi)

    @classmethod
    def from_points(cls, points) -> "GuidanceCurve":
        return cls("points", points=tuple(sorted((float(s), float(g)) for s, g in points)))

    def __call__(self, sigma, sigma_min: float, sigma_max: float):
        """Scale at `sigma` (float -> float, tensor -> tensor of the same shape, dtype and device)."""
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        native = sigma.cpu() if isinstance(sigma, torch.Tensor) else torch.as_tensor(sigma, dtype=torch.float64)
        s = native.double()
        if self.kind == "constant":
            scale = torch.full_like(s, self.start)
        elif self.kind == "interval":
            if not native.is_floating_point():
                native = s
            # compare in the sigma's own precision so a float32 schedule value equal to a bound counts as inside
            inside = (native >= native.new_tensor(self.sigma_lo)) & (native <= native.new_tensor(self.sigma_hi))
            scale = torch.where(inside, torch.full_like(s, self.start), torch.ones_like(s))
        elif self.kind == "points":
            scale = self._interpolate_points(s)
        else:
            t = (math.log(sigma_max) - s.clamp_min(1e-30).log()) / math.log(sigma_max / sigma_min)
            t = t.clamp(0, 1)
            if self.kind == "cosine":
                t = (1 - torch.cos(math.pi * t)) / 2
            scale = self.start + (self.end - self.start) * t
        if isinstance(sigma, torch.Tensor):
            return scale.to(device=sigma.device, dtype=sigma.dtype if sigma.is_floating_point() else torch.float32)
        return float(scale)

    def _interpolate_points(self, s: torch.Tensor) -> torch.Tensor:
        xs = torch.tensor([math.log(p[0]) for p in self.points], dtype=torch.float64)
        ys = torch.tensor([p[1] for p in self.points], dtype=torch.float64)
        if len(xs) == 1:
            return torch.full_like(s, float(ys[0]))
        ls = s.clamp_min(1e-30).log()
        right = torch.searchsorted(xs, ls).clamp(1, len(xs) - 1)
        x0, x1, y0, y1 = xs[right - 1], xs[right], ys[right - 1], ys[right]
        w = ((ls - x0) / (x1 - x0)).clamp(0, 1)
        return y0 + w * (y1 - y0)


def fidelity_to_curve(fidelity: float, order: str = "structure_first",
                      min_scale: float = 1.5, max_scale: float = 9.0) -> GuidanceCurve:
    """A 0-1 slider onto a cosine curve: 0 is creative (weak guidance), 1 follows the prompt closely.

    peak = min_scale + fidelity * (max_scale - min_scale);  rest = 1 + fidelity * (peak - 1) / 2.
    "structure_first" guides at `peak` at high noise easing to `rest` at low noise (fix the layout to the
    prompt, leave texture free); "texture_first" is the reverse. Every scale grows with fidelity.
    """
    if not 0.0 <= fidelity <= 1.0:
        raise ValueError(f"fidelity must be in [0, 1], got {fidelity}")
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    if not 0 <= min_scale <= max_scale:
        raise ValueError(f"need 0 <= min_scale <= max_scale, got {min_scale}, {max_scale}")
    peak = min_scale + fidelity * (max_scale - min_scale)
    rest = 1.0 + fidelity * (peak - 1.0) / 2.0
    return GuidanceCurve.cosine(peak, rest) if order == "structure_first" else GuidanceCurve.cosine(rest, peak)


def cfg_combine(cond: torch.Tensor, uncond: torch.Tensor, scale) -> torch.Tensor:
    """uncond + scale * (cond - uncond); `scale` is a number or a tensor [B] (one per batch item)."""
    if isinstance(scale, torch.Tensor) and scale.ndim > 0:
        if scale.ndim != 1 or scale.shape[0] not in (1, cond.shape[0]):
            raise ValueError(f"scale must be a number or a [B] tensor, got shape {tuple(scale.shape)}")
        scale = scale.to(cond).reshape(-1, *([1] * (cond.ndim - 1)))
    return uncond + scale * (cond - uncond)


def dynamic_cfg(denoise_cond: torch.Tensor, denoise_uncond: torch.Tensor, sigma, curve: GuidanceCurve,
                sigma_min: float, sigma_max: float) -> torch.Tensor:
    """CFG with the scale the curve gives at `sigma` (a number or the sampler's [B] sigma tensor)."""
    return cfg_combine(denoise_cond, denoise_uncond, curve(sigma, sigma_min, sigma_max))


@dataclass(frozen=True)
class PhaseGuidance:
    cond: dict            # model keyword arguments carrying this phase's conditioning
    curve: GuidanceCurve  # its guidance scale


class HierarchicalGuidance:
    """A guided denoiser `model(x, sigma, **extra)` with its own conditioning and curve for the structure
    phase (sigma > switch_sigma) and the texture phase (sigma <= switch_sigma), sharing `uncond`.

    `denoise(x, sigma, **kwargs)` is the conditional denoiser. The phase is chosen by the batch's first
    sigma (samplers use one sigma for the whole batch). Where the scale is exactly 1 the unconditional call
    is skipped.
    """

    def __init__(self, denoise, structure: PhaseGuidance, texture: PhaseGuidance, uncond: dict,
                 switch_sigma: float, sigma_min: float, sigma_max: float):
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        self.denoise, self.structure, self.texture, self.uncond = denoise, structure, texture, uncond
        self.switch_sigma, self.sigma_min, self.sigma_max = switch_sigma, sigma_min, sigma_max

    def phase(self, sigma) -> PhaseGuidance:
        level = float(_as_tensor(sigma).reshape(-1)[0])
        return self.structure if level > self.switch_sigma else self.texture

    def __call__(self, x, sigma, **extra):
        phase = self.phase(sigma)
        scale = phase.curve(torch.as_tensor(sigma, device=x.device).reshape(-1).expand(x.shape[0]),
                            self.sigma_min, self.sigma_max)
        cond = self.denoise(x, sigma, **{**extra, **phase.cond})
        if bool((scale == 1).all()):
            return cond
        uncond = self.denoise(x, sigma, **{**extra, **self.uncond})
        return cfg_combine(cond, uncond, scale)
