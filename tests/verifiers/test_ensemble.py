"""Verifier ensembles against hand computation; both follow the Verifier protocol."""

from __future__ import annotations

import pytest
import torch

import noisesearch
from noisesearch.testing import StubAdapter
from noisesearch.verifiers.base import CallableVerifier, Verifier, load_verifier, register_verifier
from noisesearch.verifiers.ensemble import RankEnsemble, ZScoreEnsemble, make_ensemble

A = torch.tensor([3.0, 1.0, 2.0, 2.0])
B = torch.tensor([10.0, 40.0, 30.0, 20.0])


def table(values, name, differentiable=False):
    """A verifier returning fixed scores (images are ignored)."""
    return CallableVerifier(
        lambda images, prompts: values[: images.shape[0]].clone(), name=name, differentiable=differentiable
    )


IMAGES = torch.zeros(4, 3, 8, 8)
PROMPTS = ["p"] * 4


def test_rank_mean_by_hand():
    ens = RankEnsemble([table(A, "a"), table(B, "b")])
    assert isinstance(ens, Verifier) and ens.name == "rank(a+b)" and not ens.differentiable
    # ranks among the other 3 images, ties half: A -> [3, 0, 1.5, 1.5] / 3; B -> [0, 3, 2, 1] / 3
    expected = (torch.tensor([3.0, 0.0, 1.5, 1.5]) + torch.tensor([0.0, 3.0, 2.0, 1.0])) / 3 / 2
    assert torch.allclose(ens.score(IMAGES, PROMPTS), expected)
    assert torch.equal(RankEnsemble([table(A, "a")]).score(IMAGES[:1], PROMPTS[:1]), torch.tensor([0.5]))


def test_rank_against_a_reference_is_batch_independent():
    ens = RankEnsemble(
        [table(A, "a"), table(B, "b")], reference=[torch.tensor([0.0, 2.0, 4.0]), torch.tensor([25.0, 35.0])]
    )
    full = ens.score(IMAGES, PROMPTS)
    # A: 3 beats {0, 2} of {0, 2, 4}; B: 10 beats none of {25, 35}
    assert full[0] == pytest.approx((2 / 3 + 0) / 2)
    assert full[2] == pytest.approx((1.5 / 3 + 0.5) / 2)  # A = 2 ties with the reference 2
    assert torch.equal(ens.score(IMAGES[:1], PROMPTS[:1]), full[:1])


def test_zscore_by_hand():
    ens = ZScoreEnsemble([table(A, "a", True), table(B, "b", True)], weights=[2.0, 1.0])
    za = (A - A.mean()) / A.std(unbiased=False)
    zb = (B - B.mean()) / B.std(unbiased=False)
    assert torch.allclose(ens.score(IMAGES, PROMPTS), 2 * za + zb, atol=1e-6)
    assert ens.differentiable and not ZScoreEnsemble([table(A, "a", True), table(B, "b")]).differentiable
    equal = ZScoreEnsemble([table(A, "a"), table(B, "b")])
    assert torch.allclose(equal.score(IMAGES, PROMPTS), (za + zb) / 2, atol=1e-6)


def test_calibration_fixes_the_statistics():
    ens = ZScoreEnsemble([table(A, "a"), table(B, "b")]).calibrate(IMAGES, PROMPTS)
    assert torch.allclose(ens.score(IMAGES[:2], PROMPTS[:2]), ens.score(IMAGES, PROMPTS)[:2])


def test_zscore_is_differentiable_with_respect_to_the_images():
    red = CallableVerifier(lambda im, p: im[:, 0].mean(dim=(1, 2)), name="red", differentiable=True)
    green = CallableVerifier(lambda im, p: im[:, 1].mean(dim=(1, 2)), name="green", differentiable=True)
    images = torch.rand(3, 3, 4, 4, requires_grad=True)
    ZScoreEnsemble([red, green]).score(images, ["p"] * 3).sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0


def test_ensembles_are_built_from_registered_names_and_drive_a_search():
    for name, fn in (
        ("test-red", lambda im, p: im[:, 0].mean(dim=(1, 2))),
        ("test-blue", lambda im, p: im[:, 2].mean(dim=(1, 2))),
    ):
        try:
            register_verifier(name)(lambda device="cpu", fn=fn, name=name: CallableVerifier(fn, name=name))
        except ValueError:  # already registered by an earlier run in this process
            pass
    ens = load_verifier("rank-ensemble", verifiers="test-red,test-blue")
    assert ens.name == "rank(test-red+test-blue)"
    assert make_ensemble("zscore", ["test-red", "test-blue"], weights=[1, 3]).weights.tolist() == [1.0, 3.0]
    r = noisesearch.search(StubAdapter(), "p", verifier=ens, candidates=6, steps=3)
    assert r.best.score == max(c.score for c in r.candidates)
    with pytest.raises(ValueError, match="unweighted"):
        make_ensemble("rank", ["test-red"], weights=[1.0])
    with pytest.raises(ValueError, match="one weight per verifier"):
        ZScoreEnsemble([table(A, "a")], weights=[1.0, 2.0])
