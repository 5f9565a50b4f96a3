"""Train small byte-level BPE vocabularies (for tiny and from-scratch checkpoints), deterministically.

Every vocab holds all 256 byte-level base symbols (CLIP style: each also with '</w>'), so any text tokenizes and
nothing is unknown. Special tokens take the lowest ids, matching `config.tiny()`:
CLIP style <|startoftext|>=0, <|endoftext|>=1 (also pad); RoBERTa style <s>=0 <pad>=1 </s>=2 <unk>=3 <mask>=4.
"""
from __future__ import annotations

import heapq
import itertools
import json
from collections import Counter, defaultdict
from typing import Iterable

from .tokenizer import (CLIP_END_OF_WORD, byte_symbols, clip_normalizer, clip_pre_tokenizer, format_merges,
                        roberta_pre_tokenizer)

_SPECIALS = {
    "clip": ("<|startoftext|>", "<|endoftext|>"),
    "roberta": ("<s>", "<pad>", "</s>", "<unk>", "<mask>"),
}


def _base_symbols(style: str) -> list[str]:
    if style == "clip":
        return [*byte_symbols(), *(s + CLIP_END_OF_WORD for s in byte_symbols())]
    return list(byte_symbols())


def build_vocab(corpus: Iterable[str], vocab_size: int, style: str) -> tuple[str, str]:
    """Train a BPE vocab of at most `vocab_size` ids on `corpus`; returns (vocab_json, merges_txt).

    Text is normalised and pre-tokenized by the same `tokenizers` pipeline the tokenizer uses. The merges are
    learned here rather than by `tokenizers.trainers.BpeTrainer`, whose tie-breaking between equally frequent pairs
    follows hash-map order and changes from run to run; here ties go to the lexicographically smallest pair, so the
    same corpus always gives the same files. Ids: specials, base symbols, then merge results in merge order. The
    vocab is smaller than `vocab_size` only when no pair occurs at least twice any more.
    """
    if style not in _SPECIALS:
        raise ValueError(f"style must be 'clip' or 'roberta', got {style!r}")
    specials, base = _SPECIALS[style], _base_symbols(style)
    minimum = len(specials) + len(base)
    if vocab_size < minimum:
        raise ValueError(f"vocab_size must be at least {minimum} for style {style!r} "
                         f"(special tokens + byte-level base symbols), got {vocab_size}")
    vocab = {token: index for index, token in enumerate(itertools.chain(specials, base))}
    merges = []
    for left, right in _learn_merges(_word_counts(corpus, style)):
        if len(vocab) >= vocab_size:
            break
        merges.append((left, right))
        vocab.setdefault(left + right, len(vocab))
    return json.dumps(vocab, ensure_ascii=False), format_merges(merges)


def _word_counts(corpus: Iterable[str], style: str) -> Counter:
    """Pre-tokenized words of the corpus as tuples of base symbols, with their frequencies."""
    normalizer = clip_normalizer() if style == "clip" else None
    pre_tokenizer = clip_pre_tokenizer() if style == "clip" else roberta_pre_tokenizer()
    counts = Counter()
    for text in corpus:
        if not isinstance(text, str):
            raise ValueError(f"corpus must be an iterable of str, found {type(text).__name__}")
        if normalizer is not None:
            text = normalizer.normalize_str(text)
        for word, _ in pre_tokenizer.pre_tokenize_str(text):
            symbols = list(word)
            if style == "clip":
                symbols[-1] += CLIP_END_OF_WORD
            counts[tuple(symbols)] += 1
    return counts


def _learn_merges(word_counts: Counter, min_frequency: int = 2):
    """Yield BPE merges, most frequent pair first (ties: smallest pair), until no pair reaches `min_frequency`."""
    words = [list(word) for word in word_counts]
    freqs = list(word_counts.values())
    pair_counts: Counter = Counter()
    pair_words: dict[tuple[str, str], set[int]] = defaultdict(set)

    def account(index: int, sign: int):
        word = words[index]
        for pair in zip(word, word[1:]):
            pair_counts[pair] += sign * freqs[index]
            if sign > 0:
                pair_words[pair].add(index)

    for index in range(len(words)):
        account(index, +1)
    heap = [(-count, pair) for pair, count in pair_counts.items()]
    heapq.heapify(heap)
    while heap:
        negative, pair = heapq.heappop(heap)
        if pair_counts.get(pair, 0) != -negative:
            continue  # stale entry; the current count was pushed again when it changed
        if -negative < min_frequency:
            return
        yield pair
        changed = set()
        for index in sorted(pair_words.pop(pair)):
            account(index, -1)
            words[index] = _merge_pair(words[index], pair)
            account(index, +1)
            changed.update(zip(words[index], words[index][1:]))
        del pair_counts[pair]
        for other in changed:
            if pair_counts.get(other, 0) > 0:
                heapq.heappush(heap, (-pair_counts[other], other))


def _merge_pair(word: list[str], pair: tuple[str, str]) -> list[str]:
    merged, position = [], 0
    while position < len(word):
        if position + 1 < len(word) and (word[position], word[position + 1]) == pair:
            merged.append(word[position] + word[position + 1])
            position += 2
        else:
            merged.append(word[position])
            position += 1
    return merged


_COLOURS = ("red orange yellow green blue purple pink brown black white grey gold silver teal cyan magenta "
            "beige navy crimson violet").split()
_SHAPES = "cube sphere cone cylinder pyramid ring star heart square circle triangle hexagon torus disk".split()
_OBJECTS = ("cat dog bird horse fish tree flower house car boat castle mountain river lake forest city street "
            "robot person woman man child apple cup chair table lamp book clock bridge tower moon sun cloud").split()
_POSITIONS = ("on the left of|on the right of|above|below|in front of|behind|next to|inside|on top of|"
              "under|between|near|far from").split("|")
_COUNTS = "one two three four five six seven eight nine ten a single a pair of several many".split()
_STYLES = ("photo photograph painting oil painting watercolor sketch drawing illustration render 3d render "
           "cartoon anime pixel art digital art concept art portrait landscape macro closeup wide angle "
           "cinematic lighting soft light golden hour night sunset studio lighting highly detailed sharp focus "
           "bokeh minimalist surreal realistic vintage").split()
_COMMON = ("a an the of and with in on at by for from to is are was it this that these those there here very "
           "small large big tiny huge tall short long round flat shiny matte wooden metal glass stone paper "
           "old new bright dark happy sad quiet busy beautiful simple colorful standing sitting flying running "
           "sleeping walking holding wearing looking made background foreground center top bottom corner "
           "scene view image picture of against under over during").split()


def default_corpus() -> list[str]:
    """A few hundred words and compositional phrases (colours, shapes, positions, counts, styles) for tiny vocabs."""
    words = [*_COLOURS, *_SHAPES, *_OBJECTS, *_COUNTS, *_STYLES, *_COMMON, *_POSITIONS]
    phrases = []
    things = [*_SHAPES, *_OBJECTS]
    for index, (colour, thing) in enumerate(itertools.product(_COLOURS, things)):
        other = things[(index * 7 + 3) % len(things)]
        other_colour = _COLOURS[(index * 5 + 1) % len(_COLOURS)]
        position = _POSITIONS[index % len(_POSITIONS)]
        count = _COUNTS[index % len(_COUNTS)]
        style = _STYLES[index % len(_STYLES)]
        phrases.append(f"a {style} of {count} {colour} {thing} {position} a {other_colour} {other}")
    return words + phrases
