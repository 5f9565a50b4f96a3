"""Scene specs: the structured form of a prompt, shared by the scene engine, the captions and the evaluator.

A spec names what a caption asserts. Fields left as None are unconstrained: the renderer picks them from
the seed and the evaluator does not check them.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from ..limits import MAX_CAPTION_CHARS

SHAPES = ("circle", "square", "triangle", "star", "hexagon", "diamond")

# sRGB 0-255; well apart in Lab so a tiny model can learn them and the detector can tell them apart.
COLOURS = {
    "red": (215, 35, 40),
    "orange": (245, 130, 20),
    "yellow": (240, 210, 30),
    "green": (40, 155, 65),
    "blue": (40, 85, 215),
    "purple": (125, 45, 175),
    "pink": (245, 125, 195),
    "brown": (120, 70, 30),
}

BACKGROUNDS = {
    "white": (245, 245, 240),
    "grey": (150, 150, 150),
    "black": (20, 20, 24),
}

STYLES = ("flat", "outlined", "striped", "gradient")

# Circumradius as a fraction of the shorter image side.
SIZES = {"small": 0.08, "medium": 0.12, "large": 0.17}

POSITIONS = ("left", "right", "top", "bottom", "centre")
RELATIONS = ("left of", "right of", "above", "below")
INVERSE_RELATION = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}

MAX_COUNT = 4
MAX_INSTANCES = 6

CATEGORIES = ("single_object", "two_objects", "counting", "colours", "position", "colour_attribution", "style")


def _check_choice(where: str, value, choices) -> None:
    if value is not None and (not isinstance(value, str) or value not in choices):
        raise ValueError(f"{where}: unknown value {value!r}; choose one of {sorted(choices)} or leave it unset")


@dataclass(frozen=True)
class Relation:
    """The owning object stands `kind` the object at index `anchor` ("a red circle left of a blue square")."""
    kind: str
    anchor: int

    def __post_init__(self):
        _check_choice("relation.kind", self.kind, RELATIONS)
        if not isinstance(self.anchor, int) or isinstance(self.anchor, bool):
            raise ValueError(f"relation.anchor: must be an object index (int), got {self.anchor!r}")


@dataclass(frozen=True)
class ObjectSpec:
    shape: str
    colour: str | None = None
    style: str | None = None
    size: str | None = None
    count: int = 1
    position: str | None = None
    relation: Relation | None = None

    def __post_init__(self):
        if not isinstance(self.shape, str) or self.shape not in SHAPES:
            raise ValueError(f"shape: unknown value {self.shape!r}; choose one of {list(SHAPES)}")
        _check_choice("colour", self.colour, COLOURS)
        _check_choice("style", self.style, STYLES)
        _check_choice("size", self.size, SIZES)
        _check_choice("position", self.position, POSITIONS)
        if not isinstance(self.count, int) or isinstance(self.count, bool) or not 1 <= self.count <= MAX_COUNT:
            raise ValueError(f"count: must be an int from 1 to {MAX_COUNT}, got {self.count!r}")
        if self.count > 1 and (self.position or self.relation):
            raise ValueError("count: a position or relation applies to a single object; set count=1 "
                             "or drop the position/relation")
        if self.position and self.relation:
            raise ValueError("position: an object takes either an absolute position or a relation, not both")

    @property
    def identity(self) -> tuple:
        """What tells this group apart from the others in a scene."""
        return (self.shape, self.colour)

    def to_dict(self) -> dict:
        out = {"shape": self.shape}
        for name in ("colour", "style", "size", "position"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        if self.count != 1:
            out["count"] = self.count
        if self.relation is not None:
            out["relation"] = {"kind": self.relation.kind, "anchor": self.relation.anchor}
        return out

    @classmethod
    def from_dict(cls, data) -> "ObjectSpec":
        if not isinstance(data, dict):
            raise ValueError(f"expected an object like {{'shape': 'circle', 'colour': 'red'}}, got {data!r}")
        known = {"shape", "colour", "color", "style", "size", "count", "position", "relation"}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown keys {sorted(unknown)}; allowed keys are {sorted(known - {'color'})}")
        if "shape" not in data:
            raise ValueError(f"missing 'shape'; choose one of {list(SHAPES)}")
        relation = data.get("relation")
        if relation is not None:
            if not isinstance(relation, dict) or set(relation) != {"kind", "anchor"}:
                raise ValueError("relation: expected {'kind': 'left of', 'anchor': <object index>}")
            relation = Relation(relation["kind"], relation["anchor"])
        return cls(shape=data["shape"], colour=data.get("colour", data.get("color")), style=data.get("style"),
                   size=data.get("size"), count=data.get("count", 1), position=data.get("position"),
                   relation=relation)


@dataclass(frozen=True)
class SceneSpec:
    objects: tuple[ObjectSpec, ...]
    background: str | None = None
    rare: bool = field(default=False, compare=False)  # carries a held-out combination (metadata only)

    def __post_init__(self):
        object.__setattr__(self, "objects", tuple(self.objects))
        if not self.objects:
            raise ValueError("objects: a scene needs at least one object")
        for i, obj in enumerate(self.objects):
            if not isinstance(obj, ObjectSpec):
                raise ValueError(f"objects[{i}]: expected an ObjectSpec, got {type(obj).__name__}")
        _check_choice("background", self.background, BACKGROUNDS)
        instances = sum(o.count for o in self.objects)
        if instances > MAX_INSTANCES:
            raise ValueError(f"objects: {instances} objects in total; at most {MAX_INSTANCES} fit a scene")
        self._check_identities()
        self._check_relations()

    def _check_identities(self) -> None:
        # Each detected object must belong to one group only, or the scene cannot be scored.
        for i, a in enumerate(self.objects):
            for j in range(i + 1, len(self.objects)):
                b = self.objects[j]
                if a.shape == b.shape and (a.colour is None or b.colour is None or a.colour == b.colour):
                    raise ValueError(f"objects[{i}] and objects[{j}]: both are {a.shape}s; give them different "
                                     "colours or merge them into one object with a count")

    def _check_relations(self) -> None:
        related = [i for i, o in enumerate(self.objects) if o.relation is not None]
        if len(related) > 1:
            raise ValueError(f"objects{related}: at most one relation per scene")
        if related and any(o.position for o in self.objects):
            raise ValueError("position: a scene with a relation takes no absolute positions")
        for i in related:
            anchor = self.objects[i].relation.anchor
            if not 0 <= anchor < len(self.objects) or anchor == i:
                raise ValueError(f"objects[{i}].relation.anchor: {anchor} is not another object's index "
                                 f"(0..{len(self.objects) - 1}, not {i})")
            if self.objects[anchor].count != 1:
                raise ValueError(f"objects[{anchor}].count: the anchor of a relation must be a single object")

    @property
    def category(self) -> str:
        """The evaluation category, GenEval-style, derived from what the spec constrains."""
        objs = self.objects
        if any(o.relation or o.position for o in objs):
            return "position"
        if any(o.style for o in objs):
            return "style"
        if any(o.count > 1 for o in objs):
            return "counting"
        if len(objs) >= 2:
            return "colour_attribution" if all(o.colour for o in objs) else "two_objects"
        return "colours" if objs[0].colour else "single_object"

    def to_dict(self) -> dict:
        out = {"objects": [o.to_dict() for o in self.objects], "category": self.category}
        if self.background is not None:
            out["background"] = self.background
        if self.rare:
            out["rare"] = True
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data) -> "SceneSpec":
        if not isinstance(data, dict):
            raise ValueError("spec: expected a JSON object like {\"objects\": [{\"shape\": \"circle\"}]}")
        unknown = set(data) - {"objects", "background", "category", "rare", "caption"}
        if unknown:
            raise ValueError(f"spec: unknown keys {sorted(unknown)}; allowed: objects, background, category, rare, caption")
        objects = data.get("objects")
        if not isinstance(objects, list) or not objects:
            raise ValueError("spec.objects: expected a non-empty list of objects")
        parsed = []
        for i, item in enumerate(objects):
            try:
                parsed.append(ObjectSpec.from_dict(item))
            except ValueError as err:
                raise ValueError(f"spec.objects[{i}].{err}") from None
        spec = cls(tuple(parsed), data.get("background"), bool(data.get("rare", False)))
        if "category" in data and data["category"] != spec.category:
            raise ValueError(f"spec.category: {data['category']!r} does not match the objects, which make a "
                             f"{spec.category!r} spec; drop the key or fix it")
        return spec

    @classmethod
    def from_json(cls, text: str) -> "SceneSpec":
        if len(text) > MAX_CAPTION_CHARS:
            raise ValueError(f"spec: the JSON is {len(text)} characters, over the limit of {MAX_CAPTION_CHARS}; "
                             "a scene holds at most a few objects")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"spec: not valid JSON ({err})") from None
        except RecursionError:
            raise ValueError("spec: the JSON is nested too deeply; a spec is an object holding a list of "
                             "objects") from None
        return cls.from_dict(data)

    def canonical_key(self) -> tuple:
        """Equal for specs that assert the same scene, whatever the object order or relation direction."""
        groups = tuple(sorted((o.shape, o.colour or "", o.style or "", o.size or "", o.count, o.position or "")
                              for o in self.objects))
        relation = ()
        for o in self.objects:
            if o.relation is not None:
                subject, anchor = o.identity, self.objects[o.relation.anchor].identity
                kind = o.relation.kind
                if kind in ("right of", "below"):  # state every relation as "left of" or "above"
                    subject, anchor, kind = anchor, subject, INVERSE_RELATION[kind]
                relation = (subject, kind, anchor)
        return groups, relation, self.background or ""

    def equivalent(self, other: "SceneSpec") -> bool:
        return self.canonical_key() == other.canonical_key()


def specs_digest(specs) -> str:
    """A stable hash of a list of specs, to pin the fixed splits."""
    text = "\n".join(s.to_json() for s in specs)
    return hashlib.sha256(text.encode()).hexdigest()


def coerce_spec(spec) -> SceneSpec:
    """Accept a SceneSpec, a dict or a JSON string."""
    if isinstance(spec, SceneSpec):
        return spec
    if isinstance(spec, dict):
        return SceneSpec.from_dict(spec)
    if isinstance(spec, str):
        return SceneSpec.from_json(spec)
    raise ValueError(f"spec: expected a SceneSpec, dict or JSON string, got {type(spec).__name__}")
