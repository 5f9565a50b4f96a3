"""Regional prompt nodes: a prompt per masked region, applied in cross-attention on one model pass
(f1core.regions), through core's attention patches: an `attn2_patch` appends the region prompts to the
context and an `attn2` replace patch per transformer layer attends under the regional key bias. Works on
F.1 and on core's SD1.5/SDXL-family U-Nets. On FLUX, F1RegionalConditioning writes the same regions into core's
`attention_mask` cond keys (a joint text-image mask in every block). F1DecoupledTextEncode builds the regions
from one prompt, an entity each, with style words read only in chosen blocks. Core's own ConditioningSetMask stays
the latent-composition path."""
import logging
import math
from dataclasses import replace

import torch
from comfy.ldm.modules.attention import optimized_attention
from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel
from comfy.ldm.modules.attention import SpatialTransformer
from comfy_api.latest import io

from ..f1core import limits
from ..f1core.models.attention import attention as f1_attention, run_attention
from ..f1core.regions import (STYLE_BLOCKS, Region, RegionalAttention, decouple_prompt, decoupled_regions,
                              layout_from_prompt, mask_schedule, parse_blocks, step_progress)
from . import f1_limits
from .f1_inputs import declared_limits_error, raise_if_invalid

logger = logging.getLogger(__name__)

F1Regions = io.Custom("F1_REGIONS")

# Distinct preview colours for region masks (RGB 0..1).
PALETTE = torch.tensor([[0.9, 0.2, 0.2], [0.2, 0.4, 0.9], [0.2, 0.75, 0.3], [0.95, 0.8, 0.2], [0.6, 0.3, 0.8],
                        [0.95, 0.5, 0.1], [0.2, 0.8, 0.8], [0.9, 0.4, 0.7]])


class RegionPatch:
    """Core's attn2 patch pair for one RegionalAttention. `extend` (attn2_patch) appends the region prompts to
    the context; `attend` (attn2 replace, one per transformer layer) attends under the regional key bias at
    the level's own h x w, read from transformer_options["activations_shape"]. Both read the regions as the
    layer's block and step see them (RegionalAttention.at: styled contexts in style blocks and steps).
    attention_fn is the function the model's own layers attend with (F.1's SDPA, or core's optimized_attention),
    called as they call it, so `optimized_attention_override` applies here too."""

    def __init__(self, regional: RegionalAttention, fraction: float, blend: float, attention_fn):
        self.regional, self.fraction, self.blend, self.attention_fn = regional, fraction, blend, attention_fn
        # every layer of one model call sees the same sigmas and context-mask objects: computed once per call
        self._step = (None, None, 0.0)
        self._unpadded = (None, None, None)

    def state(self, extra) -> tuple[RegionalAttention, float]:
        """(the regions this layer reads, the mask schedule's scale) for this call."""
        sigmas, schedule = extra.get("sigmas"), extra.get("sample_sigmas")
        if sigmas is None or schedule is None:  # called outside a sampler: the first step, masks fully on
            progress = 0.0
        elif self._step[0] is sigmas and self._step[1] is schedule:
            progress = self._step[2]
        else:
            progress = step_progress(float(sigmas.max()), schedule)
            self._step = (sigmas, schedule, progress)
        return self.regional.at(extra.get("block"), progress), mask_schedule(progress, self.fraction, self.blend)

    def extend(self, n, context, value, extra):
        regional, scale = self.state(extra)
        if scale <= 0:
            return n, context, value
        context, value = regional.extend(context, value)
        return n, context, value

    def attend(self, q, k, v, extra):
        heads, (regional, scale) = extra["n_heads"], self.state(extra)
        if scale <= 0:  # the base prompt alone, as the model attends without regions
            return run_attention(self.attention_fn, q, k, v, heads, extra.get("context_mask"), extra)
        _, _, h, w = extra["activations_shape"]
        if q.shape[1] != h * w:
            raise ValueError(f"F1ApplyRegions: a cross-attention layer has {q.shape[1]} queries for a {h}x{w} level; "
                             "another patch (token merging or tiling) changed the tokens. Apply it after "
                             "F1ApplyRegions or remove it")
        chunks = [c == 0 for c in extra.get("cond_or_uncond", [0])]
        base_length = k.shape[1] - regional.region_tokens
        bias = regional.key_bias(h, w, chunks, q.shape[0] // len(chunks), base_length, scale, q.dtype, q.device)
        context_mask = extra.get("context_mask")
        if context_mask is not None:  # F.1: prompts of different lengths batched, zero-padded
            if self._unpadded[0] is not bias or self._unpadded[1] is not context_mask:
                self._unpadded = (bias, context_mask, regional.hide_padding(bias, context_mask, base_length))
            bias = self._unpadded[2]
        return run_attention(self.attention_fn, q, k, v, heads, bias, extra)


def attention_layers(diffusion_model) -> list[tuple[str, int, int]]:
    """(block, id, index) of every cross-attention layer, as core's attn2 replace patches are keyed."""
    if hasattr(diffusion_model, "attention_blocks"):  # F.1
        return diffusion_model.attention_blocks()
    if not isinstance(diffusion_model, UNetModel):
        raise ValueError(f"F1ApplyRegions: input 'model' is a {type(diffusion_model).__name__}; regions apply to "
                         "F.1 and to SD1.5/SDXL-family U-Nets. Use core's ConditioningSetMask for other models")
    keys = []
    for name, blocks in (("input", diffusion_model.input_blocks), ("middle", [diffusion_model.middle_block]),
                         ("output", diffusion_model.output_blocks)):
        for index, block in enumerate(blocks):
            for layer in block or []:
                if isinstance(layer, SpatialTransformer):
                    keys += [(name, index, depth) for depth in range(len(layer.transformer_blocks))]
    return keys


def encode(node: str, name: str, clip, text: str) -> torch.Tensor:
    try:
        return clip.encode_from_tokens_scheduled(clip.tokenize(text))[0][0]
    except limits.PromptTooLong as err:
        raise ValueError(f"{node}: input '{name}': {err}") from None


def settings_inputs():
    """The inputs F1ApplyRegions and F1RegionalConditioning share."""
    return [
        F1Regions.Input("regions", tooltip="From F1Region or F1LayoutFromPrompt."),
        io.Float.Input("base_weight", default=0.0, min=0.0, max=1.0, step=0.05,
                       tooltip="Share of the positive (base) prompt inside the regions too: 0 = regions only, "
                               "0.3 = a global prompt keeps some say everywhere."),
        io.Float.Input("feather", default=4.0, min=0.0, max=256.0, step=0.5,
                       tooltip="Gaussian softening of mask edges, in mask pixels (soft seams)."),
        io.Int.Input("grow", default=0, min=-256, max=256,
                     tooltip="Dilate (positive) or erode (negative) each mask by this many mask pixels."),
        io.Float.Input("mask_fraction", default=1.0, min=0.0, max=1.0, step=0.05,
                       tooltip="Share of the sampling steps that run under the masks (layout is set early)."),
    ]


def regional(node: str, regions, base_weight, feather, grow) -> RegionalAttention:
    if not regions:
        raise ValueError(f"{node}: input 'regions' is empty; connect an F1Region chain")
    try:
        return RegionalAttention(regions, base_weight=base_weight, grow=grow, feather=feather)
    except ValueError as err:
        raise ValueError(f"{node}: input 'regions': {err}") from None


def regions_input():
    return F1Regions.Input("regions", optional=True, tooltip="Regions to add this one to (chain F1Region nodes).")


class F1Region(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="F1Region",
            display_name="F.1 Region",
            category="F1/regions",
            description="A prompt for one masked region. Chain several into a set of regions and apply them to a "
                        "model with F1ApplyRegions; the model's own positive prompt fills what no mask covers.",
            inputs=[
                io.Clip.Input("clip", tooltip="The text encoder of the model the regions will be applied to."),
                io.String.Input("text", multiline=True, default="a red circle",
                                tooltip="What to draw inside the mask."),
                io.Mask.Input("mask", tooltip="Where: 1 inside the region, 0 outside (any size; it is resized to "
                                              "every attention level). One mask, or one per latent in the batch."),
                io.Float.Input("strength", default=1.0, min=0.0, max=10.0, step=0.05,
                               tooltip="Weight of this prompt inside its mask, against overlapping regions and "
                                       "the base prompt."),
                regions_input(),
                # appended in 0.2.0 as optional, so saved workflows without it still load
                io.Int.Input("mask_index", default=-1, min=-1, max=1023, optional=True,
                             tooltip="-1: the mask as given. 0 or more: only that mask of a mask batch, e.g. one "
                                     "object of F1SceneRender's or F1LayoutFromPrompt's masks."),
            ],
            outputs=[F1Regions.Output(display_name="regions", tooltip="The chain of regions so far.")],
        )

    @classmethod
    def validate_inputs(cls, text, strength, mask_index=None):
        # named inputs, never **kwargs, which would switch core's range checks off for all of them
        return (f1_limits.prompt_length_error("F1Region", "text", text)
                or declared_limits_error(cls, strength=strength, mask_index=mask_index) or True)

    @classmethod
    def execute(cls, clip, text, mask, strength, regions=None, mask_index=-1) -> io.NodeOutput:
        raise_if_invalid(cls.validate_inputs(text, strength, mask_index))
        if mask_index >= 0:
            if mask.ndim != 3 or mask_index >= mask.shape[0]:
                raise ValueError(f"F1Region: input 'mask_index' is {mask_index} but 'mask' has shape "
                                 f"{list(mask.shape)}; give an index below its first size, or -1 for the whole mask")
            mask = mask[mask_index]
        if not text.strip():
            raise ValueError("F1Region: input 'text' is empty; write what goes in the region")
        if mask.ndim not in (2, 3) or float(mask.max()) <= 0:
            raise ValueError(f"F1Region: input 'mask' must be a non-empty MASK [H, W] or [B, H, W], got shape "
                             f"{list(mask.shape)} with max {float(mask.max()):.3g}; draw the region (mask > 0)")
        region = Region(encode("F1Region", "text", clip, text), mask.float(), strength)
        return io.NodeOutput(list(regions or []) + [region])


class F1ApplyRegions(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="F1ApplyRegions",
            display_name="F.1 Apply Regions",
            category="F1/regions",
            description="Regional prompts in cross-attention on one model pass (F.1, SD1.5, SDXL): every image "
                        "position attends to its own region's prompt, the positive prompt fills uncovered areas, "
                        "and the negative prompt stays unmasked. For the first 'mask_fraction' of the steps, then "
                        "a blend back to the positive prompt.",
            inputs=[
                io.Model.Input("model", tooltip="F.1, or a core SD1.5/SDXL-family model (FLUX: "
                                                "F1RegionalConditioning)."),
                *settings_inputs(),
                io.Float.Input("blend", default=0.0, min=0.0, max=1.0, step=0.05,
                               tooltip="Share of the steps over which the regions then fade back to the base prompt."),
            ],
            outputs=[io.Model.Output(tooltip="The model with regional attention patches.")],
        )

    @classmethod
    def validate_inputs(cls, base_weight, feather, grow, mask_fraction, blend):
        return declared_limits_error(cls, base_weight=base_weight, feather=feather, grow=grow,
                                     mask_fraction=mask_fraction, blend=blend) or True

    @classmethod
    def execute(cls, model, regions, base_weight, feather, grow, mask_fraction, blend) -> io.NodeOutput:
        raise_if_invalid(cls.validate_inputs(base_weight, feather, grow, mask_fraction, blend))
        attention = regional("F1ApplyRegions", regions, base_weight, feather, grow)
        diffusion_model = model.get_model_object("diffusion_model")
        layers = attention_layers(diffusion_model)
        # F.1 attends with its own SDPA function (core's CPU default, sub-quadratic attention, is several times
        # slower at these sizes); core's U-Nets with core's optimized_attention
        patch = RegionPatch(attention, mask_fraction, blend,
                            f1_attention if hasattr(diffusion_model, "attention_blocks") else optimized_attention)
        known = {(block, number) for block, number, _ in layers}
        unknown = sorted({b for r in regions if r.style_blocks for b in r.style_blocks} - known)
        if unknown:
            raise ValueError(f"F1ApplyRegions: input 'regions' sends style to blocks {unknown} this model has no "
                             f"cross-attention in; its blocks are {sorted(known)}")
        patched = model.clone()
        replaced = patched.model_options["transformer_options"].get("patches_replace", {}).get("attn2", {})
        if replaced:
            logger.warning("F1ApplyRegions: replacing %d existing attn2 replace patches", len(replaced))
        patched.set_model_attn2_patch(patch.extend)
        for block, number, index in layers:
            patched.set_model_attn2_replace(patch.attend, block, number, index)
        return io.NodeOutput(patched)


class F1RegionalConditioning(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="F1RegionalConditioning",
            display_name="F.1 Regional Conditioning (FLUX)",
            category="F1/regions",
            description="Regional prompts for FLUX (joint text-image attention) through core's attention_mask "
                        "cond keys: the region prompts join the positive prompt's tokens and a mask in every "
                        "block lets each image token read its own region's prompt. For the first 'mask_fraction' "
                        "of the steps; then the positive prompt alone. F.1, SD1.5 and SDXL: F1ApplyRegions.",
            inputs=[
                io.Conditioning.Input("positive", tooltip="The base prompt; it fills what no mask covers."),
                *settings_inputs(),
            ],
            outputs=[io.Conditioning.Output(tooltip="The positive conditioning with the regions in it.")],
        )

    @classmethod
    def validate_inputs(cls, base_weight, feather, grow, mask_fraction):
        return declared_limits_error(cls, base_weight=base_weight, feather=feather, grow=grow,
                                     mask_fraction=mask_fraction) or True

    @classmethod
    def execute(cls, positive, regions, base_weight, feather, grow, mask_fraction) -> io.NodeOutput:
        raise_if_invalid(cls.validate_inputs(base_weight, feather, grow, mask_fraction))
        if any(r.style_context is not None for r in regions):
            raise ValueError("F1RegionalConditioning: input 'regions' has style limited to blocks or steps, which "
                             "FLUX's attention mask cannot express; set F1DecoupledTextEncode's style_blocks to "
                             "'all' and its steps to 0..1, or use F1ApplyRegions on F.1, SD1.5 or SDXL")
        attention = regional("F1RegionalConditioning", regions, base_weight, feather, grow)
        # FLUX sees the image as 2x2 patches of the /8 latent: masks at that grid; core rescales to the real one
        height = max(m.shape[-2] for m in attention.masks)
        width = max(m.shape[-1] for m in attention.masks)
        grid = (math.ceil(height / 16), math.ceil(width / 16))
        items = max(m.shape[0] for m in attention.masks)
        out = []
        for context, options in positive:
            try:
                extended, _ = attention.extend(context)
            except ValueError as err:
                raise ValueError(f"F1RegionalConditioning: input 'regions': {err}") from None
            if mask_fraction > 0:
                mask = attention.joint_bias(*grid, items, context.shape[1])
                out.append([extended, {**options, "attention_mask": mask, "attention_mask_img_shape": grid,
                                       "start_percent": 0.0, "end_percent": mask_fraction}])
            if mask_fraction < 1:
                out.append([context, {**options, "start_percent": mask_fraction, "end_percent": 1.0}])
        return io.NodeOutput(out)


class F1LayoutFromPrompt(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="F1LayoutFromPrompt",
            display_name="F.1 Layout From Prompt",
            category="F1/regions",
            description="Reads a scene prompt such as 'a red circle on the left of a blue square' into regions: "
                        "one mask and entity phrase per object (positions and relations pick image halves).",
            inputs=[
                io.Clip.Input("clip", tooltip="The text encoder of the model the regions will be applied to."),
                io.String.Input("prompt", multiline=True, default="a red circle on the left of a blue square",
                                tooltip="A scene prompt in the scene vocabulary (shapes, colours, styles, "
                                        "positions, relations)."),
                io.Int.Input("width", default=512, min=8, max=16384, step=8, tooltip="Mask width (image pixels)."),
                io.Int.Input("height", default=512, min=8, max=16384, step=8, tooltip="Mask height (image pixels)."),
                regions_input(),
            ],
            outputs=[
                F1Regions.Output(display_name="regions", tooltip="One region per object, for F1ApplyRegions."),
                io.Mask.Output(display_name="masks", tooltip="The region masks, one per object."),
                io.Image.Output(display_name="preview", tooltip="The masks in colour, for checking the layout."),
                io.String.Output(display_name="phrases", tooltip="The entity phrase of each region, one a line."),
            ],
        )

    @classmethod
    def validate_inputs(cls, prompt, width, height):
        # the masks are image-sized (one per object), so the image pixel budget applies
        return (f1_limits.caption_length_error("F1LayoutFromPrompt", "prompt", prompt)
                or declared_limits_error(cls, width=width, height=height)
                or f1_limits.pixels_error("F1LayoutFromPrompt", width, height, 1, "'width'/'height'") or True)

    @classmethod
    def execute(cls, clip, prompt, width, height, regions=None) -> io.NodeOutput:
        raise_if_invalid(cls.validate_inputs(prompt, width, height))
        try:
            layout = layout_from_prompt(prompt, width, height)
        except ValueError as err:
            raise ValueError(f"F1LayoutFromPrompt: input 'prompt' cannot be laid out ({err})") from None
        masks = torch.stack([mask for _, mask in layout])
        colours = PALETTE[torch.arange(len(layout)) % len(PALETTE)]
        preview = (masks[..., None] * colours[:, None, None]).amax(0, keepdim=True).clamp(0, 1)
        added = [Region(encode("F1LayoutFromPrompt", "prompt", clip, phrase), mask) for phrase, mask in layout]
        phrases = "\n".join(phrase for phrase, _ in layout)
        return io.NodeOutput(list(regions or []) + added, masks, preview, phrases, ui={"text": [phrases]})


class F1DecoupledTextEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="F1DecoupledTextEncode",
            display_name="F.1 Decoupled Text Encode",
            category="F1/regions",
            description="Splits a scene prompt into entities (each with its attributes), their styles and the "
                        "layout (positions, relations, background). Each entity is encoded on its own and bound to "
                        "its region, so one object's colour cannot leak into another; style goes only to the chosen "
                        "blocks and steps. Connect 'positive' to the sampler and 'regions' to F1ApplyRegions.",
            inputs=[
                io.Clip.Input("clip", tooltip="The text encoder of the model the regions will be applied to."),
                io.String.Input("prompt", multiline=True, default="a striped red circle on the left of a blue square",
                                tooltip="A scene prompt in the scene vocabulary (shapes, colours, styles, sizes, "
                                        "positions, relations, background)."),
                io.Int.Input("width", default=512, min=8, max=16384, step=8,
                             tooltip="Mask width (image pixels), when the masks come from the prompt."),
                io.Int.Input("height", default=512, min=8, max=16384, step=8,
                             tooltip="Mask height (image pixels), when the masks come from the prompt."),
                io.String.Input("style_blocks", default=STYLE_BLOCKS,
                                tooltip="Cross-attention blocks that read the style words: 'all', 'none', or a "
                                        "list such as 'output 0, output 2'. The default is the block measured to "
                                        "carry style with the least layout change on F.1 (benchmarks/README.md)."),
                io.Float.Input("style_start", default=0.0, min=0.0, max=1.0, step=0.05,
                               tooltip="Share of the steps before style is read (0: from the first step)."),
                io.Float.Input("style_end", default=1.0, min=0.0, max=1.0, step=0.05,
                               tooltip="Share of the steps after which style is no longer read (1: to the end)."),
                io.Mask.Input("masks", optional=True,
                              tooltip="One mask per entity, in the prompt's order (e.g. F1SceneRender's), "
                                      "instead of the image halves the prompt's positions pick."),
                regions_input(),
            ],
            outputs=[
                io.Conditioning.Output(display_name="positive",
                                       tooltip="The layout prompt (shapes, positions, relations, background; no "
                                               "attributes), the base prompt for what no region covers."),
                F1Regions.Output(display_name="regions", tooltip="One region per entity, for F1ApplyRegions."),
                io.Mask.Output(display_name="masks", tooltip="The region masks, one per entity."),
                io.String.Output(display_name="parts", tooltip="The split: each entity, its style, the layout."),
            ],
        )

    @classmethod
    def validate_inputs(cls, prompt, width, height, style_blocks, style_start, style_end):
        error = (f1_limits.caption_length_error("F1DecoupledTextEncode", "prompt", prompt)
                 or declared_limits_error(cls, width=width, height=height, style_start=style_start,
                                          style_end=style_end)
                 or f1_limits.pixels_error("F1DecoupledTextEncode", width, height, 1, "'width'/'height'"))
        if error:
            return error
        if isinstance(style_start, float) and isinstance(style_end, float) and style_start >= style_end:
            return (f"F1DecoupledTextEncode: input 'style_start' ({style_start}) is not below 'style_end' "
                    f"({style_end}); to leave style out, set style_blocks to 'none'")
        if isinstance(style_blocks, str):
            try:
                parse_blocks(style_blocks)
            except ValueError as err:
                return f"F1DecoupledTextEncode: input 'style_blocks': {err}"
        return True

    @classmethod
    def execute(cls, clip, prompt, width, height, style_blocks, style_start, style_end, masks=None,
                regions=None) -> io.NodeOutput:
        raise_if_invalid(cls.validate_inputs(prompt, width, height, style_blocks, style_start, style_end))
        try:
            parts = decouple_prompt(prompt, width, height)
        except ValueError as err:
            raise ValueError(f"F1DecoupledTextEncode: input 'prompt' cannot be decoupled ({err})") from None
        entities = parts.entities
        if masks is not None:
            masks = masks[None] if masks.ndim == 2 else masks
            if masks.shape[0] != len(entities):
                raise ValueError(f"F1DecoupledTextEncode: input 'masks' has {masks.shape[0]} masks for "
                                 f"{len(entities)} entities ({'; '.join(e.phrase for e in entities)}); give one "
                                 "per entity, in the prompt's order")
            entities = [replace(e, mask=m.float()) for e, m in zip(entities, masks)]
        added = decoupled_regions(entities, lambda text: encode("F1DecoupledTextEncode", "prompt", clip, text),
                                  parse_blocks(style_blocks), (style_start, style_end))
        try:
            positive = clip.encode_from_tokens_scheduled(clip.tokenize(parts.layout))
        except limits.PromptTooLong as err:
            raise ValueError(f"F1DecoupledTextEncode: input 'prompt': {err}") from None
        described = parts.describe()
        return io.NodeOutput(positive, list(regions or []) + added, torch.stack([e.mask for e in entities]),
                             described, ui={"text": [described]})


NODES = [F1Region, F1ApplyRegions, F1RegionalConditioning, F1LayoutFromPrompt, F1DecoupledTextEncode]
