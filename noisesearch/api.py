"""The Python API: :func:`search` mirrors ``noisesearch run``.

Both describe a run as a :class:`~noisesearch.request.SearchRequest`, resolve it once
(:func:`~noisesearch.request.resolve`) and run it with :func:`run_resolved`.
"""

from __future__ import annotations

import importlib.metadata
import platform
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch

from noisesearch.core.adapter import ModelAdapter
from noisesearch.core.memory import auto_batch
from noisesearch.core.sampler import DenoisingCore
from noisesearch.engine import NoisePrior, SearchContext, SearchResult
from noisesearch.request import ResolvedSearch, Sampling, SearchRequest, build_strategy, resolve, verifier_spec
from noisesearch.request import build_verifier as resolve_verifier
from noisesearch.strategies.base import Strategy
from noisesearch.verifiers.base import Verifier, check_prompt
from noisesearch.verifiers.spec import VerifierSpec

__all__ = ["budget_from", "resolve_strategy", "resolve_verifier", "run_resolved", "search", "verifier_spec"]


def resolve_strategy(strategy: str | Strategy, options: dict[str, Any]) -> Strategy:
    """A strategy object from a registered name and its options, or the object itself."""
    if isinstance(strategy, str):
        return build_strategy(strategy, options)
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
    return SearchRequest(budget=budget, candidates=candidates).nfe_budget(steps)


def search(
    model: str | ModelAdapter | None,
    prompt: str,
    strategy: str | Strategy = "random",
    verifier: str | VerifierSpec | Verifier | Callable[..., Any] | None = None,
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
    or give ``candidates`` full samples instead. ``verifier`` is a verifier, a callable, or a spec
    such as ``"rank-ensemble(verifiers=[aesthetic,clipscore,imagereward])"`` (see
    :mod:`noisesearch.verifiers.spec`; default: the model's). Candidate i has seed ``seed + i``. ``progress``
    is called as ``progress(nfe_used, nfe_budget)`` after every network call. ``max_batch`` is the
    number of candidates per network call, or ``"auto"``: on CUDA the largest that fits in free
    memory, measured before the search (:func:`noisesearch.core.memory.auto_batch`); 32 elsewhere. Returns a
    :class:`~noisesearch.engine.SearchResult` with every candidate's score and the accounting.
    """
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("prompt is empty; give the text to generate")
    request = SearchRequest(
        model=model,
        strategy=strategy,
        strategy_options=strategy_options or {},
        verifier=verifier,
        budget=budget,
        candidates=candidates,
        seed=seed,
        sampling=Sampling(steps, guidance, scheduler, height, width, negative_prompt, max_batch),
        prior=prior,
        device=device,
        dtype=dtype,
    )
    return run_resolved(resolve(request), prompt, progress=progress)


def run_resolved(
    resolved: ResolvedSearch, prompt: str, progress: Callable[[int, int], None] | None = None
) -> SearchResult:
    """Runs one resolved search on ``prompt``; Ctrl-C returns the candidates finished so far (``partial``)."""
    request, adapter, verif, strat = resolved.request, resolved.adapter, resolved.verifier, resolved.strategy
    prompt = prompt.strip()
    check_prompt(verif, prompt)  # before any compute: a verifier may not read every prompt
    config = resolved.core_config
    if request.sampling.auto_batch:  # measured after every check, so a bad input costs no calibration
        chosen = auto_batch(adapter, config, prompt)
        config = replace(config, max_batch=chosen.max_batch, decode_batch=chosen.decode_batch)
    core = DenoisingCore(adapter, config)
    ctx = SearchContext(core, verif, prompt, resolved.nfe_budget, seed=request.seed, prior=resolved.prior)
    if progress is not None:
        ctx.meter.listeners.append(lambda acc: progress(acc.nfe, resolved.nfe_budget))
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
        budget_nfe=resolved.nfe_budget,
        candidates=ctx.candidates,
        accounting=acc,
        history=ctx.history,
        partial=partial,
        settings={
            "seed": request.seed,
            "steps": config.steps,
            "guidance": config.guidance,
            "scheduler": core.solver,
            "height": core.height,
            "width": core.width,
            "negative_prompt": config.negative_prompt,
            "device": str(adapter.device),
            "dtype": str(adapter.dtype).replace("torch.", ""),
            "max_batch": config.max_batch,
            "max_batch_auto": request.sampling.auto_batch,
            "decode_batch": config.decode_batch or config.max_batch,
            "strategy_options": {k: v for k, v in vars(strat).items()}
            if hasattr(strat, "__dataclass_fields__")
            else {},
            "model_family": adapter.info.family,
            "versions": package_versions(),
        },
    )
