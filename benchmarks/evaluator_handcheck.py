"""A grid of generated images with the ground-truth evaluator's verdicts, for checking by eye.

Three held-out prompts per category x 4 seeds from the embedded model (20 DDIM steps, guidance 4),
each tile labelled YES/no by ``evaluator.satisfies``. A person compares the labels with what the
images show; the agreement we counted is in the README. Last line: ``RESULT images=<n> yes=<k>``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from PIL import Image, ImageDraw

import noisesearch
from noisesearch.core import CoreConfig, DenoisingCore
from noisesearch.toyworld import evaluator, grammar


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 seeds instead of 4")
    parser.add_argument("--out", type=Path, default=Path("docs"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    core = DenoisingCore(noisesearch.load_model("toyworld"), CoreConfig(steps=20, guidance=4.0, max_batch=64))
    by_cat: dict[str, list[str]] = {}
    for cat, p in grammar.heldout_prompts():
        by_cat.setdefault(cat, []).append(p)
    prompts = [ps[i * len(ps) // 3] for cat in sorted(by_cat) for ps in [by_cat[cat]] for i in range(3)]
    seeds = list(range(2 if args.quick else 4))
    flat_p = [p for p in prompts for _ in seeds]
    flat_s = [s for _ in prompts for s in seeds]
    images = core.sample(flat_s, flat_p)
    ok = evaluator.satisfies_batch(images.numpy(), flat_p)

    tile, label_w = 96, 300
    grid = Image.new("RGB", (label_w + len(seeds) * tile, len(prompts) * (tile + 4)), "white")
    draw = ImageDraw.Draw(grid)
    for i, p in enumerate(prompts):
        draw.text((4, i * (tile + 4) + tile // 2 - 6), f"{i}: {p}", fill=(0, 0, 0))
        for j in range(len(seeds)):
            k = i * len(seeds) + j
            arr = (images[k].permute(1, 2, 0).numpy() * 255).round().astype("uint8")
            grid.paste(Image.fromarray(arr).resize((tile, tile), Image.NEAREST), (label_w + j * tile, i * (tile + 4)))
            draw.text(
                (label_w + j * tile + 2, i * (tile + 4) + 2),
                "YES" if ok[k] else "no",
                fill=(0, 140, 0) if ok[k] else (200, 0, 0),
            )
    args.out.mkdir(parents=True, exist_ok=True)
    grid.save(args.out / "evaluator_handcheck.png")
    verdicts = [{"prompt": p, "seed": s, "satisfied": bool(v)} for p, s, v in zip(flat_p, flat_s, ok)]
    (args.out / "evaluator_handcheck.json").write_text(json.dumps(verdicts, indent=1))
    print(f"RESULT images={len(flat_p)} yes={int(ok.sum())}")


if __name__ == "__main__":
    main()
