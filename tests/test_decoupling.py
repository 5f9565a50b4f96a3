"""Learned decoupling: factor pairs from the train spec space, and the role-wise contrastive loss on the adapter's
role tokens (f1core.data.pairs, f1core.train.losses.role_contrastive_loss)."""
import copy
from dataclasses import replace

import pytest
import torch

from f1core.checkpoint import VOCAB_KEYS, build_part
from f1core.config import tiny, with_overrides
from f1core.data.captions import caption, parse_caption
from f1core.data.longtail import is_rare
from f1core.data.pairs import factor_pairs, pair_batch
from f1core.data.splits import load_split
from f1core.text.adapter import ROLES, role_summaries
from f1core.text.vocab import build_vocab
from f1core.train.data import SceneDataset
from f1core.train.losses import role_contrastive_loss, role_margins, role_similarity

# what each factor may change in the one object it changes
CHANGES = {"style": [{"style"}], "entity": [{"colour"}, {"shape"}], "relation": [{"position"}, {"relation"}]}


def _changed_fields(a, b) -> set:
    def value(obj, field):
        v = getattr(obj, field)
        return (v or "flat") if field == "style" else v   # an unstyled object renders flat
    fields = ("shape", "colour", "style", "size", "count", "position", "relation")
    return {f for f in fields if value(a, f) != value(b, f)}


def test_pairs_differ_in_exactly_their_factor_and_never_touch_validation_or_test():
    evaluated = {s.canonical_key() for name in ("val", "test") for s in load_split(name)}
    pairs = factor_pairs(range(240), "test", 0)
    assert [p.factor for p in pairs[:3]] == list(ROLES)   # every batch holds each factor
    for pair in pairs:
        for spec in (pair.spec, pair.variant):
            assert spec.canonical_key() not in evaluated and not is_rare(spec), spec
        a, b = pair.spec, pair.variant
        assert a.background == b.background and len(a.objects) == len(b.objects)
        changed = [_changed_fields(x, y) for x, y in zip(a.objects, b.objects) if _changed_fields(x, y)]
        assert len(changed) == 1 and changed[0] in CHANGES[pair.factor], (pair.factor, a, b)
        assert parse_caption(pair.anchor).equivalent(a) and parse_caption(pair.positive).equivalent(a)
        assert parse_caption(pair.changed).equivalent(b)
    # a rank's share of a step's pairs is the same slice of the step's stream
    assert factor_pairs(range(3, 6), "test", 0) == pairs[3:6]


@pytest.fixture(scope="module")
def text():
    """A tiny text encoder over the scene vocabulary, with the scenes preset's short windows (fast)."""
    config = with_overrides(tiny(vocab_size=600), {"text.clip.max_positions": 32, "text.roberta.max_positions": 34})
    corpus = SceneDataset.split("train", 20).corpus(3)
    vocab = (*build_vocab(corpus, 600, style="clip"), *build_vocab(corpus, 600, style="roberta"))
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return build_part("text", config, dict(zip(VOCAB_KEYS, vocab)))


def _loss(text, pairs, temperature=0.07):
    captions, factor = pair_batch(pairs)
    roles = role_summaries(text.encode(captions).context, text.config.adapter.role_tokens)
    return role_contrastive_loss(*roles.chunk(3), torch.tensor(factor), temperature)


def test_loss_is_finite_and_reaches_the_role_queries(text):
    text.zero_grad()
    loss = _loss(text, factor_pairs(range(6), "grad"))
    loss.backward()
    assert torch.isfinite(loss) and loss > 0
    grad = text.adapter.roles.queries.grad
    assert grad is not None and grad.abs().sum() > 0
    per_role = grad.unflatten(0, (len(ROLES), -1)).abs().sum(dim=(1, 2))
    assert (per_role > 0).all()   # every role's queries learn


def _in_one_wording(pairs):
    """The canonical caption throughout: the test asks what the loss teaches the roles, not paraphrase invariance
    (which a random tower learns slowly)."""
    return [replace(p, anchor=caption(p.spec), positive=caption(p.spec), changed=caption(p.variant)) for p in pairs]


def test_a_short_optimisation_makes_each_role_separate_its_own_factor(text):
    text = copy.deepcopy(text)
    held = _in_one_wording(factor_pairs(range(60), "held"))
    before = role_margins(role_similarity(text, held))
    optimizer = torch.optim.AdamW(text.parameters(), lr=1e-3)
    for step in range(60):
        loss = _loss(text, _in_one_wording(factor_pairs(range(12), "train", step)))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = role_margins(role_similarity(text, held))
    assert (before.abs() < 0.02).all(), before          # a random init separates nothing
    assert (after > 0.05).all(), after                  # style pairs: the style role far below entity and relation
