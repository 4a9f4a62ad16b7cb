"""Crash-safe files: atomic writes and append-only JSONL logs that survive a kill at any moment.

A row is appended in one ``write`` of a newline-terminated line followed by ``fsync``; a last line
without its newline is a torn write, ignored by :func:`read_jsonl` and cut off by
:func:`truncate_torn_tail` before the next append. Sweeps and NPD collection resume from these logs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any


def read_jsonl(
    path: Path,
    required_key: str = "key",
    check: Callable[[dict[str, Any]], None] | None = None,
    what: str = "row of this log",
) -> list[dict[str, Any]]:
    """The complete rows of a JSONL file; a last line without its newline (a torn write) is ignored.

    A malformed line anywhere else means the file was edited or damaged outside noisesearch:
    ``ValueError`` names the file and line. ``check(row)``, when given, raises ``ValueError`` saying
    what is wrong with a row of the wrong shape; the error then names the file, the line and ``what``
    the row should have been.
    """
    try:
        data = path.read_bytes()
    except OSError as e:
        kind = "a folder, not a file" if path.is_dir() else f"unreadable ({e.strerror or e})"
        raise ValueError(f"{path} is {kind}; it should be a JSON-lines file written by noisesearch") from None
    lines = data.split(b"\n")
    rows = []
    for number, line in enumerate(lines[:-1], start=1):  # lines[-1] is b"" or a torn tail
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
            cause = getattr(e, "msg", None) or (
                "not UTF-8" if isinstance(e, UnicodeDecodeError) else "nested too deeply"
            )
            raise ValueError(
                f"{path}:{number} is not a JSON row ({cause}); the file was changed outside noisesearch: "
                "delete that line (the row will be recomputed) and run again"
            ) from None
        if not isinstance(row, dict) or required_key not in row:
            problem = f"no {required_key!r}" if isinstance(row, dict) else f"a JSON {type(row).__name__}, not an object"
            raise ValueError(f"{path}:{number} is not a {what} ({problem}); delete that line and run again")
        if check is not None:
            try:
                check(row)
            except ValueError as e:
                raise ValueError(f"{path}:{number} is not a {what}: {e}; delete that line and run again") from None
        rows.append(row)
    return rows


def truncate_torn_tail(path: Path) -> int:
    """Cuts a torn last line (no newline) off ``path`` so appends start on a fresh line; returns bytes cut."""
    if not path.exists():
        return 0
    with open(path, "r+b") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return 0
        # read backwards to the last newline
        pos, chunk = size, 1 << 16
        while pos > 0:
            start = max(0, pos - chunk)
            f.seek(start)
            block = f.read(pos - start)
            nl = block.rfind(b"\n")
            if nl >= 0:
                keep = start + nl + 1
                break
            pos = start
        else:
            keep = 0
        if keep < size:
            f.truncate(keep)
            f.flush()
            os.fsync(f.fileno())
        return size - keep


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Writes ``data`` to ``path`` via a temporary file, fsync and rename: readers never see half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def append_row(path: Path, row: Mapping[str, Any]) -> None:
    """Appends one row as a single newline-terminated write, then fsyncs it."""
    data = (json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
