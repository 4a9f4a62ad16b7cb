"""Engine contracts with the counting stub model: budget, determinism, accounting, results."""

from __future__ import annotations

import math

import pytest
import torch

import noisesearch
from noisesearch.testing import StubAdapter


def red_score(images, prompts):
    """Mean red minus mean of other channels: a cheap, deterministic verifier."""
    return images[:, 0].mean(dim=(1, 2)) - images[:, 1:].mean(dim=(1, 2, 3))


@pytest.mark.parametrize("budget", [10, 35, 99, 100])
def test_random_search_never_exceeds_budget(budget):
    stub = StubAdapter()
    r = noisesearch.search(stub, "p", verifier=red_score, budget=budget, steps=10, guidance=3.0, max_batch=4)
    assert r.accounting.nfe == (budget // 10) * 10 <= budget
    assert len(r.candidates) == budget // 10
    assert stub.rows == r.accounting.network_rows == 2 * r.accounting.nfe
    assert r.accounting.verifier_calls == len(r.candidates)


def test_random_search_is_best_of_n_and_deterministic():
    a = noisesearch.search(StubAdapter(), "p", verifier=red_score, candidates=12, steps=5, seed=7)
    b = noisesearch.search(StubAdapter(), "p", verifier=red_score, candidates=12, steps=5, seed=7, max_batch=5)
    assert [c.seed for c in a.candidates] == list(range(7, 19))
    assert a.best.score == max(c.score for c in a.candidates)
    assert a.best.seed == b.best.seed
    assert torch.allclose(a.scores, b.scores, atol=1e-6)
    assert torch.equal(a.best.image, b.best.image)


def test_result_serialises_with_seeds_scores_and_accounting():
    r = noisesearch.search(StubAdapter(), "p", verifier=red_score, candidates=3, steps=4)
    d = r.to_dict()
    assert [c["seed"] for c in d["candidates"]] == [0, 1, 2]
    assert d["accounting"]["nfe"] == 12 and d["budget_nfe"] == 12
    assert d["best"]["seed"] == r.best.seed
    assert r.best_images(2).shape == (2, 3, 32, 32)


def test_non_finite_scores_are_excluded_and_counted():
    def flaky(images, prompts):
        s = red_score(images, prompts)
        s[0] = float("nan")
        return s

    r = noisesearch.search(StubAdapter(), "p", verifier=flaky, candidates=4, steps=3, max_batch=8)
    assert r.non_finite == 1
    assert r.best.seed != 0 and math.isfinite(r.best.score)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"budget": 0}, "positive"),
        ({"budget": 5}, "smaller than one full sample"),
        ({"candidates": 0}, "positive"),
        ({"budget": 20, "candidates": 2}, "either"),
        ({"strategy": "nope"}, "unknown strategy"),
        ({"verifier": "nope"}, "unknown verifier"),
        ({"scheduler": "heun"}, "unknown scheduler"),
    ],
)
def test_bad_search_arguments(kwargs, match):
    args = {"verifier": red_score, "steps": 10, **kwargs}
    with pytest.raises(ValueError, match=match):
        noisesearch.search(StubAdapter(), "p", **args)


def test_empty_prompt_is_refused():
    with pytest.raises(ValueError, match="empty"):
        noisesearch.search(StubAdapter(), "   ", verifier=red_score)


def test_bad_verifier_output_shape_is_reported():
    with pytest.raises(ValueError, match="shape"):
        noisesearch.search(StubAdapter(), "p", verifier=lambda im, p: torch.zeros(3, 2), candidates=2, steps=2)
