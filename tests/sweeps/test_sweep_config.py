"""SweepConfig: TOML loading, validation messages that name the key, round trip, plan and keys."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from sweep_support import write_stub_config

from noisesearch.sweeps import StrategySpec, SweepConfig, plan, row_key, shard

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sweep_toyworld.toml"


def base(**overrides: object) -> dict:
    data: dict = {"prompts": "toyworld-heldout", "budgets": [20, 40], "search_verifiers": ["test-red"]}
    data.update(overrides)
    return data


def test_stub_config_loads_and_resolves_the_prompts_path(tmp_path: Path) -> None:
    cfg = SweepConfig.from_toml(write_stub_config(tmp_path))
    assert cfg.prompts == str((tmp_path / "prompts.txt").resolve())
    assert cfg.budgets == (10, 30) and cfg.models == ("stub",) and cfg.top_k == 2
    assert cfg.strategies == (StrategySpec("random"), StrategySpec("random", (("round_size", 1),), "random-r1"))


def test_round_trip_through_plain_data() -> None:
    cfg = SweepConfig.from_dict(
        base(
            strategies=["random", {"name": "random", "round_size": 2}],
            eval_verifiers=["ground_truth"],
            guidance=3,
            steps=10,
        )
    )
    again = SweepConfig.from_dict(cfg.to_dict())
    assert again == cfg and isinstance(again.guidance, float)


@pytest.mark.parametrize(
    "overrides,needle",
    [
        ({"budget": [10]}, "unknown sweep config key 'budget' (did you mean 'budgets'?)"),
        ({"budgets": [0]}, "'budgets' must be a non-empty list of positive integers (NFEs), got (0,)"),
        ({"budgets": ["80"]}, "'budgets' must be a non-empty list of positive integers"),
        ({"budgets": [True]}, "'budgets' must be a non-empty list of positive integers"),
        ({"budgets": []}, "'budgets' must be a non-empty list"),
        ({"budgets": [20, 20]}, "'budgets' lists 20 more than once"),
        ({"seeds": [-1]}, "'seeds' must be a non-empty list of integers >= 0"),
        ({"search_verifiers": []}, "'search_verifiers' must be a non-empty list"),
        ({"models": [""]}, "'models' must be a list of non-empty strings"),
        ({"top_k": 0}, "'top_k' must be a positive integer, got 0"),
        ({"prompt_limit": 0}, "'prompt_limit' must be a positive integer (or left out), got 0"),
        ({"guidance": -1.0}, "'guidance' must be a finite number >= 0"),
        # the same checks as a single run's sampling settings (Sampling.check)
        ({"guidance": math.inf}, "'guidance' must be a finite number >= 0, got inf"),
        ({"steps": 10**6}, "'steps' must be a positive integer (at most 10000), got 1000000"),
        ({"steps": True}, "'steps' must be a positive integer"),
        ({"height": 7}, "'height' must be an integer from 8 to 16384 pixels, got 7"),
        ({"dtype": "fp8"}, "'dtype' must be one of auto, fp32"),
        ({"prompts": ""}, "'prompts' must be a prompts file or a built-in set (toyworld-heldout, toyworld-train)"),
        ({"strategies": [{"round_size": 1}]}, "entry {'round_size': 1} has no 'name'"),
        ({"strategies": [3]}, "takes names or tables with a 'name'"),
        ({"strategies": ["random", "random"]}, "lists 'random' twice"),
    ],
)
def test_bad_values_name_the_key(overrides: dict, needle: str) -> None:
    with pytest.raises(ValueError) as err:
        SweepConfig.from_dict(base(**overrides))
    assert needle in str(err.value)


def test_missing_key_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="missing required key 'budgets'"):
        SweepConfig.from_dict({"prompts": "toyworld-heldout", "search_verifiers": ["x"]})
    bad = tmp_path / "bad.toml"
    bad.write_text("budgets = [10,\n")
    with pytest.raises(ValueError, match="bad.toml' is not valid TOML"):
        SweepConfig.from_toml(bad)
    with pytest.raises(ValueError, match="cannot read sweep config"):
        SweepConfig.from_toml(tmp_path / "missing.toml")


@pytest.mark.parametrize(
    "overrides,needle",
    [
        ({"search_verifiers": ["nope"]}, "'search_verifiers': unknown verifier 'nope'; choose one of: "),
        ({"eval_verifiers": ["nope"]}, "'eval_verifiers': unknown verifier 'nope'; choose one of: "),
        ({"strategies": ["nope"]}, "unknown strategy 'nope'; choose one of: "),
        ({"strategies": [{"name": "random", "rounds": 2}]}, "strategy 'random' has no option rounds"),
        ({"scheduler": "heun"}, "'scheduler': unknown scheduler 'heun'; choose one of: ddim"),
        ({"imports": ["no_such_module_xyz"]}, "'imports': cannot import 'no_such_module_xyz'"),
    ],
)
def test_registry_names_are_checked_with_choices(overrides: dict, needle: str) -> None:
    cfg = SweepConfig.from_dict(base(**{"imports": ["sweep_support"], **overrides}))
    with pytest.raises(ValueError) as err:
        cfg.check_names()
    assert needle in str(err.value)
    if "unknown verifier" in needle:
        assert "test-red" in str(err.value)
    if "eval_verifiers" in needle:
        assert "ground_truth" in str(err.value)


def test_keys_are_stable_and_follow_the_configuration(tmp_path: Path) -> None:
    # a golden value: a key must not change between versions unless KEY_VERSION is bumped
    assert row_key({"prompt": "a red circle", "budget_nfe": 10}) == "0e6e5da5919f0f6db29069088ce7afc2"
    assert row_key({"budget_nfe": 10, "prompt": "a red circle"}) == row_key(
        {"prompt": "a red circle", "budget_nfe": 10}
    )
    cfg = SweepConfig.from_toml(write_stub_config(tmp_path))
    items = plan(cfg)
    assert len(items) == 4 * 2 * 2 and len({it.key for it in items}) == len(items)
    assert [it.key for it in plan(cfg)] == [it.key for it in items]
    # display-only and speed-only settings do not change keys; anything that changes the row does
    same = SweepConfig.from_dict({**cfg.to_dict(), "max_batch": 3, "device": "cuda", "name": "x"})
    assert [it.key for it in plan(same)] == [it.key for it in items]
    for change in ({"steps": 5}, {"eval_verifiers": []}, {"top_k": 1}, {"guidance": 1.0}):
        other = SweepConfig.from_dict({**cfg.to_dict(), **change})
        assert not {it.key for it in plan(other)} & {it.key for it in items}, change


def test_shards_partition_the_plan(tmp_path: Path) -> None:
    items = plan(SweepConfig.from_toml(write_stub_config(tmp_path)))
    parts = [shard(items, r, 3) for r in range(3)]
    assert sorted(it.key for p in parts for it in p) == sorted(it.key for it in items)
    assert [len(p) for p in parts] == [6, 5, 5]
    # round-robin over a prompt-innermost order: each process gets both budgets
    assert all({it.budget for it in p} == {10, 30} for p in parts)


def test_example_config_is_valid() -> None:
    cfg = SweepConfig.from_toml(EXAMPLE)
    assert cfg.prompts == "toyworld-heldout" and cfg.prompt_limit == 20
    assert len(cfg.strategies) == 2 and len(cfg.budgets) == 2 and "ground_truth" in cfg.eval_verifiers
    from noisesearch.request import ensure_registrations
    from noisesearch.strategies import available_strategies

    ensure_registrations()
    missing = [s.name for s in cfg.strategies if s.name not in available_strategies()]
    if missing:
        pytest.skip(f"strategy {missing} of the example is not registered yet")
    cfg.check_names()
    assert len(plan(cfg)) == 20 * 2 * 2 * len(cfg.seeds)
