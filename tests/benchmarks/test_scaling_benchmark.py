"""The scaling benchmark (benchmarks/scaling.py) end to end on a tiny plan: rows, tables, RESULT, budgets, resume."""

from __future__ import annotations

import json


def test_scaling_benchmark_tiny_run(tmp_path, capsys, benchmark_script):
    bench = benchmark_script("scaling")
    argv = ["--prompts", "2", "--budgets", "1,4", "--strategies", "random,zero-order", "--verifiers", "toyclip",
            "--steps", "4", "--workers", "1", "--threads", "1", "--out", str(tmp_path)]
    bench.main(argv)
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("RESULT random16=na zero_order16=na paths16=na smc16=na gradient16=na")

    rows = [json.loads(line) for line in (tmp_path / "scaling_toyworld.jsonl").read_text().splitlines()]
    # random: 2 prompts x 3 verifiers (all, from one run) x 2 multiples; zero-order: 2 prompts at 4x
    assert len(rows) == 14
    assert {(r["strategy"], r["verifier"], r["multiple"]) for r in rows} == {
        *(("random", v, m) for v in ("toyclip", "toyrelation", "toydetect") for m in (1, 4)),
        ("zero-order", "toyclip", 4)}
    assert len({r["prompt_index"] for r in rows}) == 2
    for r in rows:
        assert r["status"] == "ok" and r["steps"] == 4
        assert r["budget_nfe"] == 4 * r["multiple"]
        assert 0 < r["nfe"] <= r["budget_nfe"]  # the meter's NFEs never exceed the budget
        assert set(r["scores"]) == {"toyclip", "toyrelation", "toydetect"} and isinstance(r["gt"], bool)
    # seeds are shared across strategies: prompt i uses seed + 1000 i everywhere
    assert all(r["seed"] == 1000 * r["prompt_index"] for r in rows)
    base = {r["prompt_index"]: r["best_seed"] for r in rows if r["multiple"] == 1}
    assert base == {i: 1000 * i for i in base}

    table = (tmp_path / "scaling_toyworld.md").read_text()
    assert "| random | toyclip |" in table and "| zero-order | toyclip |" in table
    assert "Verifier hacking" in table and "exceed their budget: 0." in table
    assert (tmp_path / "scaling_toyworld.png").stat().st_size > 0

    # a rerun resumes: nothing left to compute, no rows added
    bench.main(argv)
    assert "0 units" in capsys.readouterr().out
    assert len((tmp_path / "scaling_toyworld.jsonl").read_text().splitlines()) == 14
