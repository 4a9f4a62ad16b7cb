"""User-given paths."""

from __future__ import annotations

import os
from pathlib import Path


def user_path(path: str | os.PathLike[str]) -> Path:
    """``path`` with ``~`` and ``~user`` expanded; a ``~user`` that does not exist (or a home that
    cannot be determined) is a ``ValueError`` naming the path, not a ``RuntimeError``."""
    try:
        return Path(path).expanduser()
    except RuntimeError as err:  # pathlib: "Could not determine home directory."
        raise ValueError(f"cannot expand {str(path)!r} ({err}); give the path without '~'") from None
