"""Attention for the F.1 U-Net, with ComfyUI's `transformer_options` patch points.

The patch semantics follow core's BasicTransformerBlock, so attention patches written for SD-family
models (attn1/attn2 patches, output patches, and `patches_replace` keyed by (block, id, index)) also
reach F.1's self- and text cross-attention.
"""
import torch.nn as nn
import torch.nn.functional as F

from ..ops import resolve


def attention(q, k, v, heads: int, mask=None):
    """q, k, v: [B, N, heads * dim_head] -> [B, N, heads * dim_head]."""
    b, _, inner = q.shape
    q, k, v = (t.reshape(b, -1, heads, inner // heads).transpose(1, 2) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return out.transpose(1, 2).reshape(b, -1, inner)


class Attention(nn.Module):
    """Multi-head attention with core's projection names, so `patches_replace` functions can use them."""

    def __init__(self, query_dim, context_dim, heads, dim_head, operations=None, device=None, dtype=None):
        super().__init__()
        ops = resolve(operations)
        inner = heads * dim_head
        self.heads, self.dim_head = heads, dim_head
        self.to_q = ops.Linear(query_dim, inner, bias=False, device=device, dtype=dtype)
        self.to_k = ops.Linear(context_dim, inner, bias=False, device=device, dtype=dtype)
        self.to_v = ops.Linear(context_dim, inner, bias=False, device=device, dtype=dtype)
        self.to_out = nn.Sequential(ops.Linear(inner, query_dim, device=device, dtype=dtype))

    def forward(self, x, context=None, value=None, key_mask=None):
        """key_mask: [B, L] bool, True where a context token is real (padding is ignored)."""
        context = x if context is None else context
        value = context if value is None else value
        mask = None if key_mask is None else key_mask[:, None, None, :]
        out = attention(self.to_q(x), self.to_k(context), self.to_v(value), self.heads, mask)
        return self.to_out(out)


def patched_attention(attn: Attention, kind: str, n, context, transformer_options: dict, key_mask=None):
    """Run `attn` ("attn1" self or "attn2" cross) through the patches in transformer_options."""
    patches = transformer_options.get("patches", {})
    replace = transformer_options.get("patches_replace", {}).get(kind, {})
    extra = {k: v for k, v in transformer_options.items() if k not in ("patches", "patches_replace")}
    extra.update(n_heads=attn.heads, dim_head=attn.dim_head, attn_precision=None)

    value = context
    for patch in patches.get(f"{kind}_patch", []):
        n, context, value = patch(n, context, value, extra)

    block = transformer_options.get("block")
    key = (block[0], block[1], transformer_options.get("block_index", 0)) if block is not None else None
    replacement = replace.get(key, replace.get(block))
    if replacement is not None:
        context = n if context is None else context
        value = context if value is None else value
        n = attn.to_out(replacement(attn.to_q(n), attn.to_k(context), attn.to_v(value), extra))
    else:
        n = attn(n, context=context, value=value, key_mask=key_mask)

    for patch in patches.get(f"{kind}_output_patch", []):
        n = patch(n, extra)
    return n


class FeedForward(nn.Module):
    """GEGLU feed-forward, as in SD's transformer blocks."""

    def __init__(self, dim, mult=4, operations=None, device=None, dtype=None):
        super().__init__()
        ops = resolve(operations)
        self.proj_in = ops.Linear(dim, dim * mult * 2, device=device, dtype=dtype)
        self.proj_out = ops.Linear(dim * mult, dim, device=device, dtype=dtype)

    def forward(self, x):
        h, gate = self.proj_in(x).chunk(2, dim=-1)
        return self.proj_out(h * F.gelu(gate))


class TransformerMixer(nn.Module):
    """The transformer half of a ConvFormer block: self-attention, text cross-attention,
    optional cross-scale attention over tokens pooled from the other resolution levels, and a GEGLU MLP."""

    def __init__(self, channels, heads, dim_head, context_dim, depth, memory_dim=None,
                 operations=None, device=None, dtype=None):
        super().__init__()
        ops = resolve(operations)
        kw = dict(operations=operations, device=device, dtype=dtype)
        self.norm = ops.GroupNorm(_groups(channels), channels, eps=1e-6, device=device, dtype=dtype)
        self.proj_in = ops.Linear(channels, channels, device=device, dtype=dtype)
        self.layers = nn.ModuleList()
        for _ in range(depth):
            layer = nn.Module()
            layer.norm1 = ops.LayerNorm(channels, device=device, dtype=dtype)
            layer.attn1 = Attention(channels, channels, heads, dim_head, **kw)
            layer.norm2 = ops.LayerNorm(channels, device=device, dtype=dtype)
            layer.attn2 = Attention(channels, context_dim, heads, dim_head, **kw)
            if memory_dim is not None:
                layer.norm_scale = ops.LayerNorm(channels, device=device, dtype=dtype)
                layer.cross_scale = Attention(channels, memory_dim, heads, dim_head, **kw)
            layer.norm3 = ops.LayerNorm(channels, device=device, dtype=dtype)
            layer.ff = FeedForward(channels, **kw)
            self.layers.append(layer)
        self.proj_out = ops.Linear(channels, channels, device=device, dtype=dtype)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, x, context, memory, transformer_options, context_mask=None):
        b, c, h, w = x.shape
        tokens = self.proj_in(self.norm(x).flatten(2).transpose(1, 2))
        for index, layer in enumerate(self.layers):
            transformer_options["block_index"] = index
            tokens = tokens + patched_attention(layer.attn1, "attn1", layer.norm1(tokens), None, transformer_options)
            tokens = tokens + patched_attention(layer.attn2, "attn2", layer.norm2(tokens), context,
                                                transformer_options, context_mask)
            if hasattr(layer, "cross_scale") and memory is not None:
                tokens = tokens + layer.cross_scale(layer.norm_scale(tokens), context=memory)
            tokens = tokens + layer.ff(layer.norm3(tokens))
        return x + self.proj_out(tokens).transpose(1, 2).reshape(b, c, h, w)


def _groups(channels: int) -> int:
    for g in (32, 16, 8, 4, 2):
        if channels % g == 0:
            return g
    return 1
