from comfy_api.latest import io

from ..f1core import limits
from . import f1_limits
from .f1_inputs import raise_if_invalid


class F1TextEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="F1TextEncode",
            display_name="F.1 Text Encode",
            category="F1/conditioning",
            description="Encodes a prompt with both F.1 towers (CLIP-L and RoBERTa) fused by the adapter, and "
                        "shows the per-prompt weight the adapter gave each tower. Long prompts are chunked, not cut.",
            inputs=[
                io.Clip.Input("clip", tooltip="The CLIP output of Load F.1 Checkpoint (both F.1 text towers)."),
                io.String.Input("text", multiline=True, dynamic_prompts=True,
                                tooltip="The prompt. Any length: long prompts are encoded in windows. Weights "
                                        "such as (word:1.2) are not parsed."),
            ],
            outputs=[io.Conditioning.Output(tooltip="The fused text embedding, for positive or negative of a "
                                                    "sampler or guider.")],
        )

    @classmethod
    def validate_inputs(cls, text):
        return f1_limits.prompt_length_error("F1TextEncode", "text", text) or True

    @classmethod
    def execute(cls, clip, text) -> io.NodeOutput:
        if clip is None:
            raise ValueError("F1TextEncode: input 'clip' is empty; connect the CLIP output of Load F.1 Checkpoint")
        raise_if_invalid(cls.validate_inputs(text))
        try:
            conditioning = clip.encode_from_tokens_scheduled(clip.tokenize(text))
        except limits.PromptTooLong as err:
            raise ValueError(f"F1TextEncode: input 'text': {err}") from None
        weights = conditioning[0][1].get("f1_encoder_weights")
        if weights is None:
            return io.NodeOutput(conditioning)
        clip_w, roberta_w = weights[0].tolist()
        return io.NodeOutput(conditioning, ui={"text": [f"adapter weights: CLIP {clip_w:.2f}, RoBERTa {roberta_w:.2f}"]})


NODES = [F1TextEncode]
