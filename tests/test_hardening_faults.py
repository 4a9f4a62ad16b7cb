"""Injected faults: NaN/inf latents and scores, out-of-memory inside whole searches, Ctrl-C and
SIGTERM during `noisesearch run` (in process and as a real subprocess killed from outside).

Each fault is injected into the weightless counting stub (:class:`noisesearch.testing.StubAdapter`)
or a cheap registered verifier, so every test runs in about a second except the subprocess one.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from typer.testing import CliRunner

import noisesearch
from noisesearch.cli import app
from noisesearch.testing import StubAdapter
from noisesearch.verifiers import CallableVerifier, register_verifier

STRATEGIES = ["random", "zero-order", "paths", "smc", "gradient"]


def red(images: torch.Tensor, prompts) -> torch.Tensor:
    """Mean of the red channel: cheap, deterministic, differentiable."""
    return images[:, 0].mean(dim=(1, 2))


class NaNStub(StubAdapter):
    """The stub whose network returns NaN for the rows of candidates whose seed is in ``bad_seeds``.

    Rows are recognised by their initial noise: the test hands the stub the noises of bad seeds."""

    def __init__(self, bad_rows_of) -> None:
        super().__init__()
        self.bad_rows_of = bad_rows_of

    def predict(self, x, timestep, conditioning):
        out = super().predict(x, timestep, conditioning)
        bad = self.bad_rows_of(x)
        out[bad] = float("nan")
        return out


def test_nan_latents_are_excluded_counted_and_reported(tmp_path):
    """Candidates whose latents become NaN mid-sampling get score -inf, are never the best, are
    counted in the report, and their compute is still accounted for."""
    steps, n = 4, 6
    poisoned: list[torch.Tensor] = []  # the running latents of seeds 1 and 4 (tracked across steps)

    def bad_rows(x: torch.Tensor) -> torch.Tensor:
        # a NaN row stays NaN through the solver, so after the first step the poisoned rows are the
        # non-finite ones; at the first step, pick the rows whose noise equals seeds 1 and 4's
        first = torch.stack([torch.isclose(x.flatten(1), z.flatten()[None]).all(dim=1) for z in poisoned]).any(0)
        return first | ~torch.isfinite(x.flatten(1)).all(dim=1)

    probe = StubAdapter()
    from noisesearch.core.sampler import CoreConfig, DenoisingCore

    poisoned.extend(DenoisingCore(probe, CoreConfig(steps=steps)).initial_noise([1, 4]))
    stub = NaNStub(bad_rows)
    r = noisesearch.search(stub, "p", verifier=red, candidates=n, steps=steps, guidance=1.0, max_batch=4)
    assert [c.seed for c in r.candidates if not c.finite] == [1, 4]
    assert all(c.score == -math.inf for c in r.candidates if not c.finite)
    assert r.non_finite == 2 and r.best.seed not in (1, 4) and math.isfinite(r.best.score)
    assert r.accounting.nfe == n * steps == stub.rows  # the poisoned candidates' compute is counted
    from noisesearch.io.results import write_outputs

    write_outputs(r, tmp_path)
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["non_finite_candidates"] == 2
    assert [c["score"] for c in report["candidates"] if not c["finite"]] == [None, None]


def test_all_candidates_nan_gives_no_best_and_a_clear_error():
    stub = NaNStub(lambda x: torch.ones(x.shape[0], dtype=torch.bool))
    r = noisesearch.search(stub, "p", verifier=red, candidates=3, steps=3, guidance=1.0)
    assert r.non_finite == 3 and r.ranked() == []
    with pytest.raises(ValueError, match="no finite candidate"):
        _ = r.best


@pytest.mark.parametrize("bad", [float("inf"), float("-inf"), float("nan")])
def test_non_finite_scores_never_win(bad):
    """+inf is the largest float, yet a candidate scored +inf is excluded like NaN."""

    def flaky(images, prompts):
        s = red(images, prompts)
        s[1] = bad
        return s

    r = noisesearch.search(StubAdapter(), "p", verifier=flaky, candidates=4, steps=3, max_batch=8)
    assert r.non_finite == 1 and not r.candidates[1].finite
    assert r.best.seed != 1 and math.isfinite(r.best.score)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_out_of_memory_inside_a_search_changes_nothing_but_the_chunk_size(strategy):
    """Every network call above 2 candidates 'runs out of memory': each strategy still returns the
    same candidates and scores as an unconstrained run, with the same NFEs, and the accounting
    records the retries and the smaller chunk."""

    options = {"candidates": 4} if strategy == "gradient" else {}  # by default it optimises one noise

    def run(stub):
        return noisesearch.search(
            stub,
            "p",
            strategy=strategy,
            strategy_options=options,
            seed=3,
            verifier=CallableVerifier(red, "red", True),
            budget=40,
            steps=5,
            guidance=3.0,
            max_batch=8,
        )

    ref = run(StubAdapter())
    stub = StubAdapter()
    real = stub.predict

    def predict(x, t, cond):
        if x.shape[0] > 2 * 2:  # two candidates (4 rows with guidance) is all that "fits"
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")
        return real(x, t, cond)

    stub.predict = predict
    got = run(stub)
    assert [c.seed for c in got.candidates] == [c.seed for c in ref.candidates]
    torch.testing.assert_close(got.scores, ref.scores, atol=1e-5, rtol=0)
    assert got.accounting.nfe == ref.accounting.nfe <= 40
    assert got.accounting.network_rows == stub.rows == 2 * got.accounting.nfe
    assert got.accounting.chunk_size <= 2 and got.accounting.oom_retries >= 1


def test_out_of_memory_at_one_candidate_is_raised_not_swallowed():
    stub = StubAdapter()

    def predict(x, t, cond):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")

    stub.predict = predict
    with pytest.raises(torch.cuda.OutOfMemoryError):
        noisesearch.search(stub, "p", verifier=red, candidates=4, steps=2, max_batch=4)


# --------------------------------------------------------------------------- interruptions

_INTERRUPT = {"at_call": 0, "calls": 0, "how": "keyboard"}


def _interrupting(images, prompts):
    """Scores like ``red``; on call number ``at_call`` it is interrupted (Ctrl-C or a real SIGTERM)."""
    _INTERRUPT["calls"] += 1
    if _INTERRUPT["calls"] == _INTERRUPT["at_call"]:
        if _INTERRUPT["how"] == "keyboard":
            raise KeyboardInterrupt
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler interrupts this sleep at once
        raise AssertionError("SIGTERM was not turned into an interruption")
    return red(images, prompts)


@register_verifier("hardening-interrupt", "tests: red channel; interrupted on a chosen call")
def _interrupt_factory(device="cpu") -> CallableVerifier:
    return CallableVerifier(_interrupting, name="hardening-interrupt")


class _SigtermNotHandled(Exception):
    pass


@pytest.fixture
def sigterm_guard():
    """Restores the SIGTERM handler afterwards; until the CLI installs its own, SIGTERM raises an
    error instead of killing the test process."""
    before = signal.getsignal(signal.SIGTERM)

    def unhandled(signum, frame):
        raise _SigtermNotHandled

    signal.signal(signal.SIGTERM, unhandled)
    yield
    signal.signal(signal.SIGTERM, before)


@pytest.mark.parametrize("how", ["keyboard", "sigterm"])
def test_interrupted_run_writes_partial_results_and_exits_130(tmp_path, how, sigterm_guard):
    """Ctrl-C or SIGTERM while round 3 of 4 is scored: the two finished rounds are written, report
    marked partial, exit code 130."""
    _INTERRUPT.update(at_call=3, calls=0, how=how)
    out = tmp_path / "out"
    res = CliRunner().invoke(
        app,
        [
            "run",
            "--prompt",
            "a red circle",
            "--model",
            "stub",
            "--verifier",
            "hardening-interrupt",
            "--candidates",
            "8",
            "--max-batch",
            "2",
            "--steps",
            "3",
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 130, res.output
    assert "Traceback" not in res.output
    assert "interrupted: results computed so far were written" in res.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["partial"] is True
    assert [c["seed"] for c in report["candidates"]] == [0, 1, 2, 3]
    assert report["accounting"]["nfe"] <= 8 * 3 and report["accounting"]["verifier_calls"] == 4
    assert (out / "best.png").is_file()


def test_interrupt_before_any_candidate_finishes_says_nothing_was_written(tmp_path):
    _INTERRUPT.update(at_call=1, calls=0, how="keyboard")
    out = tmp_path / "out"
    res = CliRunner().invoke(
        app,
        [
            "run",
            "--prompt",
            "a red circle",
            "--model",
            "stub",
            "--verifier",
            "hardening-interrupt",
            "--candidates",
            "4",
            "--steps",
            "2",
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 130 and "Traceback" not in res.output
    assert "nothing was written" in res.stderr
    assert not (out / "report.json").exists()


_SLOW_RUN = r"""
import sys, time
from pathlib import Path
from noisesearch.verifiers import CallableVerifier, register_verifier

ready, calls = Path(sys.argv[1]), [0]

def slow(images, prompts):
    calls[0] += 1
    if calls[0] == 2:
        ready.write_text("round 1 finished")
    time.sleep(0.25)
    return images[:, 0].mean(dim=(1, 2))

register_verifier("hardening-slow")(lambda device="cpu": CallableVerifier(slow, name="hardening-slow"))
sys.argv = ["noisesearch", "run", "--prompt", "a red circle", "--model", "stub", "--verifier", "hardening-slow",
            "--candidates", "40", "--max-batch", "2", "--steps", "3", "--out", sys.argv[2]]
from noisesearch.cli import main
main()
"""


def test_sigterm_from_outside_a_real_process_keeps_finished_work(tmp_path):
    """`kill -TERM` on a running `noisesearch run`: exit 130, report.json marked partial with the
    candidates finished so far, best image written."""
    ready, out = tmp_path / "ready", tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", _SLOW_RUN, str(ready), str(out)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 240
        while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ready.exists(), f"the run did not start: {proc.poll()}"
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "interrupted: results computed so far were written" in stderr
    report = json.loads((out / "report.json").read_text())
    assert report["partial"] is True and 2 <= len(report["candidates"]) < 40
    assert [c["seed"] for c in report["candidates"]] == list(range(len(report["candidates"])))
    assert (out / "best.png").is_file()
