"""The CLI: bad input gives a one-line cause and exit 2 (no traceback); a run writes its outputs."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from noisesearch.cli import app
from noisesearch.models import TOYWORLD_DIR

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def assert_user_error(result, needle: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert needle in result.output, result.output


@pytest.fixture
def out(tmp_path):
    return str(tmp_path / "out")


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--strategy", "nope"], "unknown strategy 'nope'; choose one of: "),
        (["--verifier", "nope"], "unknown verifier 'nope'; choose one of: "),
        (["--scheduler", "heun", "--model", "tiny-random-sd", "--verifier", "toyclip"], "unknown scheduler 'heun'"),
        (["--model", "no-such-model"], "unknown model 'no-such-model'"),
        # '~user' of a user that does not exist: pathlib raises RuntimeError (found by hypothesis)
        (["--model", "~nosuchuser0"], "cannot expand '~nosuchuser0'"),
        (["--model", "some-org/some-model"], "not in the local Hugging Face cache"),
        (["--budget", "0", "--model", "tiny-random-sd", "--verifier", "toyclip"], "budget must be a positive"),
        (["--budget", "3", "--model", "tiny-random-sd", "--verifier", "toyclip"], "smaller than one full sample"),
        (["--top-k", "0"], "--top-k must be >= 1"),
        (["--device", "cuda:7"], ""),
        (["--dtype", "fp8"], "unknown dtype"),
    ],
)
def test_bad_options_exit_2_with_a_cause(args, needle, out, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = invoke("run", "--prompt", "a red circle", "--out", out, *args)
    assert_user_error(result, needle)


def test_prompts_file_under_an_unknown_home_is_a_user_error(out):
    assert_user_error(
        invoke("run", "--prompts-file", "~nosuchuser0/p.txt", "--out", out), "cannot expand '~nosuchuser0/p.txt'"
    )


def test_empty_prompt(out):
    assert_user_error(invoke("run", "--prompt", "  ", "--out", out), "--prompt is empty")


def test_prompt_and_file_are_exclusive(out, tmp_path):
    f = tmp_path / "p.txt"
    f.write_text("a red circle\n")
    assert_user_error(invoke("run", "--prompt", "x", "--prompts-file", str(f), "--out", out), "exactly one of")


def test_unreadable_and_empty_prompt_files(out, tmp_path):
    assert_user_error(
        invoke("run", "--prompts-file", str(tmp_path / "missing.txt"), "--out", out), "cannot read prompts file"
    )
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    assert_user_error(invoke("run", "--prompts-file", str(empty), "--out", out), "contains no prompts")
    csv = tmp_path / "p.csv"
    csv.write_text("text,category\nfoo,bar\n")
    assert_user_error(invoke("run", "--prompts-file", str(csv), "--out", out), "no 'prompt' column")


def test_unwritable_out(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert_user_error(
        invoke("run", "--prompt", "a red circle", "--out", str(blocker / "sub")), "which is a file, not a folder"
    )


def test_lists():
    assert "random" in invoke("strategies").output
    assert "clipscore" in invoke("verifiers").output


@pytest.mark.skipif(not (TOYWORLD_DIR / "model_index.json").exists(), reason="embedded toyworld weights not built")
def test_a_prompt_the_default_verifier_cannot_read_fails_before_generating(tmp_path):
    # the embedded world's default verifier (toydetect) parses the world's grammar; every prompt
    # of a prompts file is checked before the first image is made
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\na red cat\n")
    out = tmp_path / "out"
    result = invoke("run", "--prompts-file", str(prompts), "--out", str(out))
    assert_user_error(result, "toydetect scores toyworld prompts only")
    assert "'cat'" in result.output
    assert not list(out.rglob("*.png"))


def test_run_on_the_embedded_default_writes_outputs(tmp_path):
    out = tmp_path / "run"
    result = invoke(
        "run",
        "--prompt",
        "a red circle left of a blue square",
        "--candidates",
        "4",
        "--out",
        str(out),
        "--device",
        "cpu",
    )
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["verifier"] == "toydetect"
    assert [c["seed"] for c in report["candidates"]] == [0, 1, 2, 3]
    assert report["accounting"]["nfe"] == 4 * report["settings"]["steps"]
    assert report["settings"]["versions"]["torch"]
    assert (out / "best.png").exists() and (out / "candidates.png").exists()


def test_run_with_a_prompts_file_on_a_tiny_pipeline(tmp_path):
    prompts = tmp_path / "prompts.csv"
    prompts.write_text("prompt,category\na red circle,color\ntwo blue squares,count\n")
    out = tmp_path / "run"
    result = invoke(
        "run",
        "--prompts-file",
        str(prompts),
        "--model",
        "tiny-random-sd",
        "--verifier",
        "toyclip",
        "--candidates",
        "2",
        "--steps",
        "3",
        "--out",
        str(out),
        "--device",
        "cpu",
    )
    if "toyclip" in result.output and result.exit_code == 2:
        pytest.skip("toyclip weights not built")
    assert result.exit_code == 0, result.output
    reports = sorted(out.glob("*/report.json"))
    assert len(reports) == 2
    assert json.loads(reports[1].read_text())["prompt"] == "two blue squares"


def test_strategy_flags_are_validated(out):
    assert_user_error(
        invoke("run", "--prompt", "a red circle", "--strategy", "zero-order", "--zo-neighbours", "3", "--out", out),
        "unknown option '--zo-neighbours' for strategy 'zero-order'; it accepts:",
    )
    assert_user_error(
        invoke("run", "--prompt", "a red circle", "--strategy", "zero-order", "--zo-neighbors", "x", "--out", out),
        "needs a int",
    )


def test_strategy_flags_and_config_file_reach_the_strategy(tmp_path):
    from noisesearch.strategies.options import load_strategy_file, parse_strategy_args

    assert parse_strategy_args("zero-order", ["--zo-neighbors", "4", "--zo-no-restart", "--zo-cosine=0.9"]) == {
        "neighbors": 4,
        "restart": False,
        "cosine": 0.9,
    }
    cfg = tmp_path / "zo.toml"
    cfg.write_text("[strategy.zero-order]\nneighbors = 3\n")
    assert load_strategy_file("zero-order", cfg) == {"neighbors": 3}
    cfg.write_text("neighbours = 3\n")
    with pytest.raises(ValueError, match="has no option neighbours"):
        load_strategy_file("zero-order", cfg)
