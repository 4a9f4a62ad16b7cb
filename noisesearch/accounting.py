"""Compute accounting shared by the denoising core and the search engine.

Conventions (Ma et al. 2025): ``nfe`` counts denoiser evaluations per candidate, summed over
candidates, with a classifier-free-guidance pair counted once; ``network_rows`` counts the rows
actually pushed through the network (a guided evaluation is two rows); ``verifier_calls`` counts
images scored; ``padded_rows`` counts the rows a compiled denoiser computed only to fill a
batch bucket (in neither ``nfe`` nor ``network_rows``). Wall time is split into denoise / decode / verify / other.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import torch

PHASES = ("denoise", "decode", "verify", "prior", "other")


@dataclass
class Accounting:
    """Compute spent by a search, as reported to the user."""

    nfe: int = 0  # denoiser evaluations per candidate, summed; a CFG pair counts once
    network_rows: int = 0  # rows pushed through the denoiser (CFG counts twice)
    network_calls: int = 0  # forward calls of the denoiser (batches)
    padded_rows: int = 0  # bucket-padding rows a compiled denoiser computed and discarded (not in nfe or network_rows)
    verifier_calls: int = 0  # images scored by the verifier
    decoded: int = 0  # latents decoded to images by a search (finished candidates and scored previews)
    prior_calls: int = 0  # noises produced by a learned prior (e.g. NPNet), not counted in nfe
    chunk_size: int = 0  # candidates per network call at the end of the search (halved on out-of-memory)
    oom_retries: int = 0  # chunks retried at half size after running out of memory
    seconds: dict[str, float] = field(default_factory=lambda: {p: 0.0 for p in PHASES})

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["seconds"] = {k: round(v, 4) for k, v in self.seconds.items()}
        d["seconds_total"] = round(sum(self.seconds.values()), 4)
        return d


class BudgetExceeded(RuntimeError):
    """Raised before any work that would take the search past its NFE budget."""


class Meter:
    """Counts compute and times phases; the single place where compute is recorded."""

    def __init__(self, budget_nfe: int | None = None, device: torch.device | str = "cpu") -> None:
        self.acc = Accounting()
        self.budget_nfe = budget_nfe
        self._device = torch.device(device)
        self._phase: str | None = None
        #: called with the accounting after every network or verifier call (progress bars)
        self.listeners: list[Callable[[Accounting], None]] = []

    # --- budget -------------------------------------------------------------------------------
    @property
    def nfe_left(self) -> int | None:
        return None if self.budget_nfe is None else self.budget_nfe - self.acc.nfe

    def reserve(self, nfe: int) -> None:
        """Checks that ``nfe`` more evaluations fit in the budget; raises before spending any."""
        left = self.nfe_left
        if left is not None and nfe > left:
            raise BudgetExceeded(f"{nfe} NFEs requested but only {left} of the budget of {self.budget_nfe} are left")

    def snapshot(self) -> tuple[int, int, int, int, int]:
        """The compute counters, to roll back work that failed and is redone."""
        a = self.acc
        return (a.nfe, a.network_rows, a.network_calls, a.verifier_calls, a.padded_rows)

    def restore(self, snapshot: tuple[int, int, int, int, int]) -> None:
        a = self.acc
        a.nfe, a.network_rows, a.network_calls, a.verifier_calls, a.padded_rows = snapshot

    # --- counting -----------------------------------------------------------------------------
    def network_call(self, candidates: int, rows: int, padded_rows: int = 0) -> None:
        self.acc.nfe += candidates
        self.acc.network_rows += rows
        self.acc.padded_rows += padded_rows
        self.acc.network_calls += 1
        self._notify()

    def verifier_call(self, images: int) -> None:
        self.acc.verifier_calls += images
        self._notify()

    def _notify(self) -> None:
        for listener in self.listeners:
            listener(self.acc)

    def prior_call(self, noises: int) -> None:
        self.acc.prior_calls += noises

    # --- timing -------------------------------------------------------------------------------
    def _sync(self) -> None:
        if self._device.type == "cuda":
            torch.cuda.synchronize(self._device)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Times a block as ``name``; nested phases are charged to the outermost one."""
        if name not in PHASES:
            raise ValueError(f"unknown phase {name!r}")
        if self._phase is not None:
            yield
            return
        self._phase = name
        self._sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            self.acc.seconds[name] += time.perf_counter() - start
            self._phase = None
