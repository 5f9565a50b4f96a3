"""CLIP text transformer with Hugging Face's state-dict layout, so `CLIPTextModelWithProjection` weights load as-is.

Pre-LayerNorm blocks with a causal mask; the pooled vector is the final hidden state at the first eos token.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn as nn

from ..config import CLIPTextConfig
from ..ops import resolve
from .layers import activation, check_input_ids, multihead_attention


class CLIPTextOutput(NamedTuple):
    last_hidden: torch.Tensor          # [B, L, H] after final_layer_norm
    penultimate_hidden: torch.Tensor   # [B, L, H] input of the last layer (Hugging Face's hidden_states[-2])
    pooled: torch.Tensor               # [B, H] last_hidden at the first eos
    projected_pooled: torch.Tensor     # [B, projection_dim]


class CLIPAttention(nn.Module):
    def __init__(self, config: CLIPTextConfig, ops, device, dtype):
        super().__init__()
        width = config.hidden_size
        self.heads = config.num_heads
        self.q_proj = ops.Linear(width, width, device=device, dtype=dtype)
        self.k_proj = ops.Linear(width, width, device=device, dtype=dtype)
        self.v_proj = ops.Linear(width, width, device=device, dtype=dtype)
        self.out_proj = ops.Linear(width, width, device=device, dtype=dtype)

    def forward(self, x, keep):
        return self.out_proj(multihead_attention(self.q_proj(x), self.k_proj(x), self.v_proj(x), self.heads, keep))


class CLIPMLP(nn.Module):
    def __init__(self, config: CLIPTextConfig, ops, device, dtype):
        super().__init__()
        self.act = activation(config.hidden_act)
        self.fc1 = ops.Linear(config.hidden_size, config.intermediate_size, device=device, dtype=dtype)
        self.fc2 = ops.Linear(config.intermediate_size, config.hidden_size, device=device, dtype=dtype)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class CLIPEncoderLayer(nn.Module):
    def __init__(self, config: CLIPTextConfig, ops, device, dtype):
        super().__init__()
        eps = config.layer_norm_eps
        self.self_attn = CLIPAttention(config, ops, device, dtype)
        self.layer_norm1 = ops.LayerNorm(config.hidden_size, eps=eps, device=device, dtype=dtype)
        self.mlp = CLIPMLP(config, ops, device, dtype)
        self.layer_norm2 = ops.LayerNorm(config.hidden_size, eps=eps, device=device, dtype=dtype)

    def forward(self, x, keep):
        x = x + self.self_attn(self.layer_norm1(x), keep)
        return x + self.mlp(self.layer_norm2(x))


class CLIPEncoder(nn.Module):
    def __init__(self, config: CLIPTextConfig, ops, device, dtype):
        super().__init__()
        self.layers = nn.ModuleList(CLIPEncoderLayer(config, ops, device, dtype) for _ in range(config.num_layers))


class CLIPEmbeddings(nn.Module):
    def __init__(self, config: CLIPTextConfig, ops, device, dtype):
        super().__init__()
        self.token_embedding = ops.Embedding(config.vocab_size, config.hidden_size, device=device, dtype=dtype)
        self.position_embedding = ops.Embedding(config.max_positions, config.hidden_size, device=device, dtype=dtype)

    def forward(self, input_ids):
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        return self.token_embedding(input_ids) + self.position_embedding(positions)


class CLIPTextTransformer(nn.Module):
    def __init__(self, config: CLIPTextConfig, ops, device, dtype):
        super().__init__()
        self.embeddings = CLIPEmbeddings(config, ops, device, dtype)
        self.encoder = CLIPEncoder(config, ops, device, dtype)
        self.final_layer_norm = ops.LayerNorm(config.hidden_size, eps=config.layer_norm_eps,
                                              device=device, dtype=dtype)


class CLIPTextTower(nn.Module):
    """`text_model.*` + `text_projection`; forward returns a `CLIPTextOutput`."""

    def __init__(self, config: CLIPTextConfig, operations=None, device=None, dtype=None):
        super().__init__()
        if config.hidden_size % config.num_heads:
            raise ValueError(f"CLIPTextConfig: hidden_size {config.hidden_size} must be divisible by "
                             f"num_heads {config.num_heads}")
        activation(config.hidden_act)  # fail at build time on an unknown activation
        ops = resolve(operations)
        self.config = config
        self.text_model = CLIPTextTransformer(config, ops, device, dtype)
        self.text_projection = ops.Linear(config.hidden_size, config.projection_dim, bias=False,
                                          device=device, dtype=dtype)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> CLIPTextOutput:
        config = self.config
        check_input_ids(input_ids, config.vocab_size, config.max_positions, "CLIPTextTower")
        eos = input_ids == config.eos_token_id
        if not bool(eos.any(dim=1).all()):
            raise ValueError(f"CLIPTextTower: every row of input_ids needs an eos token ({config.eos_token_id}); "
                             f"the pooled output is read there. Build ids with the tokenizer's chunks()")
        length = input_ids.shape[1]
        keep = torch.ones(length, length, dtype=torch.bool, device=input_ids.device).tril()[None]
        if attention_mask is not None:
            if attention_mask.shape != input_ids.shape:
                raise ValueError(f"CLIPTextTower: attention_mask shape {tuple(attention_mask.shape)} must equal "
                                 f"input_ids shape {tuple(input_ids.shape)}")
            keep = keep & attention_mask.bool()[:, None, :]

        model = self.text_model
        x = model.embeddings(input_ids)
        penultimate = x
        for layer in model.encoder.layers:
            penultimate = x
            x = layer(x, keep)
        last = model.final_layer_norm(x)
        first_eos = eos.int().argmax(dim=1)
        pooled = last[torch.arange(last.shape[0], device=last.device), first_eos]
        return CLIPTextOutput(last, penultimate, pooled, self.text_projection(pooled))
