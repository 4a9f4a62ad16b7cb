"""What every ``noisesearch`` subcommand shares: consoles and the one-line user error (exit 2)."""

from __future__ import annotations

import signal
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

console = Console()
err_console = Console(stderr=True)


class UserError(Exception):
    """An input problem to report in one line (exit 2)."""


def fail(message: str) -> None:
    """Prints ``error: message`` on stderr, on one line, and exits with code 2 (no traceback)."""
    message = " ".join(message.splitlines())  # a library's multi-line cause still makes one line
    # escaped: a cause such as "[strategy.smc]" or a path with brackets is text, not rich markup
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


def install_sigterm_as_interrupt() -> None:
    """SIGTERM (e.g. from a job scheduler) ends a command like Ctrl-C: finished results are kept."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        signal.signal(signal.SIGTERM, handler)
    except ValueError:  # pragma: no cover - not in the main thread
        pass
