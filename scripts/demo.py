"""`make demo`: render the f1_txt2img example workflow through a real ComfyUI's /prompt queue and print the PNG's path."""
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from comfy_host import ROOT, ComfyServer, error_message  # noqa: E402

WORKFLOW = ROOT / "example_workflows" / "api" / "f1_txt2img.json"
OUTPUT = ROOT / "output"


def main():
    graph = json.loads(WORKFLOW.read_text())
    print(f"demo: booting ComfyUI and queueing {WORKFLOW.relative_to(ROOT)}", flush=True)
    with ComfyServer() as server:
        entry = server.run(graph)
        if entry["status"]["status_str"] != "success":
            sys.exit(f"demo: the workflow failed: {error_message(entry)}\n{server.log_tail()}")
        images = server.output_images(entry)
        if not images:
            sys.exit("demo: the workflow finished without saving an image")
        OUTPUT.mkdir(exist_ok=True)
        target = OUTPUT / images[0].name
        shutil.copy(images[0], target)
    print(target.resolve())


if __name__ == "__main__":
    main()
