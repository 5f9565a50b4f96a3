"""RoBERTa encoder with Hugging Face `RobertaModel`'s state-dict layout (post-LayerNorm blocks, GELU).

Positions start at pad_token_id + 1 and padding tokens sit at position pad_token_id, as in Hugging Face.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn as nn

from ..config import RobertaConfig
from ..ops import resolve
from .layers import check_input_ids, gelu, multihead_attention


class RobertaOutput(NamedTuple):
    last_hidden: torch.Tensor   # [B, L, H]
    pooled: torch.Tensor        # [B, H] hidden state at <s> (position 0)


class RobertaEmbeddings(nn.Module):
    def __init__(self, config: RobertaConfig, ops, device, dtype):
        super().__init__()
        width, pad = config.hidden_size, config.pad_token_id
        self.pad_token_id = pad
        self.word_embeddings = ops.Embedding(config.vocab_size, width, padding_idx=pad, device=device, dtype=dtype)
        self.position_embeddings = ops.Embedding(config.max_positions, width, padding_idx=pad,
                                                 device=device, dtype=dtype)
        self.token_type_embeddings = ops.Embedding(config.type_vocab_size, width, device=device, dtype=dtype)
        self.LayerNorm = ops.LayerNorm(width, eps=config.layer_norm_eps, device=device, dtype=dtype)

    def forward(self, input_ids):
        not_pad = (input_ids != self.pad_token_id).long()
        positions = not_pad.cumsum(dim=1) * not_pad + self.pad_token_id
        token_types = torch.zeros_like(input_ids)
        x = self.word_embeddings(input_ids) + self.token_type_embeddings(token_types)
        return self.LayerNorm(x + self.position_embeddings(positions))


class RobertaSelfAttention(nn.Module):
    def __init__(self, config: RobertaConfig, ops, device, dtype):
        super().__init__()
        width = config.hidden_size
        self.heads = config.num_heads
        self.query = ops.Linear(width, width, device=device, dtype=dtype)
        self.key = ops.Linear(width, width, device=device, dtype=dtype)
        self.value = ops.Linear(width, width, device=device, dtype=dtype)

    def forward(self, x, keep):
        return multihead_attention(self.query(x), self.key(x), self.value(x), self.heads, keep)


class RobertaResidualOutput(nn.Module):
    """dense -> add residual -> LayerNorm; Hugging Face's RobertaSelfOutput and RobertaOutput."""

    def __init__(self, in_width: int, config: RobertaConfig, ops, device, dtype):
        super().__init__()
        self.dense = ops.Linear(in_width, config.hidden_size, device=device, dtype=dtype)
        self.LayerNorm = ops.LayerNorm(config.hidden_size, eps=config.layer_norm_eps, device=device, dtype=dtype)

    def forward(self, x, residual):
        return self.LayerNorm(self.dense(x) + residual)


class RobertaAttention(nn.Module):
    def __init__(self, config: RobertaConfig, ops, device, dtype):
        super().__init__()
        self.self = RobertaSelfAttention(config, ops, device, dtype)
        self.output = RobertaResidualOutput(config.hidden_size, config, ops, device, dtype)

    def forward(self, x, keep):
        return self.output(self.self(x, keep), x)


class RobertaIntermediate(nn.Module):
    def __init__(self, config: RobertaConfig, ops, device, dtype):
        super().__init__()
        self.dense = ops.Linear(config.hidden_size, config.intermediate_size, device=device, dtype=dtype)

    def forward(self, x):
        return gelu(self.dense(x))


class RobertaLayer(nn.Module):
    def __init__(self, config: RobertaConfig, ops, device, dtype):
        super().__init__()
        self.attention = RobertaAttention(config, ops, device, dtype)
        self.intermediate = RobertaIntermediate(config, ops, device, dtype)
        self.output = RobertaResidualOutput(config.intermediate_size, config, ops, device, dtype)

    def forward(self, x, keep):
        x = self.attention(x, keep)
        return self.output(self.intermediate(x), x)


class RobertaLayers(nn.Module):
    def __init__(self, config: RobertaConfig, ops, device, dtype):
        super().__init__()
        self.layer = nn.ModuleList(RobertaLayer(config, ops, device, dtype) for _ in range(config.num_layers))


class RobertaEncoder(nn.Module):
    """`embeddings.*` + `encoder.layer.*`; forward returns a `RobertaOutput`."""

    def __init__(self, config: RobertaConfig, operations=None, device=None, dtype=None):
        super().__init__()
        if config.hidden_size % config.num_heads:
            raise ValueError(f"RobertaConfig: hidden_size {config.hidden_size} must be divisible by "
                             f"num_heads {config.num_heads}")
        ops = resolve(operations)
        self.config = config
        self.embeddings = RobertaEmbeddings(config, ops, device, dtype)
        self.encoder = RobertaLayers(config, ops, device, dtype)

    @property
    def max_length(self) -> int:
        return self.config.max_length

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> RobertaOutput:
        config = self.config
        check_input_ids(input_ids, config.vocab_size, self.max_length, "RobertaEncoder")
        if attention_mask is None:
            attention_mask = input_ids != config.pad_token_id
        elif attention_mask.shape != input_ids.shape:
            raise ValueError(f"RobertaEncoder: attention_mask shape {tuple(attention_mask.shape)} must equal "
                             f"input_ids shape {tuple(input_ids.shape)}")
        keep = attention_mask.bool()[:, None, :]
        x = self.embeddings(input_ids)
        for layer in self.encoder.layer:
            x = layer(x, keep)
        return RobertaOutput(x, x[:, 0])
