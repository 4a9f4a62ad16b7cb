"""Running sweeps in-process on the stub model: row contents, content-addressed images, resume
(skip done keys, torn last line, extended configs), sharding by hand, ground truth, the CLI."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sweep_support import PROMPTS, _contrast, shard_keys, without_timing, write_stub_config
from typer.testing import CliRunner

import noisesearch
from noisesearch.cli import app
from noisesearch.sweeps import SweepConfig, plan, read_jsonl, shard


def load_png(path: Path) -> torch.Tensor:
    return torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)  # [3, H, W] uint8


def copy_out(reference: tuple, tmp_path: Path) -> Path:
    out = tmp_path / "out"
    shutil.copytree(reference[1], out)
    return out


def test_rows_hold_accounting_scores_and_content_addressed_images(reference) -> None:
    config, out, rows = reference
    assert len(rows) == len(PROMPTS) * 2 * 2
    assert [r["key"] for r in rows] == sorted(r["key"] for r in rows)
    assert {r["key"] for r in rows} == {it.key for it in plan(SweepConfig.from_toml(config))}
    for row in rows:
        acc = row["accounting"]
        assert 0 < acc["nfe"] <= row["budget_nfe"] and acc["verifier_calls"] == row["candidates"]
        assert row["top"][0]["image"] == row["image"] and row["top"][0]["score"] == row["search_score"]
        assert [t["score"] for t in row["top"]] == sorted((t["score"] for t in row["top"]), reverse=True)
        assert len(row["top"]) == min(2, row["candidates"])
        for top in row["top"]:
            data = (out / top["image"]).read_bytes()
            assert top["image"] == f"images/{hashlib.sha256(data).hexdigest()}.png"
            image = load_png(out / top["image"])
            # evaluation verifiers score exactly the saved image; the search score is the search
            # verifier's score of the same image before 8-bit rounding
            expected = float(_contrast(image[None].float() / 255, [row["prompt"]])[0])
            assert top["eval"]["test-contrast"] == pytest.approx(expected, abs=1e-6)
            assert float(image[0].float().mean() / 255) == pytest.approx(top["score"], abs=2 / 255)
        assert row["eval"]["test-contrast"] == row["top"][0]["eval"]["test-contrast"]
    # random search draws nested seeds: a larger budget never picks a worse image
    by = {(r["prompt"], r["strategy"], r["budget_nfe"]): r["search_score"] for r in rows}
    for (prompt, strategy, budget), score in by.items():
        if budget == 30:
            assert score >= by[(prompt, strategy, 10)]


def test_resume_skips_complete_rows(reference, tmp_path: Path) -> None:
    config, _, rows = reference
    out = copy_out(reference, tmp_path)
    summary = noisesearch.sweep(config, out)
    assert (summary.ran, summary.skipped, summary.planned) == (0, len(rows), len(rows))
    assert read_jsonl(out / "results.jsonl") == rows  # untouched rows, timing included


def test_a_torn_last_line_is_cut_and_its_row_recomputed(reference, tmp_path: Path) -> None:
    config, _, rows = reference
    out = copy_out(reference, tmp_path)
    (out / "results.jsonl").unlink()
    shard_file = out / "shards" / "rank-0-of-1.jsonl"
    lines = shard_file.read_bytes().split(b"\n")[:-1]
    shard_file.write_bytes(b"\n".join(lines[:-2]) + b"\n" + lines[-2][: len(lines[-2]) // 2])  # killed mid-write
    logs: list[str] = []
    summary = noisesearch.sweep(config, out, log=logs.append)
    assert summary.ran == 2 and any("torn last line" in line for line in logs)
    assert len(shard_keys(out)) == len(rows) == len(set(shard_keys(out)))
    assert shard_file.read_bytes().endswith(b"\n")
    assert without_timing(read_jsonl(out / "results.jsonl")) == without_timing(rows)


def test_a_damaged_middle_line_is_reported_with_its_place(reference, tmp_path: Path) -> None:
    config, _, _ = reference
    out = copy_out(reference, tmp_path)
    shard_file = out / "shards" / "rank-0-of-1.jsonl"
    lines = shard_file.read_text().splitlines(keepends=True)
    shard_file.write_text("".join(lines[:3] + ["{not json\n"] + lines[3:]))
    with pytest.raises(ValueError, match=r"rank-0-of-1.jsonl:4 is not a JSON row"):
        noisesearch.sweep(config, out)


def test_sharding_by_hand_gives_the_unsharded_results(reference, tmp_path: Path) -> None:
    config, _, rows = reference
    items = plan(SweepConfig.from_toml(config))
    first = noisesearch.sweep(config, tmp_path / "out", rank=0, world_size=2)
    assert first.results_path is None and first.ran == len(items[0::2])
    second = noisesearch.sweep(config, tmp_path / "out", rank=1, world_size=2)
    assert second.results_path is not None
    for r in range(2):
        assert [row["key"] for row in read_jsonl(tmp_path / "out" / "shards" / f"rank-{r}-of-2.jsonl")] == [
            it.key for it in shard(items, r, 2)
        ]
    assert without_timing(read_jsonl(second.results_path)) == without_timing(rows)
    with pytest.raises(ValueError, match="give both rank and world_size"):
        noisesearch.sweep(config, tmp_path / "out", rank=2, world_size=2)


def test_a_sharded_sweep_can_be_finished_by_one_process(reference, tmp_path: Path) -> None:
    config, _, rows = reference
    half = noisesearch.sweep(config, tmp_path / "out", rank=0, world_size=2)
    rest = noisesearch.sweep(config, tmp_path / "out")  # one process reads both shards' keys
    assert rest.skipped == half.ran and rest.ran == len(rows) - half.ran
    assert sorted(shard_keys(tmp_path / "out")) == sorted(r["key"] for r in rows)
    assert without_timing(read_jsonl(rest.results_path)) == without_timing(rows)


def test_extending_a_sweep_runs_only_the_new_rows(reference, tmp_path: Path) -> None:
    config, _, rows = reference
    out = copy_out(reference, tmp_path)
    bigger = SweepConfig.from_dict({**SweepConfig.from_toml(config).to_dict(), "budgets": [10, 30, 50]})
    summary = noisesearch.sweep(bigger, out)
    assert summary.ran == len(PROMPTS) * 2 and summary.skipped == len(rows)
    merged = {r["key"]: r for r in read_jsonl(out / "results.jsonl")}
    assert len(merged) == len(rows) + summary.ran
    assert without_timing([merged[r["key"]] for r in rows]) == without_timing(rows)


def test_budget_below_one_sample_is_a_clear_error(tmp_path: Path) -> None:
    config = write_stub_config(tmp_path, budgets=[5])
    with pytest.raises(
        ValueError, match=r"'budgets': \[5\] NFEs is less than one full sample of model 'stub' \(10 steps\)"
    ):
        noisesearch.sweep(config, tmp_path / "out")


def test_ground_truth_is_an_evaluation_metric(tmp_path: Path) -> None:
    pytest.importorskip("noisesearch.toyworld.evaluator")
    config = write_stub_config(
        tmp_path, prompts=PROMPTS[:2], eval_verifiers=["ground_truth", "test-contrast"], budgets=[10]
    )
    summary = noisesearch.sweep(config, tmp_path / "out")
    rows = read_jsonl(summary.results_path)
    assert {r["eval"]["ground_truth"] for r in rows} <= {0.0, 1.0} and len(rows) == 4
    assert all(t["eval"]["ground_truth"] in (0.0, 1.0) for r in rows for t in r["top"])
    bad = write_stub_config(tmp_path / "bad", prompts=["a photo of a cat"], eval_verifiers=["ground_truth"])
    with pytest.raises(
        ValueError, match="'ground_truth' judges embedded-world prompts only, and 'a photo of a cat' is not one"
    ):
        noisesearch.sweep(bad, tmp_path / "out2")


@pytest.mark.slow  # ~20 s: builds a random-weight diffusers pipeline
def test_a_tiny_diffusers_pipeline_runs_in_a_sweep(tmp_path: Path) -> None:
    config = write_stub_config(tmp_path, prompts=PROMPTS[:1], models=["tiny-random-sd"], steps=2, budgets=[4], top_k=1)
    rows = read_jsonl(noisesearch.sweep(config, tmp_path / "out").results_path)
    assert len(rows) == 2 and all(r["accounting"]["nfe"] == 4 and r["sampling"]["steps"] == 2 for r in rows)
    assert all((tmp_path / "out" / r["image"]).exists() for r in rows)


runner = CliRunner()


def test_cli_sweep_dry_run_run_and_report(reference, tmp_path: Path) -> None:
    config, _, rows = reference
    dry = runner.invoke(
        app, ["sweep", str(config), "--out", str(tmp_path / "out"), "--dry-run"], catch_exceptions=False
    )
    assert dry.exit_code == 0 and f"{len(rows)} rows = 4 prompts x 1 models x 2 strategies" in dry.output
    run = runner.invoke(app, ["sweep", str(config), "--out", str(tmp_path / "out")], catch_exceptions=False)
    assert run.exit_code == 0, run.output
    assert without_timing(read_jsonl(tmp_path / "out" / "results.jsonl")) == without_timing(rows)
    report = runner.invoke(app, ["report", str(tmp_path / "out")], catch_exceptions=False)
    assert report.exit_code == 0 and (tmp_path / "out" / "report.html").exists(), report.output


@pytest.mark.parametrize(
    "args,needle",
    [
        (["sweep", "missing.toml"], "cannot read sweep config"),
        (["report", "no-such-dir"], "does not exist"),
    ],
)
def test_cli_errors_exit_2(args: list[str], needle: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 2 and needle in result.output and "Traceback" not in result.output


def test_cli_names_a_bad_key(tmp_path: Path) -> None:
    config = write_stub_config(tmp_path, budget=[10])
    result = runner.invoke(app, ["sweep", str(config), "--out", str(tmp_path / "out")], catch_exceptions=False)
    assert result.exit_code == 2 and "unknown sweep config key 'budget' (did you mean 'budgets'?)" in result.output


def test_the_sweep_config_is_recorded(reference) -> None:
    config, out, rows = reference
    doc = json.loads((out / "sweep_config.json").read_text())
    assert SweepConfig.from_dict(doc["config"]) == SweepConfig.from_toml(config)
    assert doc["rows"] == len(rows) and "torch" in doc["versions"]
