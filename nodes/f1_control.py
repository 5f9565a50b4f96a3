"""CONTROL_NET glue: the F.1 ControlNet (f1core.control) as core's `comfy.controlnet.ControlNet`, so core's Apply
ControlNet (Advanced) applies it unchanged: strength, start/end percent, and chains with other ControlNets.

Core's ControlNet calls `control_model(x=, hint=, timesteps=, context=, y=)` with x and timesteps as the U-Net gets
them, which is F1ControlNet's forward. The subclass overrides copy() (core's returns a plain ControlNet) and checks
the model in pre_run: an F.1 ControlNet on a model it was not made for is an error, not a logged warning."""
import comfy.controlnet
import comfy.model_management
import comfy.ops
import torch

from ..f1core.control import F1ControlNet, load_control, matches_unet

FOLDER = "f1_controlnet"


class F1CoreControlNet(comfy.controlnet.ControlNet):
    def __init__(self, control_model: F1ControlNet | None, **kwargs):
        ratio = control_model.config.downscale if control_model is not None else 8
        super().__init__(control_model, compression_ratio=ratio, extra_conds=["y", "context_mask"], **kwargs)

    @property
    def f1_config(self):
        return self.control_model.config

    def copy(self):
        c = F1CoreControlNet(None, global_average_pooling=self.global_average_pooling, load_device=self.load_device,
                             manual_cast_dtype=self.manual_cast_dtype)
        c.control_model = self.control_model
        c.control_model_wrapped = self.control_model_wrapped
        self.copy_to(c)
        return c

    def pre_run(self, model, percent_to_timestep_function):
        unet = model.diffusion_model
        unet_config = getattr(unet, "config", None)
        if not hasattr(unet, "encode") or not matches_unet(self.f1_config, unet_config):
            raise ValueError(
                f"F.1 ControlNet ({self.f1_config.condition}): made for an F.1 U-Net with "
                f"{self.f1_config.unet.in_channels} latent channels and widths {self.f1_config.unet.model_channels} x "
                f"{list(self.f1_config.unet.channel_mult)}, but the MODEL is a {type(unet).__name__}"
                + (f" with {unet_config.in_channels} channels and widths {unet_config.model_channels} x "
                   f"{list(unet_config.channel_mult)}" if hasattr(unet_config, "channel_mult") else "")
                + "; load a ControlNet trained for this model (core's ControlNet loader for SD/SDXL/FLUX models)")
        super().pre_run(model, percent_to_timestep_function)


def core_controlnet(control: F1ControlNet) -> F1CoreControlNet:
    """Wrap a loaded (or freshly built) F1ControlNet for core's conditioning."""
    load_device = comfy.model_management.get_torch_device()
    return F1CoreControlNet(control, load_device=load_device, manual_cast_dtype=None)


def load_core_controlnet(path) -> F1CoreControlNet:
    """The file built on core's operations (no initialisation of weights the file replaces), in float32 on the
    offload device; core moves it to the load device when sampling."""
    control = load_control(path, operations=comfy.ops.disable_weight_init,
                           device=comfy.model_management.unet_offload_device(), dtype=torch.float32)
    return core_controlnet(control)
