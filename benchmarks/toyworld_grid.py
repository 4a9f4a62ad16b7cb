"""Searched vs unsearched samples on the embedded world, labelled by the ground-truth evaluator.

For a few held-out prompts: the first candidate (seed 0, no search) next to the best of 16 by the
default verifier (`noisesearch.search`, random search). Writes ``docs/toyworld_searched_vs_unsearched.png``.
Last line: ``RESULT unsearched=<k>/<n> searched=<k>/<n>``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from PIL import Image, ImageDraw

import noisesearch
from noisesearch.toyworld import evaluator, grammar


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="4 prompts instead of 8")
    parser.add_argument("--candidates", type=int, default=16)
    parser.add_argument("--out", type=Path, default=Path("docs"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    model = noisesearch.load_model("toyworld")
    by_cat: dict[str, list[str]] = {}
    for cat, p in grammar.heldout_prompts():
        by_cat.setdefault(cat, []).append(p)
    per = 1 if args.quick else 2
    prompts = [ps[i * len(ps) // per] for cat in sorted(by_cat) for ps in [by_cat[cat]] for i in range(per)]
    tile, label_w = 128, 300
    grid = Image.new("RGB", (label_w + 2 * tile, 16 + len(prompts) * (tile + 4)), "white")
    draw = ImageDraw.Draw(grid)
    draw.text((label_w + 4, 2), "seed 0 (no search)", fill=(0, 0, 0))
    draw.text((label_w + tile + 4, 2), f"best of {args.candidates}", fill=(0, 0, 0))
    counts = [0, 0]
    for i, prompt in enumerate(prompts):
        result = noisesearch.search(model, prompt, candidates=args.candidates, seed=0)
        first = next(c for c in result.candidates if c.seed == 0)
        y = 16 + i * (tile + 4)
        draw.text((4, y + tile // 2 - 6), prompt, fill=(0, 0, 0))
        for j, cand in enumerate((first, result.best)):
            img = cand.image.float() / 255
            ok = evaluator.satisfies(img, prompt)
            counts[j] += int(ok)
            arr = cand.image.permute(1, 2, 0).numpy()
            grid.paste(Image.fromarray(arr).resize((tile, tile), Image.NEAREST), (label_w + j * tile, y))
            draw.text((label_w + j * tile + 3, y + 2), "YES" if ok else "no", fill=(0, 140, 0) if ok else (200, 0, 0))
    args.out.mkdir(parents=True, exist_ok=True)
    grid.save(args.out / "toyworld_searched_vs_unsearched.png")
    print(f"RESULT unsearched={counts[0]}/{len(prompts)} searched={counts[1]}/{len(prompts)}")


if __name__ == "__main__":
    main()
