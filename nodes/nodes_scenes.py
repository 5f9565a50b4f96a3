"""Scene nodes: render a synthetic scene (image, instance masks, edges, depth) from a spec or caption, and score
images against a spec with F.1's compositional detector."""
import json

import comfy.model_management
import numpy as np
import torch
from comfy_api.latest import io, ui

from ..f1core.data import scenes
from ..f1core.data.captions import caption, parse_caption
from ..f1core.data.spec import SceneSpec
from ..f1core.eval.detector import detect
from ..f1core.eval.report import annotate
from ..f1core.eval.scoring import score_detection
from . import f1_limits
from .f1_inputs import raise_if_invalid
from .f1_limits import interruptible


def _spec_from_text(node: str, text: str) -> SceneSpec:
    """A spec JSON object or a caption; errors name the node, the input and the fix."""
    text = (text or "").strip()
    try:
        return SceneSpec.from_json(text) if text.startswith("{") else parse_caption(text)
    except (ValueError, TypeError, RecursionError) as err:  # hostile JSON must not escape as another error
        raise ValueError(f"{node}: input 'spec' is not a valid scene ({err}). Give a caption such as "
                         "'a red circle to the left of a blue square' or a spec JSON such as "
                         '{"objects": [{"shape": "circle", "colour": "red"}]}') from None


ANNOTATED_MIN_SIDE = 256  # labels stay readable on small (e.g. 64x64) images


def _as_rgb(map_2d: torch.Tensor) -> torch.Tensor:
    return map_2d[None, ..., None].expand(1, *map_2d.shape, 3).contiguous()


class F1SceneRender(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="F1SceneRender",
            display_name="F.1 Scene Render",
            category="F1/scenes",
            description="Renders a synthetic scene from a caption or spec JSON, deterministic by seed: the image, "
                        "one mask per object, an edge map and a depth-like map (for masks and ControlNet).",
            inputs=[
                io.String.Input("spec", multiline=True, default="a striped red circle to the left of a blue square",
                                tooltip="A caption in the scene vocabulary (6 shapes, 8 colours, 4 styles, counts, "
                                        "positions, relations) or a spec JSON object."),
                io.Int.Input("width", default=256, min=scenes.MIN_SIDE, max=scenes.MAX_SIDE, step=8,
                             tooltip="Image width in pixels."),
                io.Int.Input("height", default=256, min=scenes.MIN_SIDE, max=scenes.MAX_SIDE, step=8,
                             tooltip="Image height in pixels."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFF, control_after_generate=True,
                             tooltip="Placement and colour jitter; the same seed gives the same scene."),
            ],
            outputs=[
                io.Image.Output(display_name="image", tooltip="The rendered scene."),
                io.Mask.Output(display_name="masks", tooltip="One mask per object, in the spec's order."),
                io.Image.Output(display_name="edges", tooltip="Object outlines, for an edge ControlNet."),
                io.Image.Output(display_name="depth", tooltip="A depth-like map (nearer is brighter), for a "
                                                              "depth ControlNet."),
                io.String.Output(display_name="spec", tooltip="The parsed scene as spec JSON with its caption; "
                                                              "feed it to F1Evaluate or a text encoder."),
            ],
        )

    @classmethod
    def validate_inputs(cls, spec):
        return f1_limits.caption_length_error("F1SceneRender", "spec", spec) or True

    @classmethod
    def execute(cls, spec, width, height, seed) -> io.NodeOutput:
        raise_if_invalid(cls.validate_inputs(spec))
        parsed = _spec_from_text("F1SceneRender", spec)
        try:
            with interruptible():  # /interrupt reaches between layout attempts and objects
                sample = scenes.render_scene(parsed, width, height, seed=seed)
        except ValueError as err:
            raise ValueError(f"F1SceneRender: inputs 'width'/'height' cannot hold this scene ({err})") from None
        spec_json = json.dumps(parsed.to_dict() | {"caption": caption(parsed)})
        return io.NodeOutput(sample.image[None], sample.masks, _as_rgb(sample.edges), _as_rgb(sample.depth),
                             spec_json)


class F1Evaluate(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="F1Evaluate",
            display_name="F.1 Evaluate",
            category="F1/scenes",
            is_output_node=True,  # it shows its scores in the UI even when nothing consumes them
            description="Scores each image of the batch against a caption or spec JSON with F.1's compositional "
                        "detector (objects, colours, counts, positions, styles). score = share of images that pass.",
            inputs=[
                io.Image.Input("image", tooltip="The image batch to judge."),
                io.String.Input("spec", multiline=True, default="a red circle",
                                tooltip="What the images should show: a caption or spec JSON (e.g. the spec output "
                                        "of F1SceneRender)."),
            ],
            outputs=[
                io.String.Output(display_name="report", tooltip="JSON: the caption, score, and per image whether it "
                                                                "passed, what was detected and what failed."),
                io.Float.Output(display_name="score", tooltip="Share of images that pass, 0 to 1."),
                # appended in 0.2.0: earlier outputs keep their slots, so saved workflows still connect
                io.Image.Output(display_name="annotated",
                                tooltip="Each image with a box and label per detected object and a green (pass) or "
                                        "red (fail) frame; also previewed on the node."),
            ],
        )

    @classmethod
    def validate_inputs(cls, spec):
        return f1_limits.caption_length_error("F1Evaluate", "spec", spec) or True

    @classmethod
    def execute(cls, image, spec) -> io.NodeOutput:
        raise_if_invalid(cls.validate_inputs(spec))
        parsed = _spec_from_text("F1Evaluate", spec)
        if image.ndim != 4 or image.shape[-1] != 3:
            raise ValueError(f"F1Evaluate: input 'image' must be an RGB IMAGE batch [B, H, W, 3], got shape "
                             f"{tuple(image.shape)}; convert it with an RGB image node first")
        f1_limits.raise_if_over_budget("F1Evaluate", "image", image.shape)
        results, lines, annotated = [], [], []
        side = max(ANNOTATED_MIN_SIDE, *image.shape[1:3])
        for index, frame in enumerate(image):
            comfy.model_management.throw_exception_if_processing_interrupted()
            detection = detect(frame)
            scored = score_detection(parsed, detection)
            seen = ", ".join(f"{o.style} {o.colour} {o.shape}" for o in detection.objects) or "nothing"
            results.append({"passed": scored.passed, "failures": list(scored.failures), "detected": seen})
            annotated.append(np.asarray(annotate(frame.cpu().numpy(), detection, scored.passed, side)))
            lines.append(f"image {index}: {'PASS' if scored.passed else 'FAIL'} ({scored.category}); saw {seen}"
                         + (f"; {'; '.join(scored.failures)}" if scored.failures else ""))
        score = sum(r["passed"] for r in results) / len(results)
        report = json.dumps({"caption": caption(parsed), "category": parsed.category, "score": score,
                             "images": results})
        annotated = torch.from_numpy(np.stack(annotated)).float() / 255.0
        shown = {"text": [f"score {score:.3f}"] + lines, **ui.PreviewImage(annotated, cls=cls).as_dict()}
        return io.NodeOutput(report, score, annotated, ui=shown)


NODES = [F1SceneRender, F1Evaluate]
