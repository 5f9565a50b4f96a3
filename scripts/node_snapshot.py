"""The pack's node interface (id, inputs, outputs) as committed in tests/node_snapshot.json, and the rule for
changing it: a shipped node keeps its id, inputs and outputs so saved workflows keep loading.

    python scripts/node_snapshot.py     # rewrite the snapshot from a real ComfyUI's /object_info

Compatible changes (a new node, a new optional input, an output appended at the end, a required input made
optional, a new display name) are written; a breaking one is refused: ship the changed node under a new id
and keep the old one with `is_deprecated=True`."""
from __future__ import annotations

import json
import sys
from pathlib import Path

SNAPSHOT = Path(__file__).resolve().parents[1] / "tests" / "node_snapshot.json"


def node_interface(info: dict) -> dict:
    """What a saved workflow depends on, from one /object_info entry."""
    def kind(spec):
        return "COMBO" if isinstance(spec[0], list) or spec[0] == "COMBO" else spec[0]

    inputs = [{"name": name, "type": kind(spec), "optional": group == "optional"}
              for group in ("required", "optional") for name, spec in info["input"].get(group, {}).items()]
    outputs = [{"name": name, "type": kind_, "is_list": bool(is_list)}
               for kind_, name, is_list in zip(info["output"], info["output_name"], info["output_is_list"])]
    return {"display_name": info["display_name"], "category": info["category"],
            "deprecated": bool(info.get("deprecated")), "inputs": inputs, "outputs": outputs}


def interfaces(object_info: dict) -> dict:
    return {name: node_interface(info) for name, info in sorted(object_info.items()) if name.startswith("F1")}


def breaking_changes(old: dict, new: dict) -> list[str]:
    """Changes from snapshot `old` to `new` that would break a saved UI or API workflow."""
    problems = []
    for node_id, before in old.items():
        after = new.get(node_id)
        if after is None:
            problems.append(f"{node_id}: removed (keep it, marked is_deprecated=True)")
            continue
        now = {i["name"]: i for i in after["inputs"]}
        for spec in before["inputs"]:
            current = now.get(spec["name"])
            if current is None:
                problems.append(f"{node_id}: input '{spec['name']}' removed or renamed")
            elif current["type"] != spec["type"]:
                problems.append(f"{node_id}: input '{spec['name']}' changed type {spec['type']} -> {current['type']}")
            elif spec["optional"] and not current["optional"]:
                problems.append(f"{node_id}: input '{spec['name']}' became required")
        known = {i["name"] for i in before["inputs"]}
        problems += [f"{node_id}: new required input '{i['name']}' (old workflows lack it; make it optional)"
                     for i in after["inputs"] if i["name"] not in known and not i["optional"]]
        for index, spec in enumerate(before["outputs"]):
            if index >= len(after["outputs"]):
                problems.append(f"{node_id}: output {index} ({spec['name']}) removed")
            elif (after["outputs"][index]["type"], after["outputs"][index]["is_list"]) != (spec["type"], spec["is_list"]):
                problems.append(f"{node_id}: output {index} ({spec['name']}) changed type or list-ness; "
                                "append new outputs at the end instead")
    return problems


def dumps(snapshot: dict) -> str:
    """JSON with one input or output per line, so a diff of the snapshot reads as a diff of the interface."""
    lines = ["{"]
    for n, (node_id, node) in enumerate(snapshot.items()):
        lines.append(f'  {json.dumps(node_id)}: {{')
        for key in ("display_name", "category", "deprecated"):
            lines.append(f'    {json.dumps(key)}: {json.dumps(node[key])},')
        for key in ("inputs", "outputs"):
            items = [f"      {json.dumps(item)}" for item in node[key]]
            lines.append(f'    {json.dumps(key)}: [\n' + ",\n".join(items) + ("\n    ]" if items else "]")
                         + ("," if key == "inputs" else ""))
        lines.append("  }" + ("," if n < len(snapshot) - 1 else ""))
    return "\n".join(lines + ["}"]) + "\n"


def main():
    sys.path.insert(0, str(Path(__file__).parent))
    from comfy_host import ComfyServer
    with ComfyServer() as server:
        current = interfaces(server.get("/object_info"))
    old = json.loads(SNAPSHOT.read_text()) if SNAPSHOT.exists() else {}
    problems = breaking_changes(old, current)
    if problems:
        sys.exit("refusing to snapshot breaking changes; give the changed node a new id and deprecate the old:\n  "
                 + "\n  ".join(problems))
    SNAPSHOT.write_text(dumps(current))
    print(f"wrote {SNAPSHOT} ({len(current)} nodes); note the change in CHANGELOG.md")


if __name__ == "__main__":
    main()
