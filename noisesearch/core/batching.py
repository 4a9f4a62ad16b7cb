"""Bucketed batch sizes, so that a compiled denoiser sees only a few shapes.

A search calls the denoiser with chunk sizes that change (the last chunk of a round, SMC
resampling, pruning, halving after out-of-memory). Each new shape costs a compiled
(``torch.compile``) network a recompilation, and a new CUDA graph under ``mode="reduce-overhead"``.
Padding every chunk up to the next of a few bucket sizes (powers of two up to the chunk limit, and
the limit itself) bounds that to one compilation per bucket. Padding rows repeat the chunk's last
candidate; every row of a UNet or DiT is computed independently (group norm and attention act
within a row), so they do not change the other candidates' results, and their outputs are dropped.
"""

from __future__ import annotations

import torch


def bucket_sizes(max_batch: int) -> tuple[int, ...]:
    """The padded chunk sizes for chunks of 1..``max_batch`` candidates: 1, 2, 4, ... and ``max_batch``."""
    if not isinstance(max_batch, int) or max_batch < 1:
        raise ValueError(f"max_batch must be a positive integer, got {max_batch!r}")
    sizes = []
    b = 1
    while b < max_batch:
        sizes.append(b)
        b *= 2
    sizes.append(max_batch)
    return tuple(sizes)


def bucket_for(n: int, buckets: tuple[int, ...]) -> int:
    """The smallest bucket that holds ``n`` candidates."""
    for b in buckets:
        if b >= n:
            return b
    raise ValueError(f"a chunk of {n} candidates is larger than the largest bucket {buckets[-1]}")


def pad_rows(t: torch.Tensor, size: int) -> torch.Tensor:
    """``t`` [n, ...] padded to [size, ...] by repeating its last row (no-op when n == size)."""
    n = t.shape[0]
    if n == size:
        return t
    if not 0 < n < size:
        raise ValueError(f"cannot pad {n} rows to {size}")
    return torch.cat([t, t[-1:].expand(size - n, *t.shape[1:])])
