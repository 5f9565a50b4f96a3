"""The F.1 VAE as a typed `F1_VAE` object with its own encode and decode nodes, and `core_vae`, the same VAE as a
core `VAE` for core's vae sockets (VAE Decode/Encode and their tiled forms, InpaintModelConditioning, Apply
ControlNet).

Core's `comfy.sd.VAE` constructor picks an architecture from the state dict's keys and knows no F.1 VAE, and
skipping that constructor (building the object by hand) broke other packs when ComfyUI changed. `core_vae` runs
the constructor whole, on the one architecture core builds without weights (its pixel-space VAE), so every field
this core version sets is set; then it puts the F.1 VAE in place of the module core built and states the sizes
that depend on it. F1VAE's encode/decode already follow core's first-stage contract (pixels in [-1, 1] <->
latent), so core's own code (batching, tiling, OOM fallback) runs the F.1 VAE. LATENT outputs are plain
ComfyUI latents, so every core latent node (KSampler, LatentUpscale, SetLatentNoiseMask, ...) accepts them.
"""
import torch

import comfy.model_management
import comfy.model_patcher
import comfy.sd
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


# peak memory of one whole (untiled) pass, in elements per image pixel and per channel of the VAE's widest level:
# measured 4.2-4.4 (RSS rise of a 1024² decode, shipped /8 and /4 VAEs); core sizes batches and offloading by it
PEAK_ELEMENTS_PER_PIXEL_CHANNEL = 6


def core_vae(handle: F1VAEHandle) -> comfy.sd.VAE:
    """The F.1 VAE as a core VAE, sharing the handle's module and ModelPatcher (no second copy of the weights)."""
    vae = comfy.sd.VAE(sd={"pixel_space_vae": torch.tensor(1.0)}, device=handle.load_device, dtype=torch.float32)
    config = handle.vae.config
    width = config.base_channels * max(config.channel_mult)
    vae.first_stage_model = handle.vae
    vae.patcher = handle.patcher
    vae.latent_channels = config.latent_channels
    vae.downscale_ratio = vae.upscale_ratio = config.downscale
    vae.working_dtypes = [torch.float32]

    def peak(pixels, dtype):
        return PEAK_ELEMENTS_PER_PIXEL_CHANNEL * width * pixels * comfy.model_management.dtype_size(dtype)
    vae.memory_used_decode = lambda shape, dtype: peak(shape[2] * shape[3] * config.downscale ** 2, dtype)
    vae.memory_used_encode = lambda shape, dtype: peak(shape[2] * shape[3], dtype)
    vae.size = None  # the constructor measured its pixel-space module; core's RAM accounting reads this
    vae.model_size()
    return vae
