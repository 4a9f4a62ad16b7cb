"""Writing a search's outputs: best images, a labelled grid of all candidates, ``report.json``."""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageDraw

from noisesearch.engine import SearchResult

MIN_TILE = 128  # tiny images are upscaled (nearest) to at least this many pixels per side


#: files a search writes into its output folder (besides best_2.png ... for --top-k > 1)
OUTPUT_FILES: tuple[str, ...] = ("best.png", "best_large.png", "candidates.png", "report.json")


def ensure_writable_dir(path: str | os.PathLike[str]) -> Path:
    """Checks ``path`` (see :func:`noisesearch.io.outputs.check_output_dir`), then creates it; ``ValueError`` says what to do."""
    from noisesearch.io.outputs import check_output_dir, make_output_dir

    return make_output_dir(check_output_dir(path))


def to_pil(image: torch.Tensor, min_side: int = 0) -> Image.Image:
    """[3, H, W] uint8 or float in [0, 1] -> PIL image, upscaled (nearest) to ``min_side``."""
    if image.dtype != torch.uint8:
        image = (image.float().clamp(0, 1) * 255).round().to(torch.uint8)
    pil = Image.fromarray(image.permute(1, 2, 0).cpu().numpy())
    if min_side and min(pil.size) < min_side:
        k = math.ceil(min_side / min(pil.size))
        pil = pil.resize((pil.width * k, pil.height * k), Image.Resampling.NEAREST)
    return pil


def candidate_grid(result: SearchResult, columns: int = 8, max_tiles: int = 64) -> Image.Image:
    """All candidates (best first, at most ``max_tiles``) labelled with rank, seed and score."""
    ranked = result.ranked() + [c for c in result.candidates if not c.finite]
    ranked = [c for c in ranked if c.image is not None][:max_tiles]
    if not ranked:
        raise ValueError("no candidate images to draw")
    tiles = [to_pil(c.image, MIN_TILE) for c in ranked]  # type: ignore[arg-type]
    w, h = tiles[0].size
    label_h = 14
    cols = min(columns, len(tiles))
    rows = math.ceil(len(tiles) / cols)
    grid = Image.new("RGB", (cols * w, rows * (h + label_h)), "white")
    draw = ImageDraw.Draw(grid)
    for i, (tile, cand) in enumerate(zip(tiles, ranked)):
        x, y = (i % cols) * w, (i // cols) * (h + label_h)
        grid.paste(tile, (x, y + label_h))
        score = f"{cand.score:.3f}" if cand.finite else "non-finite"
        draw.text((x + 2, y + 1), f"#{i + 1} s{cand.seed} {score}", fill=(200, 0, 0) if i == 0 else (0, 0, 0))
    return grid


def slug(text: str, max_len: int = 40) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:max_len] or "prompt"


def write_outputs(
    result: SearchResult, out: Path, top_k: int = 1, extra: dict[str, Any] | None = None
) -> dict[str, str]:
    """Writes best image(s), the grid and report.json into ``out``; returns the written paths."""
    written: dict[str, str] = {}
    ranked = [c for c in result.ranked() if c.image is not None]
    for rank, cand in enumerate(ranked[:top_k]):
        name = "best.png" if rank == 0 else f"best_{rank + 1}.png"
        to_pil(cand.image).save(out / name)  # type: ignore[arg-type]
        written[name] = str(out / name)
        if rank == 0 and min(cand.image.shape[1:]) < MIN_TILE:  # type: ignore[union-attr]
            to_pil(cand.image, 256).save(out / "best_large.png")  # type: ignore[arg-type]
            written["best_large.png"] = str(out / "best_large.png")
    if result.candidates and any(c.image is not None for c in result.candidates):
        candidate_grid(result).save(out / "candidates.png")
        written["candidates.png"] = str(out / "candidates.png")
    report = result.to_dict()
    if extra:
        report.update(extra)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    written["report.json"] = str(out / "report.json")
    return written
