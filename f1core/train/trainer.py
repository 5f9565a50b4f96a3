"""The F.1 trainer: a VAE stage, then the text encoders + adapter + U-Net jointly on the frozen VAE's latents.

A run directory holds everything a later session needs to continue:
    base.safetensors   config, vocabularies and the random init every stage starts from
    vae.pt, diffusion.pt, decoder.pt  per-stage state: weights, EMA, optimizers, step, RNG, training CPU
                       seconds (torch.save, read weights_only). The optional decoder stage fine-tunes the VAE
                       decoder alone on the frozen encoder's latents, so it sharpens images without moving the U-Net's latent space.
    latents.pt         the diffusion stage's pool of encoded latents (reused while the VAE and data match)
    log.jsonl, loss.png   averaged losses per `log_every` steps and their plot
    curve.png          with `curve_every`: the judge on a fixed val subset against samples and CPU-hours (curve.py)

State is written every `checkpoint_every` steps, every `checkpoint_minutes`, at the end, and on SIGTERM/SIGINT
(the current step finishes first). All randomness of a step comes from generators seeded by (seed, step), so a
resumed run continues exactly, and N ranks under torchrun take the same steps as one process.

Each stage is a `_Stage`: its __init__ is the one place a stage starts (base and saved state read once; the
subclass's `build` makes its modules; optimisers, EMA and resume follow), and its `images`, `captions`,
`quantize_bits` and `randn` are the step's draws. Weights leave a stage only through `trainee_parts`, which maps a
trainee's (or EMA's) state dict to checkpoint parts with the loader's own `split_parts`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel

from ..checkpoint import VOCAB_KEYS, build_part, load_checkpoint, read_metadata, save_checkpoint, split_parts
from ..config import F1Config
from ..data.pairs import factor_pairs, pair_batch
from ..diffusion import F1Denoiser
from ..preview import fit_latent_rgb
from ..regions import RegionBatch
from ..text.adapter import role_summaries
from ..text.vocab import build_vocab
from . import distributed as dist_utils
from .data import global_indices, global_rand, global_randn
from .curve import CURVE_SCENES, ValCurve, plot_curve
from .ema import EMA
from .logplot import append_jsonl, plot_losses, read_jsonl
from .losses import (LatentImageEmbedder, PatchDiscriminator, TokenReconstructionHead, contrastive_loss,
                     edm_loss_weight, hinge_discriminator_loss, hinge_generator_loss, log_normal_sigmas,
                     role_contrastive_loss, structure_loss)

STAGES = ("vae", "diffusion", "decoder", "control_edges", "control_depth", "control_layout")  # control: control_stage.py
BASE_NAME = "base.safetensors"
LATENTS_NAME = "latents.pt"   # the diffusion stage's encoded pool
INIT_FROM_KEY = "f1.init_from"   # base metadata of a run started from a trained checkpoint's weights
PART_FROM_KEY = "f1.{}_from"     # base metadata of a run whose part ("vae", "text") comes from another checkpoint
VAE_FROM_KEY = PART_FROM_KEY.format("vae")
CARRIED_KEYS = ("f1.train_step", "f1.decoder_step")  # the training history such a run continues
# Where each checkpoint part sits in a trainee's state dict (and so in its EMA): the trainees' attribute names,
# named here only, so export and the stages that read another stage's weights go through `trainee_parts`.
TRAINEE_PARTS = {"unet": "denoiser.unet.", "text": "text.", "vae": "vae.", "control": "control."}


@dataclass(frozen=True)
class TrainConfig:
    stage: str
    steps: int
    batch_size: int = 16           # global, over all ranks
    lr: float = 2e-4
    warmup_steps: int = 100
    # a cooldown: the lr falls linearly from `lr` at step decay_start to 0 at decay_end (0: constant after warmup);
    # steps, not fractions of `steps`, so raising `steps` later still continues the same run
    decay_start: int = 0
    decay_end: int = 0
    grad_clip: float = 1.0
    adam_eps: float = 1e-8         # a large eps (>> gradients) turns Adam into momentum SGD, e.g. for exactness tests
    ema_decay: float = 0.999
    seed: int = 0
    checkpoint_every: int = 500
    checkpoint_minutes: float = 5.0
    # budgets: the stage saves and returns once this invocation has run `minutes` (wall clock), or once the stage's
    # training CPU-hours reach `cpu_hours` (equal-compute sweeps); 0 means no budget. Running again continues.
    minutes: float = 0.0
    cpu_hours: float = 0.0
    log_every: int = 10
    curve_every: int = 0           # samples between learning-curve points (the judge on val); 0: no curve
    curve_scenes: int = CURVE_SCENES
    adversarial_start: int = 2000  # the discriminator joins late, once reconstructions/denoisings are sensible
    # VAE stage
    kl_weight: float = 1e-6
    structure_weight: float = 0.2
    vae_adversarial_weight: float = 0.05
    quantize_prob: float = 0.5     # share of steps that decode an 8-bit fake-quantized latent
    quantize_bits: int = 8
    # diffusion stage
    p_mean: float = -1.2
    p_std: float = 1.2
    condition_dropout: float = 0.1
    contrastive_weight: float = 0.1
    contrastive_temperature: float = 0.07
    token_weight: float = 0.05
    unet_adversarial_weight: float = 0.0   # 0 switches the adversarial term on predicted clean latents off
    # learned decoupling: role_contrastive_loss on `decoupling_pairs` scene pairs per step (f1core.data.pairs),
    # at contrastive_temperature; 0 switches it off
    decoupling_weight: float = 0.0
    decoupling_pairs: int = 24
    # regional training: this share of each batch (its captioned items) denoises with every object's phrase under
    # its instance mask and the caption as the base prompt (f1core.regions.RegionBatch, the attention F1ApplyRegions
    # patches in at sampling), so the U-Net learns to draw a region's phrase inside it; 0 switches it off
    regional_share: float = 0.0
    latent_stat_images: int = 256

    def __post_init__(self):
        if self.stage not in STAGES:
            raise ValueError(f"stage: expected one of {STAGES}, got {self.stage!r}")
        for name in ("steps", "batch_size", "checkpoint_every", "log_every", "decoupling_pairs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be at least 1, got {getattr(self, name)}")
        if self.decay_end and not 0 <= self.decay_start < self.decay_end:
            raise ValueError(f"decay_start, decay_end: expected 0 <= decay_start < decay_end, got "
                             f"{self.decay_start}, {self.decay_end}")
        if not 0.0 <= self.regional_share <= 1.0:
            raise ValueError(f"regional_share: expected 0 <= share <= 1, got {self.regional_share}")
        if not 0.0 <= self.condition_dropout < 1.0:
            raise ValueError(f"condition_dropout: expected 0 <= p < 1, got {self.condition_dropout}")


# --- run directory ----------------------------------------------------------------------------------------------
def create_run(run_dir, config: F1Config, corpus: list[str], seed: int = 0, vae_from=None, text_from=None,
               unet_from=None, bridge_images: torch.Tensor | None = None) -> Path:
    """Start a run: build vocabularies over `corpus` and save the random init with them as base.safetensors.
    `vae_from`, a VAE checkpoint (`export_vae`), supplies the VAE: the diffusion stage can start at once, or
    the vae stage continues training it. `text_from`, any F.1 checkpoint with a text part of this config's
    shape, supplies the text towers and adapter with their vocabularies (pre-trained text, a sweep choice).
    `unet_from`, an F.1 checkpoint whose U-Net differs from this config's at most in its latent (in_channels,
    patch_size), supplies the U-Net's body (`transplant_unet`), bridged to this run's latent through
    `bridge_images` when there are some and a trained VAE (`vae_from`)."""
    run_dir = Path(run_dir)
    base = run_dir / BASE_NAME
    if base.exists():
        raise ValueError(f"run_dir: {run_dir} already holds a run; resume it or choose a new directory")
    extra = {"f1.description": "training run init"}
    sources = {name: _part_from(path, name, config, extra)
               for name, path in (("vae", vae_from), ("text", text_from)) if path is not None}
    if "vae" in sources:
        extra["f1.vae_step"] = sources["vae"].metadata.get("f1.vae_step", "0")   # export_vae counts on from it
    if "text" in sources:
        metadata = {k: sources["text"].metadata[k] for k in VOCAB_KEYS}
    else:
        clip_vocab = build_vocab(corpus, config.text.clip.vocab_size, style="clip")
        roberta_vocab = build_vocab(corpus, config.text.roberta.vocab_size, style="roberta")
        metadata = dict(zip(VOCAB_KEYS, (*clip_vocab, *roberta_vocab)))
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        parts = {name: build_part(name, config, metadata) for name in ("unet", "vae", "text")}
    parts.update({name: getattr(source, name) for name, source in sources.items()})
    if unet_from is not None:
        donor = load_checkpoint(unet_from, parts=("unet", "vae"))
        bridge = None
        if bridge_images is not None and "vae" in sources and donor.vae is not None:
            *bridge, r2 = fit_latent_bridge(donor.vae, parts["vae"], bridge_images, config.unet.patch_size)
            extra["f1.unet_bridge_r2"] = json.dumps([round(value, 4) for value in r2])
        transplant_unet(parts["unet"], donor.unet, bridge)
        extra[PART_FROM_KEY.format("unet")] = Path(unet_from).name
    return save_checkpoint(base, config, **parts, extra_metadata=extra)


def transplant_unet(unet, source, bridge: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
    """Copy `source`'s weights into `unet`, a U-Net of the same body on another latent: every tensor but the
    latent's own input and output convolutions. The body's layout and its reading of the text carry over, so a
    new VAE's U-Net need not learn composition again. Without a `bridge` those convolutions keep their fresh
    init; with one (`fit_latent_bridge`) they become the source's composed with the linear maps between the
    two latents, so the transplant starts near the source model instead of from a random reading of its latent."""
    theirs = dataclasses.replace(source.config, in_channels=unet.config.in_channels,
                                 patch_size=unet.config.patch_size)
    if theirs != unet.config:
        raise ValueError(f"--unet-from: its U-Net ({source.config}) differs from this config's ({unet.config}) in "
                         "more than the latent (in_channels, patch_size); use a checkpoint of the same U-Net body")
    mine, source_state = unet.state_dict(), source.state_dict()
    mine.update({key: value for key, value in source_state.items() if mine[key].shape == value.shape})
    if bridge is not None:
        to_source, from_source = bridge
        mine["conv_in.weight"] = torch.einsum("oikl,ij->ojkl", source_state["conv_in.weight"], to_source)
        mine["conv_out.weight"] = torch.einsum("ji,iokl->jokl", from_source, source_state["conv_out.weight"])
        mine["conv_out.bias"] = from_source @ source_state["conv_out.bias"]
    unet.load_state_dict(mine)


@torch.no_grad()
def fit_latent_bridge(source_vae, vae, images: torch.Tensor, patch_size: int):
    """Least-squares linear maps between two VAEs' latents of the same `images`, cell by cell of the source's
    grid (`vae`'s latent read as patch_size² patches, as a patched U-Net reads it): (to_source [c_source, c],
    from_source [c, c_source], r2 of each map on these images)."""
    source = source_vae.encode(images)
    latent = torch.nn.functional.pixel_unshuffle(vae.encode(images), patch_size)
    if source.shape[-2:] != latent.shape[-2:]:
        raise ValueError(f"--unet-from: its latent grid {tuple(source.shape[-2:])} and this run's "
                         f"{tuple(latent.shape[-2:])} (in {patch_size}x{patch_size} patches) differ; no bridge")
    def rows(z):  # one row of channels per grid cell
        return z.permute(0, 2, 3, 1).reshape(-1, z.shape[1]).double()

    source, latent = rows(source), rows(latent)

    def fit(inputs, targets):
        weights = torch.linalg.lstsq(inputs, targets).solution
        r2 = 1 - (inputs @ weights - targets).pow(2).sum() / (targets - targets.mean(0)).pow(2).sum()
        return weights.T.float(), float(r2)

    (to_source, r2_in), (from_source, r2_out) = fit(latent, source), fit(source, latent)
    return to_source, from_source, (r2_in, r2_out)


def _part_from(path, name: str, config: F1Config, extra: dict):
    """The checkpoint at `path`, loaded for its `name` part, which must match the run's config; its file name
    goes into the run's metadata (f1.vae_from / f1.text_from)."""
    source = load_checkpoint(path, parts=(name,))
    if getattr(source, name) is None or getattr(source.config, name) != getattr(config, name):
        label = {"vae": "VAE", "text": "text encoder"}[name]
        raise ValueError(f"--{name}-from: {Path(path).name} holds no {label} of this config's shape "
                         f"({getattr(config, name)}); use a checkpoint of the same preset")
    extra[PART_FROM_KEY.format(name)] = Path(path).name
    return source


def create_run_from_checkpoint(run_dir, checkpoint_path) -> Path:
    """Start a run from a trained F.1 checkpoint instead of a random init: to fine-tune it on other data, or to
    continue a shipped model whose run directory is gone. Its config, vocabularies, weights and latent
    statistics become the run's base, and its VAE counts as trained, so the diffusion stage can start at once."""
    run_dir, checkpoint_path = Path(run_dir), Path(checkpoint_path)
    if (run_dir / BASE_NAME).exists():
        raise ValueError(f"run_dir: {run_dir} already holds a run; resume it or choose a new directory")
    ckpt = load_checkpoint(checkpoint_path)
    missing = [name for name in ("unet", "vae", "text") if getattr(ckpt, name) is None]
    if missing:
        raise ValueError(f"--from: {checkpoint_path.name} lacks the part(s) {missing}; start from a full F.1 "
                         "checkpoint (unet, vae and text), as `python -m f1core.train export` writes")
    return save_checkpoint(run_dir / BASE_NAME, ckpt.config, unet=ckpt.unet, vae=ckpt.vae, text=ckpt.text,
                           latent_rgb=ckpt.latent_rgb,
                           extra_metadata={"f1.description": f"training run init from {checkpoint_path.name}",
                                           INIT_FROM_KEY: checkpoint_path.name,
                                           **{k: ckpt.metadata[k] for k in CARRIED_KEYS if k in ckpt.metadata}})


def _load_base(run_dir: Path):
    base = run_dir / BASE_NAME
    if not base.is_file():
        raise ValueError(f"run_dir: {run_dir} has no {BASE_NAME}; create the run first (create_run or the CLI)")
    return load_checkpoint(base)


def _state_path(run_dir: Path, stage: str) -> Path:
    return run_dir / f"{stage}.pt"


def _save_state(path: Path, state: dict):
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_state(run_dir, stage: str) -> dict | None:
    path = _state_path(Path(run_dir), stage)
    return torch.load(path, map_location="cpu", weights_only=True) if path.is_file() else None


def trainee_parts(state: dict) -> dict[str, dict]:
    """A trainee's (or its EMA's) state dict as {checkpoint part: that part's state dict}; training-only
    modules (embedders, heads) belong to no part and are left out."""
    return split_parts(state, TRAINEE_PARTS)


# --- trainees: the modules DDP wraps, each forward computing its stage's losses ----------------------------------
class VAETrainee(nn.Module):
    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, images, fine_noise, coarse_noise, quantize_bits: int | None):
        # quantize_bits: the shipped pipeline may store latents quantized; the decoder learns to read them
        return self.vae(images, (fine_noise, coarse_noise), quantize_bits)


class DecoderTrainee(nn.Module):
    """The VAE decoder alone, reading the frozen encoder's posterior means (what the U-Net learns to produce)."""

    def __init__(self, vae):
        super().__init__()
        self.vae = vae
        vae.encoder.requires_grad_(False)

    def forward(self, images, quantize_bits: int | None):
        return self.vae(images, quantize_bits=quantize_bits)[0]   # the frozen encoder builds no graph


class DiffusionTrainee(nn.Module):
    def __init__(self, config: F1Config, unet, text, embed_dim: int = 128):
        super().__init__()
        self.denoiser = F1Denoiser(unet, config.schedule)  # state keys denoiser.unet.*, the U-Net once
        self.text = text
        self.sigma_data = config.schedule.sigma_data
        self.image_embedder = LatentImageEmbedder(config.unet.in_channels, embed_dim)
        self.text_projection = nn.Linear(config.text.adapter.pooled_dim, embed_dim)
        roberta_vocab = config.text.roberta.vocab_size if config.text.fusion == "adapter" else None
        self.token_head = TokenReconstructionHead(config.text.adapter.context_dim, config.text.clip.vocab_size,
                                                  roberta_vocab)

    def forward(self, x0, tokens, keep, sigma, noise, temperature: float, pair_tokens=None, pair_factor=None,
                region_tokens=None, region_index=None, region_masks=None):
        """pair_tokens: the factor pairs' anchor, positive and changed captions, in three equal blocks, with
        pair_factor [pairs] each pair's changed role; None: no decoupling term. region_tokens: the batch's region
        phrases, region_index [B, R] the phrase of item b's region r (-1: none) under region_masks [B, R, H, W];
        None: no regions."""
        enc = self.text.encode_ids(tokens)
        context, context_mask, options = enc.context, enc.mask, {}
        if region_tokens is not None:
            phrases = self.text.encode_ids(region_tokens)
            regions = RegionBatch.gather(region_masks, phrases.context, phrases.mask, region_index)
            context, context_mask = regions.extend(context, context_mask)
            options = regions.options(self.denoiser.unet)
        s = sigma.reshape(-1, 1, 1, 1)
        denoised = self.denoiser(x0 + s * noise, sigma, context=context, y=enc.pooled, context_mask=context_mask,
                                 transformer_options=options)
        per_sample = (edm_loss_weight(s, self.sigma_data) * (denoised - x0).square()).mean(dim=(1, 2, 3))
        diffusion = dist_utils.global_mean(per_sample.sum(), x0.new_tensor(float(x0.shape[0])))
        contrastive = contrastive_loss(self.image_embedder(x0), self.text_projection(enc.pooled), keep, temperature)
        clip_ids = tokens.clip_ids.flatten(1)
        clip_valid = (tokens.clip_windows[..., None] & (tokens.clip_ids != self.text.clip_tokenizer.pad_id)).flatten(1)
        roberta_valid = (tokens.roberta_attention & tokens.roberta_windows[..., None]).flatten(1)
        token_sum, token_count = self.token_head(enc.context, clip_ids, clip_valid.float(),
                                                 tokens.roberta_ids.flatten(1), roberta_valid.float())
        token = dist_utils.global_mean(token_sum, token_count)
        out = {"diffusion": diffusion, "contrastive": contrastive, "token": token, "denoised": denoised}
        if pair_tokens is not None:
            roles = role_summaries(self.text.encode_ids(pair_tokens).context, self.text.config.adapter.role_tokens)
            out["decoupling"] = role_contrastive_loss(*roles.chunk(3), pair_factor, temperature)
        return out


# --- the shared loop ----------------------------------------------------------------------------------------------
class _StopRequest:
    """SIGTERM/SIGINT set a flag; the loop finishes its step, saves and returns."""

    def __init__(self):
        self.requested = False
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.requested = True

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def _seeded(seed: int):
    """Initialise training-only modules from the run's seed, leaving the caller's global RNG untouched."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        yield


def _wrap(module: nn.Module, device) -> nn.Module:
    if not dist_utils.is_distributed():
        return module
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids)


def lr_factor(config: TrainConfig, step: int) -> float:
    warmup = min(1.0, (step + 1) / max(1, config.warmup_steps))
    if not config.decay_end:
        return warmup
    return warmup * min(1.0, max(0.0, (config.decay_end - step) / (config.decay_end - config.decay_start)))


class _Stage:
    """Per-stage state and one optimisation step. Initialisation happens here, once: the run's base and the
    stage's saved state are read, the subclass's `build` makes its modules from them, and the optimisers, EMA
    and resume follow. Subclasses define `build`, `step` and `score`."""
    name: str

    def __init__(self, run_dir: Path, dataset, config: TrainConfig, device):
        self.run_dir, self.dataset, self.config, self.device = run_dir, dataset, config, device
        if config.batch_size % dist_utils.world_size():
            raise ValueError(f"batch_size: {config.batch_size} must divide by the number of processes "
                             f"({dist_utils.world_size()})")
        self.weights = dataset.sample_weights()
        state = load_state(self.run_dir, self.name)
        trainee, discriminator, self.extra = self.build(_load_base(run_dir), state)
        self.trainee = trainee.to(self.device)
        self.discriminator = discriminator.to(self.device) if discriminator is not None else None
        trainable = [p for p in self.trainee.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(trainable, lr=self.config.lr, betas=(0.9, 0.99),
                                           eps=self.config.adam_eps, weight_decay=0.0)
        self.disc_optimizer = None
        if self.discriminator is not None:
            self.disc_optimizer = torch.optim.AdamW(self.discriminator.parameters(), lr=self.config.lr,
                                                    betas=(0.5, 0.9), eps=self.config.adam_eps, weight_decay=0.0)
        self.ema = EMA(self.trainee, self.config.ema_decay)
        self.start = 0
        self.cpu_seconds = 0.0   # training time of rank 0's process, scoring excluded
        if state is not None:
            self.trainee.load_state_dict(state["trainee"])
            self.optimizer.load_state_dict(state["optimizer"])
            if self.discriminator is not None:
                self.discriminator.load_state_dict(state["discriminator"])
                self.disc_optimizer.load_state_dict(state["disc_optimizer"])
            self.ema.load_state_dict(state["ema"])
            torch.set_rng_state(state["torch_rng"])
            self.start = int(state["step"])
            self.cpu_seconds = float(state.get("cpu_seconds", 0.0))
        self.trainee_ddp = _wrap(self.trainee, self.device)
        self.discriminator_ddp = _wrap(self.discriminator, self.device) if self.discriminator is not None else None

    def build(self, base, state: dict | None) -> tuple[nn.Module, nn.Module | None, dict]:
        """(trainee, discriminator or None, extra entries saved with the state) from the run's base checkpoint
        and the stage's saved state (None on a first start)."""
        raise NotImplementedError

    def cpu_hours(self) -> float:
        """Training CPU-hours of the stage over all its runs, every rank counted (ranks do equal work)."""
        return self.cpu_seconds * dist_utils.world_size() / 3600

    def save(self, step: int):
        """Rank 0 writes; every rank waits for it, so no rank reads a state file (e.g. the next stage's start)
        before it is complete."""
        if dist_utils.rank() == 0:
            adversary = {} if self.discriminator is None else {
                "discriminator": self.discriminator.state_dict(), "disc_optimizer": self.disc_optimizer.state_dict()}
            _save_state(_state_path(self.run_dir, self.name), {
                "step": step, "trainee": self.trainee.state_dict(), "optimizer": self.optimizer.state_dict(),
                "ema": self.ema.state_dict(), "torch_rng": torch.get_rng_state(), "cpu_seconds": self.cpu_seconds,
                "train_config": json.dumps(dataclasses.asdict(self.config)), **adversary, **self.extra})
        dist_utils.barrier()

    def local_indices(self, step: int) -> torch.Tensor:
        return dist_utils.local_slice(global_indices(self.weights, self.config.batch_size, self.config.seed, step))

    def images(self, step: int) -> torch.Tensor:
        """This rank's share of the step's images."""
        return torch.stack([self.dataset.image(int(i)) for i in self.local_indices(step)]).to(self.device)

    def captions(self, step: int, indices: torch.Tensor) -> tuple[torch.Tensor, list[str]]:
        """(keep, captions) for this rank's share: a `condition_dropout` share is dropped to "" (for
        guidance), the rest are caption variants numbered by their place in the global batch."""
        batch = self.config.batch_size
        offset = dist_utils.rank() * (batch // dist_utils.world_size())
        keep = dist_utils.local_slice(global_rand(batch, self.config.seed, step, "dropout")
                                      >= self.config.condition_dropout)
        return keep, [self.dataset.caption(int(i), step * batch + offset + n) if keep[n] else ""
                      for n, i in enumerate(indices)]

    def quantize_bits(self, step: int) -> int | None:
        """The step decodes an n-bit quantized latent (a `quantize_prob` share of steps), else None."""
        draw = float(global_rand(1, self.config.seed, step, "quantize"))
        return self.config.quantize_bits if draw < self.config.quantize_prob else None

    def randn(self, step: int, shape, purpose: str) -> torch.Tensor:
        noise = global_randn(self.config.batch_size, shape, self.config.seed, step, purpose)
        return dist_utils.local_slice(noise).to(self.device)

    def optimise(self, step: int, loss: torch.Tensor):
        for group in self.optimizer.param_groups:
            group["lr"] = self.config.lr * lr_factor(self.config, step)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.trainee.parameters(), self.config.grad_clip)
        self.optimizer.step()
        self.ema.update(self.trainee, step)

    def adversarial_active(self, weight: float, step: int) -> bool:
        return weight > 0 and step >= self.config.adversarial_start

    def generator_term(self, fake: torch.Tensor) -> torch.Tensor:
        """The generator's hinge loss through a frozen, unsynchronised discriminator (its grads are not wanted)."""
        self.discriminator.requires_grad_(False)
        try:
            return hinge_generator_loss(self.discriminator(fake))
        finally:
            self.discriminator.requires_grad_(True)

    def discriminator_step(self, real: torch.Tensor, fake: torch.Tensor) -> float:
        logits = self.discriminator_ddp(torch.cat([real, fake.detach()]))
        real_logits, fake_logits = logits.chunk(2)
        loss = hinge_discriminator_loss(real_logits, fake_logits)
        self.disc_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.disc_optimizer.step()
        return float(loss.detach())


class _VAEScored(_Stage):
    """Stages whose trainee holds the VAE: their curve scores its reconstructions."""

    def score(self, curve: ValCurve) -> dict:
        return curve.score_vae(self.ema.averaged(self.trainee).vae)


class VAEStage(_VAEScored):
    name = "vae"

    def build(self, base, state):
        self.vae_config = base.config.vae
        with _seeded(self.config.seed):
            discriminator = PatchDiscriminator(self.vae_config.image_channels)
        return VAETrainee(base.vae.train()), discriminator, {}

    def step(self, step: int) -> dict:
        cfg, vc = self.config, self.vae_config
        images = self.images(step)
        h, w = images.shape[-2] // vc.downscale, images.shape[-1] // vc.downscale
        fine_noise = self.randn(step, (vc.fine_channels, h, w), "fine")
        coarse_noise = self.randn(step, (vc.coarse_channels, h // 2, w // 2), "coarse")
        recon, kl = self.trainee_ddp(images, fine_noise, coarse_noise, self.quantize_bits(step))
        loss, logs = _reconstruction_loss(recon, images, cfg)
        loss = loss + cfg.kl_weight * kl
        adversarial = self.adversarial_active(cfg.vae_adversarial_weight, step)
        if adversarial:
            generator = self.generator_term(recon)
            loss = loss + cfg.vae_adversarial_weight * generator
            logs["generator_loss"] = float(generator.detach())
        self.optimise(step, loss)
        if adversarial:
            logs["discriminator_loss"] = self.discriminator_step(images, recon)
        return {"loss": float(loss.detach()), "kl_loss": float(kl.detach()), **logs}


def _reconstruction_loss(recon: torch.Tensor, images: torch.Tensor, cfg: TrainConfig) -> tuple[torch.Tensor, dict]:
    """L1 + MSE + the light structure (perceptual) term, and their logs with the batch's PSNR."""
    l1, mse = (recon - images).abs().mean(), (recon - images).square().mean()
    structure = structure_loss(recon, images)
    psnr = 10 * torch.log10(4.0 / (recon.detach().clamp(-1, 1) - images).square().mean().clamp_min(1e-10))
    return l1 + mse + cfg.structure_weight * structure, {
        "l1_loss": float(l1.detach()), "structure_loss": float(structure.detach()), "psnr": float(psnr)}


def _trained_vae(run_dir: Path, base):
    """(vae, from_checkpoint): the vae stage's EMA weights, else, in a run started from a checkpoint, that
    checkpoint's own VAE."""
    vae_state = load_state(run_dir, "vae")
    if vae_state is None and INIT_FROM_KEY in base.metadata:
        return base.vae, True
    if vae_state is None and VAE_FROM_KEY in base.metadata:
        return base.vae, False
    if vae_state is None:
        raise ValueError(f"run_dir: {run_dir} has no trained VAE (vae.pt); run the 'vae' stage first")
    vae = base.vae
    vae.load_state_dict(trainee_parts(vae_state["ema"])["vae"])
    return vae, False


class DecoderStage(_VAEScored):
    """Fine-tunes the decoder on the frozen encoder's latents, without the adversarial term (it cost PSNR)."""
    name = "decoder"

    def build(self, base, state):
        return DecoderTrainee(_trained_vae(self.run_dir, base)[0].train()), None, {}

    def step(self, step: int) -> dict:
        cfg = self.config
        images = self.images(step)
        recon = self.trainee_ddp(images, self.quantize_bits(step))
        loss, logs = _reconstruction_loss(recon, images, cfg)
        self.optimise(step, loss)
        return {"loss": float(loss.detach()), **logs}


class DiffusionStage(_Stage):
    name = "diffusion"

    def build(self, base, state):
        self.f1_config = base.config
        if self.config.decoupling_weight and base.config.text.fusion != "adapter":
            raise ValueError("decoupling_weight: the text roles it trains are the adapter's; this run's text "
                             f"fusion is {base.config.text.fusion!r}, so leave decoupling_weight at 0")
        if self.config.decoupling_weight and self.config.decoupling_pairs % dist_utils.world_size():
            raise ValueError(f"decoupling_pairs: {self.config.decoupling_pairs} must divide by the number of "
                             f"processes ({dist_utils.world_size()})")
        vae = base.vae
        if state is not None:
            vae.load_state_dict(state["vae"])
            latent_rgb = json.loads(state["latent_rgb"])
        else:
            vae, from_checkpoint = _trained_vae(self.run_dir, base)
            count = min(len(self.dataset), self.config.latent_stat_images)
            images = torch.stack([self.dataset.image(i) for i in range(count)])
            if not from_checkpoint:  # a checkpoint's U-Net was trained on its VAE's latent statistics: keep them
                vae.fit_latent_stats(images)
            latent_rgb = base.latent_rgb if from_checkpoint and base.latent_rgb else fit_latent_rgb(vae, images)
        self.vae = vae.eval().requires_grad_(False).to(self.device)
        self.latents = self._cached_latents()
        with _seeded(self.config.seed):
            trainee = DiffusionTrainee(base.config, base.unet.train(), base.text.train())
            discriminator = PatchDiscriminator(base.config.unet.in_channels, width=64, layers=2)
        return trainee, discriminator, {"vae": {k: v.cpu() for k, v in self.vae.state_dict().items()},
                                        "latent_rgb": json.dumps(latent_rgb)}

    def _cached_latents(self) -> torch.Tensor:
        """Posterior-mean latents of every dataset image, encoded once by the frozen VAE and kept in
        latents.pt (float16), so a resumed run, or a sweep run sharing the file, does not encode again."""
        path = self.run_dir / LATENTS_NAME
        key = _latents_key(self.vae, self.dataset)
        if path.is_file():
            cached = torch.load(path, map_location="cpu", weights_only=True)
            if cached["key"] == key:
                return cached["latents"].float()
        latents = self._encode_all().half()   # a fresh pool trains on the same values as a cached one
        if dist_utils.rank() == 0:
            _save_state(path, {"key": key, "latents": latents})
        dist_utils.barrier()
        return latents.float()

    @torch.no_grad()
    def _encode_all(self, chunk: int = 64) -> torch.Tensor:
        out = []
        for start in range(0, len(self.dataset), chunk):
            images = torch.stack([self.dataset.image(i) for i in range(start, min(len(self.dataset), start + chunk))])
            out.append(self.vae.encode(images.to(self.device)).cpu())
        return torch.cat(out)

    def step(self, step: int) -> dict:
        cfg = self.config
        indices = self.local_indices(step)
        keep, captions = self.captions(step, indices)
        tokens = self.trainee.text.tokenize(captions).to(self.device)
        x0 = self.latents[indices].to(self.device)
        sigma = log_normal_sigmas(self.randn(step, (), "sigma"), cfg.p_mean, cfg.p_std)
        noise = self.randn(step, x0.shape[1:], "noise")
        out = self.trainee_ddp(x0, tokens, keep.to(self.device), sigma, noise, cfg.contrastive_temperature,
                               *self.factor_pairs(step), **self.regions(indices, keep))
        loss = out["diffusion"] + cfg.contrastive_weight * out["contrastive"] + cfg.token_weight * out["token"]
        logs = {}
        if "decoupling" in out:
            loss = loss + cfg.decoupling_weight * out["decoupling"]
            logs["decoupling_loss"] = float(out["decoupling"].detach()) / dist_utils.world_size()
        adversarial = self.adversarial_active(cfg.unet_adversarial_weight, step)
        if adversarial:
            generator = self.generator_term(out["denoised"])
            loss = loss + cfg.unet_adversarial_weight * generator
            logs["generator_loss"] = float(generator.detach())
        self.optimise(step, loss)
        if adversarial:
            logs["discriminator_loss"] = self.discriminator_step(x0, out["denoised"])
        return {"loss": float(loss.detach()), "diffusion_loss": float(out["diffusion"].detach()),
                "contrastive_loss": float(out["contrastive"].detach()) / dist_utils.world_size(),
                "token_loss": float(out["token"].detach()), **logs}

    def regions(self, indices: torch.Tensor, keep: torch.Tensor) -> dict:
        """The regional share's items of this rank's batch (their first items; a caption-dropped one stays
        unconditional): DiffusionTrainee's region arguments, or none."""
        count = round(self.config.regional_share * len(indices))
        items = [n for n in range(count) if keep[n]]
        if not items:
            return {}
        if not hasattr(self.dataset, "regions"):
            raise ValueError(f"regional_share: the dataset {type(self.dataset).__name__} has no object masks; "
                             "train with --data scenes or leave regional_share at 0")
        drawn = {n: self.dataset.regions(int(indices[n])) for n in items}
        most = max(len(phrases) for phrases, _ in drawn.values())
        side = next(iter(drawn.values()))[1].shape[-2:]
        index = torch.full((len(indices), most), -1, dtype=torch.long)
        masks = torch.zeros(len(indices), most, *side)
        phrases = []
        for n, (item_phrases, item_masks) in drawn.items():
            index[n, :len(item_phrases)] = torch.arange(len(phrases), len(phrases) + len(item_phrases))
            masks[n, :len(item_phrases)] = item_masks
            phrases += item_phrases
        return {"region_tokens": self.trainee.text.tokenize(phrases).to(self.device),
                "region_index": index.to(self.device), "region_masks": masks.to(self.device)}

    def factor_pairs(self, step: int) -> tuple:
        """(tokens of this rank's share of the step's factor pairs, their changed roles), or () when off."""
        if not self.config.decoupling_weight:
            return ()
        share = self.config.decoupling_pairs // dist_utils.world_size()
        start = dist_utils.rank() * share
        captions, factor = pair_batch(factor_pairs(range(start, start + share), self.config.seed, step))
        return self.trainee.text.tokenize(captions).to(self.device), torch.tensor(factor, device=self.device)

    def score(self, curve: ValCurve) -> dict:
        averaged = self.ema.averaged(self.trainee)
        return curve.score_model(self.f1_config, averaged.denoiser.unet, self.vae, averaged.text)


def _latents_key(vae, dataset) -> str:
    """Identifies a latent pool: the VAE's weights and statistics, and the dataset's items (by caption)."""
    digest = hashlib.sha256()
    for name, value in sorted(vae.state_dict().items()):
        digest.update(name.encode())
        digest.update(value.detach().cpu().float().numpy().tobytes())
    for index in range(len(dataset)):
        digest.update(dataset.caption(index, 0).encode())
    return digest.hexdigest()


def train(run_dir, dataset, config: TrainConfig, *, device=None, progress: bool = True,
          stop_at: int | None = None) -> dict:
    """Run (or resume) `config.stage` up to `config.steps` (or `stop_at`, to interrupt a run on purpose).
    Returns {"step": last completed step, "losses": the last logged record or {}}."""
    run_dir = Path(run_dir)
    device = torch.device(device) if device is not None else torch.device("cpu")
    stage_cls = {"vae": VAEStage, "diffusion": DiffusionStage, "decoder": DecoderStage}.get(config.stage)
    if stage_cls is None:  # a ControlNet stage (control_stage.py imports this module, so it is imported here)
        from .control_stage import ControlStage as stage_cls
    stage = stage_cls(run_dir, dataset, config, device)
    end = config.steps if stop_at is None else min(config.steps, stop_at)
    if config.cpu_hours and stage.cpu_hours() >= config.cpu_hours:
        end = stage.start   # the budget was spent by an earlier invocation
    is_main = dist_utils.rank() == 0
    log_path, plot_path = run_dir / "log.jsonl", run_dir / "loss.png"
    resolution = F1Config.from_json(read_metadata(run_dir / BASE_NAME)["f1.config"]).resolution
    curve = ValCurve(resolution, config.curve_scenes) if config.curve_every and is_main else None
    pending: dict[str, list[float]] = {}
    last_record: dict = {}
    started = last_save = window_start = time.monotonic()
    bar = None
    if progress and is_main:
        from tqdm import tqdm
        bar = tqdm(total=config.steps, initial=stage.start, desc=f"train {config.stage}", dynamic_ncols=True)
    step = stage.start
    with _StopRequest() as stop:
        while step < end:
            cpu_start = time.process_time()
            values = stage.step(step)
            stage.cpu_seconds += time.process_time() - cpu_start
            step += 1
            for key, value in values.items():
                pending.setdefault(key, []).append(value)
            if step % config.log_every == 0 or step == end:
                elapsed = max(time.monotonic() - window_start, 1e-9)
                count = len(pending["loss"])
                last_record = {"stage": config.stage, "step": step, "time": time.time(),
                               "images_per_s": count * config.batch_size / elapsed,
                               **{k: sum(v) / len(v) for k, v in pending.items()}}
                if is_main:
                    append_jsonl(log_path, last_record)
                pending, window_start = {}, time.monotonic()
            if config.curve_every and (step * config.batch_size // config.curve_every
                                       > (step - 1) * config.batch_size // config.curve_every):
                scoring_start = time.monotonic()
                if curve is not None:
                    record = {"stage": config.stage, "step": step, "time": time.time(), "curve": True,
                              "samples": step * config.batch_size,
                              "cpu_hours": stage.cpu_hours(),
                              **stage.score(curve)}
                    append_jsonl(log_path, record)
                    plot_curve(read_jsonl(log_path), run_dir / "curve.png", title=str(run_dir.name))
                dist_utils.barrier()
                window_start += time.monotonic() - scoring_start  # scoring time is not training throughput
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{values['loss']:.4f}")
            time_due = time.monotonic() - last_save > 60 * config.checkpoint_minutes
            over_budget = ((config.minutes and time.monotonic() - started > 60 * config.minutes)
                           or (config.cpu_hours and stage.cpu_hours() >= config.cpu_hours))
            stopping = dist_utils.any_rank(stop.requested or bool(over_budget), device)
            if stopping or step % config.checkpoint_every == 0 or step == end or dist_utils.any_rank(time_due, device):
                stage.save(step)
                if is_main:
                    plot_losses(read_jsonl(log_path), plot_path)
                last_save = time.monotonic()
            if stopping:
                break
    if bar is not None:
        bar.close()
    return {"step": step, "losses": last_record}


# --- export -------------------------------------------------------------------------------------------------------
def export_vae(run_dir, out_path) -> Path:
    """The vae stage's EMA VAE alone, as an F.1 checkpoint with only the vae part: progress that outlives the
    run directory, and a start for new runs (`create_run(vae_from=...)`)."""
    run_dir = Path(run_dir)
    state = load_state(run_dir, "vae")
    if state is None:
        raise ValueError(f"run_dir: {run_dir} has no vae.pt; train the 'vae' stage before exporting it")
    base = _load_base(run_dir)
    vae, _ = _trained_vae(run_dir, base)
    steps = int(base.metadata.get("f1.vae_step", 0)) + int(state["step"])
    return save_checkpoint(out_path, base.config, vae=vae,
                           extra_metadata={"f1.description": f"{base.config.name} VAE, {steps} steps (EMA weights)",
                                           "f1.vae_step": str(steps)})


def export(run_dir, out_path, description: str | None = None, dtype: torch.dtype | None = None) -> Path:
    """Write the diffusion stage's EMA weights (U-Net and text) with its VAE and preview factors as one
    F.1 checkpoint, its weights stored in `dtype` (float32 if None); a trained decoder stage replaces the VAE's
    decoder with its EMA weights. A run started from a checkpoint exports that checkpoint's weights where it has
    not trained the diffusion stage (a decoder tuned for a shipped model)."""
    run_dir = Path(run_dir)
    state = load_state(run_dir, "diffusion")
    base_metadata = read_metadata(run_dir / BASE_NAME)
    if state is None and INIT_FROM_KEY not in base_metadata:
        raise ValueError(f"run_dir: {run_dir} has no diffusion.pt; train the 'diffusion' stage before exporting")
    config = F1Config.from_json(base_metadata["f1.config"])
    if state is None:
        base = _load_base(run_dir)
        parts = {name: getattr(base, name) for name in ("unet", "text", "vae")}
        latent_rgb, steps_here = base.latent_rgb, 0
    else:
        ema = trainee_parts(state["ema"])
        parts = {name: build_part(name, config, base_metadata) for name in ("unet", "text", "vae")}
        for name in ("unet", "text"):
            parts[name].load_state_dict(ema[name])
        parts["vae"].load_state_dict(state["vae"])
        latent_rgb, steps_here = json.loads(state["latent_rgb"]), int(state["step"])
    # a run started from a checkpoint continues its step count and says where it started
    step = int(base_metadata.get("f1.train_step", 0)) + steps_here
    origin = f", from {base_metadata[INIT_FROM_KEY]}" if INIT_FROM_KEY in base_metadata else ""
    text = description or f"{config.name}, trained {step} diffusion steps{origin} (EMA weights)"
    metadata = {"f1.description": text, "f1.train_step": str(step)}
    if "f1.decoder_step" in base_metadata:
        metadata["f1.decoder_step"] = base_metadata["f1.decoder_step"]
    decoder_state = load_state(run_dir, "decoder")
    if decoder_state is not None:
        parts["vae"].load_state_dict(_decoder_tuned(parts["vae"], decoder_state, run_dir))
        metadata["f1.decoder_step"] = str(int(base_metadata.get("f1.decoder_step", 0)) + int(decoder_state["step"]))
    return save_checkpoint(out_path, config, **parts, latent_rgb=latent_rgb, extra_metadata=metadata, dtype=dtype)


def _decoder_tuned(vae, decoder_state: dict, run_dir: Path) -> dict:
    """`vae`'s state with the decoder stage's EMA parameters in place: the parameters that stage trained are the
    ones its EMA holds; the frozen rest (the encoder) must be the diffusion stage's, and the buffers (latent
    statistics) stay the diffusion stage's, which fitted them."""
    tuned, raw = (trainee_parts(decoder_state[key])["vae"] for key in ("ema", "trainee"))
    out = vae.state_dict()
    for key, _ in vae.named_parameters():
        if key in tuned:
            out[key] = tuned[key]
        elif not torch.equal(raw[key].to(out[key].dtype), out[key]):
            raise ValueError(f"run_dir: {run_dir}/decoder.pt was tuned on another encoder than the diffusion "
                             f"stage's; rerun the decoder stage")
    return out
