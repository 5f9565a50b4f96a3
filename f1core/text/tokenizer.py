"""CLIP and RoBERTa byte-level BPE tokenizers built from local vocab/merges (no downloads).

The pipelines reproduce Hugging Face's `CLIPTokenizerFast` and `RobertaTokenizerFast`, so real vocab files give
the ids the pretrained towers expect. Long prompts are split into several windows, never cut.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, normalizers, pre_tokenizers
from tokenizers.models import BPE

CLIP_END_OF_WORD = "</w>"
_CLIP_SPLIT = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


@lru_cache(maxsize=1)
def byte_symbols() -> tuple[str, ...]:
    """The 256 printable stand-ins byte-level BPE uses for raw bytes, in GPT-2's `bytes_to_unicode` order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    codes = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return tuple(chr(code) for code in codes)


@dataclass(frozen=True)
class TokenChunks:
    """A prompt as fixed-length windows: `ids[i]` is [bos, tokens..., eos, pad...] of the window length."""
    ids: list[list[int]]
    lengths: list[int]   # valid tokens per window, bos and eos included

    @property
    def attention_mask(self) -> list[list[int]]:
        return [[1] * n + [0] * (len(row) - n) for row, n in zip(self.ids, self.lengths)]


def parse_merges(merges_txt: str) -> list[tuple[str, str]]:
    merges = []
    for number, line in enumerate(merges_txt.splitlines(), start=1):
        if not line.strip() or line.startswith("#version"):
            continue
        parts = line.split(" ")
        if len(parts) != 2:
            raise ValueError(f"merges_txt line {number} is {line!r}; each merge must be two symbols separated "
                             f"by one space (a BPE merges.txt file)")
        merges.append((parts[0], parts[1]))
    return merges


def format_merges(merges: list[tuple[str, str]]) -> str:
    return "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges)


def _parse_vocab(vocab_json: str) -> dict[str, int]:
    try:
        vocab = json.loads(vocab_json)
    except json.JSONDecodeError as error:
        raise ValueError(f"vocab_json is not valid JSON ({error}); pass the text of a vocab.json file") from None
    if not isinstance(vocab, dict) or not all(isinstance(v, int) for v in vocab.values()):
        raise ValueError("vocab_json must be a JSON object mapping token strings to integer ids")
    if len(set(vocab.values())) != len(vocab):
        raise ValueError("vocab_json maps several tokens to the same id; ids must be unique")
    return vocab


def _resolve_files(dir_or_paths) -> tuple[Path, Path]:
    if isinstance(dir_or_paths, (str, Path)):
        folder = Path(dir_or_paths)
        vocab_path, merges_path = folder / "vocab.json", folder / "merges.txt"
    else:
        vocab_path, merges_path = (Path(p) for p in dir_or_paths)
    for path in (vocab_path, merges_path):
        if not path.is_file():
            raise ValueError(f"tokenizer file {path} not found; pass a folder holding vocab.json and merges.txt, "
                             f"or a (vocab.json, merges.txt) pair of paths")
    return vocab_path, merges_path


class BPETokenizer:
    """Shared machinery; subclasses define the pipeline and which vocab entries are the special tokens."""
    special_names: dict[str, str] = {}   # role -> token text
    required_base: tuple[str, ...] = ()  # symbols every vocab needs so that any text tokenizes

    def __init__(self, vocab: dict[str, int], merges: list[tuple[str, str]]):
        missing_specials = [tok for tok in self.special_names.values() if tok not in vocab]
        if missing_specials:
            raise ValueError(f"{type(self).__name__}: vocab lacks special tokens {missing_specials}")
        missing_base = [s for s in self.required_base if s not in vocab]
        if missing_base:
            raise ValueError(f"{type(self).__name__}: vocab lacks {len(missing_base)} byte-level base symbols "
                             f"(e.g. {missing_base[:5]}), so some text could not be tokenized; build the vocab "
                             f"with f1core.text.build_vocab or use the model's original vocab.json")
        bad_merges = [m for m in merges if m[0] not in vocab or m[1] not in vocab or m[0] + m[1] not in vocab]
        if bad_merges:
            raise ValueError(f"{type(self).__name__}: {len(bad_merges)} merges use symbols missing from the vocab "
                             f"(e.g. {bad_merges[:3]}); vocab.json and merges.txt do not belong together")
        self.vocab = dict(vocab)
        self.merges = list(merges)
        self.backend = self._build(self.vocab, self.merges)
        self.backend.add_special_tokens([AddedToken(tok, special=True) for tok in
                                         dict.fromkeys(self.special_names.values())])
        for role, tok in self.special_names.items():
            setattr(self, f"{role}_id", self.vocab[tok])

    @staticmethod
    def _build(vocab: dict[str, int], merges: list[tuple[str, str]]) -> Tokenizer:
        raise NotImplementedError

    @classmethod
    def from_strings(cls, vocab_json: str, merges_txt: str):
        return cls(_parse_vocab(vocab_json), parse_merges(merges_txt))

    @classmethod
    def from_files(cls, dir_or_paths):
        """A folder holding vocab.json and merges.txt, or a (vocab.json, merges.txt) pair of paths."""
        vocab_path, merges_path = _resolve_files(dir_or_paths)
        return cls.from_strings(vocab_path.read_text(encoding="utf-8"), merges_path.read_text(encoding="utf-8"))

    def to_strings(self) -> tuple[str, str]:
        """(vocab_json, merges_txt), e.g. to store the vocab in a checkpoint's metadata."""
        return json.dumps(self.vocab, ensure_ascii=False), format_merges(self.merges)

    @property
    def max_id(self) -> int:
        return max(self.vocab.values())

    def encode(self, text: str) -> list[int]:
        """Token ids of `text` without bos/eos."""
        return self._encode(text).ids

    def _encode(self, text: str):
        if not isinstance(text, str):
            raise ValueError(f"text must be a str, got {type(text).__name__}")
        # lone surrogates (valid in JSON, not in UTF-8) would make the Rust tokenizer raise; they become '?'
        text = text.encode("utf-8", "replace").decode("utf-8")
        return self.backend.encode(text, add_special_tokens=False)

    def chunks(self, text: str, window: int) -> TokenChunks:
        """Split `text` into windows of `window` ids (bos + up to window-2 tokens + eos + padding).

        A window breaks before a word that would not fit whole; only a word longer than a window is split.
        Empty text gives one window holding just bos and eos.
        """
        if window < 3:
            raise ValueError(f"window must be at least 3 (bos, one token, eos), got {window}")
        encoding = self._encode(text)
        capacity = window - 2
        pieces: list[list[int]] = [[]]
        words = encoding.word_ids
        for index, token in enumerate(encoding.ids):
            starts_word = index == 0 or words[index] is None or words[index] != words[index - 1]
            if len(pieces[-1]) == capacity:
                pieces.append([])
            elif starts_word and pieces[-1]:
                word_len = 1
                while (index + word_len < len(words) and words[index] is not None
                       and words[index + word_len] == words[index]):
                    word_len += 1
                if len(pieces[-1]) + word_len > capacity and word_len <= capacity:
                    pieces.append([])
            pieces[-1].append(token)
        ids, lengths = [], []
        for piece in pieces:
            row = [self.bos_id, *piece, self.eos_id]
            lengths.append(len(row))
            ids.append(row + [self.pad_id] * (window - len(row)))
        return TokenChunks(ids=ids, lengths=lengths)


class CLIPTokenizer(BPETokenizer):
    """CLIP's tokenizer: NFC, whitespace collapse, lowercase, CLIP's split regex, byte-level BPE with '</w>'."""
    special_names = {"bos": "<|startoftext|>", "eos": "<|endoftext|>", "pad": "<|endoftext|>"}
    required_base = byte_symbols() + tuple(s + CLIP_END_OF_WORD for s in byte_symbols())

    @staticmethod
    def _build(vocab, merges) -> Tokenizer:
        backend = Tokenizer(BPE(vocab=vocab, merges=merges, dropout=None, continuing_subword_prefix="",
                                end_of_word_suffix=CLIP_END_OF_WORD, fuse_unk=False, unk_token="<|endoftext|>"))
        backend.normalizer = clip_normalizer()
        backend.pre_tokenizer = clip_pre_tokenizer()
        return backend


class RobertaTokenizer(BPETokenizer):
    """RoBERTa's (GPT-2) byte-level BPE without a prefix space; special ids come from the vocab."""
    special_names = {"bos": "<s>", "pad": "<pad>", "eos": "</s>", "unk": "<unk>", "mask": "<mask>"}
    required_base = byte_symbols()

    @staticmethod
    def _build(vocab, merges) -> Tokenizer:
        backend = Tokenizer(BPE(vocab=vocab, merges=merges, dropout=None, continuing_subword_prefix="",
                                end_of_word_suffix="", fuse_unk=False))
        backend.pre_tokenizer = roberta_pre_tokenizer()
        return backend


def clip_normalizer():
    return normalizers.Sequence([normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()])


def clip_pre_tokenizer():
    return pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(_CLIP_SPLIT), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False),
    ])


def roberta_pre_tokenizer():
    return pre_tokenizers.ByteLevel(add_prefix_space=False)
