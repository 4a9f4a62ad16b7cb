"""The prune tuning benchmark (benchmarks/prune_tuning.py): its offline replay must return what the
real `prune` strategy returns on the same prompt and seeds, else the hyperparameters it picks mean
nothing."""

from __future__ import annotations

import math

import pytest

import noisesearch

STEPS = 6
SEEDS = 24


@pytest.fixture(scope="module")
def recorded(benchmark_script):
    bench = benchmark_script("prune_tuning")
    bench.init_worker(1)
    from noisesearch.toyworld.grammar import training_subset

    category, prompt = training_subset(1)[0]
    rec = bench.record_prompt((0, category, prompt, SEEDS, (0, 2, 3), (1, 2), STEPS))
    return bench, rec


@pytest.mark.parametrize(
    ("options", "multiple"),
    [
        ({"at": 0.0, "jumps": 2, "keep": 0.25}, 4),
        ({"at": 2 / STEPS, "jumps": 1, "keep": 0.5}, 8),
        ({"at": 0.0, "jumps": 1, "keep": 0.25, "halving": True, "second_at": 3 / STEPS, "eta": 2}, 8),
        ({"at": 3 / STEPS, "jumps": 2, "keep": 0.25}, 1),  # too small a budget to screen: random search
    ],
)
def test_replay_returns_what_the_strategy_returns(recorded, options, multiple):
    bench, rec = recorded
    budget = multiple * STEPS
    replayed = bench.replay(rec, {"halving": False, **options}, budget, STEPS)
    assert replayed is not None, "the recorded seeds should cover this plan"
    result = noisesearch.search(
        "toyworld",
        rec["prompt"],
        strategy="prune",
        strategy_options=options,
        verifier="toydetect",
        budget=budget,
        seed=bench.BASE_SEED,  # prompt index 0
        steps=STEPS,
        max_batch=7,  # a batch size other than the recording's: candidates do not depend on it
    )
    assert result.accounting.nfe <= budget
    offset, score, _ = replayed
    assert result.best.seed == bench.BASE_SEED + offset
    assert math.isclose(result.best.score, score, rel_tol=1e-4, abs_tol=1e-4)


def test_record_keys_and_lengths(recorded):
    _, rec = recorded
    assert set(rec["look"]) == {f"free{k}" for k in (0, 2, 3)} | {f"{k}/{j}" for k in (0, 2, 3) for j in (1, 2)}
    assert all(len(v) == SEEDS for v in rec["look"].values())
    assert len(rec["final"]) == len(rec["gt"]) == SEEDS


def test_quick_run_records_replays_and_ends_with_result(tmp_path, capsys, benchmark_script):
    bench = benchmark_script("prune_tuning")
    out = bench.main(["--quick", "--out", str(tmp_path)])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == out["result"] and last.startswith("RESULT best={") and " pct16=" in last
    records = (tmp_path / "records.jsonl").read_text().splitlines()
    assert len(records) == 4  # one prompt per category
    table = (tmp_path / "prune_tuning.md").read_text()
    assert "4 training prompts recorded" in table and "| lookahead J=2 (3 NFEs) |" in table


def test_zero_order_neighbourhood_quick_run(capsys, benchmark_script):
    line = benchmark_script("zero_order_neighbourhood").main(["--quick"])
    assert capsys.readouterr().out.strip().splitlines()[-1] == line
    assert line.startswith("RESULT base=") and "0.8:fail=" in line
