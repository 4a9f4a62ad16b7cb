"""Search over paths: level -> step mapping, the plan and its cost, batching, top-N selection."""

from __future__ import annotations

import pytest
import torch
from strategy_world import GaussianWorld, colour_score

import noisesearch
from noisesearch.strategies.paths import PathsPlan, PathsSearch, level_to_step
from noisesearch.verifiers.base import CallableVerifier


def test_levels_map_to_steps_as_fractions_of_the_schedule():
    assert level_to_step(1.0, 20) == 0 and level_to_step(0.0, 20) == 20
    assert level_to_step(0.11, 20) == 18  # 2.2 steps still to go -> 2
    assert level_to_step(0.5, 10) == 5 and level_to_step(0.25, 10) == 7  # 2.5 -> 3 (half up)
    assert level_to_step(1.7, 10) == 0 and level_to_step(-0.3, 10) == 10  # clamped


#: the values reported for the paper (σ, Δf, Δb), with no finishing of near-finished branches
REPORTED = {"sigma": 0.11, "delta_f": 0.78, "delta_b": 0.81, "finish_within": 0}


def test_the_reported_plan_on_twenty_steps_stays_reachable():
    plan = PathsSearch(**REPORTED).plan(20)
    # σ = 0.11 -> step 18; re-noise to level 0.88 (step 2), solve back to level 0.07 (step 19);
    # then from level 0.05: re-noise to 0.83 (step 3), back to 0.02 -> the clean step 20
    assert plan == PathsPlan(start=18, hops=((2, 19), (3, 20)))
    assert plan.cost(2, 2) == 2 * 18 + 4 * 17 + 4 * 17


def test_the_default_plan_branches_late_and_locally():
    plan = PathsSearch().plan(20)
    # σ = 0.4 -> step 12; each hop re-noises 2 steps and solves back 4; the last lands on the end
    assert plan == PathsPlan(start=12, hops=((10, 14), (12, 16), (14, 18), (16, 20)))
    assert plan.cost(2, 2) == 2 * 12 + 4 * (4 * 4) == 88
    assert all(back - fwd == 4 for fwd, back in plan.hops)  # no branch re-runs most of the schedule


def test_branches_and_roots_one_step_from_the_end_are_finished():
    # the reported values would stop branches at step 19 and preview them; finishing them costs one NFE
    plan = PathsSearch(**{**REPORTED, "finish_within": 1}).plan(20)
    assert plan == PathsPlan(start=18, hops=((2, 20),))
    assert PathsSearch(sigma=0.05).plan(20) == PathsPlan(start=20, hops=())  # roots at step 19 -> finished
    r = noisesearch.search(
        GaussianWorld(),
        "p",
        strategy="paths",
        strategy_options={**REPORTED, "finish_within": 1},
        verifier=colour_score,
        budget=plan.cost(2, 2),
        steps=20,
    )
    assert len(r.candidates) == 4 and r.accounting.nfe == plan.cost(2, 2)


def test_rounding_never_stalls_the_level():
    plan = PathsSearch(sigma=0.5, delta_f=0.3, delta_b=0.31, finish_within=0).plan(10)
    assert plan.start == 5
    assert [b - a for a, b in zip([plan.start] + [h[1] for h in plan.hops], [h[1] for h in plan.hops])] == [1] * 5
    assert all(f < b for f, b in plan.hops) and plan.hops[-1][1] == 10


def test_sigma_zero_is_best_of_n():
    r = noisesearch.search(
        GaussianWorld(),
        "p",
        strategy="paths",
        strategy_options={"sigma": 0.0, "paths": 3},
        verifier=colour_score,
        budget=30,
        steps=10,
    )
    assert [c.seed for c in r.candidates] == [0, 1, 2] and r.accounting.nfe == 30


def test_branches_are_batched_and_compute_matches_the_plan():
    stub = GaussianWorld()
    options = {"paths": 2, "branches": 3}
    plan = PathsSearch(**options).plan(20)
    budget = plan.cost(2, 3)
    r = noisesearch.search(
        stub,
        "p",
        strategy="paths",
        strategy_options=options,
        verifier=colour_score,
        budget=budget,
        steps=20,
        guidance=3.0,
        max_batch=64,
    )
    assert r.accounting.nfe == budget
    # one network call per solver step: the N paths together, then all N·M branches of a hop together
    assert stub.calls == plan.start + sum(b - f for f, b in plan.hops)
    # previews scored per intermediate hop (N·M images) plus the final N·M candidates
    assert r.accounting.verifier_calls == 6 * len(plan.hops)
    assert len(r.candidates) == 6 and len({c.seed for c in r.candidates}) == 6


def test_survivors_are_the_top_n_previews():
    previews: list[torch.Tensor] = []

    def recording(images, prompts):
        s = colour_score(images, prompts)
        previews.append(s)
        return s

    options = {"paths": 2, "branches": 3, **REPORTED}  # two hops: survivors of the first are the parents
    r = noisesearch.search(
        GaussianWorld(),
        "p",
        strategy="paths",
        strategy_options=options,
        verifier=CallableVerifier(recording),
        budget=PathsSearch(**options).plan(20).cost(2, 3),
        steps=20,
        seed=40,
    )
    first_branch_seeds = list(range(42, 48))  # after the 2 path seeds 40, 41
    top = {first_branch_seeds[int(i)] for i in torch.topk(previews[0], 2).indices}
    assert {c.info["parent"] for c in r.candidates} == top
    assert {c.info["path"] for c in r.candidates} <= {40, 41}
    assert all(c.info["iteration"] == 1 for c in r.candidates)


def test_leftover_budget_becomes_plain_samples():
    cost = PathsSearch().plan(10).cost(2, 2)  # 40 NFEs
    assert PathsSearch().plan(10).cost(1, 2) == 20  # a Paths-1 search does not fit in 15 more NFEs
    r = noisesearch.search(GaussianWorld(), "p", strategy="paths", verifier=colour_score, budget=cost + 15, steps=10)
    assert [c.info.get("role") for c in r.candidates][-2:] == [None, "fill"]
    assert r.accounting.nfe == cost + 10


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"paths": 0}, "paths"),
        ({"sigma": 1.0}, "sigma"),
        ({"delta_b": 0.05}, "exceed"),
        ({"finish_within": -1}, "finish_within"),
        ({"nfe_per_step": 2}, "once per step"),
    ],
)
def test_bad_options_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PathsSearch(**kwargs)
