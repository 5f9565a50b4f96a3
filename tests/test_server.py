"""Integration tests against a real ComfyUI server with the pack installed."""
import json
import time

import numpy as np
import pytest
from PIL import Image

from comfy_host import error_message
from comfy_inprocess import import_comfy, import_pack
from workflows import api_workflows, missing_weights, runnable_workflows, strip_meta, ui_to_api, ui_twin

SHIPPED_CKPT = "f1-tiny-scenes.safetensors"  # the trained default in the pack's models/, loaded by the workflows


@pytest.fixture(scope="module")
def object_info(server):
    return server.get("/object_info")


def test_object_info_lists_every_f1_node_with_its_inputs(object_info):
    import_comfy()
    nodes = import_pack("nodes").all_nodes()
    core_stages = {"F1CheckpointLoader", "F1TextEncode", "F1EmptyLatent", "F1VAEEncode", "F1VAEDecode", "F1Sampler"}
    assert core_stages <= {node.GET_SCHEMA().node_id for node in nodes}
    for node in nodes:
        schema = node.GET_SCHEMA()
        assert schema.node_id.startswith("F1"), schema.node_id
        info = object_info.get(schema.node_id)
        assert info is not None, f"{schema.node_id} missing from /object_info"
        listed = {**info["input"].get("required", {}), **info["input"].get("optional", {})}
        assert set(listed) == {i.id for i in schema.inputs}, schema.node_id


def test_checkpoint_list_holds_only_safetensors(object_info, f1_models):
    (f1_models / "not_a_model.ckpt").write_bytes(b"pickle would run code")
    names = object_info["F1CheckpointLoader"]["input"]["required"]["ckpt_name"][1]["options"]
    assert {"f1-tiny-random.safetensors", SHIPPED_CKPT} <= set(names)  # models/f1 and the pack's models/
    assert all(n.endswith(".safetensors") for n in names)


@pytest.mark.parametrize("path", runnable_workflows(), ids=lambda p: p.stem)  # not those awaiting weights
def test_api_workflow_renders_a_png_of_the_requested_size(server, path):
    graph = strip_meta(json.loads(path.read_text()))
    entry = server.run(graph)
    assert entry["status"]["status_str"] == "success", error_message(entry)
    images = server.output_images(entry)
    assert len(images) == 1
    size_node = next(n for n in graph.values() if "width" in n["inputs"])
    scale = next((n["inputs"]["scale_by"] for n in graph.values() if n["class_type"] == "ImageScaleBy"), 1)
    image = np.asarray(Image.open(images[0]))
    assert image.shape == (size_node["inputs"]["height"] * scale, size_node["inputs"]["width"] * scale, 3)
    assert image.std() > 1.0  # not a flat (e.g. NaN-turned-black) image


def test_a_controlnet_template_without_its_file_says_which_file_is_missing(server):
    graph = _graph("f1_controlnet_sketch.json")
    graph[next(i for i, n in graph.items() if n["class_type"] == "F1ControlNetLoader")]["inputs"][
        "control_net_name"] = "f1-untrained-edges.safetensors"  # e.g. a template shared without its ControlNet
    missing = missing_weights(graph)
    assert missing
    status, body = server.queue(graph)  # the rest of the graph (its hint preview) may still run
    for node_id, name in missing.items():
        details = " ".join(e.get("details", "") for e in body["node_errors"][node_id]["errors"])
        assert name in details and "train_controlnet.sh" in details, (status, body)


@pytest.mark.parametrize("path", api_workflows(), ids=lambda p: p.stem)
def test_ui_workflow_matches_its_api_twin(object_info, path):
    ui = json.loads(ui_twin(path).read_text())
    assert ui_to_api(ui, object_info) == strip_meta(json.loads(path.read_text()))


def test_demo_workflow_loads_the_shipped_default():
    assert _graph()["1"]["inputs"]["ckpt_name"] == SHIPPED_CKPT


def _graph(name="f1_txt2img.json"):
    from workflows import API
    return strip_meta(json.loads((API / name).read_text()))


def test_unknown_checkpoint_is_rejected_naming_the_input(server):
    graph = _graph()
    graph["1"]["inputs"]["ckpt_name"] = "does-not-exist.safetensors"
    status, body = server.queue(graph)
    assert status == 400
    errors = body["node_errors"]["1"]["errors"]
    assert any(e["extra_info"].get("input_name") == "ckpt_name" for e in errors)


def test_a_workflow_naming_the_retired_regions_model_loads_the_default(server):
    graph = _graph()
    graph["1"]["inputs"]["ckpt_name"] = "f1-tiny-scenes-regions.safetensors"  # once the regional model, now the default
    assert server.run(graph)["status"]["status_str"] == "success"


def test_corrupt_checkpoint_fails_with_a_clear_error_and_server_keeps_serving(server):
    graph = _graph()
    graph["1"]["inputs"]["ckpt_name"] = "corrupt.safetensors"
    entry = server.run(graph)
    assert entry["status"]["status_str"] == "error"
    message = error_message(entry)
    assert "F1CheckpointLoader" in message and "ckpt_name" in message and "safetensors" in message
    assert server.alive() and server.get("/system_stats")["system"]["comfyui_version"]


def test_mismatched_latent_names_the_input(server):
    graph = _graph()
    graph["4"] = {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}}
    graph["6"]["inputs"]["samples"] = ["4", 0]  # core's 4-channel latent straight into the F.1 decoder
    entry = server.run(graph)
    assert entry["status"]["status_str"] == "error"
    message = error_message(entry)
    assert "F1VAEDecode" in message and "'samples'" in message and "F1EmptyLatent" in message


def test_bad_size_is_rejected_before_running(server):
    graph = _graph()
    graph["4"]["inputs"]["width"] = 250
    status, body = server.queue(graph)
    assert status == 400 and "width" in json.dumps(body) and "multiple of 16" in json.dumps(body)


def test_interrupt_stops_a_long_sampling_run(server):
    graph = _graph()
    graph["5"]["inputs"]["steps"] = 400
    graph["4"]["inputs"].update(width=512, height=512)  # slow enough to be caught mid-run
    graph["5"]["inputs"]["seed"] = 99  # not cached
    status, body = server.queue(graph)
    assert status == 200
    deadline = time.time() + 60
    while time.time() < deadline and not server.get("/queue")["queue_running"]:
        time.sleep(0.2)
    time.sleep(3)
    started = time.time()
    server.post("/interrupt", {})
    entry = server.wait(body["prompt_id"], timeout=120)
    assert time.time() - started < 30
    kinds = [kind for kind, _ in entry["status"]["messages"]]
    assert "execution_interrupted" in kinds
    assert server.run(_graph())["status"]["status_str"] == "success"  # and the queue still works


def test_progress_and_latent_previews_reach_the_websocket(server):
    import asyncio
    import uuid

    import aiohttp

    graph = _graph()
    graph["5"]["inputs"]["steps"] = 6
    graph["5"]["inputs"]["seed"] = 1234

    async def run():
        client_id = uuid.uuid4().hex
        progress, previews = [], 0
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"{server.url}/ws?clientId={client_id}") as ws:
                async with session.post(f"{server.url}/prompt", json={"prompt": graph, "client_id": client_id}) as r:
                    prompt_id = (await r.json())["prompt_id"]
                async for msg in ws:
                    if msg.type == aiohttp.WSMsgType.BINARY:
                        previews += 1
                    elif msg.type == aiohttp.WSMsgType.TEXT:
                        data = json.loads(msg.data)
                        if data["type"] == "progress" and data["data"].get("node") == "5":
                            progress.append(data["data"]["value"])
                        if data["type"] == "executing" and data["data"].get("node") is None \
                                and data["data"].get("prompt_id") == prompt_id:
                            break
        return progress, previews

    progress, previews = asyncio.run(asyncio.wait_for(run(), 300))
    assert progress[-1] == 6 and len(progress) >= 6
    assert previews >= 6  # a Latent2RGB preview per step, from the checkpoint's fitted colour factors


def test_scene_render_scores_itself_through_the_server(server):
    entry = server.run(_graph("f1_scene_eval.json"))
    assert entry["status"]["status_str"] == "success", error_message(entry)
    shown = entry["outputs"]["2"]["text"]
    assert shown[0] == "score 1.000" and "PASS" in shown[1]
