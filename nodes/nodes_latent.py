import torch

import comfy.model_management
from comfy_api.latest import io

from ..f1core.quantize import quantize_latent
from . import f1_limits
from .f1_inputs import declared_limits_error, raise_if_invalid
from .f1_vae import core_vae
from .nodes_loaders import F1Vae


def _check_latent(node: str, vae, samples: torch.Tensor):
    if samples.ndim != 4 or samples.shape[1] != vae.latent_channels:
        raise ValueError(
            f"{node}: input 'samples' has shape {tuple(samples.shape)}, but the F.1 VAE expects "
            f"{vae.latent_channels} latent channels as [batch, {vae.latent_channels}, h, w]; make the latent "
            "with F1EmptyLatent or F1VAEEncode rather than a core latent node for another model")
    if not torch.isfinite(samples).all():
        raise ValueError(f"{node}: input 'samples' contains NaN or infinite values; the sampler diverged. "
                         "Lower cfg, use more steps, or run the model in float32")


class F1EmptyLatent(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="F1EmptyLatent",
            display_name="Empty F.1 Latent",
            category="F1/latent",
            description="An all-zero F.1 latent of the given image size, the start of text-to-image. Sides are "
                        "multiples of 16, which every F.1 VAE takes (its coarse latent level is 1/16 of the image at "
                        "/8, 1/8 at /4).",
            inputs=[
                F1Vae.Input("vae", tooltip="The F1_VAE of Load F.1 Checkpoint; it sets the latent's channels."),
                io.Int.Input("width", default=512, min=64, max=8192, step=16,
                             tooltip="Image width in pixels, a multiple of 16."),
                io.Int.Input("height", default=512, min=64, max=8192, step=16,
                             tooltip="Image height in pixels, a multiple of 16."),
                io.Int.Input("batch_size", default=1, min=1, max=64, tooltip="Images per batch."),
            ],
            outputs=[io.Latent.Output(tooltip="An empty latent for a sampler's latent_image.")],
        )

    @classmethod
    def validate_inputs(cls, width, height, batch_size):
        # naming the inputs turns core's range checks off for them, so declared_limits_error repeats those
        error = declared_limits_error(cls, width=width, height=height, batch_size=batch_size)
        for name, value in (("width", width), ("height", height)):
            if error is None and isinstance(value, int) and value % 16:
                error = (f"F1EmptyLatent: input '{name}' must be a multiple of 16 (got {value}); "
                         f"try {max(64, round(value / 16) * 16)}")
        return error or f1_limits.pixels_error("F1EmptyLatent", width, height, batch_size,
                                               "width, height or batch_size") or True

    @classmethod
    def execute(cls, vae, width, height, batch_size) -> io.NodeOutput:
        raise_if_invalid(cls.validate_inputs(width, height, batch_size))
        latent = torch.zeros([batch_size, vae.latent_channels, height // vae.downscale, width // vae.downscale],
                             device=comfy.model_management.intermediate_device())
        return io.NodeOutput({"samples": latent})


class F1VAEEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="F1VAEEncode",
            display_name="F.1 VAE Encode",
            category="F1/latent",
            description="Encodes an image into F.1's two-level latent (coarse global + fine detail). "
                        "latent_bits applies dynamic quantization: a scale chosen per channel or tile at run time.",
            inputs=[
                F1Vae.Input("vae", tooltip="The F1_VAE of Load F.1 Checkpoint."),
                io.Image.Input("pixels", tooltip="The image to encode; sides must be multiples of 16."),
                io.Combo.Input("latent_bits", options=["off", "8", "6", "4"], default="off",
                               tooltip="Round-trip the latent through dynamic quantization at this many bits, to "
                                       "see its effect; off keeps full precision."),
                io.Combo.Input("granularity", options=["tile", "channel"], default="tile",
                               tooltip="Quantization scale chosen per spatial tile (more accurate) or per channel."),
            ],
            outputs=[io.Latent.Output(tooltip="The image's F.1 latent (dequantized if latent_bits is set), for a "
                                              "sampler with denoise < 1 or for F1VAEDecode.")],
        )

    @classmethod
    def validate_inputs(cls, latent_bits, granularity):
        return declared_limits_error(cls, latent_bits=latent_bits, granularity=granularity) or True

    @classmethod
    def execute(cls, vae, pixels, latent_bits, granularity) -> io.NodeOutput:
        raise_if_invalid(cls.validate_inputs(latent_bits, granularity))
        if pixels.ndim != 4 or pixels.shape[-1] not in (3, 4):
            raise ValueError(f"F1VAEEncode: input 'pixels' must be an IMAGE batch [B, H, W, 3], got shape "
                             f"{tuple(pixels.shape)}; connect an image output")
        f1_limits.raise_if_over_budget("F1VAEEncode", "pixels", pixels.shape)
        h, w = pixels.shape[1:3]
        m = vae.size_multiple
        if h % m or w % m:
            raise ValueError(f"F1VAEEncode: input 'pixels' is {w}x{h}; F.1 needs sides that are multiples of {m}. "
                             f"Crop or scale it to {w // m * m}x{h // m * m} first (e.g. with ImageScale)")
        latent = vae.encode(pixels)
        if latent_bits == "off":
            return io.NodeOutput({"samples": latent})
        q = quantize_latent(latent, bits=int(latent_bits), granularity=granularity)
        restored = q.dequantize()
        rms = (restored - latent).pow(2).mean().sqrt().item()
        note = (f"{latent_bits}-bit {granularity} codes: {latent.numel() * 4 / q.nbytes:.1f}x smaller than fp32, "
                f"RMS error {rms:.4f}")
        return io.NodeOutput({"samples": restored}, ui={"text": [note]})


DECODE_PRECISIONS = {"fp32": False, "bf16": True}  # F1VAEDecode's precision -> F1VAE.decode's bf16


class F1VAEDecode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="F1VAEDecode",
            display_name="F.1 VAE Decode",
            category="F1/latent",
            description="Decodes an F.1 latent to an image; large images decode in overlapping tiles.",
            inputs=[F1Vae.Input("vae", tooltip="The F1_VAE of Load F.1 Checkpoint."),
                    io.Latent.Input("samples", tooltip="An F.1 latent, from a sampler or F1VAEEncode."),
                    io.Combo.Input("precision", options=list(DECODE_PRECISIONS), default="fp32", optional=True,
                                   tooltip="fp32: the exact decode. bf16: bfloat16 arithmetic, 1.8-3x faster on "
                                           "CPUs with bf16 instructions (AVX512-BF16 or AMX) and faster on recent "
                                           "GPUs, 0.02 dB PSNR below fp32 on the shipped model; slower on CPUs "
                                           "without them.")],
            outputs=[io.Image.Output(tooltip="The decoded image batch.")],
        )

    @classmethod
    def validate_inputs(cls, precision="fp32"):
        return declared_limits_error(cls, precision=precision) or True

    @classmethod
    def execute(cls, vae, samples, precision="fp32") -> io.NodeOutput:
        raise_if_invalid(cls.validate_inputs(precision))
        latent = samples["samples"]
        _check_latent("F1VAEDecode", vae, latent)
        f1_limits.raise_if_over_budget("F1VAEDecode", "samples", latent.shape, vae.downscale)
        return io.NodeOutput(vae.decode(latent, bf16=DECODE_PRECISIONS[precision]))


class F1VAEToVAE(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="F1VAEToVAE",
            display_name="F.1 VAE to VAE",
            category="F1/latent",
            description="The F.1 VAE as a core VAE, for core's vae sockets: VAE Decode and Encode (and their "
                        "tiled forms), InpaintModelConditioning, Apply ControlNet. The same weights, not a copy; "
                        "core's VAE Decode gives the same image as F.1 VAE Decode up to 512 px. F.1 VAE Decode "
                        "and Encode keep the pack's pixel budget, per-image progress and latent checks.",
            inputs=[F1Vae.Input("vae", tooltip="The F1_VAE of Load F.1 Checkpoint.")],
            outputs=[io.Vae.Output(tooltip="A core VAE running the F.1 VAE. Images for it must have sides "
                                           "that are multiples of twice the VAE's scale (16 for /8).")],
        )

    @classmethod
    def execute(cls, vae) -> io.NodeOutput:
        return io.NodeOutput(core_vae(vae))


NODES = [F1EmptyLatent, F1VAEEncode, F1VAEDecode, F1VAEToVAE]
