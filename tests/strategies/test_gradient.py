"""Gradient noise optimisation: refusal, improvement, accounting, the χ regulariser, reproducibility."""

from __future__ import annotations

import pytest
import torch
from strategy_world import GaussianWorld, colour_score, colour_verifier

import noisesearch
from noisesearch.core import CoreConfig, DenoisingCore
from noisesearch.strategies.gradient import GradientSearch, chi_norm_penalty
from noisesearch.testing import StubAdapter


def optimise(budget=80, model=None, seed=0, prompt="p", **options):
    return noisesearch.search(
        model or GaussianWorld(),
        prompt,
        strategy="gradient",
        strategy_options=options,
        verifier=colour_verifier(),
        budget=budget,
        steps=10,
        guidance=3.0,
        seed=seed,
    )


def test_non_differentiable_verifiers_are_refused():
    with pytest.raises(ValueError, match="differentiable verifier"):
        noisesearch.search(StubAdapter(), "p", strategy="gradient", verifier=colour_score, budget=20, steps=10)


def test_gradient_ascent_improves_the_score():
    for i in range(3):
        one = optimise(budget=10, seed=i, prompt=f"p{i}").best
        many = optimise(budget=80, seed=i, prompt=f"p{i}").best
        assert one.seed == many.seed  # the same initial noise, optimised
        assert many.score > one.score + 0.01
        assert many.info["proxy_score_best"] > many.info["proxy_score_first"]
        assert many.info["optimised"] and not one.info["optimised"]


def test_forward_nfes_are_counted_and_the_budget_is_planned():
    stub = GaussianWorld()
    r = optimise(budget=50, model=stub, opt_steps=4)
    # (50 - one final 10-step sample) // 4 = 10 iterates of 4 forward NFEs, then the final sample
    assert r.candidates[0].info["iterates"] == 10
    assert r.accounting.nfe == 10 * 4 + 10 == 50
    assert stub.rows == r.accounting.network_rows == 2 * r.accounting.nfe
    assert r.accounting.verifier_calls == 10 + 1


def test_exact_mode_keeps_the_sampled_image_and_its_noise():
    stub = GaussianWorld()
    r = optimise(budget=60, model=stub, opt_steps=0)
    c = r.best
    assert c.info["iterates"] == 6 and r.accounting.nfe == 60  # the final sample was free
    core = DenoisingCore(GaussianWorld(), CoreConfig(steps=10, guidance=3.0))
    image = core.decode(core.run(core.start(c.noise[None], ["p"], [c.seed])).x)[0]
    assert (image * 255 - c.image.float()).abs().max() <= 1.0  # the recorded noise reproduces the image


def test_candidates_are_optimised_independently():
    pair = optimise(budget=80, candidates=2, opt_steps=4)
    alone = optimise(budget=40, candidates=1, opt_steps=4)
    assert pair.candidates[0].info["iterates"] == alone.candidates[0].info["iterates"]
    assert pair.candidates[0].seed == alone.candidates[0].seed
    assert torch.allclose(pair.candidates[0].noise, alone.candidates[0].noise, atol=1e-5)


def test_chi_penalty_is_smallest_on_the_gaussian_shell():
    d = 256
    radii = torch.tensor([8.0, (d - 1) ** 0.5, 24.0])
    z = torch.nn.functional.normalize(
        torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(0)).flatten(1), dim=1
    )
    z = (z * radii[:, None]).view(3, 4, 8, 8).requires_grad_(True)
    pen = chi_norm_penalty(z)
    assert pen[1] < pen[0] and pen[1] < pen[2]
    pen.sum().backward()
    assert z.grad[1].abs().max() < 1e-4  # stationary at ||z||^2 = d - 1


def test_adam_runs_too():
    r = optimise(budget=40, optimizer="adam", lr=0.05)
    assert r.best.info["iterates"] == 7


@pytest.mark.parametrize(
    "kwargs",
    [
        {"candidates": 0},
        {"iterations": 0},
        {"optimizer": "lbfgs"},
        {"lr": 0.0},
        {"momentum": 1.0},
        {"grad_clip": -1.0},
        {"opt_steps": -1},
    ],
)
def test_bad_options_are_refused(kwargs):
    with pytest.raises(ValueError):
        GradientSearch(**kwargs)
