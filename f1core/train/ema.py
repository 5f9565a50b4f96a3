"""Exponential moving average of a module's weights: the weights a trained checkpoint ships."""
from __future__ import annotations

import copy

import torch


class EMA:
    def __init__(self, module: torch.nn.Module, decay: float):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay: expected 0 <= decay < 1, got {decay}")
        self.decay = decay
        # frozen parameters (the decoder stage's encoder) never change: averaging them is wasted work each step
        frozen = {name for name, p in module.named_parameters() if not p.requires_grad}
        self.shadow = {k: v.detach().clone().float() for k, v in module.state_dict().items() if k not in frozen}

    @torch.no_grad()
    def update(self, module: torch.nn.Module, step: int):
        # warm-up: early averages would otherwise be dominated by the random init
        decay = min(self.decay, (1.0 + step) / (10.0 + step))
        state = module.state_dict()
        for key, shadow in self.shadow.items():
            value = state[key]
            if value.is_floating_point():
                shadow.lerp_(value.float(), 1.0 - decay)
            else:
                shadow.copy_(value)

    def state_dict(self) -> dict:
        return dict(self.shadow)

    def load_state_dict(self, state: dict):
        missing = set(self.shadow) - set(state)
        if missing:
            raise ValueError(f"EMA state lacks {len(missing)} keys (e.g. {sorted(missing)[:3]}); "
                             "the run was made with a different model config")
        self.shadow = {k: state[k].clone().float() for k in self.shadow}

    def averaged(self, module: torch.nn.Module) -> torch.nn.Module:
        """A copy of `module` holding the averaged weights (frozen ones as they are), in eval mode."""
        out = copy.deepcopy(module).eval()
        out.load_state_dict(self.shadow, strict=False)  # copy_ casts to each parameter's dtype
        return out
