"""Noise-level schedules (SIGMAS): descending sigmas ending in 0, as ComfyUI's samplers expect."""
import torch


def karras_sigmas(steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """Karras et al. (2022) eq. 5: `steps` noise levels spaced in sigma^(1/rho), then a final 0."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sigmas = (hi + ramp * (lo - hi)) ** rho
    return torch.cat([sigmas, sigmas.new_zeros(1)]).float()
