import dataclasses

import pytest
import torch

from f1core.config import tiny
from f1core.diffusion import F1Denoiser, edm_coefficients
from f1core.models.unet import F1UNet


def make_unet(seed=0, **overrides):
    torch.manual_seed(seed)
    config = dataclasses.replace(tiny().unet, **overrides)
    unet = F1UNet(config).eval()
    # the output conv and mixer projections start at zero; give them weights so every path shows in the output
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if p.abs().sum() == 0 and p.ndim > 1:
                p.normal_(0, 0.05)
    return unet


def inputs(batch=2, size=16, seed=1, context_len=10):
    g = torch.Generator().manual_seed(seed)
    c = tiny().unet
    return (torch.randn(batch, c.in_channels, size, size, generator=g), torch.randn(batch, generator=g),
            torch.randn(batch, context_len, c.context_dim, generator=g), torch.randn(batch, c.pooled_dim, generator=g))


def test_output_shape_matches_input_for_even_and_odd_sizes():
    unet = make_unet()
    for h, w in [(16, 16), (24, 8), (13, 9)]:
        x = torch.randn(1, 6, h, w)
        out = unet(x, torch.zeros(1), context=torch.randn(1, 5, 64), y=torch.randn(1, 64))
        assert out.shape == x.shape


def test_a_patched_unet_reads_2x2_latent_patches_and_refuses_odd_latents():
    unet = make_unet(patch_size=2)
    x = torch.randn(1, 6, 16, 12)
    out = unet(x, torch.zeros(1), context=torch.randn(1, 5, 64), y=torch.randn(1, 64))
    assert out.shape == x.shape
    assert unet.conv_in.in_channels == 4 * 6 and unet.conv_out.out_channels == 4 * 6
    with pytest.raises(ValueError, match="multiple of 2"):
        unet(torch.randn(1, 6, 13, 12), torch.zeros(1), context=torch.randn(1, 5, 64), y=torch.randn(1, 64))


def test_same_seed_same_weights_and_output():
    x, t, ctx, y = inputs()
    a, b = make_unet(seed=3), make_unet(seed=3)
    assert torch.equal(a(x, t, context=ctx, y=y), b(x, t, context=ctx, y=y))
    assert not torch.equal(a(x, t, context=ctx, y=y), make_unet(seed=4)(x, t, context=ctx, y=y))


def test_output_depends_on_text_pooled_vector_and_timestep():
    unet = make_unet()
    x, t, ctx, y = inputs()
    base = unet(x, t, context=ctx, y=y)
    assert not torch.allclose(base, unet(x, t, context=ctx.flip(0), y=y))
    assert not torch.allclose(base, unet(x, t, context=ctx, y=-y))
    assert not torch.allclose(base, unet(x, t + 1, context=ctx, y=y))


def test_batch_items_are_independent():
    unet = make_unet()
    x, t, ctx, y = inputs()
    full = unet(x, t, context=ctx, y=y)
    single = unet(x[:1], t[:1], context=ctx[:1], y=y[:1])
    torch.testing.assert_close(full[:1], single, atol=1e-5, rtol=1e-4)


def test_cross_scale_attention_reads_other_levels():
    unet = make_unet()
    x, t, ctx, y = inputs()
    seen = {}

    def record(module, args, output):
        seen["keys"] = args[0].shape
    block = unet.middle_block.mixer.layers[0].cross_scale
    handle = block.to_k.register_forward_hook(record)
    unet(x, t, context=ctx, y=y)
    handle.remove()
    grid = unet.config.cross_scale_grid
    levels = len(unet.config.channel_mult)
    assert seen["keys"][1] == levels * grid * grid  # one pooled grid from every resolution level
    without = make_unet(cross_scale_levels=())  # the SD-style baseline: no scale memory anywhere, middle included
    assert not any("cross_scale" in n or n.startswith("memory.") for n, _ in without.named_parameters())
    assert without(x, t, context=ctx, y=y).shape == x.shape


def test_apply_control_adds_residuals_at_every_level():
    unet = make_unet()
    x, t, ctx, y = inputs(batch=1)
    n_input = 1 + len(unet.input_blocks)
    probe = {"input": [None] * n_input, "middle": [None], "output": [None] * n_input}
    base = unet(x, t, context=ctx, y=y, control={k: list(v) for k, v in probe.items()})
    torch.testing.assert_close(base, unet(x, t, context=ctx, y=y))

    # a residual on the middle block changes the output; shapes of the others are exercised by zeros
    mid_shape = [1, unet.config.model_channels * unet.config.channel_mult[-1],
                 x.shape[2] // 2 ** (len(unet.config.channel_mult) - 1), x.shape[3] // 2 ** (len(unet.config.channel_mult) - 1)]
    control = {"input": [None] * n_input, "middle": [torch.ones(mid_shape)], "output": [None] * n_input}
    assert not torch.allclose(base, unet(x, t, context=ctx, y=y, control=control))
    assert control["middle"] == []  # consumed, as core's apply_control pops it


def test_transformer_options_patches_reach_attention():
    unet = make_unet()
    x, t, ctx, y = inputs(batch=1)
    calls = []

    def attn2_patch(n, context, value, extra):
        calls.append(extra["block"])
        return n, context * 0, value * 0

    def attn1_replace(q, k, v, extra):
        calls.append(("replace", extra["block"]))
        return v

    base = unet(x, t, context=ctx, y=y)
    options = {"patches": {"attn2_patch": [attn2_patch]},
               "patches_replace": {"attn1": {("middle", 0, 0): attn1_replace}}}
    patched = unet(x, t, context=ctx, y=y, transformer_options=options)
    assert ("middle", 0) in calls and ("replace", ("middle", 0)) in calls
    assert any(b[0] == "input" for b in calls if isinstance(b, tuple) and b[0] != "replace")
    assert not torch.allclose(base, patched)


def test_missing_context_is_a_clear_error():
    unet = make_unet()
    with pytest.raises(ValueError, match="context"):
        unet(torch.randn(1, 6, 8, 8), torch.zeros(1))


def test_edm_denoiser_preconditioning():
    sigma = torch.tensor([0.5, 2.0, 20.0])
    c_in, c_skip, c_out = edm_coefficients(sigma, 1.0)
    # unit-variance input after c_in for data of variance sigma_data^2 plus noise sigma^2
    torch.testing.assert_close(c_in, 1 / torch.sqrt(sigma ** 2 + 1))
    # at low noise the denoiser mostly passes x through; at high noise it relies on the network
    assert c_skip[0] > 0.75 and c_skip[2] < 0.01
    unet = make_unet()
    den = F1Denoiser(unet, tiny().schedule)
    x, _, ctx, y = inputs()
    out = den(x, torch.tensor(3.0), context=ctx, y=y)
    assert out.shape == x.shape and torch.isfinite(out).all()
    sig = den.sigmas(10)
    assert sig[0] == pytest.approx(tiny().schedule.sigma_max) and sig[-1] == 0 and (sig[:-1] > sig[1:]).all()


def test_context_mask_equals_dropping_the_masked_tokens():
    unet = make_unet()
    x, t, ctx, y = inputs(batch=1, context_len=12)
    mask = torch.ones(1, 12, dtype=torch.bool)
    mask[:, 5:9] = False
    masked = unet(x, t, context=ctx, y=y, context_mask=mask)
    dropped = unet(x, t, context=ctx[:, mask[0]], y=y)
    torch.testing.assert_close(masked, dropped, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(masked, unet(x, t, context=ctx, y=y))
