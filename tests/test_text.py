"""F.1 text encoders: tokenizer and tower parity with Hugging Face transformers, weight loading, chunking, adapter."""
import dataclasses
import json
from pathlib import Path

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

from f1core.config import CLIPTextConfig, tiny
from f1core.text import (CLIPTextTower, CLIPTokenizer, F1TextEncoder, RobertaEncoder, RobertaTokenizer,
                         build_vocab, default_corpus, load_hf_state_dict, normalize_hf_state_dict)
from f1core.text.tokenizer import byte_symbols

REAL_CLIP_VOCAB = Path(__file__).resolve().parents[1] / ".comfyui" / "comfy" / "sd1_tokenizer"
CORPUS = [
    "A photograph of a red fox jumping over the lazy dog",
    "two small green cubes to the left of a large shiny sphere",
    "an oil painting of a lighthouse at sunset, dramatic clouds",
    "the cat's hat isn't red; it's BLUE and we'll see",
] * 3
SENTENCES = [
    "A photograph of a red fox jumping over the lazy dog",
    "  Hello,\tWORLD!!  it's 3.14 -- don't, we'll, they've  ",
    "café ÉCOLE naïve 日本語 😀 zebra-xylophone",
    "",
    "a red cube<|endoftext|>blue",
]
LONG_PROMPT = " ".join(f"{word}{index}" if index % 7 == 0 else word
                       for index, word in enumerate(("a tall red tower standing next to a small blue house, "
                                                     "painted in watercolor with soft golden light ").split() * 20))


def _hf_merges(merges_txt):
    return [tuple(line.split(" ")) for line in merges_txt.splitlines() if line and not line.startswith("#")]


def _perturb(model):
    """Move every parameter off its init (LayerNorms at 1/0, zero biases) so parity tests see all weights."""
    torch.manual_seed(1)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    return model.eval()


def _save_and_load(state_dict, path):
    save_file({k: v.detach().clone().contiguous() for k, v in state_dict.items()}, str(path))
    return load_file(str(path))


@pytest.fixture(scope="module")
def clip_vocab():
    return build_vocab(CORPUS, 700, "clip")


@pytest.fixture(scope="module")
def roberta_vocab():
    return build_vocab(CORPUS, 400, "roberta")


# --- tokenizers -----------------------------------------------------------------------------------------------

def test_clip_tokenizer_matches_transformers(clip_vocab):
    ours = CLIPTokenizer.from_strings(*clip_vocab)
    theirs = transformers.CLIPTokenizer(vocab=json.loads(clip_vocab[0]), merges=_hf_merges(clip_vocab[1]))
    for text in SENTENCES:
        ids = ours.encode(text)
        assert ids == theirs(text, add_special_tokens=False)["input_ids"], text
        chunk = ours.chunks(text, 77)
        assert chunk.ids[0][:chunk.lengths[0]] == theirs(text)["input_ids"]


@pytest.mark.skipif(not (REAL_CLIP_VOCAB / "vocab.json").is_file(), reason="ComfyUI's CLIP vocab not present")
def test_clip_tokenizer_matches_transformers_on_real_vocab():
    ours = CLIPTokenizer.from_files(REAL_CLIP_VOCAB)
    theirs = transformers.CLIPTokenizer.from_pretrained(str(REAL_CLIP_VOCAB))
    for text in SENTENCES + [LONG_PROMPT]:
        assert ours.encode(text) == theirs(text, add_special_tokens=False)["input_ids"], text
    assert (ours.bos_id, ours.eos_id, ours.pad_id) == (49406, 49407, 49407)


def test_roberta_tokenizer_matches_transformers(roberta_vocab):
    ours = RobertaTokenizer.from_strings(*roberta_vocab)
    theirs = transformers.RobertaTokenizer(vocab=json.loads(roberta_vocab[0]), merges=_hf_merges(roberta_vocab[1]))
    for text in SENTENCES + [" leading space", "<mask> and <s> typed in"]:
        assert ours.encode(text) == theirs(text, add_special_tokens=False)["input_ids"], text
        chunk = ours.chunks(text, 128)
        assert chunk.ids[0][:chunk.lengths[0]] == theirs(text)["input_ids"]
    assert (ours.bos_id, ours.pad_id, ours.eos_id, ours.unk_id, ours.mask_id) == (0, 1, 2, 3, 4)


def test_tokenizer_round_trips_through_strings_and_files(clip_vocab, tmp_path):
    ours = CLIPTokenizer.from_strings(*clip_vocab)
    vocab_json, merges_txt = ours.to_strings()
    (tmp_path / "vocab.json").write_text(vocab_json, encoding="utf-8")
    (tmp_path / "merges.txt").write_text(merges_txt, encoding="utf-8")
    for restored in (CLIPTokenizer.from_strings(vocab_json, merges_txt), CLIPTokenizer.from_files(tmp_path),
                     CLIPTokenizer.from_files((tmp_path / "vocab.json", tmp_path / "merges.txt"))):
        assert [restored.encode(t) for t in SENTENCES] == [ours.encode(t) for t in SENTENCES]


def test_build_vocab_is_deterministic_complete_and_matches_tiny_config():
    config = tiny().text
    corpus = default_corpus()
    assert len(corpus) >= 300
    for style, cls, tower in (("clip", CLIPTokenizer, config.clip), ("roberta", RobertaTokenizer, config.roberta)):
        first = build_vocab(corpus, tower.vocab_size, style)
        assert all(build_vocab(corpus, tower.vocab_size, style) == first for _ in range(3))
        vocab = json.loads(first[0])
        assert len(vocab) <= tower.vocab_size and len(vocab) > 600  # merges were learned
        assert set(byte_symbols()) <= set(vocab)
        tokenizer = cls.from_strings(*first)
        assert (tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id) == (
            tower.bos_token_id, tower.eos_token_id, tower.pad_token_id)
        # Text far from the corpus still tokenizes fully: decoding the byte symbols gives the input back.
        text = "Zürich ∑ 🙂 quokka \x00\x7f"
        expected = text.lower() if style == "clip" else text
        assert _decode(tokenizer, tokenizer.encode(text)).split() == expected.split()
    with pytest.raises(ValueError, match="vocab_size"):
        build_vocab(corpus, 300, "clip")
    with pytest.raises(ValueError, match="style"):
        build_vocab(corpus, 1024, "t5")


def _decode(tokenizer, ids):
    """Ids back to text through the byte-level symbols ('</w>' ends a CLIP word)."""
    inverse = {index: token for token, index in tokenizer.vocab.items()}
    byte_of = {symbol: byte for byte, symbol in enumerate(_gpt2_byte_order())}
    pieces = "".join(inverse[i] for i in ids).split("</w>")
    return " ".join(bytes(byte_of[ch] for ch in piece).decode("utf-8") for piece in pieces)


def _gpt2_byte_order():
    """Byte value -> symbol, computed independently of f1core from the GPT-2 definition."""
    keep = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    mapping, extra = {}, 0
    for byte in range(256):
        if byte in keep:
            mapping[byte] = chr(byte)
        else:
            mapping[byte] = chr(256 + extra)
            extra += 1
    return [mapping[byte] for byte in range(256)]


@pytest.mark.parametrize("style", ["clip", "roberta"])
def test_long_prompt_is_split_into_windows_without_dropping_tokens(style, clip_vocab, roberta_vocab):
    tokenizer = (CLIPTokenizer.from_strings(*clip_vocab) if style == "clip"
                 else RobertaTokenizer.from_strings(*roberta_vocab))
    window = 77
    assert len(LONG_PROMPT.split()) >= 250
    chunks = tokenizer.chunks(LONG_PROMPT, window)
    assert len(chunks.ids) > 1
    content = []
    for row, length, mask in zip(chunks.ids, chunks.lengths, chunks.attention_mask):
        assert len(row) == window and sum(mask) == length
        assert row[0] == tokenizer.bos_id and row[length - 1] == tokenizer.eos_id
        assert all(token == tokenizer.pad_id for token in row[length:])
        content += row[1:length - 1]
    assert content == tokenizer.encode(LONG_PROMPT)
    # Windows break between words: re-tokenizing each window's text gives the same ids.
    for row, length in zip(chunks.ids, chunks.lengths):
        assert tokenizer.encode(_decode(tokenizer, row[1:length - 1])) == row[1:length - 1]


def test_tokenizer_rejects_bad_input(clip_vocab):
    vocab = json.loads(clip_vocab[0])
    with pytest.raises(ValueError, match="byte-level base symbols"):
        CLIPTokenizer.from_strings(json.dumps({k: v for k, v in vocab.items() if k != "a"}), clip_vocab[1])
    with pytest.raises(ValueError, match="special tokens"):
        RobertaTokenizer.from_strings(clip_vocab[0], "")
    with pytest.raises(ValueError, match="merges"):
        CLIPTokenizer.from_strings(clip_vocab[0], "#version: 0.2\nq zz\n")
    with pytest.raises(ValueError, match="JSON"):
        CLIPTokenizer.from_strings("{not json", clip_vocab[1])
    with pytest.raises(ValueError, match="not found"):
        CLIPTokenizer.from_files("/nonexistent/folder")
    tokenizer = CLIPTokenizer.from_strings(*clip_vocab)
    with pytest.raises(ValueError, match="window"):
        tokenizer.chunks("a cat", 2)
    with pytest.raises(ValueError, match="str"):
        tokenizer.encode(["a cat"])


# --- towers against transformers ---------------------------------------------------------------------------------

def _hf_clip_text_config(config):
    return dict(vocab_size=config.vocab_size, hidden_size=config.hidden_size, num_hidden_layers=config.num_layers,
                num_attention_heads=config.num_heads, intermediate_size=config.intermediate_size,
                max_position_embeddings=config.max_positions, bos_token_id=config.bos_token_id,
                eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id, hidden_act=config.hidden_act,
                layer_norm_eps=config.layer_norm_eps, projection_dim=config.projection_dim)


def _clip_ids(config, batch=3):
    torch.manual_seed(0)
    ids = torch.randint(2, config.vocab_size, (batch, config.max_positions))
    ids[:, 0] = config.bos_token_id
    for row, eos_at in enumerate((5, 40, config.max_positions - 1)[:batch]):
        ids[row, eos_at:] = config.eos_token_id
    lengths = torch.tensor([6, 41, config.max_positions])[:batch, None]
    return ids, (torch.arange(config.max_positions) < lengths).long()


@pytest.mark.parametrize("hidden_act", ["quick_gelu", "gelu"])
def test_clip_tower_matches_transformers_full_clip_file(hidden_act, tmp_path):
    config = dataclasses.replace(tiny().text.clip, hidden_act=hidden_act)
    hf_config = transformers.CLIPConfig(
        text_config=_hf_clip_text_config(config), projection_dim=config.projection_dim,
        vision_config=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37,
                           image_size=30, patch_size=15))
    reference = _perturb(transformers.CLIPModel(hf_config))
    state = _save_and_load(reference.state_dict(), tmp_path / "clip_full.safetensors")
    assert any(k.startswith("vision_model.") for k in state) and "logit_scale" in state

    tower = CLIPTextTower(config).eval()
    assert load_hf_state_dict(tower, state, "clip") == []
    ids, mask = _clip_ids(config)
    with torch.no_grad():
        for attention_mask in (None, mask):
            expected = reference.text_model(ids, attention_mask=attention_mask, output_hidden_states=True)
            ours = tower(ids, attention_mask)
            torch.testing.assert_close(ours.last_hidden, expected.last_hidden_state, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(ours.penultimate_hidden, expected.hidden_states[-2], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(ours.pooled, expected.pooler_output, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(ours.projected_pooled, reference.text_projection(expected.pooler_output),
                                       atol=1e-5, rtol=1e-5)


def test_clip_file_without_projection_loads_and_reports_it(tmp_path):
    config = tiny().text.clip
    reference = _perturb(transformers.CLIPTextModel(transformers.CLIPTextConfig(**_hf_clip_text_config(config))))
    state = _save_and_load(reference.state_dict(), tmp_path / "clip_l.safetensors")
    tower = CLIPTextTower(config).eval()
    projection_before = tower.text_projection.weight.clone()
    assert load_hf_state_dict(tower, state, "clip") == ["text_projection.weight"]
    assert torch.equal(tower.text_projection.weight, projection_before)
    ids, _ = _clip_ids(config)
    with torch.no_grad():
        torch.testing.assert_close(tower(ids).last_hidden, reference(ids).last_hidden_state, atol=1e-5, rtol=1e-5)


def test_clip_keys_with_checkpoint_prefix_and_open_clip_projection_are_normalized():
    tower = CLIPTextTower(tiny().text.clip)
    state = {f"cond_stage_model.transformer.{k}": v for k, v in tower.state_dict().items()}
    projection = state.pop("cond_stage_model.transformer.text_projection.weight")
    state["cond_stage_model.transformer.text_projection"] = projection.t()
    normalized = normalize_hf_state_dict(state, "clip")
    assert set(normalized) == set(tower.state_dict())
    assert torch.equal(normalized["text_projection.weight"], projection)


def _hf_roberta_config(config):
    return transformers.RobertaConfig(
        vocab_size=config.vocab_size, hidden_size=config.hidden_size, num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads, intermediate_size=config.intermediate_size,
        max_position_embeddings=config.max_positions, bos_token_id=config.bos_token_id,
        pad_token_id=config.pad_token_id, eos_token_id=config.eos_token_id,
        type_vocab_size=config.type_vocab_size, layer_norm_eps=config.layer_norm_eps)


@pytest.mark.parametrize("layout", ["masked_lm_with_prefix", "base_model_with_pooler"])
def test_roberta_matches_transformers(layout, tmp_path):
    config = tiny().text.roberta
    hf_config = _hf_roberta_config(config)
    if layout == "masked_lm_with_prefix":
        full = _perturb(transformers.RobertaForMaskedLM(hf_config))
        reference = full.roberta
        state = _save_and_load(full.state_dict(), tmp_path / "roberta_mlm.safetensors")
        assert any(k.startswith("lm_head.") for k in state) and all(
            k.startswith(("roberta.", "lm_head.")) for k in state)
    else:
        reference = _perturb(transformers.RobertaModel(hf_config, add_pooling_layer=True))
        state = _save_and_load(reference.state_dict(), tmp_path / "roberta.safetensors")
        assert any(k.startswith("pooler.") for k in state)

    encoder = RobertaEncoder(config).eval()
    assert load_hf_state_dict(encoder, state, "roberta") == []
    torch.manual_seed(0)
    length = encoder.max_length
    ids = torch.randint(5, config.vocab_size, (2, length))
    ids[:, 0] = config.bos_token_id
    ids[0, 9], ids[0, 10:] = config.eos_token_id, config.pad_token_id
    ids[1, -1] = config.eos_token_id
    mask = (ids != config.pad_token_id).long()
    with torch.no_grad():
        expected = reference(ids, attention_mask=mask).last_hidden_state
        ours = encoder(ids, mask)
    torch.testing.assert_close(ours.last_hidden, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours.pooled, expected[:, 0], atol=1e-5, rtol=1e-5)


def test_wrong_weights_and_ids_raise_clear_errors():
    config = tiny().text
    tower = CLIPTextTower(config.clip)
    good = tower.state_dict()
    with pytest.raises(ValueError, match="missing.*layer_norm1"):
        load_hf_state_dict(tower, {k: v for k, v in good.items() if "layers.1.layer_norm1" not in k}, "clip")
    with pytest.raises(ValueError, match="unexpected.*extra_weight"):
        load_hf_state_dict(tower, {**good, "text_model.extra_weight": torch.zeros(1)}, "clip")
    wider = CLIPTextTower(dataclasses.replace(config.clip, hidden_size=32, intermediate_size=64)).state_dict()
    with pytest.raises(ValueError, match="shapes"):
        load_hf_state_dict(tower, wider, "clip")
    with pytest.raises(ValueError, match="no roberta weights"):
        load_hf_state_dict(RobertaEncoder(config.roberta), good, "roberta")
    with pytest.raises(ValueError, match="dict of tensors"):
        normalize_hf_state_dict({"text_model.embeddings.token_embedding.weight": [1, 2]}, "clip")
    with pytest.raises(ValueError, match="kind"):
        normalize_hf_state_dict(good, "t5")

    ids, _ = _clip_ids(config.clip, batch=1)
    with pytest.raises(ValueError, match="vocab_size|range"):
        tower(ids + config.clip.vocab_size)
    with pytest.raises(ValueError, match="eos"):
        tower(torch.full_like(ids, 5))
    with pytest.raises(ValueError, match="at most 77"):
        tower(torch.cat([ids, ids], dim=1))
    with pytest.raises(ValueError, match="integer tensor"):
        tower(ids.float())


# --- adapter and full encoder ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def encoder():
    config = tiny().text
    torch.manual_seed(0)
    clip_tokenizer = CLIPTokenizer.from_strings(*build_vocab(default_corpus(), config.clip.vocab_size, "clip"))
    roberta_tokenizer = RobertaTokenizer.from_strings(
        *build_vocab(default_corpus(), config.roberta.vocab_size, "roberta"))
    return F1TextEncoder(config, clip_tokenizer, roberta_tokenizer).eval()


def test_encoder_outputs_weights_and_gradients(encoder):
    config = encoder.config
    prompts = ["a red cube on the left of a blue sphere", "an oil painting of a quiet forest at night", ""]
    out = encoder.encode(prompts)
    roles = 3 * config.adapter.role_tokens
    length = config.clip.max_positions + encoder.roberta_window + roles
    assert out.context.shape == (3, length, config.adapter.context_dim)
    assert out.mask.shape == (3, length) and out.mask[:, -roles:].all()
    assert out.pooled.shape == (3, config.adapter.pooled_dim)
    torch.testing.assert_close(out.weights.sum(dim=1), torch.ones(3))
    assert (out.weights > 0).all() and (out.weights[0] - out.weights[1]).abs().max() > 1e-4
    # RoBERTa padding is masked: valid RoBERTa positions = bos + tokens + eos.
    roberta_valid = out.mask[:, config.clip.max_positions:-roles].sum(dim=1)
    expected_valid = [len(encoder.roberta_tokenizer.encode(p)) + 2 for p in prompts]
    assert roberta_valid.tolist() == expected_valid

    (out.context.square().mean() + out.pooled.square().mean()).backward()
    for name, parameter in encoder.named_parameters():
        if name.startswith("adapter.") or name.endswith("layers.0.mlp.fc1.weight") or "layer.0.intermediate" in name:
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    encoder.zero_grad()


def test_long_prompts_in_a_batch_keep_each_prompts_conditioning(encoder):
    short, long = "a small green cone", LONG_PROMPT
    alone = encoder.encode([short])
    batch = encoder.encode([short, long])
    clip_windows = len(encoder.clip_tokenizer.chunks(long, encoder.clip_window).ids)
    assert clip_windows > 1
    assert batch.context.shape[1] > alone.context.shape[1]
    # The short prompt's extra windows are masked repeats: its attended context, pooled vector and weights are
    # exactly what it gets alone.
    with torch.no_grad():
        torch.testing.assert_close(batch.context[0][batch.mask[0]], alone.context[0][alone.mask[0]],
                                   atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(batch.pooled[0], alone.pooled[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(batch.weights[0], alone.weights[0], atol=1e-6, rtol=1e-6)
    # Every CLIP window of the long prompt is real context.
    clip_part = batch.mask[1, :clip_windows * encoder.clip_window]
    assert clip_part.all()


def test_encoder_rejects_mismatched_tokenizers_and_prompts(encoder):
    config = encoder.config
    with pytest.raises(ValueError, match="clip_tokenizer"):
        F1TextEncoder(config, encoder.roberta_tokenizer, encoder.roberta_tokenizer)
    real_ids = dataclasses.replace(config, clip=CLIPTextConfig())  # CLIP-L ids 49406/49407
    with pytest.raises(ValueError, match="special token ids"):
        F1TextEncoder(real_ids, encoder.clip_tokenizer, encoder.roberta_tokenizer)
    with pytest.raises(ValueError, match="list of str"):
        encoder.encode("a cat")
    with pytest.raises(ValueError, match="str"):
        encoder.encode(["a cat", None])


def test_clip_only_fusion_is_the_clip_towers_penultimate_state(encoder):
    """The SD-style baseline's text side: no RoBERTa, no adapter; the context is CLIP's penultimate hidden state."""
    config = dataclasses.replace(encoder.config, fusion="clip")  # tiny's CLIP widths already equal the U-Net's
    clip_only = F1TextEncoder(config, encoder.clip_tokenizer, encoder.roberta_tokenizer).eval()
    assert clip_only.roberta is None and clip_only.adapter is None
    assert all(name.startswith("clip.") for name in clip_only.state_dict())
    clip_only.clip.load_state_dict(encoder.clip.state_dict())
    prompts = ["a red cube on the left of a blue sphere", ""]
    with torch.no_grad():
        out = clip_only.encode(prompts)
        tower = encoder.clip(clip_only.tokenize(prompts).clip_ids[:, 0])
    torch.testing.assert_close(out.context, tower.penultimate_hidden)
    torch.testing.assert_close(out.pooled, tower.projected_pooled)
    assert out.mask.all() and out.weights.tolist() == [[1.0, 0.0], [1.0, 0.0]]
    with pytest.raises(ValueError, match="fusion"):
        dataclasses.replace(encoder.config, fusion="t5")
    with pytest.raises(ValueError, match="CLIP widths"):
        dataclasses.replace(config, adapter=dataclasses.replace(config.adapter, context_dim=32))
