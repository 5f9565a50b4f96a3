"""CLIP glue: the F.1 text encoder (CLIP-L + RoBERTa + fusion adapter) as a native ComfyUI CLIP object,
so core's CLIPTextEncode and the conditioning nodes work with it."""
import torch

import comfy.model_management
import comfy.sd

from . import f1_limits
from .f1_limits import interruptible


class F1Tokenizer:
    """The F.1 encoder tokenizes internally (both towers, chunked windows); tokens carry the prompt text."""

    def __init__(self, embedding_directory=None, tokenizer_data={}):
        pass  # textual-inversion embeddings are not supported by the F.1 encoder

    def tokenize_with_weights(self, text: str, return_word_ids=False, **kwargs):
        return {"f1": text}

    def untokenize(self, token_weight_pair):
        return token_weight_pair

    def state_dict(self):
        return {}


class F1TextModel(torch.nn.Module):
    """The `cond_stage_model` that core's CLIP object drives."""

    def __init__(self, text_encoder=None, device=None, dtype=None, model_options={}):
        super().__init__()
        self.encoder = text_encoder.to(device=device, dtype=dtype)
        self.dtypes = {dtype}

    def reset_clip_options(self):
        pass  # F.1 keeps no per-call options

    def set_clip_options(self, options):
        """Core sends CLIP-layer choices (CLIPSetLastLayer); F.1 always uses the layers its adapter was trained
        on, so they do not apply."""

    def encode_token_weights(self, tokens):
        with interruptible():  # /interrupt reaches between text windows
            encoding = self.encoder.encode([tokens["f1"]], max_tokens=f1_limits.current().max_prompt_tokens)
        # one prompt per call: dropping padded tokens equals masking them in cross-attention
        context = encoding.context[:, encoding.mask[0]]
        out_device = comfy.model_management.intermediate_device()
        return (context.to(out_device, torch.float32), encoding.pooled.to(out_device, torch.float32),
                {"f1_encoder_weights": encoding.weights.to(out_device)})

    def load_sd(self, sd):
        return self.encoder.load_state_dict(sd, strict=False)


class F1ClipTarget:
    def __init__(self, text_encoder):
        self.params = {"text_encoder": text_encoder}
        self.clip = F1TextModel
        self.tokenizer = F1Tokenizer


def clip_from_text_encoder(text_encoder) -> comfy.sd.CLIP:
    params = sum(p.numel() for p in text_encoder.parameters())
    options = {}
    if comfy.model_management.is_device_cpu(comfy.model_management.text_encoder_device()):
        options["dtype"] = torch.float32  # core's fp16 default is slow and imprecise on a CPU
    return comfy.sd.CLIP(target=F1ClipTarget(text_encoder), parameters=params, model_options=options)
