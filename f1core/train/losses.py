"""Losses and the small auxiliary networks that only training needs (discriminators, alignment heads)."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from kornia.filters import spatial_gradient
from kornia.losses import ssim_loss

from ..data.pairs import pair_batch
from ..text.adapter import ROLES, role_summaries
from .distributed import gather_with_local_grad, world_size


# --- VAE --------------------------------------------------------------------------------------------------------
def structure_loss(reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """A download-free perceptual term: (1 - SSIM) plus L1 between image gradients at two scales, so edges and
    local contrast count more than in a plain pixel loss."""
    total = ssim_loss(reconstruction, target, window_size=5, max_val=2.0)
    for scale in (1, 2):
        rec = reconstruction if scale == 1 else F.avg_pool2d(reconstruction, scale)
        tgt = target if scale == 1 else F.avg_pool2d(target, scale)
        total = total + (spatial_gradient(rec) - spatial_gradient(tgt)).abs().mean()
    return total


class PatchDiscriminator(nn.Module):
    """A small PatchGAN: one real/fake logit per receptive-field patch."""

    def __init__(self, in_channels: int, width: int = 32, layers: int = 3):
        super().__init__()
        blocks, ch = [], in_channels
        for i in range(layers):
            out = width * 2 ** i
            blocks += [nn.Conv2d(ch, out, 4 if i < layers - 1 else 3, stride=2 if i < layers - 1 else 1, padding=1),
                       nn.GroupNorm(math.gcd(8, out), out) if i else nn.Identity(), nn.LeakyReLU(0.2)]
            ch = out
        blocks.append(nn.Conv2d(ch, 1, 3, padding=1))
        self.net = nn.Sequential(*blocks)

    def forward(self, x):
        return self.net(x)


def hinge_discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    return 0.5 * (F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean())


def hinge_generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    return -fake_logits.mean()


# --- U-Net ------------------------------------------------------------------------------------------------------
def log_normal_sigmas(normal: torch.Tensor, p_mean: float, p_std: float) -> torch.Tensor:
    """EDM's training noise levels: ln(sigma) ~ N(p_mean, p_std^2), from standard-normal draws."""
    return (p_mean + p_std * normal).exp()


def edm_loss_weight(sigma: torch.Tensor, sigma_data: float) -> torch.Tensor:
    """lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma * sigma_data)^2: unit effective weight at every sigma."""
    return (sigma ** 2 + sigma_data ** 2) / (sigma * sigma_data) ** 2


# --- text side --------------------------------------------------------------------------------------------------
class LatentImageEmbedder(nn.Module):
    """The image side of the text-image alignment loss: a few convolutions on the latent, pooled, projected."""

    def __init__(self, latent_channels: int, embed_dim: int, width: int = 64):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(latent_channels, width, 3, padding=1), nn.SiLU(),
                                 nn.Conv2d(width, width, 3, padding=1, stride=2), nn.SiLU(),
                                 nn.Conv2d(width, width, 3, padding=1), nn.SiLU())
        self.proj = nn.Linear(2 * width, embed_dim)

    def forward(self, latent):
        h = self.net(latent)
        return self.proj(torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], dim=1))


def contrastive_loss(image_embed: torch.Tensor, text_embed: torch.Tensor, keep: torch.Tensor,
                     temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE over the global batch (every rank's embeddings are the negatives). Rows whose caption
    was dropped for guidance (`keep` False) are not queries. The temperature is fixed, not learned: a learned
    one would be a parameter shared by all ranks' loss terms, breaking the per-rank gradient split."""
    image_all = F.normalize(gather_with_local_grad(image_embed), dim=-1)
    text_all = F.normalize(gather_with_local_grad(text_embed), dim=-1)
    keep_all = gather_with_local_grad(keep.float()) > 0.5
    logits = image_all @ text_all.t() / temperature
    targets = torch.arange(logits.shape[0], device=logits.device)
    per_row = 0.5 * (F.cross_entropy(logits, targets, reduction="none")
                     + F.cross_entropy(logits.t(), targets, reduction="none"))
    count = keep_all.sum().clamp_min(1)
    return (per_row * keep_all).sum() / count * world_size()


def role_contrastive_loss(anchor: torch.Tensor, positive: torch.Tensor, changed: torch.Tensor,
                          factor: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE per text role (f1core.data.pairs): anchor, positive and changed [N, roles, D] are the role summaries
    of a caption, another caption of the same spec, and a caption of the spec with one factor changed; factor [N]
    is the index of the role that factor belongs to. Per role, every anchor picks among the global batch's
    positives and changed captions: its own positive always matches, its own changed caption matches unless its
    pair changed this role's factor, where it is the hardest negative (the same scene but for that factor).
    Mean over the matches, anchors and roles; scaled for DDP as contrastive_loss."""
    anchor, positive, changed = (F.normalize(gather_with_local_grad(x), dim=-1) for x in (anchor, positive, changed))
    factor = gather_with_local_grad(factor)
    count, roles = anchor.shape[:2]
    candidates = torch.cat([positive, changed]).transpose(0, 1)                     # [roles, 2N, D]
    log_p = (anchor.transpose(0, 1) @ candidates.transpose(1, 2) / temperature).log_softmax(dim=-1)
    own = torch.eye(count, dtype=torch.bool, device=anchor.device)
    kept = factor[None, :] != torch.arange(roles, device=anchor.device)[:, None]     # [roles, N]
    matches = torch.cat([own.expand(roles, -1, -1), own & kept[..., None]], dim=-1)  # [roles, N, 2N]
    per_anchor = -(log_p * matches).sum(-1) / matches.sum(-1)
    return per_anchor.mean() * world_size()


@torch.no_grad()
def role_similarity(text, pairs) -> torch.Tensor:
    """What role_contrastive_loss moves, measured: [factors, roles] (both in ROLES order), the mean cosine
    similarity of a text encoder's role summaries for each pair's anchor and changed captions, by the factor the
    pairs changed (f1core.data.pairs). A decoupled role is low on its own factor's row, high on the others."""
    captions, factor = pair_batch(pairs)
    roles = F.normalize(role_summaries(text.encode(captions).context, text.config.adapter.role_tokens), dim=-1)
    anchor, _, changed = roles.chunk(3)
    similarity = (anchor * changed).sum(-1)
    factor = torch.tensor(factor)
    return torch.stack([similarity[factor == r].mean(0) for r in range(len(ROLES))])


def role_margins(similarity: torch.Tensor) -> torch.Tensor:
    """[factors] from role_similarity: on the pairs that changed a factor, the other roles' mean similarity minus
    the factor's own role's (above 0: its own role tells those pairs apart more than the others do)."""
    others = (similarity.sum(1) - similarity.diagonal()) / (similarity.shape[1] - 1)
    return others - similarity.diagonal()


class TokenReconstructionHead(nn.Module):
    """Reads each tower's token ids back from the fused context (one linear layer per tower), so the adapter's
    context keeps the caption's words instead of collapsing to what the diffusion loss needs first."""

    def __init__(self, context_dim: int, clip_vocab: int, roberta_vocab: int | None):
        """roberta_vocab None: the context holds CLIP tokens only (the SD-style baseline)."""
        super().__init__()
        self.clip = nn.Linear(context_dim, clip_vocab)
        self.roberta = nn.Linear(context_dim, roberta_vocab) if roberta_vocab is not None else None

    def forward(self, context, clip_ids, clip_valid, roberta_ids, roberta_valid):
        """Returns (sum of token cross-entropies, number of tokens) for this rank."""
        clip_len = clip_ids.shape[1]
        ce_clip = F.cross_entropy(self.clip(context[:, :clip_len]).flatten(0, 1), clip_ids.flatten(), reduction="none")
        total, count = (ce_clip * clip_valid.flatten()).sum(), clip_valid.sum()
        if self.roberta is not None:
            roberta_ctx = context[:, clip_len:clip_len + roberta_ids.shape[1]]
            ce_roberta = F.cross_entropy(self.roberta(roberta_ctx).flatten(0, 1), roberta_ids.flatten(),
                                         reduction="none")
            total, count = total + (ce_roberta * roberta_valid.flatten()).sum(), count + roberta_valid.sum()
        return total, count
