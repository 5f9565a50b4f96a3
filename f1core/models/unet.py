"""The F.1 U-Net: ConvFormer residual blocks (convolution + transformer mixer) with text cross-attention
and cross-scale attention between resolution levels.

Its forward follows ComfyUI's BaseModel contract `(x, timesteps, context, y, control, transformer_options)`:
it calls `apply_control` at every level with core's names ('input', 'middle', 'output') and sets
`transformer_options` "block", "original_shape", "transformer_index" (and, per attention level,
"activations_shape") like core's UNetModel, and runs core's emb, input/output block and middle patches,
so ControlNets and attention patches (HyperTile, ToMe, GLIGEN, regional attention) reach it.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import UNetConfig
from ..ops import resolve
from .attention import TransformerMixer, _groups


def apply_control(h, control, name):
    """Same semantics as ComfyUI's openaimodel.apply_control: pop one residual per call and add it. A residual
    of another shape is an error (core only logs it): a ControlNet made for another model would steer nothing."""
    if control is not None and control.get(name):
        residual = control[name].pop()
        if residual is not None:
            if residual.shape[1:] != h.shape[1:] or residual.shape[0] not in (1, h.shape[0]):
                raise ValueError(f"ControlNet: a residual for the U-Net's '{name}' features has shape "
                                 f"{tuple(residual.shape)}, the features are {tuple(h.shape)}; this ControlNet "
                                 "was made for another model. Use one trained for this MODEL")
            h = h + residual
    return h


def timestep_embedding(timesteps, dim, max_period=10000.0):
    """Sinusoidal features of EDM's c_noise = log(sigma)/4 (about -1.6..1.1), stretched so all frequencies see it."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=timesteps.device) / half)
    args = (timesteps.float() * 250.0)[:, None] * freqs[None]
    return torch.cat([args.cos(), args.sin()], dim=-1)


class ResBlock(nn.Module):
    def __init__(self, in_ch, out_ch, emb_dim, operations=None, device=None, dtype=None):
        super().__init__()
        ops = resolve(operations)
        self.norm1 = ops.GroupNorm(_groups(in_ch), in_ch, eps=1e-6, device=device, dtype=dtype)
        self.conv1 = ops.Conv2d(in_ch, out_ch, 3, padding=1, device=device, dtype=dtype)
        self.emb = ops.Linear(emb_dim, 2 * out_ch, device=device, dtype=dtype)
        self.norm2 = ops.GroupNorm(_groups(out_ch), out_ch, eps=1e-6, device=device, dtype=dtype)
        self.conv2 = ops.Conv2d(out_ch, out_ch, 3, padding=1, device=device, dtype=dtype)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = (ops.Conv2d(in_ch, out_ch, 1, device=device, dtype=dtype)
                     if in_ch != out_ch else nn.Identity())

    def forward(self, x, emb):
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        return self.skip(x) + self.conv2(F.silu(h))


class ConvFormerBlock(nn.Module):
    """A convolutional residual block followed, where configured, by a transformer mixer."""

    def __init__(self, in_ch, out_ch, emb_dim, config: UNetConfig, attention: bool, cross_scale: bool,
                 memory_dim: int, operations=None, device=None, dtype=None, attention_fn=None):
        super().__init__()
        kw = dict(operations=operations, device=device, dtype=dtype)
        self.res = ResBlock(in_ch, out_ch, emb_dim, **kw)
        self.mixer = None
        if attention:
            heads = max(1, out_ch // config.head_dim)
            self.mixer = TransformerMixer(out_ch, heads, out_ch // heads, config.context_dim,
                                          config.transformer_depth, memory_dim if cross_scale else None, **kw,
                                          attention_fn=attention_fn)

    def forward(self, x, emb, context, memory, transformer_options, context_mask=None):
        x = self.res(x, emb)
        if self.mixer is not None:
            x = self.mixer(x, context, memory, transformer_options, context_mask)
        return x


class Downsample(nn.Module):
    def __init__(self, ch, operations=None, device=None, dtype=None):
        super().__init__()
        self.conv = resolve(operations).Conv2d(ch, ch, 3, stride=2, padding=1, device=device, dtype=dtype)

    def forward(self, x, *_):
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, ch, operations=None, device=None, dtype=None):
        super().__init__()
        self.conv = resolve(operations).Conv2d(ch, ch, 3, padding=1, device=device, dtype=dtype)

    def forward(self, x, *_, output_size=None):
        return self.conv(F.interpolate(x, size=output_size, mode="nearest"))


class ScaleMemory(nn.Module):
    """Tokens pooled from each encoder level (at most grid x grid each), projected to one width and tagged
    with a learned level embedding: the keys and values of cross-scale attention."""

    def __init__(self, level_channels, memory_dim, grid, operations=None, device=None, dtype=None):
        super().__init__()
        ops = resolve(operations)
        self.grid = grid
        self.proj = nn.ModuleList(ops.Linear(ch, memory_dim, device=device, dtype=dtype) for ch in level_channels)
        self.level_embed = nn.Parameter(torch.zeros(len(level_channels), memory_dim, device=device, dtype=dtype))

    def tokens(self, level: int, h):
        pooled = F.adaptive_avg_pool2d(h, (min(self.grid, h.shape[2]), min(self.grid, h.shape[3])))
        return self.proj[level](pooled.flatten(2).transpose(1, 2)) + self.level_embed[level]


class F1Encoder(nn.Module):
    """The U-Net's encoder half: timestep and pooled embeddings, conv_in, the input blocks and the scale memory
    they fill. F1UNet extends it with the middle and output blocks; f1core.control runs a narrow one beside the
    U-Net. Its modules are direct attributes, so checkpoint keys (conv_in.*, input_blocks.*) are the U-Net's own."""

    def __init__(self, config: UNetConfig, operations=None, device=None, dtype=None, attention_fn=None):
        """attention_fn: the host's attention function with core's signature (ComfyUI's optimized_attention);
        None uses F.1's own (torch SDPA)."""
        super().__init__()
        ops = resolve(operations)
        self.config = config
        self.dtype = dtype or torch.float32
        self._kw = dict(operations=operations, device=device, dtype=dtype)
        self._attention_fn = attention_fn
        ch = config.model_channels
        self.emb_dim = 4 * ch
        self.level_channels = [ch * m for m in config.channel_mult]
        self.memory_dim = max(self.level_channels)

        self.time_embed = nn.Sequential(ops.Linear(ch, self.emb_dim, device=device, dtype=dtype), nn.SiLU(),
                                        ops.Linear(self.emb_dim, self.emb_dim, device=device, dtype=dtype))
        self.pooled_embed = ops.Linear(config.pooled_dim, self.emb_dim, device=device, dtype=dtype)
        # no cross-scale levels (an SD-style U-Net): no scale memory, and the middle block attends to text only
        self.memory = (ScaleMemory(self.level_channels, self.memory_dim, config.cross_scale_grid, **self._kw)
                       if config.cross_scale_levels else None)

        # Entries are (module, level). Like core's UNetModel, every entry leaves a skip.
        self.conv_in = ops.Conv2d(config.in_channels * config.patch_size ** 2, ch, 3, padding=1, device=device,
                                  dtype=dtype)
        self.input_blocks = nn.ModuleList()
        self._input_levels = []
        self.skip_channels = encoder_skip_channels(config)
        cur = ch
        for level, out in enumerate(self.level_channels):
            for _ in range(config.num_res_blocks):
                # level 0 has no coarser-already-seen scale to attend to in the encoder
                self.input_blocks.append(self.block(cur, out, level, level > 0 and level in config.cross_scale_levels))
                self._input_levels.append(level)
                cur = out
            if level < len(self.level_channels) - 1:
                self.input_blocks.append(Downsample(cur, **self._kw))
                self._input_levels.append(level)

    def block(self, cin, cout, level, cross_scale=None):
        config = self.config
        cs = level in config.cross_scale_levels if cross_scale is None else cross_scale
        return ConvFormerBlock(cin, cout, self.emb_dim, config, level in config.attention_levels, cs,
                               self.memory_dim, **self._kw, attention_fn=self._attention_fn)

    def patchify(self, x):
        p = self.config.patch_size
        if x.shape[-2] % p or x.shape[-1] % p:
            raise ValueError(f"F1UNet: the latent is {x.shape[-2]}x{x.shape[-1]}, but this model reads {p}x{p} "
                             f"patches; use a size whose latent is a multiple of {p}")
        return F.pixel_unshuffle(x, p) if p > 1 else x

    def embed(self, timesteps, y, dtype, transformer_options):
        emb = self.time_embed(timestep_embedding(timesteps, self.config.model_channels).to(dtype))
        for patch in transformer_options.get("patches", {}).get("emb_patch", []):
            emb = patch(emb, self.config.model_channels, transformer_options)
        if y is not None:
            emb = emb + self.pooled_embed(y.to(dtype))
        return emb

    def encode(self, x, emb, context, transformer_options, context_mask=None, control=None, added=None):
        """(h, skips, memory): the last features, every entry's skip in order, and the scale memory (or None).
        `added` (features at conv_in's width) is summed into conv_in's output: a ControlNet's hint."""
        patches = transformer_options.get("patches", {})
        transformer_options["block"] = ("input", 0)
        h = apply_control(self.conv_in(self.patchify(x)), control, "input")
        if added is not None:
            h = h + added
        skips = [h]
        memory_tokens = []
        for index, (module, level) in enumerate(zip(self.input_blocks, self._input_levels)):
            transformer_options["block"] = ("input", index + 1)
            if isinstance(module, Downsample):
                if self.memory is not None:
                    memory_tokens.append(self.memory.tokens(level, h))
                h = module(h)
            else:
                memory = torch.cat(memory_tokens, dim=1) if memory_tokens else None
                h = module(h, emb, context, memory, transformer_options, context_mask)
            h = apply_control(h, control, "input")
            for patch in patches.get("input_block_patch", []):
                h = patch(h, transformer_options)
            skips.append(h)
            for patch in patches.get("input_block_patch_after_skip", []):
                h = patch(h, transformer_options)
        memory = None
        if self.memory is not None:
            memory_tokens.append(self.memory.tokens(len(self.config.channel_mult) - 1, h))
            memory = torch.cat(memory_tokens, dim=1)
        return h, skips, memory


def encoder_skip_channels(config: UNetConfig) -> list[int]:
    """Channels of every skip the encoder leaves, in order: the shapes a ControlNet's residuals must take."""
    channels = [config.model_channels]
    for level, mult in enumerate(config.channel_mult):
        channels += [config.model_channels * mult] * (config.num_res_blocks + (level < len(config.channel_mult) - 1))
    return channels


class F1UNet(F1Encoder):
    def __init__(self, config: UNetConfig, operations=None, device=None, dtype=None, attention_fn=None):
        super().__init__(config, operations=operations, device=device, dtype=dtype, attention_fn=attention_fn)
        ops = resolve(operations)
        kw = self._kw
        levels = len(config.channel_mult)
        cur = self.level_channels[-1]
        skip_channels = list(self.skip_channels)

        self.middle_block = ConvFormerBlock(cur, cur, self.emb_dim, config, True, self.memory is not None,
                                            self.memory_dim, **kw, attention_fn=attention_fn)

        self.output_blocks = nn.ModuleList()
        self._output_upsample = nn.ModuleDict()
        for level in reversed(range(levels)):
            out = self.level_channels[level]
            for i in range(config.num_res_blocks + 1):
                self.output_blocks.append(self.block(cur + skip_channels.pop(), out, level))
                cur = out
                if level > 0 and i == config.num_res_blocks:
                    self._output_upsample[str(len(self.output_blocks) - 1)] = Upsample(cur, **kw)

        self.out_norm = ops.GroupNorm(_groups(cur), cur, eps=1e-6, device=device, dtype=dtype)
        self.conv_out = ops.Conv2d(cur, config.in_channels * config.patch_size ** 2, 3, padding=1, device=device,
                                   dtype=dtype)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def attention_blocks(self) -> list[tuple[str, int, int]]:
        """The (block, id, index) key of every transformer layer, as `patches_replace` takes them."""
        keys = []
        for name, blocks, first in (("input", self.input_blocks, 1), ("middle", [self.middle_block], 0),
                                    ("output", self.output_blocks, 0)):
            for index, module in enumerate(blocks, start=first):
                if getattr(module, "mixer", None) is not None:
                    keys += [(name, index, depth) for depth in range(len(module.mixer.layers))]
        return keys

    def forward(self, x, timesteps, context=None, y=None, control=None, transformer_options={},
                context_mask=None, **kwargs):
        """context_mask: optional [B, L] key mask of padded contexts: bool True on text tokens (training batches),
        or additive, 0 on tokens and NEVER on padding (ComfyUI's batches of prompts of different lengths)."""
        if context is None:
            raise ValueError("F1UNet needs `context` (the text embedding); got None")
        transformer_options = dict(transformer_options)
        transformer_options["original_shape"] = list(x.shape)
        transformer_options["transformer_index"] = 0
        patches = transformer_options.get("patches", {})
        emb = self.embed(timesteps, y, x.dtype, transformer_options)
        context = context.to(x.dtype)
        h, skips, memory = self.encode(x, emb, context, transformer_options, context_mask, control)

        transformer_options["block"] = ("middle", 0)
        h = self.middle_block(h, emb, context, memory, transformer_options, context_mask)
        h = apply_control(h, control, "middle")

        for index, module in enumerate(self.output_blocks):
            transformer_options["block"] = ("output", index)
            skip = apply_control(skips.pop(), control, "output")
            for patch in patches.get("output_block_patch", []):
                h, skip = patch(h, skip, transformer_options)
            h = module(torch.cat([h, skip], dim=1), emb, context, memory, transformer_options, context_mask)
            upsample = self._output_upsample[str(index)] if str(index) in self._output_upsample else None
            if upsample is not None:
                h = upsample(h, output_size=skips[-1].shape[-2:])
        out = self.conv_out(F.silu(self.out_norm(h)))
        return F.pixel_shuffle(out, self.config.patch_size) if self.config.patch_size > 1 else out
