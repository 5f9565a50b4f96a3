"""Request budgets, the stop hook and the length caps of f1core (issue 14); the server-side behaviour is in
test_fuzz_server.py."""
import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from f1core import limits
from f1core.checkpoint import CheckpointError, load_checkpoint
from f1core.data.captions import parse_caption
from f1core.data.scenes import render_scene
from f1core.data.spec import SceneSpec
from f1core.interrupt import check_stop, stop_hook
from f1core.make_tiny import make_tiny
from f1core.tiling import tiled_apply


class Stop(Exception):
    pass


def counting_hook(stop_after=None):
    calls = []

    def hook():
        calls.append(1)
        if stop_after is not None and len(calls) > stop_after:
            raise Stop

    return hook, calls


def test_budgets_come_from_the_environment_with_device_defaults():
    assert limits.from_env(on_cpu=True, environ={}).max_pixels == limits.CPU_MAX_PIXELS
    assert limits.from_env(on_cpu=False, environ={}).max_pixels == limits.ACCELERATOR_MAX_PIXELS
    assert limits.from_env(on_cpu=True, environ={"F1_MAX_STEPS": "50"}).max_steps == 50
    with pytest.raises(ValueError, match="F1_MAX_PIXELS"):
        limits.from_env(on_cpu=True, environ={"F1_MAX_PIXELS": "lots"})
    budget = limits.from_env(on_cpu=True, environ={"F1_MAX_PIXELS": "4096", "F1_MAX_BATCH": "2"})
    assert limits.pixels_error(budget, 64, 64, 1, "width") is None
    assert "F1_MAX_PIXELS" in limits.pixels_error(budget, 128, 64, 1, "width")
    assert "F1_MAX_BATCH" in limits.pixels_error(budget, 16, 16, 3, "batch_size")


def test_stop_check_runs_before_every_tile_and_only_where_a_hook_is_installed():
    x = torch.zeros(1, 1, 64, 64)
    check_stop()  # no hook: nothing happens
    hook, calls = counting_hook()
    with stop_hook(hook):
        tiled_apply(lambda t: t, x, tile=32, overlap=8, scale=1, align=8)
    assert len(calls) >= 4  # at least a 2x2 grid of tiles
    hook, _ = counting_hook(stop_after=1)
    with stop_hook(hook), pytest.raises(Stop):
        tiled_apply(lambda t: t, x, tile=32, overlap=8, scale=1, align=8)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny") / "tiny.safetensors"
    make_tiny(path)
    return path


def test_long_prompts_are_refused_and_windows_can_be_stopped(tiny):
    text = load_checkpoint(tiny, parts=("text",)).text
    prompt = "a red circle to the left of a blue square " * 40
    with pytest.raises(limits.PromptTooLong, match="F1_MAX_PROMPT_TOKENS"):
        text.encode([prompt], max_tokens=100)
    hook, calls = counting_hook()
    with stop_hook(hook), torch.no_grad():
        tokens = text.tokenize([prompt])
        text.encode_ids(tokens)
    assert len(calls) == tokens.clip_ids.shape[1] + tokens.roberta_ids.shape[1]  # one check per window per tower
    hook, _ = counting_hook(stop_after=2)
    with stop_hook(hook), torch.no_grad(), pytest.raises(Stop):
        text.encode([prompt])


def test_scene_rendering_can_be_stopped():
    hook, _ = counting_hook(stop_after=1)
    with stop_hook(hook), pytest.raises(Stop):
        render_scene("three red circles and a blue square", 128, seed=0)


def test_captions_and_specs_are_capped_and_hostile_specs_are_value_errors():
    assert parse_caption("a red circle " * 100).objects[0].shape == "circle"
    with pytest.raises(ValueError, match="limit"):
        parse_caption("a red circle " * 8000)
    for bad in ('{"objects": [{"shape": ["circle"]}]}', '{"objects": [{"shape": "circle", "colour": {"r": 1}}]}',
                "[" * 990 + "]" * 990, '{"objects": [{"shape": "circle"}], "background": []}'):
        with pytest.raises(ValueError):
            SceneSpec.from_json(bad)


def _rewrite(source, target, **changes):
    with safe_open(str(source), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        metadata = dict(f.metadata())
    save_file(tensors, str(target), metadata={**metadata, **changes})
    return metadata


@pytest.mark.parametrize("change, message", [
    ({"f1.latent_rgb": "{not json"}, "f1.latent_rgb is not valid JSON"),
    ({"f1.latent_rgb": json.dumps({"factors": [[1, 2, 3]], "bias": [0, 0, 0]})}, "f1.latent_rgb must be"),
    ({"f1.latent_rgb": '{"factors": "x", "bias": [NaN, 0, 0]}'}, "f1.latent_rgb must be"),
])
def test_bad_preview_metadata_fails_when_the_file_loads(tiny, tmp_path, change, message):
    target = tmp_path / "bad.safetensors"
    _rewrite(tiny, target, **change)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(target, parts=("vae",))


def test_a_config_larger_than_its_weights_is_refused_before_allocating(tiny, tmp_path):
    with safe_open(str(tiny), framework="pt") as f:
        config = json.loads(f.metadata()["f1.config"])
    config["unet"]["model_channels"] = 1_000_000  # about 10^13 parameters if it were built
    target = tmp_path / "huge.safetensors"
    _rewrite(tiny, target, **{"f1.config": json.dumps(config)})
    with pytest.raises(CheckpointError, match="does not match its config"):
        load_checkpoint(target, parts=("unet",))
