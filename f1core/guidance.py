"""Classifier-free guidance whose strength depends on the noise level.

D = D_uncond + scale * (D_cond - D_uncond); scale = 1 is the conditional model alone. A GuidanceCurve gives
the scale at each sigma; progress t runs from 0 at sigma_max to 1 at sigma_min, linear in log sigma.
High noise decides composition ("structure"), low noise fine detail ("texture").

`curve_from_settings` turns a guider's settings (a curve name and its numbers, or a 'sigma:scale' list)
into a GuidanceCurve; every error names the setting at fault.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

CURVE_KINDS = ("constant", "linear", "cosine", "interval", "points")
CURVE_SETTINGS = ("fidelity",) + CURVE_KINDS  # "fidelity": the 0-1 slider of fidelity_to_curve
ORDERS = ("structure_first", "texture_first")
DEFAULT_ORDER = "structure_first"  # measured in benchmarks/README.md, "## Sampler"


def sigma_at(progress: float, sigma_min: float, sigma_max: float) -> float:
    """The sigma at `progress` (0 at sigma_max, 1 at sigma_min), linear in log sigma as the curves are."""
    return math.exp(math.log(sigma_max) - progress * math.log(sigma_max / sigma_min))


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
        if not all(math.isfinite(v) for v in (self.start, self.end, *(g for _, g in self.points))):
            raise ValueError(f"guidance scales must be finite numbers, got start={self.start}, end={self.end}, "
                             f"points={list(self.points)}")
        if self.kind == "interval" and not 0 <= self.sigma_lo <= self.sigma_hi:  # also refuses NaN
            raise ValueError(f"'sigma_lo' ({self.sigma_lo}) and 'sigma_hi' ({self.sigma_hi}) must satisfy "
                             "0 <= sigma_lo <= sigma_hi; swap them or widen the interval")
        if self.kind == "points":
            if not self.points:
                raise ValueError("'points' needs at least one sigma:scale pair, e.g. '14:7, 0.1:1.5'")
            sigmas = [s for s, _ in self.points]
            if not all(0 < s < math.inf for s in sigmas) or len(set(sigmas)) != len(sigmas):
                raise ValueError(f"'points' needs distinct positive finite sigmas, got {sigmas}")

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


def fidelity_to_curve(fidelity: float, order: str = DEFAULT_ORDER,
                      min_scale: float = 1.5, max_scale: float = 9.0) -> GuidanceCurve:
    """A 0-1 slider onto a cosine curve: 0 is creative (weak guidance), 1 follows the prompt closely.

    peak = min_scale + fidelity * (max_scale - min_scale);  rest = 1 + fidelity * (peak - 1) / 2.
    "structure_first" guides at `peak` at high noise easing to `rest` at low noise (fix the layout to the
    prompt, leave texture free); "texture_first" is the reverse. Every scale grows with fidelity.
    """
    if not 0.0 <= fidelity <= 1.0:
        raise ValueError(f"'fidelity' must be in [0, 1], got {fidelity}")
    if order not in ORDERS:
        raise ValueError(f"'order' must be one of {ORDERS}, got {order!r}")
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


def parse_points(text: str) -> tuple[tuple[float, float], ...]:
    """'sigma:scale, sigma:scale, ...' (commas or new lines between pairs) -> pairs."""
    pairs = []
    for item in filter(None, (part.strip() for part in text.replace("\n", ",").split(","))):
        try:
            sigma, scale = (float(v) for v in item.split(":"))
        except ValueError:
            raise ValueError(f"'points' has {item!r}; write pairs as sigma:scale separated by commas, "
                             "e.g. '14:7, 1:4, 0.1:1.5'") from None
        pairs.append((sigma, scale))
    return tuple(pairs)


def curve_from_settings(curve: str, fidelity: float, order: str, scale_start: float, scale_end: float,
                        sigma_lo: float, sigma_hi: float, points: str) -> GuidanceCurve:
    """The curve that `curve` (one of CURVE_SETTINGS) names, from the settings that kind reads."""
    if curve == "fidelity":
        return fidelity_to_curve(fidelity, order)
    if curve == "constant":
        return GuidanceCurve.constant(scale_start)
    if curve == "linear":
        return GuidanceCurve.linear(scale_start, scale_end)
    if curve == "cosine":
        return GuidanceCurve.cosine(scale_start, scale_end)
    if curve == "interval":
        return GuidanceCurve.interval(scale_start, sigma_lo, sigma_hi)
    if curve == "points":
        return GuidanceCurve.from_points(parse_points(points))
    raise ValueError(f"'curve' must be one of {CURVE_SETTINGS}, got {curve!r}")
