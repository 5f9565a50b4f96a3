"""The pack's node interface as users meet it: documented (a description per node, a tooltip per input and
output) and stable (tests/node_snapshot.json; see scripts/node_snapshot.py for the rule)."""
import json

import pytest

from comfy_inprocess import import_comfy, import_pack
from node_snapshot import SNAPSHOT, breaking_changes, interfaces


@pytest.fixture(scope="module")
def object_info():
    """/object_info as the server builds it (GET_NODE_INFO_V1), computed in-process."""
    import_comfy()
    infos = {}
    for node in import_pack("nodes").all_nodes():
        info = json.loads(json.dumps(node.GET_NODE_INFO_V1()))
        infos[info["name"]] = info
    return infos


def test_every_node_input_and_output_is_documented(object_info):
    missing = []
    for name, info in object_info.items():
        if not (info.get("description") or "").strip():
            missing.append(f"{name}: description")
        for group in ("required", "optional"):
            for input_name, spec in info["input"].get(group, {}).items():
                options = spec[1] if len(spec) > 1 else {}
                if not (options.get("tooltip") or "").strip():
                    missing.append(f"{name}: input '{input_name}'")
        for index, (output_name, tooltip) in enumerate(zip(info["output_name"], info["output_tooltips"])):
            if not (tooltip or "").strip():
                missing.append(f"{name}: output {index} '{output_name}'")
    assert not missing, (
        "Every F1 node, including ones added later, needs description=... on its io.Schema and tooltip=... on "
        "each io.*.Input and io.*.Output (issue 15). Missing:\n  " + "\n  ".join(missing))


def test_node_ids_are_prefixed(object_info):
    assert all(name.startswith("F1") for name in object_info)


def test_shipped_nodes_keep_their_interface(object_info):
    problems = breaking_changes(json.loads(SNAPSHOT.read_text()), interfaces(object_info))
    assert not problems, (
        "A shipped node changed in a way that breaks saved workflows. Keep the old node (is_deprecated=True) and "
        "ship the change under a new F1 id:\n  " + "\n  ".join(problems))


def test_snapshot_is_current(object_info):
    snapshot, current = json.loads(SNAPSHOT.read_text()), interfaces(object_info)
    changed = sorted(k for k in snapshot.keys() | current.keys() if snapshot.get(k) != current.get(k))
    assert not changed, (
        f"The node interface differs from {SNAPSHOT.name} for {changed}. If the change is compatible, run "
        "`.venv/bin/python scripts/node_snapshot.py`, commit the snapshot and add a CHANGELOG.md line.")


def test_breaking_changes_are_told_apart_from_compatible_ones():
    node = {"display_name": "X", "category": "F1", "deprecated": False,
            "inputs": [{"name": "a", "type": "INT", "optional": False}],
            "outputs": [{"name": "IMAGE", "type": "IMAGE", "is_list": False}]}
    grown = json.loads(json.dumps(node))
    grown["inputs"].append({"name": "b", "type": "STRING", "optional": True})
    grown["outputs"].append({"name": "summary", "type": "STRING", "is_list": False})
    assert breaking_changes({"F1X": node}, {"F1X": grown, "F1New": node}) == []
    for change in (lambda n: n["inputs"].append({"name": "c", "type": "INT", "optional": False}),
                   lambda n: n["inputs"][0].update(type="FLOAT"),
                   lambda n: n["inputs"][0].update(name="renamed"),
                   lambda n: n["outputs"].insert(0, {"name": "s", "type": "STRING", "is_list": False})):
        changed = json.loads(json.dumps(node))
        change(changed)
        assert breaking_changes({"F1X": node}, {"F1X": changed}), changed
    assert breaking_changes({"F1X": node}, {}) == ["F1X: removed (keep it, marked is_deprecated=True)"]
