"""Sweep configs with verifier options (spec text or TOML tables) and strategy entries with a noise
prior (NPNet): canonical row keys, validation before anything is written, and real runs."""

from __future__ import annotations

import json

import pytest
import torch
from sweep_support import write_stub_config
from typer.testing import CliRunner

import noisesearch
from noisesearch.cli import app
from noisesearch.sweeps import KEY_VERSION, StrategySpec, SweepConfig, plan, read_jsonl, row_key
from noisesearch.verifiers import CallableVerifier, register_verifier
from noisesearch.verifiers.base import _DESCRIPTIONS, _REGISTRY, _VALIDATORS


@pytest.fixture(autouse=True)
def scaled_red():
    """'test-scaled(scale=s)': s times the mean red channel; scale must not be 0."""

    def validate(scale: float = 1.0) -> None:
        if scale == 0:
            raise ValueError("scale must not be 0")

    @register_verifier("test-scaled", "tests: scale x mean red", validate=validate)
    def factory(device: str | torch.device = "cpu", scale: float = 1.0) -> CallableVerifier:
        return CallableVerifier(lambda im, p: scale * im[:, 0].mean(dim=(1, 2)), name="test-scaled")

    yield
    for table in (_REGISTRY, _DESCRIPTIONS, _VALIDATORS):
        table.pop("test-scaled", None)


def base(**overrides: object) -> dict:
    data: dict = {"prompts": "toyworld-heldout", "prompt_limit": 2, "budgets": [20], "search_verifiers": ["toyclip"]}
    data.update(overrides)
    return data


# ----------------------------------------------------------------------------------- verifier specs


def test_verifier_entries_are_spec_text_or_tables_kept_as_canonical_text():
    cfg = SweepConfig.from_dict(
        base(
            search_verifiers=[
                "zscore-ensemble(weights=[1,2], verifiers=[toyclip, toyrelation])",
                {"name": "test-scaled", "scale": 2.0},
                "rank-ensemble(verifiers=[toyclip,test-scaled(scale=3)])",
            ],
            eval_verifiers=[
                "ground_truth",
                {"name": "rank-ensemble", "verifiers": ["toyclip", {"name": "test-scaled", "scale": -1}]},
            ],
        )
    )
    assert cfg.search_verifiers == (
        "zscore-ensemble(verifiers=[toyclip,toyrelation], weights=[1,2])",
        "test-scaled(scale=2.0)",
        "rank-ensemble(verifiers=[toyclip,test-scaled(scale=3)])",
    )
    assert cfg.eval_verifiers == ("ground_truth", "rank-ensemble(verifiers=[toyclip,test-scaled(scale=-1)])")
    cfg.check_names()
    assert SweepConfig.from_dict(cfg.to_dict()) == cfg
    # each spec is its own row: the keys differ by the verifier's options
    items = plan(cfg)
    assert len(items) == 3 * 2 and len({it.key for it in items}) == 6
    assert {it.search_verifier for it in items} == set(cfg.search_verifiers)


def test_the_same_spec_written_twice_is_a_duplicate():
    with pytest.raises(ValueError, match="'search_verifiers' lists test-scaled\\(scale=2\\) more than once"):
        SweepConfig.from_dict(base(search_verifiers=["test-scaled(scale=2)", {"name": "test-scaled", "scale": 2}]))


def test_plain_names_keep_their_row_keys():
    """A name without options is its own canonical text, so sweeps written before specs resume."""
    cfg = SweepConfig.from_dict(base(eval_verifiers=["toyrelation", "ground_truth"]))
    item = plan(cfg)[0]
    identity = {
        "prompt": item.prompt.text,
        "model": "toyworld",
        "strategy": {"name": "random", "options": {}},
        "search_verifier": "toyclip",
        "budget_nfe": 20,
        "seed": 0,
        "sampling": item.identity["sampling"],
        "eval_verifiers": ["ground_truth", "toyrelation"],
        "top_k": 1,
    }
    assert KEY_VERSION == 1 and item.key == row_key(identity)


@pytest.mark.parametrize(
    "overrides, needle",
    [
        (
            {"search_verifiers": ["clipscore(model=ViT-B-32"]},
            "'search_verifiers': verifier spec 'clipscore(model=ViT-B-32': at character 25",
        ),
        ({"search_verifiers": [{"model": "ViT-B-32"}]}, "'search_verifiers': a verifier table needs a 'name'"),
        (
            {"eval_verifiers": [{"name": "clipscore", "model": ["a", {"x": 1}]}]},
            "'eval_verifiers': a verifier table needs a 'name'",
        ),
    ],
)
def test_bad_spec_syntax_fails_when_the_config_loads(overrides, needle):
    with pytest.raises(ValueError) as err:
        SweepConfig.from_dict(base(**overrides))
    assert needle in str(err.value)


@pytest.mark.parametrize(
    "overrides, needle",
    [
        (
            {"search_verifiers": ["test-scaled(scael=2)"]},
            "'search_verifiers': verifier 'test-scaled' has no option scael; its options are: scale",
        ),
        ({"search_verifiers": ["test-scaled(scale=0)"]}, "'search_verifiers': scale must not be 0"),
        (
            {"eval_verifiers": ["rank-ensemble(verifiers=[toyclip,toyrelation(path=1)])"]},
            "'eval_verifiers': rank-ensemble member 2 (toyrelation): verifier 'toyrelation' option 'path' takes text",
        ),
        (
            {"eval_verifiers": ["zscore-ensemble(verifiers=[toyclip,toyrelation], weights=[1])"]},
            "2 member verifier(s) but 1 weight(s)",
        ),
        ({"eval_verifiers": ["ground_truth(strict=true)"]}, "'ground_truth' takes no options"),
        ({"search_verifiers": ["ground_truth"]}, "'search_verifiers': unknown verifier 'ground_truth'"),
    ],
)
def test_bad_options_fail_the_name_check(overrides, needle):
    cfg = SweepConfig.from_dict(base(**overrides))
    with pytest.raises(ValueError) as err:
        cfg.check_names()
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_a_bad_option_exits_2_before_anything_loads_or_is_written(tmp_path, monkeypatch):
    import noisesearch.models

    monkeypatch.setattr(noisesearch.models, "load_model", lambda *a, **k: pytest.fail("a model was loaded"))
    config = write_stub_config(tmp_path, eval_verifiers=["rank-ensemble(verifiers=[test-red,test-contrast(scale=2)])"])
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["sweep", str(config), "--out", str(out)])
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.exit_code == 2 and len(lines) == 1, res.output
    assert "rank-ensemble member 2 (test-contrast): verifier 'test-contrast' has no option scale" in lines[0]
    assert not out.exists()


def test_a_sweep_runs_verifiers_with_options_as_separate_rows(tmp_path):
    config = write_stub_config(
        tmp_path,
        prompts=["a red circle", "two blue squares"],
        search_verifiers=["test-scaled(scale=1)", "test-scaled(scale=3)"],
        eval_verifiers=["test-scaled(scale=-1)"],
        budgets=[30],
        top_k=1,
    )
    rows = read_jsonl(noisesearch.sweep(config, tmp_path / "out").results_path)
    by = {(r["prompt"], r["strategy"], r["search_verifier"]): r for r in rows}
    assert len(rows) == 2 * 2 * 2 == len(by)
    for (prompt, strategy, verifier), row in by.items():
        if verifier == "test-scaled(scale=3)":
            one = by[(prompt, strategy, "test-scaled(scale=1)")]
            assert row["best_seed"] == one["best_seed"]  # the same ranking, three times the score
            assert row["search_score"] == pytest.approx(3 * one["search_score"], rel=1e-5)
        # held out: scored on the saved 8-bit image, so within rounding of minus the scale-1 score
        scale = 3 if verifier == "test-scaled(scale=3)" else 1
        assert row["eval"] == {"test-scaled(scale=-1)": pytest.approx(-row["search_score"] / scale, abs=1 / 255)}


# ----------------------------------------------------------------------------------- NPNet prior


def test_strategy_entries_take_a_prior_that_is_part_of_the_row_key(tmp_path):
    (tmp_path / "my-npnet.safetensors").write_bytes(b"")
    cfg = SweepConfig.from_dict(
        base(
            strategies=[
                "random",
                {"name": "random", "prior": "npnet"},
                {"name": "random", "prior": "npnet", "npnet_checkpoint": "my-npnet.safetensors"},
                {"name": "zero-order", "neighbors": 2, "prior": "none"},
            ]
        ),
        base_dir=tmp_path,
    )
    plain, golden, own, zo = cfg.strategies
    assert golden == StrategySpec("random", prior="npnet") and golden.display == "random(prior=npnet)"
    assert own.npnet_checkpoint == str((tmp_path / "my-npnet.safetensors").resolve())  # relative to the config
    assert own.display == "random(prior=npnet, npnet_checkpoint=my-npnet.safetensors)"
    assert zo.prior == "none" and zo.display == "zero-order(neighbors=2)"
    cfg.check_names()
    assert SweepConfig.from_dict(cfg.to_dict()) == cfg
    keys = {}
    for it in plan(cfg):
        keys.setdefault(it.strategy, set()).add(it.key)
    assert len(set.union(*keys.values())) == 4 * 2  # every strategy entry has its own rows
    assert plan(cfg)[0].identity["strategy"] == {"name": "random", "options": {}}  # no prior: keys as before
    assert plan(cfg)[2].identity["strategy"]["prior"] == {"name": "npnet", "checkpoint": None}


@pytest.mark.parametrize(
    "entry, models, needle",
    [
        ({"name": "random", "prior": "golden"}, ["toyworld"], "unknown prior 'golden'; choose one of: none, npnet"),
        (
            {"name": "random", "npnet_checkpoint": "x.safetensors"},
            ["toyworld"],
            "'npnet_checkpoint' needs prior = \"npnet\"",
        ),
        (
            {"name": "random", "prior": "npnet", "npnet_checkpoint": 3},
            ["toyworld"],
            "'npnet_checkpoint' must be a file path",
        ),
    ],
)
def test_bad_priors_fail_when_the_config_loads(entry, models, needle):
    with pytest.raises(ValueError) as err:
        SweepConfig.from_dict(base(strategies=[entry], models=models))
    assert needle in str(err.value)


@pytest.mark.parametrize(
    "entry, models, needle",
    [
        (
            {"name": "random", "prior": "npnet", "npnet_checkpoint": "/no/such/npnet.safetensors"},
            ["toyworld"],
            "npnet_checkpoint '/no/such/npnet.safetensors' is not a file",
        ),
        (
            {"name": "random", "prior": "npnet"},
            ["toyworld", "stabilityai/sdxl-turbo"],
            "an NPNet ships only for model 'toyworld'; give npnet_checkpoint = PATH for 'stabilityai/sdxl-turbo'",
        ),
    ],
)
def test_priors_are_checked_before_the_sweep_writes_anything(tmp_path, entry, models, needle):
    cfg = SweepConfig.from_dict(base(strategies=[entry], models=models))
    with pytest.raises(ValueError) as err:
        noisesearch.sweep(cfg, tmp_path / "out")
    assert needle in str(err.value)
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def toyworld():
    from noisesearch.models import load_model

    return load_model("toyworld", device="cpu")


@pytest.mark.slow  # ~40 s of CPU: builds NPNet's Swin-Tiny branch and runs it
def test_a_prior_row_searches_from_golden_noises_at_the_same_nfes(tmp_path, toyworld):
    from noisesearch.npnet.prior import TOYWORLD_NPNET, NPNetPrior, load_cached

    prompt = "a red circle left of a blue square"
    cfg = SweepConfig.from_dict(
        base(
            prompts=str(tmp_path / "p.txt"),
            prompt_limit=None,
            budgets=[4],
            steps=2,
            top_k=1,
            search_verifiers=["toyclip"],
            strategies=["random", {"name": "random", "prior": "npnet"}],
        )
    )
    (tmp_path / "p.txt").write_text(prompt + "\n")
    rows = read_jsonl(noisesearch.sweep(cfg, tmp_path / "out", model_factory=lambda name: toyworld).results_path)
    by = {r["strategy"]: r for r in rows}
    plain, golden = by["random"], by["random(prior=npnet)"]
    assert plain["accounting"]["nfe"] == golden["accounting"]["nfe"] == 4
    assert (plain["accounting"]["prior_calls"], golden["accounting"]["prior_calls"]) == (0, 2)
    assert plain["prior"] is None and golden["prior"] == {"name": "npnet", "checkpoint": None}
    # the prior row equals a direct search that starts from the shipped NPNet's golden noises
    direct = noisesearch.search(
        toyworld, prompt, verifier="toyclip", candidates=2, steps=2, prior=NPNetPrior(load_cached(TOYWORLD_NPNET))
    )
    assert golden["search_score"] == pytest.approx(direct.best.score, abs=1e-6)
    assert golden["best_seed"] == direct.best.seed
    scores = json.dumps([plain["search_score"], golden["search_score"]])
    assert plain["search_score"] != golden["search_score"], scores  # golden noises are other noises
