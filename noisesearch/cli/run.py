"""``noisesearch run`` (one search per prompt; images and report.json) and the listings
(``strategies``, ``verifiers``, ``models``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from noisesearch.cli.app import app
from noisesearch.cli.support import UserError, console, err_console, fail, install_sigterm_as_interrupt
from noisesearch.io.usertext import quote
from noisesearch.prompts import read_prompts


def _summary_table(results: list[Any], width: int = 80) -> Table:
    """One line per prompt within ``width`` columns (80 reads well anywhere): the numbers keep their
    full width and the prompt is cut to what is left, never wrapped."""
    from rich import box

    from noisesearch.io.usertext import abbreviate

    headers = ("prompt", "seed", "best", "median", "cands", "NFE", "secs")
    rows = []
    for r in results:
        finite = sorted(c.score for c in r.candidates if c.finite)
        median = finite[len(finite) // 2] if finite else float("nan")
        best = r.best if finite else None
        rows.append(
            (
                ("(partial) " if r.partial else "") + abbreviate(r.prompt, 60),
                str(best.seed) if best else "-",
                f"{best.score:.4f}" if best else "-",
                f"{median:.4f}",
                str(len(r.candidates)),
                f"{r.accounting.nfe}/{r.budget_nfe}",
                f"{sum(r.accounting.seconds.values()):.1f}",
            )
        )
    widths = [max([len(h)] + [len(row[i]) for row in rows]) for i, h in enumerate(headers)]
    # per column: one space of padding either side and a separator; plus the box's two edges
    room = max(12, width - sum(widths[1:]) - 3 * len(headers) - 1)
    table = Table(title="noisesearch results", box=box.SIMPLE_HEAD, title_justify="left")
    table.add_column("prompt", no_wrap=True, overflow="ellipsis", width=min(widths[0], room))
    for header, w in zip(headers[1:], widths[1:]):
        table.add_column(header, no_wrap=True, justify="right", width=w)
    for row in rows:
        table.add_row(*row)
    return table


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def run(
    ctx: typer.Context,
    prompt: Annotated[Optional[str], typer.Option("--prompt", "-p", help="Text prompt.")] = None,
    prompts_file: Annotated[
        Optional[Path], typer.Option(help="TXT file (one prompt per line) or CSV with a 'prompt' column.")
    ] = None,
    model: Annotated[
        str, typer.Option(help="'toyworld' (embedded default), a diffusers folder, or a Hugging Face id in your cache.")
    ] = "toyworld",
    strategy: Annotated[str, typer.Option(help="Search strategy (see `noisesearch strategies`).")] = "random",
    verifier: Annotated[
        Optional[str],
        typer.Option(
            help="Verifier name or spec with options, e.g. 'clipscore(model=ViT-B-32)' or "
            "'rank-ensemble(verifiers=[aesthetic,clipscore,imagereward])' (see `noisesearch verifiers`); "
            "default depends on the model."
        ),
    ] = None,
    budget: Annotated[Optional[int], typer.Option(help="Compute budget in NFEs (default: 16 full samples).")] = None,
    candidates: Annotated[
        Optional[int], typer.Option(help="Budget as a number of full samples instead of NFEs.")
    ] = None,
    steps: Annotated[
        Optional[int], typer.Option(help="Solver steps per sample (default depends on the model).")
    ] = None,
    guidance: Annotated[Optional[float], typer.Option(help="Classifier-free guidance scale.")] = None,
    scheduler: Annotated[
        Optional[str], typer.Option(help="ddim, euler, dpm++2m or flow-euler (default depends on the model).")
    ] = None,
    height: Annotated[Optional[int], typer.Option(help="Image height in pixels.")] = None,
    width: Annotated[Optional[int], typer.Option(help="Image width in pixels.")] = None,
    seed: Annotated[int, typer.Option(help="Candidate i gets seed SEED+i (reproducible in plain diffusers).")] = 0,
    out: Annotated[str, typer.Option(metavar="PATH", help="Output directory.")] = "noisesearch-out",
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:N or auto.")] = "auto",
    dtype: Annotated[str, typer.Option(help="auto, fp32, fp16 or bf16 (auto: bf16 on GPU, fp32 on CPU).")] = "auto",
    max_batch: Annotated[
        str,
        typer.Option(
            help="Candidates per network call, or 'auto': the largest that fits in free GPU memory (32 on CPU)."
        ),
    ] = "auto",
    top_k: Annotated[int, typer.Option(help="Number of best images to save.")] = 1,
    compile: Annotated[bool, typer.Option(help="torch.compile the denoiser with CUDA graphs (GPU only).")] = False,
    strategy_config: Annotated[
        Optional[Path], typer.Option(help="TOML file of strategy hyperparameters (flags below override it).")
    ] = None,
    prior: Annotated[
        str, typer.Option(help="Source of initial noises: 'none' (standard Gaussian) or 'npnet' (golden noise).")
    ] = "none",
    npnet_checkpoint: Annotated[
        Optional[Path],
        typer.Option(help="NPNet file for --prior npnet / --strategy npnet (default: the model's shipped one)."),
    ] = None,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose", help="Also show the libraries' progress bars, logs and warnings (diffusers, transformers)."
        ),
    ] = False,
) -> None:
    """Search the initial noise for one prompt (or a file of prompts); write images and report.json.

    Strategy hyperparameters are extra flags, e.g. `--strategy zero-order --zo-neighbors 4`;
    `noisesearch strategies` lists each strategy's flags.
    """
    try:
        prompts = read_prompts(prompt, prompts_file)
        if top_k < 1:
            raise UserError(f"--top-k must be >= 1, got {top_k}")
        if prior not in ("none", "npnet"):
            raise UserError(f"unknown --prior {prior!r}; choose 'none' or 'npnet'")
        from noisesearch.core.memory import parse_max_batch

        max_batch_value = parse_max_batch(max_batch)
        if not 0 <= seed < 2**63:  # candidate seeds seed+i must fit torch's 64-bit generator seeds
            raise UserError(f"--seed must be >= 0 and < 2**63, got {seed}")
        if npnet_checkpoint is not None and prior != "npnet" and strategy != "npnet":
            raise UserError("--npnet-checkpoint needs --prior npnet or --strategy npnet")
        from noisesearch.io.outputs import check_output_dir
        from noisesearch.io.results import OUTPUT_FILES

        out_dir = check_output_dir(out, "--out", files=OUTPUT_FILES if prompt is not None else ())
    except (UserError, ValueError) as e:
        fail(str(e))
        return

    from noisesearch.api import run_resolved
    from noisesearch.io.results import slug, write_outputs
    from noisesearch.request import Sampling, SearchRequest, ensure_registrations, resolve
    from noisesearch.verifiers.base import check_prompt

    install_sigterm_as_interrupt()
    results = []
    try:
        from noisesearch.strategies.options import load_strategy_file, parse_strategy_args

        ensure_registrations()
        strategy_options = load_strategy_file(strategy, strategy_config) if strategy_config else {}
        strategy_options.update(parse_strategy_args(strategy, ctx.args))
        request = SearchRequest(
            model=model,
            strategy=strategy,
            strategy_options=strategy_options,
            verifier=verifier,
            budget=budget,
            candidates=candidates,
            seed=seed,
            sampling=Sampling(steps, guidance, scheduler, height, width, max_batch=max_batch_value),
            prior=prior,
            npnet_checkpoint=npnet_checkpoint,
            device=device,
            dtype=dtype,
            compile=compile,
        )
        request.check()  # names, options and values (verifier spec and ensemble members too): nothing loaded yet
        if npnet_checkpoint is not None:
            from noisesearch.npnet.prior import load_cached

            load_cached(npnet_checkpoint)  # a bad file is named before the model loads (cached for the run)
        from noisesearch.cli.quiet import library_output

        library_output(verbose)
        resolved = resolve(request)
        if resolved.adapter.info.family == "tiny-random":
            console.print("[yellow]note:[/] using a tiny RANDOM-WEIGHT pipeline: images are noise-like by design")
        for text in prompts:  # all prompts up front: no run stops halfway on a prompt it cannot score
            check_prompt(resolved.verifier, text)
    except (ValueError, OSError, ImportError) as e:
        fail(str(e))
        return
    from noisesearch.io.outputs import make_output_dir
    from noisesearch.io.usertext import abbreviate

    interrupted = False
    for i, text in enumerate(prompts):
        target = out_dir if len(prompts) == 1 else out_dir / f"{i:04d}-{slug(text)}"
        try:
            make_output_dir(target)
        except ValueError as e:
            fail(str(e))
            return
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("NFE"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        ) as bar:
            task = bar.add_task(abbreviate(text, 40), total=None)

            def progress(used: int, total: int, task: Any = task) -> None:
                bar.update(task, completed=used, total=total)

            try:
                result = run_resolved(resolved, text, progress=progress)
            except KeyboardInterrupt:
                interrupted = True
                break
            except ValueError as e:
                fail(str(e))
                return
        try:
            written = write_outputs(result, target, top_k=top_k)
        except OSError as e:
            fail(f"cannot write the results to {quote(str(target), 200)}: {e.strerror or e}")
            return
        results.append(result)
        console.print(f"wrote {', '.join(Path(p).name for p in written.values())} to {target}")
        if result.partial:
            interrupted = True
            break
    if results:
        console.print(_summary_table(results, min(console.width, 100)))
    if interrupted:
        if results:
            err_console.print("interrupted: results computed so far were written (report.json marked partial)")
        else:
            err_console.print("interrupted before any candidate was finished: nothing was written")
        raise typer.Exit(code=130)


@app.command()
def strategies() -> None:
    """List the search strategies."""
    from noisesearch.request import ensure_registrations
    from noisesearch.strategies import available_strategies

    ensure_registrations()
    from noisesearch.strategies.base import _STRATEGIES

    table = Table("strategy", "description", "flags for `noisesearch run`")
    for name, desc in available_strategies().items():
        table.add_row(name, desc, ", ".join(getattr(_STRATEGIES[name], "cli_options", {})) or "-")
    console.print(table)


@app.command()
def verifiers() -> None:
    """List the registered verifiers."""
    from noisesearch.request import ensure_registrations
    from noisesearch.verifiers import available_verifiers
    from noisesearch.verifiers.catalog import scan

    ensure_registrations()
    local = {a.name: a for a in scan()}
    table = Table("verifier", "description", "local weights")
    for name, desc in available_verifiers().items():
        a = local.get(name)
        if a is None:
            status = "built in"
        elif a.ready:
            status = "[green]found[/]: " + ", ".join(str(p) for p in a.found.values())
        else:
            status = "[yellow]missing[/]: " + "; ".join(a.missing)
        table.add_row(name, desc, status)
    console.print(table)


@app.command("models")
def models_command(
    cache_dir: Annotated[
        Optional[Path], typer.Option(help="Hugging Face hub cache to scan (default: HF_HUB_CACHE / HF_HOME's).")
    ] = None,
    local: Annotated[bool, typer.Option("--local", help="Only models found locally.")] = False,
) -> None:
    """List supported model families, example checkpoints, and which are in the local cache (no network)."""
    from noisesearch.models import get_family
    from noisesearch.models.catalog import list_models

    if cache_dir is not None and not cache_dir.is_dir():
        fail(f"--cache-dir {str(cache_dir)!r} is not a folder")
        return
    statuses = [m for m in list_models(cache_dir) if m.found or not local]
    families = Table("family", "defaults", "about")
    for family in dict.fromkeys(m.entry.family for m in statuses):
        record = get_family(family)
        defaults = f"{record.steps} step{'s' * (record.steps != 1)}, cfg {record.guidance:g}"
        families.add_row(family, defaults, record.note)
    # hub ids are what users copy: never wrap or truncate them; the other columns wrap instead
    width = max([len(m.entry.hub_id) for m in statuses] + [15])
    checkpoints = Table()
    checkpoints.add_column("model (--model)", no_wrap=True, min_width=width)
    checkpoints.add_column("family", overflow="fold")
    checkpoints.add_column("local")
    missing, partial = [], []
    for m in statuses:
        if m.status == "cached":
            where = f"[green]cached[/] {m.size_bytes / 2**30:.1f}G"
        elif m.status == "partial":
            where = "[yellow]partial[/]"
            partial.append(f"{m.entry.hub_id} lacks {', '.join(m.missing)}")
        elif m.status == "built-in":
            where = "built in"
        else:
            where = "[dim]missing[/]" + (" (gated)" if m.entry.gated else "")
            missing.append(m.entry.hub_id)
        checkpoints.add_row(m.entry.hub_id, m.entry.family, where)
    console.print(families)
    console.print(checkpoints)
    for line in partial:
        console.print(f"[yellow]partial:[/] {line}", highlight=False)
    if missing:
        console.print(
            "to use a missing model, run on a connected machine: [bold]hf download <model>[/] "
            "(gated ones need their license accepted on the hub first), then copy the cache here or set HF_HOME",
            highlight=False,
        )
