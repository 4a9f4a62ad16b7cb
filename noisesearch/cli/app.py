"""The ``noisesearch`` Typer application and its command groups (each command lives in its module)."""

from __future__ import annotations

import sys

import typer

app = typer.Typer(
    name="noisesearch",
    help="Inference-time noise search for diffusion models: spend extra compute to find better initial noises.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
toyworld_app = typer.Typer(help="The embedded default world: prompts, training, evaluation.", no_args_is_help=True)
npnet_app = typer.Typer(
    help="NPNet golden noise (Zhou et al. 2024): convert official checkpoints, collect NPD pairs, train.",
    no_args_is_help=True,
)
app.add_typer(toyworld_app, name="toyworld")
app.add_typer(npnet_app, name="npnet")


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:  # pragma: no cover
        sys.exit(130)
