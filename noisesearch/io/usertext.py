"""User text (prompts, names, words) as it is echoed back in errors, logs and tables.

A prompt can be 100,000 characters long; echoing it whole turns a one-line error into pages. Every
place that shows user text goes through :func:`abbreviate` (plain, for tables and logs) or
:func:`quote` (quoted, for error messages): one line, at most ``limit`` characters of the text, and
its full length when something was cut.
"""

from __future__ import annotations

#: characters of user text shown before it is cut
LIMIT = 80


def _one_line(text: str) -> str:
    return text.replace("\r\n", " ").replace("\n", " ").replace("\r", " ")


def abbreviate(text: object, limit: int = LIMIT) -> str:
    """``text`` on one line; when longer than ``limit``, its first ``limit`` characters, ``…`` and its length."""
    value = str(text)
    flat = _one_line(value)
    if len(value) <= limit:
        return flat
    return f"{flat[:limit]}… ({len(value):,} characters)"


def quote(text: object, limit: int = LIMIT) -> str:
    """``repr``-style quoted ``text`` for error messages, cut like :func:`abbreviate` (the length outside the quotes)."""
    value = str(text)
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}… ({len(value):,} characters)"
