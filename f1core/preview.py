"""Live-preview factors: the least-squares linear map from a latent pixel to RGB, fitted on real encodings.

ComfyUI's Latent2RGB previewer applies `latent @ factors + bias` and reads the result in [-1, 1]."""
import torch
import torch.nn.functional as F


@torch.no_grad()
def fit_latent_rgb(vae, images: torch.Tensor) -> dict:
    """images: [B,3,H,W] in [-1,1]. Returns {"factors": C x 3, "bias": 3} as plain lists."""
    latent = vae.encode(images)
    target = F.adaptive_avg_pool2d(images, latent.shape[-2:])
    x = latent.movedim(1, -1).reshape(-1, latent.shape[1]).double()
    y = target.movedim(1, -1).reshape(-1, 3).double()
    x1 = torch.cat([x, torch.ones_like(x[:, :1])], dim=1)
    solution = torch.linalg.lstsq(x1, y).solution  # (C+1) x 3
    return {"factors": solution[:-1].float().tolist(), "bias": solution[-1].float().tolist()}


def smooth_test_images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """Blurred random colour fields in [-1,1]: enough variety to fit a colour map without any dataset."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 4, 4, generator=g) * 2 - 1
    return F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False).clamp(-1, 1)
