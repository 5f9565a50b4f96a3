"""Layer factories. Models take an `operations` namespace (ComfyUI passes `comfy.ops.*`); standalone it is torch.nn."""
from types import SimpleNamespace

import torch.nn as nn

torch_ops = SimpleNamespace(Linear=nn.Linear, Conv2d=nn.Conv2d, GroupNorm=nn.GroupNorm,
                            LayerNorm=nn.LayerNorm, Embedding=nn.Embedding)


def resolve(operations):
    return torch_ops if operations is None else operations
