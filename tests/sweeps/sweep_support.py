"""Cheap named verifiers for sweep tests, registered when a sweep config lists this module in
``imports``; and the entry point of the sweep subprocesses the tests kill.

``NOISESEARCH_TEST_SCORE_SLEEP`` (seconds) slows every scoring call down, so that a sweep on the
stub model lasts long enough to be killed in the middle of its work.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from noisesearch.verifiers import CallableVerifier, register_verifier


def _sleep() -> None:
    delay = float(os.environ.get("NOISESEARCH_TEST_SCORE_SLEEP", "0") or 0)
    if delay > 0:
        time.sleep(delay)


def _red(images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
    _sleep()
    return images[:, 0].mean(dim=(1, 2))


def _contrast(images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
    _sleep()
    return images.std(dim=(1, 2, 3)) + 0.01 * torch.tensor([len(p) for p in prompts], dtype=images.dtype)


@register_verifier("test-red", "tests: mean of the red channel")
def red_factory(device: str | torch.device = "cpu") -> CallableVerifier:
    return CallableVerifier(_red, name="test-red")


@register_verifier("test-contrast", "tests: pixel standard deviation plus a prompt-length term")
def contrast_factory(device: str | torch.device = "cpu") -> CallableVerifier:
    return CallableVerifier(_contrast, name="test-contrast")


def run_sweep(config_path: str, out_dir: str, env: dict[str, str] | None = None) -> None:
    """Subprocess entry point: sets ``env`` (e.g. RANK/WORLD_SIZE for a gloo group), runs the sweep."""
    os.environ.update(env or {})
    torch.set_num_threads(1)
    import noisesearch

    noisesearch.sweep(config_path, out_dir)


# --------------------------------------------------------------------------- test helpers

PROMPTS = ("a red circle", "two blue squares", "a green triangle left of a yellow circle", "three purple triangles")


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def write_stub_config(folder: Path, prompts: Sequence[str] = PROMPTS, **overrides: object) -> Path:
    """A sweep config on the stub model with the test verifiers: 4 prompts x 2 strategies x 2 budgets.

    Keyword overrides replace top-level keys; ``None`` drops a key.
    """
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "prompts.txt").write_text("\n".join(prompts) + "\n")
    keys: dict[str, object] = {
        "name": "stub sweep",
        "prompts": "prompts.txt",
        "models": ["stub"],
        "search_verifiers": ["test-red"],
        "eval_verifiers": ["test-contrast"],
        "budgets": [10, 30],
        "seeds": [0],
        "top_k": 2,
        "device": "cpu",
        "imports": ["sweep_support"],
    }
    keys.update(overrides)
    lines = [f"{k} = {_toml_value(v)}" for k, v in keys.items() if v is not None]
    lines += [
        "",
        "[[strategies]]",
        'name = "random"',
        "",
        "[[strategies]]",
        'name = "random"',
        'label = "random-r1"',
        "round_size = 1",
    ]
    path = folder / "sweep.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def without_timing(rows: Sequence[dict]) -> list[dict]:
    """Rows with the wall-clock fields removed: what must be identical between runs."""
    return [{k: v for k, v in row.items() if k != "timing"} for row in rows]


def shard_keys(out_dir: Path) -> list[str]:
    """Every key in every shard line (complete lines only), duplicates kept."""
    keys = []
    for path in sorted((Path(out_dir) / "shards").glob("*.jsonl")):
        for line in path.read_bytes().split(b"\n")[:-1]:
            if line.strip():
                keys.append(json.loads(line)["key"])
    return keys


def image_files(out_dir: Path) -> set[str]:
    return {p.name for p in (Path(out_dir) / "images").iterdir() if not p.name.startswith(".")}
