"""The scaling benchmark (benchmarks/scaling.py) end to end on a tiny plan: rows, tables, RESULT, budgets, resume."""

from __future__ import annotations

import json
from unittest.mock import ANY


def test_scaling_benchmark_tiny_run(tmp_path, capsys, benchmark_script):
    bench = benchmark_script("scaling")
    argv = [
        "--prompts",
        "2",
        "--budgets",
        "1,4",
        "--strategies",
        "random,zero-order",
        "--verifiers",
        "toyclip",
        "--steps",
        "4",
        "--workers",
        "1",
        "--threads",
        "1",
        "--out",
        str(tmp_path),
    ]
    bench.main(argv)
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == (
        "RESULT random4=na prune4=na random16=na prune16=na prune16_vs_random_pts=na "
        "prune16_vs_random_se=na prompts=0 verifier=toyclip"
    )  # prune not run

    rows = [json.loads(line) for line in (tmp_path / "scaling_toyworld.jsonl").read_text().splitlines()]
    # random: 2 prompts x 3 verifiers (all, from one run) x 2 multiples; zero-order: 2 prompts at 4x
    assert len(rows) == 14
    assert {(r["strategy"], r["verifier"], r["multiple"]) for r in rows} == {
        *(("random", v, m) for v in ("toyclip", "toyrelation", "toydetect") for m in (1, 4)),
        ("zero-order", "toyclip", 4),
    }
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


def test_prune_is_paired_against_random_search_with_its_calls(tmp_path, capsys, benchmark_script):
    bench = benchmark_script("scaling")
    argv = [
        "--prompts",
        "1",
        "--budgets",
        "1,16",
        "--strategies",
        "random,prune",
        "--verifiers",
        "toydetect",
        "--max-multiple",
        "toydetect=16",
        "--steps",
        "20",
        "--workers",
        "1",
        "--threads",
        "1",
        "--out",
        str(tmp_path),
    ]
    bench.main(argv)
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("RESULT random4=na prune4=na random16=") and last.endswith(" prompts=1 verifier=toydetect")
    rows = [json.loads(line) for line in (tmp_path / "scaling_toyworld.jsonl").read_text().splitlines()]
    prune = [r for r in rows if r["strategy"] == "prune"]
    assert len(prune) == 1 and prune[0]["nfe"] <= 320 and prune[0]["options"]["jumps"] == 5
    # 28 noises screened by a 6-NFE coarse sample (one decode and verifier call each), 8 survivors finished
    assert prune[0]["verifier_calls"] == prune[0]["decoded"] == 36 and prune[0]["candidates"] == 8
    table = (tmp_path / "scaling_toyworld.md").read_text()
    assert "## Paired against random search" in table and "| prune | toydetect | 16× | 1 |" in table
    # --report-only computes nothing and renders the same RESULT
    bench.main([*argv, "--report-only"])
    assert capsys.readouterr().out.strip().splitlines()[-1] == last

    # a row made with other prune options (defaults since changed) is stale: not reported, and made again
    path = tmp_path / "scaling_toyworld.jsonl"
    path.write_text(
        "".join(
            json.dumps(dict(r, options={**r["options"], "jumps": 99}) if r["strategy"] == "prune" else r) + "\n"
            for r in rows
        )
    )
    bench.main([*argv, "--report-only"])
    assert "| prune | toydetect | not run" in (tmp_path / "scaling_toyworld.md").read_text()
    capsys.readouterr()
    bench.main(argv)
    assert "for 1 units" in capsys.readouterr().out
    assert bench.compatible(bench.read_rows(path), bench.Settings(20, 4.0, 0, bench.weights_fingerprint()))[
        -1
    ] == prune[0] | {
        "seconds": ANY,
        "cpu_seconds": ANY,
    }
