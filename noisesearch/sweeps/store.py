"""A sweep's rows on disk: per-process shards (crash-safe JSONL), images named by their hash,
the merged ``results.jsonl``, and the schema every row is checked against when read."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from noisesearch.io.paths import user_path
from noisesearch.io.storage import read_jsonl, write_atomic
from noisesearch.io.usertext import quote
from noisesearch.sweeps.config import RESULTS_FILE, SHARDS_DIR

ROW_FIELDS: dict[str, tuple[type, ...]] = {
    "key": (str,),
    "prompt": (str,),
    "model": (str,),
    "strategy": (str,),
    "search_verifier": (str,),
    "budget_nfe": (int,),
    "seed": (int,),
    "accounting": (dict,),
}
#: optional fields: JSON types besides null
OPTIONAL_ROW_FIELDS: dict[str, tuple[type, ...]] = {
    "search_score": (int, float),
    "image": (str,),
    "category": (str,),
    "eval": (dict,),
    "timing": (dict,),
}


def check_result_row(row: Mapping[str, Any]) -> None:
    """Raises ``ValueError`` (what is wrong, in a few words) unless ``row`` has the shape of a sweep result row."""

    def kind(types: tuple[type, ...]) -> str:
        return " or ".join({str: "a string", int: "an integer", float: "a number", dict: "an object"}[t] for t in types)

    def is_a(value: Any, types: tuple[type, ...]) -> bool:
        return isinstance(value, types) and not isinstance(value, bool)

    for name, types in ROW_FIELDS.items():
        if name not in row:
            raise ValueError(f"missing {name!r}")
        if not is_a(row[name], types):
            raise ValueError(f"{name!r} is not {kind(types)}")
    for name, types in OPTIONAL_ROW_FIELDS.items():
        if row.get(name) is not None and not is_a(row[name], types):
            raise ValueError(f"{name!r} is not {kind(types)} or null")
    numbers = [("eval", k, v) for k, v in (row.get("eval") or {}).items()]
    numbers += [("accounting", k, row["accounting"].get(k)) for k in ("nfe", "verifier_calls")]
    numbers += [("timing", "row", (row.get("timing") or {}).get("row"))]
    for field_name, k, v in numbers:
        if v is not None and not is_a(v, (int, float)):
            raise ValueError(f"{field_name}.{k} is not a number or null")


def read_result_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a results or shard file, each checked by :func:`check_result_row`; errors name file and line."""
    return read_jsonl(path, check=check_result_row, what="sweep result row")


def completed_rows(out_dir: str | Path) -> dict[str, dict[str, Any]]:
    """Every complete row in the shards of ``out_dir`` by key (first occurrence, shards sorted by name)."""
    rows: dict[str, dict[str, Any]] = {}
    folder = Path(out_dir) / SHARDS_DIR
    for path in sorted(folder.glob("*.jsonl")) if folder.is_dir() else []:
        for row in read_result_rows(path):
            rows.setdefault(row["key"], row)
    return rows


def store_image(image: torch.Tensor, images_dir: Path) -> str:
    """Saves a [3, H, W] uint8 image as ``<sha256 of its PNG bytes>.png``; returns the file name."""
    from noisesearch.io.results import to_pil

    buf = io.BytesIO()
    to_pil(image).save(buf, format="PNG")
    data = buf.getvalue()
    name = f"{hashlib.sha256(data).hexdigest()}.png"
    target = images_dir / name
    if not target.exists():  # same name, same bytes: concurrent writers may both rename, harmlessly
        write_atomic(target, data)
    return name


def merge(out_dir: str | Path, keys: Sequence[str]) -> Path:
    """Writes ``results.jsonl``: the rows of ``keys`` from all shards, sorted by key, atomically.

    Raises ``RuntimeError`` naming how many rows are missing when a key has no complete row.
    """
    out = Path(out_dir)
    rows = completed_rows(out)
    missing = [k for k in keys if k not in rows]
    if missing:
        raise RuntimeError(
            f"{len(missing)} of {len(keys)} rows are not complete in {out / SHARDS_DIR}; run the sweep again to finish them"
        )
    lines = [json.dumps(rows[k], ensure_ascii=False, allow_nan=False) + "\n" for k in sorted(keys)]
    path = out / RESULTS_FILE
    write_atomic(path, "".join(lines).encode("utf-8"))
    return path


def read_results(results_dir: str | Path) -> tuple[list[dict[str, Any]], bool]:
    """Rows of a sweep folder and whether they are final: ``results.jsonl``, else the shards so far."""
    folder = user_path(results_dir)
    if not folder.is_dir():
        what = "does not exist" if not folder.exists() else "is a file, not a folder"
        raise ValueError(
            f"sweep results folder {quote(str(folder), 200)} {what}; pass the --out folder of `noisesearch sweep`"
        )
    if (folder / RESULTS_FILE).exists():
        rows = read_result_rows(folder / RESULTS_FILE)
        if not rows:
            raise ValueError(
                f"{quote(str(folder / RESULTS_FILE), 200)} holds no rows; run the sweep again to rewrite it"
            )
        return rows, True
    rows_by_key = completed_rows(folder)
    if not rows_by_key:
        raise ValueError(
            f"{quote(str(folder), 200)} holds no sweep results ({RESULTS_FILE} or {SHARDS_DIR}/*.jsonl); "
            "pass the --out folder of `noisesearch sweep`"
        )
    return [rows_by_key[k] for k in sorted(rows_by_key)], False


# ----------------------------------------------------------------------------------- checks
