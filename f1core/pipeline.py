"""Standalone F.1 text-to-image: a checkpoint, prompts in, images out, with f1core's own samplers and CFG.

The same maths ComfyUI runs through F1CheckpointLoader + F1Sampler (core's BaseModel computes exactly
F1Denoiser, see tests/test_comfy_glue.py), for evaluation, training checks and benchmarks without a server."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .checkpoint import F1Checkpoint, load_checkpoint
from .diffusion import F1Denoiser
from .guidance import GuidanceCurve, cfg_combine
from .sampling import SAMPLERS
from .schedules import full_schedule_steps


class F1Pipeline:
    def __init__(self, checkpoint: F1Checkpoint, device="cpu"):
        if checkpoint.unet is None or checkpoint.vae is None or checkpoint.text is None:
            raise ValueError(f"{checkpoint.path}: text-to-image needs the unet, vae and text parts")
        self.config = checkpoint.config
        self.device = torch.device(device)
        self.denoiser = F1Denoiser(checkpoint.unet, checkpoint.config.schedule).to(self.device).eval()
        self.vae = checkpoint.vae.to(self.device).eval()
        self.text = checkpoint.text.to(self.device).eval()

    @classmethod
    def from_file(cls, path, device="cpu") -> "F1Pipeline":
        return cls(load_checkpoint(path), device)

    @torch.no_grad()
    def __call__(self, prompts: list[str], width: int | None = None, height: int | None = None, steps: int = 20,
                 cfg: float | GuidanceCurve = 4.0, seed: int | list[int] = 0, sampler: str = "dpmpp_2m",
                 negative: str = "", images: torch.Tensor | None = None, denoise: float = 1.0,
                 sigmas: torch.Tensor | None = None, decode: bool = True) -> torch.Tensor:
        """Images [B, 3, H, W] in [0, 1]. Prompt i is seeded with seed + i (or seed[i], given a list), so a
        prompt's image does not depend on what else is in the batch. With `images` ([B, 3, H, W] in [0, 1])
        it is image-to-image: their latents are noised to the `denoise` point of the schedule and sampled from
        there, as in ComfyUI's KSampler (the last `steps` of a schedule of steps / denoise).
        sampler: a name in SAMPLERS or a sampler function of the same contract (a with_reuse wrapper).
        sigmas: an explicit text-to-image schedule (descending, ending in 0) instead of `steps` Karras levels.
        decode=False returns the latent, e.g. a probe's denoised preview.
        cfg: a scale, or a GuidanceCurve read at each step's sigma over the model's range (F1DynamicGuider's)."""
        if callable(sampler):
            sample = sampler
        elif sampler in SAMPLERS:
            sample = SAMPLERS[sampler]
        else:
            raise ValueError(f"sampler {sampler!r} is unknown; choose one of {sorted(SAMPLERS)}")
        if sigmas is not None and images is not None:
            raise ValueError("sigmas: an explicit schedule is for text-to-image; img2img takes steps and denoise")
        schedule_steps = full_schedule_steps(steps, denoise)
        if images is not None:
            if images.shape[0] != len(prompts):
                raise ValueError(f"images: {images.shape[0]} images for {len(prompts)} prompts")
            height, width = images.shape[-2:]
        width = width or self.config.resolution
        height = height or self.config.resolution
        multiple = self.vae.config.downscale * 2
        if width % multiple or height % multiple:
            raise ValueError(f"width and height must be multiples of {multiple}, got {width}x{height}")
        batch = len(prompts)
        text = self.text.encode(list(prompts) + [negative])
        context = torch.cat([text.context[:batch], text.context[batch:].expand(batch, -1, -1)])
        mask = torch.cat([text.mask[:batch], text.mask[batch:].expand(batch, -1)])
        pooled = torch.cat([text.pooled[:batch], text.pooled[batch:].expand(batch, -1)])

        shape = (self.vae.config.latent_channels, height // self.vae.config.downscale,
                 width // self.vae.config.downscale)
        seeds = [seed + i for i in range(batch)] if isinstance(seed, int) else list(seed)
        if len(seeds) != batch:
            raise ValueError(f"seed: {len(seeds)} seeds for {batch} prompts")
        noise = torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(s))
                             for s in seeds]).to(self.device)

        schedule = self.config.schedule

        def guided(x, sigma, **_):
            both = self.denoiser(torch.cat([x, x]), torch.cat([sigma, sigma]), context=context, y=pooled,
                                 context_mask=mask)
            scale = cfg(sigma, schedule.sigma_min, schedule.sigma_max) if isinstance(cfg, GuidanceCurve) else cfg
            return cfg_combine(*both.chunk(2), scale)

        if sigmas is None:
            sigmas = self.denoiser.sigmas(schedule_steps)[-(steps + 1):]
        sigmas = sigmas.to(self.device)
        start = noise * sigmas[0]
        if images is not None:
            start = start + self.vae.encode(images.to(self.device) * 2 - 1)
        latent = sample(guided, start, sigmas, disable=True)
        if not decode:
            return latent
        return ((self.vae.decode(latent) + 1) / 2).clamp(0, 1)


def upscale_for_detector(images: torch.Tensor, min_side: int = 128) -> torch.Tensor:
    """The detector is verified at 128 px and above; small model outputs are enlarged smoothly first."""
    side = min(images.shape[-2:])
    if side >= min_side:
        return images
    return F.interpolate(images, scale_factor=min_side / side, mode="bilinear", align_corners=False).clamp(0, 1)
