"""ControlNet nodes: the F.1 ControlNet loader (a core CONTROL_NET, applied by core's Apply ControlNet (Advanced))
and hint preprocessors for what core's Canny does not cover: sketches, depth images from any source, and masks or
layouts. The preprocessors give plain IMAGEs, so they feed core's ControlNets on other models too."""
from comfy_api.latest import io

from ..f1core.control import CONDITIONS
from ..f1core.hints import INK, LAYOUT_MODES, layout_to_hint, normalize_depth, sketch_to_edges
from . import f1_limits
from .f1_control import FOLDER, load_core_controlnet
from .f1_files import checkpoint_names, checkpoint_path, register_model_folders
from .f1_inputs import declared_limits_error, raise_if_invalid

register_model_folders()


def _as_image(maps):
    """[B, H, W] in [0, 1] -> an RGB IMAGE [B, H, W, 3]."""
    return maps[..., None].expand(*maps.shape, 3).contiguous()


def _check_image(node: str, name: str, image):
    if image.ndim != 4 or image.shape[-1] not in (1, 3, 4):
        raise ValueError(f"{node}: input '{name}' must be an IMAGE batch [B, H, W, 3], got shape "
                         f"{tuple(image.shape)}; connect an image output (Load Image, a preprocessor, a render)")
    f1_limits.raise_if_over_budget(node, name, image.shape)


class F1ControlNetLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="F1ControlNetLoader",
            display_name="Load F.1 ControlNet",
            category="F1/loaders",
            description="Loads an F.1 ControlNet (.safetensors from models/f1_controlnet) as a core CONTROL_NET: "
                        "apply it with core's Apply ControlNet (Advanced) to an F.1 model's conditioning, with "
                        f"strength and start/end percent, alone or chained. Conditions: {', '.join(CONDITIONS)}.",
            inputs=[io.Combo.Input("control_net_name", options=checkpoint_names(FOLDER),
                                   tooltip="An F.1 ControlNet file in models/f1_controlnet (trained for the F.1 "
                                           "model it is applied to; scripts/train_controlnet.sh writes one).")],
            outputs=[io.ControlNet.Output(tooltip="The ControlNet for core's Apply ControlNet (Advanced); its hint is "
                                                  "an edge, depth or layout IMAGE from the F1 preprocessors, "
                                                  "F1SceneRender or another pack.")],
        )

    @classmethod
    def validate_inputs(cls, control_net_name):
        if not isinstance(control_net_name, str) or control_net_name not in checkpoint_names(FOLDER):
            return (f"F1ControlNetLoader: input 'control_net_name' '{control_net_name}' is not listed; put the "
                    ".safetensors file in models/f1_controlnet and press R to refresh "
                    "(scripts/train_controlnet.sh trains one for an F.1 checkpoint)")
        return True

    @classmethod
    def execute(cls, control_net_name) -> io.NodeOutput:
        try:
            return io.NodeOutput(load_core_controlnet(checkpoint_path(control_net_name, FOLDER)))
        except ValueError as err:
            raise ValueError(f"F1ControlNetLoader: input 'control_net_name' ({control_net_name}): {err}") from None


class F1SketchToEdges(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="F1SketchToEdges",
            display_name="F.1 Sketch to Edges",
            category="F1/controlnet",
            description="Turns a sketch or line drawing into clean edge lines for an edge ControlNet: finds the ink, "
                        "thresholds it, removes specks, thins strokes to centre lines and redraws them at an even "
                        "width. For edges of a photograph use core's Canny.",
            inputs=[
                io.Image.Input("image", tooltip="The sketch: dark lines on light paper or light lines on dark."),
                io.Float.Input("threshold", default=0.5, min=0.0, max=1.0, step=0.01,
                               tooltip="Ink strength (0 paper, 1 full ink) above which a pixel is a line; lower it "
                                       "for faint pencil."),
                io.Combo.Input("ink", options=list(INK), default="auto",
                               tooltip="Which pixels are lines: auto reads the paper from the mean brightness."),
                io.Boolean.Input("thin", default=True,
                                 tooltip="Thin strokes to one-pixel centre lines, then redraw at line_width: every "
                                         "stroke gets the width the ControlNet was trained on."),
                io.Int.Input("line_width", default=2, min=1, max=16,
                             tooltip="Width of the thinned lines in pixels (scene edges are about 2 px)."),
                io.Int.Input("min_area", default=8, min=0, max=10000,
                             tooltip="Remove specks: connected marks of fewer pixels are dropped (0 keeps all)."),
            ],
            outputs=[io.Image.Output(display_name="edges", tooltip="White edge lines on black, for Apply ControlNet.")],
        )

    @classmethod
    def validate_inputs(cls, threshold, ink, line_width, min_area):
        return declared_limits_error(cls, threshold=threshold, ink=ink, line_width=line_width,
                                     min_area=min_area) or True

    @classmethod
    def execute(cls, image, threshold, ink, thin, line_width, min_area) -> io.NodeOutput:
        raise_if_invalid(cls.validate_inputs(threshold, ink, line_width, min_area))
        _check_image("F1SketchToEdges", "image", image)
        with f1_limits.interruptible():
            edges = sketch_to_edges(image, threshold, ink, thin, line_width, min_area)
        return io.NodeOutput(_as_image(edges))


class F1DepthNormalize(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="F1DepthNormalize",
            display_name="F.1 Depth Normalize",
            category="F1/controlnet",
            description="Brings any depth image (F1SceneRender's, a depth estimator's from another pack, metric "
                        "depth) to the depth ControlNet's convention: near is bright, each image stretched to 0..1 "
                        "between two percentiles, optionally smoothed.",
            inputs=[
                io.Image.Input("depth", tooltip="A depth IMAGE from any source."),
                io.Combo.Input("near", options=["bright", "dark"], default="bright",
                               tooltip="How the input shows near things: bright (disparity, MiDaS, scene renders) "
                                       "or dark (metric depth)."),
                io.Float.Input("low_percentile", default=0.0, min=0.0, max=49.0, step=0.5,
                               tooltip="This percentile of each image becomes black; raise it a little to ignore "
                                       "an estimator's outliers (small objects are only a few percent)."),
                io.Float.Input("high_percentile", default=100.0, min=51.0, max=100.0, step=0.5,
                               tooltip="This percentile of each image becomes white."),
                io.Float.Input("blur", default=0.0, min=0.0, max=16.0, step=0.1,
                               tooltip="Gaussian smoothing in pixels (sigma) against estimator noise; 0 is off."),
            ],
            outputs=[io.Image.Output(display_name="depth", tooltip="Normalised depth, near bright, for Apply "
                                                                   "ControlNet.")],
        )

    @classmethod
    def validate_inputs(cls, near, low_percentile, high_percentile, blur):
        return declared_limits_error(cls, near=near, low_percentile=low_percentile, high_percentile=high_percentile,
                                     blur=blur) or True

    @classmethod
    def execute(cls, depth, near, low_percentile, high_percentile, blur) -> io.NodeOutput:
        raise_if_invalid(cls.validate_inputs(near, low_percentile, high_percentile, blur))
        _check_image("F1DepthNormalize", "depth", depth)
        return io.NodeOutput(_as_image(normalize_depth(depth, near, low_percentile / 100, high_percentile / 100,
                                                       blur)))


class F1LayoutToHint(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="F1LayoutToHint",
            display_name="F.1 Layout to Hint",
            category="F1/controlnet",
            description="Turns object masks (F1SceneRender's masks, F1LayoutFromPrompt's, or drawn by hand) into a "
                        "ControlNet hint: their contours for the edge ControlNet, a depth layout (lower objects "
                        "nearer) for the depth ControlNet, or filled silhouettes.",
            inputs=[
                io.Mask.Input("masks", tooltip="One mask per object [N, H, W]; values above 0.5 are inside."),
                io.Combo.Input("mode", options=list(LAYOUT_MODES), default="edges",
                               tooltip="edges: contours; depth: objects as near plates on a receding ground; "
                                       "silhouettes: the filled union."),
                io.Int.Input("line_width", default=2, min=1, max=16, tooltip="Contour width in pixels (edges mode)."),
            ],
            outputs=[io.Image.Output(display_name="hint", tooltip="The hint IMAGE for Apply ControlNet.")],
        )

    @classmethod
    def validate_inputs(cls, mode, line_width):
        return declared_limits_error(cls, mode=mode, line_width=line_width) or True

    @classmethod
    def execute(cls, masks, mode, line_width) -> io.NodeOutput:
        raise_if_invalid(cls.validate_inputs(mode, line_width))
        if masks.ndim not in (2, 3) or masks.numel() == 0:
            raise ValueError(f"F1LayoutToHint: input 'masks' must be masks [N, H, W], got shape {tuple(masks.shape)}; "
                             "connect F1SceneRender's masks or a mask node")
        f1_limits.raise_if_over_budget("F1LayoutToHint", "masks", (1, *masks.shape[-2:], 1))
        return io.NodeOutput(_as_image(layout_to_hint(masks, mode, line_width)))


NODES = [F1ControlNetLoader, F1SketchToEdges, F1DepthNormalize, F1LayoutToHint]
