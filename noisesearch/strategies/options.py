"""Strategy hyperparameters from the command line or a TOML file.

Each strategy dataclass may declare ``cli_options`` mapping flags to fields (``"--zo-neighbors":
"neighbors"``, or ``"--zo-restart/--zo-no-restart": "restart"`` for booleans). Values are
converted to the field's type; unknown flags and bad values raise ``ValueError`` naming the flags
the chosen strategy accepts.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import tomllib

from noisesearch.strategies.base import _STRATEGIES


def _flag_table(cls: type) -> dict[str, tuple[str, bool | None]]:
    """flag -> (field, fixed boolean value or None when the flag takes a value)."""
    table: dict[str, tuple[str, bool | None]] = {}
    for flags, field in getattr(cls, "cli_options", {}).items():
        if "/" in flags:
            on, off = flags.split("/", 1)
            table[on] = (field, True)
            table[off] = (field, False)
        else:
            table[flags] = (field, None)
    return table


def _convert(cls: type, field: str, raw: Any) -> Any:
    hints = typing.get_type_hints(cls)
    kind = hints.get(field, str)
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        kind = next((a for a in typing.get_args(kind) if a is not type(None)), str)
    try:
        if kind is bool:
            if isinstance(raw, bool):
                return raw
            if str(raw).lower() in ("1", "true", "yes", "on"):
                return True
            if str(raw).lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if kind in (int, float, str):
            if kind is int and isinstance(raw, float) and not raw.is_integer():
                raise ValueError
            return kind(raw)
    except (TypeError, ValueError, OverflowError):  # OverflowError: a TOML integer too large for a float
        raise ValueError(f"option {field!r} of strategy {cls.name!r} needs a {kind.__name__}, got {raw!r}") from None  # type: ignore[attr-defined]
    return raw


def parse_strategy_args(strategy: str, args: Sequence[str]) -> dict[str, Any]:
    """Parses extra command-line words (``--zo-neighbors 4 --zo-no-restart``) for ``strategy``."""
    if strategy not in _STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose one of: {', '.join(sorted(_STRATEGIES))}")
    cls = _STRATEGIES[strategy]
    table = _flag_table(cls)
    out: dict[str, Any] = {}
    words = list(args)
    i = 0
    while i < len(words):
        word = words[i]
        flag, has_value, inline = word.partition("=")
        if flag not in table:
            accepted = ", ".join(sorted(table)) or "none"
            raise ValueError(f"unknown option {flag!r} for strategy {strategy!r}; it accepts: {accepted}")
        field, fixed = table[flag]
        if fixed is not None:
            if has_value:  # "--zo-restart=false" must not silently mean --zo-restart
                raise ValueError(f"option {flag} takes no value (got {word!r}); use the flag or its opposite")
            out[field] = fixed
            i += 1
            continue
        if has_value:
            value = inline
            i += 1
        else:
            if i + 1 >= len(words):
                raise ValueError(f"option {flag} needs a value")
            value = words[i + 1]
            i += 2
        out[field] = _convert(cls, field, value)
    return out


def load_strategy_file(strategy: str, path: Path) -> dict[str, Any]:
    """Options for ``strategy`` from a TOML file: top-level keys, or a ``[strategy.<name>]`` table."""
    if strategy not in _STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose one of: {', '.join(sorted(_STRATEGIES))}")
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise ValueError(f"cannot read strategy config {str(path)!r}: {e.strerror}") from e
    except UnicodeDecodeError as e:
        raise ValueError(f"cannot read strategy config {str(path)!r}: not UTF-8 text ({e.reason})") from e
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"strategy config {str(path)!r} is not valid TOML: {e}") from e
    tables = data.get("strategy")
    if isinstance(tables, dict) and strategy not in tables:
        raise ValueError(
            f"strategy config {str(path)!r} has no [strategy.{strategy}] table (it has: {', '.join(map(repr, tables))})"
        )
    section = tables[strategy] if isinstance(tables, dict) else data
    if not isinstance(section, dict):
        raise ValueError(
            f"strategy config {str(path)!r}: [strategy.{strategy}] must be a table of options, got {section!r}"
        )
    cls = _STRATEGIES[strategy]
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(section) - fields)
    if unknown:
        raise ValueError(
            f"strategy {strategy!r} has no option {', '.join(unknown)}; its options are: {', '.join(sorted(fields))}"
        )
    return {k: _convert(cls, k, v) for k, v in section.items()}


def strategy_help() -> str:
    """One line per strategy listing its command-line flags."""
    lines = []
    for name, cls in sorted(_STRATEGIES.items()):
        flags = ", ".join(getattr(cls, "cli_options", {})) or "(no options)"
        lines.append(f"{name}: {flags}")
    return "\n".join(lines)
