"""Regional prompts in attention (f1core.regions, nodes_regions) and the patch protocol of the F.1 U-Net they use:
the maths on its own, then the nodes inside core's sampler on a tiny F.1 and a tiny core SD1.5-architecture U-Net."""
from dataclasses import replace

import pytest
import torch

from f1core.config import tiny
from f1core.models.attention import attention
from f1core.models.unet import F1UNet
from f1core.regions import (Region, RegionalAttention, RegionBatch, decouple_prompt, decoupled_regions, layout_from_prompt,
                            mask_schedule, parse_blocks, shape_mask, step_progress)

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


def test_feather_softens_and_grow_dilates():
    square = torch.zeros(32, 32)
    square[8:24, 8:24] = 1
    hard = RegionalAttention([Region(ctx(1, 3), square)]).masks[0][0, 0]
    soft = RegionalAttention([Region(ctx(1, 3), square)], feather=2.0).masks[0][0, 0]
    grown = RegionalAttention([Region(ctx(1, 3), square)], grow=3).masks[0][0, 0]
    shrunk = RegionalAttention([Region(ctx(1, 3), square)], grow=-3).masks[0][0, 0]
    assert set(hard.unique().tolist()) == {0.0, 1.0}
    assert 0.2 < soft[16, 8] < 0.8 and soft[16, 16] > 0.99 and soft[0, 0] < 0.01  # a ramp across the edge
    assert grown.sum() == 22 * 22 and shrunk.sum() == 10 * 10


@pytest.mark.parametrize("grow", [1, 3, -2, -4])
def test_grow_is_kornias_square_dilation_and_erosion(grow):
    import kornia

    mask = (torch.rand(2, 1, 23, 31, generator=torch.Generator().manual_seed(grow + 9)) > 0.8).float()
    kernel = torch.ones(2 * abs(grow) + 1, 2 * abs(grow) + 1)
    expected = kornia.morphology.dilation(mask, kernel) if grow > 0 else kornia.morphology.erosion(mask, kernel)
    assert torch.equal(shape_mask(mask[:, 0], grow), expected)  # edges included (the border never counts)


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


def test_prompts_batched_zero_padded_under_a_context_mask_attend_as_unpadded():
    """F.1 batches a prompt and a negative of different lengths zero-padded under an additive mask; the regional
    bias must then hide the padding and spread each row's base share over that row's own tokens."""
    from f1core.models.attention import NEVER, pad_tokens
    h, w = 3, 4
    left, _ = halves(h, w)
    regional = RegionalAttention([Region(ctx(2, 3), left)])
    base, negative = ctx(0, 5), ctx(1, 8)
    q = torch.randn(2, h * w, WIDTH)
    want = torch.cat([regional_attention(regional, q[i:i + 1], k, [c], 1, h, w)
                      for i, (k, c) in enumerate([(base, True), (negative, False)])])
    padded = pad_tokens([base, negative])
    mask = pad_tokens([torch.zeros(1, 5), torch.zeros(1, 8)], value=NEVER)
    k, v = regional.extend(padded, padded)
    bias = regional.hide_padding(regional.key_bias(h, w, [True, False], 1, 8), mask, 8)
    torch.testing.assert_close(attention(q, k, v, 2, mask=bias), want)
    unhidden = attention(q, k, v, 2, mask=regional.key_bias(h, w, [True, False], 1, 8))
    assert (unhidden[0] - want[0]).abs().max() > 1e-3  # the padding would take attention without it


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


def test_decouple_prompt_splits_entities_styles_and_layout():
    parts = decouple_prompt("a striped red circle on the left of a small blue square on a black background", 16, 8)
    first, second = parts.entities
    assert (first.phrase, first.styled, first.style) == ("a red circle", "a striped red circle", "striped")
    assert (second.phrase, second.styled, second.style) == ("a small blue square", "a small blue square", None)
    assert parts.layout == "a circle to the left of a square on a black background"  # no attribute in it
    assert first.mask[:, :8].min() == 1 and first.mask[:, 8:].max() == 0
    assert layout_from_prompt("a striped red circle and a blue square", 8, 8)[0][0] == "a striped red circle"
    assert parse_blocks("all") is None and parse_blocks(" none ") == frozenset() == parse_blocks("")
    assert parse_blocks("Output 1, middle 0") == {("output", 1), ("middle", 0)}
    with pytest.raises(ValueError, match="cannot read 'output'"):
        parse_blocks("output")


def test_decoupled_regions_encode_each_entity_alone_and_send_style_where_asked():
    parts = decouple_prompt("a striped red circle and a blue square", 8, 8)
    encoded = []

    def encode(text):
        encoded.append(text)
        return ctx(len(encoded), len(text.split()))

    everywhere = decoupled_regions(parts.entities, encode)
    assert encoded == ["a striped red circle", "a blue square"] and everywhere[0].style_context is None
    encoded.clear()
    chosen = decoupled_regions(parts.entities, encode, frozenset({("output", 1)}), (0.0, 0.5))
    assert encoded == ["a red circle", "a striped red circle", "a blue square"]
    assert chosen[0].style_blocks == {("output", 1)} and chosen[1].style_context is None
    encoded.clear()
    assert decoupled_regions(parts.entities, encode, frozenset())[0].style_context is None
    assert encoded == ["a red circle", "a blue square"]


def test_a_regions_style_context_is_read_only_in_its_blocks_and_steps():
    left, right = halves()
    styled = Region(ctx(1, 3), left, style_context=ctx(2, 5), style_blocks=frozenset({("output", 1)}),
                    style_steps=(0.25, 0.75))
    regional = RegionalAttention([styled, Region(ctx(3, 4), right)])
    for block, progress in ((("output", 1), 0.5), (("output", 1), 0.25)):
        view = regional.at(block, progress)
        assert view.lengths == [5, 4] and torch.equal(view.contexts[0], ctx(2, 5))
        assert view.key_bias(4, 6, [True], 1, 2).shape == (1, 24, 2 + 9) and view.masks is regional.masks
    for block, progress in ((("output", 1), 0.75), (("output", 1), 0.0), (("output", 2), 0.5), (None, 0.5)):
        assert regional.at(block, progress) is regional and regional.lengths == [3, 4]
    assert regional.at(("output", 1), 0.5) is regional.at(("output", 1), 0.3)  # views are kept
    with pytest.raises(ValueError, match="different widths"):
        RegionalAttention([Region(ctx(1, 3), left, style_context=ctx(2, 3, WIDTH + 1))])


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


def test_region_batches_train_what_sampling_reads(unet):
    """Regional training (RegionBatch): an item without regions denoises exactly as without them, one region over
    the whole image whose phrase is the prompt denoises as the prompt, and two half regions change the output; a
    zero-padded phrase reads only its own tokens."""
    x, t, _ = unet_inputs(batch=3)
    g = torch.Generator().manual_seed(2)
    dim = tiny().unet.context_dim
    base = torch.randn(3, 6, dim, generator=g)
    base_real = torch.ones(3, 6, dtype=torch.bool)
    base_real[1, 4:] = False                     # item 1's prompt is 4 tokens, padded to 6
    base[1, 4:] = 0
    phrases = torch.cat([base[:1], torch.randn(2, 6, dim, generator=g)])   # phrase 0 is item 0's prompt
    phrases_real = torch.ones(3, 6, dtype=torch.bool)
    phrases_real[2, 3:] = False
    h, w = x.shape[-2:]
    masks = torch.zeros(3, 2, h, w)
    masks[0, 0] = 1                              # item 0: its prompt over everything
    masks[2, 0, :, : w // 2] = 1                 # item 2: two halves
    masks[2, 1, :, w // 2:] = 1
    index = torch.tensor([[0, -1], [-1, -1], [1, 2]])
    regions = RegionBatch.gather(masks, phrases, phrases_real, index)
    context, real = regions.extend(base, base_real)
    with torch.no_grad():
        plain = unet(x, t, context=base, context_mask=base_real)
        regional = unet(x, t, context=context, context_mask=real, transformer_options=regions.options(unet))
    torch.testing.assert_close(regional[:2], plain[:2], rtol=1e-4, atol=1e-5)
    assert (regional[2] - plain[2]).abs().max() > 1e-3
    # the padding of phrase 2 is never read: changing it changes nothing
    padded = phrases.clone()
    padded[2, 3:] = 5.0
    again = RegionBatch.gather(masks, padded, phrases_real, index)
    context, real = again.extend(base, base_real)
    with torch.no_grad():
        torch.testing.assert_close(unet(x, t, context=context, context_mask=real,
                                        transformer_options=again.options(unet)), regional)


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


# ---- the nodes inside core's sampler: tiny F.1 and a tiny core SD1.5-architecture U-Net ------------------------

@pytest.fixture(scope="module")
def region_nodes(comfy):
    from comfy_inprocess import import_pack
    return import_pack("nodes.nodes_regions")


@pytest.fixture(scope="module", params=["sd15", "f1"])
def core_model(request, comfy):
    """(patcher, conditioning(seed, tokens), text width)"""
    from test_adaptive_nodes import f1_patcher, sd15_patcher
    patcher, width, extra = (sd15_patcher if request.param == "sd15" else f1_patcher)(comfy)

    def conditioning(seed, tokens=5):
        return [[ctx(seed, tokens, width), dict(extra)]]

    return patcher, conditioning, width


def first_denoised(comfy, patcher, positive, negative, latent):
    """Core's KSampler path (euler, 2 steps, CFG 3): the positive and negative predictions of the first call."""
    seen = {}

    def spy(args):
        seen.setdefault("cond", args["cond"].clone())
        seen.setdefault("uncond", args["uncond"].clone())
        return args["uncond"] + (args["cond"] - args["uncond"]) * args["cond_scale"]

    spying = patcher.clone()
    spying.set_model_sampler_cfg_function(spy)
    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(0))
    out = comfy.sample.sample(spying, noise, 2, 3.0, "euler", "karras", positive, negative, latent,
                              disable_pbar=True, seed=0)
    return seen["cond"], seen["uncond"], out


def apply(region_nodes, patcher, regions, **overrides):
    args = dict(base_weight=0.0, feather=0.0, grow=0, mask_fraction=1.0, blend=0.0)
    args.update(overrides)
    return region_nodes.F1ApplyRegions.execute(patcher, regions, **args).result[0]


def latent_for(patcher, batch, h, w):
    return torch.zeros(batch, patcher.get_model_object("latent_format").latent_channels, h, w)


@pytest.mark.parametrize("batch,h,w", [(1, 8, 8), (2, 9, 7)])
def test_a_region_over_everything_equals_prompting_it_and_the_negative_is_untouched(comfy, region_nodes, core_model,
                                                                                    batch, h, w):
    patcher, conditioning, width = core_model
    latent = latent_for(patcher, batch, h, w)
    positive, negative, everywhere = conditioning(1, tokens=4), conditioning(2, tokens=6), ctx(3, 7, width)
    regional = apply(region_nodes, patcher, [Region(everywhere, torch.ones(h * 8, w * 8))])
    cond, uncond, out = first_denoised(comfy, regional, positive, negative, latent)
    want_cond, want_uncond, _ = first_denoised(comfy, patcher, [[everywhere, positive[0][1]]], negative, latent)
    base_cond, _, _ = first_denoised(comfy, patcher, positive, negative, latent)
    torch.testing.assert_close(cond, want_cond, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(uncond, want_uncond, rtol=1e-4, atol=1e-4)
    assert (cond - base_cond).abs().max() > 1e-3 and torch.isfinite(out).all()


def test_per_latent_masks_gaps_overlaps_and_uneven_prompts_in_a_batch(comfy, region_nodes, core_model):
    patcher, conditioning, width = core_model
    h, w = 9, 7
    latent = latent_for(patcher, 2, h, w)
    positive, negative = conditioning(1, tokens=5), conditioning(2, tokens=3)
    everywhere = torch.ones(2, h * 8, w * 8)
    everywhere[1] = 0
    everywhere[1, :, :20] = 1  # latent 1: a left strip only, the rest is a gap for the base prompt
    overlapping = torch.zeros(h * 8, w * 8)
    overlapping[:, 10:40] = 1
    a, b = ctx(3, 7, width), ctx(4, 2, width)
    regions = [Region(a, everywhere), Region(b, overlapping, strength=0.0)]  # b present but weightless
    cond, uncond, out = first_denoised(comfy, apply(region_nodes, patcher, regions, feather=3.0), positive,
                                       negative, latent)
    want, want_uncond, _ = first_denoised(comfy, patcher, [[a, positive[0][1]]], negative, latent)
    torch.testing.assert_close(cond[0], want[0], rtol=1e-4, atol=1e-4)  # latent 0 reads its own all-ones mask
    assert (cond[1] - want[1]).abs().max() > 1e-3                        # latent 1: region strip plus base
    torch.testing.assert_close(uncond, want_uncond, rtol=1e-4, atol=1e-4)
    strong = [Region(a, everywhere), Region(b, overlapping)]
    cond_b, _, out_b = first_denoised(comfy, apply(region_nodes, patcher, strong), positive, negative, latent)
    assert (cond_b[0] - cond[0]).abs().max() > 1e-3 and torch.isfinite(out_b).all() and torch.isfinite(out).all()


def test_mask_fraction_hands_the_last_steps_back_to_the_base_prompt(comfy, region_nodes, core_model):
    patcher, conditioning, width = core_model
    latent = latent_for(patcher, 1, 8, 8)
    positive, negative = conditioning(1), conditioning(2)
    regions = [Region(ctx(3, 4, width), torch.ones(64, 64))]

    def predictions(model):
        seen = []
        spying = model.clone()
        spying.set_model_sampler_cfg_function(lambda a: seen.append(a["cond"].clone()) or a["cond"])
        comfy.sample.sample(spying, torch.randn(latent.shape, generator=torch.Generator().manual_seed(0)), 4, 2.0,
                            "euler", "karras", positive, negative, latent, disable_pbar=True, seed=0)
        return seen

    plain = predictions(patcher)
    half = predictions(apply(region_nodes, patcher, regions, mask_fraction=0.5))
    full = predictions(apply(region_nodes, patcher, regions))
    changed = [(p - h).abs().max().item() for p, h in zip(plain, half)]
    assert changed[0] > 1e-3 and changed[1] > 1e-3      # steps 0, 1: under the masks
    assert (full[2] - half[2]).abs().max() > 1e-3       # step 2, same x in both: the base prompt again

    # with no step under the masks the patched model is the plain one, also for prompts of different lengths
    # (F.1 batches them zero-padded: the patch's plain attention must hide the padding too)
    positive, negative = conditioning(1, tokens=3), conditioning(2, tokens=7)
    for ours, want in zip(predictions(apply(region_nodes, patcher, regions, mask_fraction=0.0)), predictions(patcher)):
        torch.testing.assert_close(ours, want, rtol=1e-4, atol=1e-4)


def test_patched_layers_attend_through_the_models_attention_override(comfy, region_nodes, core_model):
    """Core's optimized_attention_override wraps the regional layers' attention as it wraps the model's own."""
    patcher, conditioning, width = core_model
    latent = latent_for(patcher, 1, 8, 8)
    positive, negative = conditioning(1), conditioning(2)

    def calls(model):
        seen = []

        def override(func, *args, **kwargs):
            seen.append(func)
            return func(*args, **kwargs)

        counted = model.clone()
        counted.model_options["transformer_options"]["optimized_attention_override"] = override
        _, _, out = first_denoised(comfy, counted, positive, negative, latent)
        return len(seen), out

    plain, _ = calls(patcher)
    regional, out = calls(apply(region_nodes, patcher, [Region(ctx(3, 4, width), torch.ones(64, 64))]))
    assert plain > 0 and regional == plain and torch.isfinite(out).all()


@pytest.fixture(scope="module")
def clip(comfy, f1_models):
    """The tiny random F.1 checkpoint's text encoder as core's CLIP."""
    from comfy_inprocess import import_pack
    from f1core.checkpoint import load_checkpoint
    text_encoder = load_checkpoint(f1_models / "f1-tiny-random.safetensors").text
    return import_pack("nodes.f1_clip").clip_from_text_encoder(text_encoder)


def test_nodes_with_a_real_f1_clip_and_layout_from_prompt(comfy, region_nodes, clip):
    regions, masks, preview, phrases = region_nodes.F1LayoutFromPrompt.execute(
        clip, "a red circle on the left of a blue square", 40, 24).result
    assert phrases.splitlines() == ["a red circle", "a blue square"] and masks.shape == (2, 24, 40)
    assert preview.shape == (1, 24, 40, 3) and preview[0, 0, 0, 0] > preview[0, 0, 0, 2]  # red on the left
    chained = region_nodes.F1Region.execute(clip, "a green star", masks[0], 1.0, regions).result[0]
    assert len(chained) == 3 and torch.equal(chained[2].mask, masks[0])
    picked = region_nodes.F1Region.execute(clip, "a blue square", masks, 1.0, mask_index=1).result[0]
    assert torch.equal(picked[0].mask, masks[1])  # one object of a mask batch
    with pytest.raises(ValueError, match="F1Region: input 'mask_index' is 2 but 'mask' has shape \\[2, 24, 40\\]"):
        region_nodes.F1Region.execute(clip, "a star", masks, 1.0, mask_index=2)
    assert all(r.context.shape[-1] == tiny().unet.context_dim for r in chained)
    with pytest.raises(ValueError, match="F1Region: input 'mask'"):
        region_nodes.F1Region.execute(clip, "a star", torch.zeros(8, 8), 1.0)
    with pytest.raises(ValueError, match="F1Region: input 'text'"):
        region_nodes.F1Region.execute(clip, " ", torch.ones(8, 8), 1.0)
    with pytest.raises(ValueError, match="F1LayoutFromPrompt: input 'prompt'"):
        region_nodes.F1LayoutFromPrompt.execute(clip, "a cat on a mat", 8, 8)


def test_decoupled_text_encode_binds_each_entitys_attributes_to_its_own_region(region_nodes, clip):
    node = region_nodes.F1DecoupledTextEncode

    def run(prompt, style_blocks="output 1", start=0.0, end=1.0, masks=None):
        return node.execute(clip, prompt, 16, 8, style_blocks, start, end, masks).result

    def alone(text):
        return clip.encode_from_tokens_scheduled(clip.tokenize(text))[0][0]

    positive, regions, masks, parts = run("a striped red circle on the left of a blue square")
    assert parts.splitlines() == ["entity 1: a red circle | style: striped", "entity 2: a blue square",
                                  "layout: a circle to the left of a square"]
    assert torch.equal(positive[0][0], alone("a circle to the left of a square"))  # the base: no attributes
    assert torch.equal(regions[0].context, alone("a red circle"))
    assert torch.equal(regions[1].context, alone("a blue square"))
    assert torch.equal(regions[0].style_context, alone("a striped red circle"))
    assert regions[0].style_blocks == {("output", 1)} and masks.shape == (2, 8, 16)
    # attributes do not leak: another colour or style for the circle leaves the square's region and the base as
    # they were, bit for bit
    for other in ("a striped green circle on the left of a blue square",
                  "an outlined red circle left of a blue square"):
        positive2, regions2, _, _ = run(other)
        assert torch.equal(regions2[1].context, regions[1].context) and torch.equal(positive2[0][0], positive[0][0])
    assert not torch.equal(run("a striped green circle on the left of a blue square")[1][0].context, regions[0].context)
    everywhere = run("a striped red circle on the left of a blue square", "all")[1]
    assert torch.equal(everywhere[0].context, alone("a striped red circle")) and everywhere[0].style_context is None
    given = torch.zeros(2, 4, 4)
    given[0, :2], given[1, 2:] = 1, 1
    assert torch.equal(run("a red circle above a blue square", masks=given)[2], given)
    with pytest.raises(ValueError, match="input 'masks' has 1 masks for 2 entities"):
        run("a red circle above a blue square", masks=given[:1])
    with pytest.raises(ValueError, match="input 'style_blocks': blocks: cannot read 'outputs 1'"):
        run("a red circle", "outputs 1")
    with pytest.raises(ValueError, match="'style_start' \\(0.5\\) is not below 'style_end'"):
        run("a red circle", "all", 0.5, 0.5)
    with pytest.raises(ValueError, match="F1DecoupledTextEncode: input 'prompt' cannot be decoupled"):
        run("a cat on a mat")


def test_style_reaches_only_the_chosen_blocks_and_steps(comfy, region_nodes):
    """On a tiny F.1 inside core's sampler: a recorder after F1ApplyRegions' own attn2 patch sees, per block and
    step, which region tokens the cross-attention reads."""
    from test_adaptive_nodes import f1_patcher
    patcher, width, extra = f1_patcher(comfy)
    plain, styled = ctx(1, 3, width), ctx(2, 5, width)
    region = Region(plain, torch.ones(64, 64), style_context=styled, style_blocks=frozenset({("output", 1)}),
                    style_steps=(0.0, 0.5))
    patched = apply(region_nodes, patcher, [region])
    seen = []

    def record(n, context, value, options):
        seen.append((options["block"], float(options["sigmas"].max()), context[:, -5:].clone(), context.shape[1]))
        return n, context, value

    patched.set_model_attn2_patch(record)
    blocks = {(name, number) for name, number, _ in patcher.get_model_object("diffusion_model").attention_blocks()}
    assert ("output", 1) in blocks and len(blocks) > 1
    positive, negative = [[ctx(3, 4, width), dict(extra)]], [[ctx(4, 4, width), dict(extra)]]
    noise = torch.randn(1, tiny().unet.in_channels, 8, 8, generator=torch.Generator().manual_seed(0))
    comfy.sample.sample(patched, noise, 2, 3.0, "euler", "karras", positive, negative, torch.zeros_like(noise),
                        disable_pbar=True, seed=0)
    first = max(sigma for _, sigma, _, _ in seen)
    for block, sigma, tail, length in seen:
        if block == ("output", 1) and sigma == first:  # the style block in the first half of the steps
            assert length == 4 + 5 and torch.equal(tail[0], styled[0])
        else:
            assert length == 4 + 3 and torch.equal(tail[0, -3:], plain[0])
    assert {b for b, _, _, _ in seen} == blocks and len({s for _, s, _, _ in seen}) == 2
    with pytest.raises(ValueError, match="sends style to blocks \\[\\('output', 99\\)\\]"):
        apply(region_nodes, patcher, [replace(region, style_blocks=frozenset({("output", 99)}))])
    with pytest.raises(ValueError, match="F1RegionalConditioning: input 'regions' has style limited"):
        region_nodes.F1RegionalConditioning.execute(positive, [region], 0.0, 0.0, 0, 1.0)


def test_bad_models_and_widths_get_clear_errors(comfy, region_nodes, core_model):
    patcher, conditioning, width = core_model
    with pytest.raises(ValueError, match="F1ApplyRegions: input 'regions' is empty"):
        apply(region_nodes, patcher, [])
    wrong = apply(region_nodes, patcher, [Region(ctx(3, 4, width + 1), torch.ones(8, 8))])
    with pytest.raises(ValueError, match="encode the regions with this model's CLIP"):
        first_denoised(comfy, wrong, conditioning(1), conditioning(2), latent_for(patcher, 1, 8, 8))


def test_validators_name_their_inputs_and_refuse_nan(region_nodes):
    import inspect
    import math
    nodes = region_nodes
    settings = dict(base_weight=0.0, feather=0.0, grow=0, mask_fraction=1.0)
    for node, extra in ((nodes.F1ApplyRegions, {"blend": 0.0}), (nodes.F1RegionalConditioning, {})):
        values = {**settings, **extra}
        assert node.validate_inputs(**values) is True
        assert node.validate_inputs(**{name: None for name in values}) is True  # linked inputs are checked later
        for name in values:
            bad = math.nan if isinstance(values[name], float) else 10 ** 6
            assert f"{node.__name__}: input '{name}'" in node.validate_inputs(**{**values, name: bad})
    assert "F1Region: input 'strength'" in nodes.F1Region.validate_inputs("a red circle", math.inf)
    assert "F1Region: input 'text' is 1,000,000 characters" in nodes.F1Region.validate_inputs("x" * 10 ** 6, 1.0)
    layout = nodes.F1LayoutFromPrompt
    assert "input 'prompt' is" in layout.validate_inputs("a red circle " * 1000, 64, 64)
    assert "lower 'width'/'height'" in layout.validate_inputs("a red circle", 16384, 16384)  # over the pixel budget
    # **kwargs in a validator would switch core's min/max checks off for every input of the node
    for node in nodes.NODES:
        if hasattr(node, "validate_inputs"):
            kinds = {p.kind for p in inspect.signature(node.validate_inputs).parameters.values()}
            assert inspect.Parameter.VAR_KEYWORD not in kinds, node.__name__


def flux_patcher(comfy):
    """A tiny core FLUX-architecture model (double and single blocks, RoPE, 2x2 patches), random weights."""
    import comfy.model_patcher
    import comfy.supported_models
    from test_adaptive_nodes import _randomise
    config = comfy.supported_models.Flux({
        "image_model": "flux", "in_channels": 16, "out_channels": 16, "vec_in_dim": 8, "context_in_dim": WIDTH,
        "hidden_size": 32, "mlp_ratio": 2.0, "num_heads": 2, "depth": 1, "depth_single_blocks": 1,
        "axes_dim": [4, 6, 6], "theta": 10000, "patch_size": 2, "qkv_bias": True, "guidance_embed": False})
    config.set_inference_dtype(torch.float32, None)
    model = config.get_model({})
    _randomise(model.diffusion_model)
    cpu = torch.device("cpu")
    return comfy.model_patcher.ModelPatcher(model, load_device=cpu, offload_device=cpu)


def test_flux_regions_through_core_attention_mask_cond_keys(comfy, region_nodes):
    patcher = flux_patcher(comfy)
    extra = {"pooled_output": torch.zeros(1, 8)}
    positive, negative = [[ctx(1, 4), dict(extra)]], [[ctx(2, 6), dict(extra)]]
    h, w = 9, 7  # odd: FLUX pads to 5x4 patches
    latent = torch.zeros(2, 16, h, w)
    everywhere, region = ctx(3, 5), torch.ones(h * 8, w * 8)

    def regional(fraction, mask=region):
        return region_nodes.F1RegionalConditioning.execute(positive, [Region(everywhere, mask)], 0.0, 0.0, 0,
                                                           fraction).result[0]

    cond, uncond, out = first_denoised(comfy, patcher, regional(1.0), negative, latent)
    want_cond, want_uncond, _ = first_denoised(comfy, patcher, [[everywhere, dict(extra)]], negative, latent)
    base_cond, _, _ = first_denoised(comfy, patcher, positive, negative, latent)
    torch.testing.assert_close(cond, want_cond, rtol=1e-4, atol=1e-4)   # a region over everything = prompting it
    torch.testing.assert_close(uncond, want_uncond, rtol=1e-4, atol=1e-4)  # the negative is not masked
    assert (cond - base_cond).abs().max() > 1e-3 and torch.isfinite(out).all()
    left = torch.zeros(h * 8, w * 8)
    left[:, :28] = 1
    split, _, out = first_denoised(comfy, patcher, regional(1.0, left), negative, latent)
    assert (split - want_cond).abs().max() > 1e-3 and (split - base_cond).abs().max() > 1e-3
    assert torch.isfinite(out).all()
    staged = regional(0.5)
    assert [(c[1]["start_percent"], c[1]["end_percent"]) for c in staged] == [(0.0, 0.5), (0.5, 1.0)]
    assert "attention_mask" not in staged[1][1] and torch.equal(staged[1][0], positive[0][0])


# ---- through a real ComfyUI -------------------------------------------------------------------------------------

def test_layout_from_prompt_workflow_renders_in_a_real_server(server):
    """The f1_regions_layout API workflow on the shipped default: the layout's phrases, an image the regions
    changed (same seed without F1ApplyRegions differs), and the red circle drawn inside its (left) region."""
    import json

    import numpy as np
    from PIL import Image

    from comfy_host import error_message
    from f1core.eval.detector import detect
    from workflows import API, strip_meta
    graph = strip_meta(json.loads((API / "f1_regions_layout.json").read_text()))
    entry = server.run(graph)
    assert entry["status"]["status_str"] == "success", error_message(entry)
    assert entry["outputs"]["5"]["text"] == ["a red circle\na blue square"]  # shown on F1LayoutFromPrompt
    [path] = server.output_images(entry)
    image = np.asarray(Image.open(path).convert("RGB"))
    assert image.shape == (256, 256, 3) and image.std() > 1.0

    unregioned = json.loads(json.dumps(graph))
    unregioned["8"]["inputs"]["model"] = ["1", 0]
    unregioned["11"]["inputs"]["filename_prefix"] = "F1_no_regions"
    entry = server.run(unregioned)
    assert entry["status"]["status_str"] == "success", error_message(entry)
    plain = np.asarray(Image.open(server.output_images(entry)[0]).convert("RGB"))
    assert np.abs(plain.astype(int) - image.astype(int)).mean() > 1.0

    red = [o for o in detect(image).objects if o.colour == "red"]
    assert red and all(o.x < 0.5 for o in red), detect(image).objects  # the layout put it in the left half
