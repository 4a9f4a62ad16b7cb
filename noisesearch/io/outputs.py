"""Checked output places: every folder or file a command writes is checked before any compute.

``noisesearch run``, ``sweep``, ``report``, ``npnet convert/collect/train`` and ``toyworld train``
pass their output paths through :func:`check_output_dir` or :func:`check_output_file` first. A
check creates nothing (its writability probe creates and removes one temporary file in the nearest
folder that exists), so a refused command leaves the disk as it was. It refuses, in one line naming
the path:

- an empty path (``--out ''`` would otherwise write into the working folder);
- a regular file where a folder belongs, or a path below a regular file;
- a folder where a file belongs;
- a place that cannot be written (tested by writing, so it also holds for read-only mounts and
  for root, whom permission bits do not stop).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from noisesearch.io.paths import user_path
from noisesearch.io.usertext import quote


class OutputError(ValueError):
    """An output path that cannot be used; the message names it and says what to pass instead."""


def _shown(path: Path | str) -> str:
    return quote(str(path), 200)


def _path(path: str | os.PathLike[str], option: str, kind: str) -> Path:
    text = os.fspath(path)
    if not str(text).strip():
        raise OutputError(f"{option} is empty; give an output {kind}")
    return user_path(text)


def _nearest_existing_folder(path: Path, option: str) -> Path:
    """The closest existing ancestor of ``path`` (``path`` excluded); a regular file there is an error."""
    for parent in path.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise OutputError(
                    f"{option} {_shown(path)} lies below {_shown(parent)}, which is a file, not a folder; "
                    "pass a path in a folder"
                )
            return parent
    return Path(path.absolute().anchor)  # pragma: no cover - the root always exists


def _probe(folder: Path, path: Path, option: str) -> None:
    """Creates and removes a temporary file in ``folder``: the only sure test that it can be written."""
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".noisesearch-write-test-"):
            pass
    except OSError as e:
        where = "" if folder == path else f" ({_shown(folder)} is not writable)"
        raise OutputError(
            f"cannot write to {option} {_shown(path)}{where}: {e.strerror or e}; pass a writable place"
        ) from None


def check_output_dir(
    path: str | os.PathLike[str],
    option: str = "--out",
    files: Sequence[str] = (),
    folders: Sequence[str] = (),
) -> Path:
    """The output folder ``path`` (``~`` expanded) once it is known to be usable; creates nothing.

    ``files`` and ``folders`` name entries the command will write inside it: an existing entry of
    the other kind (a folder called ``report.json``) is refused too.
    """
    out = _path(path, option, "folder")
    if out.exists() and not out.is_dir():
        raise OutputError(f"{option} {_shown(out)} is a file, not a folder; pass a folder (it is created if needed)")
    folder = out if out.is_dir() else _nearest_existing_folder(out, option)
    for name in files:
        if (out / name).is_dir():
            raise OutputError(f"{option}: {_shown(out / name)} is a folder where a file is written; move it away")
    for name in folders:
        if (out / name).exists() and not (out / name).is_dir():
            raise OutputError(f"{option}: {_shown(out / name)} is a file where a folder is written; move it away")
    _probe(folder, out, option)
    return out


def check_output_file(path: str | os.PathLike[str], option: str = "--out", suffix: str | None = None) -> Path:
    """The output file ``path`` (``~`` expanded) once it is known to be writable; creates nothing.

    Files are written through a temporary file and a rename, so what matters is that its folder can
    be written; an existing file is replaced.
    """
    out = _path(path, option, "file")
    if suffix is not None and out.suffix != suffix:
        raise OutputError(f"{option} must end in {suffix}, got {_shown(out)}")
    if out.is_dir():
        raise OutputError(
            f"{option} {_shown(out)} is a folder; give a file name, e.g. {_shown(out / ('out' + (suffix or '')))}"
        )
    folder = out.parent if out.parent.is_dir() else _nearest_existing_folder(out, option)
    _probe(folder, out, option)
    return out


def make_output_dir(path: Path, option: str = "--out") -> Path:
    """Creates a checked output folder (and its parents) at write time; ``OutputError`` names it on failure."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create {option} folder {_shown(path)}: {e.strerror or e}") from None
    return path
