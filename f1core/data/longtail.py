"""Long-tail control over what the scene engine asks for: a frequency law over concepts, a named set of rare
(held-out) combinations, and a mode that builds specs around given rare combinations."""
from __future__ import annotations

from dataclasses import dataclass

from .rng import StableRng
from .spec import (BACKGROUNDS, CATEGORIES, COLOURS, POSITIONS, RELATIONS, SHAPES, SIZES, STYLES, ObjectSpec,
                   Relation, SceneSpec)

# Kept out of training on purpose; the test split carries them as its "rare" subset.
HELD_OUT = {
    "purple star": {"colour": "purple", "shape": "star"},
    "brown hexagon": {"colour": "brown", "shape": "hexagon"},
    "pink triangle": {"colour": "pink", "shape": "triangle"},
    "orange diamond": {"colour": "orange", "shape": "diamond"},
    "striped circle": {"style": "striped", "shape": "circle"},
}

_VOCAB = {"shape": SHAPES, "colour": tuple(COLOURS), "style": STYLES, "size": tuple(SIZES),
          "position": POSITIONS, "relation": RELATIONS, "background": tuple(BACKGROUNDS)}


def matches(obj: ObjectSpec, combo: dict) -> bool:
    return all(getattr(obj, key) == value for key, value in combo.items())


def is_rare(spec: SceneSpec, combos=HELD_OUT) -> bool:
    return any(matches(o, c) for o in spec.objects for c in combos.values())


@dataclass(frozen=True)
class ConceptLaw:
    """Zipf frequencies over each concept kind: the k-th concept (in vocabulary order) has weight 1/k^exponent.
    exponent 0 is uniform; larger makes the tail rarer."""
    exponent: float = 0.0

    def __post_init__(self):
        if not 0.0 <= self.exponent <= 4.0:
            raise ValueError(f"exponent: expected 0 (uniform) to 4 (steep long tail), got {self.exponent}")

    def weights(self, kind: str) -> list[float]:
        return [1.0 / (k + 1) ** self.exponent for k in range(len(_VOCAB[kind]))]

    def draw(self, rng: StableRng, kind: str, exclude=()):
        options = [(v, w) for v, w in zip(_VOCAB[kind], self.weights(kind)) if v not in exclude]
        return rng.weighted_choice([v for v, _ in options], [w for _, w in options])


def _object(rng, law, *, colour=False, style=False, size=False, shape_exclude=(), colour_exclude=()) -> ObjectSpec:
    return ObjectSpec(
        shape=law.draw(rng, "shape", shape_exclude),
        colour=law.draw(rng, "colour", colour_exclude) if colour else None,
        style=law.draw(rng, "style") if style else None,
        size=law.draw(rng, "size") if size else None,
    )


def _two(rng, law, **kw) -> tuple[ObjectSpec, ObjectSpec]:
    first = _object(rng, law, **kw)
    return first, _object(rng, law, shape_exclude=(first.shape,), **kw)


def _draw(category: str, rng: StableRng, law: ConceptLaw) -> SceneSpec:
    if category == "single_object":
        objects = (_object(rng, law, size=rng.random() < 0.3),)
    elif category == "colours":
        objects = (_object(rng, law, colour=True, size=rng.random() < 0.3),)
    elif category == "two_objects":
        objects = _two(rng, law)
    elif category == "colour_attribution":
        a = _object(rng, law, colour=True)
        b = _object(rng, law, colour=True, colour_exclude=(a.colour,))
        if a.shape == b.shape and rng.random() < 0.7:  # mostly different shapes; same shape tests binding hardest
            b = ObjectSpec(law.draw(rng, "shape", (a.shape,)), b.colour)
        objects = (a, b)
    elif category == "counting":
        base = _object(rng, law, colour=rng.random() < 0.5)
        objects = (ObjectSpec(base.shape, base.colour, count=2 + rng.index(3)),)
    elif category == "position":
        if rng.random() < 0.5:
            base = _object(rng, law, colour=True)
            objects = (ObjectSpec(base.shape, base.colour, position=law.draw(rng, "position")),)
        else:
            a, b = _two(rng, law, colour=True)
            objects = (ObjectSpec(a.shape, a.colour, relation=Relation(law.draw(rng, "relation"), 1)), b)
    elif category == "style":
        objects = (_object(rng, law, colour=True, style=True, size=rng.random() < 0.3),)
        if rng.random() < 0.3:
            objects = _two(rng, law, colour=True, style=True)
    else:
        raise ValueError(f"category: unknown {category!r}; choose one of {list(CATEGORIES)}")
    background = law.draw(rng, "background") if rng.random() < 0.3 else None
    return SceneSpec(objects, background)


def sample_spec(category: str, rng: StableRng, law: ConceptLaw = ConceptLaw(), exclude=HELD_OUT) -> SceneSpec:
    """A random spec of `category` under `law`, never containing a combination in `exclude`."""
    for _ in range(1000):
        spec = _draw(category, rng, law)
        if not is_rare(spec, exclude):
            return spec
    raise ValueError(f"exclude: cannot draw a {category} spec that avoids {list(exclude)}; exclude fewer")


RARE_CATEGORIES = ("colours", "counting", "position", "colour_attribution", "style")


def _with_combo(obj: ObjectSpec, combo: dict) -> ObjectSpec:
    values = obj.__dict__ | combo
    return ObjectSpec(**values)


def rare_spec(combo: dict, category: str, rng: StableRng, law: ConceptLaw = ConceptLaw()) -> SceneSpec:
    """A spec of `category` whose first object carries `combo`, e.g. {"colour": "purple", "shape": "star"}."""
    unknown = set(combo) - {"shape", "colour", "style", "size"}
    if unknown or not combo:
        raise ValueError(f"combo: expected keys among shape, colour, style, size, got {sorted(combo)}")
    if category not in RARE_CATEGORIES:
        raise ValueError(f"category: rare combinations need a category that names attributes, one of "
                         f"{list(RARE_CATEGORIES)}; got {category!r}")
    if "style" in combo and category != "style":
        category = "style"  # a style is only stated in style prompts
    for _ in range(1000):
        spec = _draw(category, rng, law)
        objects = (_with_combo(spec.objects[0], combo),) + spec.objects[1:]
        try:
            rare = SceneSpec(objects, spec.background, rare=True)
        except ValueError:
            continue  # the combo clashed with the other object; draw again
        if rare.category == category:
            return rare
    raise ValueError(f"combo: cannot build a {category} spec around {combo}")


def rare_specs(combos: dict, per_combo: int, seed: int) -> list[SceneSpec]:
    """Specs for given rare combinations, spread over the categories that can state them."""
    rng = StableRng(seed)
    out = []
    for name, combo in combos.items():
        for k in range(per_combo):
            out.append(rare_spec(combo, RARE_CATEGORIES[k % len(RARE_CATEGORIES)], rng))
    return out
