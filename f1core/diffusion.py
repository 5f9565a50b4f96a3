"""The F.1 denoiser: EDM preconditioning around the U-Net, exposing the k-diffusion contract
`model(x, sigma, **extra) -> denoised` that ComfyUI's samplers also use.

ComfyUI's `ModelType.EDM` with `ModelSamplingContinuousEDM` computes the same c_in, c_skip, c_out and
timestep, so a U-Net trained here runs unchanged inside ComfyUI.
"""
import torch
import torch.nn as nn

from .config import ScheduleConfig
from .schedules import karras_sigmas


def edm_coefficients(sigma: torch.Tensor, sigma_data: float):
    var = sigma ** 2 + sigma_data ** 2
    c_in = var.rsqrt()
    c_skip = sigma_data ** 2 / var
    c_out = sigma * sigma_data * var.rsqrt()
    return c_in, c_skip, c_out


def sigma_to_timestep(sigma: torch.Tensor) -> torch.Tensor:
    """EDM's c_noise, identical to ComfyUI's ModelSamplingContinuousEDM.timestep."""
    return 0.25 * sigma.log()


class F1Denoiser(nn.Module):
    def __init__(self, unet: nn.Module, schedule: ScheduleConfig):
        super().__init__()
        self.unet = unet
        self.schedule = schedule

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, **extra) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1)
        if sigma.numel() == 1:
            sigma = sigma.expand(x.shape[0])
        s = sigma.reshape(-1, *([1] * (x.ndim - 1)))
        c_in, c_skip, c_out = edm_coefficients(s, self.schedule.sigma_data)
        out = self.unet(x * c_in, sigma_to_timestep(sigma), **extra)
        return c_skip * x + c_out * out

    def sigmas(self, steps: int) -> torch.Tensor:
        s = self.schedule
        return karras_sigmas(steps, s.sigma_min, s.sigma_max, s.rho)
