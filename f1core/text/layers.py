"""Pieces shared by the text towers and the fusion adapter: attention, activations, input checks."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange


def multihead_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int,
                        keep: torch.Tensor | None = None) -> torch.Tensor:
    """Scaled dot-product attention on [B, L, C] projections split into `heads`.

    `keep` is a bool mask broadcastable to [B, Lq, Lk], True where a query may attend a key. Masked logits get the
    dtype's minimum (as Hugging Face does) rather than -inf, so a fully masked row stays finite.
    """
    q, k, v = (rearrange(t, "b l (h d) -> b h l d", h=heads) for t in (q, k, v))
    bias = None
    if keep is not None:
        bias = torch.zeros(keep.shape, dtype=q.dtype, device=q.device)
        bias = bias.masked_fill(~keep, torch.finfo(q.dtype).min).unsqueeze(1)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    return rearrange(out, "b h l d -> b l (h d)")


def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(1.702 * x)


def gelu(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x)


ACTIVATIONS = {"quick_gelu": quick_gelu, "gelu": gelu}


def activation(name: str):
    if name not in ACTIVATIONS:
        raise ValueError(f"hidden_act must be one of {sorted(ACTIVATIONS)}, got {name!r}")
    return ACTIVATIONS[name]


def check_input_ids(input_ids: torch.Tensor, vocab_size: int, max_length: int, tower: str) -> None:
    """Catch ids a tower cannot embed with a clear message (an out-of-range id is an opaque device error)."""
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2 or input_ids.dtype not in (
            torch.int32, torch.int64):
        raise ValueError(f"{tower}: input_ids must be an integer tensor [batch, length], got "
                         f"{getattr(input_ids, 'dtype', type(input_ids).__name__)} "
                         f"{tuple(getattr(input_ids, 'shape', ()))}")
    if input_ids.shape[1] > max_length:
        raise ValueError(f"{tower}: input_ids has length {input_ids.shape[1]} but the tower takes at most "
                         f"{max_length}; split long prompts with the tokenizer's chunks()")
    if input_ids.numel() and (int(input_ids.min()) < 0 or int(input_ids.max()) >= vocab_size):
        raise ValueError(f"{tower}: input_ids must lie in [0, {vocab_size}), got range "
                         f"[{int(input_ids.min())}, {int(input_ids.max())}]; the tokenizer's vocab does not "
                         f"match the model config")
