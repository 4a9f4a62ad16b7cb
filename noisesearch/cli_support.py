"""What every ``noisesearch`` subcommand shares: consoles and the one-line user error (exit 2)."""

from __future__ import annotations

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
