"""Does a detection satisfy a spec? Each object group must be found exactly `count` times (by shape and, when
stated, colour), every stated attribute, position and relation must hold, and nothing else may be in the
picture: an image full of blobs must not pass "a star" because one blob happens to read as a star."""
from __future__ import annotations

from dataclasses import dataclass

from ..data.spec import SceneSpec, coerce_spec
from .detector import DetectedObject, Detection

RELATION_MARGIN = 0.05   # centroids must differ by this share of the image side along the relation's axis

POSITION_TESTS = {
    "left": lambda o: o.x < 0.4,
    "right": lambda o: o.x > 0.6,
    "top": lambda o: o.y < 0.4,
    "bottom": lambda o: o.y > 0.6,
    "centre": lambda o: abs(o.x - 0.5) < 0.15 and abs(o.y - 0.5) < 0.15,
}


def relation_holds(kind: str, subject: DetectedObject, anchor: DetectedObject) -> bool:
    if kind == "left of":
        return anchor.x - subject.x > RELATION_MARGIN
    if kind == "right of":
        return subject.x - anchor.x > RELATION_MARGIN
    if kind == "above":
        return anchor.y - subject.y > RELATION_MARGIN
    if kind == "below":
        return subject.y - anchor.y > RELATION_MARGIN
    raise ValueError(f"relation: unknown kind {kind!r}")


@dataclass(frozen=True)
class SpecScore:
    category: str
    rare: bool
    passed: bool
    failures: tuple[str, ...]


def _describe(obj) -> str:
    return " ".join(w for w in (obj.colour, obj.shape) if w)


def score_detection(spec, detection: Detection) -> SpecScore:
    spec: SceneSpec = coerce_spec(spec)
    failures = []
    groups = []
    for obj in spec.objects:
        members = [d for d in detection.objects
                   if d.shape == obj.shape and (obj.colour is None or d.colour == obj.colour)]
        groups.append(members)
        if len(members) != obj.count:
            failures.append(f"expected {obj.count} {_describe(obj)}, found {len(members)}")
        for attr in ("style", "size"):
            wanted = getattr(obj, attr)
            wrong = sorted({getattr(m, attr) for m in members if getattr(m, attr) != wanted}) if wanted else []
            if wrong:
                failures.append(f"{_describe(obj)}: {attr} {wanted} wanted, saw {', '.join(wrong)}")
        if obj.position and not all(POSITION_TESTS[obj.position](m) for m in members):
            failures.append(f"{_describe(obj)}: not {obj.position}")
    for g, obj in enumerate(spec.objects):
        if obj.relation is None:
            continue
        subject, anchor = groups[g], groups[obj.relation.anchor]
        if len(subject) == 1 and len(anchor) == 1 and not relation_holds(obj.relation.kind, subject[0], anchor[0]):
            failures.append(f"{_describe(obj)} is not {obj.relation.kind} "
                            f"{_describe(spec.objects[obj.relation.anchor])}")
    asked_for = {id(m) for members in groups for m in members}
    extra = [d for d in detection.objects if id(d) not in asked_for]
    if extra:
        failures.append(f"{len(extra)} object(s) the prompt does not ask for: "
                        + ", ".join(_describe(d) for d in extra[:3]) + (" ..." if len(extra) > 3 else ""))
    if spec.background and detection.background != spec.background:
        failures.append(f"background {spec.background} wanted, saw {detection.background}")
    return SpecScore(spec.category, spec.rare, not failures, tuple(failures))


def layout_iou(a: Detection, b: Detection) -> float:
    """IoU of two detections' object pixels: how much of one picture's layout the other keeps. Two pictures with
    no objects at all keep the same (empty) layout: 1."""
    if a.foreground.shape != b.foreground.shape:
        raise ValueError(f"layout_iou: pictures of {a.width}x{a.height} and {b.width}x{b.height}; compare pictures "
                         "of one size")
    union = (a.foreground | b.foreground).sum()
    return float((a.foreground & b.foreground).sum() / union) if union else 1.0
