"""``noisesearch npnet``: convert official checkpoints, collect a noise prompt dataset, train."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from noisesearch.cli.app import npnet_app
from noisesearch.cli.support import console, fail


@npnet_app.command("convert")
def convert(
    src: Annotated[Path, typer.Argument(help="Official NPNet checkpoint (sdxl.pth, dreamshaper.pth or dit.pth).")],
    dst: Annotated[str, typer.Argument(metavar="DST", help="Output .safetensors file.")],
    preset: Annotated[
        Optional[str], typer.Option(help="Architecture: sdxl, dreamshaper or dit (default: from the text width).")
    ] = None,
) -> None:
    """Validate an official NPNet checkpoint strictly (no code runs) and write it as safetensors."""
    from noisesearch.io.outputs import check_output_file
    from noisesearch.npnet.checkpoint import check_checkpoint_path, convert_official

    try:
        check_checkpoint_path(src)
        out = check_output_file(dst, "the output", suffix=".safetensors")
        loaded = convert_official(src, out, preset)
    except (ValueError, OSError) as e:
        fail(str(e))
        return
    net = loaded.net
    n = sum(p.numel() for p in net.parameters())
    console.print(
        f"wrote {out} ({n / 1e6:.1f}M parameters, latent {net.config.latent_channels}×"
        f"{net.config.latent_size}², text {net.config.text_tokens}×{net.config.text_dim})"
    )
    if loaded.set_aside:
        console.print(
            f"set aside {len(loaded.set_aside)} entries the official code creates but never uses "
            f"(SVDNoiseUnet's BatchNorm): {', '.join(loaded.set_aside)}"
        )


@npnet_app.command("collect")
def collect_command(
    out: Annotated[
        str, typer.Option(metavar="PATH", help="Dataset folder; run again with the same folder to resume.")
    ] = "npd",
    model: Annotated[
        str, typer.Option(help="'toyworld', a diffusers folder, or a Hugging Face id in your cache.")
    ] = "toyworld",
    prompts: Annotated[
        str, typer.Option(help="Built-in prompt set (toyworld-train) or a TXT/CSV prompts file.")
    ] = "toyworld-train",
    verifier: Annotated[
        Optional[str], typer.Option(help="Verifier that judges the pairs (default: the model's).")
    ] = None,
    pairs_per_prompt: Annotated[int, typer.Option(help="Seeds per prompt.")] = 4,
    shard_size: Annotated[int, typer.Option(help="(prompt, seed) units per shard / batch.")] = 64,
    guidance_high: Annotated[float, typer.Option(help="ω_l: guidance of the DDIM step from x_T.")] = 5.5,
    guidance_low: Annotated[float, typer.Option(help="ω_w: guidance of the inversion step back to x_T.")] = 1.0,
    margin: Annotated[float, typer.Option(help="Keep a pair when the golden image wins by more than this.")] = 0.0,
    seed: Annotated[int, typer.Option(help="Seed of the first unit (unit k uses SEED+k).")] = 0,
    steps: Annotated[Optional[int], typer.Option(help="Sampling steps (default depends on the model).")] = None,
    guidance: Annotated[Optional[float], typer.Option(help="Sampling guidance (default depends on the model).")] = None,
    max_shards: Annotated[Optional[int], typer.Option(help="Stop after this many new shards.")] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:N or auto.")] = "auto",
    dtype: Annotated[str, typer.Option(help="auto, fp32, fp16 or bf16.")] = "auto",
    max_batch: Annotated[int, typer.Option(help="Candidates per network call.")] = 32,
    verbose: Annotated[
        bool, typer.Option("--verbose", help="Also show the libraries' progress bars and warnings.")
    ] = False,
) -> None:
    """Collect NPD pairs by re-denoise sampling: (x_T, x'_T) kept when x'_T's image scores higher."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from noisesearch.npnet.collect import CollectConfig, collect
    from noisesearch.prompts import PromptError, load_prompts
    from noisesearch.request import Sampling, SearchRequest, resolve

    try:
        if max_shards is not None and max_shards < 1:
            raise ValueError(f"--max-shards must be >= 1, got {max_shards}")
        config = CollectConfig(guidance_high, guidance_low, margin, pairs_per_prompt, shard_size, seed)
        from noisesearch.io.outputs import check_output_dir

        out_dir = check_output_dir(out)
        items = [p.text for p in load_prompts(prompts)]
        # the same request as a search: model defaults, verifier spec and checks in one place
        request = SearchRequest(
            model=model,
            verifier=verifier,
            sampling=Sampling(steps, guidance, max_batch=max_batch),
            device=device,
            dtype=dtype,
        )
        request.check()
        from noisesearch.cli.quiet import library_output

        library_output(verbose)
        resolved = resolve(request)
        adapter, core_config, verif = resolved.adapter, resolved.core_config, resolved.verifier
    except (ValueError, OSError, PromptError, ImportError) as e:
        fail(str(e))
        return
    console.print(f"{len(items)} prompts × {pairs_per_prompt} seeds, verifier {verif.name}, into {out_dir}")
    with Progress(
        TextColumn("[bold]shards"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[kept]} kept"),
        TimeElapsedColumn(),
        console=console,
    ) as bar:
        task = bar.add_task("collect", total=None, kept=0)
        kept = 0

        def on_shard(done: int, total: int, k: int) -> None:
            nonlocal kept
            kept += k
            bar.update(task, completed=done, total=total, kept=kept)

        try:
            summary = collect(
                adapter, items, verif, out_dir, config, core_config, max_shards=max_shards, on_shard=on_shard
            )
        except ValueError as e:
            fail(str(e))
            return
        except KeyboardInterrupt:
            console.print(f"interrupted: finished shards are in {out_dir}; run the same command again to resume")
            raise typer.Exit(code=130) from None
    console.print(
        f"{summary.shards_done}/{summary.shards_total} shards done; this run: {summary.units} pairs tried, "
        f"{summary.kept} kept, {summary.nfe} NFEs, {summary.seconds:.0f}s"
    )


@npnet_app.command("train")
def train_command(
    data: Annotated[Path, typer.Argument(help="NPD folder written by `noisesearch npnet collect`.")],
    out: Annotated[
        str, typer.Option(metavar="PATH", help="Output NPNet .safetensors (best validation loss).")
    ] = "npnet.safetensors",
    model: Annotated[str, typer.Option(help="The diffusion model whose text encoder conditions NPNet.")] = "toyworld",
    preset: Annotated[str, typer.Option(help="Architecture: toyworld, sdxl, dreamshaper or dit.")] = "toyworld",
    epochs: Annotated[int, typer.Option(help="Passes over the training pairs.")] = 30,
    batch_size: Annotated[int, typer.Option(help="Pairs per optimiser step.")] = 64,
    lr: Annotated[float, typer.Option(help="AdamW learning rate.")] = 1e-4,
    val_fraction: Annotated[float, typer.Option(help="Fraction of pairs held out for validation.")] = 0.05,
    seed: Annotated[int, typer.Option(help="Seed of initialisation and shuffling.")] = 0,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:N or auto.")] = "auto",
    verbose: Annotated[
        bool, typer.Option("--verbose", help="Also show the libraries' progress bars and warnings.")
    ] = False,
) -> None:
    """Train NPNet on an NPD (MSE to the golden noise, AdamW; each pair conditioned on its own prompt)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from noisesearch.cli.quiet import library_output
    from noisesearch.core.sampler import CoreConfig
    from noisesearch.io.outputs import check_output_file
    from noisesearch.models import load_model
    from noisesearch.npnet.collect import load_dataset
    from noisesearch.npnet.model import preset as make_preset
    from noisesearch.npnet.train import TrainConfig, prompt_embedding_table, train_npnet

    try:
        out_path = check_output_file(out, "--out", suffix=".safetensors")
        config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, val_fraction=val_fraction, seed=seed)
        net_config = make_preset(preset)
        dataset = load_dataset(data)
        library_output(verbose)
        adapter = load_model(model, device=device)
        text = prompt_embedding_table(adapter, dataset.prompts, CoreConfig(guidance=1.0))
    except (ValueError, OSError) as e:
        fail(str(e))
        return
    console.print(f"{len(dataset)} pairs from {data}; NPNet preset {preset}")
    with Progress(
        TextColumn("[bold]train"),
        BarColumn(),
        TextColumn("step {task.completed}/{task.total}"),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    ) as bar:
        task = bar.add_task("train", total=None, loss=float("nan"))

        def progress(step: int, total: int, loss: float) -> None:
            bar.update(task, completed=step, total=total, loss=loss)

        try:
            summary = train_npnet(
                dataset,
                text,
                net_config,
                out_path,
                config,
                progress=progress,
                metadata={"data": str(data), "model": model},
            )
        except ValueError as e:
            fail(str(e))
            return
        except KeyboardInterrupt:
            saved = (
                f"the best checkpoint so far is in {out_path}"
                if out_path.exists()
                else "no epoch had finished: nothing was written"
            )
            console.print(f"interrupted: {saved}")
            raise typer.Exit(code=130) from None
    console.print(
        json.dumps(
            {
                "out": str(summary.path),
                "train_pairs": summary.train_pairs,
                "val_pairs": summary.val_pairs,
                "best_epoch": summary.best_epoch,
                "best_val_loss": round(summary.best_val_loss, 5),
                "identity_val_loss": round(summary.identity_val_loss, 5),
                "seconds": summary.seconds,
            }
        )
    )
