"""max_batch="auto": chunk sizes from measured per-candidate memory, with a fake memory probe."""

from __future__ import annotations

import pytest
import torch

import noisesearch
import noisesearch.api as api
from noisesearch.core import CoreConfig
from noisesearch.core.compile import compile_denoiser, eager_denoiser, is_compiled
from noisesearch.core.memory import (
    DEFAULT_MAX_BATCH,
    HEADROOM,
    RowCost,
    auto_batch,
    measure_cost,
    parse_max_batch,
)
from noisesearch.testing import StubAdapter

MB = 2**20


class FakeMemory:
    """A device whose memory the stub model 'uses': ``fixed`` bytes per call plus ``per_row`` bytes
    per network row (``per_image`` per decoded image), and ``free`` bytes free."""

    def __init__(self, stub: StubAdapter, free: int, per_row: int, per_image: int, fixed: int = 100 * MB) -> None:
        self.free, self.per_row, self.per_image, self.fixed = free, per_row, per_image, fixed
        self.peak = 0
        predict, decode = stub.predict, stub.decode

        def metered_predict(x, t, cond):
            self.peak = max(self.peak, self.fixed + self.per_row * x.shape[0])
            return predict(x, t, cond)

        def metered_decode(latents):
            self.peak = max(self.peak, self.fixed + self.per_image * latents.shape[0])
            return decode(latents)

        stub.predict, stub.decode = metered_predict, metered_decode

    def free_bytes(self) -> int:
        return self.free

    def start(self) -> None:
        self.peak = 0

    def peak_bytes(self) -> int:
        return self.peak


def test_row_cost_is_the_linear_fit_of_two_peaks():
    probe = _Peaks({1: 300, 4: 900})
    cost = measure_cost(probe.calls.append, probe)
    assert cost == RowCost(per_candidate=200.0, fixed=100.0)
    assert cost.batch_that_fits(10_000, headroom=1.0) == 49
    assert cost.batch_that_fits(10_000, headroom=1.0, cap=16) == 16
    assert cost.batch_that_fits(50, headroom=1.0) == 1  # never below one candidate


class _Peaks:
    """A probe replaying given peaks per chunk size (the run function reports its size)."""

    def __init__(self, peaks: dict[int, int]) -> None:
        self.peaks, self.calls = peaks, []

    def start(self) -> None:
        pass

    def peak_bytes(self) -> int:
        return self.peaks[self.calls[-1]]

    def free_bytes(self) -> int:
        return 0


def test_auto_picks_the_largest_batch_that_fits():
    stub = StubAdapter()
    free = 8 * 1024 * MB
    mem = FakeMemory(stub, free=free, per_row=30 * MB, per_image=70 * MB)
    got = auto_batch(stub, CoreConfig(steps=4, guidance=3.0), "p", probe=mem)
    # a guided candidate is two rows; the fixed part of each call is subtracted from the budget
    assert got.denoise_cost.per_candidate == pytest.approx(60 * MB)
    assert got.denoise_cost.fixed == pytest.approx(100 * MB)
    assert got.max_batch == int((free * HEADROOM - 100 * MB) // (60 * MB)) == 114
    assert got.decode_batch == int((free * HEADROOM - 100 * MB) // (70 * MB)) == 98
    unguided = auto_batch(stub, CoreConfig(steps=4, guidance=1.0), "p", probe=mem)
    assert unguided.max_batch == min(256, int((free * HEADROOM - 100 * MB) // (30 * MB)))


def test_auto_without_a_probe_off_cuda_is_the_fixed_default():
    got = auto_batch(StubAdapter(), CoreConfig(steps=2), "p")
    assert (got.max_batch, got.decode_batch, got.free_bytes) == (DEFAULT_MAX_BATCH, DEFAULT_MAX_BATCH, None)


def red(images, prompts):
    return images[:, 0].mean(dim=(1, 2))


def test_search_with_auto_batch_keeps_the_oom_fallback(monkeypatch):
    """The measured estimate (10 candidates) is too optimistic for this device, which fails above
    3 candidates: the search halves its chunks and returns what a fixed small batch returns, and
    calibration costs no NFE."""
    stub = StubAdapter()
    mem = FakeMemory(stub, free=700 * MB, per_row=30 * MB, per_image=10 * MB)
    metered = stub.predict

    def predict(x, t, cond):
        if x.shape[0] > 2 * 3 and not calibrating[0]:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")
        return metered(x, t, cond)

    stub.predict = predict
    calibrating = [False]

    def calibrated(*a, **k):
        calibrating[0] = True
        try:
            return auto_batch(*a, probe=mem, **k)
        finally:
            calibrating[0] = False

    monkeypatch.setattr(api, "auto_batch", calibrated)
    got = noisesearch.search(stub, "p", verifier=red, candidates=12, steps=3, guidance=3.0, max_batch="auto")
    ref = noisesearch.search(StubAdapter(), "p", verifier=red, candidates=12, steps=3, guidance=3.0, max_batch=3)
    assert got.settings["max_batch"] == int((700 * MB * HEADROOM - 100 * MB) // (60 * MB)) == 8
    assert got.settings["max_batch_auto"] is True
    torch.testing.assert_close(got.scores, ref.scores, atol=1e-6, rtol=0)
    assert got.accounting.nfe == ref.accounting.nfe == 36
    assert got.accounting.oom_retries >= 1 and got.accounting.chunk_size <= 3


def test_max_batch_values():
    assert parse_max_batch("auto") == "auto" and parse_max_batch(" AUTO ") == "auto"
    assert parse_max_batch("12") == 12 and parse_max_batch(5) == 5
    for bad in ("all", "", "1.5"):
        with pytest.raises(ValueError, match="positive integer or 'auto'"):
            parse_max_batch(bad)
    for bad in (0, -3, "0", True):
        with pytest.raises(ValueError, match="positive integer"):
            parse_max_batch(bad)


def test_eager_denoiser_unwraps_only_inside_the_block():
    stub = StubAdapter()
    net = torch.nn.Linear(2, 2)
    stub.unet = compile_denoiser(net, "cpu", backend="eager")
    with eager_denoiser(stub):
        assert stub.unet is net
    assert is_compiled(stub.unet)
