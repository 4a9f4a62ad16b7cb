"""Core contracts: batch invariance, accounting equals actual calls, stop/re-noise/resume, solvers."""

from __future__ import annotations

import math

import pytest
import torch

from noisesearch.accounting import BudgetExceeded, Meter
from noisesearch.core import CoreConfig, DenoisingCore
from noisesearch.core.schedule import build_schedule, make_scheduler
from noisesearch.models.adapters import StableDiffusionAdapter
from noisesearch.request import Sampling
from noisesearch.testing import FLOW_SCHEDULER_CONFIG, StubAdapter
from noisesearch.testing.tiny import tiny_sd_pipeline


@pytest.fixture(scope="module")
def sd_adapter():
    return StableDiffusionAdapter(tiny_sd_pipeline(seed=1))


@pytest.mark.parametrize("solver", ["ddim", "dpm++2m"])
def test_candidate_is_identical_in_any_batch(sd_adapter, solver):
    """Candidate with seed s gives the same image in batches of 1, 7 and 64 (fp32 CPU)."""
    target = 1005
    images = {}
    for batch in (1, 7, 64):
        seeds = [target] if batch == 1 else list(range(1000, 1000 + batch))
        core = DenoisingCore(sd_adapter, CoreConfig(solver=solver, steps=4, guidance=5.0, max_batch=64))
        out = core.sample(seeds, ["a red circle"] * batch)
        images[batch] = out[seeds.index(target)]
    assert (images[1] - images[7]).abs().max().item() <= 1e-5
    assert (images[1] - images[64]).abs().max().item() <= 1e-5


def test_chunking_does_not_change_results(sd_adapter):
    seeds = list(range(10))
    a = DenoisingCore(sd_adapter, CoreConfig(steps=3, max_batch=10)).sample(seeds, ["x"] * 10)
    b = DenoisingCore(sd_adapter, CoreConfig(steps=3, max_batch=3)).sample(seeds, ["x"] * 10)
    assert (a - b).abs().max().item() <= 1e-5


@pytest.mark.parametrize("guidance,rows_per_candidate", [(1.0, 1), (3.0, 2)])
def test_accounting_equals_actual_calls(guidance, rows_per_candidate):
    stub = StubAdapter()
    core = DenoisingCore(stub, CoreConfig(steps=5, guidance=guidance, max_batch=4))
    seeds = list(range(10))
    traj = core.run(core.start(core.initial_noise(seeds), ["p", "q"] * 5, seeds), until=3)
    core.preview(traj, fresh=True)
    core.run(traj)  # step 3's evaluation was paid by the fresh preview: only step 4 is new
    acc = core.meter.acc
    assert stub.calls == acc.network_calls == 3 * 3 + 3 + 1 * 3  # chunks of 4,4,2 per evaluation
    assert stub.rows == acc.network_rows == rows_per_candidate * acc.nfe
    assert acc.nfe == 10 * 3 + 10 + 10 * 1
    assert sorted(stub.encoded) == ["p", "q"]  # each prompt encoded once


def test_budget_is_checked_before_spending():
    stub = StubAdapter()
    core = DenoisingCore(stub, CoreConfig(steps=5, guidance=1.0), meter=Meter(budget_nfe=12))
    traj = core.start(core.initial_noise([0, 1]), ["p", "p"], [0, 1])
    traj = core.run(traj, until=5)  # 10 NFEs
    core2 = core.run(core.start(core.initial_noise([2]), ["p"], [2]), until=2)  # 2 more: exactly 12
    with pytest.raises(BudgetExceeded):
        core.run(core2)
    assert core.meter.acc.nfe == 12 and stub.calls == 7


def test_stop_and_resume_equals_uninterrupted(sd_adapter):
    core = DenoisingCore(sd_adapter, CoreConfig(solver="dpm++2m", steps=6, guidance=4.0))
    seeds = [3, 4]
    start = core.start(core.initial_noise(seeds), ["a", "b"], seeds)
    full = core.run(start)
    half = core.run(core.run(start, until=2), until=6)
    assert (full.x - half.x).abs().max().item() <= 1e-6


def test_renoise_reaches_the_target_level_distribution():
    """Re-noising x0-like data to step j gives variance alpha_j^2 var(x0) + sigma_j^2."""
    stub = StubAdapter()
    core = DenoisingCore(stub, CoreConfig(steps=10, guidance=1.0))
    n = 4000
    clean = torch.full((n, 4, 8, 8), 0.7)
    traj = core.start(torch.zeros(n, 4, 8, 8), ["p"] * n, list(range(n)))
    traj.x, traj.step = clean, core.schedule.num_steps  # pretend finished at the final level
    a_end, s_end = core.schedule.level(core.schedule.num_steps)
    noisy = core.renoise(traj, 4, torch.randn(n, 4, 8, 8, generator=torch.Generator().manual_seed(0)))
    a4, s4 = core.schedule.level(4)
    expected_mean = 0.7 * a4 / a_end
    expected_std = math.sqrt(s4**2 - (a4 / a_end * s_end) ** 2)
    assert noisy.step == 4 and noisy.x0 is None
    assert abs(noisy.x.mean().item() - expected_mean) < 0.01
    assert abs(noisy.x.std().item() - expected_std) < 0.01
    with pytest.raises(ValueError):
        core.renoise(noisy, 6, torch.zeros_like(noisy.x))


def test_preview_is_free_after_a_step_and_costs_one_nfe_when_fresh():
    stub = StubAdapter()
    core = DenoisingCore(stub, CoreConfig(steps=4, guidance=1.0))
    traj = core.run(core.start(core.initial_noise([0]), ["p"], [0]), until=2)
    before = core.meter.acc.nfe
    assert core.preview(traj).shape == (1, 4, 8, 8)
    assert core.meter.acc.nfe == before
    core.preview(traj, fresh=True)
    assert core.meter.acc.nfe == before + 1 and traj.cached() is not None and traj.cached().step == 2
    core.preview(traj, fresh=True)  # the same state again: already paid for
    assert core.meter.acc.nfe == before + 1


def test_flow_euler_matches_diffusers_flow_match_scheduler():
    """Our flow-Euler loop equals FlowMatchEulerDiscreteScheduler.step on the same model outputs."""
    stub = StubAdapter(prediction_type="flow")
    core = DenoisingCore(stub, CoreConfig(solver="flow-euler", steps=7, guidance=2.0))
    seeds = [11, 12]
    noise = core.initial_noise(seeds)
    ours = core.run(core.start(noise, ["p", "q"], seeds)).x

    sched = make_scheduler("flow-euler", FLOW_SCHEDULER_CONFIG)
    sched.set_timesteps(7)
    emb = stub.encode_prompts(["p", "q"], None, True, 32, 32)
    rows = emb.rows(torch.tensor([0, 1]), guided=True)
    x = noise.clone()
    for t in sched.timesteps:
        out = stub.predict(torch.cat([x, x]), t, rows)
        u, c = out.chunk(2)
        x = sched.step(u + 2.0 * (c - u), t, x).prev_sample
    assert (ours - x).abs().max().item() <= 1e-5


def test_schedules_are_monotone_and_end_clean():
    cfg = tiny_sd_pipeline().scheduler.config
    for solver in ("ddim", "euler", "dpm++2m"):
        s = build_schedule(solver, cfg, 10)
        nts = [s.noise_to_signal(i) for i in range(s.num_steps + 1)]
        assert all(a > b for a, b in zip(nts, nts[1:])), solver
        assert nts[-1] < 0.05


def test_bad_core_settings_raise_clear_errors(sd_adapter):
    with pytest.raises(ValueError, match="steps"):
        CoreConfig(steps=0)
    # the same checks as a request's sampling settings: a bool is not a count or a scale
    for bad in ({"steps": True}, {"guidance": False}, {"height": True}, {"guidance": math.inf}, {"width": 7}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            CoreConfig(**bad)
        with pytest.raises(ValueError, match=next(iter(bad))):
            Sampling(**bad).check()
    with pytest.raises(ValueError, match="unknown scheduler"):
        DenoisingCore(sd_adapter, CoreConfig(solver="heun"))
    with pytest.raises(ValueError, match="flow"):
        DenoisingCore(sd_adapter, CoreConfig(solver="flow-euler"))
    with pytest.raises(ValueError, match="multiples"):
        DenoisingCore(sd_adapter, CoreConfig(height=17, width=16))


def test_out_of_memory_halves_the_chunk_and_loses_no_candidate():
    """An injected OOM on chunks above 3 candidates: halved to 2, same results, honest accounting."""
    ref_stub = StubAdapter()
    ref_core = DenoisingCore(ref_stub, CoreConfig(steps=4, guidance=3.0, max_batch=8))
    seeds = list(range(8))
    ref = ref_core.sample(seeds, ["p"] * 8)

    stub = StubAdapter()
    real_predict = stub.predict

    def flaky_predict(x, t, cond):
        if x.shape[0] > 2 * 3:  # more than 3 candidates (6 rows with CFG) "does not fit"
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")
        return real_predict(x, t, cond)

    stub.predict = flaky_predict
    core = DenoisingCore(stub, CoreConfig(steps=4, guidance=3.0, max_batch=8))
    out = core.sample(seeds, ["p"] * 8)
    assert out.shape == ref.shape and (out - ref).abs().max().item() <= 1e-6
    acc = core.meter.acc
    assert core.chunk_size == 2 and acc.chunk_size == 2 and acc.oom_retries == 2  # 8 -> 4 -> 2
    assert acc.nfe == 8 * 4 and acc.network_rows == 2 * 8 * 4 == stub.rows
