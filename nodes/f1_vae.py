"""The F.1 VAE as a typed `F1_VAE` object with its own encode and decode nodes.

Core's `comfy.sd.VAE` can only be built for architectures its constructor knows; reaching it any other way
means skipping that constructor, which broke other packs when ComfyUI changed. LATENT outputs are plain
ComfyUI latents, so every core latent node (KSampler, LatentUpscale, SetLatentNoiseMask, ...) accepts them.
"""
import torch

import comfy.model_management
import comfy.model_patcher
import comfy.utils

from ..f1core.models.vae import F1VAE
from .f1_limits import interruptible

TILE_PIXELS = 512  # images with a side above this encode/decode in overlapping tiles
DECODE_OVERLAP = 8  # latent pixels shared by neighbouring decode tiles


class F1VAEHandle:
    def __init__(self, vae: F1VAE):
        self.vae = vae.eval()
        self.load_device = comfy.model_management.vae_device()
        self.patcher = comfy.model_patcher.ModelPatcher(
            self.vae, load_device=self.load_device, offload_device=comfy.model_management.vae_offload_device())

    @property
    def latent_channels(self) -> int:
        return self.vae.config.latent_channels

    @property
    def downscale(self) -> int:
        return self.vae.config.downscale

    @property
    def size_multiple(self) -> int:
        return self.downscale * 2  # the coarse level sits one halving below the latent grid

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """IMAGE [B,H,W,C] in 0..1 -> normalised latent [B,C,h,w]."""
        comfy.model_management.load_models_gpu([self.patcher])
        image = pixels[..., :3].movedim(-1, 1).to(self.load_device, torch.float32) * 2 - 1
        with torch.inference_mode(), interruptible():  # /interrupt reaches between tiles
            if max(image.shape[-2:]) > TILE_PIXELS:
                latent = self.vae.encode_tiled(image, tile=TILE_PIXELS)
            else:
                latent = self.vae.encode(image)
        return latent.to(comfy.model_management.intermediate_device(), torch.float32)

    def decode(self, latent: torch.Tensor, bf16: bool = False) -> torch.Tensor:
        """latent [B,C,h,w] -> IMAGE [B,H,W,3] in 0..1, one batch item at a time with a progress bar.
        bf16: decode under bfloat16 autocast (F1VAE.decode)."""
        comfy.model_management.load_models_gpu([self.patcher])
        # TILE_PIXELS of image per tile beyond the overlap: 1024² decodes in 2x2 tiles, not 3x3 (2.25x the pixels)
        tile = TILE_PIXELS // self.downscale + DECODE_OVERLAP
        pbar = comfy.utils.ProgressBar(latent.shape[0])
        images = []
        with torch.inference_mode(), interruptible():  # /interrupt reaches between tiles
            for item in latent.split(1):
                comfy.model_management.throw_exception_if_processing_interrupted()
                item = item.to(self.load_device, torch.float32)
                if max(item.shape[-2:]) > tile:
                    image = self.vae.decode_tiled(item, tile=tile, overlap=DECODE_OVERLAP, bf16=bf16)
                else:
                    image = self.vae.decode(item, bf16=bf16)
                images.append(((image.clamp(-1, 1) + 1) / 2).movedim(1, -1).float().cpu())
                pbar.update(1)
        return torch.cat(images)
