"""F.1 text encoders: CLIP and RoBERTa towers (Hugging Face weight layout), their tokenizers, and the fusion adapter."""
from .adapter import FusedContext, FusionAdapter
from .clip import CLIPTextOutput, CLIPTextTower
from .encoder import F1TextEncoder, TextEncoding, TokenBatch, tokenize_prompts
from .hf_keys import load_hf_state_dict, normalize_hf_state_dict
from .roberta import RobertaEncoder, RobertaOutput
from .tokenizer import CLIPTokenizer, RobertaTokenizer, TokenChunks
from .vocab import build_vocab, default_corpus

__all__ = [
    "CLIPTextOutput", "CLIPTextTower", "CLIPTokenizer", "F1TextEncoder", "FusedContext", "FusionAdapter",
    "RobertaEncoder", "RobertaOutput", "RobertaTokenizer", "TextEncoding", "TokenBatch", "TokenChunks",
    "build_vocab", "default_corpus", "load_hf_state_dict", "normalize_hf_state_dict", "tokenize_prompts",
]
