"""The F.1 checkpoint: one `.safetensors` holding every part under a prefix (`unet.`, `vae.`, `text.`),
with the config, the tokenizer vocabularies and the preview factors as strings in its metadata.

A file holding a single part is accepted too. Only safetensors are ever read; pickle never is.
`split_parts` / `join_parts` are the one place a part's key prefix is stripped or added: the loader reads files
through them, and the trainer's export maps its trainees' state dicts to parts through them too.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .config import F1Config

FORMAT = "f1.checkpoint/1"
PARTS = ("unet", "vae", "text")


FILE_PREFIXES = {name: f"{name}." for name in PARTS}   # where each part's keys sit in a checkpoint file


class CheckpointError(ValueError):
    pass


def split_parts(state: dict, prefixes: dict[str, str] = FILE_PREFIXES) -> dict[str, dict]:
    """{part: {key inside the part: value}} from a flat state dict, for each part of `prefixes` (part -> the
    prefix its keys start with; by default a checkpoint file's). Keys under no prefix belong to no part."""
    out = {part: {} for part in prefixes}
    for key, value in state.items():
        for part, prefix in prefixes.items():
            if key.startswith(prefix):
                out[part][key[len(prefix):]] = value
                break
    return out


def join_parts(parts: dict[str, dict], prefixes: dict[str, str] = FILE_PREFIXES) -> dict:
    """The inverse of `split_parts`: one flat state dict from {part: state dict}."""
    return {prefixes[part] + key: value for part, state in parts.items() for key, value in state.items()}


@dataclass
class F1Checkpoint:
    config: F1Config
    path: str
    unet: torch.nn.Module | None = None
    vae: torch.nn.Module | None = None
    text: torch.nn.Module | None = None
    latent_rgb: dict | None = None   # {"factors": [[r,g,b]] * C, "bias": [r,g,b]} for live previews
    metadata: dict = field(default_factory=dict)


def save_checkpoint(path, config: F1Config, *, unet=None, vae=None, text=None, latent_rgb=None,
                    extra_metadata: dict | None = None, dtype: torch.dtype | None = None) -> Path:
    """Write atomically (temp file + rename), so an interrupted save never leaves a corrupt checkpoint.
    `dtype` stores the floating-point weights in it (float16 halves the file); loading casts them back to the
    modules' dtype."""
    path = Path(path)
    modules = {"unet": unet, "vae": vae, "text": text}
    parts = [name for name in PARTS if modules[name] is not None]
    if not parts:
        raise CheckpointError("save_checkpoint: pass at least one of unet=, vae=, text=")

    def stored(value):
        value = value.detach().cpu()
        return (value.to(dtype) if dtype is not None and value.is_floating_point() else value).contiguous()

    tensors = join_parts({name: {key: stored(value) for key, value in modules[name].state_dict().items()}
                          for name in parts})
    metadata = {"f1.format": FORMAT, "f1.config": config.to_json(), "f1.parts": ",".join(parts)}
    if text is not None:
        metadata.update(tokenizer_metadata(text))
    if latent_rgb is not None:
        metadata["f1.latent_rgb"] = json.dumps(latent_rgb)
    metadata.update(extra_metadata or {})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # safetensors creates the file owner-only
    os.replace(tmp, path)
    return path


def read_metadata(path) -> dict:
    path = _checked_path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path.name} is not a readable safetensors file ({e}); "
                              "re-download or re-export it") from e


def load_checkpoint(path, parts=PARTS, device="cpu", dtype=None, operations=None) -> F1Checkpoint:
    """Build and load the requested parts that the file holds. Missing or unexpected keys are an error."""
    return load_parts(open_checkpoint(path), parts, device=device, dtype=dtype, operations=operations)


def open_checkpoint(path) -> F1Checkpoint:
    """The file's config, metadata and preview factors, no part loaded yet (load_parts does that). Every part
    the file holds is checked against its config first, so nothing is allocated for a mismatched file."""
    path = _checked_path(path)
    metadata = read_metadata(path)
    if metadata.get("f1.format") != FORMAT or "f1.config" not in metadata:
        raise CheckpointError(f"{path.name} is a safetensors file but not an F.1 checkpoint "
                              f"(metadata f1.format={metadata.get('f1.format')!r}, expected {FORMAT!r})")
    try:
        config = F1Config.from_json(metadata["f1.config"])
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as e:
        raise CheckpointError(f"{path.name}: its F.1 config cannot be read ({e}); re-export the checkpoint") from e
    held = [p for p in metadata.get("f1.parts", "").split(",") if p]
    out = F1Checkpoint(config=config, path=str(path), metadata=metadata)
    if "f1.latent_rgb" in metadata:
        out.latent_rgb = _latent_rgb(metadata["f1.latent_rgb"], config.unet.in_channels, path.name)

    shapes = _read_shapes(path, held)
    for name in held:
        what = f"{path.name} ({name})"
        # The config sets the part's size: match it to the file's tensors on the meta device before allocating,
        # so a config that does not belong to its weights cannot ask for more memory than the file holds.
        try:
            _check_keys(build_part(name, config, metadata, device="meta"), shapes.get(name, {}), what)
        except (ValueError, TypeError, RuntimeError) as e:
            if isinstance(e, CheckpointError):
                raise
            raise CheckpointError(f"{what}: its config describes a model that cannot be built ({e}); re-export "
                                  "the checkpoint") from e
    return out


def load_parts(checkpoint: F1Checkpoint, parts=PARTS, device="cpu", dtype=None, operations=None,
               modules: dict | None = None) -> F1Checkpoint:
    """Load the requested parts the file holds into `checkpoint`: each into the module `modules` gives for
    it (ComfyUI's loader builds the U-Net directly inside core's model), else into one built here. Weights
    are copied one tensor at a time, so loading holds the modules and one tensor, never a second model."""
    path = Path(checkpoint.path)
    held = [p for p in checkpoint.metadata.get("f1.parts", "").split(",") if p]
    wanted = [p for p in parts if p in held]
    if not wanted:
        raise CheckpointError(f"{path.name} holds parts {held}, none of the requested {list(parts)}")
    for name in wanted:
        module = (modules or {}).get(name)
        if module is None:
            module = build_part(name, checkpoint.config, checkpoint.metadata, operations=operations, device=device,
                                dtype=dtype)
        _load_tensors(module, path, name)
        setattr(checkpoint, name, module.eval())
    return checkpoint


def build_part(name: str, config: F1Config, metadata: dict | None = None, operations=None, device=None, dtype=None):
    """A freshly initialised part. The text part needs the vocabularies stored in `metadata`."""
    if name == "unet":
        from .models.unet import F1UNet
        return F1UNet(config.unet, operations=operations, device=device, dtype=dtype)
    if name == "vae":
        from .models.vae import F1VAE
        return F1VAE(config.vae, operations=operations, device=device, dtype=dtype)
    if name == "text":
        from .text import CLIPTokenizer, F1TextEncoder, RobertaTokenizer
        metadata = metadata or {}
        missing = [k for k in VOCAB_KEYS if k not in metadata]
        if missing:
            raise CheckpointError(f"the text part needs its vocabularies, but metadata lacks {missing}")
        clip_tok = CLIPTokenizer.from_strings(metadata["f1.clip_vocab"], metadata["f1.clip_merges"])
        roberta_tok = RobertaTokenizer.from_strings(metadata["f1.roberta_vocab"], metadata["f1.roberta_merges"])
        return F1TextEncoder(config.text, clip_tok, roberta_tok, operations=operations, device=device, dtype=dtype)
    raise CheckpointError(f"unknown part {name!r}; expected one of {PARTS}")


VOCAB_KEYS = ("f1.clip_vocab", "f1.clip_merges", "f1.roberta_vocab", "f1.roberta_merges")


def tokenizer_metadata(text) -> dict[str, str]:
    """Both tokenizers' vocabularies as metadata strings, so a checkpoint needs no side files."""
    clip_vocab, clip_merges = text.clip_tokenizer.to_strings()
    roberta_vocab, roberta_merges = text.roberta_tokenizer.to_strings()
    return dict(zip(VOCAB_KEYS, (clip_vocab, clip_merges, roberta_vocab, roberta_merges)))


def _latent_rgb(text: str, channels: int, name: str) -> dict:
    """The preview factors, checked here so a bad file fails when it loads, not mid-sampling."""
    def finite_row(row, length):
        return (isinstance(row, list) and len(row) == length
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in row))

    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as e:
        raise CheckpointError(f"{name}: metadata f1.latent_rgb is not valid JSON ({e}); re-export the "
                              "checkpoint") from None
    if (not isinstance(value, dict) or not isinstance(value.get("factors"), list)
            or len(value["factors"]) != channels or not all(finite_row(r, 3) for r in value["factors"])
            or not finite_row(value.get("bias"), 3)):
        raise CheckpointError(f"{name}: metadata f1.latent_rgb must be {{\"factors\": {channels} rows of 3 finite "
                              "numbers, \"bias\": 3 finite numbers}; re-export the checkpoint")
    return {"factors": value["factors"], "bias": value["bias"]}


def _checked_path(path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.suffix != ".safetensors":
        raise CheckpointError(f"{path.name}: only .safetensors checkpoints are loaded (pickle files such as "
                              ".ckpt/.pt/.bin can run code); convert it to safetensors first")
    return path


def _read_shapes(path: Path, parts) -> dict[str, dict[str, tuple]]:
    """{part: {key: shape}} from the file header alone; no tensor data is read."""
    try:
        with safe_open(str(path), framework="pt") as f:
            keys = split_parts({key: key for key in f.keys()}, {p: FILE_PREFIXES[p] for p in parts})
            return {part: {key: tuple(f.get_slice(name).get_shape()) for key, name in held.items()}
                    for part, held in keys.items()}
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path.name}: tensor data is corrupt or truncated ({e})") from e


def _load_tensors(module: torch.nn.Module, path: Path, part: str):
    """Strict load_state_dict, one tensor of the file at a time."""
    _check_keys(module, _read_shapes(path, [part])[part], f"{path.name} ({part})")
    targets = module.state_dict()  # shares storage with the parameters and buffers
    try:
        with safe_open(str(path), framework="pt") as f, torch.no_grad():
            names = split_parts({key: key for key in f.keys()}, {part: FILE_PREFIXES[part]})[part]
            for key, target in targets.items():
                target.copy_(f.get_tensor(names[key]))
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path.name}: tensor data is corrupt or truncated ({e})") from e


def _check_keys(module: torch.nn.Module, shapes: dict, what: str):
    expected = module.state_dict()
    missing = sorted(set(expected) - set(shapes))
    unexpected = sorted(set(shapes) - set(expected))
    wrong_shape = sorted(k for k in set(expected) & set(shapes) if tuple(expected[k].shape) != tuple(shapes[k]))
    if missing or unexpected or wrong_shape:
        raise CheckpointError(
            f"{what} does not match its config: {len(missing)} missing (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:3]}), "
            f"{len(wrong_shape)} wrong shape (e.g. {wrong_shape[:3]})")
