"""F.1 data: scene specs, the procedural scene engine, concept-graph captions, long-tail sampling and the fixed
prompt splits."""
from .captions import caption, paraphrase, parse_caption
from .longtail import HELD_OUT, ConceptLaw, rare_spec, rare_specs, sample_spec
from .scenes import SceneSample, render_scene
from .spec import ObjectSpec, Relation, SceneSpec
from .splits import generate_split, load_split

__all__ = ["caption", "paraphrase", "parse_caption", "HELD_OUT", "ConceptLaw", "rare_spec", "rare_specs",
           "sample_spec", "SceneSample", "render_scene", "ObjectSpec", "Relation", "SceneSpec", "generate_split",
           "load_split"]
