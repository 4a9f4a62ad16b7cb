"""The contract every registered strategy keeps: budget, accounting, determinism, improvement with budget.

Parametrised over :func:`noisesearch.strategies.available_strategies`, so a new strategy is held to
the same contract as soon as it registers. ``OPTIONS`` gives a strategy settings for these tiny
worlds: prune's default screen (a 6-NFE coarse sample per noise) does not pay on a 10-step schedule,
where prune would be random search, so its contract runs with a 3-NFE screen.
"""

from __future__ import annotations

import pytest
import torch
from strategy_world import GaussianWorld, colour_verifier

import noisesearch
from noisesearch.strategies import available_strategies
from noisesearch.testing import StubAdapter

#: strategies that need a prior trained for the model (the stub worlds have no text encoder):
#: they keep the same contract in the test named here, on the embedded world
TRAINED_PRIOR = {"npnet": "tests/npnet/test_npnet.py::test_npnet_strategy_keeps_the_contract"}
STRATEGIES = sorted(s for s in available_strategies() if s not in TRAINED_PRIOR)
OPTIONS: dict[str, dict] = {"prune": {"at": 0.0, "jumps": 2, "keep": 0.25}}
STEPS = 10


def run(strategy: str, model, budget: int, seed: int = 0, prompt: str = "p", max_batch: int = 8, **kw):
    return noisesearch.search(
        model,
        prompt,
        strategy=strategy,
        strategy_options=OPTIONS.get(strategy, {}),
        verifier=colour_verifier(),
        budget=budget,
        steps=STEPS,
        guidance=3.0,
        seed=seed,
        max_batch=max_batch,
        **kw,
    )


def test_every_strategy_of_the_issue_is_registered():
    assert {"random", "zero-order", "paths", "smc", "gradient"} <= set(STRATEGIES)


@pytest.mark.parametrize("budget", [10, 13, 29, 47, 100])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_budget_is_respected_and_accounting_equals_actual_calls(strategy, budget):
    stub = StubAdapter()
    r = run(strategy, stub, budget)
    acc = r.accounting
    assert acc.nfe <= budget
    assert budget - acc.nfe < STEPS  # what is left could not buy another full sample
    assert stub.rows == acc.network_rows == 2 * acc.nfe  # guidance: two rows per candidate evaluation
    assert stub.calls == acc.network_calls
    assert len(r.candidates) >= 1 and acc.verifier_calls >= len(r.candidates)
    assert r.best.score == max(c.score for c in r.candidates if c.finite)
    assert r.to_dict()["strategy"] == strategy


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_same_seed_gives_the_same_result_in_any_batch_size(strategy):
    a = run(strategy, GaussianWorld(), 47, seed=5)
    b = run(strategy, GaussianWorld(), 47, seed=5)
    c = run(strategy, GaussianWorld(), 47, seed=5, max_batch=2)
    assert [x.seed for x in a.candidates] == [x.seed for x in b.candidates] == [x.seed for x in c.candidates]
    assert torch.equal(a.scores, b.scores)
    assert torch.allclose(a.scores, c.scores, atol=1e-5)
    assert torch.equal(a.best.image, b.best.image)
    assert a.accounting.nfe == c.accounting.nfe
    assert [x.info for x in a.candidates] == [x.info for x in b.candidates]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_best_score_improves_with_budget(strategy):
    """A smooth verifier with a known optimum (a target colour) on an exact Gaussian denoiser:
    the mean best score over prompts and seeds never falls with budget and is higher at 8x than at 1x."""
    mean_best = []
    for mult in (1, 2, 4, 8):
        best = [
            run(strategy, GaussianWorld(), mult * STEPS + 3, seed=100 * i, prompt=f"prompt {i}").best.score
            for i in range(6)
        ]
        mean_best.append(sum(best) / len(best))
    assert all(b >= a - 1e-7 for a, b in zip(mean_best, mean_best[1:])), mean_best
    assert mean_best[-1] > mean_best[0] + 1e-4, mean_best


@pytest.fixture(scope="module")
def tiny_pipelines():
    from noisesearch.models.adapters import StableDiffusionAdapter, StableDiffusionXLAdapter
    from noisesearch.testing.tiny import tiny_sd_pipeline, tiny_sdxl_pipeline

    return {
        "sd": StableDiffusionAdapter(tiny_sd_pipeline(seed=1)),
        "sdxl": StableDiffusionXLAdapter(tiny_sdxl_pipeline(seed=1)),
    }


@pytest.mark.parametrize("family", ["sd", "sdxl"])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_runs_on_tiny_stable_diffusion_pipelines(strategy, family, tiny_pipelines):
    r = noisesearch.search(
        tiny_pipelines[family],
        "a red circle",
        strategy=strategy,
        strategy_options=OPTIONS.get(strategy, {}),
        verifier=colour_verifier(),
        budget=9,
        steps=4,
        guidance=3.0,
    )
    assert r.accounting.nfe <= 9 and r.best.image.shape[0] == 3
