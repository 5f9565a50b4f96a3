"""Fuses the CLIP and RoBERTa streams into one U-Net context, with per-prompt encoder weights and role tokens.

A gate MLP on both pooled vectors gives softmax weights (clip, roberta) per prompt that scale each projected
stream. Three roles (style, entity, relation) each own `role_tokens` learned queries that cross-attend over the
fused sequence once; their outputs are appended to the context so the U-Net can read decoupled summaries.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn as nn

from ..config import TextConfig
from ..ops import resolve
from .layers import multihead_attention

ROLES = ("style", "entity", "relation")
ROLE_HEAD_DIM = 64


def role_summaries(context: torch.Tensor, role_tokens: int) -> torch.Tensor:
    """[B, len(ROLES), D]: each role's tokens averaged, from a context that ends with them (FusionAdapter's)."""
    roles = context[:, context.shape[1] - len(ROLES) * role_tokens:]
    return roles.unflatten(1, (len(ROLES), role_tokens)).mean(dim=2)


class FusedContext(NamedTuple):
    context: torch.Tensor   # [B, Lc + Lr + 3 * role_tokens, context_dim]
    mask: torch.Tensor      # [B, same length] bool, True where the U-Net should attend
    pooled: torch.Tensor    # [B, pooled_dim]
    weights: torch.Tensor   # [B, 2] softmax weights of (clip, roberta)


class StreamProjection(nn.Module):
    """LayerNorm then Linear: brings a tower's hidden states to a common scale and width."""

    def __init__(self, in_dim: int, out_dim: int, ops, device, dtype):
        super().__init__()
        self.norm = ops.LayerNorm(in_dim, device=device, dtype=dtype)
        self.proj = ops.Linear(in_dim, out_dim, device=device, dtype=dtype)

    def forward(self, x):
        return self.proj(self.norm(x))


class RoleQueries(nn.Module):
    """Learned queries per role, one pre-norm cross-attention over the fused sequence (residual on the queries)."""

    def __init__(self, count: int, width: int, ops, device, dtype):
        super().__init__()
        self.heads = width // ROLE_HEAD_DIM if width % ROLE_HEAD_DIM == 0 else 1
        # `count` queries per role, in ROLES order (role_summaries reads them so)
        self.queries = nn.Parameter(torch.randn(len(ROLES) * count, width, device=device, dtype=dtype) * 0.02)
        self.norm_queries = ops.LayerNorm(width, device=device, dtype=dtype)
        self.norm_context = ops.LayerNorm(width, device=device, dtype=dtype)
        self.to_q = ops.Linear(width, width, device=device, dtype=dtype)
        self.to_k = ops.Linear(width, width, device=device, dtype=dtype)
        self.to_v = ops.Linear(width, width, device=device, dtype=dtype)
        self.to_out = ops.Linear(width, width, device=device, dtype=dtype)

    def forward(self, fused, mask):
        queries = self.queries.to(device=fused.device, dtype=fused.dtype).expand(fused.shape[0], -1, -1)
        context = self.norm_context(fused)
        attended = multihead_attention(self.to_q(self.norm_queries(queries)), self.to_k(context),
                                       self.to_v(context), self.heads, mask[:, None, :])
        return queries + self.to_out(attended)


class FusionAdapter(nn.Module):
    def __init__(self, config: TextConfig, operations=None, device=None, dtype=None):
        super().__init__()
        ops = resolve(operations)
        adapter = config.adapter
        if adapter.role_tokens < 1:
            raise ValueError(f"AdapterConfig: role_tokens must be at least 1, got {adapter.role_tokens}")
        clip_width, roberta_width = config.clip.hidden_size, config.roberta.hidden_size
        clip_pooled_width = config.clip.projection_dim
        self.clip_stream = StreamProjection(clip_width, adapter.context_dim, ops, device, dtype)
        self.roberta_stream = StreamProjection(roberta_width, adapter.context_dim, ops, device, dtype)
        self.clip_pooled = StreamProjection(clip_pooled_width, adapter.pooled_dim, ops, device, dtype)
        self.roberta_pooled = StreamProjection(roberta_width, adapter.pooled_dim, ops, device, dtype)
        self.gate_in = ops.Linear(clip_pooled_width + roberta_width, adapter.pooled_dim, device=device, dtype=dtype)
        self.gate_out = ops.Linear(adapter.pooled_dim, 2, device=device, dtype=dtype)
        self.gate_norm_clip = ops.LayerNorm(clip_pooled_width, device=device, dtype=dtype)
        self.gate_norm_roberta = ops.LayerNorm(roberta_width, device=device, dtype=dtype)
        self.roles = RoleQueries(adapter.role_tokens, adapter.context_dim, ops, device, dtype)

    def forward(self, clip_hidden, clip_mask, clip_pooled, roberta_hidden, roberta_mask, roberta_pooled):
        """clip_hidden [B, Lc, Hc] with bool clip_mask [B, Lc]; clip_pooled [B, projection_dim];
        roberta_hidden [B, Lr, Hr] with roberta_mask [B, Lr]; roberta_pooled [B, Hr]."""
        gate_input = torch.cat([self.gate_norm_clip(clip_pooled), self.gate_norm_roberta(roberta_pooled)], dim=-1)
        weights = self.gate_out(nn.functional.silu(self.gate_in(gate_input))).float().softmax(dim=-1)
        weights = weights.to(clip_hidden.dtype)
        w_clip, w_roberta = weights[:, 0, None, None], weights[:, 1, None, None]
        fused = torch.cat([w_clip * self.clip_stream(clip_hidden), w_roberta * self.roberta_stream(roberta_hidden)],
                          dim=1)
        fused_mask = torch.cat([clip_mask, roberta_mask], dim=1).bool()
        roles = self.roles(fused, fused_mask)
        context = torch.cat([fused, roles], dim=1)
        mask = torch.cat([fused_mask, fused_mask.new_ones(roles.shape[:2])], dim=1)
        pooled = w_clip[:, 0] * self.clip_pooled(clip_pooled) + w_roberta[:, 0] * self.roberta_pooled(roberta_pooled)
        return FusedContext(context, mask, pooled, weights)
