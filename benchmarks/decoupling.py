"""The learned part of semantic decoupling, on the text side: does each of the adapter's roles (style, entity,
relation) tell apart the caption pairs that changed its own factor, and not the others?

    python benchmarks/decoupling.py [MODEL.safetensors ...] [--pairs 300]

Pairs: f1core.data.pairs (the train spec space, never a validation or test spec), from a stream no training run
draws. Per model, a row per changed factor and a column per role: the mean cosine similarity of the role
summaries of a pair's two captions (f1core.train.losses.role_similarity), then each factor's margin: on the
pairs that changed it, the other roles' mean minus its own role's (above 0: its role tells those pairs apart
more than the others do). The role contrastive loss (`--set decoupling_weight=...` in the diffusion stage)
trains for it. The last line is `style_role_margin: X` for the last model.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from f1core.checkpoint import load_checkpoint  # noqa: E402
from f1core.data.pairs import factor_pairs  # noqa: E402
from f1core.text.adapter import ROLES  # noqa: E402
from f1core.train.losses import role_margins, role_similarity  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", default=[str(ROOT / "models" / "f1-tiny-scenes.safetensors")])
    parser.add_argument("--pairs", type=int, default=300, help="pairs, the factors in turn")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    pairs = factor_pairs(range(args.pairs), "benchmark")
    for path in args.models:
        text = load_checkpoint(path, parts=("text",)).text.eval()
        similarity = role_similarity(text, pairs)
        margins = role_margins(similarity)
        print(f"\n{Path(path).name}: cosine similarity of a pair's role summaries")
        print(f"| changed \\ role | {' | '.join(ROLES)} |\n|---|{'---|' * len(ROLES)}")
        for factor, row in zip(ROLES, similarity.tolist()):
            print(f"| {factor} | {' | '.join(f'{x:.3f}' for x in row)} |")
        print(f"| margin (row's other roles - own role) | {' | '.join(f'{x:+.3f}' for x in margins.tolist())} |")
    print(f"style_role_margin: {margins[0]:.3f}")


if __name__ == "__main__":
    main()
