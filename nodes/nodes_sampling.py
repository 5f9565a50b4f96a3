import comfy.model_management
import comfy.sample
import comfy.samplers
import comfy.utils
import latent_preview
from comfy_api.latest import io

from ..f1core import sampling


def ksampler(name: str, **options) -> comfy.samplers.KSAMPLER:
    """An f1core sampler as a core SAMPLER: same (model, x, sigmas, extra_args, callback, disable) contract."""
    return comfy.samplers.KSAMPLER(sampling.SAMPLERS[name], extra_options=options)


def karras_sigmas_for(model, steps: int, denoise: float):
    """`steps` Karras noise levels over the model's own sigma range; denoise < 1 keeps the low-noise tail."""
    total = steps if denoise >= 1.0 else int(steps / denoise)
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "karras", total).cpu()
    return sigmas[-(steps + 1):]


def checked_latent(node: str, model, latent: dict):
    """The latent's samples, with core's fix for empty latents; a latent made for another model is an error."""
    samples = comfy.sample.fix_empty_latent_channels(model, latent["samples"])
    expected = model.get_model_object("latent_format").latent_channels
    if samples.ndim == 4 and samples.shape[1] != expected:
        raise ValueError(f"{node}: input 'latent_image' has {samples.shape[1]} channels but this model works on "
                         f"{expected}; make the latent with this model's own VAE or empty-latent node")
    return samples


def run_guided(node: str, guider, sampler, sigmas, latent: dict, seed: int) -> dict:
    """SamplerCustomAdvanced's path: seeded noise, masks, previews, progress and interrupt as in core."""
    model = guider.model_patcher
    samples = checked_latent(node, model, latent)
    noise = comfy.sample.prepare_noise(samples, seed, latent.get("batch_index"))
    callback = latent_preview.prepare_callback(model, sigmas.shape[-1] - 1)
    out = guider.sample(noise, samples, sampler, sigmas, denoise_mask=latent.get("noise_mask"), callback=callback,
                        disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=seed)
    result = latent.copy()
    result["samples"] = out.to(comfy.model_management.intermediate_device())
    return result


def sampling_inputs() -> list:
    """The inputs every one-node sampler takes, as in core's KSampler."""
    return [
        io.Model.Input("model", tooltip="The model to sample: F.1 or any MODEL ComfyUI loads."),
        io.Conditioning.Input("positive", tooltip="What the image should show."),
        io.Conditioning.Input("negative", tooltip="What to steer away from (an empty prompt is fine)."),
        io.Latent.Input("latent_image", tooltip="The latent to start from: empty for text-to-image, encoded for "
                                                "image-to-image; a noise mask is respected."),
        io.Int.Input("seed", default=0, min=0, max=0xffffffffffffffff, control_after_generate=True,
                     tooltip="Noise seed; the same seed and settings give the same image."),
    ]


class F1Sampler(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="F1Sampler",
            display_name="F.1 Sampler (DPM-Solver++ 2M)",
            category="F1/sampling",
            description="Samples with f1core's DPM-Solver++(2M) over Karras noise levels. Works on any MODEL.",
            inputs=[
                *sampling_inputs(),
                io.Int.Input("steps", default=20, min=1, max=1000, tooltip="Number of solver steps."),
                io.Float.Input("cfg", default=4.0, min=0.0, max=100.0, step=0.1, round=0.01,
                               tooltip="Classifier-free guidance scale: higher follows the prompt more closely; "
                                       "1 turns guidance off."),
                io.Float.Input("denoise", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="Share of the noise schedule to run: 1 for text-to-image, lower keeps more "
                                       "of latent_image."),
            ],
            outputs=[io.Latent.Output(tooltip="The sampled latent; decode it with F1VAEDecode.")],
        )

    @classmethod
    def execute(cls, model, positive, negative, latent_image, seed, steps, cfg, denoise) -> io.NodeOutput:
        if denoise <= 0.0:
            return io.NodeOutput(latent_image)
        guider = comfy.samplers.CFGGuider(model)
        guider.set_conds(positive, negative)
        guider.set_cfg(cfg)
        sigmas = karras_sigmas_for(model, steps, denoise)
        return io.NodeOutput(run_guided("F1Sampler", guider, ksampler("dpmpp_2m"), sigmas, latent_image, seed))


NODES = [F1Sampler]
