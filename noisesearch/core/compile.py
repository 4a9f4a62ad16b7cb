"""``torch.compile`` of a denoiser for the batched core.

The network is compiled once per bucket of batch sizes (:mod:`noisesearch.core.batching`) with
static shapes (``dynamic=False``): on CUDA ``mode="reduce-overhead"`` records one CUDA graph per
shape, which a dynamic-shape graph would not avoid, and static kernels are the fastest. The core
pads chunks to the buckets whenever :func:`is_compiled` says its denoiser is compiled.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

#: compilations (one per bucket) a compiled denoiser may hold before dynamo falls back to eager
RECOMPILE_LIMIT = 16


def compile_denoiser(
    module: torch.nn.Module, device: torch.device | str, mode: str | None = None, backend: str = "inductor"
) -> Any:
    """``module`` wrapped by ``torch.compile`` with static shapes and a whole-graph capture.

    ``mode`` defaults to ``"reduce-overhead"`` (CUDA graphs) on CUDA and ``"default"`` elsewhere;
    ``backend`` other than inductor (``"eager"``, ``"aot_eager"``) is for quick tests of the wrapping.
    """
    device = torch.device(device)
    if mode is None:
        mode = "reduce-overhead" if device.type == "cuda" else "default"
    # every bucket is one compiled entry; the default limit (8) would silently fall back to eager
    dynamo_config = torch._dynamo.config
    name = "recompile_limit" if hasattr(dynamo_config, "recompile_limit") else "cache_size_limit"
    setattr(dynamo_config, name, max(getattr(dynamo_config, name), RECOMPILE_LIMIT))
    kwargs: dict[str, Any] = {"fullgraph": True, "dynamic": False, "backend": backend}
    if backend == "inductor":
        kwargs["mode"] = mode
    return torch.compile(module, **kwargs)


def is_compiled(module: object) -> bool:
    """Whether ``module`` is a ``torch.compile`` wrapper."""
    return isinstance(module, torch._dynamo.eval_frame.OptimizedModule)


def denoiser_of(adapter: object) -> object | None:
    """The denoiser network of an adapter (``unet`` or ``transformer``), if it exposes one."""
    for attr in ("unet", "transformer"):
        net = getattr(adapter, attr, None)
        if net is not None:
            return net
    return None


@contextmanager
def eager_denoiser(adapter: object) -> Iterator[None]:
    """Within the block, ``adapter``'s compiled denoiser is replaced by the module it wraps."""
    attrs = [a for a in ("unet", "transformer") if is_compiled(getattr(adapter, a, None))]
    saved = {a: getattr(adapter, a) for a in attrs}
    try:
        for a in attrs:
            setattr(adapter, a, saved[a]._orig_mod)
        yield
    finally:
        for a, module in saved.items():
            setattr(adapter, a, module)
