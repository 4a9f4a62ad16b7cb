"""Zero-order search: neighbour geometry, pivot bookkeeping, rejection of stalled rounds."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from strategy_world import GaussianWorld, colour_verifier

import noisesearch
from noisesearch.core.seeds import gaussian_like
from noisesearch.strategies.zero_order import ZeroOrderSearch, neighbours
from noisesearch.verifiers.base import CallableVerifier

#: the community implementation's settings (tt-scale-flux): neighbours at cosine 0.95, no fresh noises per round
COMMUNITY = {"cosine": 0.95, "fresh": 0}


def search(budget=100, verifier=None, **options):
    return noisesearch.search(
        GaussianWorld(),
        "p",
        strategy="zero-order",
        strategy_options=options,
        verifier=verifier or colour_verifier(),
        budget=budget,
        steps=10,
        guidance=3.0,
        seed=3,
    )


@pytest.mark.parametrize("cosine", [0.0, 0.5, 0.95, 0.999])
def test_neighbours_have_cosine_lambda_and_the_pivot_norm(cosine):
    pivot = gaussian_like([1], (4, 8, 8), "cpu")[0]
    dirs = gaussian_like([10, 11, 12], (4, 8, 8), "cpu")
    nb = neighbours(pivot, dirs, cosine)
    cos = F.cosine_similarity(nb.flatten(1), pivot.flatten()[None], dim=1)
    assert torch.allclose(cos, torch.full((3,), cosine), atol=1e-5)
    assert torch.allclose(nb.flatten(1).norm(dim=1), pivot.norm().expand(3), rtol=1e-5)
    # each neighbour depends only on (pivot, its own direction): batch-independent
    assert torch.equal(neighbours(pivot, dirs[1:2], cosine)[0], nb[1])


def test_pivot_is_scored_once_and_neighbours_derive_from_it():
    r = search(budget=100, **COMMUNITY)
    assert r.accounting.verifier_calls == len(r.candidates) == 10  # no pivot scored twice
    by_seed = {c.seed: c for c in r.candidates}
    assert r.candidates[0].info == {"role": "pivot"}
    for c in r.candidates:
        if c.info["role"] == "neighbor":
            parent = by_seed[c.info["parent"]]
            assert parent.round < c.round or parent.info["role"] == "pivot"
            cos = F.cosine_similarity(c.noise.flatten(), parent.noise.flatten(), dim=0)
            assert abs(float(cos) - 0.95) < 1e-5
            assert abs(float(c.noise.norm() - parent.noise.norm())) < 1e-3


def test_the_winner_becomes_the_pivot():
    r = search(budget=100, restart=False, **COMMUNITY)
    rounds: dict[int, list] = {}
    for c in r.candidates:
        rounds.setdefault(c.round, []).append(c)
    pivot = rounds[0][0]
    for k in sorted(rounds)[:-1]:
        nbs = [c for c in rounds[k] if c.info["role"] == "neighbor"]
        assert all(c.info["parent"] == pivot.seed for c in nbs)
        best = max(nbs, key=lambda c: c.score)
        if best.score > pivot.score:
            pivot = best


def test_stalled_rounds_are_rejected_with_a_fresh_base_noise():
    flat = CallableVerifier(lambda im, p: torch.zeros(im.shape[0]), name="flat")
    roles = [c.info["role"] for c in search(budget=90, verifier=flat, **COMMUNITY).candidates]
    assert roles == ["pivot", "neighbor", "neighbor"] * 3  # no neighbour ever beats the pivot
    kept = search(budget=90, verifier=flat, restart=False, **COMMUNITY).candidates
    assert [c.info["role"] for c in kept].count("pivot") == 1
    assert {c.info["parent"] for c in kept[1:]} == {kept[0].seed}


def test_the_pivot_noise_comes_through_the_prior():
    calls = []

    def prior(noise, prompts):
        calls.append(noise.shape[0])
        return noise * 0.5

    r = noisesearch.search(
        GaussianWorld(),
        "p",
        strategy="zero-order",
        strategy_options=COMMUNITY,
        verifier=colour_verifier(),
        budget=50,
        steps=10,
        prior=prior,
    )
    pivots = [c for c in r.candidates if c.info["role"] == "pivot"]
    assert calls == [1] * len(pivots) and r.accounting.prior_calls == len(pivots)  # neighbours skip the prior
    pivot, nb = r.candidates[0], r.candidates[1]
    assert abs(float(nb.noise.norm() - pivot.noise.norm())) < 1e-3  # neighbours keep the prior's norm


def test_fresh_noises_compete_with_the_neighbours_for_the_pivot():
    """Defaults: neighbours at cosine 0.8 and one fresh base noise per round; whichever of them scores
    best (above the pivot) is the next round's pivot, the neighbours' parent."""
    r = search(budget=150)
    rounds: dict[int, list] = {}
    for c in r.candidates:
        rounds.setdefault(c.round, []).append(c)
    assert [c.info["role"] for c in rounds[0]] == ["pivot", "neighbor", "neighbor", "fresh"]
    by_seed = {c.seed: c for c in r.candidates}
    nb = rounds[0][1]
    cos = F.cosine_similarity(nb.noise.flatten(), rounds[0][0].noise.flatten(), dim=0)
    assert abs(float(cos) - 0.8) < 1e-5
    pivot = rounds[0][0]
    for k in sorted(rounds)[:-1]:
        challengers = [c for c in rounds[k] if c.info["role"] in ("neighbor", "fresh")]
        best = max(challengers, key=lambda c: (c.score, -c.seed))
        nxt = [c for c in rounds[k + 1] if c.info["role"] == "neighbor"]
        if best.score > pivot.score:
            pivot = best
            assert nxt and all(c.info["parent"] == best.seed for c in nxt)
        else:  # rejected: the next round starts from a fresh base noise
            pivot = rounds[k + 1][0]
            assert pivot.info["role"] == "pivot"
    assert any(c.info["role"] == "fresh" for c in r.candidates) and by_seed


@pytest.mark.parametrize("kwargs", [{"neighbors": 0}, {"cosine": 1.0}, {"cosine": -0.1}, {"fresh": -1}])
def test_bad_options_are_refused(kwargs):
    with pytest.raises(ValueError):
        ZeroOrderSearch(**kwargs)
