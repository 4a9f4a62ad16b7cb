"""The README's Python examples run as written (public names stay importable from ``noisesearch``)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def test_the_readme_has_python_examples():
    assert len(BLOCKS) >= 2


def _case(index: int, block: str):
    # the example sweep takes minutes: opt-in, like the other heavy tests
    marks = [pytest.mark.slow] if "noisesearch.sweep(" in block else []
    return pytest.param(index, marks=marks, id=f"block{index}")


@pytest.mark.parametrize("index", [_case(i, b) for i, b in enumerate(BLOCKS)])
def test_readme_example_runs(index, tmp_path):
    # each block in a fresh interpreter (examples register strategies and verifiers globally), run
    # from the repository root as the README says
    done = subprocess.run(
        [sys.executable, "-c", BLOCKS[index]],
        cwd=README.parent if "examples/" in BLOCKS[index] else tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
