"""The F.1 ControlNet: a narrow copy of the U-Net's encoder that returns one zero-initialised residual for every
skip of the U-Net's encoder and one for its middle block, in core's `{"input", "middle", "output"}` layout that the
U-Net's `apply_control` consumes. By default it is an adapter (T2I-Adapter-like): it reads the hint alone. With
`reads_latent=True` it is ControlNet-XS-like: it also reads the noisy latent, the timestep and the text. The
default is the measured choice: at equal training steps on the shipped model the adapter cut the held-out
denoising error 30 times more than the quarter-width XS, with fewer parameters and less CPU per step
(benchmarks/README.md, `python benchmarks/controlnet.py design`).

The encoder is the U-Net's own module (`F1Encoder`), built at a fraction of its width; the ControlNet adds a hint
stem (image -> latent resolution) and 1x1 output convolutions, all zero at the start, so an untrained ControlNet
leaves the U-Net's output unchanged. Files are `.safetensors` with the config in their metadata.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .config import UNetConfig, _from_dict
from .models.unet import F1Encoder, encoder_skip_channels
from .ops import resolve

FORMAT = "f1.control/1"
CONDITIONS = ("edges", "depth", "layout")
MAX_SHARE = 0.25   # of the U-Net's parameters (issue 13)


@dataclass(frozen=True)
class ControlConfig:
    unet: UNetConfig = field(default_factory=UNetConfig)   # the U-Net it feeds: its residuals take these shapes
    downscale: int = 8          # hint pixels per latent pixel: the VAE's downscale
    width: float = 0.25         # the control encoder's channels as a share of the U-Net's
    attention: bool = True      # text/self attention at the U-Net's attention levels
    reads_latent: bool = False  # True: XS-like, the noisy latent, timestep and text too; False: the adapter
    hint_channels: int = 3
    condition: str = "edges"    # what it was trained on (shown by the loader)

    def __post_init__(self):
        if self.condition not in CONDITIONS:
            raise ValueError(f"ControlConfig.condition: expected one of {CONDITIONS}, got {self.condition!r}")
        if self.downscale < 1 or self.downscale & (self.downscale - 1):
            raise ValueError(f"ControlConfig.downscale: expected a power of two, got {self.downscale}")
        if not 0 < self.width <= 1:
            raise ValueError(f"ControlConfig.width: expected 0 < width <= 1, got {self.width}")

    def encoder_config(self) -> UNetConfig:
        u = self.unet
        channels = max(8, int(round(u.model_channels * self.width / 8)) * 8)  # GroupNorm-friendly widths
        return dataclasses.replace(
            u, model_channels=channels, cross_scale_levels=(),
            attention_levels=u.attention_levels if self.attention and self.reads_latent else (),
            head_dim=min(u.head_dim, channels))

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ControlConfig":
        return _from_dict(cls, json.loads(text))


def control_config_for(f1_config, condition: str = "edges", **overrides) -> ControlConfig:
    """The ControlConfig for an F.1 model's config (its U-Net and its VAE's downscale)."""
    return ControlConfig(unet=f1_config.unet, downscale=f1_config.vae.downscale, condition=condition, **overrides)


class HintStem(nn.Module):
    """Hint image [B, C, H*d, W*d] in [0, 1] -> features at H x W: strided convolutions, the last
    zero-initialised (with the output convolutions, the ControlNet starts as a no-op)."""

    def __init__(self, in_ch, out_ch, downscale, operations=None, device=None, dtype=None):
        super().__init__()
        ops = resolve(operations)
        kw = dict(device=device, dtype=dtype)
        layers, ch = [ops.Conv2d(in_ch, 16, 3, padding=1, **kw), nn.SiLU()], 16
        for _ in range(int(math.log2(downscale))):
            layers += [ops.Conv2d(ch, min(2 * ch, 64), 3, stride=2, padding=1, **kw), nn.SiLU()]
            ch = min(2 * ch, 64)
        self.body = nn.Sequential(*layers)
        self.out = ops.Conv2d(ch, out_ch, 3, padding=1, **kw)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, hint):
        return self.out(self.body(hint))


class F1ControlNet(nn.Module):
    def __init__(self, config: ControlConfig, operations=None, device=None, dtype=None):
        super().__init__()
        ops = resolve(operations)
        self.config = config
        self.dtype = dtype or torch.float32
        kw = dict(operations=operations, device=device, dtype=dtype)
        encoder = config.encoder_config()
        self.encoder = F1Encoder(encoder, **kw)
        # to the U-Net's first grid: the latent's size, or less where the U-Net reads latent patches
        self.hint = HintStem(config.hint_channels, encoder.model_channels, config.downscale * encoder.patch_size,
                             **kw)
        targets = encoder_skip_channels(config.unet)
        self.zero_convs = nn.ModuleList(ops.Conv2d(cin, cout, 1, device=device, dtype=dtype)
                                        for cin, cout in zip(self.encoder.skip_channels, targets))
        self.middle_out = ops.Conv2d(self.encoder.skip_channels[-1], targets[-1], 1, device=device, dtype=dtype)
        for conv in (*self.zero_convs, self.middle_out):
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)

    def forward(self, x, hint, timesteps, context=None, y=None, context_mask=None, **kwargs):
        """core's control_model contract: x and timesteps as the U-Net gets them (c_in * x, EDM's c_noise), the
        hint image; returns {"input": [], "middle": [residual], "output": [one per encoder skip, in order]}."""
        size = (x.shape[-2] * self.config.downscale, x.shape[-1] * self.config.downscale)
        if hint.shape[1] != self.config.hint_channels:
            raise ValueError(f"F1ControlNet: the hint has {hint.shape[1]} channels, expected "
                             f"{self.config.hint_channels} (an RGB IMAGE)")
        hint = hint.to(x.dtype)
        if tuple(hint.shape[-2:]) != size:
            hint = F.interpolate(hint, size=size, mode="bilinear", align_corners=False)
        if hint.shape[0] != x.shape[0]:
            hint = hint.expand(x.shape[0], -1, -1, -1) if hint.shape[0] == 1 else hint.repeat_interleave(
                x.shape[0] // hint.shape[0], dim=0)
        if not self.config.reads_latent:   # the adapter: the same features at every step, for any prompt
            x, timesteps, context, y, context_mask = torch.zeros_like(x), torch.zeros_like(timesteps), None, None, None
        options = {}
        emb = self.encoder.embed(timesteps, y, x.dtype, options)
        if context is not None:
            context = context.to(x.dtype)
        h, skips, _ = self.encoder.encode(x, emb, context, options, context_mask, added=self.hint(hint * 2 - 1))
        return {"input": [], "middle": [self.middle_out(h)],
                "output": [conv(skip) for conv, skip in zip(self.zero_convs, skips)]}


def random_control(config: ControlConfig, seed: int = 0) -> F1ControlNet:
    """Random weights with live outputs (zero-initialised layers drawn too): for tests and demos of the path."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        control = F1ControlNet(config)
        with torch.no_grad():
            for weight in control.parameters():  # the output convolutions and the mixers' output projections
                if weight.ndim > 1 and not weight.any():
                    weight.normal_(0, 0.3)
    return control.eval()


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def check_size(control: F1ControlNet, unet_params: int):
    """The issue's budget: at most MAX_SHARE of the U-Net's parameters."""
    share = parameter_count(control) / unet_params
    if share > MAX_SHARE:
        raise ValueError(f"ControlConfig: this ControlNet has {share:.1%} of the U-Net's parameters, over the "
                         f"{MAX_SHARE:.0%} budget; lower `width` or turn `attention` off")
    return share


def matches_unet(config: ControlConfig, unet_config: UNetConfig) -> bool:
    """Whether the residuals fit this U-Net: same latent channels and encoder skips."""
    return (config.unet.in_channels == unet_config.in_channels
            and encoder_skip_channels(config.unet) == encoder_skip_channels(unet_config)
            and config.unet.channel_mult == unet_config.channel_mult)


# --- files ----------------------------------------------------------------------------------------------------------
def save_control(path, control: F1ControlNet, extra_metadata: dict | None = None) -> Path:
    path = Path(path)
    tensors = {k: v.detach().contiguous().cpu() for k, v in control.state_dict().items()}
    metadata = {"f1.format": FORMAT, "f1.control_config": control.config.to_json(), **(extra_metadata or {})}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    tmp.replace(path)
    return path


def read_control_metadata(path) -> dict:
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"{path.name} is not a readable safetensors file ({e}); re-download or re-export it") from e
    if metadata.get("f1.format") != FORMAT or "f1.control_config" not in metadata:
        raise ValueError(f"{path.name} is not an F.1 ControlNet (metadata f1.format={metadata.get('f1.format')!r}, "
                         f"expected {FORMAT!r}); core's ControlNet files load with core's ControlNet loader")
    return metadata


def load_control(path, operations=None, device="cpu", dtype=None) -> F1ControlNet:
    """Config from the metadata, shapes checked on the meta device before anything is allocated."""
    path = Path(path)
    metadata = read_control_metadata(path)
    try:
        config = ControlConfig.from_json(metadata["f1.control_config"])
        with torch.device("meta"):
            expected = {k: tuple(v.shape) for k, v in F1ControlNet(config).state_dict().items()}
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as e:
        raise ValueError(f"{path.name}: its ControlNet config cannot be read ({e}); re-export it") from e
    with safe_open(str(path), framework="pt") as f:
        found = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        if found != expected:
            wrong = sorted(set(found) ^ set(expected)) or [k for k in expected if found[k] != expected[k]]
            raise ValueError(f"{path.name}: its tensors do not match its config ({wrong[:3]}...); re-export it")
        control = F1ControlNet(config, operations=operations, device=device, dtype=dtype)
        control.load_state_dict({k: f.get_tensor(k) for k in f.keys()}, strict=True)
    return control.eval()
