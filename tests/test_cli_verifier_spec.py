"""`noisesearch run --verifier SPEC`: ensembles and options from the command line, checked before
any model or verifier loads."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import noisesearch.models
from noisesearch.cli import app
from noisesearch.verifiers.base import _REGISTRY

runner = CliRunner()


def run(out: Path, verifier: str):
    return runner.invoke(
        app,
        [
            "run",
            "--model",
            "stub",
            "--prompt",
            "a red circle",
            "--candidates",
            "3",
            "--steps",
            "2",
            "--out",
            str(out),
            "--verifier",
            verifier,
        ],
    )


def test_a_rank_ensemble_of_the_embedded_verifiers_runs_from_the_command_line(tmp_path):
    res = run(tmp_path / "out", "rank-ensemble(verifiers=[toyclip, toyrelation])")
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["verifier"] == "rank-ensemble(verifiers=[toyclip,toyrelation])"  # canonical text
    scores = sorted(c["score"] for c in report["candidates"])
    # the mean over 2 verifiers of each image's rank among 3 (0, 0.5 or 1): multiples of 0.25
    assert all(abs(4 * s - round(4 * s)) < 1e-6 and 0 <= s <= 1 for s in scores)
    assert sum(scores) == pytest.approx(1.5)  # ranks among 3 images sum to 0 + 0.5 + 1 per verifier


@pytest.fixture
def nothing_loads(monkeypatch):
    """Fails the test if a model or any registered verifier is built."""

    def refusing(factory):
        @functools.wraps(factory)  # same signature: the option checks still see the factory's options
        def refuse(*args, **kwargs):
            raise AssertionError("a model or verifier was loaded before the verifier spec was checked")

        return refuse

    monkeypatch.setattr(noisesearch.models, "load_model", refusing(noisesearch.models.load_model))
    for name, factory in list(_REGISTRY.items()):
        monkeypatch.setitem(_REGISTRY, name, refusing(factory))


@pytest.mark.parametrize(
    "spec, needle",
    [
        (
            "rank-ensemble(verifiers=[toyclip,toydetect(size=3)])",
            "rank-ensemble member 2 (toydetect): verifier 'toydetect' has no option size; its options are: path",
        ),
        ("clipscore(w=high)", "verifier 'clipscore' option 'w' takes a number, got high"),
        ("clipscore(modle=ViT-B-32)", "verifier 'clipscore' has no option modle; its options are: model, pretrained"),
        (
            "zscore-ensemble(verifiers=[toyclip,toyrelation], weights=[1,2,3])",
            "has 2 member verifier(s) but 3 weight(s)",
        ),
        ("rank-ensemble", "rank-ensemble needs member verifiers"),
        ("rank-ensemble(verifiers=[toyclip,toyrelation]", "at character 46 expected ',' or ')', found the end"),
        ("clip-score", "unknown verifier 'clip-score'"),
    ],
)
def test_a_bad_verifier_spec_exits_2_before_anything_loads(tmp_path, nothing_loads, spec, needle):
    res = run(tmp_path / "out", spec)
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert needle in lines[0]
    assert not (tmp_path / "out" / "report.json").exists()
