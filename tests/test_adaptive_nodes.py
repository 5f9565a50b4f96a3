"""The adaptive sampling nodes inside core's own sampling machinery, in-process: SAMPLER + SIGMAS + GUIDER
through core's SamplerCustomAdvanced node on a tiny core U-Net (SD1.5 layout) and on the F.1 U-Net."""
import math

import pytest
import torch

from comfy_inprocess import import_pack
from f1core.config import tiny
from f1core.models.unet import F1UNet

CONTEXT_DIM = 32


@pytest.fixture(scope="module")
def nodes(comfy):
    return import_pack("nodes.nodes_adaptive")


@pytest.fixture(scope="module")
def custom_sampler(comfy):
    import comfy_extras.nodes_custom_sampler
    return comfy_extras.nodes_custom_sampler


def _randomise(module):
    """Core builds layers uninitialised (weights are expected from a file): give them sane random values."""
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.ndim > 1:
                p.normal_(0, p[0].numel() ** -0.5)
            elif "norm" in name and name.endswith("weight"):
                p.fill_(1.0)
            else:
                p.normal_(0, 0.02)


def sd15_patcher(comfy):
    import comfy.model_patcher
    import comfy.supported_models
    unet = {"context_dim": CONTEXT_DIM, "model_channels": 32, "use_linear_in_transformer": False,
            "adm_in_channels": None, "use_temporal_attention": False, "in_channels": 4, "out_channels": 4,
            "num_res_blocks": [1, 1], "channel_mult": [1, 2], "transformer_depth": [0, 1],
            "transformer_depth_output": [0, 0, 1, 1], "transformer_depth_middle": 1,
            "use_spatial_transformer": True, "image_size": 32}
    config = comfy.supported_models.SD15(unet)
    config.unet_config["num_heads"] = 2
    config.set_inference_dtype(torch.float32, None)
    model = config.get_model({})
    _randomise(model.diffusion_model)
    cpu = torch.device("cpu")
    return comfy.model_patcher.ModelPatcher(model, load_device=cpu, offload_device=cpu), CONTEXT_DIM, {}


def f1_patcher(comfy):
    f1_model = import_pack("nodes.f1_model")
    config = tiny()
    unet = F1UNet(config.unet)
    _randomise(unet)
    return f1_model.model_patcher_from_unet(config, unet.state_dict()), config.unet.context_dim, {
        "pooled_output": torch.zeros(1, config.unet.pooled_dim)}


@pytest.fixture(scope="module", params=["sd15", "f1"])
def model(request, comfy):
    """(patcher, make_conditioning(seed, tokens))"""
    patcher, width, extra = (sd15_patcher if request.param == "sd15" else f1_patcher)(comfy)

    def conditioning(seed, tokens=5):
        ctx = torch.randn(1, tokens, width, generator=torch.Generator().manual_seed(seed))
        return [[ctx, dict(extra)]]

    return patcher, conditioning


def empty_latent():
    return {"samples": torch.zeros(1, 4, 8, 8)}  # core's empty latent; F.1 widens it to its own channels


def guider_node(nodes, patcher, positive, negative, **overrides):
    args = dict(curve="fidelity", fidelity=0.6, order="structure_first", scale_start=5.0, scale_end=2.0,
                sigma_lo=0.3, sigma_hi=5.0, points="10:6, 1:3, 0.1:1.5", switch=0.5, structure_strength=1.0,
                texture_strength=1.0)
    args.update(overrides)
    return nodes.F1DynamicGuider.execute(patcher, positive, negative, **args)


def sampler_node(nodes, name, reuse_threshold=0.0, reuse_rule="input_change"):
    # loose tolerances: a random model's trajectory is rough and would take the adaptive sampler many steps
    return nodes.F1SamplerSelect.execute(name, reuse_threshold, 1.0, 1.0, 0.3, 0.1, reuse_rule).result[0]


def sample(custom_sampler, guider, sampler, sigmas, seed):
    out = custom_sampler.SamplerCustomAdvanced.execute(custom_sampler.Noise_RandomNoise(seed), guider, sampler,
                                                        sigmas, empty_latent())
    return out.result[0]["samples"]


@pytest.mark.parametrize("sampler_name,reuse,rule", [("dpmpp_2m", 0.3, "input_change"), ("dpmpp_2m", 0.3, "calibrated"),
                                                     ("dpmpp_adaptive", 0.0, "input_change")])
def test_nodes_run_in_sampler_custom_advanced_and_follow_the_seed(nodes, custom_sampler, model, sampler_name, reuse,
                                                                  rule):
    patcher, conditioning = model
    guider = guider_node(nodes, patcher, conditioning(1), conditioning(2, tokens=3)).result[0]
    schedule = nodes.F1AdaptiveSigmas.execute(patcher, 3, 6, 2, 0.5, "two cats on a sofa", 7, guider, empty_latent())
    assert "steps" in schedule.ui["text"][0] and "preview" in schedule.ui["text"][0]
    sigmas = schedule.result[0]
    assert 4 <= len(sigmas) <= 7 and sigmas[-1] == 0 and bool((sigmas[:-1] > sigmas[1:]).all())
    sampler = sampler_node(nodes, sampler_name, reuse, rule)
    first = sample(custom_sampler, guider, sampler, sigmas, seed=3)
    again = sample(custom_sampler, guider, sampler, sigmas, seed=3)
    other = sample(custom_sampler, guider, sampler, sigmas, seed=4)
    assert first.shape[1] == patcher.get_model_object("latent_format").latent_channels
    assert torch.isfinite(first).all()
    torch.testing.assert_close(again, first, rtol=0, atol=0)
    assert (other - first).abs().max() > 1e-3


def test_guider_scale_follows_the_curve_over_sigma_and_switches_prompts(nodes, custom_sampler, model):
    patcher, conditioning = model
    positive, negative = conditioning(1), conditioning(2)
    structure, texture = conditioning(3), conditioning(4)
    spied = []

    def spy(args):  # core's sampler_cfg_function hook: sees the scale and the cond the guider chose
        spied.append((float(args["sigma"][0]), args["cond_scale"], args["input_cond"]))
        return args["uncond"] + (args["cond"] - args["uncond"]) * args["cond_scale"]

    spying = patcher.clone()
    spying.set_model_sampler_cfg_function(spy)
    output = guider_node(nodes, spying, positive, negative, curve="linear", scale_start=6.0, scale_end=2.0,
                         structure_positive=structure, texture_positive=texture)
    guider = output.result[0]
    assert "linear" in output.ui["text"][0]
    sigmas = nodes.F1AdaptiveSigmas.execute(patcher, 6, 6, 2, 0.0, "", 0).result[0]
    sample(custom_sampler, guider, sampler_node(nodes, "euler"), sigmas, seed=0)

    sigma_min, sigma_max = import_pack("nodes.f1_guider").sigma_range(patcher)
    assert [s for s, _, _ in spied] == pytest.approx(sigmas[:-1].tolist(), rel=1e-5)
    for sigma, scale, cond in spied:
        progress = math.log(sigma_max / sigma) / math.log(sigma_max / sigma_min)
        assert scale == pytest.approx(6.0 - 4.0 * progress, abs=1e-4)
        expected = structure if sigma > guider.switch_sigma else texture
        assert torch.equal(cond[0]["cross_attn"].cpu(), expected[0][0])
    scales = [scale for _, scale, _ in spied]
    assert scales == sorted(scales, reverse=True) and scales[0] - scales[-1] > 2.0
    assert {sigma > guider.switch_sigma for sigma, _, _ in spied} == {True, False}


def test_core_guidance_hooks_act_under_the_dynamic_guider_exactly_as_under_cfg_guider(comfy, nodes, custom_sampler,
                                                                                       model):
    import comfy_extras.nodes_apg
    patcher, conditioning = model
    positive, negative = conditioning(1), conditioning(2, tokens=3)
    sigmas = nodes.F1AdaptiveSigmas.execute(patcher, 5, 5, 2, 0.0, "", 0).result[0]
    sampler = sampler_node(nodes, "dpmpp_2m")

    def weaker_uncond(args):  # a pre-CFG hook: core hands it both predictions before combining them
        cond, uncond = args["conds_out"][:2]
        return [cond, 0.5 * uncond] + args["conds_out"][2:]

    pre_cfg = patcher.clone()
    pre_cfg.set_model_sampler_pre_cfg_function(weaker_uncond)
    apg = comfy_extras.nodes_apg.APG.execute(patcher, eta=0.0, norm_threshold=2.0, momentum=0.5).result[0]

    def run(model, dynamic):
        if dynamic:
            guider = guider_node(nodes, model, positive, negative, curve="constant", scale_start=5.0).result[0]
        else:
            guider = comfy.samplers.CFGGuider(model)
            guider.set_conds(positive, negative)
            guider.set_cfg(5.0)
        return sample(custom_sampler, guider, sampler, sigmas, seed=0)

    plain = run(patcher, dynamic=False)
    torch.testing.assert_close(run(patcher, dynamic=True), plain, rtol=0, atol=0)
    for patched in (pre_cfg, apg):
        under_core = run(patched, dynamic=False)
        assert (under_core - plain).abs().max() > 1e-3  # the hook does change the image
        torch.testing.assert_close(run(patched, dynamic=True), under_core, rtol=0, atol=0)


def test_phase_strength_zero_turns_guidance_off_in_that_phase(nodes, model):
    patcher, conditioning = model
    guider = guider_node(nodes, patcher, conditioning(1), conditioning(2), curve="constant", scale_start=5.0,
                         texture_strength=0.0, structure_strength=0.5).result[0]
    assert guider.scale_at(guider.switch_sigma * 2) == pytest.approx(3.0)
    assert guider.scale_at(guider.switch_sigma / 2) == pytest.approx(1.0)


def test_adaptive_ksampler_is_deterministic_and_explains_its_step_count(nodes, model):
    patcher, conditioning = model
    args = dict(model=patcher, positive=conditioning(1), negative=conditioning(2), latent_image=empty_latent(),
                fidelity=0.5, min_steps=2, max_steps=4, probe_steps=2, reuse_threshold=0.2)
    first = nodes.F1AdaptiveKSampler.execute(seed=5, **args)
    again = nodes.F1AdaptiveKSampler.execute(seed=5, **args)
    other = nodes.F1AdaptiveKSampler.execute(seed=6, **args)
    torch.testing.assert_close(again.result[0]["samples"], first.result[0]["samples"], rtol=0, atol=0)
    assert (other.result[0]["samples"] - first.result[0]["samples"]).abs().max() > 1e-3
    text = " | ".join(first.ui["text"])
    assert "steps (range 2-4)" in text and "dynamic guidance" in text and "model evaluations" in text


def test_complexity_input_sets_the_step_count_without_a_probe(nodes, model):
    patcher, _ = model
    lengths = [len(nodes.F1AdaptiveSigmas.execute(patcher, 4, 12, 2, c, "", 0).result[0]) - 1 for c in (0.0, 0.5, 1.0)]
    assert lengths == [4, 8, 12]
    sigmas = nodes.F1AdaptiveSigmas.execute(patcher, 4, 12, 2, 1.0, "", 0).result[0]
    sigma_min, sigma_max = import_pack("nodes.f1_guider").sigma_range(patcher)
    assert float(sigmas[0]) == pytest.approx(sigma_max, rel=1e-5)
    assert float(sigmas[-2]) == pytest.approx(sigma_min, rel=1e-4)


def _is_chart(image) -> bool:
    """A drawn chart, not a blank or constant frame: IMAGE [1, H, W, 3] in [0, 1] with a light background, dark
    text and axes, and coloured lines."""
    assert image.ndim == 4 and image.shape[0] == 1 and image.shape[-1] == 3 and image.shape[1] >= 200, image.shape
    assert image.dtype == torch.float32 and 0 <= float(image.min()) and float(image.max()) <= 1
    pixels = image[0].reshape(-1, 3)
    light = (pixels > 0.85).all(-1).float().mean()
    dark = (pixels < 0.3).all(-1).float().mean()
    coloured = (pixels.max(-1).values - pixels.min(-1).values > 0.3).float().mean()
    return bool(0.5 < light < 0.99 and dark > 0.002 and coloured > 0.002)


def test_schedule_and_guidance_plots_are_real_charts_that_follow_the_settings(nodes, model):
    patcher, conditioning = model
    short, long = (nodes.F1AdaptiveSigmas.execute(patcher, 4, 24, 2, c, "", 0) for c in (0.0, 1.0))
    for output in (short, long):
        assert len(output.result) == 2 and output.result[0].ndim == 1  # the sigmas keep slot 0
        assert _is_chart(output.result[1])
        assert output.ui["images"] and output.ui["text"]  # previewed on the node beside the reason
    assert not torch.equal(short.result[1], long.result[1])

    loose, strict = (guider_node(nodes, patcher, conditioning(1), conditioning(2), fidelity=f) for f in (0.1, 0.9))
    for output in (loose, strict):
        assert len(output.result) == 2 and hasattr(output.result[0], "sample")  # the GUIDER keeps slot 0
        assert _is_chart(output.result[1])
        assert output.ui["images"] and "dynamic guidance" in output.ui["text"][0]
    assert not torch.equal(loose.result[1], strict.result[1])


def test_adaptive_sampler_reports_progress_over_the_whole_bar(comfy, nodes, model):
    patcher, conditioning = model
    sigmas = comfy.samplers.calculate_sigmas(patcher.get_model_object("model_sampling"), "karras", 10)
    seen = []
    latent = torch.zeros(1, patcher.get_model_object("latent_format").latent_channels, 8, 8)
    comfy.sample.sample_custom(patcher, comfy.sample.prepare_noise(latent, 0), 3.0,
                               sampler_node(nodes, "dpmpp_adaptive"), sigmas, conditioning(1), conditioning(2),
                               latent, callback=lambda i, x0, x, total: seen.append((i, total)), disable_pbar=True)
    steps = [i for i, _ in seen]
    assert steps == sorted(steps) and steps[0] == 0 and steps[-1] == 9 and {t for _, t in seen} == {10}


def test_bad_inputs_name_the_input(nodes, model):
    patcher, conditioning = model
    guider = guider_node(nodes, patcher, conditioning(1), conditioning(2)).result[0]
    with pytest.raises(ValueError, match="'latent_image'"):
        nodes.F1AdaptiveSigmas.execute(patcher, 3, 6, 2, 0.5, "", 0, guider, None)
    with pytest.raises(ValueError, match="'max_steps'"):
        nodes.F1AdaptiveSigmas.execute(patcher, 9, 6, 2, 0.5, "", 0)
    with pytest.raises(ValueError, match="'points'"):
        guider_node(nodes, patcher, conditioning(1), conditioning(2), curve="points", points="10-6")
    with pytest.raises(ValueError, match="'sigma_lo'"):
        guider_node(nodes, patcher, conditioning(1), conditioning(2), curve="interval", sigma_lo=5, sigma_hi=1)
    with pytest.raises(ValueError, match="'reuse_threshold'"):
        nodes.F1SamplerSelect.execute("dpmpp_adaptive", 0.2, 1.0, 1.0, 0.05, 0.0078)
    assert "sampler_name" in nodes.F1SamplerSelect.validate_inputs(sampler_name="dpm_fast")
    assert nodes.F1SamplerSelect.validate_inputs(sampler_name="dpmpp_adaptive") is True
    assert "curve" in nodes.F1DynamicGuider.validate_inputs(curve="sine")


def test_validators_name_their_inputs_and_refuse_non_finite_values(nodes, model):
    import inspect
    for node in (nodes.F1SamplerSelect, nodes.F1DynamicGuider, nodes.F1AdaptiveSigmas, nodes.F1AdaptiveKSampler):
        kinds = {p.kind for p in inspect.signature(node.validate_inputs).parameters.values()}
        assert kinds == {inspect.Parameter.POSITIONAL_OR_KEYWORD}  # **kwargs would turn core's range checks off
    guider_inputs = ("fidelity", "scale_start", "scale_end", "sigma_lo", "sigma_hi", "switch", "structure_strength",
                     "texture_strength")
    for name in guider_inputs:
        for bad in (math.nan, math.inf, -1.0):
            verdict = nodes.F1DynamicGuider.validate_inputs(**{name: bad})
            assert verdict.startswith("F1DynamicGuider: input ") and f"'{name}'" in verdict
    for name in ("reuse_threshold", "eta", "s_noise", "rtol", "atol"):
        verdict = nodes.F1SamplerSelect.validate_inputs(sampler_name="dpmpp_2m", **{name: math.nan})
        assert verdict.startswith("F1SamplerSelect: input ") and f"'{name}'" in verdict
    assert "'rtol'" in nodes.F1SamplerSelect.validate_inputs(sampler_name="dpmpp_adaptive", rtol=0.0, atol=0.0)
    assert "'complexity'" in nodes.F1AdaptiveSigmas.validate_inputs(complexity=math.nan)
    assert "'fidelity'" in nodes.F1AdaptiveKSampler.validate_inputs(fidelity=math.inf)
    patcher, conditioning = model
    with pytest.raises(ValueError, match="F1DynamicGuider: input 'scale_start'"):  # a value linked from another node
        guider_node(nodes, patcher, conditioning(1), conditioning(2), curve="constant", scale_start=math.nan)


def test_adaptive_nodes_refuse_a_latent_over_the_pixel_budget_before_sampling(nodes, model, monkeypatch):
    patcher, conditioning = model
    latent = empty_latent()
    side = latent["samples"].shape[-1] * 8   # the tiny F.1 is /8, like SD1.5
    monkeypatch.setenv("F1_MAX_PIXELS", str(side * side - 1))   # one pixel short of the latent's image
    with pytest.raises(ValueError, match="F1AdaptiveKSampler: input 'latent_image'.*F1_MAX_PIXELS"):
        nodes.F1AdaptiveKSampler.execute(model=patcher, positive=conditioning(1), negative=conditioning(2),
                                         latent_image=latent, seed=0, fidelity=0.5, min_steps=2, max_steps=4,
                                         probe_steps=2, reuse_threshold=0.0)
    guider = guider_node(nodes, patcher, conditioning(1), conditioning(2)).result[0]
    with pytest.raises(ValueError, match="F1AdaptiveSigmas: input 'latent_image'"):
        nodes.F1AdaptiveSigmas.execute(model=patcher, min_steps=2, max_steps=4, probe_steps=2, complexity=0.5,
                                       prompt="", seed=0, guider=guider, latent_image=latent)
