"""Memory-aware batch sizes: ``max_batch="auto"``.

The largest chunk that fits is read off a linear model of peak memory: one network evaluation (and
one VAE decode) of the eager network is run at two chunk sizes, each after a warm-up call, the peak memory above the
baseline is measured, and ``peak(b) = fixed + per_candidate * b`` is solved. The chunk size is then
``(free * headroom - fixed) / per_candidate``, capped at :data:`MAX_AUTO_BATCH`. An estimate that
turns out too large is still caught by the core's out-of-memory halving.

Memory is read through a :class:`MemoryProbe`; the only device calls are in :class:`CudaMemoryProbe`,
so the selection logic runs (and is tested) on a CPU with a fake probe.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import torch

from noisesearch.core.compile import eager_denoiser
from noisesearch.core.sampler import CoreConfig, DenoisingCore

#: chunk size of ``max_batch="auto"`` where memory cannot be probed (CPU), and the fixed default
DEFAULT_MAX_BATCH = 32
#: largest chunk ``auto`` picks: beyond it throughput no longer grows, and latency per round does
MAX_AUTO_BATCH = 256
#: fraction of the free memory ``auto`` plans to use (allocator fragmentation, cuDNN workspaces)
HEADROOM = 0.85


class MemoryProbe(Protocol):
    """Device memory as the auto batch size sees it (bytes)."""

    def free_bytes(self) -> int:
        """Memory the next allocations can use."""
        ...

    def start(self) -> None:
        """Begins a peak measurement."""
        ...

    def peak_bytes(self) -> int:
        """Peak memory allocated since :meth:`start`, above what was allocated at :meth:`start`."""
        ...


class CudaMemoryProbe:
    """The CUDA caching allocator's statistics (CUDA-only)."""

    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self._base = 0

    def free_bytes(self) -> int:
        torch.cuda.synchronize(self.device)
        torch.cuda.empty_cache()  # cached blocks count as used in the driver's figure
        return int(torch.cuda.mem_get_info(self.device)[0])

    def start(self) -> None:
        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        self._base = int(torch.cuda.memory_allocated(self.device))

    def peak_bytes(self) -> int:
        torch.cuda.synchronize(self.device)
        return int(torch.cuda.max_memory_allocated(self.device)) - self._base


@dataclass(frozen=True)
class RowCost:
    """Peak memory of one call as ``fixed + per_candidate * chunk`` (bytes)."""

    per_candidate: float
    fixed: float

    def batch_that_fits(self, free: float, headroom: float = HEADROOM, cap: int = MAX_AUTO_BATCH) -> int:
        """The largest chunk whose peak fits in ``free * headroom`` (at least 1, at most ``cap``)."""
        budget = free * headroom - self.fixed
        if self.per_candidate <= 0:
            return cap
        return max(1, min(cap, int(budget // self.per_candidate)))


def measure_cost(run: Callable[[int], object], probe: MemoryProbe, sizes: Sequence[int] = (1, 4)) -> RowCost:
    """Fits :class:`RowCost` to the peak memory of ``run(b)`` at two chunk sizes ``b``.

    Each size is run once to warm up (lazy allocations, compilation, cuDNN autotuning) and once
    measured.
    """
    if len(sizes) != 2 or not 0 < sizes[0] < sizes[1]:
        raise ValueError(f"sizes must be two increasing chunk sizes, got {tuple(sizes)}")
    peaks = []
    for b in sizes:
        run(b)
        probe.start()
        run(b)
        peaks.append(probe.peak_bytes())
    per = (peaks[1] - peaks[0]) / (sizes[1] - sizes[0])
    if per <= 0:  # no growth measured (noise): plan with the larger call's peak per candidate
        per = peaks[1] / sizes[1]
    fixed = max(0.0, peaks[1] - per * sizes[1])
    return RowCost(per_candidate=per, fixed=fixed)


@dataclass(frozen=True)
class AutoBatch:
    """What ``max_batch="auto"`` chose and why."""

    max_batch: int  # candidates per denoiser call
    decode_batch: int  # latents per decode call
    denoise_cost: RowCost | None  # None where memory was not probed
    decode_cost: RowCost | None
    free_bytes: int | None


@torch.no_grad()
def auto_batch(
    adapter: object, config: CoreConfig, prompt: str, probe: MemoryProbe | None = None, cap: int = MAX_AUTO_BATCH
) -> AutoBatch:
    """Chunk sizes for ``config`` on ``adapter``'s device, from measured per-candidate memory.

    Without a probe, CUDA devices get a :class:`CudaMemoryProbe` and other devices
    :data:`DEFAULT_MAX_BATCH` (host memory is not measured). The calibration calls run outside
    any search's accounting: two evaluations and two decodes at one and at four candidates, on
    the eager network where the denoiser is compiled (replayed CUDA graphs allocate nothing new,
    which would read as zero cost).
    """
    device = torch.device(getattr(adapter, "device", "cpu"))
    if probe is None:
        if device.type != "cuda":
            return AutoBatch(min(cap, DEFAULT_MAX_BATCH), min(cap, DEFAULT_MAX_BATCH), None, None, None)
        probe = CudaMemoryProbe(device)
    core = DenoisingCore(adapter, replace(config, max_batch=4, decode_batch=4, pad_to_buckets=False))  # type: ignore[arg-type]
    index = core.prompt_indices([prompt])
    x = core.initial_noise([0]) * core.schedule.init_scale

    def denoise(b: int) -> object:
        return core._evaluate_chunk(x.expand(b, *x.shape[1:]), 0, index.expand(b))  # noqa: SLF001

    def decode(b: int) -> object:
        return adapter.decode(x.expand(b, *x.shape[1:]))  # type: ignore[attr-defined]

    with eager_denoiser(adapter):
        denoise_cost = measure_cost(denoise, probe)
    decode_cost = measure_cost(decode, probe)
    free = probe.free_bytes()
    return AutoBatch(
        max_batch=denoise_cost.batch_that_fits(free, cap=cap),
        decode_batch=decode_cost.batch_that_fits(free, cap=cap),
        denoise_cost=denoise_cost,
        decode_cost=decode_cost,
        free_bytes=free,
    )


def parse_max_batch(value: int | str) -> int | str:
    """``"auto"`` or a positive integer (also given as text, as a CLI passes it)."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "auto":
            return "auto"
        if text.lstrip("+-").isdigit():
            value = int(text)
        else:
            raise ValueError(f"max_batch must be a positive integer or 'auto', got {value!r}")
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"max_batch must be a positive integer, got {value!r}")
    return value
