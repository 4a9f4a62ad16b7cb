"""One request type: cheap checks before any weights load, family defaults filled in one place."""

from __future__ import annotations

import pytest

import noisesearch
from noisesearch.request import Sampling, SearchRequest, resolve
from noisesearch.testing import StubAdapter


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (SearchRequest(sampling=Sampling(steps=0)), "steps must be a positive integer"),
        (SearchRequest(sampling=Sampling(guidance=float("inf"))), "guidance must be a finite number"),
        (SearchRequest(sampling=Sampling(scheduler="heun")), "unknown scheduler 'heun'"),
        (SearchRequest(sampling=Sampling(height=7)), "height must be an integer from 8"),
        (SearchRequest(sampling=Sampling(max_batch=0)), "max_batch must be a positive integer"),
        (SearchRequest(seed=-1), "seed must be an integer >= 0"),
        (SearchRequest(model=" "), "model is empty"),
        (SearchRequest(strategy="beam"), "unknown strategy 'beam'"),
        (SearchRequest(strategy="random", strategy_options={"zo_neighbors": 2}), "has no option"),
        (SearchRequest(verifier="clipscor"), "unknown verifier 'clipscor'"),
        (SearchRequest(budget=10, candidates=2), "either a budget in NFEs or a number of candidates"),
        (SearchRequest(candidates=0), "candidates must be a positive integer"),
        (SearchRequest(prior="golden"), "unknown prior 'golden'"),
        (SearchRequest(npnet_checkpoint="x.safetensors"), "needs prior 'npnet'"),
    ],
)
def test_check_names_the_bad_setting(request_, message):
    with pytest.raises(ValueError, match=message):
        request_.check()


def test_bad_requests_fail_before_the_model_loads(monkeypatch):
    import noisesearch.models as models

    def refuse(*args, **kwargs):
        raise AssertionError("the model must not load for a request that fails its checks")

    monkeypatch.setattr(models, "load_model", refuse)
    with pytest.raises(ValueError, match="unknown verifier"):
        resolve(SearchRequest(model="toyworld", verifier="nope"))


def test_family_defaults_fill_only_what_the_user_left_out():
    adapter = StubAdapter()  # its family defaults: 10 steps, guidance 3.0
    resolved = resolve(
        SearchRequest(verifier=lambda im, p: im.mean(dim=(1, 2, 3)), sampling=Sampling(guidance=0.0)), adapter
    )
    assert resolved.core_config.steps == 10
    assert resolved.core_config.guidance == 0.0  # an explicit 0 is kept, not replaced by the default
    assert resolved.nfe_budget == 16 * 10


def test_budget_below_one_sample_is_refused():
    with pytest.raises(ValueError, match="smaller than one full sample"):
        SearchRequest(budget=5).nfe_budget(10)


def test_api_search_and_a_resolved_request_give_the_same_result():
    score = lambda images, prompts: images[:, 0].mean(dim=(1, 2))  # noqa: E731
    from noisesearch.api import run_resolved

    direct = noisesearch.search(StubAdapter(), "a red circle", verifier=score, candidates=3, seed=5)
    resolved = resolve(SearchRequest(verifier=score, candidates=3, seed=5), StubAdapter())
    again = run_resolved(resolved, "a red circle")
    assert [c.seed for c in direct.candidates] == [c.seed for c in again.candidates] == [5, 6, 7]
    assert [c.score for c in direct.candidates] == [c.score for c in again.candidates]
