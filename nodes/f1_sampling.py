"""SAMPLER and sampling glue: f1core's samplers as core SAMPLERs, SamplerCustomAdvanced's path for one-node
samplers (`run_guided`), and the adaptive schedule's probe, step choice and plot over a MODEL's sigma range."""
import logging
import math

import comfy.model_management
import comfy.sample
import comfy.samplers
import comfy.utils
import latent_preview

from ..f1core import plot, sampling, schedules
from . import f1_limits
from .f1_guider import sigma_range

logger = logging.getLogger(__name__)


def ksampler(name: str, **options) -> comfy.samplers.KSAMPLER:
    """An f1core sampler as a core SAMPLER: same (model, x, sigmas, extra_args, callback, disable) contract."""
    return comfy.samplers.KSAMPLER(sampling.SAMPLERS[name], extra_options=options)


def with_lambda_progress(sampler):
    """For a sampler whose step count is unknown in advance: report progress as the share of log sigma
    already covered, spread over the len(sigmas) - 1 slots core's progress bar expects."""

    def sample(model, x, sigmas, extra_args=None, callback=None, disable=None, **options):
        if callback is None:
            return sampler(model, x, sigmas, extra_args=extra_args, disable=disable, **options)
        levels = sigmas.tolist()
        top, bottom = math.log(levels[0]), math.log(min(s for s in levels if s > 0))
        slots = len(levels) - 1

        def report(info):
            done = (top - math.log(float(info["sigma"]))) / (top - bottom) if top > bottom else 1.0
            callback({**info, "i": min(slots - 1, max(0, round(done * (slots - 1))))})

        return sampler(model, x, sigmas, extra_args=extra_args, callback=report, disable=disable, **options)

    return sample


def make_sampler(name: str, reuse_threshold: float = 0.0, reuse_stats: dict | None = None,
                 reuse_rule: str = "input_change", **options):
    """A core SAMPLER over f1core's `name`, optionally reusing model outputs (ReuseCache) below the threshold,
    by one of sampling.REUSE_RULES."""
    if name not in sampling.SAMPLERS:
        raise ValueError(f"sampler_name must be one of {sorted(sampling.SAMPLERS)}, got {name!r}")
    if reuse_rule not in sampling.REUSE_RULES:
        raise ValueError(f"reuse_rule must be one of {list(sampling.REUSE_RULES)}, got {reuse_rule!r}")
    if reuse_threshold <= 0 and name != "dpmpp_adaptive":
        return ksampler(name, **options)
    function = sampling.SAMPLERS[name]
    if reuse_threshold > 0:
        calibration = sampling.REUSE_RULES[reuse_rule]
        cap = 1 if calibration is None else calibration.max_reused_in_row
        function = sampling.with_reuse(function, reuse_threshold, reuse_stats, cap, calibration)
    if name == "dpmpp_adaptive":
        function = with_lambda_progress(function)
    return comfy.samplers.KSAMPLER(function, extra_options=options)


def karras_sigmas_for(model, steps: int, denoise: float):
    """`steps` Karras noise levels over the model's own sigma range; denoise < 1 keeps the low-noise tail."""
    total = schedules.full_schedule_steps(steps, denoise)
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
    f1_limits.raise_if_over_budget(node, "latent_image", samples.shape, f1_limits.latent_scale(model))
    noise = comfy.sample.prepare_noise(samples, seed, latent.get("batch_index"))
    callback = latent_preview.prepare_callback(model, sigmas.shape[-1] - 1)
    out = guider.sample(noise, samples, sampler, sigmas, denoise_mask=latent.get("noise_mask"), callback=callback,
                        disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=seed)
    result = latent.copy()
    result["samples"] = out.to(comfy.model_management.intermediate_device())
    return result


def probe_complexity(node: str, guider, latent: dict, seed: int, probe_steps: int):
    """Image complexity [B] of a quick preview: `probe_steps` DPM-Solver++(2M) steps from sigma_max down to
    the probe sigma, whose denoised prediction is the preview. Costs probe_steps guided model calls."""
    if probe_steps < 2:
        raise ValueError(f"{node}: input 'probe_steps' must be at least 2 (the first call only sees noise), "
                         f"got {probe_steps}")
    sigmas = schedules.probe_sigmas(probe_steps, *sigma_range(guider.model_patcher))  # ends in 0: the preview
    preview = run_guided(node, guider, ksampler("dpmpp_2m"), sigmas, latent, seed)["samples"]
    return schedules.image_complexity(preview.float().cpu()), float(sigmas[-2])


def choose_sigmas(node: str, model, min_steps: int, max_steps: int, complexity, prompt: str, source: str):
    """adaptive_sigmas over the model's range: (sigmas, ScheduleDecision, the reason as one log / UI line)."""
    if not 1 <= min_steps <= max_steps:
        raise ValueError(f"{node}: inputs 'min_steps' ({min_steps}) and 'max_steps' ({max_steps}) need "
                         "1 <= min_steps <= max_steps; raise max_steps")
    sigma_min, sigma_max = sigma_range(model)
    prompt_score = schedules.prompt_complexity(prompt) if prompt.strip() else None
    sigmas, decision = schedules.adaptive_sigmas(complexity, sigma_min, sigma_max, min_steps, max_steps,
                                                 prompt=prompt_score)
    summary = f"{decision.summary()}; image complexity {source}"
    logger.info("%s: %s", node, summary)
    return sigmas, decision, summary


def schedule_image(sigmas, decision: schedules.ScheduleDecision):
    """The chosen noise levels beside a plain Karras schedule (rho 7) of the same length, as an IMAGE."""
    plain = schedules.karras_sigmas(decision.steps, decision.sigma_min, decision.sigma_max)
    title = (f"adaptive schedule: {decision.steps} steps (range {decision.min_steps}-{decision.max_steps}), "
             f"complexity {decision.complexity:.2f}")
    return plot.schedule_plot({f"this schedule (rho {decision.rho:.2f})": sigmas.tolist(),
                               "plain Karras (rho 7)": plain.tolist()}, title)
