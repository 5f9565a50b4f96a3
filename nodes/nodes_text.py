from comfy_api.latest import io


class F1TextEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="F1TextEncode",
            display_name="F.1 Text Encode",
            category="F1/conditioning",
            description="Encodes a prompt with both F.1 towers (CLIP-L and RoBERTa) fused by the adapter, and "
                        "shows the per-prompt weight the adapter gave each tower. Long prompts are chunked, not cut.",
            inputs=[io.Clip.Input("clip"), io.String.Input("text", multiline=True, dynamic_prompts=True)],
            outputs=[io.Conditioning.Output()],
        )

    @classmethod
    def execute(cls, clip, text) -> io.NodeOutput:
        if clip is None:
            raise ValueError("F1TextEncode: input 'clip' is empty; connect the CLIP output of Load F.1 Checkpoint")
        conditioning = clip.encode_from_tokens_scheduled(clip.tokenize(text))
        weights = conditioning[0][1].get("f1_encoder_weights")
        if weights is None:
            return io.NodeOutput(conditioning)
        clip_w, roberta_w = weights[0].tolist()
        return io.NodeOutput(conditioning, ui={"text": [f"adapter weights: CLIP {clip_w:.2f}, RoBERTa {roberta_w:.2f}"]})


NODES = [F1TextEncode]
