"""Fixed prompt sets: train, validation and test specs in every category.

The splits are generated from fixed seeds with a version-stable random source, and the test and validation
splits are pinned by digest, so a change to any generator is caught instead of silently moving the benchmark.
Held-out combinations (longtail.HELD_OUT) never appear in train or validation; the test split carries them
as its rare subset. The spec space is small (a train draw of 3,000 per category repeats a val or test spec 27%
of the time), so the train split drops every spec that val or test holds: a test caption is never trained on.
"""
from __future__ import annotations

import functools

from .longtail import HELD_OUT, ConceptLaw, rare_specs, sample_spec
from .rng import StableRng, derive_seed
from .spec import CATEGORIES, SceneSpec, specs_digest

SPLIT_SIZES = {"train": 1000, "val": 20, "test": 40}   # specs per category
RARE_PER_COMBO = 10                                    # rare test specs per held-out combination

SPLIT_DIGESTS = {
    "val": "7ecdbc22d3e5e882e949fc71f9c0a89cba3920140793be8adda874cae26564ad",
    "test": "3c293ce20213fbebb5ae35285a979c17a649a8841f39bd762b028c6b4e4ad1f3",
}


def generate_split(name: str, per_category: int | None = None, law: ConceptLaw = ConceptLaw()) -> list[SceneSpec]:
    """Regenerate a split from its seeds (use load_split for the pinned benchmark)."""
    if name not in SPLIT_SIZES:
        raise ValueError(f"split: unknown {name!r}; choose one of {list(SPLIT_SIZES)}")
    n = SPLIT_SIZES[name] if per_category is None else per_category
    specs = []
    for category in CATEGORIES:
        rng = StableRng(derive_seed("split", name, category))
        specs += [sample_spec(category, rng, law) for _ in range(n)]
    if name == "test":
        specs += rare_specs(HELD_OUT, RARE_PER_COMBO, derive_seed("split", "test", "rare"))
    if name == "train":
        evaluated = evaluated_specs()
        specs = [s for s in specs if s not in evaluated]
    return specs


@functools.cache
def evaluated_specs() -> frozenset[SceneSpec]:
    """Every spec the validation and test splits hold: what training never sees."""
    return frozenset(load_split("val")) | frozenset(load_split("test"))


def load_split(name: str) -> list[SceneSpec]:
    """The fixed split; raises if the generators drifted from the pinned digest."""
    specs = generate_split(name)
    pinned = SPLIT_DIGESTS.get(name)
    if pinned is not None and specs_digest(specs) != pinned:
        raise ValueError(f"split {name!r}: regenerated specs no longer match the pinned digest; a change to "
                         "the spec generators moved the benchmark. Revert it, or re-pin SPLIT_DIGESTS on purpose")
    return specs
