"""Accept the common real layouts of CLIP text and RoBERTa weight files and load them into the towers.

CLIP: full `CLIPModel` files (vision parts dropped), `CLIPTextModel(WithProjection)` files (transformers 5 saves
`CLIPTextModel` without the `text_model.` prefix), ComfyUI clip_l files (`text_model.*`, sometimes without
`text_projection`), any prefix before `text_model.` (e.g. `cond_stage_model.transformer.`), and open_clip's bare
`text_projection` matrix ([hidden, proj], transposed here).
RoBERTa: `RobertaModel` or `RobertaForMaskedLM` files, with or without the `roberta.` prefix; `lm_head.*` and
`pooler.*` are dropped. Buffers some versions saved (`position_ids`, `token_type_ids`) are dropped for both.
"""
from __future__ import annotations

import torch
import torch.nn as nn

_KINDS = ("clip", "roberta")
_CLIP_ANCHOR = "embeddings.token_embedding.weight"
_ROBERTA_ANCHOR = "embeddings.word_embeddings.weight"
_BUFFERS = ("position_ids", "token_type_ids")
# Keys a file may lack; the tower keeps its own initialisation for them.
_OPTIONAL = {"clip": ("text_projection.weight",), "roberta": ()}


def _prefix_of(sd: dict, anchor: str, kind: str) -> str:
    found = sorted(key[: -len(anchor)] for key in sd if key.endswith(anchor))
    if not found:
        raise ValueError(f"no {kind} weights found: expected a key ending in {anchor!r}, got keys like "
                         f"{sorted(sd)[:5]}; pass a {kind} text-encoder state dict")
    return found[0]


def normalize_hf_state_dict(sd: dict, kind: str) -> dict:
    """Return `sd` renamed to the layout of `CLIPTextTower` (kind 'clip') or `RobertaEncoder` (kind 'roberta').

    Parts that are known not to belong to the text tower are dropped; anything else is kept, so loading reports it.
    """
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {_KINDS}, got {kind!r}")
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError("state dict must be a dict of tensors (e.g. from safetensors.torch.load_file)")
    out = {}
    if kind == "clip":
        tower = _prefix_of(sd, _CLIP_ANCHOR, kind)  # where embeddings.* sits: "", "text_model.", "x.text_model."
        root = tower[: -len("text_model.")] if tower.endswith("text_model.") else tower
        for key, value in sd.items():
            name = key[len(root):] if key.startswith(root) else key
            if name.startswith("vision_model.") or name in ("logit_scale", "visual_projection.weight"):
                continue
            if name == "text_projection":
                name, value = "text_projection.weight", value.t().contiguous()
            elif name != "text_projection.weight" and key.startswith(tower):
                name = "text_model." + key[len(tower):]
            out[name] = value
    else:
        prefix = _prefix_of(sd, _ROBERTA_ANCHOR, kind)
        for key, value in sd.items():
            if key.startswith("lm_head."):
                continue
            name = key[len(prefix):] if key.startswith(prefix) else key
            if name.startswith("pooler."):
                continue
            out[name] = value
    return {k: v for k, v in out.items() if k.rsplit(".", 1)[-1] not in _BUFFERS}


def load_hf_state_dict(module: nn.Module, sd: dict, kind: str) -> list[str]:
    """Normalize `sd` and load it into `module` (a `CLIPTextTower` or `RobertaEncoder`).

    Returns the optional keys the file lacked (e.g. CLIP's text_projection), which keep their initialisation.
    Missing, unexpected or mis-shaped keys raise a ValueError listing a few of them.
    """
    normalized = normalize_hf_state_dict(sd, kind)
    expected = module.state_dict()
    missing = [k for k in expected if k not in normalized]
    absent_optional = [k for k in missing if k in _OPTIONAL[kind]]
    missing = [k for k in missing if k not in _OPTIONAL[kind]]
    unexpected = [k for k in normalized if k not in expected]
    mismatched = [f"{k}: file {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
                  for k, v in normalized.items() if k in expected and v.shape != expected[k].shape]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing (e.g. {missing[:4]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected (e.g. {unexpected[:4]})")
    if mismatched:
        problems.append(f"{len(mismatched)} with other shapes (e.g. {mismatched[:3]})")
    if problems:
        raise ValueError(f"{kind} weights do not fit {type(module).__name__}: {'; '.join(problems)}. Check that "
                         f"the file is a {kind} text encoder and that the config matches it")
    module.load_state_dict(normalized, strict=False)
    return absent_optional
