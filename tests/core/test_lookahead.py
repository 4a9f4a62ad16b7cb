"""Lookahead and cached evaluation: every network call is counted exactly once, and reuse is exact."""

from __future__ import annotations

import pytest
import torch

from noisesearch.accounting import BudgetExceeded, Meter
from noisesearch.core import CoreConfig, DenoisingCore
from noisesearch.testing import StubAdapter


def _core(solver: str = "ddim", steps: int = 10, guidance: float = 3.0, max_batch: int = 4, budget: int | None = None):
    stub = StubAdapter()
    return stub, DenoisingCore(
        stub,
        CoreConfig(solver=solver, steps=steps, guidance=guidance, max_batch=max_batch),
        meter=Meter(budget_nfe=budget),
    )


def _start(core, seeds):
    return core.start(core.initial_noise(seeds), ["p"] * len(seeds), seeds)


def test_lookahead_steps_are_evenly_spaced_and_stop_short_of_the_end():
    assert DenoisingCore.lookahead_steps(8, 20, 2) == [12, 16]
    assert DenoisingCore.lookahead_steps(8, 20, 1) == [14]
    assert DenoisingCore.lookahead_steps(8, 20, 0) == []
    assert DenoisingCore.lookahead_steps(18, 20, 3) == [19]  # too few steps left for three jumps


@pytest.mark.parametrize("jumps", [0, 1, 2])
def test_lookahead_and_continuation_are_each_counted_exactly_once(jumps):
    """Screen 6 candidates at step 4 with a J-jump lookahead, then finish them: the stub's own call
    and row counts equal the meter's, and the evaluation at step 4 is paid once, not twice."""
    stub, core = _core()
    traj = core.run(_start(core, list(range(6))), until=4)  # 6 x 4 NFEs
    assert core.meter.acc.nfe == 24
    est = core.lookahead(traj, jumps=jumps)  # 6 x (J + 1)
    assert est.shape == traj.x.shape and traj.step == 4  # the trajectory itself does not move
    assert core.meter.acc.nfe == 24 + 6 * (jumps + 1)
    core.lookahead(traj, jumps=jumps)  # again: only the jumps are new, step 4's evaluation is cached
    assert core.meter.acc.nfe == 24 + 6 * (jumps + 1) + 6 * jumps
    done = core.run(traj)  # steps 4..9, step 4 already evaluated: 5 steps each
    acc = core.meter.acc
    assert acc.nfe == 24 + 6 * (2 * jumps + 1) + 6 * 5
    assert stub.rows == acc.network_rows == 2 * acc.nfe  # guidance: two rows per candidate evaluation
    assert stub.calls == acc.network_calls
    # reuse is exact: the same candidates run straight through give the same final latents
    _, plain = _core()
    ref = plain.run(_start(plain, list(range(6))))
    assert torch.allclose(done.x, ref.x, atol=1e-6)
    assert plain.meter.acc.nfe == 60


@pytest.mark.parametrize("solver", ["ddim", "dpm++2m"])
def test_a_fresh_preview_is_reused_by_the_next_step_exactly(solver):
    """preview(fresh=True) then run: one NFE fewer than before the cache, the same latents as without it
    (the second-order solver still sees the previous step's prediction)."""
    _, core = _core(solver=solver)
    traj = core.run(_start(core, [0, 1, 2]), until=5)
    core.preview(traj, fresh=True)
    out = core.run(traj)
    assert core.meter.acc.nfe == 3 * 5 + 3 + 3 * 4
    _, plain = _core(solver=solver)
    ref = plain.run(_start(plain, [0, 1, 2]))
    assert torch.allclose(out.x, ref.x, atol=1e-6)


def test_the_cache_survives_selection_and_dies_with_any_change_of_state():
    _, core = _core()
    traj = core.run(_start(core, [0, 1, 2, 3]), until=3)
    core.preview(traj, fresh=True)
    picked = traj.select([2, 0, 2])
    assert picked.cached() is not None and torch.equal(picked.cached().x0, traj.cached().x0[[2, 0, 2]])
    before = core.meter.acc.nfe
    core.run(picked, until=4)  # the one step is the cached one
    assert core.meter.acc.nfe == before
    renoised = core.renoise(traj, 1, torch.zeros_like(traj.x))
    assert renoised.cached() is None
    from dataclasses import replace

    moved = replace(traj, x=traj.x + 1)  # a churned / edited state is a new tensor: no stale reuse
    assert moved.cached() is None
    core.run(moved, until=4)
    assert core.meter.acc.nfe == before + 4


def test_gradient_runs_recompute_rather_than_reuse_a_cached_evaluation():
    _, core = _core()
    traj = core.run(_start(core, [0, 1]), until=3)
    core.preview(traj, fresh=True)
    before = core.meter.acc.nfe
    x = traj.x.clone().requires_grad_(True)
    from dataclasses import replace

    out = core.run(replace(traj, x=x), until=4, grad=True)
    assert core.meter.acc.nfe == before + 2 and out.x.requires_grad


def test_lookahead_checks_the_budget_before_spending():
    stub, core = _core(budget=10)
    traj = core.run(_start(core, [0, 1]), until=4)  # 8 NFEs
    with pytest.raises(BudgetExceeded):
        core.lookahead(traj, jumps=1)  # would need 4
    assert core.meter.acc.nfe == 8 and stub.rows == 16
    with pytest.raises(ValueError, match="jumps"):
        core.lookahead(traj, jumps=-1)


def test_a_long_lookahead_lands_near_the_finished_sample():
    """On a smooth model the lookahead's x0 from step 2 is closer to the finished sample than the free preview."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "strategies"))
    from strategy_world import GaussianWorld

    world = GaussianWorld()
    core = DenoisingCore(world, CoreConfig(solver="ddim", steps=20, guidance=1.0))
    traj = core.run(_start(core, list(range(8))), until=2)
    free = core.preview(traj).clone()
    look = core.lookahead(traj, jumps=3)
    final = core.run(traj).x
    assert (look - final).norm() < 0.5 * (free - final).norm()
