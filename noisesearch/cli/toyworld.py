"""``noisesearch toyworld``: the embedded world's prompts and training."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from noisesearch.cli.app import toyworld_app
from noisesearch.cli.support import fail


@toyworld_app.command("prompts")
def toyworld_prompts(
    category: Annotated[Optional[str], typer.Option(help="Only this category.")] = None,
) -> None:
    """List the held-out benchmark prompts of the embedded world, by category."""
    from noisesearch.toyworld import grammar

    prompts = grammar.heldout_prompts()
    cats = sorted({c for c, _ in prompts})
    if category is not None and category not in cats:
        fail(f"unknown category {category!r}; choose one of: {', '.join(cats)}")
    for cat, text in prompts:
        if category is None or cat == category:
            print(f"{cat}\t{text}")


@toyworld_app.command("train")
def toyworld_train(
    out: Annotated[str, typer.Option(metavar="PATH", help="Output pipeline folder.")] = "toyworld-pipeline",
    quick: Annotated[bool, typer.Option(help="A few steps end to end (smoke test).")] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", help="Also show the libraries' progress bars and warnings.")
    ] = False,
) -> None:
    """Train the embedded text-to-image model (VAE, then UNet + text encoder) into a diffusers folder."""
    from noisesearch.toyworld.training.pipeline import ToyTrainConfig, train_pipeline

    try:
        from noisesearch.io.outputs import check_output_dir, make_output_dir

        make_output_dir(check_output_dir(out))
    except ValueError as e:
        fail(str(e))
    from noisesearch.cli.quiet import library_output

    library_output(verbose)
    cfg = ToyTrainConfig.quick() if quick else ToyTrainConfig()
    train_pipeline(cfg, out, command=f"noisesearch toyworld train --out {out}" + (" --quick" if quick else ""))


@toyworld_app.command("train-verifiers")
def toyworld_train_verifiers(
    out: Annotated[
        str, typer.Option(metavar="PATH", help="Output folder for the verifier weights.")
    ] = "toyworld-verifiers",
    quick: Annotated[bool, typer.Option(help="A few steps (smoke test).")] = False,
) -> None:
    """Train the embedded world's learned verifiers (toyclip, toyrelation, toydetect; ~30 min on 2 cores)."""
    from noisesearch.io.outputs import check_output_dir
    from noisesearch.toyworld.training import verifiers as train_verifiers

    try:
        check_output_dir(out)
    except ValueError as e:
        fail(str(e))
    train_verifiers.main(["--out", str(out)] + (["--quick"] if quick else []))
