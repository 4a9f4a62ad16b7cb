"""Early rejection with lookahead (prune): plan arithmetic, exact accounting, random-search limit, selection."""

from __future__ import annotations

import math

import pytest
import torch
from strategy_world import GaussianWorld, colour_verifier

import noisesearch
from noisesearch.strategies.prune import PrunePlan, PruneSearch
from noisesearch.testing import StubAdapter

#: the first proposal's settings (the defaults before the tuning on training prompts)
FIRST = {"at": 0.4, "jumps": 2, "keep": 0.25}


def prune(model=None, budget=200, seed=0, prompt="p", max_batch=32, steps=10, **options):
    return noisesearch.search(
        model or GaussianWorld(),
        prompt,
        strategy="prune",
        strategy_options=options,
        verifier=colour_verifier(),
        budget=budget,
        steps=steps,
        guidance=3.0,
        seed=seed,
        max_batch=max_batch,
    )


@pytest.mark.parametrize("first_proposal", [False, True])  # the defaults, and at=0.4, jumps=2, keep=0.25
@pytest.mark.parametrize("halving", [False, True])
@pytest.mark.parametrize("budget", [80, 100, 320, 1280])
def test_the_plan_is_the_largest_screen_that_fits(budget, halving, first_proposal):
    s = PruneSearch(halving=halving, **(FIRST if first_proposal else {}))
    plan = s.plan(budget, 20)
    assert plan.cost(20) <= budget
    b = budget // 20
    if halving and not plan.screens:  # two screens of the defaults do not pay at 5x: random search
        assert (budget, first_proposal, plan) == (100, False, PrunePlan(0, (), b))
        return
    assert plan.screened > b and plan.screens[-1][2] == math.ceil(s.keep * b)  # m = ceil(keep·B) survivors
    if not halving:  # one more screened noise no longer fits, so less than one screen's cost is left
        assert PrunePlan(plan.screened + 1, plan.screens, 0).cost(20) > budget
        assert budget - plan.cost(20) < plan.screens[0][0] + plan.screens[0][1]


def test_the_plan_cost_counts_the_cached_screen_evaluation_once():
    # N0 = 6 to step 8 (48), lookahead 3 each (18), 1 survivor resumes at step 9 (11), 1 fill sample (20)
    assert PrunePlan(6, ((8, 3, 1),), 1).cost(20) == 48 + 18 + 11 + 20
    # two screens: 5 to step 8 + 3 lookahead, 2 survivors from step 9 to 12 + 3 lookahead, 1 from 13 to 20
    assert PrunePlan(5, ((8, 3, 2), (12, 3, 1)), 0).cost(20) == 5 * 11 + 2 * (3 + 3) + 1 * 7


def test_too_small_a_budget_is_random_search_on_the_same_seeds():
    s = PruneSearch()
    assert s.plan(30, 10) == PrunePlan(0, (), 3)  # B = 3, and only 3 noises could be screened
    a = prune(budget=30)
    r = noisesearch.search(
        GaussianWorld(), "p", strategy="random", verifier=colour_verifier(), budget=30, steps=10, guidance=3.0
    )
    assert [c.seed for c in a.candidates] == [c.seed for c in r.candidates]
    assert torch.equal(a.scores, r.scores)


@pytest.mark.parametrize(("steps", "budget", "options"), [(20, 400, {}), (10, 200, FIRST)])
@pytest.mark.parametrize("halving", [False, True])
def test_metered_compute_is_exactly_the_plan(halving, steps, budget, options):
    stub = StubAdapter()
    r = prune(stub, budget=budget, steps=steps, halving=halving, **options)
    plan = PruneSearch(halving=halving, **options).plan(budget, steps)
    assert plan.screens, "the plan should screen"
    acc = r.accounting
    assert acc.nfe == plan.cost(steps) <= budget
    assert stub.rows == acc.network_rows == 2 * acc.nfe
    # one decode and verifier call per screened noise and screen, plus one per finished candidate
    screened = plan.screened + sum(kept for _, _, kept in plan.screens[:-1])
    assert acc.verifier_calls == screened + plan.screens[-1][2] + plan.fill
    assert len(r.candidates) == plan.screens[-1][2] + plan.fill
    assert [c.info["role"] for c in r.candidates] == ["survivor"] * plan.screens[-1][2] + ["fill"] * plan.fill


def test_survivors_are_the_best_lookaheads_and_finish_where_their_lookahead_pointed():
    """The finished survivors are the top-m lookahead scores of the screen; on the exact Gaussian
    denoiser a 3-jump lookahead from step 4 of 10 predicts the final score closely."""
    r = prune(budget=400, at=0.4, jumps=3, keep=0.25)  # 43 screened by 3-jump lookaheads, 10 survivors
    survivors = [c for c in r.candidates if c.info["role"] == "survivor"]
    looks = [c.info["lookahead"] for c in survivors]
    assert looks == sorted(looks, reverse=True)
    final = torch.tensor([c.score for c in survivors])
    assert torch.allclose(final, torch.tensor(looks, dtype=final.dtype), atol=0.05)


def test_prune_beats_random_search_at_equal_nfes_on_a_world_where_lookahead_is_informative():
    """Paired over 8 prompts at 40 samples' NFEs (prune screens 50 noises, finishes 10): ahead on average."""
    wins, diff = 0.0, 0.0
    for i in range(8):
        p = prune(budget=400, seed=100 * i, prompt=f"prompt {i}", **FIRST).best.score
        r = noisesearch.search(
            GaussianWorld(),
            f"prompt {i}",
            strategy="random",
            verifier=colour_verifier(),
            budget=400,
            steps=10,
            guidance=3.0,
            seed=100 * i,
        ).best.score
        wins += (p > r) + 0.5 * (p == r)
        diff += p - r
    assert diff > 0 and wins >= 5


def test_bad_options_are_one_line_errors():
    with pytest.raises(ValueError, match="at must be"):
        PruneSearch(at=1.0)
    with pytest.raises(ValueError, match="keep must be"):
        PruneSearch(keep=0.0)
    with pytest.raises(ValueError, match="second_at must lie"):
        PruneSearch(at=0.5, second_at=0.4)
    with pytest.raises(ValueError, match="jumps must be"):
        PruneSearch(jumps=-1)


def test_a_second_screen_that_would_cut_nothing_is_left_out():
    # defaults at 16x: the first screen would keep max(m, N0/eta) = m survivors already
    plan = PruneSearch(halving=True).plan(320, 20)
    assert plan == PruneSearch().plan(320, 20)  # the largest one-screen plan: 28 screened, 8 kept
    assert len(plan.screens) == 1 and (plan.screened, plan.screens[0][2]) == (28, 8)
    # the first proposal's screens do cut twice: 22 -> 8 -> 4
    plan = PruneSearch(halving=True, **FIRST).plan(320, 20)
    assert [kept for _, _, kept in plan.screens] == [8, 4] and plan.screened == 22
