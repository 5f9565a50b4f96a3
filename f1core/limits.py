"""Work and memory budgets for one request, checked before anything runs (documented in the README, "Limits").

Each budget can be changed with an environment variable of the process that serves ComfyUI. The pixel budget's
default depends on the device: on a CPU one U-Net call over 512x512 pixels takes about a second, so /interrupt
(which core checks between model calls) frees the worker within 2 s; an accelerator gets a larger default."""
from __future__ import annotations

import os
from dataclasses import dataclass

CPU_MAX_PIXELS = 512 * 512
ACCELERATOR_MAX_PIXELS = 2048 * 2048
MIN_DENOISE = 0.01             # below this, keeping the last `steps` of steps/denoise levels grows without bound
CHARS_PER_TOKEN = 16           # a prompt longer than max_prompt_tokens * this is refused before tokenizing
MAX_CAPTION_CHARS = 2000       # a scene caption or spec JSON; the longest valid scene needs a few hundred


@dataclass(frozen=True)
class Limits:
    max_pixels: int         # width x height x batch of one latent or image batch
    max_batch: int          # images in one batch
    max_steps: int          # sampling steps of one request
    max_prompt_tokens: int  # tokens of one prompt, per text tower

    @property
    def max_prompt_chars(self) -> int:
        return self.max_prompt_tokens * CHARS_PER_TOKEN


ENV = {"max_pixels": "F1_MAX_PIXELS", "max_batch": "F1_MAX_BATCH", "max_steps": "F1_MAX_STEPS",
       "max_prompt_tokens": "F1_MAX_PROMPT_TOKENS"}


def from_env(on_cpu: bool, environ=os.environ) -> Limits:
    defaults = {"max_pixels": CPU_MAX_PIXELS if on_cpu else ACCELERATOR_MAX_PIXELS, "max_batch": 64,
                "max_steps": 1000, "max_prompt_tokens": 1024}
    values = {}
    for field, default in defaults.items():
        text = environ.get(ENV[field], "").strip()
        try:
            values[field] = int(text) if text else default
        except ValueError:
            values[field] = -1
        if values[field] < 1:
            raise ValueError(f"environment variable {ENV[field]}={text!r} must be a positive integer "
                             f"(default {default}); fix or unset it and restart ComfyUI")
    return Limits(**values)


def pixels_error(limits: Limits, width: int, height: int, batch: int, names: str) -> str | None:
    """Why a width x height x batch request is over budget, naming the inputs (`names`) to lower; None if not."""
    if batch > limits.max_batch:
        return (f"batch of {batch} is over the batch budget of {limits.max_batch}; lower {names} "
                f"or raise {ENV['max_batch']}")
    if width * height * batch > limits.max_pixels:
        return (f"{width}x{height} x {batch} = {width * height * batch:,} pixels is over the budget of "
                f"{limits.max_pixels:,}; lower {names} or raise {ENV['max_pixels']}")
    return None


class PromptTooLong(ValueError):
    pass


def check_prompt_tokens(count: int, max_tokens: int, tower: str) -> None:
    if count > max_tokens:
        raise PromptTooLong(f"the prompt is {count} {tower} tokens, over the limit of {max_tokens}; shorten it "
                            f"or raise {ENV['max_prompt_tokens']}")
