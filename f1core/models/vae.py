"""The F.1 VAE: a hierarchical autoencoder with a coarse global latent at /16 and a fine detail latent at /8.

Both levels travel as one tensor [B, latent_channels, H/8, W/8] (the coarse level packed 2x2 into channels with
pixel_shuffle), normalised per channel to zero mean and unit variance, as the schedule's sigma_data = 1 assumes.
Self-attention runs only at /16, on the coarse path, so decoding 1024² costs convolution memory, not attention memory.

Output range: the decoder has no tanh. `forward` (training) returns the raw reconstruction so gradients are not cut;
`decode` and `decode_tiled` clamp to [-1, 1], the image range callers display and save.

`forward` is the one training pass (posterior, KL, sampling with given noise, optional fake quantization); the
trainer calls it rather than repeating it.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import VAEConfig
from ..ops import resolve
from ..quantize import fake_quantize
from ..tiling import tiled_apply
from .attention import _groups

LOGVAR_RANGE = (-30.0, 20.0)  # keeps exp(logvar) finite in the KL while the encoder is still untrained


def _norm_act_conv(ops, in_ch: int, out_ch: int, **dd) -> nn.Sequential:
    return nn.Sequential(ops.GroupNorm(_groups(in_ch), in_ch, eps=1e-6, **dd), nn.SiLU(),
                         ops.Conv2d(in_ch, out_ch, 3, padding=1, **dd))


class ResBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, ops, **dd):
        super().__init__()
        self.body = nn.Sequential(_norm_act_conv(ops, in_ch, out_ch, **dd), _norm_act_conv(ops, out_ch, out_ch, **dd))
        self.skip = ops.Conv2d(in_ch, out_ch, 1, **dd) if in_ch != out_ch else nn.Identity()

    def forward(self, x):
        return self.skip(x) + self.body(x)


class SelfAttention(nn.Module):
    """Single-head attention over every position; only ever placed at /16."""

    def __init__(self, channels: int, ops, **dd):
        super().__init__()
        self.norm = ops.GroupNorm(_groups(channels), channels, eps=1e-6, **dd)
        self.qkv = ops.Linear(channels, 3 * channels, **dd)
        self.proj = ops.Linear(channels, channels, **dd)

    def forward(self, x):
        b, c, h, w = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2)
        q, k, v = self.qkv(tokens).unsqueeze(1).chunk(3, dim=-1)
        out = F.scaled_dot_product_attention(q, k, v).squeeze(1)
        return x + self.proj(out).transpose(1, 2).reshape(b, c, h, w)


class Downsample(nn.Module):
    def __init__(self, channels: int, ops, **dd):
        super().__init__()
        self.conv = ops.Conv2d(channels, channels, 3, stride=2, padding=1, **dd)

    def forward(self, x):
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, channels: int, ops, **dd):
        super().__init__()
        self.conv = ops.Conv2d(channels, channels, 3, padding=1, **dd)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def _bottom(ch: int, ops, **dd) -> list[nn.Module]:
    return [ResBlock(ch, ch, ops, **dd), SelfAttention(ch, ops, **dd), ResBlock(ch, ch, ops, **dd)]


class Encoder(nn.Module):
    """Image -> (fine mean|logvar at /8, coarse mean|logvar at /16)."""

    def __init__(self, cfg: VAEConfig, ops, **dd):
        super().__init__()
        widths = [cfg.base_channels * m for m in cfg.channel_mult]
        layers, ch = [ops.Conv2d(cfg.image_channels, widths[0], 3, padding=1, **dd)], widths[0]
        for level, width in enumerate(widths):
            for _ in range(cfg.num_res_blocks):
                layers.append(ResBlock(ch, width, ops, **dd))
                ch = width
            if level < len(widths) - 1:
                layers.append(Downsample(ch, ops, **dd))
        layers.append(ResBlock(ch, ch, ops, **dd))
        self.trunk = nn.Sequential(*layers)
        self.fine_head = _norm_act_conv(ops, ch, 2 * cfg.fine_channels, **dd)
        self.coarse = nn.Sequential(Downsample(ch, ops, **dd), *_bottom(ch, ops, **dd),
                                    _norm_act_conv(ops, ch, 2 * cfg.coarse_channels, **dd))

    def forward(self, image):
        h = self.trunk(image)
        return self.fine_head(h), self.coarse(h)


class Decoder(nn.Module):
    """(fine at /8, coarse at /16) -> image: the coarse level is decoded, upsampled and fused with the fine one."""

    def __init__(self, cfg: VAEConfig, ops, **dd):
        super().__init__()
        widths = [cfg.base_channels * m for m in cfg.channel_mult]
        ch = widths[-1]
        self.coarse = nn.Sequential(ops.Conv2d(cfg.coarse_channels, ch, 3, padding=1, **dd),
                                    *_bottom(ch, ops, **dd), Upsample(ch, ops, **dd))
        self.fine_in = ops.Conv2d(cfg.fine_channels, ch, 3, padding=1, **dd)
        self.fuse = ops.Conv2d(2 * ch, ch, 3, padding=1, **dd)
        layers = [ResBlock(ch, ch, ops, **dd)]
        for level in reversed(range(len(widths))):
            for _ in range(cfg.num_res_blocks):
                layers.append(ResBlock(ch, widths[level], ops, **dd))
                ch = widths[level]
            if level > 0:
                layers.append(Upsample(ch, ops, **dd))
        layers.append(_norm_act_conv(ops, ch, cfg.image_channels, **dd))
        self.body = nn.Sequential(*layers)

    def forward(self, fine, coarse):
        return self.body(self.fuse(torch.cat([self.fine_in(fine), self.coarse(coarse)], dim=1)))


def _sample(mean, logvar, noise):
    return mean + (0.5 * logvar).exp() * noise


def _kl_mean(mean, logvar):
    return 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar).mean()


def _nearest_multiple(n: int, m: int) -> int:
    return max(m, (n + m // 2) // m * m)  # ties round up


class F1VAE(nn.Module):
    def __init__(self, config: VAEConfig, operations=None, device=None, dtype=None):
        super().__init__()
        if config.coarse_channels % 4:
            raise ValueError(f"VAEConfig.coarse_channels={config.coarse_channels} must be a multiple of 4 "
                             f"(the /16 level is packed 2x2 into channels at /8)")
        ops, dd = resolve(operations), dict(device=device, dtype=dtype)
        self.config = config
        self.size_multiple = 2 * config.downscale  # image sides must reach the coarse level evenly
        self.encoder = Encoder(config, ops, **dd)
        self.decoder = Decoder(config, ops, **dd)
        self.register_buffer("latent_mean", torch.zeros(config.latent_channels, **dd))
        self.register_buffer("latent_std", torch.ones(config.latent_channels, **dd))

    # --- latent layout -------------------------------------------------------------------------------------------
    def pack(self, fine: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        if fine.shape[-2:] != tuple(2 * s for s in coarse.shape[-2:]):
            raise ValueError(f"fine latent {tuple(fine.shape)} must be twice the coarse latent "
                             f"{tuple(coarse.shape)} in height and width")
        return torch.cat([fine, F.pixel_shuffle(coarse, 2)], dim=1)

    def unpack(self, latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fine, coarse = latent.split([self.config.fine_channels, self.config.coarse_channels // 4], dim=1)
        return fine, F.pixel_unshuffle(coarse, 2)

    def _stat(self, buffer, like):
        return buffer.to(like.dtype).reshape(1, -1, 1, 1)

    # --- encode ---------------------------------------------------------------------------------------------------
    def _posterior(self, image):
        """((mean, logvar) at /8, (mean, logvar) at /16), logvar clamped to LOGVAR_RANGE."""
        self._check_image(image)
        return tuple((mean, logvar.clamp(*LOGVAR_RANGE)) for mean, logvar in
                     (level.chunk(2, dim=1) for level in self.encoder(image)))

    def encode(self, image: torch.Tensor, sample: bool = False, generator: torch.Generator | None = None):
        """Image in [-1, 1] -> normalised latent; the posterior mean unless `sample`."""
        (fine, fine_logvar), (coarse, coarse_logvar) = self._posterior(image)
        if sample:
            fine, coarse = (_sample(mean, logvar, torch.randn(mean.shape, generator=generator, device=mean.device,
                                                               dtype=mean.dtype))
                            for mean, logvar in ((fine, fine_logvar), (coarse, coarse_logvar)))
        latent = self.pack(fine, coarse)
        return (latent - self._stat(self.latent_mean, latent)) / self._stat(self.latent_std, latent)

    def encode_tiled(self, image: torch.Tensor, tile: int = 512, overlap: int = 64) -> torch.Tensor:
        self._check_image(image)
        return tiled_apply(self.encode, image, tile, overlap, scale=1 / self.config.downscale,
                           align=self.size_multiple)

    @torch.no_grad()
    def fit_latent_stats(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Set latent_mean/latent_std from the posterior means of `images` so `encode` gives ~N(0, 1) latents."""
        (fine, _), (coarse, _) = self._posterior(images)
        raw = self.pack(fine, coarse).float()
        mean, std = raw.mean(dim=(0, 2, 3)), raw.std(dim=(0, 2, 3)).clamp_min(1e-6)  # floor: a dead channel
        self.latent_mean.copy_(mean)
        self.latent_std.copy_(std)
        return mean, std

    # --- decode ---------------------------------------------------------------------------------------------------
    def _decode_unclamped(self, latent, bf16: bool = False):
        self._check_latent(latent)
        raw = latent * self._stat(self.latent_std, latent) + self._stat(self.latent_mean, latent)
        if not bf16:
            return self.decoder(*self.unpack(raw))
        # oneDNN runs bf16 convolutions fastest on channels-last tensors; in the default layout bf16 gains little
        with torch.autocast(raw.device.type, dtype=torch.bfloat16):
            out = self.decoder(*(t.contiguous(memory_format=torch.channels_last) for t in self.unpack(raw)))
        return out.to(latent.dtype, memory_format=torch.contiguous_format)

    def decode(self, latent: torch.Tensor, bf16: bool = False) -> torch.Tensor:
        """Normalised latent -> image clamped to [-1, 1]. bf16: decode under bfloat16 autocast (faster where the
        hardware has bf16 arithmetic; benchmarks/vae_decode.py measures the cost in PSNR)."""
        return self._decode_unclamped(latent, bf16).clamp(-1.0, 1.0)

    def decode_tiled(self, latent: torch.Tensor, tile: int = 64, overlap: int = 8, bf16: bool = False) -> torch.Tensor:
        self._check_latent(latent)
        out = tiled_apply(lambda part: self._decode_unclamped(part, bf16), latent, tile, overlap,
                          scale=self.config.downscale, align=2)
        return out.clamp(-1.0, 1.0)

    def forward(self, image: torch.Tensor, noise: tuple[torch.Tensor, torch.Tensor] | None = None,
                quantize_bits: int | None = None):
        """Training pass on raw (unnormalised) latents -> (unclamped reconstruction, KL).

        KL: the mean per latent element of each level, summed over the two levels. noise: standard normal
        (fine, coarse) draws shaped like the two levels, to sample the posterior with (the trainer seeds them);
        None decodes the posterior means. quantize_bits: fake-quantize the packed latent per 4x4 tile, so the
        decoder learns to read the quantized latents the pipeline may store (the gradient passes straight)."""
        (fine, fine_logvar), (coarse, coarse_logvar) = self._posterior(image)
        kl = _kl_mean(fine, fine_logvar) + _kl_mean(coarse, coarse_logvar)
        if noise is not None:
            fine, coarse = _sample(fine, fine_logvar, noise[0]), _sample(coarse, coarse_logvar, noise[1])
        if quantize_bits is not None:
            fine, coarse = self.unpack(fake_quantize(self.pack(fine, coarse), quantize_bits, "tile", 4))
        return self.decoder(fine, coarse), kl

    # --- input checks ---------------------------------------------------------------------------------------------
    def _check_image(self, image):
        if image.ndim != 4 or image.shape[1] != self.config.image_channels:
            raise ValueError(f"image must be [B, {self.config.image_channels}, H, W] in [-1, 1]; "
                             f"got shape {tuple(image.shape)}")
        h, w, m = image.shape[2], image.shape[3], self.size_multiple
        if h % m or w % m:
            raise ValueError(f"image size {h}x{w} (HxW) must be a multiple of {m} (the coarse /{m} latent); "
                             f"resize or crop to the nearest valid size "
                             f"{_nearest_multiple(h, m)}x{_nearest_multiple(w, m)}")

    def _check_latent(self, latent):
        if latent.ndim != 4 or latent.shape[1] != self.config.latent_channels:
            raise ValueError(f"latent must be [B, {self.config.latent_channels}, H/{self.config.downscale}, "
                             f"W/{self.config.downscale}]; got shape {tuple(latent.shape)}")
        h, w = latent.shape[2], latent.shape[3]
        if h % 2 or w % 2:
            raise ValueError(f"latent size {h}x{w} must be even (the coarse level is packed 2x2); "
                             f"nearest valid size is {_nearest_multiple(h, 2)}x{_nearest_multiple(w, 2)}")
