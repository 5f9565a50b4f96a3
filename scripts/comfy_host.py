"""Boot a real ComfyUI with this pack on a free loopback port, queue API workflows, and collect results.

Used by `make demo` and by the integration tests; standard library only, so any Python can drive it."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_INPUTS = ROOT / "example_workflows" / "input"  # files the templates' LoadImage nodes name


def comfy_dir() -> Path:
    path = Path(os.environ.get("COMFYUI_DIR") or ROOT / ".comfyui")
    if not (path / "main.py").is_file():
        raise RuntimeError(f"no ComfyUI at {path}: run `make setup` (or set COMFYUI_DIR to your ComfyUI)")
    if not (path / "custom_nodes" / "ComfyUI-F1").exists():
        raise RuntimeError(f"the pack is not linked into {path}/custom_nodes: run `make setup`")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ComfyServer:
    """One ComfyUI process. `models` maps ComfyUI folder names (e.g. "f1") to extra directories."""

    def __init__(self, workdir: Path | None = None, models: dict[str, Path] | None = None,
                 python: str = sys.executable, extra_args: tuple[str, ...] = ()):
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="f1-comfy-"))
        self.models = models or {}
        self.python = python
        self.extra_args = extra_args
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        self.log_path = self.workdir / "comfyui.log"

    @property
    def output_dir(self) -> Path:
        return self.workdir / "output"

    def start(self, timeout: float = 180.0) -> "ComfyServer":
        for sub in ("output", "input", "temp", "user"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        for path in EXAMPLE_INPUTS.glob("*"):
            shutil.copy(path, self.workdir / "input" / path.name)
        cmd = [self.python, str(comfy_dir() / "main.py"), "--cpu", "--listen", "127.0.0.1",
               "--port", str(self.port), "--disable-auto-launch", "--preview-method", "auto",
               "--output-directory", str(self.output_dir), "--input-directory", str(self.workdir / "input"),
               "--temp-directory", str(self.workdir / "temp"), "--user-directory", str(self.workdir / "user"),
               "--database-url", f"sqlite:///{self.workdir / 'comfyui.db'}",
               *self.extra_args]
        if self.models:
            yaml_path = self.workdir / "extra_model_paths.yaml"
            lines = ["f1_host:", f"    base_path: {self.workdir}"]
            lines += [f"    {folder}: {Path(path).resolve()}" for folder, path in self.models.items()]
            yaml_path.write_text("\n".join(lines) + "\n")
            cmd += ["--extra-model-paths-config", str(yaml_path)]
        self._log = open(self.log_path, "w")
        self.process = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, cwd=str(comfy_dir()))
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                self.get("/system_stats")
                return self
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"ComfyUI did not answer within {timeout:.0f}s:\n{self.log_tail()}")

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
        if getattr(self, "_log", None):
            self._log.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    # HTTP
    def get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=30) as r:
            return json.loads(r.read())

    def post(self, path: str, payload: dict) -> tuple[int, dict]:
        req = urllib.request.Request(self.url + path, data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def queue(self, graph: dict) -> tuple[int, dict]:
        return self.post("/prompt", {"prompt": graph, "client_id": uuid.uuid4().hex})

    def wait(self, prompt_id: str, timeout: float = 600.0) -> dict:
        deadline = time.time() + timeout
        while time.time() < deadline:
            history = self.get(f"/history/{prompt_id}")
            if prompt_id in history and history[prompt_id].get("status", {}).get("completed") is not None:
                entry = history[prompt_id]
                if entry["status"]["status_str"] in ("success", "error"):
                    return entry
            if not self.alive():
                raise RuntimeError(f"ComfyUI died while running {prompt_id}:\n{self.log_tail()}")
            time.sleep(0.5)
        raise TimeoutError(f"prompt {prompt_id} did not finish in {timeout:.0f}s")

    def run(self, graph: dict, timeout: float = 600.0) -> dict:
        status, body = self.queue(graph)
        if status != 200:
            raise RuntimeError(f"/prompt rejected the workflow ({status}): {json.dumps(body)[:2000]}")
        return self.wait(body["prompt_id"], timeout)

    def output_images(self, entry: dict, kind: str = "output") -> list[Path]:
        """The saved images of a run (kind "temp": the previews)."""
        folder = {"output": self.output_dir, "temp": self.workdir / "temp" / "temp"}[kind]  # ComfyUI adds "temp"
        paths = []
        for node_output in entry.get("outputs", {}).values():
            for image in node_output.get("images", []):
                if image.get("type") == kind:
                    paths.append(folder / image.get("subfolder", "") / image["filename"])
        return paths


def error_message(entry: dict) -> str:
    for kind, data in entry.get("status", {}).get("messages", []):
        if kind == "execution_error":
            return f"{data.get('node_type')}: {data.get('exception_message')}"
    return ""
