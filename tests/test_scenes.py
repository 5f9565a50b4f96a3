"""The scene engine, the concept-graph captions, long-tail control and the fixed splits."""
from collections import Counter

import pytest
import torch

from f1core.data import longtail, splits
from f1core.data.captions import caption, paraphrase, parse_caption
from f1core.data.knowledge import GRAPH
from f1core.data.rng import StableRng
from f1core.data.scenes import render_scene
from f1core.data.spec import SHAPES, ObjectSpec, Relation, SceneSpec, specs_digest

SCENE = SceneSpec((ObjectSpec("star", "purple", "striped", relation=Relation("left of", 1)),
                   ObjectSpec("hexagon", "orange", "outlined")), background="black")


def test_render_is_deterministic_by_seed():
    a, b = render_scene(SCENE, 96, seed=5), render_scene(SCENE, 96, seed=5)
    assert torch.equal(a.image, b.image) and torch.equal(a.masks, b.masks)
    assert torch.equal(a.edges, b.edges) and torch.equal(a.depth, b.depth)
    c = render_scene(SCENE, 96, seed=6)
    assert not torch.equal(a.image, c.image)


def test_outputs_have_the_documented_shapes_and_ranges():
    sample = render_scene(SceneSpec((ObjectSpec("circle", count=3), ObjectSpec("square", "blue"))), 160, 96, seed=1)
    assert sample.image.shape == (96, 160, 3) and sample.masks.shape == (4, 96, 160)
    assert sample.edges.shape == sample.depth.shape == (96, 160)
    for tensor in (sample.image, sample.masks, sample.edges, sample.depth):
        assert tensor.min() >= 0 and tensor.max() <= 1
    solid = sample.masks > 0.5
    assert solid.flatten(1).sum(1).min() > 20            # every instance is visible
    assert solid.sum(0).max() == 1                       # and no two overlap
    assert [p.shape for p in sample.objects].count("circle") == 3


def test_edges_trace_boundaries_and_objects_stand_nearer_than_the_ground():
    sample = render_scene("a large blue square in the centre", 128, seed=0)
    mask = sample.masks[0] > 0.5
    inner = torch.nn.functional.max_pool2d((~mask).float()[None], 3, 1, 1)[0] > 0  # one pixel band at the edge
    band = mask & inner
    assert sample.edges[band].mean() > 0.3
    assert sample.edges[~torch.nn.functional.max_pool2d(mask.float()[None], 9, 1, 4)[0].bool()].max() == 0
    assert sample.depth[mask].mean() > sample.depth[~mask].mean() + 0.2


@pytest.mark.parametrize("size", [64, 1024])
def test_any_size_from_64_to_1024(size):
    sample = render_scene("a red circle", size, seed=0)
    assert sample.image.shape == (size, size, 3)
    radius = sample.objects[0].radius
    assert abs((sample.masks[0].sum() / (torch.pi * radius ** 2)) - 1) < 0.05


def test_caption_prompts_render_their_layout():
    sample = render_scene("a green triangle on the left and a yellow diamond on the right", 128, seed=3)
    by_shape = {p.shape: p for p in sample.objects}
    assert by_shape["triangle"].x < 0.4 < 0.6 < by_shape["diamond"].x
    assert by_shape["triangle"].colour == "green" and by_shape["diamond"].colour == "yellow"


def test_canonical_captions_and_paraphrases_parse_back_to_the_spec():
    specs = splits.generate_split("val", per_category=12)
    for k, spec in enumerate(specs):
        assert parse_caption(caption(spec)).canonical_key() == spec.canonical_key()
        for seed in range(3):
            text = paraphrase(spec, seed=k * 10 + seed)
            assert parse_caption(text).equivalent(spec), text


def test_paraphrases_actually_vary_the_words():
    spec = SceneSpec((ObjectSpec("hexagon", "red", "striped", "large"),))
    texts = {paraphrase(spec, seed) for seed in range(30)}
    assert len(texts) > 10
    assert any("scarlet" in t or "crimson" in t for t in texts)
    assert any("six-sided" in t for t in texts)


def test_concept_graph_synonyms_hypernyms_and_attributes():
    expected = {"a scarlet disc": ("circle", "red"), "a violet box": ("square", "purple"),
                "a crimson six-sided polygon": ("hexagon", "red"), "an azure rhombus": ("diamond", "blue"),
                "a golden three-sided shape": ("triangle", "yellow"), "a rose five-pointed star": ("star", "pink")}
    for text, (shape, colour) in expected.items():
        obj = parse_caption(text).objects[0]
        assert (obj.shape, obj.colour) == (shape, colour), text
    # definitions are derived from hypernyms + attributes and are unambiguous among the shapes
    forms = [f for s in SHAPES for f in GRAPH.definitions("shape", s)]
    assert len(forms) == len(set(forms))
    assert "circle" in [c.name for c in GRAPH.hyponyms("shape", "shape")]


def test_bad_specs_raise_errors_that_name_the_problem():
    with pytest.raises(ValueError, match=r"objects\[0\]\.colour.*teal.*choose one of"):
        SceneSpec.from_json('{"objects": [{"shape": "circle", "colour": "teal"}]}')
    with pytest.raises(ValueError, match=r"count.*1 to 4"):
        SceneSpec.from_dict({"objects": [{"shape": "star", "count": 7}]})
    with pytest.raises(ValueError, match="different colours"):
        SceneSpec((ObjectSpec("star", "red"), ObjectSpec("star", "red")))
    with pytest.raises(ValueError, match="anchor"):
        SceneSpec((ObjectSpec("star", relation=Relation("above", 3)), ObjectSpec("circle")))
    with pytest.raises(ValueError, match="not valid JSON"):
        SceneSpec.from_json("{objects: ")
    with pytest.raises(ValueError, match=r"unknown word.*'dodecahedron'"):
        parse_caption("a red dodecahedron")
    with pytest.raises(ValueError, match="width"):
        render_scene(SCENE, 32)
    with pytest.raises(ValueError, match="cannot fit"):
        render_scene(SceneSpec((ObjectSpec("circle", size="large", count=4), ObjectSpec("square", size="large",
                                                                                        count=2))), 64)


def test_spec_json_round_trip_keeps_everything():
    again = SceneSpec.from_json(SCENE.to_json())
    assert again == SCENE and again.category == "position"
    with pytest.raises(ValueError, match="category"):
        SceneSpec.from_dict(SCENE.to_dict() | {"category": "counting"})


def test_splits_are_fixed_and_hold_out_the_rare_combinations():
    test = splits.load_split("test")           # raises if the generators drifted from the pinned digest
    assert specs_digest(splits.generate_split("test")) == specs_digest(test) == splits.SPLIT_DIGESTS["test"]
    assert {s.category for s in test} == set(splits.CATEGORIES)
    rare = [s for s in test if s.rare]
    assert rare and all(longtail.is_rare(s) for s in rare)
    found = {name for name, combo in longtail.HELD_OUT.items()
             if any(longtail.matches(o, combo) for s in rare for o in s.objects)}
    assert found == set(longtail.HELD_OUT)
    for name in ("train", "val"):
        assert not any(longtail.is_rare(s) for s in splits.generate_split(name, per_category=150))


def test_zipf_law_makes_a_long_tail():
    rng = StableRng(0)
    steep = Counter(longtail.ConceptLaw(exponent=1.5).draw(rng, "shape") for _ in range(3000))
    flat = Counter(longtail.ConceptLaw(exponent=0.0).draw(rng, "shape") for _ in range(3000))
    assert steep[SHAPES[0]] > 5 * steep[SHAPES[-1]]
    assert flat[SHAPES[0]] < 1.3 * flat[SHAPES[-1]]
    with pytest.raises(ValueError, match="exponent"):
        longtail.ConceptLaw(exponent=-1)


def test_rare_mode_and_avoided_combinations():
    combo = {"colour": "purple", "shape": "star"}
    specs = longtail.rare_specs({"purple star": combo}, per_combo=10, seed=3)
    assert len({s.category for s in specs}) >= 4
    assert all(s.rare and longtail.matches(s.objects[0], combo) for s in specs)
    colours = {render_scene("a star", 64, seed=s, avoid=[combo]).objects[0].colour for s in range(40)}
    assert "purple" not in colours and len(colours) >= 5
