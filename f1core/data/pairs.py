"""Scene specs in pairs that differ in one factor, for learning decoupled text roles (f1core.train.losses.
role_contrastive_loss): only a style changed, only an entity (one object's colour or shape), or only the layout
(a position or a relation). Each pair carries three captions, two of the first spec and one of the second.

Anchors come from the train split's spec space: the categories' samplers (never a held-out combination), and
neither spec of a pair is one that validation or test hold, in any wording (compared by canonical key).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, replace

from ..text.adapter import ROLES
from .captions import paraphrase
from .longtail import is_rare, sample_spec
from .rng import StableRng, derive_seed
from .spec import CATEGORIES, COLOURS, POSITIONS, RELATIONS, SHAPES, STYLES, Relation, SceneSpec
from .splits import evaluated_specs

ATTEMPTS = 100


@dataclass(frozen=True)
class FactorPair:
    spec: SceneSpec
    variant: SceneSpec     # `spec` with only `factor` changed
    factor: str            # the text role (f1core.text.adapter.ROLES) whose part of the scene changed
    anchor: str            # a caption of spec
    positive: str          # another caption of spec (a paraphrase, or the same words)
    changed: str           # a caption of variant in the anchor's words where the factor allows


def _other(rng: StableRng, options, current):
    return rng.choice([o for o in options if o != current])


def vary(spec: SceneSpec, factor: str, rng: StableRng) -> SceneSpec | None:
    """`spec` with one object's `factor` (a role) changed; None where the factor does not apply (no position or
    relation to move) or the change makes an invalid scene."""
    objects = list(spec.objects)
    if factor == "relation":
        placed = [i for i, o in enumerate(objects) if o.position or o.relation]
        if not placed:
            return None
        i = rng.choice(placed)
        obj = objects[i]
        objects[i] = (replace(obj, position=_other(rng, POSITIONS, obj.position)) if obj.position else
                      replace(obj, relation=Relation(_other(rng, RELATIONS, obj.relation.kind), obj.relation.anchor)))
    else:
        i = rng.index(len(objects))
        obj = objects[i]
        if factor == "style":  # an unstyled object renders flat: "flat" would change the words only
            objects[i] = replace(obj, style=_other(rng, STYLES, obj.style or "flat"))
        elif obj.colour and rng.random() < 0.5:
            objects[i] = replace(obj, colour=_other(rng, COLOURS, obj.colour))
        else:
            objects[i] = replace(obj, shape=_other(rng, SHAPES, obj.shape))
    try:
        return SceneSpec(tuple(objects), spec.background)
    except ValueError:   # e.g. the new shape and colour are another object's
        return None


@functools.cache
def _evaluated_keys() -> frozenset:
    return frozenset(s.canonical_key() for s in evaluated_specs())


def _trainable(spec: SceneSpec) -> bool:
    return not is_rare(spec) and spec.canonical_key() not in _evaluated_keys()


def factor_pair(factor: str, seed: int) -> FactorPair:
    """One pair differing in `factor` (one of ROLES), drawn by `seed`."""
    if factor not in ROLES:
        raise ValueError(f"factor: expected one of {ROLES}, got {factor!r}")
    rng = StableRng(seed)
    for _ in range(ATTEMPTS):
        category = "position" if factor == "relation" else rng.choice(CATEGORIES)
        spec = sample_spec(category, rng)
        variant = vary(spec, factor, rng)
        if variant is not None and _trainable(spec) and _trainable(variant):
            # anchor and changed share their wording draw, so they differ (mostly) in the factor's words only
            wording, rewording = derive_seed(seed, "wording"), derive_seed(seed, "rewording")
            return FactorPair(spec, variant, factor, paraphrase(spec, wording), paraphrase(spec, rewording),
                              paraphrase(variant, wording))
    raise ValueError(f"factor_pair: no trainable {factor} pair in {ATTEMPTS} draws")


def factor_pairs(indices, *seed_parts) -> list[FactorPair]:
    """The pairs numbered `indices` (a range) of the stream the seed parts name; the factors take turns, so every
    batch holds each factor."""
    return [factor_pair(ROLES[k % len(ROLES)], derive_seed("factor-pair", *seed_parts, k)) for k in indices]


def pair_batch(pairs: list[FactorPair]) -> tuple[list[str], list[int]]:
    """The pairs' captions in three blocks (anchors, positives, changed), as role_contrastive_loss reads their
    role summaries, and each pair's factor as its index in ROLES."""
    captions = [getattr(p, part) for part in ("anchor", "positive", "changed") for p in pairs]
    return captions, [ROLES.index(p.factor) for p in pairs]
