"""Configs for every F.1 part, from a tiny size for tests up to full size (1024², CLIP-L, RoBERTa-large).

A checkpoint stores `F1Config.to_json()` in its safetensors metadata, so a file alone is enough to rebuild the model.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field


@dataclass(frozen=True)
class VAEConfig:
    base_channels: int = 128
    channel_mult: tuple[int, ...] = (1, 2, 4, 4)  # len-1 halvings: (1,2,4,4) -> /8
    num_res_blocks: int = 2
    image_channels: int = 3
    fine_channels: int = 4     # detail level, at /8
    coarse_channels: int = 8   # global level, at /16; packed 2x2 into coarse_channels//4 channels at /8

    @property
    def downscale(self) -> int:
        return 2 ** (len(self.channel_mult) - 1)

    @property
    def latent_channels(self) -> int:
        return self.fine_channels + self.coarse_channels // 4


@dataclass(frozen=True)
class CLIPTextConfig:
    """Hugging Face `CLIPTextConfig` fields; the defaults are CLIP-ViT-L/14's text tower."""
    vocab_size: int = 49408
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    max_positions: int = 77
    bos_token_id: int = 49406
    eos_token_id: int = 49407
    pad_token_id: int = 49407
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    projection_dim: int = 768


@dataclass(frozen=True)
class RobertaConfig:
    """Hugging Face `RobertaConfig` fields; the defaults are RoBERTa-large."""
    vocab_size: int = 50265
    hidden_size: int = 1024
    num_layers: int = 24
    num_heads: int = 16
    intermediate_size: int = 4096
    max_positions: int = 514  # includes the padding_idx + 1 offset, as in Hugging Face
    bos_token_id: int = 0
    pad_token_id: int = 1
    eos_token_id: int = 2
    type_vocab_size: int = 1
    layer_norm_eps: float = 1e-5

    @property
    def max_length(self) -> int:
        """Longest input: positions start after the padding index."""
        return self.max_positions - self.pad_token_id - 1


@dataclass(frozen=True)
class AdapterConfig:
    context_dim: int = 1024     # U-Net cross-attention width
    pooled_dim: int = 1024      # pooled vector fed to the U-Net's timestep embedding
    role_tokens: int = 4        # learned queries per role (style, entity, relation) appended to the context


TEXT_FUSIONS = ("adapter", "clip")


@dataclass(frozen=True)
class TextConfig:
    clip: CLIPTextConfig = field(default_factory=CLIPTextConfig)
    roberta: RobertaConfig = field(default_factory=RobertaConfig)
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    # "adapter": CLIP and RoBERTa fused by the adapter (F.1). "clip": the CLIP tower's hidden states alone, as
    # Stable Diffusion conditions; RoBERTa and the adapter are not built (the SD-style baseline).
    fusion: str = "adapter"

    def __post_init__(self):
        if self.fusion not in TEXT_FUSIONS:
            raise ValueError(f"TextConfig.fusion: expected one of {TEXT_FUSIONS}, got {self.fusion!r}")
        if self.fusion == "clip" and (self.clip.hidden_size, self.clip.projection_dim) != (
                self.adapter.context_dim, self.adapter.pooled_dim):
            raise ValueError("TextConfig: with fusion='clip' the CLIP widths (hidden_size, projection_dim) must equal "
                             "the U-Net's (adapter.context_dim, adapter.pooled_dim)")


@dataclass(frozen=True)
class UNetConfig:
    in_channels: int = 6
    model_channels: int = 320
    channel_mult: tuple[int, ...] = (1, 2, 4)
    num_res_blocks: int = 2
    attention_levels: tuple[int, ...] = (1, 2)     # levels whose ConvFormer blocks carry a transformer mixer
    cross_scale_levels: tuple[int, ...] = (1, 2)   # levels that also attend to the other scales
    cross_scale_grid: int = 8                      # each scale is pooled to at most grid x grid tokens
    head_dim: int = 64
    transformer_depth: int = 1
    context_dim: int = 1024
    pooled_dim: int = 1024
    # latent pixels per U-Net pixel: a 2x2 patch (pixel-unshuffle) lets a fine latent run at the coarse grid's cost
    patch_size: int = 1


@dataclass(frozen=True)
class ScheduleConfig:
    """The F.1 noise schedule: EDM preconditioning (Karras et al. 2022) on normalised latents."""
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    sigma_data: float = 1.0   # the VAE normalises latents to unit variance
    rho: float = 7.0


@dataclass(frozen=True)
class F1Config:
    name: str = "f1-full"
    resolution: int = 1024
    vae: VAEConfig = field(default_factory=VAEConfig)
    unet: UNetConfig = field(default_factory=UNetConfig)
    text: TextConfig = field(default_factory=TextConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)

    def __post_init__(self):
        agreements = (("unet.in_channels", self.unet.in_channels, "vae.latent_channels", self.vae.latent_channels),
                      ("unet.context_dim", self.unet.context_dim, "text.adapter.context_dim",
                       self.text.adapter.context_dim),
                      ("unet.pooled_dim", self.unet.pooled_dim, "text.adapter.pooled_dim",
                       self.text.adapter.pooled_dim))
        for name, value, source, expected in agreements:
            if value != expected:
                raise ValueError(f"F1Config.{name} is {value} but {source} is {expected}; the parts must agree: "
                                 f"set {name}={expected}")
        multiple = 2 * self.vae.downscale  # the VAE's coarse level
        if self.resolution % multiple:
            raise ValueError(f"F1Config.resolution is {self.resolution}; it must be a multiple of {multiple} "
                             f"(2 * vae.downscale)")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "F1Config":
        return _from_dict(cls, json.loads(text))


def with_overrides(config: F1Config, overrides: dict[str, object]) -> F1Config:
    """`config` with dotted fields replaced, e.g. {"unet.attention_levels": [2]}; all at once, so fields that
    must agree (vae.fine_channels and unet.in_channels) can change together."""
    data = dataclasses.asdict(config)
    for path, value in overrides.items():
        *parents, name = path.split(".")
        node = data
        for parent in parents:
            if not isinstance(node.get(parent), dict):
                raise ValueError(f"config override {path!r}: {parent!r} is not a section of the config")
            node = node[parent]
        if name not in node or isinstance(node[name], dict):
            raise ValueError(f"config override {path!r}: {'.'.join(parents) or 'the config'} has no field {name!r}")
        node[name] = value
    return _from_dict(F1Config, data)


def _from_dict(cls, data: dict):
    """Rebuild a nested frozen dataclass; unknown keys are an error so a bad file is caught early."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(fields)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown config keys {sorted(unknown)}")
    kwargs = {}
    for name, value in data.items():
        ftype = fields[name].type
        sub = _DATACLASSES.get(ftype if isinstance(ftype, str) else getattr(ftype, "__name__", ""))
        if sub is not None:
            kwargs[name] = _from_dict(sub, value)
        elif isinstance(value, list):
            kwargs[name] = tuple(value)
        else:
            kwargs[name] = value
    return cls(**kwargs)


_DATACLASSES = {c.__name__: c for c in (VAEConfig, CLIPTextConfig, RobertaConfig, AdapterConfig,
                                         TextConfig, UNetConfig, ScheduleConfig)}


def tiny(vocab_size: int = 1024) -> F1Config:
    """Seconds-fast on a CPU: for tests and the random-init demo checkpoint."""
    vae = VAEConfig(base_channels=16, channel_mult=(1, 2, 2, 2), num_res_blocks=1)
    text = TextConfig(
        clip=CLIPTextConfig(vocab_size=vocab_size, hidden_size=64, num_layers=2, num_heads=2,
                            intermediate_size=128, bos_token_id=0, eos_token_id=1, pad_token_id=1,
                            projection_dim=64),
        roberta=RobertaConfig(vocab_size=vocab_size, hidden_size=64, num_layers=2, num_heads=2,
                              intermediate_size=128, max_positions=130),
        adapter=AdapterConfig(context_dim=64, pooled_dim=64, role_tokens=2),
    )
    unet = UNetConfig(in_channels=vae.latent_channels, model_channels=32, channel_mult=(1, 2),
                      num_res_blocks=1, attention_levels=(1,), cross_scale_levels=(1,),
                      cross_scale_grid=4, head_dim=16, context_dim=64, pooled_dim=64)
    return F1Config(name="f1-tiny", resolution=128, vae=vae, unet=unet, text=text)


def full() -> F1Config:
    return F1Config()


def scenes(vocab_size: int = 1024) -> F1Config:
    """`f1-tiny-scenes` at /8, the first shipped default: 64² scenes, a 10-channel 8x8 latent, small text towers
    with a scene vocabulary; sized for CPU training and a checkpoint well under 40 MB. Its /4 successors keep the
    name, so a trained one replaces models/f1-tiny-scenes.safetensors as a plain copy."""
    vae = VAEConfig(base_channels=32, channel_mult=(1, 2, 2, 2), num_res_blocks=1, fine_channels=8,
                    coarse_channels=8)
    text = TextConfig(
        clip=CLIPTextConfig(vocab_size=vocab_size, hidden_size=128, num_layers=2, num_heads=2,
                            intermediate_size=256, max_positions=32, bos_token_id=0, eos_token_id=1,
                            pad_token_id=1, projection_dim=128),
        roberta=RobertaConfig(vocab_size=vocab_size, hidden_size=128, num_layers=2, num_heads=2,
                              intermediate_size=256, max_positions=34),
        adapter=AdapterConfig(context_dim=128, pooled_dim=128, role_tokens=2),
    )
    unet = UNetConfig(in_channels=vae.latent_channels, model_channels=64, channel_mult=(1, 2), num_res_blocks=1,
                      attention_levels=(0, 1), cross_scale_levels=(1,), cross_scale_grid=4, head_dim=32,
                      context_dim=128, pooled_dim=128)
    return F1Config(name="f1-tiny-scenes", resolution=64, vae=vae, unet=unet, text=text)


def scenes_x4(vocab_size: int = 1024) -> F1Config:
    """`scenes` with a /4 latent: 16 channels at 16x16 for 64² images (12 fine + the 8x8 coarse level packed
    into 4). At /8 the judge passed only 0.379 of the VAE's own reconstructions; shapes and stripes need the
    finer grid. The U-Net gains a third level so attention still runs at 8x8 and 4x4."""
    vae = VAEConfig(base_channels=32, channel_mult=(1, 2, 2), num_res_blocks=1, fine_channels=12,
                    coarse_channels=16)
    base = scenes(vocab_size)
    unet = dataclasses.replace(base.unet, in_channels=vae.latent_channels, channel_mult=(1, 2, 2),
                               attention_levels=(1, 2), cross_scale_levels=(1, 2))
    return dataclasses.replace(base, vae=vae, unet=unet)


def scenes_x4_patch(vocab_size: int = 1024) -> F1Config:
    """`scenes_x4`'s latent read as 2x2 patches by `scenes`' U-Net (8x8 and 4x4): the /4 latent's detail at the
    /8 model's cost per sample. On these CPUs the /4 U-Net trained 3x slower per sample than the /8 one."""
    x4 = scenes_x4(vocab_size)
    return dataclasses.replace(x4, unet=dataclasses.replace(scenes(vocab_size).unet,
                                                            in_channels=x4.vae.latent_channels, patch_size=2))


def scenes_baseline(vocab_size: int = 1024) -> F1Config:
    """The SD-style baseline for `scenes`: same VAE, data and U-Net widths, but no cross-scale attention and one
    CLIP text tower without RoBERTa or the fusion adapter."""
    config = scenes(vocab_size)
    return dataclasses.replace(
        config, name="f1-tiny-scenes-sd-baseline",
        unet=dataclasses.replace(config.unet, cross_scale_levels=()),
        text=dataclasses.replace(config.text, fusion="clip"))


PRESETS = {"tiny": tiny, "full": full, "scenes": scenes, "scenes_baseline": scenes_baseline,
           "scenes_x4": scenes_x4, "scenes_x4_patch": scenes_x4_patch}
