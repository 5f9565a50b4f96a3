"""The pack's example workflows: UI-format templates in example_workflows/ (listed by ComfyUI's template browser,
each with a same-name .jpg thumbnail) and their API-format twins in example_workflows/api/ (a subfolder, which
the browser does not list: it cannot open API files).

    python scripts/workflows.py                  # (re)write every UI template and thumbnail from its API twin
    python scripts/workflows.py f1_regions_drawn  # only the named ones

The API twins are the source. The UI files are generated from them with a layout that fits a 1600x900 canvas
at a zoom where the frontend still draws text; a test converts them back and checks they equal their twins.
Thumbnails are the workflow's own output, rendered through a real ComfyUI.

A template whose F1ControlNetLoader names a ControlNet the pack does not ship (models/controlnet/ holds those
trained for the shipped default) cannot run as it is: the tests that execute templates take runnable_workflows(),
and its thumbnail is what the rest of the graph shows (its hint preview)."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = ROOT / "example_workflows"
API = TEMPLATES / "api"
SHIPPED_CONTROLNETS = ROOT / "models" / "controlnet"  # the pack's own ControlNets (nodes/f1_files.py)
PREVIEW_ROOM = 220  # below its widgets: a sampler's live preview while it runs, or a chart after it
SHOWS_CHART = {"F1AdaptiveSigmas", "F1DynamicGuider"}  # preview their plot on the node
VIEW = (1600, 900)  # the canvas the templates must fit, in screen pixels
MIN_SCALE = 0.65  # below about this zoom the frontend stops drawing text


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
    nodes, links = [], []
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
        height = 46 + 26 * (len(linked) + len(widgets) + max(1, len(info["output"])))
        if any(isinstance(v, str) and "\n" in v or (isinstance(v, str) and len(v) > 40) for v in widgets):
            height += 90
        if info.get("output_node"):
            height = max(height, 380)  # room for the image or text the node shows after a run
        sampler = "LATENT" in info["output"] and {"MODEL", "GUIDER"} & {k for _, k, _ in spec if isinstance(k, str)}
        if sampler or node["class_type"] in SHOWS_CHART:
            height += PREVIEW_ROOM
        nodes.append({
            "id": int(node_id), "type": node["class_type"], "pos": [0, 0], "size": [340, height],
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
    # a column per graph depth, each node as late as its consumers allow, so sources sit beside their use
    last = max(node_depth(i) for i in ids)
    column = {}
    for node_id in sorted(ids, key=node_depth, reverse=True):
        users = [column[int(c)] for c in ids if int(c) in column
                 and any(isinstance(v, list) and v[0] == node_id for v in api[c]["inputs"].values())]
        column[int(node_id)] = min(users) - 1 if users else last
    view = _layout(nodes, column)
    return {"last_node_id": max(int(i) for i in ids), "last_link_id": len(links), "nodes": nodes, "links": links,
            "groups": [], "config": {}, "extra": {"ds": view}, "version": 0.4}


def _layout(nodes: list[dict], column: dict[int, int], offset=(90, 130)) -> dict:
    """Columns by graph depth, wrapped into bands of `per_band` columns, with `per_band` chosen for the largest
    zoom at which the whole graph (every output included) fits VIEW; returns the frontend's view ("ds")."""
    columns = max(column.values()) + 1
    best = None
    for per_band in range(1, columns + 1):
        positions, slot_top = {}, [60] * per_band  # a band's column starts below the same slot of the band above
        for col in range(columns):
            slot, y = col % per_band, slot_top[col % per_band]
            for node in (n for n in nodes if column[n["id"]] == col):
                positions[node["id"]] = [60 + 380 * slot, y]
                y += node["size"][1] + 50
            slot_top[slot] = y + 40
        right = max(positions[n["id"]][0] + n["size"][0] for n in nodes) + offset[0] + 40
        low = max(positions[n["id"]][1] + n["size"][1] for n in nodes) + offset[1] + 40
        scale = min(1.0, VIEW[0] / right, VIEW[1] / low)
        if best is None or scale > best[0] + 1e-9:
            best = (scale, positions)
    scale, positions = best
    for node in nodes:
        node["pos"] = positions[node["id"]]
    return {"scale": max(MIN_SCALE, math.floor(scale * 100) / 100), "offset": list(offset)}


def strip_meta(api: dict) -> dict:
    return {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in api.items()}


def api_workflows() -> list[Path]:
    return sorted(API.glob("*.json"))


def missing_weights(api: dict) -> dict[str, str]:
    """{node id: file} of the F1ControlNetLoader nodes whose ControlNet the pack does not ship."""
    return {i: n["inputs"]["control_net_name"] for i, n in api.items() if n["class_type"] == "F1ControlNetLoader"
            and not (SHIPPED_CONTROLNETS / n["inputs"]["control_net_name"]).is_file()}


def runnable_workflows() -> list[Path]:
    """The templates that run as they are, with the pack's own weights."""
    return [p for p in api_workflows() if not missing_weights(json.loads(p.read_text()))]


def without(api: dict, removed) -> dict:
    """The graph less the `removed` nodes and every node that takes an input from one of them."""
    gone = set(removed)
    while True:
        more = {i for i, n in api.items() if i not in gone
                and any(isinstance(v, list) and v[0] in gone for v in n["inputs"].values())}
        if not more:
            return {i: n for i, n in api.items() if i not in gone}
        gone |= more


def ui_twin(api_path: Path) -> Path:
    return TEMPLATES / api_path.name


def thumbnail(api_path: Path) -> Path:
    return TEMPLATES / f"{api_path.stem}.jpg"


def save_thumbnail(image_path: Path, path: Path, side: int = 384):
    from PIL import Image
    image = Image.open(image_path).convert("RGB")
    scale = side / max(image.size)
    image.resize((round(image.width * scale), round(image.height * scale)), Image.LANCZOS).save(path, quality=90)


def main(names: list[str]):
    sys.path.insert(0, str(Path(__file__).parent))
    from comfy_host import ComfyServer, error_message
    paths = [p for p in api_workflows() if not names or p.stem in names]
    if names and len(paths) != len(set(names)):
        sys.exit(f"unknown workflow among {names}; known: {[p.stem for p in api_workflows()]}")
    with ComfyServer() as server:
        object_info = server.get("/object_info")
        for path in paths:
            api = json.loads(path.read_text())
            ui_twin(path).write_text(json.dumps(api_to_ui(api, object_info), indent=2) + "\n")
            missing = missing_weights(api)
            entry = server.run(strip_meta(without(api, missing)))
            if entry["status"]["status_str"] != "success":
                sys.exit(f"{path.name} failed: {error_message(entry)}")
            save_thumbnail(server.output_images(entry, "temp" if missing else "output")[0], thumbnail(path))
            print(f"wrote {ui_twin(path)} and {thumbnail(path)}"
                  + (f" (of its preview: {', '.join(missing.values())} is not shipped)" if missing else ""))


if __name__ == "__main__":
    main(sys.argv[1:])
