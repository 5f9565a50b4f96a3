"""Adaptive sampling nodes: f1core samplers as SAMPLER, complexity-driven SIGMAS, a GUIDER whose CFG scale
follows a curve over the noise level (with optional structure / texture prompts), and one node that does
all of it for the common case. They plug into core's SamplerCustomAdvanced and work on any MODEL."""
import logging
import math

import comfy.sample
import comfy.samplers
import comfy.utils
import latent_preview
from comfy_api.latest import io

from ..f1core import guidance, sampling, schedules
from .nodes_sampling import checked_latent, ksampler, run_guided, sampling_inputs

logger = logging.getLogger(__name__)

# The probe denoises down to the geometric middle of the model's sigma range (progress 0.5 in log sigma):
# the layout is settled there but the prediction is still cheap to reach in a few coarse steps.
PROBE_PROGRESS = 0.5
SDE_SAMPLERS = ("dpmpp_2m_sde", "dpmpp_3m_sde")
DEFAULT_ORDER = "structure_first"  # measured in benchmarks/README.md, "## Sampler"
CURVES = ("fidelity",) + guidance.CURVE_KINDS


def sigma_range(model) -> tuple[float, float]:
    """(sigma_min, sigma_max) of a MODEL's own noise schedule."""
    model_sampling = model.get_model_object("model_sampling")
    return float(model_sampling.sigma_min), float(model_sampling.sigma_max)


def sigma_at(progress: float, sigma_min: float, sigma_max: float) -> float:
    """The sigma at `progress` (0 at sigma_max, 1 at sigma_min), linear in log sigma like GuidanceCurve."""
    return math.exp(math.log(sigma_max) - progress * math.log(sigma_max / sigma_min))


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


def make_sampler(name: str, reuse_threshold: float = 0.0, reuse_stats: dict | None = None, **options):
    """A core SAMPLER over f1core's `name`, optionally reusing model outputs (ReuseCache) below the threshold."""
    if name not in sampling.SAMPLERS:
        raise ValueError(f"sampler_name must be one of {sorted(sampling.SAMPLERS)}, got {name!r}")
    if reuse_threshold <= 0 and name != "dpmpp_adaptive":
        return ksampler(name, **options)
    function = sampling.SAMPLERS[name]
    if reuse_threshold > 0:
        function = sampling.with_reuse(function, reuse_threshold, reuse_stats)
    if name == "dpmpp_adaptive":
        function = with_lambda_progress(function)
    return comfy.samplers.KSAMPLER(function, extra_options=options)


def parse_points(node: str, text: str) -> tuple[tuple[float, float], ...]:
    """'sigma:scale, sigma:scale, ...' -> pairs."""
    pairs = []
    for item in filter(None, (part.strip() for part in text.replace("\n", ",").split(","))):
        try:
            sigma, scale = (float(v) for v in item.split(":"))
        except ValueError:
            raise ValueError(f"{node}: input 'points' has {item!r}; write pairs as sigma:scale separated by commas, "
                             "e.g. '14:7, 1:4, 0.1:1.5'") from None
        pairs.append((sigma, scale))
    if not pairs:
        raise ValueError(f"{node}: input 'points' is empty; give at least one sigma:scale pair, e.g. '14:7, 0.1:1.5'")
    return tuple(pairs)


def build_curve(node: str, curve: str, fidelity: float, order: str, scale_start: float, scale_end: float,
                sigma_lo: float, sigma_hi: float, points: str) -> guidance.GuidanceCurve:
    if curve == "fidelity":
        return guidance.fidelity_to_curve(fidelity, order)
    if curve == "constant":
        return guidance.GuidanceCurve.constant(scale_start)
    if curve == "linear":
        return guidance.GuidanceCurve.linear(scale_start, scale_end)
    if curve == "cosine":
        return guidance.GuidanceCurve.cosine(scale_start, scale_end)
    if curve == "interval":
        if not 0 <= sigma_lo <= sigma_hi:
            raise ValueError(f"{node}: inputs 'sigma_lo' ({sigma_lo}) and 'sigma_hi' ({sigma_hi}) must satisfy "
                             "0 <= sigma_lo <= sigma_hi; swap them or widen the interval")
        return guidance.GuidanceCurve.interval(scale_start, sigma_lo, sigma_hi)
    if curve == "points":
        pairs = parse_points(node, points)
        if min(s for s, _ in pairs) <= 0 or len({s for s, _ in pairs}) != len(pairs):
            raise ValueError(f"{node}: input 'points' needs distinct positive sigmas, got {[s for s, _ in pairs]}")
        return guidance.GuidanceCurve.from_points(pairs)
    raise ValueError(f"{node}: input 'curve' must be one of {CURVES}, got {curve!r}")


class DynamicCFGGuider(comfy.samplers.CFGGuider):
    """CFG whose scale follows a GuidanceCurve over the model's sigma range. Above `switch_sigma` (structure
    phase) the optional 'structure' conditioning replaces 'positive' and the guidance amount (scale - 1) is
    multiplied by structure_strength; at or below it, 'texture' and texture_strength. Model patches that
    hook core's cfg_function (sampler_cfg_function, post-CFG) still apply."""

    def __init__(self, model_patcher, curve: guidance.GuidanceCurve, switch_progress: float = 0.5,
                 structure_strength: float = 1.0, texture_strength: float = 1.0):
        super().__init__(model_patcher)
        if not 0.0 <= switch_progress <= 1.0:
            raise ValueError(f"switch_progress must be in [0, 1], got {switch_progress}")
        self.curve = curve
        self.sigma_min, self.sigma_max = sigma_range(model_patcher)
        self.switch_sigma = sigma_at(switch_progress, self.sigma_min, self.sigma_max)
        self.strengths = (structure_strength, texture_strength)

    def set_conds(self, positive, negative, structure=None, texture=None):
        conds = {"positive": positive, "negative": negative}
        for key, value in (("structure", structure), ("texture", texture)):
            if value is not None:
                conds[key] = value
        self.inner_set_conds(conds)

    def is_structure_phase(self, sigma: float) -> bool:
        return sigma > self.switch_sigma

    def scale_at(self, sigma: float) -> float:
        strength = self.strengths[0 if self.is_structure_phase(sigma) else 1]
        return 1.0 + strength * (self.curve(sigma, self.sigma_min, self.sigma_max) - 1.0)

    def predict_noise(self, x, timestep, model_options={}, seed=None):
        sigma = float(timestep.reshape(-1)[0])  # samplers step the whole batch at one sigma
        phase = "structure" if self.is_structure_phase(sigma) else "texture"
        positive = self.conds.get(phase) or self.conds.get("positive")
        negative = self.conds.get("negative")
        scale = self.scale_at(sigma)
        if math.isclose(scale, 1.0) and not model_options.get("disable_cfg1_optimization", False):
            negative = None
        cond, uncond = comfy.samplers.calc_cond_batch(self.inner_model, [positive, negative], x, timestep, model_options)
        return comfy.samplers.cfg_function(self.inner_model, cond, uncond, scale, x, timestep,
                                           model_options=model_options, cond=positive, uncond=negative)

    def describe(self) -> str:
        probes = [self.sigma_max, sigma_at(0.25, self.sigma_min, self.sigma_max), self.switch_sigma,
                  sigma_at(0.75, self.sigma_min, self.sigma_max), self.sigma_min]
        scales = ", ".join(f"{s:.3g}: {self.scale_at(s):.2f}" for s in probes)
        phases = [name for name in ("structure", "texture") if name in self.original_conds]
        prompts = f"; own prompt for {' and '.join(phases)} phase" if phases else ""
        return (f"dynamic guidance ({self.curve.kind}): scale by sigma {{{scales}}}; structure phase above sigma "
                f"{self.switch_sigma:.3g} (strength {self.strengths[0]:g}), texture below (strength "
                f"{self.strengths[1]:g}){prompts}")


def probe_complexity(node: str, guider, latent: dict, seed: int, probe_steps: int):
    """Image complexity [B] of a quick preview: `probe_steps` DPM-Solver++(2M) steps from sigma_max down to
    the probe sigma, whose denoised prediction is the preview. Costs probe_steps guided model calls."""
    if probe_steps < 2:
        raise ValueError(f"{node}: input 'probe_steps' must be at least 2 (the first call only sees noise), "
                         f"got {probe_steps}")
    model = guider.model_patcher
    samples = checked_latent(node, model, latent)
    sigma_min, sigma_max = sigma_range(model)
    sigmas = schedules.exponential_sigmas(probe_steps, sigma_at(PROBE_PROGRESS, sigma_min, sigma_max), sigma_max)
    noise = comfy.sample.prepare_noise(samples, seed, latent.get("batch_index"))
    preview = guider.sample(noise, samples, ksampler("dpmpp_2m"), sigmas, denoise_mask=latent.get("noise_mask"),
                            callback=latent_preview.prepare_callback(model, probe_steps),
                            disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=seed)
    return schedules.image_complexity(preview.float().cpu()), float(sigmas[-2])


def choose_sigmas(node: str, model, min_steps: int, max_steps: int, complexity, prompt: str, source: str):
    """adaptive_sigmas over the model's range, with the reason as one log / UI line."""
    if not 1 <= min_steps <= max_steps:
        raise ValueError(f"{node}: inputs 'min_steps' ({min_steps}) and 'max_steps' ({max_steps}) need "
                         "1 <= min_steps <= max_steps; raise max_steps")
    sigma_min, sigma_max = sigma_range(model)
    prompt_score = schedules.prompt_complexity(prompt) if prompt.strip() else None
    sigmas, decision = schedules.adaptive_sigmas(complexity, sigma_min, sigma_max, min_steps, max_steps,
                                                 prompt=prompt_score)
    summary = f"{decision.summary()}; image complexity {source}"
    logger.info("%s: %s", node, summary)
    return sigmas, summary


def _steps_inputs():
    return [
        io.Int.Input("min_steps", default=8, min=1, max=1000, tooltip="Steps for the simplest images."),
        io.Int.Input("max_steps", default=30, min=1, max=1000, tooltip="Steps for the most complex images."),
        io.Int.Input("probe_steps", default=3, min=2, max=20,
                     tooltip="Guided model calls of the quick preview whose detail sets the image complexity."),
    ]


class F1SamplerSelect(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="F1SamplerSelect",
            display_name="F.1 Sampler Select",
            category="F1/sampling",
            description="An f1core sampler as a SAMPLER for SamplerCustomAdvanced (any MODEL). dpmpp_adaptive "
                        "chooses its own steps by error control (the SIGMAS only give the range and first step); "
                        "reuse_threshold > 0 skips model calls whose input barely changed.",
            inputs=[
                io.Combo.Input("sampler_name", options=list(sampling.SAMPLERS), default="dpmpp_2m"),
                io.Float.Input("reuse_threshold", default=0.0, min=0.0, max=10.0, step=0.01,
                               tooltip="Accumulated relative input change below which the last outputs are "
                                       "extrapolated instead of calling the model; 0 = always call."),
                io.Float.Input("eta", default=1.0, min=0.0, max=10.0, step=0.01, tooltip="SDE samplers only."),
                io.Float.Input("s_noise", default=1.0, min=0.0, max=10.0, step=0.01, tooltip="SDE samplers only."),
                io.Float.Input("rtol", default=0.05, min=0.0, max=1.0, step=0.001,
                               tooltip="dpmpp_adaptive only: relative error per step."),
                io.Float.Input("atol", default=0.0078, min=0.0, max=1.0, step=0.0001,
                               tooltip="dpmpp_adaptive only: absolute error per step (latent units)."),
            ],
            outputs=[io.Sampler.Output()],
        )

    @classmethod
    def validate_inputs(cls, sampler_name, **_):
        if sampler_name not in sampling.SAMPLERS:
            return f"F1SamplerSelect: sampler_name '{sampler_name}' is not one of {list(sampling.SAMPLERS)}"
        return True

    @classmethod
    def execute(cls, sampler_name, reuse_threshold, eta, s_noise, rtol, atol) -> io.NodeOutput:
        options = {}
        if sampler_name in SDE_SAMPLERS:
            options = {"eta": eta, "s_noise": s_noise}
        elif sampler_name == "dpmpp_adaptive":
            if reuse_threshold > 0:
                raise ValueError("F1SamplerSelect: input 'reuse_threshold' must be 0 with dpmpp_adaptive: its error "
                                 "control needs every real model output; set it to 0 or pick dpmpp_2m")
            if rtol <= 0 and atol <= 0:
                raise ValueError("F1SamplerSelect: inputs 'rtol' and 'atol' are both 0; make at least one positive")
            options = {"rtol": rtol, "atol": atol}
        return io.NodeOutput(make_sampler(sampler_name, reuse_threshold, **options))


class F1AdaptiveSigmas(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="F1AdaptiveSigmas",
            display_name="F.1 Adaptive Sigmas",
            category="F1/sampling",
            description="Karras noise levels over the model's range whose count and placement follow how complex "
                        "the image is: measured on a quick guided preview when guider and latent_image are "
                        "connected, else the 'complexity' value; the optional prompt text blends in. The reason "
                        "for the step count is shown and logged.",
            inputs=[
                io.Model.Input("model"),
                *_steps_inputs(),
                io.Float.Input("complexity", default=0.5, min=0.0, max=1.0, step=0.01,
                               tooltip="Image complexity to use when no guider + latent_image are connected."),
                io.String.Input("prompt", default="", multiline=True,
                                tooltip="Optional prompt text; its complexity is blended in with weight 0.25."),
                io.Int.Input("seed", default=0, min=0, max=0xffffffffffffffff, control_after_generate=True,
                             tooltip="Noise seed of the probe; use the sampler's seed."),
                io.Guider.Input("guider", optional=True),
                io.Latent.Input("latent_image", optional=True),
            ],
            outputs=[io.Sigmas.Output()],
        )

    @classmethod
    def execute(cls, model, min_steps, max_steps, probe_steps, complexity, prompt, seed, guider=None,
                latent_image=None) -> io.NodeOutput:
        if (guider is None) != (latent_image is None):
            missing = "latent_image" if latent_image is None else "guider"
            raise ValueError(f"F1AdaptiveSigmas: the image probe needs both 'guider' and 'latent_image'; connect "
                             f"'{missing}' too, or disconnect both to use the 'complexity' value")
        source = "set by the 'complexity' input"
        if guider is not None:
            complexity, probe_sigma = probe_complexity("F1AdaptiveSigmas", guider, latent_image, seed, probe_steps)
            source = f"measured on a {probe_steps}-call preview at sigma {probe_sigma:.3g}"
        sigmas, summary = choose_sigmas("F1AdaptiveSigmas", model, min_steps, max_steps, complexity, prompt, source)
        return io.NodeOutput(sigmas, ui={"text": [summary]})


def _curve_inputs():
    return [
        io.Combo.Input("curve", options=list(CURVES), default="fidelity",
                       tooltip="fidelity: the slider below; the others use scale_start/scale_end/sigma_lo/"
                               "sigma_hi/points."),
        io.Float.Input("fidelity", default=0.5, min=0.0, max=1.0, step=0.01,
                       tooltip="0 = loose and varied, 1 = follows the prompt closely."),
        io.Combo.Input("order", options=list(guidance.ORDERS), default=DEFAULT_ORDER,
                       tooltip="fidelity curve: strongest guidance at high noise (structure_first) or low noise."),
        io.Float.Input("scale_start", default=5.0, min=0.0, max=100.0, step=0.1,
                       tooltip="constant/interval: the scale; linear/cosine: the scale at the highest noise."),
        io.Float.Input("scale_end", default=2.0, min=0.0, max=100.0, step=0.1,
                       tooltip="linear/cosine: the scale at the lowest noise."),
        io.Float.Input("sigma_lo", default=0.3, min=0.0, max=1000.0, step=0.01, tooltip="interval: lower sigma."),
        io.Float.Input("sigma_hi", default=5.0, min=0.0, max=1000.0, step=0.01, tooltip="interval: upper sigma."),
        io.String.Input("points", default="14:6, 1:4, 0.1:1.5",
                        tooltip="points: sigma:scale pairs, piecewise linear in log sigma."),
    ]


class F1DynamicGuider(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="F1DynamicGuider",
            display_name="F.1 Dynamic Guider",
            category="F1/sampling",
            description="Classifier-free guidance whose scale follows a curve over the noise level. Optional "
                        "structure/texture prompts replace 'positive' above/below the switch point, and each "
                        "phase's guidance can be scaled.",
            inputs=[
                io.Model.Input("model"),
                io.Conditioning.Input("positive"),
                io.Conditioning.Input("negative"),
                *_curve_inputs(),
                io.Float.Input("switch", default=0.5, min=0.0, max=1.0, step=0.01,
                               tooltip="Where the structure phase ends: 0 = at the highest noise, 1 = at the "
                                       "lowest (log sigma)."),
                io.Float.Input("structure_strength", default=1.0, min=0.0, max=10.0, step=0.01,
                               tooltip="Multiplies the guidance (scale - 1) in the structure phase."),
                io.Float.Input("texture_strength", default=1.0, min=0.0, max=10.0, step=0.01,
                               tooltip="Multiplies the guidance (scale - 1) in the texture phase."),
                io.Conditioning.Input("structure_positive", optional=True),
                io.Conditioning.Input("texture_positive", optional=True),
            ],
            outputs=[io.Guider.Output()],
        )

    @classmethod
    def validate_inputs(cls, curve=None, order=None, **_):
        if curve is not None and curve not in CURVES:
            return f"F1DynamicGuider: curve '{curve}' is not one of {list(CURVES)}"
        if order is not None and order not in guidance.ORDERS:
            return f"F1DynamicGuider: order '{order}' is not one of {list(guidance.ORDERS)}"
        return True

    @classmethod
    def execute(cls, model, positive, negative, curve, fidelity, order, scale_start, scale_end, sigma_lo, sigma_hi,
                points, switch, structure_strength, texture_strength, structure_positive=None,
                texture_positive=None) -> io.NodeOutput:
        shape = build_curve("F1DynamicGuider", curve, fidelity, order, scale_start, scale_end, sigma_lo, sigma_hi,
                            points)
        guider = DynamicCFGGuider(model, shape, switch, structure_strength, texture_strength)
        guider.set_conds(positive, negative, structure_positive, texture_positive)
        summary = guider.describe()
        logger.info("F1DynamicGuider: %s", summary)
        return io.NodeOutput(guider, ui={"text": [summary]})


class F1AdaptiveKSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="F1AdaptiveKSampler",
            display_name="F.1 Adaptive KSampler",
            category="F1/sampling",
            description="The common case in one node: a quick preview measures how complex the image is, which "
                        "sets the number and placement of DPM-Solver++(2M) steps; the fidelity slider sets a "
                        "guidance curve over the noise level. Works on any MODEL.",
            inputs=[
                *sampling_inputs(),
                io.Float.Input("fidelity", default=0.5, min=0.0, max=1.0, step=0.01,
                               tooltip="0 = loose and varied, 1 = follows the prompt closely."),
                *_steps_inputs(),
                io.Float.Input("reuse_threshold", default=0.0, min=0.0, max=10.0, step=0.01,
                               tooltip="Skip model calls whose input changed less than this; 0 = never."),
                io.String.Input("prompt", default="", multiline=True, optional=True,
                                tooltip="Optional prompt text; its complexity is blended into the step choice."),
            ],
            outputs=[io.Latent.Output()],
        )

    @classmethod
    def execute(cls, model, positive, negative, latent_image, seed, fidelity, min_steps, max_steps, probe_steps,
                reuse_threshold, prompt="") -> io.NodeOutput:
        node = "F1AdaptiveKSampler"
        guider = DynamicCFGGuider(model, guidance.fidelity_to_curve(fidelity, DEFAULT_ORDER))
        guider.set_conds(positive, negative)
        complexity, probe_sigma = probe_complexity(node, guider, latent_image, seed, probe_steps)
        sigmas, summary = choose_sigmas(node, model, min_steps, max_steps, complexity, prompt,
                                        f"measured on a {probe_steps}-call preview at sigma {probe_sigma:.3g}")
        stats = {}
        sampler = make_sampler("dpmpp_2m", reuse_threshold, stats)
        out = run_guided(node, guider, sampler, sigmas, latent_image, seed)
        lines = [summary, guider.describe()]
        if stats:
            lines.append(f"reuse: {stats['real_calls']} model evaluations, {stats['reused_calls']} reused")
        return io.NodeOutput(out, ui={"text": lines})


NODES = [F1SamplerSelect, F1AdaptiveSigmas, F1DynamicGuider, F1AdaptiveKSampler]
