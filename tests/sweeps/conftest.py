"""Fixtures of the sweep tests: a finished reference sweep on the stub model, and a forkserver
whose children (sweep processes to kill, or the ranks of a gloo group) start without re-importing torch."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest
from sweep_support import write_stub_config

import noisesearch
from noisesearch.sweeps import read_jsonl


@pytest.fixture(scope="session")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[dict]]:
    """(config path, output folder, rows) of an uninterrupted single-process stub sweep."""
    folder = tmp_path_factory.mktemp("reference")
    config = write_stub_config(folder / "cfg")
    summary = noisesearch.sweep(config, folder / "out")
    assert summary.results_path is not None
    return config, folder / "out", read_jsonl(summary.results_path)


@pytest.fixture(scope="session")
def forkserver() -> multiprocessing.context.BaseContext:
    """A multiprocessing context whose server has imported noisesearch once (a fresh process each time)."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(
        [
            "noisesearch",
            "noisesearch.sweeps",
            "noisesearch.api",
            "noisesearch.io.results",
            "noisesearch.toyworld.verifiers",
            "sweep_support",
        ]
    )
    return ctx
