"""The Python API: :func:`search` mirrors ``noisesearch run``."""

from __future__ import annotations

import importlib.metadata
import platform
import time
from dataclasses import replace
from collections.abc import Callable
from typing import Any

import torch

from noisesearch.core.adapters.base import ModelAdapter
from noisesearch.core.memory import DEFAULT_MAX_BATCH, auto_batch, parse_max_batch
from noisesearch.core.sampler import CoreConfig, DenoisingCore
from noisesearch.engine import NoisePrior, SearchContext, SearchResult
from noisesearch.models import load_model
from noisesearch.strategies.base import Strategy, make_strategy
from noisesearch.verifiers.base import Verifier, as_verifier, check_prompt, load_verifier


def _ensure_registrations() -> None:
    # importing these modules registers the built-in strategies and verifiers
    import noisesearch.strategies  # noqa: F401
    from noisesearch.verifiers.base import register_builtin_verifiers

    register_builtin_verifiers()


def resolve_verifier(verifier: str | Verifier | Callable[..., Any], device: torch.device) -> Verifier:
    _ensure_registrations()
    if isinstance(verifier, str):
        return load_verifier(verifier, device=device)
    return as_verifier(verifier)


def resolve_strategy(strategy: str | Strategy, options: dict[str, Any]) -> Strategy:
    _ensure_registrations()
    if isinstance(strategy, str):
        return make_strategy(strategy, **options)
    if options:
        raise ValueError("strategy options are only accepted together with a strategy name")
    return strategy


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("noisesearch", "torch", "diffusers", "transformers", "open_clip_torch"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def budget_from(budget: int | None, candidates: int | None, steps: int) -> int:
    """The NFE budget from ``budget`` or ``candidates`` (full samples); validates both."""
    if budget is not None and candidates is not None:
        raise ValueError("give either a budget in NFEs or a number of candidates, not both")
    if candidates is not None:
        if not isinstance(candidates, int) or candidates < 1:
            raise ValueError(f"candidates must be a positive integer, got {candidates!r}")
        return candidates * steps
    if budget is None:
        return 16 * steps
    if not isinstance(budget, int) or budget <= 0:
        raise ValueError(f"budget must be a positive number of NFEs, got {budget!r}")
    if budget < steps:
        raise ValueError(
            f"budget of {budget} NFEs is smaller than one full sample ({steps} steps); raise --budget or lower --steps"
        )
    return budget


def search(
    model: str | ModelAdapter | None,
    prompt: str,
    strategy: str | Strategy = "random",
    verifier: str | Verifier | Callable[..., Any] | None = None,
    budget: int | None = None,
    candidates: int | None = None,
    seed: int = 0,
    steps: int | None = None,
    guidance: float | None = None,
    scheduler: str | None = None,
    height: int | None = None,
    width: int | None = None,
    negative_prompt: str | None = None,
    device: str | torch.device | None = "cpu",
    dtype: str | torch.dtype | None = "auto",
    max_batch: int | str = "auto",
    prior: NoisePrior | None = None,
    strategy_options: dict[str, Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> SearchResult:
    """Searches the initial noise of ``model`` for ``prompt`` under an NFE budget.

    ``budget`` is in NFEs (denoiser evaluations per candidate, summed; default 16 full samples),
    or give ``candidates`` full samples instead. Candidate i has seed ``seed + i``. ``progress``
    is called as ``progress(nfe_used, nfe_budget)`` after every network call. ``max_batch`` is the
    number of candidates per network call, or ``"auto"``: on CUDA the largest that fits in free
    memory, measured before the search (:func:`noisesearch.core.memory.auto_batch`); 32 elsewhere. Returns a
    :class:`~noisesearch.engine.SearchResult` with every candidate's score and the accounting.
    """
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("prompt is empty; give the text to generate")
    max_batch = parse_max_batch(max_batch)
    adapter = model if isinstance(model, ModelAdapter) else load_model(model, device=device, dtype=dtype)
    rec = adapter.info.details
    config = CoreConfig(
        solver=scheduler,
        steps=steps if steps is not None else int(rec.get("steps", 20)),
        guidance=guidance if guidance is not None else float(rec.get("guidance", 7.5)),
        height=height,
        width=width,
        negative_prompt=negative_prompt,
        max_batch=DEFAULT_MAX_BATCH if max_batch == "auto" else max_batch,
    )
    core = DenoisingCore(adapter, config)
    strat = resolve_strategy(strategy, strategy_options or {})
    verif = resolve_verifier(verifier or rec.get("verifier", "clipscore"), adapter.device)
    check_prompt(verif, prompt.strip())  # before any compute: a verifier may not read every prompt
    nfe_budget = budget_from(budget, candidates, config.steps)
    if max_batch == "auto":  # measured after every check, so a bad input costs no calibration
        chosen = auto_batch(adapter, config, prompt.strip())
        config = replace(config, max_batch=chosen.max_batch, decode_batch=chosen.decode_batch)
        core = DenoisingCore(adapter, config)
    ctx = SearchContext(core, verif, prompt.strip(), nfe_budget, seed=seed, prior=prior)
    if progress is not None:
        ctx.meter.listeners.append(lambda acc: progress(acc.nfe, nfe_budget))
    start = time.perf_counter()
    partial = False
    try:
        strat.run(ctx)
    except KeyboardInterrupt:
        partial = True
        if not any(c.finite for c in ctx.candidates):
            raise
    wall = time.perf_counter() - start
    acc = ctx.meter.acc
    acc.seconds["other"] += max(0.0, wall - sum(acc.seconds.values()))
    return SearchResult(
        prompt=ctx.prompt,
        model=adapter.info.name,
        strategy=getattr(strat, "name", type(strat).__name__),
        verifier=verif.name,
        budget_nfe=nfe_budget,
        candidates=ctx.candidates,
        accounting=acc,
        history=ctx.history,
        partial=partial,
        settings={
            "seed": seed,
            "steps": config.steps,
            "guidance": config.guidance,
            "scheduler": core.solver,
            "height": core.height,
            "width": core.width,
            "negative_prompt": negative_prompt,
            "device": str(adapter.device),
            "dtype": str(adapter.dtype).replace("torch.", ""),
            "max_batch": config.max_batch,
            "max_batch_auto": max_batch == "auto",
            "decode_batch": core.config.decode_batch or config.max_batch,
            "strategy_options": {k: v for k, v in vars(strat).items()} if hasattr(strat, "__dataclass_fields__") else {},
            "model_family": adapter.info.family,
            "versions": package_versions(),
        },
    )
