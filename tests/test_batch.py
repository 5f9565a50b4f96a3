"""The batch client (scripts/batch.py) against a real ComfyUI server: 20 prompts from a file, websocket progress,
retries past a dead server, outputs, manifest and contact sheet."""
import json
import subprocess
import sys

import pytest
from PIL import Image

from batch import DEFAULT_WORKFLOW, fill_workflow, read_prompts
from comfy_host import free_port

BATCH = DEFAULT_WORKFLOW.parents[2] / "scripts" / "batch.py"
TINY = "f1-tiny-random.safetensors"  # conftest's tiny checkpoint: fast on a busy CPU


@pytest.fixture
def quick_workflow(tmp_path):
    """The default txt2img template on the tiny checkpoint, with few steps."""
    graph = json.loads(DEFAULT_WORKFLOW.read_text())
    graph["1"]["inputs"]["ckpt_name"] = TINY
    graph["5"]["inputs"]["steps"] = 3
    path = tmp_path / "quick.json"
    path.write_text(json.dumps(graph))
    return path


def _run(*args):
    return subprocess.run([sys.executable, str(BATCH), *map(str, args)], capture_output=True, text=True, timeout=900)


def test_twenty_prompts_from_jsonl_over_a_dead_and_a_live_server(server, tmp_path, quick_workflow):
    prompts = tmp_path / "prompts.jsonl"
    rows = [{"prompt": f"a red circle number {i}", "seed": i} for i in range(20)]
    rows[3].update(width=128, height=64)
    prompts.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens: its jobs fail and are retried on the live one
    out = tmp_path / "out"
    done = _run(prompts, "--server", dead, "--server", server.url, "--workflow", quick_workflow, "--out", out,
                "--retries", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "step 3/3" in done.stderr  # websocket progress reached the client
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["ok"] == 20 and manifest["failed"] == 0
    jobs = manifest["jobs"]
    assert [j["prompt"] for j in jobs] == [r["prompt"] for r in rows]
    assert all(j["server"] == server.url and j["steps_seen"] == 3 for j in jobs)
    assert any(j["attempts"] > 1 and dead in j["servers_tried"] for j in jobs)
    sizes = {j["id"]: Image.open(out / j["images"][0]).size for j in jobs}
    assert sizes["0003"] == (128 * 4, 64 * 4) and sizes["0000"] == (64 * 4, 64 * 4)  # the template enlarges 4x
    sheet = Image.open(out / "contact_sheet.png")
    assert sheet.width > 4 * 192 and sheet.height > 3 * 192  # 20 tiles in rows of 5


def test_csv_rows_with_their_own_workflow_and_a_failing_job(server, tmp_path, quick_workflow):
    broken = json.loads(quick_workflow.read_text())
    broken["1"]["inputs"]["ckpt_name"] = "corrupt.safetensors"  # conftest's corrupt file: fails when it runs
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    prompts = tmp_path / "prompts.csv"
    prompts.write_text("id,prompt,seed,workflow\nfine,a blue square,7,\nbad,a green star,1,broken.json\n")
    out = tmp_path / "out"
    done = _run(prompts, "--server", server.url, "--workflow", quick_workflow, "--out", out, "--retries", "1")
    assert done.returncode == 1
    jobs = {j["id"]: j for j in json.loads((out / "manifest.json").read_text())["jobs"]}
    assert jobs["fine"]["status"] == "ok" and jobs["fine"]["seed"] == 7
    assert jobs["bad"]["status"] == "failed" and jobs["bad"]["attempts"] == 2
    assert "F1CheckpointLoader" in jobs["bad"]["error"]
    assert (out / "contact_sheet.png").is_file()


def test_fill_workflow_puts_each_field_where_the_graph_uses_it():
    graph = fill_workflow(json.loads(DEFAULT_WORKFLOW.read_text()),
                          {"prompt": "a pink star", "negative": "blur", "seed": 5, "width": 96, "height": 48})
    assert graph["2"]["inputs"]["text"] == "a pink star" and graph["3"]["inputs"]["text"] == "blur"
    assert graph["5"]["inputs"]["seed"] == 5
    assert (graph["4"]["inputs"]["width"], graph["4"]["inputs"]["height"]) == (96, 48)
    assert graph["2"]["inputs"]["clip"] == ["1", 1]  # links untouched


def test_prompt_file_rows_are_checked(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "x", "sede": 3}) + "\n")
    with pytest.raises(ValueError, match="row 1"):
        read_prompts(bad)
