"""SMC / Feynman–Kac steering: ESS, resampling, potentials, best-of-N limit, steering effect."""

from __future__ import annotations

import math

import pytest
import torch
from strategy_world import GaussianWorld, colour_verifier

import noisesearch
from noisesearch.strategies.smc import SMCSearch, effective_sample_size, potential_statistic, resample_indices


def smc(prompt="p", seed=0, budget=160, **options):
    return noisesearch.search(
        GaussianWorld(),
        prompt,
        strategy="smc",
        strategy_options=options,
        verifier=colour_verifier(),
        budget=budget,
        steps=10,
        seed=seed,
    )


def test_effective_sample_size_matches_the_formula():
    assert effective_sample_size(torch.zeros(8)) == pytest.approx(8.0)
    assert effective_sample_size(torch.tensor([0.0, -math.inf, -math.inf])) == pytest.approx(1.0)
    w = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert effective_sample_size(w.log()) == pytest.approx(float(w.sum() ** 2 / (w**2).sum()))
    assert effective_sample_size(torch.full((3,), -math.inf)) == 0.0


@pytest.mark.parametrize("method", ["multinomial", "systematic"])
def test_resampling_follows_the_weights_and_its_seed(method):
    one_hot = torch.tensor([-math.inf, 0.0, -math.inf, -math.inf])
    g = torch.Generator().manual_seed(1)
    assert resample_indices(one_hot, method, g).tolist() == [1, 1, 1, 1]
    w = torch.tensor([0.1, 0.2, 0.3, 0.4]).log()
    a = resample_indices(w, method, torch.Generator().manual_seed(7))
    b = resample_indices(w, method, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    draws = torch.stack([resample_indices(w, method, torch.Generator().manual_seed(i)) for i in range(300)])  # [300, 4]
    counts = torch.stack([torch.bincount(d, minlength=4) for d in draws])  # [300, 4]
    assert torch.allclose(counts.sum(0).float() / 1200, torch.tensor([0.1, 0.2, 0.3, 0.4]), atol=0.04)
    if method == "systematic":  # systematic resampling keeps each count within one of K·w
        assert torch.all((counts - torch.tensor([0.4, 0.8, 1.2, 1.6])).abs() < 1)


def test_potentials_by_hand():
    r1, r2 = torch.tensor([1.0, -2.0]), torch.tensor([0.5, 1.0])
    s, st = potential_statistic("difference", r1, torch.zeros(2))
    assert torch.equal(s, r1)
    s, _ = potential_statistic("difference", r2, st)
    assert torch.equal(s, torch.tensor([-0.5, 3.0]))
    s, st = potential_statistic("max", r1, torch.full((2,), -math.inf))
    s, _ = potential_statistic("max", r2, st)
    assert torch.equal(s, torch.tensor([1.0, 1.0]))
    s, st = potential_statistic("sum", r1, torch.zeros(2))
    s, _ = potential_statistic("sum", r2, st)
    assert torch.equal(s, torch.tensor([1.5, -1.0]))


def test_scored_steps_follow_the_schedule():
    assert SMCSearch().scored_steps(20) == [8, 13]  # from 0.4 of the schedule
    assert SMCSearch(start=0.2).scored_steps(20) == [4, 9, 14]  # FK's start
    assert SMCSearch(resample_every=1, start=0.0, end=1.0).scored_steps(5) == [1, 2, 3, 4]
    assert SMCSearch(resample_every=0).scored_steps(20) == [] == SMCSearch(lam=0.0).scored_steps(20)


@pytest.mark.parametrize("options", [{"resample_every": 0}, {"lam": 0.0}, {"ess_threshold": 0.0}])
def test_without_resampling_it_is_best_of_n(options):
    r = smc(budget=80, **options)
    ref = noisesearch.search(GaussianWorld(), "p", strategy="random", verifier=colour_verifier(), budget=80, steps=10)
    assert [c.seed for c in r.candidates] == [c.seed for c in ref.candidates]
    assert torch.allclose(r.scores, ref.scores, atol=1e-6)
    assert all(c.info["root"] == c.seed for c in r.candidates)


def test_steering_lifts_the_particles_over_best_of_n():
    steered, plain = [], []
    for i in range(4):
        a = smc(prompt=f"p{i}", seed=100 * i, lam=100.0, resample_every=2)
        b = smc(prompt=f"p{i}", seed=100 * i, resample_every=0)
        assert any("resampled" in h.note for h in a.history)
        steered.append((a.scores.mean().item(), a.best.score))
        plain.append((b.scores.mean().item(), b.best.score))
    assert sum(s[0] for s in steered) > sum(p[0] for p in plain)  # the population moves towards the optimum
    assert sum(s[1] for s in steered) > sum(p[1] for p in plain)  # and so does its best particle


def test_copies_diverge_only_with_churn():
    exact = smc(lam=100.0, resample_every=2, churn=0.0)
    roots = {c.info["root"] for c in exact.candidates}
    assert len(roots) < len(exact.candidates)  # resampling duplicated lineages
    assert len({round(float(s), 6) for s in exact.scores}) == len(roots)  # ODE copies stay identical
    churned = smc(lam=100.0, resample_every=2)
    assert len({round(float(s), 6) for s in churned.scores}) > len({c.info["root"] for c in churned.candidates})


def test_particles_are_chunked_into_batches_when_asked():
    r = smc(budget=100, particles=4, lam=100.0, resample_every=2)
    assert [c.round for c in r.candidates] == [0] * 4 + [1] * 4 + [2] * 2
    assert r.accounting.nfe == 100


def test_standardized_rewards_make_the_potential_scale_free():
    """Multiplying the verifier's scores by 1000 changes nothing with standardised rewards: same
    resampling, same particles; with FK's raw rewards it does."""
    from strategy_world import colour_score

    from noisesearch.strategies.smc import standardized
    from noisesearch.verifiers.base import CallableVerifier

    z = standardized(torch.tensor([1.0, 2.0, 3.0, -math.inf], dtype=torch.float64))
    assert torch.allclose(z[:3], torch.tensor([-1.2247, 0.0, 1.2247], dtype=torch.float64), atol=1e-4)
    assert z[3] == -math.inf
    assert torch.equal(standardized(torch.ones(3)), torch.zeros(3))

    def run(scale, **options):
        v = CallableVerifier(lambda im, p: scale * colour_score(im, p), name=f"colour x{scale}")
        return noisesearch.search(
            GaussianWorld(),
            "p",
            strategy="smc",
            strategy_options={"resample_every": 2, **options},
            verifier=v,
            budget=160,
            steps=10,
            seed=3,
        )

    a, b = run(1.0), run(1000.0)
    assert [c.info for c in a.candidates] == [c.info for c in b.candidates]
    assert [h.note for h in a.history] == [h.note for h in b.history]
    raw_a, raw_b = run(1.0, standardize=False, lam=10.0), run(1000.0, standardize=False, lam=10.0)
    assert [h.note for h in raw_a.history] != [h.note for h in raw_b.history]


def test_lookahead_scored_particles_stay_within_the_budget():
    stub_budget = 97
    r = smc(budget=stub_budget, lookahead=2, resample_every=2)
    per = SMCSearch(lookahead=2, resample_every=2).particle_cost(10)
    # scored at steps 4, 6, 8: lookaheads of 3, 3 and 2 NFEs (from step 8 only step 9 is left to jump to)
    assert SMCSearch(resample_every=2).scored_steps(10) == [4, 6, 8] and per == 10 + 3 + 3 + 2
    assert r.accounting.nfe <= stub_budget and stub_budget - r.accounting.nfe < 10
    assert any("ESS" in h.note for h in r.history)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"particles": -1},
        {"lookahead": -1},
        {"potential": "mean"},
        {"lam": -1.0},
        {"ess_threshold": 1.5},
        {"start": 0.9, "end": 0.1},
        {"resampler": "stratified"},
        {"churn": 2.0},
    ],
)
def test_bad_options_are_refused(kwargs):
    with pytest.raises(ValueError):
        SMCSearch(**kwargs)
