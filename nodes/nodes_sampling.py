import comfy.samplers
from comfy_api.latest import io

from ..f1core import limits
from . import f1_limits
from .f1_inputs import declared_limits_error, raise_if_invalid
from .f1_sampling import karras_sigmas_for, ksampler, run_guided



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
            description="KSampler with dpmpp_2m and karras fixed, run by f1core's own DPM-Solver++(2M): the solver "
                        "f1core.pipeline, the evaluation and the benchmarks use, so a graph samples exactly what they "
                        "measure. Works on any MODEL.",
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
    def validate_inputs(cls, steps, cfg, denoise):
        error = declared_limits_error(cls, steps=steps, cfg=cfg, denoise=denoise)
        if error is None and isinstance(denoise, float) and 0.0 < denoise < limits.MIN_DENOISE:
            # the schedule holds steps / denoise levels, so a tiny denoise would allocate without bound
            error = (f"F1Sampler: input 'denoise' is {denoise:g}; use 0 (return the latent unchanged) or at least "
                     f"{limits.MIN_DENOISE}")
        max_steps = f1_limits.current().max_steps
        if error is None and isinstance(steps, int) and steps > max_steps:
            error = (f"F1Sampler: input 'steps' is {steps}, over the step budget of {max_steps}; lower it or raise "
                     f"{limits.ENV['max_steps']}")
        return error or True

    @classmethod
    def execute(cls, model, positive, negative, latent_image, seed, steps, cfg, denoise) -> io.NodeOutput:
        raise_if_invalid(cls.validate_inputs(steps, cfg, denoise))
        if denoise <= 0.0:
            return io.NodeOutput(latent_image)
        guider = comfy.samplers.CFGGuider(model)
        guider.set_conds(positive, negative)
        guider.set_cfg(cfg)
        sigmas = karras_sigmas_for(model, steps, denoise)
        return io.NodeOutput(run_guided("F1Sampler", guider, ksampler("dpmpp_2m"), sigmas, latent_image, seed))


NODES = [F1Sampler]
