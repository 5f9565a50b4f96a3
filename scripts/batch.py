"""Queue a file of prompts to one or more running ComfyUI servers and collect the images.

    python scripts/batch.py prompts.jsonl --out batch_out                       # one local server (:8188)
    python scripts/batch.py prompts.csv --server http://gpu1:8188 --server http://gpu2:8188 --retries 2

Each row of the prompts file (JSONL objects, or CSV with a header) has `prompt` and optionally `negative`,
`seed`, `width`, `height`, `workflow` and `id`. `workflow` is an API-format workflow file (relative paths are
looked up beside the prompts file, then in example_workflows/api/); the default is --workflow, itself by
default the pack's f1_txt2img. The row's values go into the workflow: `prompt`/`negative` into the text of the
nodes wired to an input named positive/negative, `seed` into every seed/noise_seed input, `width`/`height`
into every node that has both.

Each server gets one worker that queues the next job through POST /prompt and follows it on the websocket
(step progress is printed), so jobs spread over the servers as they free up. A job that fails (server
unreachable, rejected, or an execution error) is retried up to --retries more times, on whichever server is
free. OUT gets images/, manifest.json (every job: its settings, status, server, attempts, time, image paths,
error) and contact_sheet.png. The exit code is 1 if any job failed.

Needs aiohttp (ComfyUI's own environment has it)."""
from __future__ import annotations

import argparse
import asyncio
import csv
import json
import random
import sys
import textwrap
import time
import uuid
from pathlib import Path

from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_WORKFLOW = ROOT / "example_workflows" / "api" / "f1_txt2img.json"
FIELDS = ("id", "prompt", "negative", "seed", "width", "height", "workflow")


def read_prompts(path: Path) -> list[dict]:
    """Rows of a .jsonl or .csv prompts file; empty CSV cells are left out, numbers become ints."""
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".csv":
        rows = [{k.strip(): v.strip() for k, v in row.items() if k and v and v.strip()}
                for row in csv.DictReader(text.splitlines())]
    else:
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    jobs = []
    for index, row in enumerate(rows):
        unknown = set(row) - set(FIELDS)
        if unknown or not str(row.get("prompt", "")).strip():
            raise ValueError(f"{path}: row {index + 1} needs a 'prompt' and only {FIELDS} (got {sorted(row)})")
        for key in ("seed", "width", "height"):
            if key in row:
                row[key] = int(row[key])
        row["id"] = str(row.get("id", f"{index:04d}"))
        jobs.append(row)
    return jobs


def resolve_workflow(name: str | None, prompts_dir: Path, default: Path) -> Path:
    if not name:
        return default
    for candidate in (prompts_dir / name, ROOT / "example_workflows" / "api" / name, Path(name)):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"workflow {name!r} not found beside the prompts file or in example_workflows/api/")


def fill_workflow(workflow: dict, job: dict) -> dict:
    """A copy of the API workflow with the job's prompt, negative, seed and size put in."""
    graph = {k: {"class_type": v["class_type"], "inputs": dict(v["inputs"])} for k, v in workflow.items()}

    def text_nodes(role):
        sources = {v[0] for node in graph.values() for k, v in node["inputs"].items() if k == role and isinstance(v, list)}
        return [graph[s] for s in sorted(sources) if isinstance(graph[s]["inputs"].get("text"), str)]

    for role, key in (("positive", "prompt"), ("negative", "negative")):
        if key in job:
            targets = text_nodes(role)
            if not targets:
                raise ValueError(f"the workflow has no text node wired to a '{role}' input to put the {key} in")
            for node in targets:
                node["inputs"]["text"] = job[key]
    for node in graph.values():
        inputs = node["inputs"]
        if "seed" in job:
            for key in ("seed", "noise_seed"):
                if isinstance(inputs.get(key), int):
                    inputs[key] = job["seed"]
        if isinstance(inputs.get("width"), int) and isinstance(inputs.get("height"), int):
            inputs["width"] = job.get("width", inputs["width"])
            inputs["height"] = job.get("height", inputs["height"])
    return graph


def contact_sheet(images: list[Image.Image], labels: list[str], columns: int = 5, tile: int = 192) -> Image.Image:
    """Images scaled into `tile`-pixel squares (nearest, so small model outputs keep their pixels), each with a
    wrapped label under it."""
    label_height, pad = 40, 6
    columns = max(1, min(columns, len(images)))
    rows = max(1, -(-len(images) // columns))
    sheet = Image.new("RGB", (columns * (tile + pad) + pad, rows * (tile + label_height + pad) + pad), "white")
    draw = ImageDraw.Draw(sheet)
    for index, (image, label) in enumerate(zip(images, labels)):
        x = pad + (index % columns) * (tile + pad)
        y = pad + (index // columns) * (tile + label_height + pad)
        scale = tile / max(image.size)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        sheet.paste(image.convert("RGB").resize(size, Image.NEAREST), (x, y))
        draw.multiline_text((x, y + tile + 2), "\n".join(textwrap.wrap(label, 30)[:3]), fill="black", spacing=1)
    return sheet


class JobFailed(Exception):
    pass


class Progress:
    """One status line per event; on a terminal, step progress rewrites the current line."""

    def __init__(self, total: int, stream=sys.stderr):
        self.total, self.done, self.stream = total, 0, stream
        self.live = stream.isatty()

    def say(self, text: str):
        self.stream.write(("\r\033[K" if self.live else "") + text + "\n")
        self.stream.flush()

    def step(self, job: dict, server: str, value: int, maximum: int):
        line = f"[{self.done}/{self.total}] {job['id']} on {server}: step {value}/{maximum}"
        if self.live:
            self.stream.write("\r\033[K" + line)
            self.stream.flush()
        elif value == maximum:
            self.say(line)


async def run_job(session, server: str, graph: dict, job: dict, out: Path, progress: Progress,
                  timeout: float) -> dict:
    """Queue one graph on one server, follow it on the websocket, download its output images."""
    import aiohttp

    client_id = uuid.uuid4().hex
    steps_seen = 0
    async with session.ws_connect(f"{server}/ws?clientId={client_id}") as ws:
        async with session.post(f"{server}/prompt", json={"prompt": graph, "client_id": client_id}) as r:
            body = await r.json(content_type=None)
            if r.status != 200:
                raise JobFailed(f"/prompt rejected it ({r.status}): {json.dumps(body)[:500]}")
        prompt_id = body["prompt_id"]
        deadline = time.monotonic() + timeout
        while True:
            msg = await ws.receive(timeout=max(1.0, deadline - time.monotonic()))
            if msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                raise JobFailed("the server closed the websocket")
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue  # binary frames are live previews
            event = json.loads(msg.data)
            data = event.get("data", {})
            if data.get("prompt_id") not in (None, prompt_id):
                continue
            if event["type"] == "progress":
                steps_seen = max(steps_seen, data["value"])
                progress.step(job, server, data["value"], data["max"])
            elif event["type"] == "execution_error":
                raise JobFailed(f"{data.get('node_type')}: {data.get('exception_message', '').strip()}")
            elif event["type"] == "execution_interrupted":
                raise JobFailed("interrupted on the server")
            elif event["type"] == "executing" and data.get("node") is None and data.get("prompt_id") == prompt_id:
                break
    async with session.get(f"{server}/history/{prompt_id}") as r:
        entry = (await r.json())[prompt_id]
    paths = []
    for node_output in entry.get("outputs", {}).values():
        for image in node_output.get("images", []):
            if image.get("type") != "output":
                continue
            params = {"filename": image["filename"], "subfolder": image.get("subfolder", ""), "type": "output"}
            async with session.get(f"{server}/view", params=params) as r:
                if r.status != 200:
                    raise JobFailed(f"/view {image['filename']}: HTTP {r.status}")
                path = out / "images" / f"{job['id']}_{len(paths)}{Path(image['filename']).suffix}"
                path.write_bytes(await r.read())
                paths.append(path)
    if not paths:
        raise JobFailed("the workflow produced no output image (does it end in SaveImage?)")
    return {"prompt_id": prompt_id, "images": [str(p.relative_to(out)) for p in paths], "steps_seen": steps_seen}


async def run_batch(jobs: list[dict], servers: list[str], out: Path, retries: int = 1, timeout: float = 600.0,
                    progress: Progress | None = None) -> list[dict]:
    import aiohttp

    progress = progress or Progress(len(jobs))
    (out / "images").mkdir(parents=True, exist_ok=True)
    queue: asyncio.Queue = asyncio.Queue()
    for job in jobs:
        job.setdefault("attempts", 0)
        queue.put_nowait(job)
    pending = len(jobs)
    finished = asyncio.Event()

    def settle():
        nonlocal pending
        pending -= 1
        progress.done += 1
        if pending == 0:
            finished.set()

    async def worker(server: str, session):
        failures_in_a_row = 0
        while not finished.is_set():
            try:
                job = await asyncio.wait_for(queue.get(), 0.5)
            except asyncio.TimeoutError:
                continue
            if server in job.get("servers_tried", ()) and any(w is not asyncio.current_task() and not w.done()
                                                             for w in workers):
                queue.put_nowait(job)  # it already failed here: let another server try it
                await asyncio.sleep(0.2)
                continue
            job["attempts"] += 1
            started = time.monotonic()
            try:
                result = await run_job(session, server, job["graph"], job, out, progress, timeout)
            except (JobFailed, aiohttp.ClientError, asyncio.TimeoutError, OSError, KeyError) as err:
                job["error"] = f"{type(err).__name__}: {err}" if not isinstance(err, JobFailed) else str(err)
                job.setdefault("servers_tried", []).append(server)
                failures_in_a_row += 1
                if job["attempts"] <= retries:
                    progress.say(f"{job['id']} failed on {server} ({job['error'][:200]}); retrying")
                    queue.put_nowait(job)
                else:
                    job["status"] = "failed"
                    settle()
                    progress.say(f"[{progress.done}/{progress.total}] {job['id']} FAILED: {job['error'][:300]}")
                if failures_in_a_row >= 3:  # this server looks down or broken: leave its jobs to the others
                    progress.say(f"{server}: 3 failures in a row, no more jobs sent there")
                    if not any(w is not asyncio.current_task() and not w.done() for w in workers):
                        while not queue.empty():
                            left = queue.get_nowait()
                            left["status"] = "failed"
                            settle()
                    return
                await asyncio.sleep(min(2.0, 0.2 * job["attempts"]) + random.random() * 0.1)
                continue
            failures_in_a_row = 0
            job.update(result, status="ok", server=server, seconds=round(time.monotonic() - started, 2))
            job.pop("error", None)
            settle()
            progress.say(f"[{progress.done}/{progress.total}] {job['id']} done on {server} in {job['seconds']}s")

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=10)) as session:
        workers = [asyncio.create_task(worker(server.rstrip("/"), session)) for server in servers]
        waiter = asyncio.create_task(finished.wait())
        while not finished.is_set() and any(not w.done() for w in workers):
            await asyncio.wait([waiter, *(w for w in workers if not w.done())], return_when=asyncio.FIRST_COMPLETED)
        for task in (waiter, *workers):
            task.cancel()
    for job in jobs:
        job.setdefault("status", "failed")
        job.setdefault("error", "no server was left to run it")
    return jobs


def write_results(jobs: list[dict], out: Path, servers: list[str], started: float) -> dict:
    records = [{k: v for k, v in job.items() if k != "graph"} for job in jobs]
    manifest = {"started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
                "seconds": round(time.time() - started, 2), "servers": servers,
                "ok": sum(j["status"] == "ok" for j in jobs), "failed": sum(j["status"] != "ok" for j in jobs),
                "contact_sheet": "contact_sheet.png", "jobs": records}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    shown = [j for j in jobs if j["status"] == "ok"]
    images = [Image.open(out / j["images"][0]) for j in shown]
    labels = [f"{j['id']}: {j['prompt']}" + (f" (seed {j['seed']})" if "seed" in j else "") for j in shown]
    contact_sheet(images, labels).save(out / "contact_sheet.png")
    return manifest


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("prompts", type=Path, help="a .jsonl or .csv file of prompts")
    parser.add_argument("--server", action="append", help="a ComfyUI URL (repeat for several); "
                                                          "default http://127.0.0.1:8188")
    parser.add_argument("--out", type=Path, default=Path("batch_out"))
    parser.add_argument("--workflow", type=Path, default=DEFAULT_WORKFLOW, help="API-format workflow for rows "
                                                                                "without their own")
    parser.add_argument("--retries", type=int, default=1, help="extra attempts for a failed job")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds one job may take")
    args = parser.parse_args(argv)
    servers = args.server or ["http://127.0.0.1:8188"]
    started = time.time()
    jobs = read_prompts(args.prompts)
    for job in jobs:
        workflow = resolve_workflow(job.get("workflow"), args.prompts.parent, args.workflow)
        job["graph"] = fill_workflow(json.loads(workflow.read_text()), job)
    args.out.mkdir(parents=True, exist_ok=True)
    asyncio.run(run_batch(jobs, servers, args.out, args.retries, args.timeout))
    manifest = write_results(jobs, args.out, servers, started)
    print(f"{manifest['ok']} of {len(jobs)} jobs done; {args.out / 'manifest.json'}, "
          f"{args.out / 'contact_sheet.png'}")
    return 1 if manifest["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
