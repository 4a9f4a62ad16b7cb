"""Per-candidate random numbers.

Candidate ``i`` of a run started with seed ``s`` has seed ``s + i``, and its initial latents are
exactly those the stock diffusers pipeline draws with
``generator=torch.Generator(device).manual_seed(s + i)``: one generator per candidate
(as in NVlabs/edm), so a candidate comes out the same whatever batch it is computed in.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from diffusers.utils.torch_utils import randn_tensor

_MASK64 = (1 << 63) - 1


def candidate_seeds(seed: int, count: int, offset: int = 0) -> list[int]:
    """Seeds of candidates ``offset .. offset + count - 1`` of a run started with ``seed``."""
    return [seed + offset + i for i in range(count)]


def generator_device(device: torch.device | str) -> torch.device:
    """Device of per-candidate generators: the model's device (CPU generators for MPS/others)."""
    device = torch.device(device)
    return device if device.type == "cuda" else torch.device("cpu")


def initial_latents(
    seeds: Sequence[int], shape: Sequence[int], device: torch.device | str, dtype: torch.dtype
) -> torch.Tensor:
    """Standard normal latents [len(seeds), *shape], candidate k drawn from its own generator."""
    device = torch.device(device)
    gdev = generator_device(device)
    generators = [torch.Generator(gdev).manual_seed(int(s)) for s in seeds]
    # randn_tensor is what diffusers pipelines call in prepare_latents; going through it keeps the
    # draw identical to theirs (device of the generator, dtype) for every candidate.
    return torch.cat([randn_tensor((1, *shape), generator=g, device=device, dtype=dtype) for g in generators])


def derived_seed(seed: int, *keys: int) -> int:
    """A deterministic seed for a sub-stream (e.g. re-noising in round r) of candidate ``seed``."""
    h = seed & _MASK64
    for k in keys:
        h = (h * 6364136223846793005 + 1442695040888963407 + (k & _MASK64)) & _MASK64
        h ^= h >> 29
    return h


def gaussian_like(seeds: Sequence[int], shape: Sequence[int], device: torch.device | str, *keys: int) -> torch.Tensor:
    """Float32 standard normal noise, one derived stream per seed (batch-size independent)."""
    derived = [derived_seed(s, *keys) for s in seeds]
    return initial_latents(derived, shape, device, torch.float32)
