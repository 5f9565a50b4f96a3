"""F.1's text encoder: CLIP and RoBERTa towers plus the fusion adapter, from prompts to U-Net conditioning.

Long prompts: each tower splits the prompt into windows (CLIP: max_positions = 77 ids, i.e. 75 tokens; RoBERTa:
its full input length, max_positions - 2 capped at 512), encodes every window and concatenates them along the
sequence. Within a batch, a prompt with fewer windows than the longest repeats its own windows cyclically (never
another prompt's, never an empty one) and the repeats are marked False in `TextEncoding.mask`; pooled vectors are
the mean over the prompt's own windows. With the mask applied, a prompt's conditioning does not depend on what
else is in the batch; without it, the extra keys are copies of the prompt's own tokens.

Masking convention: CLIP positions follow Stable Diffusion (causal tower, no padding mask; every position of a
real window, padding included, is valid context). RoBERTa is bidirectional, so its padding is masked in the tower
and marked False in `mask`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from ..config import TextConfig
from ..interrupt import check_stop
from ..limits import check_prompt_tokens
from .adapter import FusionAdapter
from .clip import CLIPTextTower
from .roberta import RobertaEncoder
from .tokenizer import BPETokenizer, CLIPTokenizer, RobertaTokenizer

ROBERTA_WINDOW_CAP = 512


@dataclass
class TokenBatch:
    """Windows of a batch of prompts, padded to the batch's largest window count per tower."""
    clip_ids: torch.Tensor            # [B, Kc, Lc] long
    clip_windows: torch.Tensor        # [B, Kc] bool, False for repeated windows
    roberta_ids: torch.Tensor         # [B, Kr, Lr] long
    roberta_attention: torch.Tensor   # [B, Kr, Lr] bool, True on bos, tokens and eos
    roberta_windows: torch.Tensor     # [B, Kr] bool

    def to(self, device) -> "TokenBatch":
        return TokenBatch(*(getattr(self, name).to(device) for name in self.__dataclass_fields__))


@dataclass
class TextEncoding:
    context: torch.Tensor   # [B, L, context_dim]
    mask: torch.Tensor      # [B, L] bool, True where the U-Net should attend
    pooled: torch.Tensor    # [B, pooled_dim]
    weights: torch.Tensor   # [B, 2] softmax weights of (clip, roberta) per prompt


def _windows(tokenizer: BPETokenizer, prompts: list[str], window: int, max_tokens: int | None = None):
    """ids [B, K, window], attention [B, K, window], real-window flags [B, K]; short prompts repeat their windows.
    A prompt of more than `max_tokens` tokens is refused (PromptTooLong)."""
    per_prompt = [tokenizer.chunks(prompt, window) for prompt in prompts]
    if max_tokens is not None:
        for chunks in per_prompt:  # every window holds bos and eos besides its tokens
            check_prompt_tokens(sum(chunks.lengths) - 2 * len(chunks.lengths), max_tokens,
                                type(tokenizer).__name__.removesuffix("Tokenizer"))
    count = max(len(chunks.ids) for chunks in per_prompt)
    ids, attention, real = [], [], []
    for chunks in per_prompt:
        own = len(chunks.ids)
        order = [i % own for i in range(count)]
        ids.append([chunks.ids[i] for i in order])
        attention.append([chunks.attention_mask[i] for i in order])
        real.append([i < own for i in range(count)])
    return torch.tensor(ids), torch.tensor(attention, dtype=torch.bool), torch.tensor(real)


def tokenize_prompts(prompts: list[str], clip_tokenizer: CLIPTokenizer, roberta_tokenizer: RobertaTokenizer,
                     clip_window: int, roberta_window: int, max_tokens: int | None = None) -> TokenBatch:
    """CPU-side tokenization, usable in a data loader; feed the result to `F1TextEncoder.encode_ids`.
    With `max_tokens`, a prompt longer than that (in either tower's tokens) raises PromptTooLong."""
    if isinstance(prompts, str) or not isinstance(prompts, (list, tuple)) or not prompts:
        raise ValueError("prompts must be a non-empty list of str (wrap a single prompt in a list)")
    bad = [type(p).__name__ for p in prompts if not isinstance(p, str)]
    if bad:
        raise ValueError(f"prompts must all be str, found {bad[:3]}")
    clip_ids, _, clip_windows = _windows(clip_tokenizer, list(prompts), clip_window, max_tokens)
    roberta_ids, roberta_attention, roberta_windows = _windows(roberta_tokenizer, list(prompts), roberta_window,
                                                               max_tokens)
    return TokenBatch(clip_ids, clip_windows, roberta_ids, roberta_attention, roberta_windows)


def _mean_over_windows(pooled: torch.Tensor, windows: torch.Tensor) -> torch.Tensor:
    """pooled [B*K, H] -> [B, H], averaged over each prompt's own windows."""
    batch, count = windows.shape
    weights = windows.to(pooled.dtype)[..., None]
    return (pooled.view(batch, count, -1) * weights).sum(dim=1) / weights.sum(dim=1)


class F1TextEncoder(nn.Module):
    """Submodules `clip`, `roberta`, `adapter` (state-dict prefixes clip., roberta., adapter.); with
    `config.fusion == "clip"` only `clip` (RoBERTa is still tokenized, so batches keep one layout, but not encoded)."""

    def __init__(self, config: TextConfig, clip_tokenizer: CLIPTokenizer, roberta_tokenizer: RobertaTokenizer,
                 operations=None, device=None, dtype=None):
        super().__init__()
        _check_tokenizer(clip_tokenizer, CLIPTokenizer, "clip_tokenizer", config.clip)
        _check_tokenizer(roberta_tokenizer, RobertaTokenizer, "roberta_tokenizer", config.roberta)
        self.config = config
        self.clip_tokenizer = clip_tokenizer
        self.roberta_tokenizer = roberta_tokenizer
        self.clip = CLIPTextTower(config.clip, operations, device, dtype)
        self.roberta = self.adapter = None
        if config.fusion == "adapter":
            self.roberta = RobertaEncoder(config.roberta, operations, device, dtype)
            self.adapter = FusionAdapter(config, operations, device, dtype)

    @property
    def clip_window(self) -> int:
        return self.config.clip.max_positions

    @property
    def roberta_window(self) -> int:
        return min(self.config.roberta.max_length, ROBERTA_WINDOW_CAP)

    def tokenize(self, prompts: list[str], max_tokens: int | None = None) -> TokenBatch:
        return tokenize_prompts(prompts, self.clip_tokenizer, self.roberta_tokenizer,
                                self.clip_window, self.roberta_window, max_tokens)

    def encode(self, prompts: list[str], max_tokens: int | None = None) -> TextEncoding:
        device = next(self.parameters()).device
        return self.encode_ids(self.tokenize(prompts, max_tokens).to(device))

    def encode_ids(self, tokens: TokenBatch) -> TextEncoding:
        batch, clip_count, clip_length = tokens.clip_ids.shape
        _, roberta_count, roberta_length = tokens.roberta_ids.shape
        clip_out = _per_window(self.clip, tokens.clip_ids)
        # The penultimate CLIP layer (as SD2/SDXL use) keeps more token detail than the final, contrastive one.
        clip_hidden = clip_out.penultimate_hidden.reshape(batch, clip_count * clip_length, -1)
        clip_mask = tokens.clip_windows[..., None].expand(-1, -1, clip_length).reshape(batch, -1)
        clip_pooled = _mean_over_windows(clip_out.projected_pooled, tokens.clip_windows)
        if self.adapter is None:
            weights = clip_pooled.new_tensor([1.0, 0.0]).expand(batch, 2)
            return TextEncoding(clip_hidden, clip_mask, clip_pooled, weights)
        roberta_out = _per_window(self.roberta, tokens.roberta_ids, tokens.roberta_attention)
        roberta_hidden = roberta_out.last_hidden.reshape(batch, roberta_count * roberta_length, -1)
        roberta_mask = (tokens.roberta_attention & tokens.roberta_windows[..., None]).reshape(batch, -1)
        fused = self.adapter(clip_hidden, clip_mask, clip_pooled, roberta_hidden, roberta_mask,
                             _mean_over_windows(roberta_out.pooled, tokens.roberta_windows))
        return TextEncoding(fused.context, fused.mask, fused.pooled, fused.weights)


def _per_window(tower: nn.Module, *inputs: torch.Tensor):
    """The tower over [B, K, L] inputs, one window position at a time (windows are independent), with a stop
    check between them; outputs are laid out as one call over the [B*K, L] rows would give them."""
    outputs = []
    for k in range(inputs[0].shape[1]):
        check_stop()
        outputs.append(tower(*(x[:, k] for x in inputs)))
    return type(outputs[0])(*(torch.stack(field, dim=1).flatten(0, 1) for field in zip(*outputs)))


def _check_tokenizer(tokenizer, kind: type, name: str, tower_config) -> None:
    if not isinstance(tokenizer, kind):
        raise ValueError(f"{name} must be a f1core.text.{kind.__name__}, got {type(tokenizer).__name__}")
    expected = {"bos": tower_config.bos_token_id, "eos": tower_config.eos_token_id, "pad": tower_config.pad_token_id}
    actual = {role: getattr(tokenizer, f"{role}_id") for role in expected}
    if actual != expected:
        raise ValueError(f"{name}: special token ids {actual} differ from the config's {expected}; "
                         f"use the vocab the checkpoint was built with")
    if tokenizer.max_id >= tower_config.vocab_size:
        raise ValueError(f"{name}: vocab has ids up to {tokenizer.max_id} but the config's vocab_size is "
                         f"{tower_config.vocab_size}")
