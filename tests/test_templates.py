"""The pack as the stock frontend meets it: templates the browser lists and can open, each with a thumbnail,
laid out to fit the canvas, and the web extension that shows the nodes' text results."""
import io
import json
import urllib.request

import numpy as np
from PIL import Image

from comfy_host import error_message
from workflows import API, MIN_SCALE, TEMPLATES, VIEW, api_workflows, strip_meta, thumbnail, ui_twin

PACK = "ComfyUI-F1"  # the folder name under custom_nodes/, as `make setup` links it


def _fetch(server, path: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(server.url + path, timeout=30) as r:
        return r.status, r.read()


def test_every_api_twin_has_a_ui_template_and_a_thumbnail():
    apis = {p.stem for p in api_workflows()}
    assert apis, f"no API workflows in {API}"
    assert {p.stem for p in TEMPLATES.glob("*.json")} == apis
    assert {p.stem for p in TEMPLATES.glob("*.jpg")} == apis
    for path in api_workflows():
        with Image.open(thumbnail(path)) as image:
            assert image.format == "JPEG" and min(image.size) >= 128


def test_templates_fit_the_canvas_at_a_readable_zoom():
    for path in api_workflows():
        ui = json.loads(ui_twin(path).read_text())
        view = ui["extra"]["ds"]
        right = max(n["pos"][0] + n["size"][0] for n in ui["nodes"]) + view["offset"][0]
        bottom = max(n["pos"][1] + n["size"][1] for n in ui["nodes"]) + view["offset"][1]
        assert view["scale"] >= MIN_SCALE, path.name
        assert right * view["scale"] <= VIEW[0] and bottom * view["scale"] <= VIEW[1], (path.name, right, bottom)


def test_template_browser_lists_only_loadable_ui_workflows_with_thumbnails(server):
    listed = server.get("/workflow_templates")[PACK]
    assert sorted(listed) == sorted(p.stem for p in api_workflows())
    for name in listed:
        status, body = _fetch(server, f"/api/workflow_templates/{PACK}/{name}.json")
        workflow = json.loads(body)
        # what the frontend needs to open it: the UI format's version, nodes and links
        assert status == 200 and "version" in workflow and workflow["nodes"] and "links" in workflow, name
        status, body = _fetch(server, f"/api/workflow_templates/{PACK}/{name}.jpg")
        assert status == 200 and Image.open(io.BytesIO(body)).format == "JPEG", name


def test_results_extension_is_served_to_the_frontend(server):
    script = f"/extensions/{PACK}/js/f1_results.js"
    assert script in server.get("/extensions")
    status, body = _fetch(server, script)
    assert status == 200 and b"registerExtension" in body and b"onExecuted" in body


def test_evaluate_shows_its_verdict_and_an_annotated_image(server):
    graph = strip_meta(json.loads((API / "f1_scene_eval.json").read_text()))
    graph["9"] = {"class_type": "SaveImage", "inputs": {"images": ["2", 2], "filename_prefix": "annotated"}}
    entry = server.run(graph)
    assert entry["status"]["status_str"] == "success", error_message(entry)
    shown = entry["outputs"]["2"]
    assert shown["text"][0] == "score 1.000" and "PASS" in shown["text"][1]
    assert [image["type"] for image in shown["images"]] == ["temp"]  # the annotated image, previewed on the node
    path = next(p for p in server.output_images(entry) if p.name.startswith("annotated"))
    annotated = np.asarray(Image.open(path).convert("RGB")).astype(int)
    assert annotated.shape == (256, 256, 3)
    assert np.abs(annotated[1, 128] - (40, 160, 70)).sum() < 30  # the green frame of a pass
    boxes = np.abs(annotated - (0, 200, 255)).sum(-1) < 30  # one cyan box per detected object
    assert boxes[:, :128].any() and boxes[:, 128:].any()
