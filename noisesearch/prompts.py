"""Prompt sources: TXT and CSV prompt files, built-in prompt sets, and balanced subsets.

- TXT: one prompt per line; blank lines and lines starting with ``#`` are skipped.
- CSV: a header row and a prompt column, ``prompt`` or ``prompts`` in any case (DrawBench's
  ``Prompts,Category`` files work as they are) or one named explicitly; extra columns are allowed,
  and a ``category`` column, when present, labels each prompt (per-category report tables).
- Built-in sets: ``toyworld-heldout``, the embedded world's 210 held-out benchmark prompts
  (:func:`noisesearch.toyworld.grammar.heldout_prompts`), each labelled with its category, and
  ``toyworld-train``, a fixed sample of training-split prompts (for learned priors such as NPNet).

Every problem is a :class:`PromptError` (a ``ValueError``) whose message names the file and says what
is wrong: unreadable file, missing column, no prompts.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from noisesearch.io.paths import user_path

#: column names recognised as the prompt column when none is named (compared case-insensitively)
PROMPT_COLUMNS: tuple[str, ...] = ("prompt", "prompts")
#: column name recognised as the category column (case-insensitive)
CATEGORY_COLUMN = "category"


class PromptError(ValueError):
    """A prompt source cannot be used; the message says which and why."""


@dataclass(frozen=True)
class PromptItem:
    """One benchmark prompt."""

    text: str  # the prompt, stripped
    category: str | None = None  # from a CSV 'category' column or a built-in set; None when unknown


def _toyworld_heldout() -> list[PromptItem]:
    from noisesearch.toyworld import grammar

    return [PromptItem(text, category) for category, text in grammar.heldout_prompts()]


def _toyworld_train() -> list[PromptItem]:
    from noisesearch.toyworld import grammar

    return [PromptItem(text, category) for category, text in grammar.train_prompts()]


#: built-in prompt sets by name -> loader
BUILTIN_SETS: dict[str, Callable[[], list[PromptItem]]] = {
    "toyworld-heldout": _toyworld_heldout,
    "toyworld-train": _toyworld_train,
}


def _read_text(path: Path) -> str:
    try:
        # utf-8-sig: spreadsheet exports often start with a byte-order mark, which would otherwise
        # become part of the first column's name
        return path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise PromptError(f"cannot read prompts file {str(path)!r}: {getattr(e, 'strerror', None) or e}") from e


def _find_column(fieldnames: Sequence[str], wanted: Sequence[str]) -> str | None:
    lowered = {f.strip().lower(): f for f in fieldnames}
    for name in wanted:
        if name.strip().lower() in lowered:
            return lowered[name.strip().lower()]
    return None


def load_prompt_file(path: str | Path, column: str | None = None) -> list[PromptItem]:
    """Prompts of a TXT or CSV file (chosen by the ``.csv`` suffix), in file order.

    ``column`` names the CSV prompt column (case-insensitive); by default ``prompt`` or ``prompts``.
    Raises :class:`PromptError` for an unreadable file, a CSV without the column, or no prompts.
    """
    path = user_path(path)
    text = _read_text(path)
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(io.StringIO(text))
        if not reader.fieldnames:
            raise PromptError(f"prompts file {str(path)!r} contains no prompts (it is empty; expected a header row)")
        wanted = (column,) if column else PROMPT_COLUMNS
        key = _find_column(reader.fieldnames, wanted)
        if key is None:
            hint = (
                "check the column name"
                if column
                else "add a header row with a 'prompt' (or 'prompts') column, or name the column (prompt_column in a sweep config)"
            )
            raise PromptError(
                f"CSV prompts file {str(path)!r} has no {wanted[0]!r} column (columns: {reader.fieldnames}); {hint}"
            )
        cat_key = _find_column(reader.fieldnames, (CATEGORY_COLUMN,))
        items = []
        for row in reader:
            value = row.get(key)
            if value and value.strip():
                cat = (row.get(cat_key) or "").strip() if cat_key else ""
                items.append(PromptItem(value.strip(), cat or None))
    else:
        items = [PromptItem(line.strip()) for line in text.splitlines() if line.strip() and not line.startswith("#")]
    if not items:
        raise PromptError(f"prompts file {str(path)!r} contains no prompts")
    return items


def load_prompts(source: str | Path, column: str | None = None, base_dir: str | Path | None = None) -> list[PromptItem]:
    """Prompts of a built-in set (by name) or of a TXT/CSV file.

    A relative file path is looked up under ``base_dir`` (e.g. the folder of a sweep config file)
    when given, else under the working directory.
    """
    if isinstance(source, str) and source in BUILTIN_SETS:
        return BUILTIN_SETS[source]()
    path = user_path(source)
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    if not path.exists():
        raise PromptError(
            f"prompts {str(source)!r} is neither a prompts file ({str(path)!r} does not exist) nor a built-in set; "
            f"built-in sets: {', '.join(sorted(BUILTIN_SETS))}"
        )
    return load_prompt_file(path, column)


def select_prompts(
    items: Sequence[PromptItem], limit: int | None = None, categories: Sequence[str] = ()
) -> list[PromptItem]:
    """Distinct prompts, optionally only some categories, at most ``limit``, balanced over categories.

    Duplicate prompt texts keep their first occurrence (a sweep row is identified by its prompt).
    With a limit, prompts are taken round-robin over the categories in order of first appearance,
    so 20 of the 210 toyworld prompts are 5 per category rather than the first 20 of the file; the
    result keeps file order. Deterministic: the same input and limit give the same prompts.
    """
    seen: set[str] = set()
    unique = []
    for item in items:
        if item.text not in seen:
            seen.add(item.text)
            unique.append(item)
    if categories:
        present = sorted({i.category for i in unique if i.category is not None})
        unknown = sorted(set(categories) - set(present))
        if unknown:
            raise PromptError(
                f"unknown prompt categor{'y' if len(unknown) == 1 else 'ies'} {', '.join(map(repr, unknown))}; "
                f"the prompts have: {', '.join(present) or '(no categories)'}"
            )
        unique = [i for i in unique if i.category in set(categories)]
    if limit is None or limit >= len(unique):
        return unique
    groups: dict[str | None, list[int]] = {}
    for index, item in enumerate(unique):
        groups.setdefault(item.category, []).append(index)
    chosen: list[int] = []
    depth = 0
    while len(chosen) < limit:
        for members in groups.values():
            if depth < len(members) and len(chosen) < limit:
                chosen.append(members[depth])
        depth += 1
    return [unique[i] for i in sorted(chosen)]


def read_prompts(prompt: Optional[str], prompts_file: Optional[Path]) -> list[str]:
    """Prompts from --prompt or --prompts-file (TXT one per line, or CSV with a 'prompt' column)."""
    if (prompt is None) == (prompts_file is None):
        raise PromptError("give exactly one of --prompt or --prompts-file")
    if prompt is not None:
        if not prompt.strip():
            raise PromptError("--prompt is empty; give the text to generate")
        return [prompt.strip()]
    if prompts_file is None:  # pragma: no cover - excluded by the check above; keeps type checkers informed
        raise PromptError("give exactly one of --prompt or --prompts-file")
    return [item.text for item in load_prompt_file(prompts_file)]
