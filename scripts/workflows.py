"""Convert between ComfyUI's API workflow format and its UI (graph editor) format, using /object_info.

    python scripts/workflows.py            # (re)write every workflows/*.json UI twin from its *_api.json

The UI files are generated with a left-to-right layout by graph depth; a test converts them back and
checks they still equal their API twins."""
from __future__ import annotations

import json
import sys
from pathlib import Path

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
WORKFLOWS = Path(__file__).resolve().parents[1] / "workflows"


def _inputs(info: dict) -> list[tuple[str, object, dict]]:
    spec = info["input"]
    out = []
    for group in ("required", "optional"):
        for name, value in spec.get(group, {}).items():
            out.append((name, value[0], value[1] if len(value) > 1 else {}))
    return out


def _is_widget(kind) -> bool:
    return isinstance(kind, list) or kind in WIDGET_TYPES


def _widget_values(name_kind_opts, values: dict) -> list:
    """A widget fed by a link keeps a placeholder (its default) in the UI's widgets_values."""
    out = []
    for name, kind, opts in name_kind_opts:
        if not _is_widget(kind):
            continue
        out.append(values[name] if name in values else opts.get("default", ""))
        if opts.get("control_after_generate"):
            out.append("fixed")
    return out


def ui_to_api(ui: dict, object_info: dict) -> dict:
    links = {link[0]: link for link in ui["links"]}
    api = {}
    for node in ui["nodes"]:
        info = object_info[node["type"]]
        inputs = {}
        for slot in node.get("inputs", []):
            if slot.get("link") is not None:
                _, src, src_slot, *_ = links[slot["link"]]
                inputs[slot["name"]] = [str(src), src_slot]
        values = iter(node.get("widgets_values", []))
        for name, kind, opts in _inputs(info):
            if not _is_widget(kind):
                continue
            value = next(values)  # a linked widget still holds a placeholder here
            if name not in inputs:
                inputs[name] = value
            if opts.get("control_after_generate"):
                next(values)
        api[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return api


def api_to_ui(api: dict, object_info: dict) -> dict:
    ids = sorted(api, key=int)
    depth = {}

    def node_depth(node_id):
        if node_id not in depth:
            parents = [v[0] for v in api[node_id]["inputs"].values() if isinstance(v, list)]
            depth[node_id] = 1 + max((node_depth(p) for p in parents), default=-1)
        return depth[node_id]

    order = sorted(ids, key=lambda i: (node_depth(i), int(i)))
    nodes, links, column_y = [], [], {}
    outputs_links = {i: {} for i in ids}
    for node_id in ids:
        for name, value in api[node_id]["inputs"].items():
            if isinstance(value, list):
                link_id = len(links) + 1
                src, slot = value
                kind = object_info[api[src]["class_type"]]["output"][slot]
                links.append([link_id, int(src), slot, int(node_id), name, kind])
                outputs_links[src].setdefault(slot, []).append(link_id)
    for index, node_id in enumerate(order):
        node = api[node_id]
        info = object_info[node["class_type"]]
        spec = _inputs(info)
        linked = []
        for name, kind, _ in spec:
            if name in node["inputs"] and isinstance(node["inputs"][name], list):
                link = next(l for l in links if l[3] == int(node_id) and l[4] == name)
                slot = {"name": name, "type": kind if isinstance(kind, str) else "COMBO", "link": link[0]}
                if _is_widget(kind):
                    slot["widget"] = {"name": name}
                linked.append(slot)
        widgets = _widget_values(spec, {k: v for k, v in node["inputs"].items() if not isinstance(v, list)})
        col = node_depth(node_id)
        height = 46 + 26 * (len(linked) + len(widgets) + max(1, len(info["output"])))
        if any(isinstance(v, str) and "\n" in v or (isinstance(v, str) and len(v) > 40) for v in widgets):
            height += 90
        y = column_y.get(col, 60)
        column_y[col] = y + height + 50
        nodes.append({
            "id": int(node_id), "type": node["class_type"], "pos": [60 + 380 * col, y], "size": [340, height],
            "flags": {}, "order": index, "mode": 0, "inputs": linked,
            "outputs": [{"name": name, "type": kind, "links": outputs_links[node_id].get(slot, []), "slot_index": slot}
                        for slot, (name, kind) in enumerate(zip(info["output_name"], info["output"]))],
            "properties": {"Node name for S&R": node["class_type"]},
            "widgets_values": widgets,
        })
        if "_meta" in node and "title" in node["_meta"]:
            nodes[-1]["title"] = node["_meta"]["title"]
    for link in links:  # the UI stores the target slot index, not the input name
        target = next(n for n in nodes if n["id"] == link[3])
        link[4] = next(i for i, slot in enumerate(target["inputs"]) if slot["link"] == link[0])
    width = max(n["pos"][0] + n["size"][0] for n in nodes) + 60
    # fit the graph's width, but not below the zoom at which the frontend stops drawing text
    view = {"scale": round(max(0.65, min(1.0, 1400 / width)), 2), "offset": [90, 130]}
    return {"last_node_id": max(int(i) for i in ids), "last_link_id": len(links), "nodes": nodes, "links": links,
            "groups": [], "config": {}, "extra": {"ds": view}, "version": 0.4}


def strip_meta(api: dict) -> dict:
    return {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in api.items()}


def api_workflows() -> list[Path]:
    return sorted(WORKFLOWS.glob("*_api.json"))


def ui_twin(api_path: Path) -> Path:
    return api_path.with_name(api_path.name.replace("_api.json", ".json"))


def main():
    sys.path.insert(0, str(Path(__file__).parent))
    from comfy_host import ComfyServer
    with ComfyServer() as server:
        object_info = server.get("/object_info")
    for path in api_workflows():
        ui = api_to_ui(json.loads(path.read_text()), object_info)
        ui_twin(path).write_text(json.dumps(ui, indent=2) + "\n")
        print(f"wrote {ui_twin(path)}")


if __name__ == "__main__":
    main()
