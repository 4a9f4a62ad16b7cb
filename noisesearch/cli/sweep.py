"""``noisesearch sweep`` (a grid of searches, resumable) and ``noisesearch report``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from noisesearch.cli.app import app
from noisesearch.cli.support import console, err_console, fail, install_sigterm_as_interrupt


@app.command("sweep")
def sweep_command(
    config: Annotated[Path, typer.Argument(help="Sweep config (TOML); see examples/sweep_toyworld.toml.")],
    out: Annotated[
        str, typer.Option(metavar="PATH", help="Results folder; run again with the same folder to resume.")
    ] = "noisesearch-sweep",
    dry_run: Annotated[
        bool,
        typer.Option(
            help="Check the config (loading the verifiers to check every prompt) and print the plan; write nothing."
        ),
    ] = False,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose", help="Also show the libraries' progress bars, logs and warnings (diffusers, transformers)."
        ),
    ] = False,
) -> None:
    """Run (or resume) a benchmark sweep; shards across processes under `accelerate launch -m noisesearch sweep`.

    Everything is checked before anything is written: names and options, models (offline), every
    prompt against every verifier, and the output folder. A rejected config changes nothing on disk.
    """
    from noisesearch.sweeps import SweepConfig, check_prompts, check_sweep, completed_rows, sweep

    try:
        from noisesearch.io.outputs import check_output_dir

        check_output_dir(out)  # an empty --out is refused before the config is even read
        cfg = SweepConfig.from_toml(config)
        if dry_run:
            items = check_sweep(cfg, out)
            from noisesearch.api import resolve_verifier
            from noisesearch.cli.quiet import library_output
            from noisesearch.models import resolve_device

            library_output(verbose)
            device = resolve_device("cpu" if all(m == "stub" for m in cfg.models) else cfg.device)
            loaded: dict[str, Any] = {}

            def verifier_for(name: str) -> Any:
                if name not in loaded:
                    loaded[name] = resolve_verifier(name, device)
                return loaded[name]

            check_prompts(cfg, list(dict.fromkeys(it.prompt for it in items)), verifier_for)
            out_path = Path(out).expanduser()
            done = completed_rows(out_path) if out_path.is_dir() else {}
            console.print(
                f"{len(items)} rows = {len({it.prompt.text for it in items})} prompts x {len(cfg.models)} models x "
                f"{len(cfg.strategies)} strategies x {len(cfg.search_verifiers)} search verifiers x "
                f"{len(cfg.budgets)} budgets x {len(cfg.seeds)} seeds; {sum(it.key in done for it in items)} already in {out}"
            )
            return
    except (ValueError, OSError, ImportError) as e:
        fail(str(e))
        return
    from noisesearch.cli.quiet import library_output

    library_output(verbose)
    install_sigterm_as_interrupt()
    try:
        summary = sweep(cfg, out, log=lambda line: console.print(line, highlight=False, markup=False, soft_wrap=True))
    except KeyboardInterrupt:
        err_console.print("interrupted: finished rows are kept; run the same command again to resume")
        raise typer.Exit(code=130) from None
    except (ValueError, OSError, ImportError) as e:
        fail(str(e))
        return
    if summary.results_path is not None:
        console.print(f"results: {summary.results_path}; report: noisesearch report {summary.out_dir}")


@app.command("report")
def report_command(
    results_dir: Annotated[Path, typer.Argument(help="The --out folder of `noisesearch sweep`.")],
    out: Annotated[
        Optional[str], typer.Option(metavar="PATH", help="Folder for report.html and plots/ (default: RESULTS_DIR).")
    ] = None,
    embed: Annotated[
        Optional[bool],
        typer.Option("--embed/--link", help="Images inside the HTML (base64) or linked; default: embed if small."),
    ] = None,
    max_prompts: Annotated[int, typer.Option(help="Prompts shown in each image grid.")] = 24,
) -> None:
    """Write scaling plots (PNG) and a self-contained HTML report of a sweep."""
    from noisesearch.sweeps.report import write_report

    try:
        if max_prompts < 1:
            raise ValueError(f"--max-prompts must be >= 1, got {max_prompts}")
        if out is not None:
            from noisesearch.io.outputs import check_output_dir

            check_output_dir(out, files=("report.html",), folders=("plots",))
        files = write_report(results_dir, out, embed=embed, max_prompts=max_prompts)
    except (ValueError, OSError) as e:
        fail(str(e))
        return
    for plot in files.plots:
        console.print(f"wrote {plot}")
    console.print(f"wrote {files.html} ({files.rows} rows{'' if files.final else ', sweep unfinished'})")
