"""Adaptive sampling nodes: f1core samplers as SAMPLER, complexity-driven SIGMAS, a GUIDER whose CFG scale
follows a curve over the noise level (with optional structure / texture prompts), and one node that does
all of it for the common case. They plug into core's SamplerCustomAdvanced and work on any MODEL.
Only the nodes live here: the curve maths in f1core.guidance, the GUIDER in f1_guider, the SAMPLER, probe
and schedule glue in f1_sampling."""
import logging

from comfy_api.latest import io, ui

from ..f1core import guidance, sampling
from .f1_guider import DynamicCFGGuider
from .f1_inputs import declared_limits_error, raise_if_invalid
from .f1_sampling import choose_sigmas, make_sampler, probe_complexity, run_guided, schedule_image
from .nodes_sampling import sampling_inputs

logger = logging.getLogger(__name__)

SDE_SAMPLERS = ("dpmpp_2m_sde", "dpmpp_3m_sde")


def _reuse_rule_input():
    return io.Combo.Input(
        "reuse_rule", options=list(sampling.REUSE_RULES), default="input_change", optional=True,
        tooltip="How reuse_threshold is read. input_change: the accumulated relative change of the step's "
                "input, never two reused calls in a row. calibrated: that change mapped to the model output's "
                "change by a polynomial fitted to the shipped F.1 default (TeaCache-style), up to three in a "
                "row; thresholds around 0.2-0.4.")


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
                        "reuse_threshold > 0 skips model calls whose input barely changed (reuse_rule says how "
                        "that is measured), never more than a few in a row (so a high threshold cannot skip most "
                        "steps); dpmpp_adaptive takes at most 200 steps.",
            inputs=[
                io.Combo.Input("sampler_name", options=list(sampling.SAMPLERS), default="dpmpp_2m",
                               tooltip="DPM-Solver++ 2M/2S/2M-SDE/3M-SDE, Euler, or dpmpp_adaptive (error-controlled "
                                       "step sizes)."),
                io.Float.Input("reuse_threshold", default=0.0, min=0.0, max=10.0, step=0.01,
                               tooltip="Accumulated relative input change below which the last outputs are "
                                       "extrapolated instead of calling the model; 0 = always call."),
                io.Float.Input("eta", default=1.0, min=0.0, max=10.0, step=0.01, tooltip="SDE samplers only."),
                io.Float.Input("s_noise", default=1.0, min=0.0, max=10.0, step=0.01, tooltip="SDE samplers only."),
                io.Float.Input("rtol", default=0.05, min=0.0, max=1.0, step=0.001,
                               tooltip="dpmpp_adaptive only: relative error per step."),
                io.Float.Input("atol", default=0.0078, min=0.0, max=1.0, step=0.0001,
                               tooltip="dpmpp_adaptive only: absolute error per step (latent units)."),
                _reuse_rule_input(),
            ],
            outputs=[io.Sampler.Output(tooltip="For SamplerCustomAdvanced's sampler input.")],
        )

    @classmethod
    def validate_inputs(cls, sampler_name=None, reuse_threshold=None, eta=None, s_noise=None, rtol=None, atol=None,
                        reuse_rule=None):
        error = declared_limits_error(cls, sampler_name=sampler_name, reuse_threshold=reuse_threshold, eta=eta,
                                      s_noise=s_noise, rtol=rtol, atol=atol, reuse_rule=reuse_rule)
        if error is None and sampler_name == "dpmpp_adaptive":
            if reuse_threshold is not None and reuse_threshold > 0:
                error = ("F1SamplerSelect: input 'reuse_threshold' must be 0 with dpmpp_adaptive: its error control "
                         "needs every real model output; set it to 0 or pick dpmpp_2m")
            elif rtol == 0 and atol == 0:
                error = "F1SamplerSelect: inputs 'rtol' and 'atol' are both 0; make at least one positive"
        return error or True

    @classmethod
    def execute(cls, sampler_name, reuse_threshold, eta, s_noise, rtol, atol,
                reuse_rule="input_change") -> io.NodeOutput:
        raise_if_invalid(cls.validate_inputs(sampler_name, reuse_threshold, eta, s_noise, rtol, atol, reuse_rule))
        options = {}
        if sampler_name in SDE_SAMPLERS:
            options = {"eta": eta, "s_noise": s_noise}
        elif sampler_name == "dpmpp_adaptive":
            options = {"rtol": rtol, "atol": atol}
        return io.NodeOutput(make_sampler(sampler_name, reuse_threshold, reuse_rule=reuse_rule, **options))


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
                io.Model.Input("model", tooltip="The model whose noise range the sigmas span (any MODEL)."),
                *_steps_inputs(),
                io.Float.Input("complexity", default=0.5, min=0.0, max=1.0, step=0.01,
                               tooltip="Image complexity to use when no guider + latent_image are connected."),
                io.String.Input("prompt", default="", multiline=True,
                                tooltip="Optional prompt text; its complexity is blended in with weight 0.25."),
                io.Int.Input("seed", default=0, min=0, max=0xffffffffffffffff, control_after_generate=True,
                             tooltip="Noise seed of the probe; use the sampler's seed."),
                io.Guider.Input("guider", optional=True,
                                tooltip="Optional, with latent_image: the guider of the run, used for the quick "
                                        "preview that measures image complexity."),
                io.Latent.Input("latent_image", optional=True,
                                tooltip="Optional, with guider: the run's starting latent, for the preview."),
            ],
            outputs=[
                io.Sigmas.Output(tooltip="The noise levels, for SamplerCustomAdvanced's sigmas input."),
                # appended in 0.2.0: the sigmas keep slot 0, so saved workflows still connect
                io.Image.Output(display_name="plot", tooltip="A chart of the noise levels per step beside a plain "
                                                             "Karras schedule of the same length; also previewed "
                                                             "on the node."),
            ],
        )

    @classmethod
    def validate_inputs(cls, min_steps=None, max_steps=None, probe_steps=None, complexity=None):
        return declared_limits_error(cls, min_steps=min_steps, max_steps=max_steps, probe_steps=probe_steps,
                                     complexity=complexity) or True

    @classmethod
    def execute(cls, model, min_steps, max_steps, probe_steps, complexity, prompt, seed, guider=None,
                latent_image=None) -> io.NodeOutput:
        raise_if_invalid(cls.validate_inputs(min_steps, max_steps, probe_steps, complexity))
        if (guider is None) != (latent_image is None):
            missing = "latent_image" if latent_image is None else "guider"
            raise ValueError(f"F1AdaptiveSigmas: the image probe needs both 'guider' and 'latent_image'; connect "
                             f"'{missing}' too, or disconnect both to use the 'complexity' value")
        source = "set by the 'complexity' input"
        if guider is not None:
            complexity, probe_sigma = probe_complexity("F1AdaptiveSigmas", guider, latent_image, seed, probe_steps)
            source = f"measured on a {probe_steps}-call preview at sigma {probe_sigma:.3g}"
        sigmas, decision, summary = choose_sigmas("F1AdaptiveSigmas", model, min_steps, max_steps, complexity,
                                                  prompt, source)
        chart = schedule_image(sigmas, decision)
        return io.NodeOutput(sigmas, chart, ui={"text": [summary], **ui.PreviewImage(chart, cls=cls).as_dict()})


def _curve_inputs():
    return [
        io.Combo.Input("curve", options=list(guidance.CURVE_SETTINGS), default="fidelity",
                       tooltip="fidelity: the slider below; the others use scale_start/scale_end/sigma_lo/"
                               "sigma_hi/points."),
        io.Float.Input("fidelity", default=0.5, min=0.0, max=1.0, step=0.01,
                       tooltip="0 = loose and varied, 1 = follows the prompt closely."),
        io.Combo.Input("order", options=list(guidance.ORDERS), default=guidance.DEFAULT_ORDER,
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
                io.Model.Input("model", tooltip="The model to guide (any MODEL)."),
                io.Conditioning.Input("positive", tooltip="What the image should show."),
                io.Conditioning.Input("negative", tooltip="What to steer away from."),
                *_curve_inputs(),
                io.Float.Input("switch", default=0.5, min=0.0, max=1.0, step=0.01,
                               tooltip="Where the structure phase ends: 0 = at the highest noise, 1 = at the "
                                       "lowest (log sigma)."),
                io.Float.Input("structure_strength", default=1.0, min=0.0, max=10.0, step=0.01,
                               tooltip="Multiplies the guidance (scale - 1) in the structure phase."),
                io.Float.Input("texture_strength", default=1.0, min=0.0, max=10.0, step=0.01,
                               tooltip="Multiplies the guidance (scale - 1) in the texture phase."),
                io.Conditioning.Input("structure_positive", optional=True,
                                      tooltip="Optional prompt used instead of positive in the structure (high "
                                              "noise) phase: layout and composition."),
                io.Conditioning.Input("texture_positive", optional=True,
                                      tooltip="Optional prompt used instead of positive in the texture (low noise) "
                                              "phase: surface and detail."),
            ],
            outputs=[
                io.Guider.Output(tooltip="For SamplerCustomAdvanced's guider input, or F1AdaptiveSigmas' probe."),
                # appended in 0.2.0: the guider keeps slot 0, so saved workflows still connect
                io.Image.Output(display_name="plot", tooltip="A chart of the guidance scale over the model's noise "
                                                             "levels, structure and texture phases shaded; also "
                                                             "previewed on the node."),
            ],
        )

    @classmethod
    def validate_inputs(cls, curve=None, fidelity=None, order=None, scale_start=None, scale_end=None, sigma_lo=None,
                        sigma_hi=None, points=None, switch=None, structure_strength=None, texture_strength=None):
        settings = dict(curve=curve, fidelity=fidelity, order=order, scale_start=scale_start, scale_end=scale_end,
                        sigma_lo=sigma_lo, sigma_hi=sigma_hi, points=points)
        error = declared_limits_error(cls, switch=switch, structure_strength=structure_strength,
                                      texture_strength=texture_strength, **settings)
        if error is None and None not in settings.values():
            try:
                guidance.curve_from_settings(**settings)
            except ValueError as e:
                error = f"F1DynamicGuider: {e}"
        return error or True

    @classmethod
    def execute(cls, model, positive, negative, curve, fidelity, order, scale_start, scale_end, sigma_lo, sigma_hi,
                points, switch, structure_strength, texture_strength, structure_positive=None,
                texture_positive=None) -> io.NodeOutput:
        raise_if_invalid(cls.validate_inputs(curve, fidelity, order, scale_start, scale_end, sigma_lo, sigma_hi, points,
                                             switch, structure_strength, texture_strength))
        shape = guidance.curve_from_settings(curve, fidelity, order, scale_start, scale_end, sigma_lo, sigma_hi, points)
        guider = DynamicCFGGuider(model, shape, switch, structure_strength, texture_strength)
        guider.set_conds(positive, negative, structure_positive, texture_positive)
        summary = guider.describe()
        logger.info("F1DynamicGuider: %s", summary)
        chart = guider.curve_image()
        return io.NodeOutput(guider, chart, ui={"text": [summary], **ui.PreviewImage(chart, cls=cls).as_dict()})


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
                _reuse_rule_input(),
            ],
            outputs=[io.Latent.Output(tooltip="The sampled latent; decode it with F1VAEDecode.")],
        )

    @classmethod
    def validate_inputs(cls, seed=None, fidelity=None, min_steps=None, max_steps=None, probe_steps=None,
                        reuse_threshold=None, reuse_rule=None):
        return declared_limits_error(cls, seed=seed, fidelity=fidelity, min_steps=min_steps, max_steps=max_steps,
                                     probe_steps=probe_steps, reuse_threshold=reuse_threshold,
                                     reuse_rule=reuse_rule) or True

    @classmethod
    def execute(cls, model, positive, negative, latent_image, seed, fidelity, min_steps, max_steps, probe_steps,
                reuse_threshold, prompt="", reuse_rule="input_change") -> io.NodeOutput:
        node = "F1AdaptiveKSampler"
        raise_if_invalid(cls.validate_inputs(seed, fidelity, min_steps, max_steps, probe_steps, reuse_threshold,
                                             reuse_rule))
        guider = DynamicCFGGuider(model, guidance.fidelity_to_curve(fidelity))
        guider.set_conds(positive, negative)
        complexity, probe_sigma = probe_complexity(node, guider, latent_image, seed, probe_steps)
        sigmas, _, summary = choose_sigmas(node, model, min_steps, max_steps, complexity, prompt,
                                           f"measured on a {probe_steps}-call preview at sigma {probe_sigma:.3g}")
        stats = {}
        sampler = make_sampler("dpmpp_2m", reuse_threshold, stats, reuse_rule)
        out = run_guided(node, guider, sampler, sigmas, latent_image, seed)
        lines = [summary, guider.describe()]
        if stats:
            lines.append(f"reuse: {stats['real_calls']} model evaluations, {stats['reused_calls']} reused")
        return io.NodeOutput(out, ui={"text": lines})


NODES = [F1SamplerSelect, F1AdaptiveSigmas, F1DynamicGuider, F1AdaptiveKSampler]
