"""Hostile prompts against the real server (issue 14): generated from every F1 node's schema, so nodes added later
are covered too. Each case is one prompt holding the node under test, valid providers for its links and a
PreviewAny sink. Asserted for every case: the server survives, the prompt ends within 30 s, a value outside the
declared limits is never accepted, and a refusal names the node and the input. Most cases fail at validation,
so the whole run takes seconds."""
import json
import math
import os
import time

from safetensors import safe_open
from safetensors.torch import save_file

from comfy_host import error_message
from comfy_inprocess import import_comfy, import_pack
from conftest import DEFAULT_CKPT, TINY_CONTROLNET

HANG_GUARD_S = 30.0
# Small sizes keep the cases that do run fast; each value stays inside the node's declared limits.
SMALL = {"width": 64, "height": 64, "batch_size": 1, "steps": 2, "min_steps": 1, "max_steps": 3, "probe_steps": 2,
         "text": "a red circle", "spec": "a red circle", "prompt": "a red circle", "ckpt_name": DEFAULT_CKPT,
         "control_net_name": TINY_CONTROLNET}

HOSTILE_SPECS = [
    "[" * 5000 + "]" * 5000,                                     # nesting beyond the JSON parser's recursion
    json.dumps({"objects": [{"shape": ["circle"]}]}),            # a list where a name belongs
    json.dumps({"objects": [{"shape": "circle", "colour": {"r": 1}}]}),
    json.dumps({"objects": [{"shape": "circle", "count": 10 ** 30}]}),
    json.dumps({"objects": [{"shape": "circle"}] * 500}),
    json.dumps({"objects": [{"shape": "circle", "relation": {"kind": "left of", "anchor": 7}}]}),
    json.dumps({"objects": "circle"}),
    '{"objects": [',
    "a red circle " * 8000,                                      # the caption that once ran for minutes
    "a red circle to the left of " * 100 + "a blue square",
    "\u202e\u0000\ufffd",
]


def _schemas():
    import_comfy()
    return {node.GET_SCHEMA().node_id: node.GET_SCHEMA() for node in import_pack("nodes").all_nodes()}


def _io_type(spec) -> str:
    return spec.get_io_type() if hasattr(spec, "get_io_type") else spec.io_type


class GraphBuilder:
    """Builds a valid graph around one node: every link input gets a provider built from an F1 node that
    outputs that type (recursively, with defaults), and the node's first output feeds a PreviewAny."""

    def __init__(self, schemas):
        self.schemas = schemas
        self.makers = {}
        for node_id, schema in schemas.items():
            for slot, output in enumerate(schema.outputs):
                self.makers.setdefault(str(output.get_io_type()), (node_id, slot))

    @staticmethod
    def widget_default(spec):
        if spec.id in SMALL:
            return SMALL[spec.id]
        if getattr(spec, "options", None):
            return spec.default if spec.default is not None else spec.options[0]
        if spec.default is not None:
            return spec.default
        return getattr(spec, "min", None) or ""

    def add(self, graph, node_id, visiting=()):
        key = f"{node_id}_{len(graph)}"
        inputs = {}
        graph[key] = {"class_type": node_id, "inputs": inputs}
        for spec in self.schemas[node_id].inputs:
            io_type = str(_io_type(spec))
            if io_type in ("INT", "FLOAT", "STRING", "COMBO", "BOOLEAN"):
                inputs[spec.id] = self.widget_default(spec)
            elif not spec.optional:
                maker = self.makers.get(io_type)
                if maker is None or maker[0] in visiting:
                    raise LookupError(f"no provider for {io_type}")
                inputs[spec.id] = [self.add(graph, maker[0], visiting + (node_id,)), maker[1]]
        return key

    def graph_for(self, node_id):
        graph = {}
        key = self.add(graph, node_id)
        graph["sink"] = {"class_type": "PreviewAny", "inputs": {"source": [key, 0]}}
        return graph, key


def _number_cases(spec):
    """(value, must_refuse) pairs for a number input: outside its declared range, non-finite, wrong type."""
    is_int = str(_io_type(spec)) == "INT"
    low, high = getattr(spec, "min", None), getattr(spec, "max", None)
    huge = 10 ** 400 if is_int else 1e308
    cases = [("abc", True), (None, True), ({"x": 1}, True), ([1, 2, 3], True), (huge, high is not None)]
    if not is_int:
        cases += [(math.nan, True), (math.inf, True), (-math.inf, True)]
    if low is not None:
        cases += [(low - 1, True), (-(2 ** 63), True)]
    if high is not None:
        cases += [(high + 1, True)]
    if is_int and low is not None:
        cases += [(low, False)]
    return cases


def _string_cases(spec):
    cases = [("x" * 200_000, None), ("\ud800\u0000" * 100, None), ("{}", None), (12345, None)]
    if spec.id == "spec":
        cases += [(text, None) for text in HOSTILE_SPECS]
    return cases


def _cases(schemas):
    """(label, graph, node key, node id, input name, must_refuse) for every hostile case."""
    builder = GraphBuilder(schemas)
    out = []
    for node_id, schema in sorted(schemas.items()):
        try:
            base, key = builder.graph_for(node_id)
        except LookupError:
            continue
        out.append((f"{node_id} valid", base, key, node_id, None, False))

        def variant(name, value, refuse, label):
            graph = json.loads(json.dumps(base))
            if value is _MISSING:
                graph[key]["inputs"].pop(name, None)
            else:
                graph[key]["inputs"][name] = value
            out.append((f"{node_id}.{name} {label}", graph, key, node_id, name, refuse))

        for spec in schema.inputs:
            io_type = str(_io_type(spec))
            if not spec.optional:
                variant(spec.id, _MISSING, True, "missing")
            if io_type in ("INT", "FLOAT"):
                for value, refuse in _number_cases(spec):
                    variant(spec.id, value, refuse, f"= {str(value)[:20]}")
            elif io_type == "COMBO":
                for value in ("not-an-option", 7, "", "../../../etc/passwd", "/etc/passwd"):
                    variant(spec.id, value, True, f"= {value!r}")
            elif io_type == "STRING":
                for value, refuse in _string_cases(spec):
                    variant(spec.id, value, refuse, f"= {str(value)[:20]!r}")
            elif io_type != "BOOLEAN":
                # graph faults: core refuses them in its own validator, in its own words
                variant(spec.id, ["nowhere", 0], GRAPH_FAULT, "linked to a missing node")
                variant(spec.id, [key, 0], GRAPH_FAULT, "linked to itself")
                variant(spec.id, [next(k for k in base if k != key and k != "sink"), 99]
                        if len(base) > 2 else ["nowhere", 5], GRAPH_FAULT, "linked to a missing slot")
                wrong = "F1SceneRender" if io_type != "IMAGE" else "F1CheckpointLoader"
                graph = json.loads(json.dumps(base))
                graph["wrong"] = {"class_type": wrong, "inputs": {k: builder.widget_default(s) for s in
                                                                  schemas[wrong].inputs for k in [s.id]}}
                graph[key]["inputs"][spec.id] = ["wrong", 0]
                out.append((f"{node_id}.{spec.id} of the wrong type", graph, key, node_id, spec.id, True))
    return out


_MISSING = object()
GRAPH_FAULT = "graph fault"  # must be refused; the refusal is core's, so it need not name the input


def _hostile_checkpoints(folder, outside):
    """Files in models/f1 that must be refused, with the reason the error has to give."""
    source = folder / DEFAULT_CKPT
    with safe_open(str(source), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        metadata = dict(f.metadata())
    config = json.loads(metadata["f1.config"])

    def variant(name, **changes):
        save_file(tensors, str(folder / name), metadata={**metadata, **changes})

    variant("fuzz-rgb-json.safetensors", **{"f1.latent_rgb": "{not json"})
    variant("fuzz-rgb-shape.safetensors", **{"f1.latent_rgb": json.dumps({"factors": [[1, 2, 3]], "bias": [0, 0, 0]})})
    variant("fuzz-rgb-nan.safetensors", **{"f1.latent_rgb": json.dumps(
        {"factors": [[float("nan")] * 3] * config["unet"]["in_channels"], "bias": [0, 0, 0]})})
    huge = json.loads(json.dumps(config))
    huge["unet"]["model_channels"] = 1_000_000
    variant("fuzz-huge-config.safetensors", **{"f1.config": json.dumps(huge)})
    variant("fuzz-config-json.safetensors", **{"f1.config": "[" * 3000})
    variant("fuzz-not-f1.safetensors", **{"f1.format": "something-else"})
    data = source.read_bytes()
    (folder / "fuzz-truncated.safetensors").write_bytes(data[: len(data) // 2])
    (folder / "fuzz-pickle.safetensors").write_bytes(b"\x80\x04\x95cos\nsystem\n(S'echo owned'\ntR.")
    (folder / "fuzz-empty.safetensors").write_bytes(b"")
    (outside / "outside.safetensors").write_bytes(data)
    os.symlink(outside / "outside.safetensors", folder / "fuzz-link-out.safetensors")
    os.symlink(source, folder / "fuzz-link-in.safetensors")
    loaded = ["fuzz-rgb-json", "fuzz-rgb-shape", "fuzz-rgb-nan", "fuzz-huge-config", "fuzz-config-json",
              "fuzz-not-f1", "fuzz-truncated", "fuzz-pickle", "fuzz-empty"]
    return [f"{n}.safetensors" for n in loaded], ["fuzz-link-out.safetensors", "fuzz-link-in.safetensors"]


def _names_node_and_input(text: str, node_id: str, input_name: str | None) -> bool:
    return node_id in text and (input_name is None or input_name in text)


def _run(server, graph):
    """(verdict, text, seconds): verdict is 'refused' (400 at /prompt), 'success' or 'error'."""
    started = time.time()
    status, body = server.queue(graph)
    if status != 200:
        return "refused", json.dumps(body), time.time() - started
    entry = server.wait(body["prompt_id"], timeout=HANG_GUARD_S)
    return entry["status"]["status_str"], error_message(entry), time.time() - started


def _refusal_text(body_text: str, key: str) -> str:
    """The node's own errors from a 400 answer, with its class_type, so the check is about this node."""
    body = json.loads(body_text)
    node = body.get("node_errors", {}).get(key)
    if node is None:
        return json.dumps(body.get("error", body))
    return node["class_type"] + " " + json.dumps(node["errors"])


def test_hostile_prompts_are_refused_or_fail_cleanly(server, f1_models, tmp_path):
    schemas = _schemas()
    cases = _cases(schemas)
    loaded, links = _hostile_checkpoints(f1_models, tmp_path)
    builder = GraphBuilder(schemas)
    for name in loaded + links:
        graph, key = builder.graph_for("F1CheckpointLoader")
        graph[key]["inputs"]["ckpt_name"] = name
        cases.append((f"checkpoint {name}", graph, key, "F1CheckpointLoader", "ckpt_name", True))
    faults = [{"1": {"inputs": {}}}, {"1": {"class_type": "NoSuchNode", "inputs": {}}}, {},
              {"1": {"class_type": "F1EmptyLatent", "inputs": "width"}},
              {"1": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}]
    cases += [(f"graph fault {i}", g, None, None, None, GRAPH_FAULT) for i, g in enumerate(faults)]
    assert len(cases) >= 300, len(cases)

    problems, slowest = [], (0.0, "")
    for label, graph, key, node_id, input_name, must_refuse in cases:
        verdict, text, seconds = _run(server, graph)
        slowest = max(slowest, (seconds, label))
        if verdict == "refused" and key is not None:
            text = _refusal_text(text, key)
        problem = None
        if seconds > HANG_GUARD_S:
            problem = f"took {seconds:.1f} s"
        elif node_id and input_name is None and not must_refuse and verdict != "success":
            problem = f"the valid baseline failed: {text[:300]}"
        elif verdict == "success" and must_refuse:
            problem = "accepted a value outside the declared limits"
        elif verdict == "error" and node_id and not _names_node_and_input(text, node_id, input_name):
            problem = f"error does not name {node_id} and '{input_name}': {text[:300]}"
        elif verdict != "refused" and must_refuse == GRAPH_FAULT:
            problem = f"a graph fault was not refused: {verdict} {text[:300]}"
        elif verdict == "refused" and node_id and input_name and must_refuse != GRAPH_FAULT and input_name not in text:
            problem = f"refusal does not name '{input_name}': {text[:300]}"
        if problem:
            problems.append(f"{label}: {problem}")
        assert server.alive(), f"the server died on {label}:\n{server.log_tail()}"
    assert server.get("/system_stats")["system"]["comfyui_version"]
    print(f"fuzz: {len(cases)} cases, slowest {slowest[0]:.1f} s ({slowest[1]})")
    assert not problems, f"{len(problems)} of {len(cases)} cases failed:\n  " + "\n  ".join(problems)
