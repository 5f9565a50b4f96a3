"""Attention for the F.1 U-Net, with ComfyUI's `transformer_options` patch points.

The patch semantics follow core's BasicTransformerBlock, so attention patches written for SD-family
models (attn1/attn2 patches, middle patches, output patches, and `patches_replace` keyed by
(block, id, index)) also reach F.1's self- and text cross-attention. Cross-scale attention has the same
patch points under the name "cross_scale". `transformer_options["optimized_attention_override"]` wraps
every attention call, with core's calling convention.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..ops import resolve

# A finite "never" for additive key masks: -inf makes chunked attention kernels (core's sub-quadratic) produce NaN
# on all-masked chunks.
NEVER = -1.0e4


def pad_tokens(tensors, value: float = 0.0) -> torch.Tensor:
    """[B_i, L_i, ...] tensors -> one batch [sum B_i, max L_i, ...], each padded with `value` after its tokens."""
    length = max(t.shape[1] for t in tensors)
    padded = []
    for t in tensors:
        pad = [0, 0] * (t.ndim - 2) + [0, length - t.shape[1]]
        padded.append(F.pad(t, pad, value=value))
    return torch.cat(padded)


def grow_key_mask(mask, length: int):
    """A [B, L] or [B, Nq, L] key mask for a context a patch lengthened to `length`: the appended tokens are
    visible to every query."""
    if mask is None or mask.shape[-1] >= length:
        return mask
    return F.pad(mask, (0, length - mask.shape[-1]), value=True if mask.dtype == torch.bool else 0.0)


def key_mask_bias(mask, dtype):
    """A key mask as SDPA's attn_mask [B or 1, heads or 1, Nq or 1, L].

    [B, L] or [B, Nq, L] (one row per query) or [B, heads, Nq, L]; bool (True = attend) or additive float."""
    if mask is None:
        return None
    if mask.ndim == 2:
        mask = mask[:, None, :]
    if mask.ndim == 3:
        mask = mask[:, None]
    if mask.ndim != 4:
        raise ValueError(f"attention mask must be [B, L], [B, Nq, L] or [B, heads, Nq, L], got {list(mask.shape)}")
    return mask if mask.dtype == torch.bool else mask.to(dtype)


def attention(q, k, v, heads: int, mask=None, attn_precision=None, skip_reshape=False, skip_output_reshape=False,
              **kwargs):
    """q, k, v: [B, N, heads * dim_head] -> [B, N, heads * dim_head]. Core's signature (comfy's
    optimized_attention), so an `optimized_attention_override` can wrap it like core's own functions."""
    if skip_reshape:  # already [B, heads, N, dim_head]
        b, _, _, dim_head = q.shape
    else:
        b, _, inner = q.shape
        dim_head = inner // heads
        q, k, v = (t.reshape(b, -1, heads, dim_head).transpose(1, 2) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask_bias(mask, q.dtype))
    return out if skip_output_reshape else out.transpose(1, 2).reshape(b, -1, heads * dim_head)


class Attention(nn.Module):
    """Multi-head attention with core's projection names, so `patches_replace` functions can use them."""

    def __init__(self, query_dim, context_dim, heads, dim_head, operations=None, device=None, dtype=None,
                 attention_fn=None):
        super().__init__()
        ops = resolve(operations)
        inner = heads * dim_head
        self.heads, self.dim_head = heads, dim_head
        # the host's attention function (ComfyUI's optimized_attention), or F.1's own
        self.attention_fn = attention_fn or attention
        self.to_q = ops.Linear(query_dim, inner, bias=False, device=device, dtype=dtype)
        self.to_k = ops.Linear(context_dim, inner, bias=False, device=device, dtype=dtype)
        self.to_v = ops.Linear(context_dim, inner, bias=False, device=device, dtype=dtype)
        self.to_out = nn.Sequential(ops.Linear(inner, query_dim, device=device, dtype=dtype))

    def forward(self, x, context=None, value=None, key_mask=None, transformer_options=None):
        """key_mask: [B, L] or [B, Nq, L] (bool: True where a query may see a context token; or additive)."""
        context = x if context is None else context
        value = context if value is None else value
        out = run_attention(self.attention_fn, self.to_q(x), self.to_k(context), self.to_v(value), self.heads,
                            key_mask, transformer_options)
        return self.to_out(out)


def run_attention(fn, q, k, v, heads, mask=None, transformer_options=None):
    """Call an attention function as core's wrap_attn does: through
    transformer_options["optimized_attention_override"](fn, ...) where one is set."""
    options = transformer_options or {}
    if fn is not attention:  # the host's function (core's, wrapped by wrap_attn) applies the override itself
        bias = key_mask_bias(mask, q.dtype)
        if bias is not None and bias.dtype == torch.bool:  # core's functions read bool masks as [B, L] only
            bias = torch.zeros(bias.shape, dtype=q.dtype, device=q.device).masked_fill(~bias, torch.finfo(q.dtype).min)
        return fn(q, k, v, heads, mask=bias, transformer_options=options)
    override = options.get("optimized_attention_override")
    if override is not None:
        return override(attention, q, k, v, heads, mask=mask, transformer_options=options)
    return attention(q, k, v, heads, mask=mask)


def extra_options(transformer_options: dict, attn: "Attention") -> dict:
    """What core's BasicTransformerBlock hands to patches: transformer_options less the patches, plus head sizes."""
    extra = {k: v for k, v in transformer_options.items() if k not in ("patches", "patches_replace")}
    extra.update(n_heads=attn.heads, dim_head=attn.dim_head, attn_precision=None)
    return extra


def patched_attention(attn: Attention, kind: str, n, context, transformer_options: dict, key_mask=None):
    """Run `attn` ("attn1" self, "attn2" text cross or "cross_scale") through the patches in transformer_options."""
    patches = transformer_options.get("patches", {})
    replace = transformer_options.get("patches_replace", {}).get(kind, {})
    before, after = patches.get(f"{kind}_patch", []), patches.get(f"{kind}_output_patch", [])
    block = transformer_options.get("block")
    key = (block[0], block[1], transformer_options.get("block_index", 0)) if block is not None else None
    replacement = replace.get(key, replace.get(block))
    # built only for a patch to read: most calls have none, and it copies transformer_options
    extra = extra_options(transformer_options, attn) if before or after or replacement is not None else None

    value = context
    for patch in before:
        n, context, value = patch(n, context, value, extra)
    if before and context is not None:
        key_mask = grow_key_mask(key_mask, context.shape[1])
    if extra is not None and key_mask is not None:
        extra["context_mask"] = key_mask  # a replacement attends itself: it must hide the padding too

    if replacement is not None:
        context = n if context is None else context
        value = context if value is None else value
        n = attn.to_out(replacement(attn.to_q(n), attn.to_k(context), attn.to_v(value), extra))
    else:
        n = attn(n, context=context, value=value, key_mask=key_mask, transformer_options=transformer_options)

    for patch in after:
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
                 operations=None, device=None, dtype=None, attention_fn=None):
        super().__init__()
        ops = resolve(operations)
        kw = dict(operations=operations, device=device, dtype=dtype, attention_fn=attention_fn)
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
            layer.ff = FeedForward(channels, operations=operations, device=device, dtype=dtype)
            self.layers.append(layer)
        self.proj_out = ops.Linear(channels, channels, device=device, dtype=dtype)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, x, context, memory, transformer_options, context_mask=None):
        b, c, h, w = x.shape
        transformer_options["activations_shape"] = list(x.shape)  # as core's SpatialTransformer: h, w of this level
        patches = transformer_options.get("patches", {})
        tokens = self.proj_in(self.norm(x).flatten(2).transpose(1, 2))
        for index, layer in enumerate(self.layers):
            transformer_options["block_index"] = index
            tokens = tokens + patched_attention(layer.attn1, "attn1", layer.norm1(tokens), None, transformer_options)
            if "middle_patch" in patches:
                extra = extra_options(transformer_options, layer.attn1)
                for patch in patches["middle_patch"]:
                    tokens = patch(tokens, extra)
            tokens = tokens + patched_attention(layer.attn2, "attn2", layer.norm2(tokens), context,
                                                transformer_options, context_mask)
            if hasattr(layer, "cross_scale") and memory is not None:
                tokens = tokens + patched_attention(layer.cross_scale, "cross_scale", layer.norm_scale(tokens),
                                                    memory, transformer_options)
            tokens = tokens + layer.ff(layer.norm3(tokens))
        if "transformer_index" in transformer_options:  # core counts transformers the same way
            transformer_options["transformer_index"] += 1
        return x + self.proj_out(tokens).transpose(1, 2).reshape(b, c, h, w)


def _groups(channels: int) -> int:
    for g in (32, 16, 8, 4, 2):
        if channels % g == 0:
            return g
    return 1
