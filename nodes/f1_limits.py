"""The request budgets of f1core.limits as the nodes apply them: read for the device ComfyUI runs on, and
ComfyUI's interrupt check installed as f1core's stop hook for work that runs inside one node."""
import comfy.model_management

from ..f1core import limits
from ..f1core.interrupt import stop_hook


def current() -> limits.Limits:
    return limits.from_env(on_cpu=comfy.model_management.cpu_mode())


def pixels_error(node: str, width, height, batch, names: str) -> str | None:
    """`node`: a width x height x batch request over the budget, naming the inputs to lower; None if within it
    or not yet known (linked inputs reach validation as None; core reports values of the wrong type)."""
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (width, height, batch)):
        return None
    error = limits.pixels_error(current(), width, height, batch, names)
    return f"{node}: {error}" if error else None


def text_length_error(node: str, name: str, text, limit: int, fix: str) -> str | None:
    """`node`: input `name` longer than `limit` characters (a cheap bound checked before any parsing or
    tokenizing), with the fix; None if within it or not a string (core reports the wrong type)."""
    if isinstance(text, str) and len(text) > limit:
        return f"{node}: input '{name}' is {len(text):,} characters, over the limit of {limit:,}; {fix}"
    return None


def prompt_length_error(node: str, name: str, text) -> str | None:
    """A prompt for a text encoder; the token limit itself is checked when it is encoded."""
    return text_length_error(node, name, text, current().max_prompt_chars,
                             f"shorten it or raise {limits.ENV['max_prompt_tokens']}")


def caption_length_error(node: str, name: str, text) -> str | None:
    """A scene caption or spec JSON; the longest valid scene needs a few hundred characters."""
    return text_length_error(node, name, text, limits.MAX_CAPTION_CHARS,
                             "a scene holds at most a few objects, so describe each once")


def latent_scale(model_patcher) -> int:
    """Image pixels per latent pixel (the budget counts image pixels): the F.1 VAE's downscale (8 or 4), and 8
    for SD1.5, SDXL and FLUX, whose formats in 0.3.75 do not say."""
    return int(getattr(model_patcher.model.latent_format, "spacial_downscale_ratio", 8))


def raise_if_over_budget(node: str, input_name: str, shape, scale: int = 1):
    """For tensors that arrive at run time: an IMAGE [B, H, W, C] (scale 1) or a latent [B, C, h, w]
    (scale = the VAE's downscale) over the pixel budget is refused before any work."""
    if len(shape) != 4:
        return
    batch, height, width = (shape[0], shape[1], shape[2]) if scale == 1 else (shape[0], shape[2], shape[3])
    error = pixels_error(node, int(width) * scale, int(height) * scale, int(batch), f"the size of '{input_name}'")
    if error:
        raise ValueError(error.replace(f"{node}: ", f"{node}: input '{input_name}': ", 1))


def interruptible():
    """`with interruptible():` lets /interrupt stop f1core work between tiles, text windows and scene objects."""
    return stop_hook(comfy.model_management.throw_exception_if_processing_interrupted)
