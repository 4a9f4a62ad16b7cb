"""Batched (image, caption) data for training the toyworld model, from a fixed seed stream.

Scenes and captions come from ``grammar.sample_pair`` and pixels from ``scenes.render``. Rendering
is cheap but not free, so a fixed pool is pre-rendered once (uint8) and batches are drawn from it
with their own seeded generator: the same seeds give the same pool and the same batch order.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from noisesearch.toyworld import grammar, scenes


@dataclass(frozen=True)
class ScenePool:
    """A pre-rendered pool of scenes: uint8 images [N, 3, H, W] and their captions."""

    images: np.ndarray  # uint8 [N, 3, H, W]
    captions: tuple[str, ...]  # N captions, aligned with `images`

    def __len__(self) -> int:
        return len(self.captions)

    def as_float(self, index: np.ndarray | slice) -> torch.Tensor:
        """Images at `index` as float32 in [-1, 1] (the VAE's input range)."""
        return torch.from_numpy(self.images[index]).float().div_(127.5).sub_(1.0)


def render_pool(n: int, seed: int, split: str = "train", size: int = scenes.IMAGE_SIZE) -> ScenePool:
    """Render `n` (image, caption) pairs from ``grammar.sample_pair`` seeded by `seed`."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    rng = np.random.default_rng(seed)
    images = np.empty((n, 3, size, size), dtype=np.uint8)
    captions: list[str] = []
    for i in range(n):
        scene, caption = grammar.sample_pair(rng, split)
        img = scenes.render(scene, size=size)
        images[i] = np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)
        captions.append(caption)
    return ScenePool(images=images, captions=tuple(captions))


def batch_indices(n: int, batch_size: int, seed: int) -> Iterator[np.ndarray]:
    """Endless stream of index batches: reshuffled epochs over range(n), fixed by `seed`."""
    if batch_size < 1 or n < 1:
        raise ValueError(f"need n >= 1 and batch_size >= 1, got n={n}, batch_size={batch_size}")
    rng = np.random.default_rng(seed)
    buf = np.empty(0, dtype=np.int64)
    while True:
        while len(buf) < batch_size:
            buf = np.concatenate([buf, rng.permutation(n)])
        yield buf[:batch_size]
        buf = buf[batch_size:]


def image_caption_batches(pool: ScenePool, batch_size: int, seed: int) -> Iterator[tuple[torch.Tensor, list[str]]]:
    """Endless stream of (images float [-1,1] [B,3,H,W], captions) batches drawn from `pool`."""
    for idx in batch_indices(len(pool), batch_size, seed):
        yield pool.as_float(idx), [pool.captions[i] for i in idx]
