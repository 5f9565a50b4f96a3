"""Where a text-to-image model loses the scene: the same judge applied along the path from the ground truth to
text-to-image.

    ground truth        the scene engine's renders at the model's resolution (the judge's own ceiling)
    VAE reconstruction  encode + decode: what the decoder can draw at all
    img2img d           the truth's latent noised to the `d` point of the schedule, then sampled with its
                        caption: how much of the scene the U-Net keeps (low d) or rebuilds (high d)
    text-to-image       from pure noise, as `eval model` renders it

A score that falls between two rows names the stage to work on."""
from __future__ import annotations

import torch

from ..data.captions import caption
from ..data.scenes import render_scene
from .evaluate import EvalReport, evaluate_pairs

BATCH = 32


def render_truth(specs, size: int) -> torch.Tensor:
    """The specs rendered at `size` (scene i with seed i), [N, 3, size, size] in [0, 1]."""
    return torch.stack([render_scene(spec, size, seed=i).image.permute(2, 0, 1) for i, spec in enumerate(specs)])


@torch.no_grad()
def reconstruct(vae, truth: torch.Tensor) -> torch.Tensor:
    """Encode + decode images in [0, 1] through `vae`, on its device; the result is on the CPU, in [0, 1]."""
    device = next(vae.parameters()).device
    recon = torch.cat([vae.decode(vae.encode(b.to(device) * 2 - 1)).cpu() for b in truth.split(BATCH)])
    return ((recon + 1) / 2).clamp(0, 1)


def truth_and_reconstruction(pipe, specs) -> tuple[torch.Tensor, torch.Tensor]:
    """The specs rendered at the model's resolution, and their VAE reconstructions."""
    truth = render_truth(specs, pipe.config.resolution)
    return truth, reconstruct(pipe.vae, truth)


def judge(images: torch.Tensor, specs) -> EvalReport:
    from ..pipeline import upscale_for_detector
    return evaluate_pairs(zip((f"{i:04d}" for i in range(len(specs))), upscale_for_detector(images), specs),
                          total=len(specs), progress=False, keep=0)


def diagnose(pipe, specs, denoise_levels=(0.3, 0.5, 0.7, 0.9), steps: int = 20, cfg: float = 4.0,
             seed: int = 0) -> dict[str, EvalReport]:
    """One report per stage of the path, in order (see the module docstring)."""
    truth, recon = truth_and_reconstruction(pipe, specs)
    prompts = [caption(spec) for spec in specs]

    def sample(**kwargs) -> torch.Tensor:  # prompt i is seeded with seed + i whatever the batching
        return torch.cat([pipe(prompts[i:i + BATCH], steps=steps, cfg=cfg, seed=seed + i,
                               **{k: v[i:i + BATCH] if torch.is_tensor(v) else v for k, v in kwargs.items()}).cpu()
                          for i in range(0, len(prompts), BATCH)])

    reports = {"ground truth": judge(truth, specs), "VAE reconstruction": judge(recon, specs)}
    for level in denoise_levels:
        reports[f"img2img {level:g}"] = judge(sample(images=truth, denoise=level), specs)
    reports["text-to-image"] = judge(sample(), specs)
    return reports


@torch.no_grad()
def denoising_error(pipe, specs, sigmas=(0.25, 0.5, 1.0, 2.0, 4.0, 8.0), seed: int = 0,
                    other_captions: bool = False) -> dict[float, float]:
    """Held-out denoising error per noise level: the mean squared error of the captioned (unguided) denoiser
    on the specs' latents, with fixed noise. It falls while the U-Net learns, whatever noise levels training
    favoured, so runs with different training settings compare on one scale. other_captions: each scene denoised
    under another scene's caption (the list rolled by half); the rise over the captioned error is how much the
    U-Net reads the text at that noise level."""
    truth, _ = truth_and_reconstruction(pipe, specs)
    captions = [caption(spec) for spec in specs]
    if other_captions:
        captions = captions[len(captions) // 2:] + captions[:len(captions) // 2]
    errors = {}
    for sigma in sigmas:
        total = 0.0
        for start in range(0, len(specs), BATCH):
            images = truth[start:start + BATCH].to(pipe.device)
            latent = pipe.vae.encode(images * 2 - 1)
            noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(seed + start)).to(pipe.device)
            text = pipe.text.encode(captions[start:start + BATCH])
            denoised = pipe.denoiser(latent + sigma * noise, torch.full((len(latent),), sigma, device=pipe.device),
                                     context=text.context, y=text.pooled, context_mask=text.mask)
            total += float((denoised - latent).square().sum())
        errors[sigma] = total / (len(specs) * latent[0].numel())
    return errors


def diagnosis_table(reports: dict[str, EvalReport]) -> str:
    """Markdown: a row per stage, overall accuracy then the partial-credit recalls."""
    rows = {name: {"overall": report.overall} | report.to_dict()["attributes"] for name, report in reports.items()}
    columns = list(dict.fromkeys(key for row in rows.values() for key in row))
    lines = ["| stage | " + " | ".join(columns) + " |", "|" + "---|" * (len(columns) + 1)]
    lines += ["| " + name + " | " + " | ".join(f"{row[c]:.3f}" if c in row else "-" for c in columns) + " |"
              for name, row in rows.items()]
    return "\n".join(lines)
