"""The F.1 ControlNet (f1core.control), the hint preprocessors (f1core.hints), and both inside core's ControlNet
path in-process: the F.1 ControlNet applied by core's ControlNetApplyAdvanced on a tiny F.1 model (strength,
start/end percent, chaining, regions), and the preprocessors feeding a random core ControlNet on a tiny core
SD1.5-architecture model."""
import dataclasses

import pytest
import torch

from f1core.config import scenes, scenes_x4, scenes_x4_patch, tiny
from f1core.control import (ControlConfig, F1ControlNet, check_size, control_config_for, load_control,
                            parameter_count, random_control, read_control_metadata, save_control)
from f1core.data.scenes import render_scene
from f1core.hints import layout_to_hint, normalize_depth, sketch_to_edges, thin
from f1core.models.unet import F1UNet, apply_control


def woken(control: F1ControlNet, seed=0) -> F1ControlNet:
    """Zero-initialised outputs hide everything: random weights as training would give them (random_control)."""
    return random_control(control.config, seed)


def random_unet(config):
    torch.manual_seed(1)
    unet = F1UNet(config).eval()
    with torch.no_grad():
        unet.conv_out.weight.normal_(0, 0.1)
    return unet


def unet_inputs(h=11, w=9, batch=2):
    g = torch.Generator().manual_seed(2)
    c = tiny().unet
    return (torch.randn(batch, c.in_channels, h, w, generator=g), torch.randn(batch, generator=g),
            torch.randn(batch, 5, c.context_dim, generator=g), torch.randn(batch, c.pooled_dim, generator=g))


def scene_hint(h=11, w=9, condition="edges"):
    sample = render_scene("a red circle to the left of a blue square", w * 8, h * 8, seed=3)
    return getattr(sample, condition)[None, None].expand(1, 3, h * 8, w * 8)


# ---- the network ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("patch_size", [1, 2])
def test_residuals_fit_every_skip_and_start_at_zero(patch_size):
    config = dataclasses.replace(tiny(), unet=dataclasses.replace(tiny().unet, patch_size=patch_size))
    unet, control = random_unet(config.unet), F1ControlNet(control_config_for(config))
    h, w = 11 * patch_size, 9 * patch_size   # odd grids at the U-Net's own resolution
    x, t, ctx, y = unet_inputs(h, w)
    out = control(x, scene_hint(h, w), t, ctx, y)
    _, skips, _ = unet.encode(x, unet.embed(t, y, x.dtype, {}), ctx, {})  # the U-Net's own skips, taken live
    assert [r.shape for r in out["output"]] == [s.shape for s in skips] and out["input"] == []
    assert out["middle"][0].shape == skips[-1].shape
    assert all(r.abs().max() == 0 for r in out["output"] + out["middle"])
    torch.testing.assert_close(unet(x, t, ctx, y, control=out), unet(x, t, ctx, y), rtol=0, atol=0)


def test_a_trained_controlnet_steers_by_its_hint_and_the_adapter_ignores_the_latent():
    config = tiny()
    unet, control = random_unet(config.unet), woken(F1ControlNet(control_config_for(config, reads_latent=True)))
    x, t, ctx, y = unet_inputs()
    plain = unet(x, t, ctx, y)
    edges, depth = unet(x, t, ctx, y, control=control(x, scene_hint(), t, ctx, y)), unet(
        x, t, ctx, y, control=control(x, scene_hint(condition="depth"), t, ctx, y))
    assert (edges - plain).abs().max() > 1e-3 and (edges - depth).abs().max() > 1e-3
    adapter = woken(F1ControlNet(control_config_for(config, reads_latent=False)))
    a, b = adapter(x, scene_hint(), t, ctx, y), adapter(torch.randn_like(x), scene_hint(), t + 1, -ctx, None)
    assert all(torch.equal(p, q) for p, q in zip(a["output"], b["output"]))
    assert not any("mixer" in name for name, _ in adapter.named_parameters())


def test_gradients_reach_the_controlnet_from_the_denoising_loss():
    config = tiny()
    unet, control = random_unet(config.unet), F1ControlNet(control_config_for(config))
    x, t, ctx, y = unet_inputs()
    optimizer = torch.optim.SGD(control.parameters(), lr=1.0)
    for _ in range(2):  # step 1 moves the zero convolutions, step 2 then reaches the hint stem and encoder
        optimizer.zero_grad()
        unet(x, t, ctx, y, control=control(x, scene_hint(), t, ctx, y)).square().mean().backward()
        optimizer.step()
    assert control.zero_convs[0].weight.abs().max() > 0 and control.hint.out.weight.abs().max() > 0


@pytest.mark.parametrize("preset", [tiny, scenes, scenes_x4, scenes_x4_patch])
def test_size_is_within_a_quarter_of_the_unet(preset):
    config = preset()
    with torch.device("meta"):
        unet_params = parameter_count(F1UNet(config.unet))
        share = check_size(F1ControlNet(control_config_for(config)), unet_params)
        assert share <= 0.10
        with pytest.raises(ValueError, match="over the 25% budget"):
            check_size(F1ControlNet(control_config_for(config, width=1.0, reads_latent=True)), unet_params)


def test_a_residual_of_the_wrong_shape_is_an_error():
    h = torch.zeros(2, 32, 9, 7)
    with pytest.raises(ValueError, match="made for another model"):
        apply_control(h, {"output": [torch.zeros(2, 64, 9, 7)]}, "output")
    with pytest.raises(ValueError, match="made for another model"):
        apply_control(h, {"output": [torch.zeros(2, 32, 1, 1)]}, "output")  # broadcasting would hide it
    assert apply_control(h, {"output": [torch.ones(1, 32, 9, 7)]}, "output").sum() == h.numel()


def test_file_round_trip_and_foreign_files(tmp_path):
    control = woken(F1ControlNet(control_config_for(tiny(), condition="depth")))
    path = save_control(tmp_path / "c.safetensors", control)
    loaded = load_control(path)
    assert loaded.config == control.config and loaded.config.condition == "depth"
    x, t, ctx, y = unet_inputs()
    for a, b in zip(loaded(x, scene_hint(), t, ctx, y)["output"], control(x, scene_hint(), t, ctx, y)["output"]):
        torch.testing.assert_close(a, b)
    from f1core.make_tiny import make_tiny
    make_tiny(tmp_path / "model.safetensors", seed=0)
    with pytest.raises(ValueError, match="not an F.1 ControlNet"):
        load_control(tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match="condition"):
        ControlConfig(condition="pose")


# ---- preprocessors ---------------------------------------------------------------------------------------------

def sketch_of(sample, dark_on_light=True, stroke=3):
    ink = torch.nn.functional.max_pool2d(sample.edges[None, None], stroke, 1, stroke // 2)[0, 0] > 0.3
    paper = torch.ones(1, *ink.shape, 3) if dark_on_light else torch.zeros(1, *ink.shape, 3)
    paper[0][ink] = 0.15 if dark_on_light else 0.9
    return paper


def near(a, b, tolerance=2):
    """Share of a's pixels within `tolerance` px of one of b's."""
    grown = torch.nn.functional.max_pool2d(b[None, None].float(), 2 * tolerance + 1, 1, tolerance)[0, 0] > 0
    return float((a.bool() & grown).sum() / a.bool().sum().clamp_min(1))


def test_sketch_to_edges_thresholds_cleans_thins_and_reads_either_ink():
    sample = render_scene("a red circle to the left of a blue square", 128, seed=1)
    truth = sample.edges > 0.5
    sketch = sketch_of(sample, stroke=5)
    sketch[0, 4:6, 4:6] = 0.0      # specks a scan or a stray pen leaves
    sketch[0, 120, 60] = 0.0
    edges = sketch_to_edges(sketch, line_width=1)[0]
    assert edges[:10, :10].sum() == 0 and edges[120, 60] == 0
    assert near(edges, truth) > 0.95 and near(truth, edges) > 0.9   # on the true contours, and covering them
    assert edges.sum() < 0.6 * (sketch[0, ..., 0] < 0.5).sum()      # thinned: centre lines, not 5 px strokes
    inverted = sketch_to_edges(sketch_of(sample, dark_on_light=False, stroke=5), line_width=1)[0]
    assert near(inverted, edges, 1) > 0.95
    wide = sketch_to_edges(sketch, line_width=3)[0]
    assert 2 * edges.sum() < wide.sum() < 4 * edges.sum()


def test_thinning_leaves_one_pixel_lines():
    bar = torch.zeros(1, 1, 20, 40)
    bar[..., 8:13, 5:35] = 1
    line = thin(bar)[0, 0]
    assert line.sum(dim=0)[10:30].eq(1).all()  # one pixel across the bar, along its length


def test_depth_from_any_source_comes_out_the_same():
    sample = render_scene("a green star above a pink hexagon", 96, seed=2)
    disparity = sample.depth[None, ..., None].expand(1, 96, 96, 3)
    reference = normalize_depth(disparity)
    assert reference.min() == 0 and reference.max() == 1
    estimator = 0.3 * disparity + 0.6                # another range, same ordering
    metric = 5.0 / (0.2 + disparity)                 # metric depth: near is small
    torch.testing.assert_close(normalize_depth(estimator), reference, atol=1e-4, rtol=0)
    flipped = normalize_depth(metric, near="dark")
    assert torch.corrcoef(torch.stack([flipped.flatten(), reference.flatten()]))[0, 1] > 0.9
    smooth = normalize_depth(disparity, blur=2.0)
    assert smooth.diff(dim=-1).abs().max() < reference.diff(dim=-1).abs().max()


def test_layouts_become_contours_depth_and_silhouettes():
    sample = render_scene("a flat red circle above a flat blue square", 128, seed=4)  # outlines add inner edges
    edges = layout_to_hint(sample.masks, "edges")[0]
    assert near(edges, sample.edges > 0.5) > 0.9 and near(sample.edges > 0.5, edges) > 0.9
    depth = layout_to_hint(sample.masks, "depth")[0]
    circle, square = (sample.masks[i] > 0.5 for i in range(2))
    assert depth[square].mean() > depth[circle].mean() > depth[~(circle | square)].mean()  # lower is nearer
    silhouettes = layout_to_hint(sample.masks, "silhouettes")[0]
    assert torch.equal(silhouettes.bool(), (sample.masks > 0.5).any(0))
    with pytest.raises(ValueError, match="mode"):
        layout_to_hint(sample.masks, "pose")


# ---- inside core: Apply ControlNet (Advanced) on a tiny F.1 and a tiny core SD1.5-architecture model --------------

@pytest.fixture(scope="module")
def glue(comfy):
    from comfy_inprocess import import_pack
    return import_pack("nodes.f1_control")


@pytest.fixture(scope="module")
def control_nodes(comfy):
    from comfy_inprocess import import_pack
    return import_pack("nodes.nodes_control")


def apply_advanced(positive, negative, control_net, image, strength=1.0, start=0.0, end=1.0):
    import nodes
    return nodes.ControlNetApplyAdvanced().apply_controlnet(positive, negative, control_net, image, strength, start,
                                                           end)


@pytest.fixture(scope="module")
def f1(comfy, glue):
    from test_adaptive_nodes import f1_patcher
    patcher, width, extra = f1_patcher(comfy)
    config = tiny()
    edges = glue.core_controlnet(woken(F1ControlNet(control_config_for(config)), seed=5))
    depth = glue.core_controlnet(woken(F1ControlNet(control_config_for(config, condition="depth")), seed=6))

    def conditioning(seed, tokens=5):
        return [[torch.randn(1, tokens, width, generator=torch.Generator().manual_seed(seed)), dict(extra)]]
    return patcher, conditioning, edges, depth


def hint_image(h=8, w=8, condition="edges"):
    return scene_hint(h, w, condition)[:, 0, :, :, None].expand(1, h * 8, w * 8, 3)


def test_core_apply_controlnet_advanced_applies_the_f1_controlnet(comfy, f1):
    from test_regions import first_denoised
    patcher, conditioning, edges, _ = f1
    latent = torch.zeros(1, 6, 8, 8)
    positive, negative = conditioning(1), conditioning(2)
    plain, plain_uncond, _ = first_denoised(comfy, patcher, positive, negative, latent)
    pos, neg = apply_advanced(positive, negative, edges, hint_image())
    controlled, controlled_uncond, out = first_denoised(comfy, patcher, pos, neg, latent)
    assert type(pos[0][1]["control"]).__name__ == "F1CoreControlNet" and pos[0][1]["control"] is not edges
    assert (controlled - plain).abs().max() > 1e-3 and torch.isfinite(out).all()
    assert (controlled_uncond - plain_uncond).abs().max() > 1e-3  # Apply (Advanced) controls the negative too
    half, _, _ = first_denoised(comfy, patcher, *apply_advanced(positive, negative, edges, hint_image(), 0.5), latent)
    assert 0 < (half - plain).abs().max() < (controlled - plain).abs().max()          # strength scales it
    late, _, _ = first_denoised(comfy, patcher, *apply_advanced(positive, negative, edges, hint_image(), 1.0, 0.5,
                                                                 1.0), latent)
    torch.testing.assert_close(late, plain)  # first step lies before start_percent: no control there
    assert apply_advanced(positive, negative, edges, hint_image(), 0.0) == (positive, negative)


def test_the_controlnet_reads_a_prompt_batched_with_a_longer_negative_as_alone(comfy, f1, glue):
    """Core batches F.1 prompts of different lengths zero-padded (nodes/f1_model.py): the ControlNet must hide the
    padding as the U-Net does, so the positive's prediction does not depend on the negative's length."""
    from test_regions import first_denoised
    patcher, conditioning, _, _ = f1
    # the XS-like design reads the text (the adapter does not)
    edges = glue.core_controlnet(woken(F1ControlNet(control_config_for(tiny(), reads_latent=True)), seed=7))
    latent = torch.zeros(1, 6, 8, 8)
    positive = conditioning(1, tokens=3)
    short, long = conditioning(2, tokens=3), conditioning(3, tokens=7)
    alone, _, _ = first_denoised(comfy, patcher, *apply_advanced(positive, short, edges, hint_image()), latent)
    padded, _, _ = first_denoised(comfy, patcher, *apply_advanced(positive, long, edges, hint_image()), latent)
    torch.testing.assert_close(padded, alone, atol=1e-5, rtol=1e-5)


def test_chained_f1_controlnets_add_up(comfy, f1):
    patcher, conditioning, edges, depth = f1
    positive, negative = conditioning(1), conditioning(2)
    chained = apply_advanced(*apply_advanced(positive, negative, edges, hint_image()), depth,
                             hint_image(condition="depth"))
    outer = chained[0][0][1]["control"]
    assert type(outer.previous_controlnet).__name__ == "F1CoreControlNet"
    model = patcher.model
    x = torch.randn(2, 6, 8, 8)
    cond = {"c_crossattn": positive[0][0].expand(2, -1, -1), "y": torch.zeros(2, 64)}

    def control_of(c):
        c.pre_run(model, lambda p: model.model_sampling.percent_to_sigma(p))
        out = c.get_control(x, torch.tensor([2.0, 2.0]), cond, 1, {})
        c.cleanup()
        return out
    both = control_of(outer)
    first = control_of(apply_advanced(positive, negative, edges, hint_image())[0][0][1]["control"])
    second = control_of(apply_advanced(positive, negative, depth, hint_image(condition="depth"))[0][0][1]["control"])
    for key in ("middle", "output"):
        for a, b, c in zip(both[key], first[key], second[key]):
            torch.testing.assert_close(a, b + c)


def test_wrong_models_are_refused_loudly(comfy, f1):
    from test_adaptive_nodes import sd15_patcher
    from test_regions import first_denoised
    patcher, conditioning, edges, _ = f1
    sd15, width, _ = sd15_patcher(comfy)
    ctx = [[torch.randn(1, 5, width), {}]]
    with pytest.raises(ValueError, match="F.1 ControlNet .*made for an F.1 U-Net.*UNetModel"):
        first_denoised(comfy, sd15, *apply_advanced(ctx, ctx, edges, hint_image()), torch.zeros(1, 4, 8, 8))
    other = dataclasses.replace(tiny().unet, model_channels=16)
    from comfy_inprocess import import_pack
    glue = import_pack("nodes.f1_control")
    wrong = glue.core_controlnet(F1ControlNet(ControlConfig(unet=other)))
    with pytest.raises(ValueError, match="widths 16 x"):
        first_denoised(comfy, patcher, *apply_advanced(conditioning(1), conditioning(2), wrong, hint_image()),
                       torch.zeros(1, 6, 8, 8))
    # core's ControlNet that takes F.1's latent and text widths: it runs, but its residuals do not fit
    core_cn = core_controlnet_for_sd15(comfy, sd15, in_channels=6, context_dim=tiny().unet.context_dim,
                                       model_channels=64)
    with pytest.raises(ValueError, match="made for another model"):
        first_denoised(comfy, patcher, *apply_advanced(conditioning(1), conditioning(2), core_cn, hint_image()),
                       torch.zeros(1, 6, 8, 8))


def test_control_and_regional_prompts_together(comfy, f1):
    from comfy_inprocess import import_pack
    from f1core.regions import Region
    from test_regions import apply, first_denoised
    patcher, conditioning, edges, _ = f1
    latent = torch.zeros(1, 6, 8, 8)
    positive, negative = conditioning(1), conditioning(2)
    left = torch.zeros(64, 64)
    left[:, :32] = 1
    regional = apply(import_pack("nodes.nodes_regions"), patcher, [Region(conditioning(3)[0][0], left)])
    controlled = apply_advanced(positive, negative, edges, hint_image())
    plain, _, _ = first_denoised(comfy, regional, positive, negative, latent)
    only_control, _, _ = first_denoised(comfy, patcher, *controlled, latent)
    both, _, out = first_denoised(comfy, regional, *controlled, latent)
    assert (both - plain).abs().max() > 1e-3 and (both - only_control).abs().max() > 1e-3
    assert torch.isfinite(out).all()


def test_loader_node_reads_the_folder(comfy, control_nodes, tmp_path):
    import folder_paths
    save_control(tmp_path / "edges.safetensors", woken(F1ControlNet(control_config_for(tiny()))))
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    folder_paths.add_model_folder_path("f1_controlnet", str(tmp_path))
    assert control_nodes.F1ControlNetLoader.validate_inputs("edges.safetensors") is True
    assert "is not listed" in control_nodes.F1ControlNetLoader.validate_inputs("missing.safetensors")
    loaded = control_nodes.F1ControlNetLoader.execute("edges.safetensors").result[0]
    assert type(loaded).__name__ == "F1CoreControlNet" and loaded.compression_ratio == 8
    assert type(loaded.copy()).__name__ == "F1CoreControlNet" and loaded.copy().control_model is loaded.control_model
    with pytest.raises(ValueError, match="F1ControlNetLoader: input 'control_net_name' .*bad.safetensors"):
        control_nodes.F1ControlNetLoader.execute("bad.safetensors")


# ---- the preprocessors feeding core's own ControlNet on a core SD1.5-architecture model -------------------------

def core_controlnet_for_sd15(comfy, sd15, **overrides):
    """A random core ControlNet (comfy.cldm) for the tiny SD1.5-architecture U-Net, as core's loader builds one."""
    import comfy.cldm.cldm
    import comfy.controlnet
    from test_adaptive_nodes import _randomise
    config = dict(sd15.model.model_config.unet_config, hint_channels=3, dtype=torch.float32, device=None, **overrides)
    model = comfy.cldm.cldm.ControlNet(**config)
    _randomise(model)
    return comfy.controlnet.ControlNet(model, load_device=torch.device("cpu"))


def test_preprocessors_feed_cores_controlnet_on_a_core_model(comfy, control_nodes):
    from test_adaptive_nodes import sd15_patcher
    from test_regions import first_denoised
    sd15, width, _ = sd15_patcher(comfy)
    core_cn = core_controlnet_for_sd15(comfy, sd15)
    sample = render_scene("a red circle to the left of a blue square", 64, seed=1)
    sketch = sketch_of(sample)
    hints = {
        "sketch": control_nodes.F1SketchToEdges.execute(sketch, 0.5, "auto", True, 2, 8).result[0],
        "depth": control_nodes.F1DepthNormalize.execute(sample.depth[None, ..., None].expand(1, 64, 64, 3), "bright",
                                                        2.0, 98.0, 1.0).result[0],
        "layout": control_nodes.F1LayoutToHint.execute(sample.masks, "edges", 2).result[0],
    }
    positive, negative = [[torch.randn(1, 5, width), {}]], [[torch.randn(1, 3, width), {}]]
    latent = torch.zeros(1, 4, 8, 8)
    plain, _, _ = first_denoised(comfy, sd15, positive, negative, latent)
    outputs = {}
    for name, hint in hints.items():
        assert hint.shape == (1, 64, 64, 3) and 0 <= hint.min() and hint.max() <= 1 and hint.max() > 0
        cond, _, out = first_denoised(comfy, sd15, *apply_advanced(positive, negative, core_cn, hint), latent)
        assert (cond - plain).abs().max() > 1e-3 and torch.isfinite(out).all()
        outputs[name] = cond
    assert (outputs["sketch"] - outputs["depth"]).abs().max() > 1e-4  # the hint reaches the prediction


def test_preprocessor_nodes_refuse_bad_inputs(comfy, control_nodes):
    with pytest.raises(ValueError, match="F1SketchToEdges: input 'image'"):
        control_nodes.F1SketchToEdges.execute(torch.zeros(64, 64), 0.5, "auto", True, 2, 8)
    assert "F1SketchToEdges: input 'ink'" in control_nodes.F1SketchToEdges.validate_inputs(0.5, "blue", 2, 8)
    assert "F1DepthNormalize: input 'blur'" in control_nodes.F1DepthNormalize.validate_inputs("bright", 2.0, 98.0,
                                                                                               float("nan"))
    with pytest.raises(ValueError, match="F1LayoutToHint: input 'masks'"):
        control_nodes.F1LayoutToHint.execute(torch.zeros(0, 8, 8), "edges", 2)


# ---- training: the trainer's ControlNet stage ------------------------------------------------------------------

def test_control_stage_trains_resumes_exactly_and_exports(tmp_path):
    from f1core.make_tiny import make_tiny
    from f1core.train.control_stage import export_control
    from f1core.train.data import SceneDataset
    from f1core.train.trainer import TrainConfig, create_run_from_checkpoint, load_state, train
    from f1core.checkpoint import load_checkpoint, save_checkpoint
    make_tiny(tmp_path / "random.safetensors", seed=0)
    model = load_checkpoint(tmp_path / "random.safetensors")
    with torch.no_grad():  # a random U-Net's zero output layer would pass no gradient to the ControlNet
        model.unet.conv_out.weight.normal_(0, 0.1)
    save_checkpoint(tmp_path / "model.safetensors", model.config, unet=model.unet, vae=model.vae, text=model.text,
                    extra_metadata={"f1.train_step": "7"})
    data = SceneDataset.split("train", 1, resolution=64)
    config = TrainConfig(stage="control_depth", steps=4, batch_size=2, log_every=1, lr=1e-3)
    for name in ("straight", "resumed"):
        create_run_from_checkpoint(tmp_path / name, tmp_path / "model.safetensors")
    train(tmp_path / "straight", data, config, progress=False)
    assert train(tmp_path / "resumed", data, config, progress=False, stop_at=2)["step"] == 2
    train(tmp_path / "resumed", data, config, progress=False)
    straight, resumed = load_state(tmp_path / "straight", "control_depth"), load_state(tmp_path / "resumed",
                                                                                       "control_depth")
    assert set(straight["ema"]) == {f"control.{k}" for k in F1ControlNet(control_config_for(tiny())).state_dict()}
    for key, value in straight["trainee"].items():
        torch.testing.assert_close(resumed["trainee"][key], value, rtol=0, atol=0)
    control = load_control(export_control(tmp_path / "straight", "control_depth", tmp_path / "depth.safetensors"))
    assert control.config.condition == "depth" and control.zero_convs[0].weight.abs().max() > 0
    metadata = read_control_metadata(tmp_path / "depth.safetensors")  # names the model and its training step
    assert (metadata["f1.control_base"], metadata["f1.control_base_step"]) == ("model.safetensors", "7")
    with pytest.raises(ValueError, match="init RUN --from"):
        from f1core.train.trainer import create_run
        create_run(tmp_path / "fresh", tiny(), data.corpus())
        train(tmp_path / "fresh", data, config, progress=False)


# ---- a real ComfyUI: core's Apply ControlNet (Advanced) from an API workflow -----------------------------------

LIVE_CKPT = "f1-tiny-random-live.safetensors"


def control_graph(strength: float, hint_node: list) -> dict:
    from conftest import TINY_CONTROLNET
    return {
        "1": {"class_type": "F1CheckpointLoader", "inputs": {"ckpt_name": LIVE_CKPT}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "a red circle above a blue square"}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": ""}},
        "4": {"class_type": "F1SceneRender", "inputs": {"spec": "a red circle above a blue square", "width": 64,
                                                         "height": 64, "seed": 1}},
        "5": {"class_type": "F1LayoutToHint", "inputs": {"masks": ["4", 1], "mode": "edges", "line_width": 2}},
        "6": {"class_type": "F1SketchToEdges", "inputs": {"image": ["4", 2], "threshold": 0.5, "ink": "auto",
                                                          "thin": True, "line_width": 2, "min_area": 8}},
        "7": {"class_type": "F1ControlNetLoader", "inputs": {"control_net_name": TINY_CONTROLNET}},
        "8": {"class_type": "ControlNetApplyAdvanced", "inputs": {
            "positive": ["2", 0], "negative": ["3", 0], "control_net": ["7", 0], "image": hint_node,
            "strength": strength, "start_percent": 0.0, "end_percent": 1.0}},
        "9": {"class_type": "F1EmptyLatent", "inputs": {"vae": ["1", 2], "width": 64, "height": 64, "batch_size": 1}},
        "10": {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "positive": ["8", 0], "negative": ["8", 1], "latent_image": ["9", 0], "seed": 3,
            "steps": 3, "cfg": 3.0, "sampler_name": "euler", "scheduler": "karras", "denoise": 1.0}},
        "11": {"class_type": "F1VAEDecode", "inputs": {"vae": ["1", 2], "samples": ["10", 0]}},
        "12": {"class_type": "SaveImage", "inputs": {"images": ["11", 0], "filename_prefix": f"F1_control_{strength}"}},
    }


def test_core_apply_controlnet_advanced_in_a_real_comfyui(server, f1_models):
    import numpy as np
    from PIL import Image
    from comfy_host import error_message
    from conftest import DEFAULT_CKPT
    from f1core.checkpoint import load_checkpoint, save_checkpoint
    model = load_checkpoint(f1_models / DEFAULT_CKPT)
    with torch.no_grad():  # the random U-Net's zero output layer would hide the control
        model.unet.conv_out.weight.normal_(0, 0.1)
    save_checkpoint(f1_models / LIVE_CKPT, model.config, unet=model.unet, vae=model.vae, text=model.text)
    images = {}
    for strength, hint in ((0.0, ["5", 0]), (1.0, ["5", 0]), (1.0, ["6", 0])):
        entry = server.run(control_graph(strength, hint))
        assert entry["status"]["status_str"] == "success", error_message(entry)
        (path,) = server.output_images(entry)
        images[(strength, hint[0])] = np.asarray(Image.open(path)).astype(float)
    off, layout, sketch = images[(0.0, "5")], images[(1.0, "5")], images[(1.0, "6")]
    assert off.shape == layout.shape == (64, 64, 3)
    assert np.abs(layout - off).max() > 10                 # the ControlNet steers the sampler
    assert np.abs(sketch - layout).max() > 0               # and follows its hint
