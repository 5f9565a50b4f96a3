"""Soak test of a real ComfyUI with the pack (issue 14): N prompts mixing every API workflow, queued by C concurrent
clients, each prompt with its own seeds so nothing is served from core's cache.

    python benchmarks/soak.py [--prompts 200] [--clients 4]   # about 10 minutes on 2 CPU cores

Records: prompts completed, distinct and finite outputs (a PNG hash per prompt; an image that is one flat colour,
as NaN latents decode to, counts as not finite), the server's resident memory after a warm-up (one round of every
workflow) and at the end, and the latency percentiles from queueing to completion. Targets: every prompt completes,
RSS drift under 5%. The last line is `soak: completed C of N, rss_drift_pct D`.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from comfy_host import ComfyServer, error_message  # noqa: E402
from workflows import runnable_workflows, strip_meta  # noqa: E402

SEED_INPUTS = ("seed", "noise_seed")


def reseeded(graph: dict, seed: int) -> dict:
    graph = json.loads(json.dumps(graph))
    for node in graph.values():
        for name in SEED_INPUTS:
            if name in node["inputs"] and not isinstance(node["inputs"][name], list):
                node["inputs"][name] = seed
    return graph


def server_rss(server: ComfyServer) -> int:
    return psutil.Process(server.process.pid).memory_info().rss


def run_prompt(server: ComfyServer, name: str, graph: dict) -> dict:
    started = time.time()
    try:
        entry = server.run(graph, timeout=600)
    except Exception as err:  # a soak records failures instead of stopping at the first
        return {"workflow": name, "ok": False, "error": repr(err), "seconds": time.time() - started}
    ok = entry["status"]["status_str"] == "success"
    digests, finite = [], True
    for path in server.output_images(entry):
        data = path.read_bytes()
        digests.append(hashlib.sha256(data).hexdigest())
        finite &= float(np.asarray(Image.open(path)).std()) > 0.0
    return {"workflow": name, "ok": ok, "error": "" if ok else error_message(entry), "seconds": time.time() - started,
            "digests": digests, "finite": finite and bool(digests)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=200)
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args(argv)

    graphs = {path.stem: strip_meta(json.loads(path.read_text())) for path in runnable_workflows()}
    names = sorted(graphs)
    workdir = Path(tempfile.mkdtemp(prefix="f1-soak-"))
    with ComfyServer(workdir=workdir) as server:
        for name in names:  # warm-up: every workflow once, so models are loaded before RSS is measured
            result = run_prompt(server, name, reseeded(graphs[name], 10 ** 6))
            if not result["ok"]:
                print(f"warm-up {name} failed: {result['error']}", file=sys.stderr)
        rss_start = server_rss(server)
        jobs = [(names[i % len(names)], i) for i in range(args.prompts)]
        random.Random(0).shuffle(jobs)
        results, lock, rss_peak = [], threading.Lock(), [rss_start]

        def client(share):
            for name, seed in share:
                result = run_prompt(server, name, reseeded(graphs[name], seed))
                with lock:
                    results.append(result)
                    rss_peak[0] = max(rss_peak[0], server_rss(server))

        threads = [threading.Thread(target=client, args=(jobs[c::args.clients],)) for c in range(args.clients)]
        started = time.time()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.time() - started
        rss_end = server_rss(server)
        alive = server.alive()

    completed = sum(r["ok"] for r in results)
    digests = [d for r in results for d in r.get("digests", [])]
    finite = sum(r.get("finite", False) for r in results)
    latencies = np.array([r["seconds"] for r in results])
    drift = (rss_end - rss_start) / rss_start * 100
    for name in names:
        mine = [r for r in results if r["workflow"] == name]
        print(f"{name}: {sum(r['ok'] for r in mine)} of {len(mine)} completed, "
              f"median {np.median([r['seconds'] for r in mine]):.2f} s")
    for r in results:
        if not r["ok"]:
            print(f"failed {r['workflow']}: {r['error'][:300]}")
    print(f"wall {wall:.0f} s for {len(results)} prompts from {args.clients} clients; server alive: {alive}")
    print(f"outputs: {len(digests)} images, {len(set(digests))} distinct, {finite} prompts with finite (non-flat) "
          "images")
    print("latency s: " + ", ".join(f"p{q} {np.percentile(latencies, q):.2f}" for q in (50, 90, 99))
          + f", max {latencies.max():.2f}")
    print(f"rss MB: after warm-up {rss_start / 2**20:.1f}, peak {rss_peak[0] / 2**20:.1f}, end {rss_end / 2**20:.1f}")
    print(f"soak: completed {completed} of {args.prompts}, rss_drift_pct {drift:.2f}")
    return 0 if completed == args.prompts and drift < 5 else 1


if __name__ == "__main__":
    sys.exit(main())
