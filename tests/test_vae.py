from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from f1core.config import VAEConfig, tiny
from f1core.models.vae import F1VAE
from f1core.ops import torch_ops
from f1core.quantize import fake_quantize, quantize_latent
from f1core.tiling import tiled_apply

CFG = tiny().vae


def make_vae(seed=0):
    torch.manual_seed(seed)
    return F1VAE(CFG).eval()


@pytest.fixture(scope="module")
def vae():
    return make_vae()


def smooth_images(batch, height, width, seed=0):
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(batch, 3, height // 8, width // 8, generator=g) * 2 - 1
    return F.interpolate(low, size=(height, width), mode="bilinear", align_corners=False)


# --- shapes, layout, errors ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("height,width", [(64, 64), (128, 96)])
def test_shapes(vae, height, width):
    x = smooth_images(2, height, width)
    with torch.no_grad():
        z = vae.encode(x)
        y = vae.decode(z)
        recon, kl = vae(x)
    assert z.shape == (2, CFG.latent_channels, height // 8, width // 8)
    assert y.shape == x.shape and y.abs().max() <= 1.0
    assert recon.shape == x.shape and kl.ndim == 0 and kl >= 0


def test_pack_unpack_is_lossless(vae):
    fine = torch.randn(2, CFG.fine_channels, 8, 6)
    coarse = torch.randn(2, CFG.coarse_channels, 4, 3)
    latent = vae.pack(fine, coarse)
    assert latent.shape == (2, CFG.latent_channels, 8, 6)
    fine_back, coarse_back = vae.unpack(latent)
    assert torch.equal(fine_back, fine) and torch.equal(coarse_back, coarse)
    assert torch.equal(vae.pack(fine_back, coarse_back), latent)


def test_coarse_channels_must_pack_into_four():
    with pytest.raises(ValueError, match="coarse_channels=6"):
        F1VAE(VAEConfig(base_channels=16, channel_mult=(1, 2, 2, 2), num_res_blocks=1, coarse_channels=6))


def test_bad_sizes_name_the_fix(vae):
    with pytest.raises(ValueError, match=r"100x60.*multiple of 16.*96x64"):
        vae.encode(torch.zeros(1, 3, 100, 60))
    with pytest.raises(ValueError, match=r"5x4.*even.*6x4"):
        vae.decode(torch.zeros(1, CFG.latent_channels, 5, 4))
    with pytest.raises(ValueError, match="latent must be"):
        vae.decode(torch.zeros(1, CFG.latent_channels + 1, 4, 4))


def test_encode_mean_is_deterministic_and_sampling_is_seeded(vae):
    x = smooth_images(1, 32, 32)
    with torch.no_grad():
        mean = vae.encode(x)
        assert torch.equal(vae.encode(x), mean)
        first = vae.encode(x, sample=True, generator=torch.Generator().manual_seed(7))
        again = vae.encode(x, sample=True, generator=torch.Generator().manual_seed(7))
        other = vae.encode(x, sample=True, generator=torch.Generator().manual_seed(8))
    assert torch.equal(first, again)
    assert not torch.allclose(first, other) and not torch.allclose(first, mean)


def test_custom_operations_device_and_dtype_are_used():
    class Conv(nn.Conv2d):
        pass

    class Norm(nn.GroupNorm):
        pass

    class Lin(nn.Linear):
        pass

    ops = SimpleNamespace(**{**vars(torch_ops), "Conv2d": Conv, "GroupNorm": Norm, "Linear": Lin})
    model = F1VAE(CFG, operations=ops, dtype=torch.float64)
    kinds = {type(m) for m in model.modules()}
    assert {Conv, Norm, Lin} <= kinds and not kinds & {nn.Conv2d, nn.GroupNorm, nn.Linear}
    assert all(t.dtype == torch.float64 for t in [*model.parameters(), *model.buffers()])


# --- latent statistics and training -------------------------------------------------------------------------------

def test_fitted_stats_normalise_latents_and_decode_undoes_them():
    model = make_vae(seed=1)
    x = smooth_images(4, 32, 32, seed=1)
    with torch.no_grad():
        before = model.decode(model.encode(x))
        raw = model.encode(x)
        model.fit_latent_stats(x)
        z = model.encode(x)
        after = model.decode(z)
    assert not torch.allclose(raw.mean(dim=(0, 2, 3)), torch.zeros(CFG.latent_channels), atol=1e-2)
    torch.testing.assert_close(z.mean(dim=(0, 2, 3)), torch.zeros(CFG.latent_channels), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.std(dim=(0, 2, 3)), torch.ones(CFG.latent_channels), atol=1e-4, rtol=0)
    torch.testing.assert_close(after, before, atol=1e-5, rtol=0)


def test_overfit_two_images_lowers_reconstruction_loss():
    model = make_vae(seed=2).train()
    x = smooth_images(2, 32, 32, seed=2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(30):
        recon, kl = model(x)  # no noise: the posterior means
        loss = F.mse_loss(recon, x)
        (loss + 1e-6 * kl).backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0]  # measured ~0.04x


# --- tiling -------------------------------------------------------------------------------------------------------

def test_tiled_apply_is_exact_for_a_local_function():
    x = torch.randn(1, 2, 36, 52)

    def upsample(t):
        return F.interpolate(t.sin(), scale_factor=8, mode="nearest")

    def downsample(t):
        return F.avg_pool2d(t, 2)

    torch.testing.assert_close(tiled_apply(upsample, x, tile=16, overlap=6, scale=8, align=2), upsample(x))
    torch.testing.assert_close(tiled_apply(downsample, x, tile=12, overlap=4, scale=0.5, align=4), downsample(x))


def test_tiled_apply_rejects_bad_arguments():
    x = torch.randn(1, 1, 32, 32)
    with pytest.raises(ValueError, match="overlap"):
        tiled_apply(lambda t: t, x, tile=16, overlap=16, scale=1, align=2)
    with pytest.raises(ValueError, match="align"):
        tiled_apply(lambda t: t, torch.randn(1, 1, 33, 32), tile=16, overlap=4, scale=1, align=2)
    with pytest.raises(ValueError, match="expected"):
        tiled_apply(lambda t: t, x, tile=16, overlap=4, scale=2, align=2)


def test_single_tile_equals_plain_encode_and_decode(vae):
    x = smooth_images(1, 64, 48)
    with torch.no_grad():
        z = vae.encode(x)
        assert torch.equal(vae.encode_tiled(x, tile=64, overlap=16), z)
        assert torch.equal(vae.decode_tiled(z, tile=8, overlap=2), vae.decode(z))


def test_feathering_spreads_a_tile_offset_across_the_overlap():
    # Each tile shifted by its own mean: the kind of per-tile difference GroupNorm statistics cause. Two tiles per
    # side at 0 and 16. Hard-cut averaging jumps by half the shift difference between two adjacent pixels; an
    # 8-pixel ramp spreads the shift over 9 steps.
    x = torch.randn(1, 1, 40, 40, generator=torch.Generator().manual_seed(3)) + torch.linspace(0, 4, 40)

    def shifted_by_tile_mean(t):
        return t + t.mean()

    def largest_step(t):
        return max(t.diff(dim=-1).abs().max(), t.diff(dim=-2).abs().max())

    shifts = torch.stack([x[..., r:r + 24, c:c + 24].mean() for r in (0, 16) for c in (0, 16)])
    spread = shifts.max() - shifts.min()
    hard = tiled_apply(shifted_by_tile_mean, x, tile=24, overlap=0, scale=1, align=8) - x
    feathered = tiled_apply(shifted_by_tile_mean, x, tile=24, overlap=8, scale=1, align=8) - x
    assert largest_step(hard) > 0.4 * spread
    assert largest_step(feathered) <= spread / 9 + 1e-5


def test_tiled_vae_close_to_untiled(vae):
    # With random weights each tile's GroupNorm statistics and /16 attention see only that tile, so tiles differ
    # from the whole-image pass by design; feathering hides seams, it cannot make tiles agree. Measured on five
    # seeds: decode max error 0.09-0.12 of the output range, mean 0.006-0.009; encode max 0.08-0.10.
    torch.manual_seed(3)
    z = torch.randn(1, CFG.latent_channels, 32, 32)
    x = smooth_images(1, 256, 256, seed=3)
    with torch.no_grad():
        ref = vae._decode_unclamped(z)
        tiled = tiled_apply(vae._decode_unclamped, z, tile=24, overlap=12, scale=8, align=2)
        enc_ref = vae.encode(x)
        enc_tiled = vae.encode_tiled(x, tile=192, overlap=96)
    err, span = (tiled - ref).abs(), ref.max() - ref.min()
    assert err.max() < 0.2 * span and err.mean() < 0.015 * span
    assert (enc_tiled - enc_ref).abs().max() < 0.15 * (enc_ref.max() - enc_ref.min())


def test_decode_1024(vae):
    z = torch.randn(1, CFG.latent_channels, 128, 128, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        tiled = vae.decode_tiled(z)
        whole = vae.decode(z)
    assert tiled.shape == (1, 3, 1024, 1024) and torch.isfinite(tiled).all()
    assert (tiled - whole).abs().mean() < 0.05  # measured 0.028 on [-1, 1]; unrelated images differ by ~0.7


def test_bf16_decode_stays_close_to_fp32(vae):
    # F1VAEDecode's precision=bf16 path, whole and tiled; the shipped model measured 0.01 dB from fp32 against
    # the renders (benchmarks/vae_decode.py), a random one is a harder case (no trained, smooth features)
    z = torch.randn(2, CFG.latent_channels, 16, 16, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        for decode in (vae.decode, lambda z, **kw: vae.decode_tiled(z, tile=8, overlap=2, **kw)):
            exact, fast = decode(z), decode(z, bf16=True)
            assert fast.dtype == exact.dtype and fast.is_contiguous() and fast.shape == exact.shape
            # bf16's 8-bit mantissa compounds over the decoder's layers: 1-2% relative RMS on random weights,
            # depending on the CPU's bf16 kernels (2.0% on a machine without AVX512-BF16); a wrong layout is ~100%
            assert (fast - exact).pow(2).mean().sqrt() < 0.04 * exact.pow(2).mean().sqrt()


# --- quantization -------------------------------------------------------------------------------------------------

def varying_latent(seed=0):
    """A latent whose magnitude grows 1000x from left to right, as busy and flat image regions differ."""
    g = torch.Generator().manual_seed(seed)
    envelope = torch.logspace(-3, 0, 32).reshape(1, 1, 1, 32)
    return torch.randn(2, 6, 24, 32, generator=g) * envelope * 5


@pytest.mark.parametrize("granularity", ["channel", "tile"])
@pytest.mark.parametrize("bits", [2, 4, 8, 12, 16])
def test_quantization_error_is_within_half_a_step(bits, granularity):
    z = varying_latent()
    q = quantize_latent(z, bits=bits, granularity=granularity, tile=8)
    qmax = 2 ** (bits - 1) - 1
    assert q.codes.dtype == (torch.int8 if bits <= 8 else torch.int16)
    assert q.codes.abs().max() <= qmax and q.codes.abs().max() == qmax  # absmax maps onto the largest code
    step = q.scale if granularity == "channel" else (
        q.scale.repeat_interleave(8, -2).repeat_interleave(8, -1)[..., :24, :32])
    float32_slack = 2 * torch.finfo(torch.float32).eps * z.abs()  # at 16 bits a step nears float32 precision
    assert ((z - q.dequantize()).abs() <= step / 2 + float32_slack).all()


def test_error_roughly_halves_per_bit():
    z = torch.randn(2, 6, 16, 16, generator=torch.Generator().manual_seed(5))
    errors = [(z - quantize_latent(z, bits=b).dequantize()).abs().mean().item() for b in range(4, 13)]
    ratios = [a / b for a, b in zip(errors, errors[1:])]
    assert all(1.7 < r < 2.5 for r in ratios), ratios


def test_tile_granularity_beats_channel_on_varying_magnitude():
    z = varying_latent(seed=6)
    channel = (z - quantize_latent(z, 8, "channel").dequantize()).square().mean()
    tiled = (z - quantize_latent(z, 8, "tile", tile=8).dequantize()).square().mean()
    assert tiled < 0.5 * channel


def test_ragged_tiles_zero_blocks_and_memory():
    z = torch.randn(1, 4, 12, 10)
    z[:, 1] = 0.0
    q = quantize_latent(z, bits=8, granularity="tile", tile=8)
    assert q.scale.shape == (1, 4, 2, 2) and q.dequantize().shape == z.shape
    assert torch.isfinite(q.dequantize()).all() and (q.dequantize()[:, 1] == 0).all()
    big = torch.randn(1, 6, 128, 128)
    assert quantize_latent(big, bits=8).nbytes < big.nbytes / 3.9  # int8 codes: ~4x smaller than float32
    assert quantize_latent(big, bits=16).nbytes < big.nbytes / 1.9


def test_dequantize_restores_dtype_and_bad_arguments_raise():
    z = torch.randn(1, 2, 8, 8, dtype=torch.bfloat16)
    assert quantize_latent(z).dequantize().dtype == torch.bfloat16
    with pytest.raises(ValueError, match="bits"):
        quantize_latent(z, bits=1)
    with pytest.raises(ValueError, match="granularity"):
        quantize_latent(z, granularity="pixel")
    with pytest.raises(ValueError, match="NaN"):
        quantize_latent(torch.full((1, 1, 2, 2), float("nan")))


def test_fake_quantize_rounds_forward_and_passes_gradient_straight_through():
    z = torch.randn(1, 3, 8, 8, requires_grad=True)
    out = fake_quantize(z, bits=3)
    torch.testing.assert_close(out.detach(), quantize_latent(z.detach(), bits=3).dequantize())
    assert not torch.equal(out.detach(), z.detach())
    upstream = torch.randn_like(z)
    out.backward(upstream)
    torch.testing.assert_close(z.grad, upstream)
