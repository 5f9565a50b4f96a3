import json

import pytest
import torch
from safetensors.torch import save_file

from f1core.checkpoint import CheckpointError, load_checkpoint, read_metadata, save_checkpoint
from f1core.make_tiny import make_tiny


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    return make_tiny(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors", seed=5)


def test_round_trip_restores_every_part_exactly(tiny_path, tmp_path):
    first = load_checkpoint(tiny_path)
    again = save_checkpoint(tmp_path / "again.safetensors", first.config, unet=first.unet, vae=first.vae,
                            text=first.text, latent_rgb=first.latent_rgb)
    second = load_checkpoint(again)
    assert second.config == first.config
    for part in ("unet", "vae", "text"):
        a, b = getattr(first, part).state_dict(), getattr(second, part).state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    prompt = ["a scarlet disc on the left of a violet box"]
    torch.testing.assert_close(first.text.encode(prompt).context, second.text.encode(prompt).context)


def test_metadata_holds_config_vocab_and_preview_factors(tiny_path):
    meta = read_metadata(tiny_path)
    assert json.loads(meta["f1.config"])["name"] == "f1-tiny"
    assert meta["f1.parts"] == "unet,vae,text"
    rgb = json.loads(meta["f1.latent_rgb"])
    assert len(rgb["factors"]) == load_checkpoint(tiny_path, parts=("vae",)).config.vae.latent_channels


def test_same_seed_writes_the_same_weights(tiny_path, tmp_path):
    other = load_checkpoint(make_tiny(tmp_path / "same.safetensors", seed=5), parts=("unet",)).unet.state_dict()
    ref = load_checkpoint(tiny_path, parts=("unet",)).unet.state_dict()
    assert all(torch.equal(ref[k], other[k]) for k in ref)


def test_single_component_file_loads_alone(tiny_path, tmp_path):
    full = load_checkpoint(tiny_path)
    vae_only = save_checkpoint(tmp_path / "vae.safetensors", full.config, vae=full.vae)
    loaded = load_checkpoint(vae_only)
    assert loaded.vae is not None and loaded.unet is None and loaded.text is None
    with pytest.raises(CheckpointError, match="holds parts"):
        load_checkpoint(vae_only, parts=("unet",))


def test_corrupt_and_foreign_files_get_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.safetensors")
    pickle_file = tmp_path / "model.ckpt"
    pickle_file.write_bytes(b"\x80\x04")
    with pytest.raises(CheckpointError, match="only .safetensors"):
        load_checkpoint(pickle_file)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\xff" * 64)
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_checkpoint(garbage)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(CheckpointError, match="not an F.1 checkpoint"):
        load_checkpoint(foreign)


def test_truncated_file_is_reported(tiny_path, tmp_path):
    data = tiny_path.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError):
        load_checkpoint(cut)


def test_weights_that_do_not_fit_the_config_are_named(tiny_path, tmp_path):
    full = load_checkpoint(tiny_path)
    bad = tmp_path / "bad.safetensors"
    meta = read_metadata(tiny_path)
    tensors = {f"unet.{k}": v for k, v in full.unet.state_dict().items()}
    tensors.pop("unet.conv_in.weight")
    tensors["unet.extra.weight"] = torch.zeros(1)
    save_file(tensors, str(bad), metadata={**meta, "f1.parts": "unet"})
    with pytest.raises(CheckpointError, match=r"1 missing .*conv_in.weight.*1 unexpected"):
        load_checkpoint(bad)
