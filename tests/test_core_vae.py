"""F1VAEToVAE: the F.1 VAE as a core VAE, run by core's own VAE nodes in-process (no server)."""
import pytest
import torch

from comfy_inprocess import import_pack
from f1core.config import scenes_x4, tiny
from f1core.models.vae import F1VAE


@pytest.fixture(scope="module")
def latent_nodes(comfy):
    return import_pack("nodes.nodes_latent")


def handle_for(config, seed=0):
    torch.manual_seed(seed)
    return import_pack("nodes.f1_vae").F1VAEHandle(F1VAE(config.vae))


def pixels(side, seed=1):
    return torch.rand(1, side, side, 3, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("config", [tiny(), scenes_x4()], ids=["/8", "/4"])
def test_core_vae_nodes_give_the_f1_vae_nodes_results(comfy, latent_nodes, config):
    import comfy.sd
    import nodes
    handle = handle_for(config)
    vae = latent_nodes.F1VAEToVAE.execute(handle).result[0]
    assert isinstance(vae, comfy.sd.VAE)
    assert vae.first_stage_model is handle.vae and vae.patcher is handle.patcher  # no second copy of the weights
    assert vae.spacial_compression_decode() == vae.spacial_compression_encode() == config.vae.downscale
    image = pixels(64)
    with torch.inference_mode():
        ours = latent_nodes.F1VAEEncode.execute(handle, image, "off", "channel").result[0]["samples"]
        core = nodes.VAEEncode().encode(vae, image)[0]["samples"]
        assert core.shape == (1, config.vae.latent_channels, 64 // config.vae.downscale, 64 // config.vae.downscale)
        torch.testing.assert_close(core, ours, rtol=0, atol=0)
        decoded = latent_nodes.F1VAEDecode.execute(handle, {"samples": ours}).result[0]
        torch.testing.assert_close(nodes.VAEDecode().decode(vae, {"samples": ours})[0], decoded, rtol=0, atol=0)
        # core's tiled decode: one tile covering the latent is the plain decode; smaller tiles still decode
        tiled = nodes.VAEDecodeTiled().decode(vae, {"samples": ours}, 512, 64)[0]
        torch.testing.assert_close(tiled, decoded, rtol=0, atol=1e-6)
        big = nodes.VAEEncode().encode(vae, pixels(128))[0]
        tiled = nodes.VAEDecodeTiled().decode(vae, big, 64, 32)[0]
        assert tiled.shape == (1, 128, 128, 3) and 0 <= tiled.min() and tiled.max() <= 1


def test_inpaint_model_conditioning_encodes_with_the_f1_vae(comfy, latent_nodes):
    import nodes
    handle = handle_for(tiny())
    vae = latent_nodes.F1VAEToVAE.execute(handle).result[0]
    image, mask = pixels(64), torch.zeros(1, 64, 64)
    mask[:, 16:48, 16:48] = 1
    positive = [[torch.zeros(1, 4, 8), {}]]
    with torch.inference_mode():
        pos, neg, latent = nodes.InpaintModelConditioning().encode(positive, positive, image, vae, mask)
        ours = latent_nodes.F1VAEEncode.execute(handle, image, "off", "channel").result[0]["samples"]
    torch.testing.assert_close(latent["samples"], ours, rtol=0, atol=0)
    assert latent["noise_mask"].shape == (1, 1, 64, 64)
    assert pos[0][1]["concat_latent_image"].shape == ours.shape


def test_images_off_the_f1_size_grid_are_refused_with_the_fix(comfy, latent_nodes):
    import nodes
    vae = latent_nodes.F1VAEToVAE.execute(handle_for(tiny())).result[0]
    with pytest.raises(ValueError, match="multiple of 16"):
        nodes.VAEEncode().encode(vae, pixels(72))
