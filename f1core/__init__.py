"""F.1 core: plain torch models, samplers, schedules, data, training and evaluation. Imports nothing from ComfyUI."""
from .config import F1Config, PRESETS

__all__ = ["F1Config", "PRESETS"]
