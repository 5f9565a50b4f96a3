"""Regional prompts in attention (f1core.regions, nodes_regions) and the patch protocol of the F.1 U-Net they use:
the maths on its own, then the nodes inside core's sampler on a tiny F.1 and a tiny core SD1.5-architecture U-Net."""
import pytest
import torch

from f1core.config import tiny
from f1core.models.attention import attention
from f1core.models.unet import F1UNet
from f1core.regions import Region, RegionalAttention, layout_from_prompt, mask_schedule, step_progress

WIDTH = 8


def ctx(seed, tokens, width=WIDTH):
    return torch.randn(1, tokens, width, generator=torch.Generator().manual_seed(seed))


def halves(h=4, w=6):
    left = torch.zeros(h, w)
    left[:, : w // 2] = 1
    return left, 1 - left


# ---- the maths --------------------------------------------------------------------------------------------------

def test_shares_fill_gaps_with_the_base_and_split_overlaps():
    left = torch.zeros(4, 4)
    left[:, :2] = 1
    middle = torch.zeros(4, 4)
    middle[:, 1:3] = 1
    shares = RegionalAttention([Region(ctx(1, 3), left), Region(ctx(2, 5), middle)]).weights(4, 4, items=1)[0]
    shares = shares.reshape(4, 4, 3)  # base, left, middle
    torch.testing.assert_close(shares.sum(-1), torch.ones(4, 4))
    torch.testing.assert_close(shares[:, 0], torch.tensor([0.0, 1.0, 0.0]).expand(4, 3))  # left only
    torch.testing.assert_close(shares[:, 1], torch.tensor([0.0, 0.5, 0.5]).expand(4, 3))  # overlap shares
    torch.testing.assert_close(shares[:, 3], torch.tensor([1.0, 0.0, 0.0]).expand(4, 3))  # gap: base prompt
    base_kept = RegionalAttention([Region(ctx(1, 3), torch.ones(4, 4))], base_weight=0.25).weights(4, 4, 1)[0]
    torch.testing.assert_close(base_kept[:, 0], torch.full((16,), 0.25 / 1.25))


@pytest.mark.parametrize("h,w", [(5, 7), (3, 3), (13, 9), (1, 2)])
def test_masks_are_resized_to_each_levels_exact_size(h, w):
    left, _ = halves(40, 60)
    shares = RegionalAttention([Region(ctx(1, 3), left)]).weights(h, w, items=1)
    assert shares.shape == (1, h * w, 2)
    region = shares[0, :, 1].reshape(h, w)
    assert region[:, 0].min() > 0.99 and region[:, -1].max() < 0.01 or w < 3  # left column in, right column out


def test_feather_softens_and_grow_dilates_with_kornia():
    square = torch.zeros(32, 32)
    square[8:24, 8:24] = 1
    hard = RegionalAttention([Region(ctx(1, 3), square)]).masks[0][0, 0]
    soft = RegionalAttention([Region(ctx(1, 3), square)], feather=2.0).masks[0][0, 0]
    grown = RegionalAttention([Region(ctx(1, 3), square)], grow=3).masks[0][0, 0]
    shrunk = RegionalAttention([Region(ctx(1, 3), square)], grow=-3).masks[0][0, 0]
    assert set(hard.unique().tolist()) == {0.0, 1.0}
    assert 0.2 < soft[16, 8] < 0.8 and soft[16, 16] > 0.99 and soft[0, 0] < 0.01  # a ramp across the edge
    assert grown.sum() == 22 * 22 and shrunk.sum() == 10 * 10


def regional_attention(regional, q, k_base, chunks, items, h, w, heads=2):
    """One cross-attention layer as the patches run it: context extended, keys under the regional bias."""
    k, v = regional.extend(k_base, k_base)
    bias = regional.key_bias(h, w, chunks, items, k_base.shape[1])
    return attention(q, k, v, heads, mask=bias)


def test_each_query_sees_its_region_the_gap_sees_the_base_and_the_negative_is_unmasked():
    h, w = 4, 6
    left = torch.zeros(h, w)
    left[:, :2] = 1
    right = torch.zeros(h, w)
    right[:, 4:] = 1
    base, negative, a, b = ctx(0, 5), ctx(1, 5), ctx(2, 3), ctx(3, 7)  # prompts of different lengths
    regional = RegionalAttention([Region(a, left), Region(b, right)])
    q = torch.randn(2, h * w, WIDTH)  # rows: [cond, uncond], as core batches them
    out = regional_attention(regional, q, torch.cat([base, negative]), [True, False], 1, h, w).reshape(2, h, w, -1)
    plain = lambda query, keys: attention(query, keys, keys, 2).reshape(1, h, w, -1)  # noqa: E731
    torch.testing.assert_close(out[0, :, :2], plain(q[:1], a)[0, :, :2])      # left region: its own prompt only
    torch.testing.assert_close(out[0, :, 4:], plain(q[:1], b)[0, :, 4:])      # right region
    torch.testing.assert_close(out[0, :, 2:4], plain(q[:1], base)[0, :, 2:4])  # the gap: the base prompt
    torch.testing.assert_close(out[1], plain(q[1:], negative)[0])               # negative: unmasked
    assert torch.isfinite(out).all()


def test_a_prompts_share_does_not_depend_on_its_length():
    h, w = 2, 2
    half = torch.zeros(h, w)
    half[:, 0] = 1
    feathered = half * 0.5  # every query half region, half base
    q = torch.zeros(1, h * w, WIDTH)  # equal scores for every key: the output is the share-weighted mean of values
    base, region = torch.ones(1, 4, WIDTH), -torch.ones(1, 9, WIDTH)
    out = regional_attention(RegionalAttention([Region(region, feathered)]), q, base, [True], 1, h, w)
    torch.testing.assert_close(out.reshape(h, w, -1)[:, 0], torch.zeros(h, WIDTH))  # 0.5 * 1 + 0.5 * -1
    torch.testing.assert_close(out.reshape(h, w, -1)[:, 1], torch.ones(h, WIDTH))


def test_batch_items_read_their_own_masks():
    h, w = 3, 4
    masks = torch.stack([torch.ones(h, w), torch.zeros(h, w)])
    masks[1, 0, 0] = 1
    regional = RegionalAttention([Region(ctx(2, 3), masks)])
    shares = regional.weights(h, w, items=2)
    assert shares[0, :, 1].min() == 1 and shares[1, :, 1].sum() == pytest.approx(1.0, abs=0.2)
    bias = regional.key_bias(h, w, [True, False], 2, 5)
    assert bias.shape == (4, h * w, 8)
    with pytest.raises(ValueError, match="batch of 2"):
        regional.weights(h, w, items=3)


def test_schedule_runs_a_fraction_of_steps_under_masks_then_blends_back():
    sigmas = [10.0, 6.0, 3.0, 1.0, 0.0]
    assert [step_progress(s, sigmas) for s in (10.0, 6.0, 4.5, 3.0, 1.0)] == [0, 0.25, 0.25, 0.5, 0.75]
    assert [mask_schedule(p, 0.5, 0.0) for p in (0, 0.25, 0.5, 0.75)] == [1, 1, 0, 0]
    assert [mask_schedule(p, 0.25, 0.5) for p in (0, 0.25, 0.5, 0.75)] == [1, 1, 0.5, 0]


def test_layout_from_prompt_places_objects_by_relation():
    (first, left), (second, right) = layout_from_prompt("a red circle on the left of a blue square", 16, 8)
    assert (first, second) == ("a red circle", "a blue square")
    assert left[:, :8].min() == 1 and left[:, 8:].max() == 0 and torch.equal(right, 1 - left)
    (top_phrase, top), (_, bottom) = layout_from_prompt("a green star above a pink hexagon", 8, 8)
    assert top_phrase == "a green star" and top[:4].min() == 1 and top[4:].max() == 0 and bottom[4:].min() == 1
    with pytest.raises(ValueError):
        layout_from_prompt("a cat on a mat", 8, 8)


# ---- the F.1 U-Net's patch protocol ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    model = F1UNet(tiny().unet).eval()
    with torch.no_grad():  # zero-initialised output layers would hide every attention change
        for name, p in model.named_parameters():
            if "proj_out" in name or "conv_out" in name or name.endswith("conv2.weight"):
                p.normal_(0, 0.1)
    return model


def unet_inputs(batch=1, h=9, w=7):
    g = torch.Generator().manual_seed(1)
    config = tiny().unet
    return (torch.randn(batch, config.in_channels, h, w, generator=g), torch.zeros(batch),
            torch.randn(batch, 5, config.context_dim, generator=g))


def test_transformer_options_carry_core_shapes_and_indices(unet):
    x, t, context = unet_inputs(h=9, w=7)
    seen = []

    def spy(n, context, value, extra):
        seen.append((extra["block"], extra["transformer_index"], extra["activations_shape"], extra["original_shape"]))
        return n, context, value

    unet(x, t, context, transformer_options={"patches": {"attn2_patch": [spy]}})
    assert [s[1] for s in seen] == list(range(len(seen))) == list(range(len(unet.attention_blocks())))
    assert all(s[3] == [1, 6, 9, 7] for s in seen)
    assert {tuple(s[2][2:]) for s in seen} == {(5, 4)}  # the attention level of a 9x7 latent, exactly
    assert [(s[0][0], s[0][1]) for s in seen] == [k[:2] for k in unet.attention_blocks()]


def test_middle_patch_and_cross_scale_patches_are_reached(unet):
    x, t, context = unet_inputs()
    reference = unet(x, t, context)
    calls = []

    def middle(tokens, extra):
        calls.append("middle")
        return tokens * 0.5

    def cross_scale(q, k, v, extra):
        calls.append(("cross_scale", k.shape[1]))
        return torch.zeros_like(q)

    replace = {"cross_scale": {key: cross_scale for key in unet.attention_blocks()}}
    out = unet(x, t, context, transformer_options={"patches": {"middle_patch": [middle]}, "patches_replace": replace})
    assert calls.count("middle") == len(unet.attention_blocks())
    assert any(isinstance(c, tuple) for c in calls) and not torch.allclose(out, reference)


def test_optimized_attention_override_wraps_every_attention_call(unet):
    x, t, context = unet_inputs()
    reference = unet(x, t, context)
    seen = []

    def override(func, q, k, v, heads, **kwargs):
        seen.append(func)
        return func(q, k, v, heads, **kwargs)

    out = unet(x, t, context, transformer_options={"optimized_attention_override": override})
    torch.testing.assert_close(out, reference)
    assert len(seen) >= 2 * len(unet.attention_blocks()) and all(f is attention for f in seen)


def test_key_masks_take_one_row_per_query():
    q, k = torch.randn(2, 6, WIDTH), torch.randn(2, 4, WIDTH)
    rows = torch.tensor([True, True, False, True])
    per_key = attention(q, k, k, 2, mask=rows.expand(2, 4))
    per_query = attention(q, k, k, 2, mask=rows.expand(2, 6, 4))
    torch.testing.assert_close(per_query, per_key)
    first_two = torch.zeros(2, 6, 4, dtype=torch.bool)
    first_two[:, :3, :2] = True
    first_two[:, 3:, 2:] = True
    out = attention(q, k, k, 2, mask=first_two)
    torch.testing.assert_close(out[:, :3], attention(q[:, :3], k[:, :2], k[:, :2], 2))
    torch.testing.assert_close(out[:, 3:], attention(q[:, 3:], k[:, 2:], k[:, 2:], 2))


def test_host_attention_function_is_used(unet):
    calls = []

    def host(q, k, v, heads, mask=None, transformer_options=None, **kwargs):
        calls.append(mask is None or mask.dtype != torch.bool)  # a host gets additive masks
        return attention(q, k, v, heads, mask=mask)

    torch.manual_seed(0)
    hosted = F1UNet(tiny().unet, attention_fn=host)
    hosted.load_state_dict(unet.state_dict())
    x, t, context = unet_inputs()
    mask = torch.ones(1, 5, dtype=torch.bool)
    mask[0, -1] = False
    torch.testing.assert_close(hosted(x, t, context, context_mask=mask), unet(x, t, context, context_mask=mask))
    assert calls and all(calls)
