"""The full-size preset is the real thing: CLIP-ViT-L/14's text tower and RoBERTa-large, key for key, so real
weights load unchanged. Built on the meta device, so nothing is allocated."""
import torch
from transformers import CLIPTextConfig, CLIPTextModelWithProjection, RobertaConfig, RobertaModel

from f1core.config import full
from f1core.models.unet import F1UNet
from f1core.models.vae import F1VAE
from f1core.text import CLIPTextTower, RobertaEncoder, normalize_hf_state_dict


def shapes(module):
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def test_full_clip_tower_matches_clip_vit_l14_text_model():
    c = full().text.clip
    with torch.device("meta"):
        ours = CLIPTextTower(c)
        ref = CLIPTextModelWithProjection(CLIPTextConfig(
            vocab_size=c.vocab_size, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
            num_attention_heads=12, max_position_embeddings=77, projection_dim=768))
    assert shapes(ours) == {k: tuple(v.shape) for k, v in normalize_hf_state_dict(ref.state_dict(), "clip").items()}


def test_full_roberta_matches_roberta_large():
    c = full().text.roberta
    with torch.device("meta"):
        ours = RobertaEncoder(c)
        ref = RobertaModel(RobertaConfig(vocab_size=50265, hidden_size=1024, num_hidden_layers=24,
                                         num_attention_heads=16, intermediate_size=4096,
                                         max_position_embeddings=514, type_vocab_size=1), add_pooling_layer=False)
    assert shapes(ours) == {k: tuple(v.shape) for k, v in normalize_hf_state_dict(ref.state_dict(), "roberta").items()}
    assert sum(p.numel() for p in ours.parameters()) == 354_310_144


def test_full_unet_and_vae_build_for_1024():
    config = full()
    assert config.resolution == 1024
    with torch.device("meta"):
        unet = F1UNet(config.unet)
        vae = F1VAE(config.vae)
    assert unet.config.context_dim == config.text.adapter.context_dim
    assert config.unet.in_channels == config.vae.latent_channels
    assert 300e6 < sum(p.numel() for p in unet.parameters()) < 1e9
    assert sum(p.numel() for p in vae.parameters()) > 10e6
