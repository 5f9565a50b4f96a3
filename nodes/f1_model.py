"""MODEL glue: the F.1 U-Net as a native ComfyUI model (BASE config -> BaseModel -> ModelPatcher).

ModelType.EDM with ModelSamplingContinuousEDM computes exactly the preconditioning of f1core.diffusion,
so core samplers, schedulers, guiders and patches treat F.1 like any other model.

F.1's text context keeps only a prompt's own tokens, so a prompt and its negative rarely have lengths core's
CONDCrossAttn batches (equal, or a least common multiple at most 4x the shorter), and each step took two U-Net
calls. F1Context batches contexts of any lengths, zero-padded, with F1ContextMask hiding the padding from
attention (the `context_mask` the U-Net and the F.1 ControlNet take). An attn2 replacement patch attends by
itself: it gets the mask as extra_options["context_mask"] (the pack's regional patch reads it; one that ignores
it also attends to the padding).
"""
import torch

import comfy.conds
import comfy.latent_formats
import comfy.model_base
import comfy.model_management
import comfy.model_patcher
import comfy.supported_models_base

from ..f1core.models.attention import NEVER, pad_tokens
from ..f1core.models.unet import F1UNet


class F1Context(comfy.conds.CONDCrossAttn):
    def can_concat(self, other):
        a, b = self.cond.shape, other.cond.shape
        return a[0] == b[0] and a[2] == b[2] and self.cond.device == other.cond.device

    def concat(self, others):
        return pad_tokens([self.cond] + [other.cond for other in others])


class F1ContextMask(comfy.conds.CONDRegular):
    """[B, L] additive key bias of a context: 0 on its tokens, NEVER on the padding its batch adds. Additive, not
    bool: core casts every float cond to the model's dtype."""

    def can_concat(self, other):
        return self.cond.shape[0] == other.cond.shape[0] and self.cond.device == other.cond.device

    def concat(self, others):
        return pad_tokens([self.cond] + [other.cond for other in others], value=NEVER)


class F1LatentFormat(comfy.latent_formats.LatentFormat):
    """Latents leave the F.1 VAE already normalised (unit variance), so the scale is 1."""

    def __init__(self, latent_channels: int = 6, latent_rgb: dict | None = None, downscale: int = 8):
        self.latent_channels = latent_channels
        self.spacial_downscale_ratio = downscale  # the name later ComfyUI versions give this on every format
        if latent_rgb is not None:
            self.latent_rgb_factors = latent_rgb["factors"]
            self.latent_rgb_factors_bias = latent_rgb["bias"]


def _build_unet(f1_unet, dtype=None, device=None, operations=None, **_):
    return F1UNet(f1_unet, operations=operations, device=device, dtype=dtype)


class F1ModelConfig(comfy.supported_models_base.BASE):
    unet_extra_config = {}
    supported_inference_dtypes = [torch.bfloat16, torch.float16, torch.float32]
    memory_usage_factor = 1.5

    def __init__(self, f1_config, latent_rgb=None):
        s = f1_config.schedule
        self.sampling_settings = {"sigma_min": s.sigma_min, "sigma_max": s.sigma_max, "sigma_data": s.sigma_data}
        super().__init__({"f1_unet": f1_config.unet, "in_channels": f1_config.unet.in_channels})
        self.latent_format = F1LatentFormat(f1_config.unet.in_channels, latent_rgb, f1_config.vae.downscale)

    def inpaint_model(self):
        return False  # six latent channels are F.1's own, not an inpainting concat

    def get_model(self, state_dict, prefix="", device=None):
        return F1BaseModel(self, device=device)


class F1BaseModel(comfy.model_base.BaseModel):
    def __init__(self, model_config, device=None):
        super().__init__(model_config, model_type=comfy.model_base.ModelType.EDM, device=device,
                         unet_model=_build_unet)

    def extra_conds(self, **kwargs):
        out = super().extra_conds(**kwargs)
        context = out.get("c_crossattn")
        if context is not None:
            out["c_crossattn"] = F1Context(context.cond)
            out["context_mask"] = F1ContextMask(torch.zeros(context.cond.shape[:2]))
        return out

    def encode_adm(self, **kwargs):
        pooled = kwargs.get("pooled_output")
        if pooled is None:  # conditioning from a node that sets no pooled vector: a neutral one
            width = self.model_config.unet_config["f1_unet"].pooled_dim
            return torch.zeros((1, width), device=kwargs["device"])
        return pooled


def empty_model_patcher(f1_config, latent_rgb=None) -> comfy.model_patcher.ModelPatcher:
    """The MODEL with its U-Net built once, directly inside core's model, on core's operations (no weight
    initialisation), in the dtype and on the devices core's loaders pick; the weights are loaded into
    `patcher.model.diffusion_model` afterwards."""
    load_device = comfy.model_management.get_torch_device()
    offload_device = comfy.model_management.unet_offload_device()
    model_config = F1ModelConfig(f1_config, latent_rgb)
    with torch.device("meta"):  # core sizes the dtype choice by the parameter count
        params = sum(p.numel() for p in F1UNet(f1_config.unet).parameters())
    unet_dtype = comfy.model_management.unet_dtype(model_params=params,
                                                   supported_dtypes=model_config.supported_inference_dtypes)
    manual_cast = comfy.model_management.unet_manual_cast(unet_dtype, load_device,
                                                          model_config.supported_inference_dtypes)
    model_config.set_inference_dtype(unet_dtype, manual_cast)
    model = model_config.get_model({}, device=offload_device)
    return comfy.model_patcher.ModelPatcher(model, load_device=load_device, offload_device=offload_device)


def model_patcher_from_unet(f1_config, unet_state: dict, latent_rgb=None) -> comfy.model_patcher.ModelPatcher:
    """The MODEL from U-Net weights in memory (tests, benchmarks); the loader reads them from the file."""
    patcher = empty_model_patcher(f1_config, latent_rgb)
    patcher.model.diffusion_model.load_state_dict(unet_state, strict=True)
    return patcher
