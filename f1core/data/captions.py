"""Captions for scene specs: a canonical caption, paraphrases drawn from the concept graph, and a parser that
reads any of them back to the spec.

Grammar: [prefix] object [relation object | (, object)* and object] [on a <colour> background]
object:  count [size] [style] [colour] shape [position]   (count: a/an/one/two/3/...; style may follow the shape
                                                            as "with stripes")
"""
from __future__ import annotations

import re

from ..limits import MAX_CAPTION_CHARS
from .knowledge import GRAPH, plural
from .rng import StableRng
from .spec import INVERSE_RELATION, ObjectSpec, Relation, SceneSpec, coerce_spec

PREFIXES = ("a picture of", "an image of", "a drawing of", "a render of", "a photo of")
_FILLER = {"coloured", "shaped", "that", "is", "are", "which", "the"}
_OBJECT_KINDS = ("count", "size", "style", "colour", "shape", "position")
_BACKGROUND_RE = re.compile(r"\s*,?\s*\b(?:on|against|with) (?:a|an) ([a-z-]+) background\b")


def _article(next_word: str) -> str:
    return "an" if next_word[:1] in "aeiou" else "a"


def _choose(rng: StableRng | None, kind: str, name: str) -> str:
    forms = GRAPH.surface_forms(kind, name)
    return forms[0] if rng is None else rng.choice(forms)


def _object_phrase(obj: ObjectSpec, rng: StableRng | None) -> str:
    before, after = [], []
    if obj.size:
        before.append(_choose(rng, "size", obj.size))
    if obj.style:
        form = _choose(rng, "style", obj.style)
        (after if form.startswith("with ") else before).append(form)
    if obj.colour:
        form = _choose(rng, "colour", obj.colour)
        before.append(f"{form}-coloured" if rng is not None and rng.random() < 0.15 else form)
    noun = _choose(rng, "shape", obj.shape)
    words = before + [plural(noun) if obj.count > 1 else noun] + after
    count = _choose(rng, "count", str(obj.count))
    if count in ("a", "an"):
        count = _article(words[0])
    if obj.position:
        words.append(_choose(rng, "position", obj.position))
    return " ".join([count] + words)


def _render(spec: SceneSpec, rng: StableRng | None) -> str:
    spec = coerce_spec(spec)
    objects = list(spec.objects)
    related = [i for i, o in enumerate(objects) if o.relation is not None]
    if related:
        i = related[0]
        subject, kind, anchor = objects[i], objects[i].relation.kind, objects[objects[i].relation.anchor]
        if rng is not None and rng.random() < 0.5:  # "A left of B" == "B right of A"
            subject, anchor, kind = anchor, subject, INVERSE_RELATION[kind]
        text = f"{_object_phrase(subject, rng)} {_choose(rng, 'relation', kind)} {_object_phrase(anchor, rng)}"
        others = [o for j, o in enumerate(objects) if j not in (i, objects[i].relation.anchor)]
        if others:
            text += ", with " + _join([_object_phrase(o, rng) for o in others])
    else:
        order = rng.shuffled(objects) if rng is not None else objects
        text = _join([_object_phrase(o, rng) for o in order])
    if spec.background:
        lead = "on" if rng is None else rng.choice(["on", "against", "with"])
        text += f" {lead} a {_choose(rng, 'background', spec.background)} background"
    if rng is not None and rng.random() < 0.4:
        text = f"{rng.choice(PREFIXES)} {text}"
    return text


def _join(phrases: list[str]) -> str:
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]


def caption(spec) -> str:
    """The canonical caption: 'a striped red circle to the left of a blue square'."""
    return _render(spec, None)


def paraphrase(spec, seed: int) -> str:
    """A caption with the same meaning, its words drawn from the concept graph by `seed`."""
    return _render(spec, StableRng(seed))


def _index(kinds) -> dict[tuple[str, ...], tuple[str, str]]:
    index = {}
    for kind in kinds:
        for concept in GRAPH.of_kind(kind):
            forms = GRAPH.surface_forms(kind, concept.name)
            if kind == "shape":
                forms = forms + [plural(f) for f in forms]
            for form in forms:
                index[tuple(form.split())] = (kind, concept.name)
    return index


_OBJECT_INDEX = _index(_OBJECT_KINDS)
_RELATION_INDEX = _index(("relation",))
_BACKGROUND_INDEX = _index(("background",))
# No phrase is longer than this, so a match is looked for only that far ahead: linear in the caption's length.
_LONGEST_PHRASE = max(len(key) for index in (_OBJECT_INDEX, _RELATION_INDEX, _BACKGROUND_INDEX) for key in index)


def _longest_match(tokens: list[str], start: int, index: dict) -> tuple[int, tuple[str, str]] | None:
    for end in range(min(len(tokens), start + _LONGEST_PHRASE), start, -1):
        hit = index.get(tuple(tokens[start:end]))
        if hit is not None:
            return end, hit
    return None


def _vocabulary_hint() -> str:
    return "; ".join(f"{kind}s: {', '.join(c.name for c in GRAPH.of_kind(kind))}"
                     for kind in ("shape", "colour", "style", "size", "position"))


def _parse_object(tokens: list[str], text: str) -> ObjectSpec:
    found: dict[str, str] = {}
    unknown = []
    i = 0
    while i < len(tokens):
        match = _longest_match(tokens, i, _OBJECT_INDEX)
        if match is None:
            if tokens[i] not in _FILLER:
                unknown.append(tokens[i])
            i += 1
            continue
        i, (kind, name) = match
        if kind in found and found[kind] != name:
            raise ValueError(f"parse_caption: two {kind}s ({found[kind]!r}, {name!r}) for one object in {text!r}; "
                             "describe each object once")
        found[kind] = name
    if unknown:
        raise ValueError(f"parse_caption: unknown word(s) {unknown} in {text!r}; known {_vocabulary_hint()}")
    if "shape" not in found:
        raise ValueError(f"parse_caption: no shape in {' '.join(tokens)!r} of {text!r}; "
                         f"name one of: {', '.join(c.name for c in GRAPH.of_kind('shape'))}")
    return ObjectSpec(shape=found["shape"], colour=found.get("colour"), style=found.get("style"),
                      size=found.get("size"), count=int(found.get("count", "1")), position=found.get("position"))


def _split_phrases(tokens: list[str]) -> list[list[str]]:
    phrases, current = [], []
    for token in tokens + [","]:
        if token in (",", "and"):
            if current:
                phrases.append(current)
            current = []
        else:
            current.append(token)
    return phrases


def _normalise(text: str) -> str:
    text = text.lower().replace("color", "colour")
    text = re.sub(r"-colou?red\b", " coloured", text)
    text = re.sub(r"[^a-z0-9,\- ]", " ", text)
    text = re.sub(r"\s*,\s*", " , ", text)
    text = " ".join(text.split())
    for prefix in PREFIXES:
        if text.startswith(prefix + " "):
            text = text[len(prefix) + 1:]
            break
    return text


def parse_caption(text: str) -> SceneSpec:
    """Read a caption (canonical or paraphrased) back to its spec; raises ValueError naming what is wrong."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("parse_caption: expected a non-empty caption such as 'a red circle left of a blue square'")
    if len(text) > MAX_CAPTION_CHARS:
        raise ValueError(f"parse_caption: the caption is {len(text)} characters, over the limit of "
                         f"{MAX_CAPTION_CHARS}; a scene holds at most a few objects, so describe each once")
    normal = _normalise(text)
    background = None
    found = _BACKGROUND_RE.search(normal)
    if found:
        hit = _BACKGROUND_INDEX.get((found.group(1),))
        if hit is None:
            raise ValueError(f"parse_caption: unknown background {found.group(1)!r} in {text!r}; use one of "
                             f"{[c.name for c in GRAPH.of_kind('background')]}")
        background = hit[1]
        normal = (normal[:found.start()] + " " + normal[found.end():]).strip()
    tokens = normal.split()
    relations = []
    i = 0
    while i < len(tokens):
        match = _longest_match(tokens, i, _RELATION_INDEX)
        if match is None:
            i += 1
            continue
        relations.append((i, match[0], match[1][1]))
        i = match[0]
    if len(relations) > 1:
        raise ValueError(f"parse_caption: {len(relations)} relations in {text!r}; a scene takes at most one")
    try:
        if relations:
            start, end, kind = relations[0]
            subject_phrases = _split_phrases(tokens[:start])
            rest = _split_phrases(tokens[end:])
            if len(subject_phrases) != 1 or not rest:
                raise ValueError(f"parse_caption: a relation needs one object on each side, in {text!r}")
            if len(rest) > 1 and rest[1] and rest[1][0] == "with":
                rest[1] = rest[1][1:]  # "A left of B, with C and D"
            subject = _parse_object(subject_phrases[0], text)
            others = [_parse_object(p, text) for p in rest]
            subject = ObjectSpec(subject.shape, subject.colour, subject.style, subject.size, subject.count,
                                 subject.position, Relation(kind, 1))
            return SceneSpec((subject, *others), background)
        phrases = _split_phrases(tokens)
        if not phrases:
            raise ValueError(f"parse_caption: no objects in {text!r}")
        return SceneSpec(tuple(_parse_object(p, text) for p in phrases), background)
    except ValueError as err:
        if str(err).startswith("parse_caption"):
            raise
        raise ValueError(f"parse_caption: {text!r} does not make a valid scene: {err}") from None
