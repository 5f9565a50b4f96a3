import comfy.ops
from comfy_api.latest import io

from ..f1core.checkpoint import CheckpointError, load_parts, open_checkpoint
from .f1_clip import clip_from_text_encoder
from .f1_files import RETIRED, checkpoint_names, checkpoint_path, register_model_folders
from .f1_model import empty_model_patcher
from .f1_vae import F1VAEHandle

F1Vae = io.Custom("F1_VAE")

register_model_folders()


class F1CheckpointLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="F1CheckpointLoader",
            display_name="Load F.1 Checkpoint",
            category="F1/loaders",
            description="Loads an F.1 .safetensors checkpoint (from models/f1) as a native MODEL and CLIP, "
                        "plus the F.1 VAE.",
            inputs=[io.Combo.Input("ckpt_name", options=checkpoint_names(),
                                   tooltip="An F.1 checkpoint in models/f1 (only .safetensors are listed).")],
            outputs=[io.Model.Output(tooltip="The F.1 U-Net as a native MODEL: core samplers, guiders and model "
                                             "patches accept it."),
                     io.Clip.Output(tooltip="The F.1 text encoder (CLIP-L + RoBERTa + adapter) as a native CLIP."),
                     F1Vae.Output(display_name="F1_VAE",
                                  tooltip="The F.1 VAE, for F1EmptyLatent, F1VAEEncode and F1VAEDecode (core's "
                                          "VAE nodes do not take it).")],
        )

    @classmethod
    def validate_inputs(cls, ckpt_name):
        # core 0.3.75 does not check V3 combo values against their options, so the loader does
        if not isinstance(ckpt_name, str) or ckpt_name not in checkpoint_names():
            try:
                checkpoint_path(ckpt_name)
                if ckpt_name in RETIRED:
                    return True  # an older workflow's model, merged into its successor
                reason = "is not listed"
            except ValueError as err:
                reason = str(err).removeprefix(f"'{ckpt_name}' ")
            return (f"F1CheckpointLoader: input 'ckpt_name' '{ckpt_name}' {reason}; put the .safetensors file in "
                    "models/f1 and press R to refresh")
        return True

    @classmethod
    def execute(cls, ckpt_name) -> io.NodeOutput:
        try:  # again here: the file may have changed since the prompt was validated
            path = checkpoint_path(ckpt_name)
        except ValueError as err:
            raise ValueError(f"F1CheckpointLoader: input 'ckpt_name' {err}") from None
        try:
            ckpt = open_checkpoint(path)
            model = empty_model_patcher(ckpt.config, ckpt.latent_rgb)
            # the text encoder and VAE on core's operations too: no initialisation of weights the file replaces
            load_parts(ckpt, operations=comfy.ops.disable_weight_init, modules={"unet": model.model.diffusion_model})
        except CheckpointError as e:
            raise ValueError(f"F1CheckpointLoader: input 'ckpt_name' ({ckpt_name}): {e}") from e
        return io.NodeOutput(model, clip_from_text_encoder(ckpt.text), F1VAEHandle(ckpt.vae))


NODES = [F1CheckpointLoader]
