"""The VLM judges from the command line: listing, a run writing per-aspect scores, and clear errors."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from noisesearch.cli import app
from noisesearch.testing.vlm_tiny import build_tiny_qwen2_5_vl

runner = CliRunner()


@pytest.fixture(scope="module")
def qwen_folder(tmp_path_factory):
    return build_tiny_qwen2_5_vl(tmp_path_factory.mktemp("qwen"))


def test_listing_names_the_hub_id_when_missing_and_the_folder_when_found(qwen_folder, tmp_path, monkeypatch):
    from noisesearch.verifiers.catalog import scan

    monkeypatch.delenv("NOISESEARCH_VLM_PATH", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    found = {a.name: a for a in scan()}
    for name in ("vqascore", "vlm-grader"):
        assert not found[name].ready and "Qwen/Qwen2.5-VL-3B-Instruct" in found[name].missing[0]
        assert "model=PATH" in found[name].missing[0] and "NOISESEARCH_VLM_PATH" in found[name].missing[0]
    out = runner.invoke(app, ["verifiers"], catch_exceptions=False).output
    assert "vqascore" in out and "vlm-grader" in out
    monkeypatch.setenv("NOISESEARCH_VLM_PATH", str(qwen_folder))
    found = {a.name: a for a in scan()}
    assert found["vqascore"].ready and list(found["vqascore"].found.values()) == [qwen_folder]


def test_run_with_the_grader_writes_aspect_scores(qwen_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("NOISESEARCH_VLM_PATH", str(qwen_folder))
    out = tmp_path / "run"
    result = runner.invoke(
        app,
        [
            "run",
            "--prompt",
            "a red cube",
            "--model",
            "tiny-random-sd",
            "--verifier",
            "vlm-grader",
            "--candidates",
            "2",
            "--steps",
            "2",
            "--out",
            str(out),
            "--device",
            "cpu",
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["verifier"] == "vlm-grader"
    for c in report["candidates"]:
        details = c["info"]["verifier_details"]
        assert len(details) == 5 and c["score"] == pytest.approx(sum(details.values()) / 5, abs=1e-4)


def test_run_without_a_checkpoint_exits_2_naming_the_hub_id(tmp_path, monkeypatch):
    monkeypatch.delenv("NOISESEARCH_VLM_PATH", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    result = runner.invoke(
        app,
        [
            "run",
            "--prompt",
            "a red cube",
            "--model",
            "tiny-random-sd",
            "--verifier",
            "vqascore",
            "--candidates",
            "2",
            "--steps",
            "2",
            "--out",
            str(tmp_path / "o"),
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "Qwen/Qwen2.5-VL-3B-Instruct" in result.output


def test_sweep_searches_with_vqascore_and_evaluates_with_the_grader(qwen_folder, tmp_path, monkeypatch):
    import noisesearch
    from noisesearch.sweeps import read_jsonl

    monkeypatch.setenv("NOISESEARCH_VLM_PATH", str(qwen_folder))
    (tmp_path / "prompts.txt").write_text("a red cube\n")
    config = tmp_path / "sweep.toml"
    config.write_text(
        'name = "vlm"\nprompts = "prompts.txt"\nmodels = ["stub"]\nsearch_verifiers = ["vqascore"]\n'
        'eval_verifiers = ["vlm-grader"]\nbudgets = [10]\nseeds = [0]\ndevice = "cpu"\n\n'
        '[[strategies]]\nname = "random"\n'
    )
    summary = noisesearch.sweep(config, tmp_path / "out")
    rows = read_jsonl(summary.results_path)
    assert len(rows) == 1 and rows[0]["search_verifier"] == "vqascore" and rows[0]["search_score"] <= 0
    assert 0 <= rows[0]["eval"]["vlm-grader"] <= 10


def test_a_rank_ensemble_with_the_grader_runs_from_a_spec(qwen_folder, tmp_path):
    """The paper's ensemble pattern from the command line: the grader as one member of a rank
    ensemble, given by a spec with its own options (the other members are embedded verifiers here,
    since the real aesthetic/CLIP/ImageReward weights cannot be downloaded in tests)."""
    out = tmp_path / "run"
    spec = f"rank-ensemble(verifiers=[toyclip,toyrelation,vlm-grader(model={qwen_folder}, aspects=accuracy)])"
    result = runner.invoke(
        app,
        [
            "run",
            "--prompt",
            "a red circle",
            "--model",
            "tiny-random-sd",
            "--verifier",
            spec,
            "--candidates",
            "3",
            "--steps",
            "2",
            "--out",
            str(out),
            "--device",
            "cpu",
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["verifier"].startswith("rank-ensemble(")
    for c in report["candidates"]:
        details = c["info"]["verifier_details"]
        assert {"toyclip", "toyrelation"} <= set(details)
        assert any(k.startswith("vlm-grader") for k in details)
