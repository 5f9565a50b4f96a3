"""A small concept graph over the scene vocabulary: synonyms, hypernyms and attributes.

Captions are paraphrased by walking it (scarlet -> red, box -> square, "six-sided polygon" -> hexagon), and
the caption parser reads any of those surface forms back to the canonical concept.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations

from .spec import BACKGROUNDS, COLOURS, POSITIONS, RELATIONS, SHAPES, SIZES, STYLES

NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six"}


@dataclass(frozen=True)
class Concept:
    name: str
    kind: str  # shape, colour, style, size, position, relation, count, background
    synonyms: tuple[str, ...] = ()
    hypernyms: tuple[str, ...] = ()
    attributes: dict = field(default_factory=dict)


def _attribute_words(key: str, value) -> str:
    if key in ("sides", "points"):
        return f"{NUMBER_WORDS[value]}-{'sided' if key == 'sides' else 'pointed'}"
    if key == "round":
        return "round"
    return str(value)  # orientation and other adjective-valued attributes


_CONCEPTS = [
    Concept("circle", "shape", ("disc", "disk"), ("shape",), {"round": True}),
    Concept("square", "shape", ("box",), ("polygon", "shape"), {"sides": 4, "orientation": "upright"}),
    Concept("triangle", "shape", (), ("polygon", "shape"), {"sides": 3, "orientation": "upright"}),
    Concept("star", "shape", ("five-pointed star",), ("shape",), {"points": 5}),
    Concept("hexagon", "shape", ("hex",), ("polygon", "shape"), {"sides": 6}),
    Concept("diamond", "shape", ("rhombus", "lozenge"), ("polygon", "shape"),
            {"sides": 4, "orientation": "tilted"}),
    Concept("red", "colour", ("scarlet", "crimson"), ("warm colour",), {"hue": "red"}),
    Concept("orange", "colour", ("tangerine", "amber"), ("warm colour",), {"hue": "orange"}),
    Concept("yellow", "colour", ("golden", "lemon"), ("warm colour",), {"hue": "yellow"}),
    Concept("green", "colour", ("emerald", "leaf-green"), ("cool colour",), {"hue": "green"}),
    Concept("blue", "colour", ("azure", "cobalt"), ("cool colour",), {"hue": "blue"}),
    Concept("purple", "colour", ("violet", "plum"), ("cool colour",), {"hue": "purple"}),
    Concept("pink", "colour", ("rose", "fuchsia"), ("warm colour",), {"hue": "pink"}),
    Concept("brown", "colour", ("chocolate", "chestnut"), ("warm colour",), {"hue": "orange", "lightness": "dark"}),
    Concept("flat", "style", ("solid", "plain", "filled"), ("style",)),
    Concept("outlined", "style", ("hollow", "outline-only", "line-drawn"), ("style",)),
    Concept("striped", "style", ("stripy", "banded", "with stripes"), ("pattern",)),
    Concept("gradient", "style", ("shaded", "with a gradient", "fading"), ("pattern",)),
    Concept("small", "size", ("little", "smallish"), ("size",)),
    Concept("medium", "size", ("medium-sized", "mid-sized"), ("size",)),
    Concept("large", "size", ("big", "large-sized"), ("size",)),
    Concept("left", "position", ("on the left", "on the left side", "at the left"), ("position",)),
    Concept("right", "position", ("on the right", "on the right side", "at the right"), ("position",)),
    Concept("top", "position", ("at the top", "near the top", "in the upper part"), ("position",)),
    Concept("bottom", "position", ("at the bottom", "near the bottom", "in the lower part"), ("position",)),
    Concept("centre", "position", ("in the centre", "in the center", "in the middle"), ("position",)),
    Concept("left of", "relation", ("to the left of", "on the left of", "left of"), ("relation",)),
    Concept("right of", "relation", ("to the right of", "on the right of", "right of"), ("relation",)),
    Concept("above", "relation", ("above", "over", "higher than"), ("relation",)),
    Concept("below", "relation", ("below", "beneath", "under", "lower than"), ("relation",)),
    Concept("1", "count", ("a", "an", "one", "a single"), ("number",)),
    Concept("2", "count", ("two", "2", "a pair of"), ("number",)),
    Concept("3", "count", ("three", "3"), ("number",)),
    Concept("4", "count", ("four", "4"), ("number",)),
    Concept("white", "background", ("white", "light"), ("background",)),
    Concept("grey", "background", ("grey", "gray"), ("background",)),
    Concept("black", "background", ("black", "dark"), ("background",)),
]


def plural(phrase: str) -> str:
    head, _, last = phrase.rpartition(" ")
    last = last + ("es" if last.endswith(("s", "x")) else "s")
    return f"{head} {last}" if head else last


class ConceptGraph:
    def __init__(self, concepts):
        self.concepts = {(c.kind, c.name): c for c in concepts}
        self._check_covers_vocabulary()

    def _check_covers_vocabulary(self):
        vocab = {"shape": SHAPES, "colour": COLOURS, "style": STYLES, "size": SIZES, "position": POSITIONS,
                 "relation": RELATIONS, "background": BACKGROUNDS}
        for kind, names in vocab.items():
            missing = [n for n in names if (kind, n) not in self.concepts]
            if missing:
                raise ValueError(f"concept graph: no {kind} concept for {missing}")

    def get(self, kind: str, name: str) -> Concept:
        return self.concepts[(kind, name)]

    def of_kind(self, kind: str) -> list[Concept]:
        return [c for (k, _), c in self.concepts.items() if k == kind]

    def hyponyms(self, kind: str, hypernym: str) -> list[Concept]:
        return [c for c in self.of_kind(kind) if hypernym in c.hypernyms]

    def definitions(self, kind: str, name: str) -> list[str]:
        """'hexagon' -> ['six-sided polygon', 'six-sided shape']: a hypernym, the concept's defining (first)
        attribute, and the fewest further attributes that single it out among that hypernym's hyponyms."""
        concept = self.get(kind, name)
        if not concept.attributes:
            return []
        core, *rest = concept.attributes.items()
        out = []
        for hypernym in concept.hypernyms:
            siblings = [c for c in self.hyponyms(kind, hypernym) if c.name != name]
            for n in range(len(rest) + 1):
                found = [extra + (core,) for extra in combinations(rest, n)
                         if not any(all(s.attributes.get(k) == v for k, v in extra + (core,)) for s in siblings)]
                if found:
                    out.append(" ".join(_attribute_words(k, v) for k, v in found[0]) + " " + hypernym)
                    break
        return out

    def surface_forms(self, kind: str, name: str) -> list[str]:
        """Every phrase that names the concept, canonical first."""
        concept = self.get(kind, name)
        canonical = [] if kind in ("position", "relation", "count", "background") else [name]
        forms = canonical + list(concept.synonyms)
        if kind == "shape":
            forms += self.definitions(kind, name)
        return forms


GRAPH = ConceptGraph(_CONCEPTS)
