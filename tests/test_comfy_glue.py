"""The F.1 U-Net inside ComfyUI's own model machinery, without a server: core's BaseModel must compute
exactly f1core's EDM denoiser, and core's samplers must run on it."""
import pytest
import torch

from comfy_inprocess import import_pack
from f1core.config import tiny
from f1core.diffusion import F1Denoiser
from f1core.models.unet import F1UNet
from f1core import sampling


@pytest.fixture(scope="module")
def f1_model(comfy):
    f1_model = import_pack("nodes.f1_model")
    torch.manual_seed(0)
    config = tiny()
    unet = F1UNet(config.unet)
    with torch.no_grad():  # zero-initialised output layers would hide every difference
        for p in unet.parameters():
            if p.ndim > 1 and p.abs().sum() == 0:
                p.normal_(0, 0.05)
    patcher = f1_model.model_patcher_from_unet(config, unet.state_dict())
    return config, unet.eval(), patcher


def conditioning(config, seed, tokens=7):
    g = torch.Generator().manual_seed(seed)
    ctx = torch.randn(1, tokens, config.unet.context_dim, generator=g)
    pooled = torch.randn(1, config.unet.pooled_dim, generator=g)
    return ctx, pooled, [[ctx, {"pooled_output": pooled}]]


def test_core_base_model_equals_f1core_denoiser(comfy, f1_model):
    config, unet, patcher = f1_model
    ctx, pooled, _ = conditioning(config, 1)
    x = torch.randn(1, config.unet.in_channels, 8, 8)
    denoiser = F1Denoiser(unet, config.schedule)
    for sigma in (0.05, 1.0, 30.0):
        s = torch.tensor([sigma])
        ours = denoiser(x, s, context=ctx, y=pooled)
        core = patcher.model.apply_model(x, s, c_crossattn=ctx, y=pooled)
        torch.testing.assert_close(core, ours, atol=1e-5, rtol=1e-5)
    import comfy.model_sampling
    assert isinstance(patcher.model.model_sampling, comfy.model_sampling.ModelSamplingContinuousEDM)
    assert patcher.model.latent_format.latent_channels == config.unet.in_channels


def test_core_sample_runs_dpmpp_2m_and_fixes_empty_latents(comfy, f1_model):
    config, _, patcher = f1_model
    _, _, positive = conditioning(config, 2)
    _, _, negative = conditioning(config, 3, tokens=3)  # unequal lengths, as with a short negative prompt
    empty = torch.zeros(1, 4, 8, 8)  # core's EmptyLatentImage makes 4 channels
    latent = comfy.sample.fix_empty_latent_channels(patcher, empty)
    assert latent.shape[1] == config.unet.in_channels
    noise = comfy.sample.prepare_noise(latent, 0)
    out = comfy.sample.sample(patcher, noise, 6, 3.0, "dpmpp_2m", "karras", positive, negative, latent,
                              disable_pbar=True, seed=0)
    assert out.shape == latent.shape and torch.isfinite(out).all()
    assert out.std() > 0


def test_f1core_dpmpp_2m_matches_core_dpmpp_2m_on_the_f1_model(comfy, f1_model):
    config, _, patcher = f1_model
    _, _, positive = conditioning(config, 4)
    _, _, negative = conditioning(config, 5)
    latent = torch.zeros(1, config.unet.in_channels, 8, 8)
    noise = comfy.sample.prepare_noise(latent, 11)
    sigmas = comfy.samplers.calculate_sigmas(patcher.get_model_object("model_sampling"), "karras", 8)

    def run(sampler):
        return comfy.sample.sample_custom(patcher, noise, 3.0, sampler, sigmas, positive, negative, latent,
                                          disable_pbar=True, seed=11)
    core = run(comfy.samplers.sampler_object("dpmpp_2m"))
    ours = run(comfy.samplers.KSAMPLER(sampling.sample_dpmpp_2m))
    torch.testing.assert_close(ours, core, atol=1e-4, rtol=1e-4)


def test_prompt_and_negative_of_any_lengths_take_one_call_per_step_and_sample_as_two(comfy, f1_model):
    """Core batches F.1 contexts of different lengths (7 and 5 tokens: core's own rule refuses them) zero-padded
    under `context_mask`, in one U-Net call per step, and the result is f1core's sampling with the two
    predictions made separately, unpadded."""
    from f1core.guidance import cfg_combine
    config, unet, patcher = f1_model
    positive_ctx, positive_pooled, positive = conditioning(config, 6, tokens=7)
    negative_ctx, negative_pooled, negative = conditioning(config, 7, tokens=5)
    latent = torch.zeros(1, config.unet.in_channels, 8, 8)
    noise = comfy.sample.prepare_noise(latent, 3)
    sigmas = comfy.samplers.calculate_sigmas(patcher.get_model_object("model_sampling"), "karras", 6)
    batches = []
    hook = patcher.model.diffusion_model.register_forward_hook(lambda m, args, out: batches.append(args[0].shape[0]))
    try:
        core = comfy.sample.sample_custom(patcher, noise, 3.0, comfy.samplers.KSAMPLER(sampling.sample_dpmpp_2m),
                                          sigmas, positive, negative, latent, disable_pbar=True, seed=3)
    finally:
        hook.remove()
    assert batches == [2] * 6  # dpmpp_2m: one model evaluation per step, cond and uncond in one call

    denoiser = F1Denoiser(unet, config.schedule)

    def guided(x, sigma, **_):
        cond = denoiser(x, sigma, context=positive_ctx, y=positive_pooled)
        return cfg_combine(cond, denoiser(x, sigma, context=negative_ctx, y=negative_pooled), 3.0)
    start = noise * (1 + sigmas[0] ** 2).sqrt()  # core's noise scaling when sampling starts at sigma_max
    ours = sampling.sample_dpmpp_2m(guided, start, sigmas, disable=True)
    torch.testing.assert_close(core, ours, atol=1e-4, rtol=1e-4)


def test_loader_builds_the_unet_once_inside_core_model(comfy, f1_model, tmp_path):
    """F1CheckpointLoader's path: the file's U-Net weights go straight into core's model; text and VAE on core's
    operations."""
    import comfy.ops
    from f1core.checkpoint import load_parts, open_checkpoint, save_checkpoint
    config, unet, _ = f1_model
    path = save_checkpoint(tmp_path / "unet.safetensors", config, unet=unet)
    checkpoint = open_checkpoint(path)
    patcher = import_pack("nodes.f1_model").empty_model_patcher(checkpoint.config)
    core_unet = patcher.model.diffusion_model
    load_parts(checkpoint, operations=comfy.ops.disable_weight_init, modules={"unet": core_unet})
    assert checkpoint.unet is core_unet
    for key, value in unet.state_dict().items():
        assert torch.equal(core_unet.state_dict()[key], value), key


def test_latent_format_carries_the_vae_downscale_for_the_pixel_budget(comfy):
    from f1core.config import scenes_x4, tiny
    f1_limits = import_pack("nodes.f1_limits")
    for config, scale in ((tiny(), 8), (scenes_x4(), 4)):
        patcher = import_pack("nodes.f1_model").empty_model_patcher(config)
        assert f1_limits.latent_scale(patcher) == scale
