"""Write a random-init tiny F.1 checkpoint: the demo and test model until trained weights land.

    python -m f1core.make_tiny models/f1-tiny-random.safetensors [--seed 0]
"""
import argparse

import torch

from . import config as f1config
from .checkpoint import VOCAB_KEYS, build_part, save_checkpoint
from .preview import fit_latent_rgb, smooth_test_images
from .text.vocab import build_vocab, default_corpus


def make_tiny(path, seed: int = 0, vocab_size: int = 1024):
    torch.manual_seed(seed)
    config = f1config.tiny(vocab_size=vocab_size)
    corpus = list(default_corpus())
    clip_vocab, clip_merges = build_vocab(corpus, vocab_size, style="clip")
    roberta_vocab, roberta_merges = build_vocab(corpus, vocab_size, style="roberta")
    metadata = dict(zip(VOCAB_KEYS, (clip_vocab, clip_merges, roberta_vocab, roberta_merges)))
    unet = build_part("unet", config)
    vae = build_part("vae", config)
    text = build_part("text", config, metadata)
    images = smooth_test_images(8, 64, seed)
    vae.fit_latent_stats(images)
    return save_checkpoint(path, config, unet=unet, vae=vae, text=text, latent_rgb=fit_latent_rgb(vae, images),
                           extra_metadata={"f1.description": f"random-init tiny F.1 (seed {seed}), untrained"})


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(make_tiny(args.path, seed=args.seed))


if __name__ == "__main__":
    main()
