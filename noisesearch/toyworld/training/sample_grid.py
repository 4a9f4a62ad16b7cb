"""Render a grid of samples from a toyworld pipeline for human inspection.

Rows are prompts (a few held-out prompts per category, optionally preceded by train-split prompts
for reference), columns are seeds. Uses the stock ``StableDiffusionPipeline`` with its own scheduler.

    python -m noisesearch.toyworld.training.sample_grid --pipeline DIR --out grid.png
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from diffusers import StableDiffusionPipeline
from PIL import Image, ImageDraw

from noisesearch.toyworld import grammar
from noisesearch.toyworld.assets import PIPELINE_DIR

DEFAULT_PIPELINE = PIPELINE_DIR


def pick_prompts(per_category: int, train_prompts: int, seed: int = 0) -> list[tuple[str, str]]:
    """(label, prompt) rows: `train_prompts` train-split captions, then held-out ones per category."""
    if per_category < 0 or train_prompts < 0:
        raise ValueError("per_category and train_prompts must be >= 0")
    rows: list[tuple[str, str]] = []
    rng = np.random.default_rng(seed)
    seen: set[str] = set()
    while len(rows) < train_prompts:
        _, caption = grammar.sample_pair(rng, "train")
        if caption not in seen:
            seen.add(caption)
            rows.append(("train", caption))
    by_cat: dict[str, list[str]] = defaultdict(list)
    for category, prompt in grammar.heldout_prompts():
        by_cat[category].append(prompt)
    for category, prompts in by_cat.items():
        idx = rng.choice(len(prompts), size=min(per_category, len(prompts)), replace=False)
        rows += [(f"held-out {category}", prompts[i]) for i in sorted(idx)]
    if not rows:
        raise ValueError("no prompts selected")
    return rows


@torch.no_grad()
def sample_grid(
    pipeline_dir: str | Path,
    out: str | Path,
    per_category: int = 3,
    train_prompts: int = 4,
    seeds: int = 6,
    guidance_scale: float = 4.0,
    steps: int = 20,
    scale: int = 3,
) -> Path:
    """Generate `seeds` images for each selected prompt and save a labelled PNG grid at `out`."""
    if seeds < 1 or steps < 1 or scale < 1:
        raise ValueError("seeds, steps and scale must be >= 1")
    pipe = StableDiffusionPipeline.from_pretrained(pipeline_dir, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    rows = pick_prompts(per_category, train_prompts)
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    cell = size * scale
    label_w = 330
    grid = Image.new("RGB", (label_w + seeds * (cell + 2), len(rows) * (cell + 2)), "white")
    draw = ImageDraw.Draw(grid)
    for r, (label, prompt) in enumerate(rows):
        # one generator per image: image (prompt, k) depends on seed k only
        gens = [torch.Generator().manual_seed(k) for k in range(seeds)]
        images = pipe(
            [prompt] * seeds,
            num_inference_steps=steps,
            guidance_scale=guidance_scale,
            generator=gens,
            output_type="np",
        ).images
        y = r * (cell + 2)
        draw.text((4, y + 4), label, fill=(120, 120, 120))
        draw.text((4, y + 20), prompt, fill=(0, 0, 0))
        for k, img in enumerate(images):
            tile = Image.fromarray((img * 255).round().astype(np.uint8)).resize((cell, cell), Image.Resampling.NEAREST)
            grid.paste(tile, (label_w + k * (cell + 2), y))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    grid.save(out)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Grid of toyworld samples for held-out prompts.")
    p.add_argument("--pipeline", type=Path, default=DEFAULT_PIPELINE, help="pipeline folder")
    p.add_argument("--out", type=Path, required=True, help="output PNG path")
    p.add_argument("--per-category", type=int, default=3, help="held-out prompts per category")
    p.add_argument("--train-prompts", type=int, default=4, help="train-split prompts shown for reference")
    p.add_argument("--seeds", type=int, default=6, help="images (seeds 0..n-1) per prompt")
    p.add_argument("--guidance", type=float, default=4.0, help="classifier-free guidance scale")
    p.add_argument("--steps", type=int, default=20, help="sampler steps (the pipeline's DDIM)")
    args = p.parse_args(argv)
    path = sample_grid(
        args.pipeline, args.out, args.per_category, args.train_prompts, args.seeds, args.guidance, args.steps
    )
    print(path)


if __name__ == "__main__":
    main()
