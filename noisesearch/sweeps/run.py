"""Running a sweep: prompts × models × strategies × search verifiers × budgets × seeds.

A sweep runs :func:`noisesearch.search` once per *row* (one prompt, one configuration, one seed) and
appends one JSON line per row with its accounting, its search score and its evaluation scores.
Evaluation verifiers are kept apart from the search verifier: the search maximises one verifier,
and the chosen best image(s) are then scored by held-out verifiers and, on the embedded world, by
the ground-truth evaluator (``ground_truth``: 1 when :func:`noisesearch.toyworld.evaluator.satisfies`
finds exactly the prompt's scene, else 0). Comparing strategies on the search verifier alone
rewards verifier hacking; the held-out metrics are what a scaling study should plot.

Layout of the output folder::

    sweep_config.json        the configuration (SweepConfig.to_dict) and package versions
    shards/rank-R-of-N.jsonl rows appended by process R of N (one file per process)
    images/<sha256>.png      best images, named by the SHA-256 of their PNG bytes
    results.jsonl            every row of the sweep, sorted by key (written once all are done)

Resuming. Each row has a ``key``: the SHA-256 of its configuration (prompt, model, strategy and
options, search verifier, budget, seed, sampling settings, evaluation verifiers, top_k). A row is
written only after its images, in one ``write`` of a newline-terminated line followed by ``fsync``;
a line without its newline is a torn write and is discarded (and truncated from the process's own
shard before it appends again). A restarted sweep reads every shard, skips the keys already there
and computes the rest, so a sweep killed at any moment and restarted ends with each row exactly
once, with the same content as an uninterrupted run (searches are deterministic in their seeds;
only the ``timing`` fields, wall-clock seconds, differ).

Sharding. Under ``accelerate launch`` or ``torchrun`` (``WORLD_SIZE`` > 1) the work list, ordered
model, strategy, search verifier, budget, seed, prompt, is dealt round-robin: row i goes to process
i mod N, so every process gets about the same mix of budgets. Each process appends to its own
shard; after a barrier (``accelerate.PartialState().wait_for_everyone()``) process 0 merges the
shards into ``results.jsonl``. A sweep can be resumed with a different number of processes: done
keys are read from every shard. Launch two processes with ``accelerate launch --multi_gpu
--num_processes 2 -m noisesearch sweep ...`` or ``torchrun --nproc_per_node 2 -m noisesearch sweep
...``; without GPUs they form a gloo group on the CPU (accelerate 1.x's ``--cpu`` flag starts a
single process unless MPI is set up, and that process then simply runs the whole sweep).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from noisesearch.io.paths import user_path
from noisesearch.io.storage import append_row, truncate_torn_tail, write_atomic
from noisesearch.io.usertext import abbreviate, quote
from noisesearch.prompts import BUILTIN_SETS, PromptItem
from noisesearch.sweeps.config import (
    BARRIER_TIMEOUT,
    BUILTIN_METRICS,
    CONFIG_FILE,
    IMAGES_DIR,
    RESULTS_FILE,
    SHARDS_DIR,
    StrategySpec,
    SweepConfig,
)
from noisesearch.sweeps.plan import WorkItem, plan, shard, shard_path, sweep_prompts
from noisesearch.sweeps.store import completed_rows, merge, store_image


def check_models(config: SweepConfig) -> None:
    """Every model name resolves offline (catalog, local folder or Hugging Face cache; no weights
    read), and every budget buys at least one full sample where the model's default steps are known."""
    from noisesearch.models import check_model, get_family

    for name in config.models:
        try:
            family = check_model(name)
        except ValueError as e:
            raise ValueError(f"sweep config key 'models': {e}") from None
        default = get_family(family).steps if family else None
        if name == "stub":  # the weightless test model has its own default
            from noisesearch.testing import StubAdapter

            default = StubAdapter().info.details.get("steps")
        steps = config.steps or default
        small = [b for b in config.budgets if steps and b < steps]
        if small:
            raise ValueError(
                f"sweep config key 'budgets': {small} NFEs is less than one full sample of model {quote(name)} "
                f"({steps} steps); use budgets >= {steps} or fewer steps"
            )


def check_prompts(config: SweepConfig, prompts: Sequence[PromptItem], verifier_for: Callable[[str], Any]) -> None:
    """Every prompt can be scored by every search and evaluation verifier (their ``check_prompt``),
    so a sweep never stops at the first row of a prompt it cannot score.

    ``verifier_for(name)`` returns the loaded verifier (a verifier knows which prompts it reads only
    once it exists; loading reads weights but computes nothing).
    """
    from noisesearch.verifiers.base import check_prompt

    for key, names in (("search_verifiers", config.search_verifiers), ("eval_verifiers", config.eval_verifiers)):
        for name in names:
            if name in BUILTIN_METRICS:
                continue  # ground_truth: checked by sweep_prompts
            verifier = verifier_for(name)
            for number, item in enumerate(prompts, start=1):
                try:
                    check_prompt(verifier, item.text)
                except ValueError as e:
                    source = config.prompts if config.prompts in BUILTIN_SETS else Path(config.prompts).name
                    raise ValueError(
                        f"prompt {number} of {quote(source, 60)} cannot be scored by {key[:-1].replace('_', ' ')} "
                        f"{quote(name)}: {e}"
                    ) from None


def check_output(out_dir: str | Path) -> Path:
    """The sweep's output folder can be created and written, and holds nothing of the wrong kind."""
    from noisesearch.io.outputs import check_output_dir

    return check_output_dir(out_dir, "--out", files=(RESULTS_FILE, CONFIG_FILE), folders=(SHARDS_DIR, IMAGES_DIR))


def check_sweep(
    config: SweepConfig, out_dir: str | Path | None = None, *, check_model_names: bool = True
) -> list[WorkItem]:
    """Everything about a sweep that can be checked before it writes or computes anything, except the
    prompts against loaded verifiers (:func:`check_prompts`): names and options of strategies,
    verifiers and scheduler, models, prompts, the plan, and the output folder. Returns the plan."""
    config.check_names()
    if check_model_names:
        check_models(config)
    items = plan(config, sweep_prompts(config))
    if out_dir is not None:
        check_output(out_dir)
    return items


# ----------------------------------------------------------------------------------- running


@dataclass(frozen=True)
class SweepSummary:
    """What one process of a sweep did."""

    out_dir: Path
    results_path: Path | None  # results.jsonl when this process merged it, else None
    planned: int  # rows in the whole sweep
    assigned: int  # rows dealt to this process
    skipped: int  # of those, complete before this run started (resumed)
    ran: int  # rows this run computed
    rank: int  # this process's index
    world_size: int  # number of processes


def _distributed(config: SweepConfig) -> tuple[int, int, Callable[[], None] | None, torch.device | None]:
    """(rank, world size, barrier, device) from accelerate/torchrun's environment; no group when alone."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    except ValueError:
        world = 1
    if world <= 1:
        return 0, 1, None, None
    from accelerate import PartialState

    # gloo on CPU: without cpu=True, accelerate falls back to "not distributed" when no GPU is seen,
    # and every process would then run the whole sweep
    cpu = (
        config.device == "cpu"
        or not torch.cuda.is_available()
        or os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    )
    state = PartialState(cpu=cpu, timeout=BARRIER_TIMEOUT)
    if state.num_processes != world:
        raise RuntimeError(
            f"WORLD_SIZE is {world} but accelerate joined a group of {state.num_processes}; "
            "launch with `accelerate launch` or `torchrun`, or unset WORLD_SIZE"
        )
    return state.process_index, state.num_processes, state.wait_for_everyone, state.device


def _resolve_process_device(config: SweepConfig, state_device: torch.device | None) -> str | torch.device:
    if state_device is not None and config.device in ("auto", "cuda") and state_device.type != "cpu":
        return state_device  # one GPU per process
    if state_device is not None and config.device == "auto":
        return state_device
    return config.device


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


class _Runner:
    """Holds loaded models and verifiers of one process; turns a work item into a row."""

    def __init__(
        self,
        config: SweepConfig,
        device: str | torch.device,
        model_factory: Callable[[str], Any] | None,
        images_dir: Path,
    ) -> None:
        self.config = config
        self.device = device
        self.model_factory = model_factory
        self.images_dir = images_dir
        self._model_name: str | None = None
        self._model: Any = None
        self._verifiers: dict[tuple[str, str], Any] = {}  # (name, device) -> verifier

    def model(self, name: str) -> Any:
        if name != self._model_name:
            from noisesearch.models import load_model

            self._model = None  # free the previous model before loading the next
            adapter = (
                self.model_factory(name)
                if self.model_factory
                else load_model(name, device=self.device, dtype=self.config.dtype)
            )
            steps = self.config.steps or int(adapter.info.details.get("steps", 20))
            small = [b for b in self.config.budgets if b < steps]
            if small:
                raise ValueError(
                    f"sweep config key 'budgets': {small} NFEs is less than one full sample of model {name!r} "
                    f"({steps} steps); use budgets >= {steps} or fewer steps"
                )
            self._model, self._model_name = adapter, name
        return self._model

    def default_device(self) -> torch.device:
        """Where verifiers are loaded before any model is: the device the models will use."""
        from noisesearch.models import resolve_device

        if self.model_factory is not None or all(m == "stub" for m in self.config.models):
            return torch.device("cpu")  # the stub model (and test factories) run on the CPU
        return resolve_device(self.device)

    def verifier(self, name: str, device: torch.device | str) -> Any:
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:  # "cuda" and "cuda:0" are one place
            device = torch.device("cuda", torch.cuda.current_device())
        if (name, str(device)) not in self._verifiers:
            from noisesearch.api import resolve_verifier

            self._verifiers[(name, str(device))] = resolve_verifier(name, device)
        return self._verifiers[(name, str(device))]

    def prior(self, strategy: StrategySpec, adapter: Any) -> Any:
        """The strategy's noise prior: None for standard noise, else NPNet (loaded once per file)."""
        if strategy.prior != "npnet":
            return None
        from noisesearch.npnet.prior import NPNetPrior, default_checkpoint, load_cached

        return NPNetPrior(load_cached(strategy.npnet_checkpoint or default_checkpoint(adapter.info.family)))

    def evaluate(self, name: str, images: torch.Tensor, prompt: str, device: torch.device) -> list[float | None]:
        """Scores of ``images`` ([k, 3, H, W] uint8) under evaluation metric ``name``."""
        if name == "ground_truth":
            from noisesearch.toyworld.evaluator import satisfies

            return [1.0 if satisfies(img.float() / 255, prompt) else 0.0 for img in images]
        verifier = self.verifier(name, device)
        with torch.no_grad():
            scores = verifier.score(images.to(device).float() / 255, [prompt] * images.shape[0])
        return [_finite(float(s)) for s in scores.detach().float().cpu()]

    def run(self, item: WorkItem) -> dict[str, Any]:
        from noisesearch.api import run_resolved
        from noisesearch.request import SearchRequest, resolve

        cfg = self.config
        start = time.perf_counter()
        adapter = self.model(item.model)
        request = SearchRequest(
            strategy=item.strategy.name,
            strategy_options=item.strategy.options_dict,
            verifier=self.verifier(item.search_verifier, adapter.device),
            budget=item.budget,
            seed=item.seed,
            sampling=cfg.sampling,
            prior=self.prior(item.strategy, adapter),
        )
        result = run_resolved(resolve(request, adapter), item.prompt.text)
        if result.partial:  # interrupted inside the search: never record a partial row as complete
            raise KeyboardInterrupt
        eval_start = time.perf_counter()
        ranked = [c for c in result.ranked() if c.image is not None][: cfg.top_k]
        top: list[dict[str, Any]] = []
        evals: dict[str, list[float | None]] = {}
        if ranked:
            images = torch.stack([c.image for c in ranked if c.image is not None])  # [k, 3, H, W] uint8, the saved PNGs
            for name in cfg.eval_verifiers:
                evals[name] = self.evaluate(name, images, item.prompt.text, adapter.device)
            for i, cand in enumerate(ranked):
                assert cand.image is not None  # ranked keeps candidates with images only
                top.append(
                    {
                        "rank": i + 1,
                        "seed": cand.seed,
                        "score": _finite(cand.score),
                        "image": f"{IMAGES_DIR}/{store_image(cand.image, self.images_dir)}",
                        "eval": {name: evals[name][i] for name in cfg.eval_verifiers},
                        **({"info": cand.info} if cand.info else {}),
                    }
                )
        end = time.perf_counter()
        acc = result.accounting.to_dict()
        settings = result.settings
        return {
            "key": item.key,
            "prompt": item.prompt.text,
            "category": item.prompt.category,
            "model": item.model,
            "strategy": item.strategy.display,
            "strategy_name": item.strategy.name,
            "strategy_options": settings.get("strategy_options", {}),
            "prior": item.strategy.prior_identity,  # None: standard Gaussian noise
            "search_verifier": item.search_verifier,
            "budget_nfe": item.budget,
            "seed": item.seed,
            "sampling": {
                k: settings.get(k)
                for k in ("steps", "guidance", "scheduler", "height", "width", "negative_prompt", "dtype")
            },
            "search_score": top[0]["score"] if top else None,  # the search verifier's score of the chosen image
            "best_seed": top[0]["seed"] if top else None,
            "image": top[0]["image"] if top else None,
            "eval": {name: (evals[name][0] if top else None) for name in cfg.eval_verifiers},  # of the best image
            "top": top,
            "candidates": len(result.candidates),
            "non_finite": result.non_finite,
            "accounting": {
                **{k: v for k, v in acc.items() if not k.startswith("seconds")},
                "eval_images": len(top) * sum(1 for n in cfg.eval_verifiers if n not in BUILTIN_METRICS),
            },
            "history": [r.to_dict() for r in result.history],
            # wall-clock seconds: the only fields that differ between identical runs
            "timing": {
                "search": acc["seconds"],
                "search_total": acc["seconds_total"],
                "eval": round(end - eval_start, 4),
                "row": round(end - start, 4),
            },
        }


def _prepare_dir(out: Path, rank: int) -> Path:
    """Creates the output folders and checks they are writable (safe with several processes at once)."""
    out = user_path(out)
    try:
        for sub in (SHARDS_DIR, IMAGES_DIR):
            (out / sub).mkdir(parents=True, exist_ok=True)
        probe = out / SHARDS_DIR / f".write-test-{rank}-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise ValueError(
            f"cannot write to output directory {str(out)!r} ({e.strerror or e}); pass a writable --out"
        ) from e
    return out


def _write_config(out_dir: Path, config: SweepConfig, planned: int, prompts: int) -> None:
    from noisesearch.api import package_versions

    doc = {"config": config.to_dict(), "rows": planned, "prompts": prompts, "versions": package_versions()}
    write_atomic(out_dir / CONFIG_FILE, (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))


def sweep(
    config: SweepConfig | str | Path,
    out_dir: str | Path,
    *,
    log: Callable[[str], None] | None = None,
    rank: int | None = None,
    world_size: int | None = None,
    model_factory: Callable[[str], Any] | None = None,
) -> SweepSummary:
    """Runs (or resumes) a benchmark sweep into ``out_dir``; see the module docstring for the layout.

    ``config`` is a :class:`SweepConfig` or the path of a TOML file with its keys. Under
    ``accelerate launch``/``torchrun`` the rows are split across the processes and process 0 merges
    ``results.jsonl`` after a barrier. ``rank``/``world_size`` split the rows by hand instead (no
    barrier; whichever process finds every row complete merges). ``model_factory(name)`` builds a
    model adapter in place of :func:`noisesearch.load_model`. ``log`` receives one line per row.
    """
    cfg = SweepConfig.from_toml(config) if isinstance(config, str | Path) else config
    if not isinstance(cfg, SweepConfig):
        raise TypeError(f"config must be a SweepConfig or a TOML path, got {type(cfg).__name__}")
    # 1. everything checkable without loading: a rejected config writes nothing, not even its folder
    items = check_sweep(cfg, out_dir, check_model_names=model_factory is None)
    prompts = list(dict.fromkeys(it.prompt for it in items))

    barrier: Callable[[], None] | None = None
    state_device = None
    if rank is None and world_size is None:
        rank, world_size, barrier, state_device = _distributed(cfg)
    elif rank is None or world_size is None or not (0 <= rank < world_size):
        raise ValueError(
            f"give both rank and world_size with 0 <= rank < world_size, got rank={rank}, world_size={world_size}"
        )
    say = log or (lambda message: None)
    tag = f"[rank {rank}/{world_size}] " if world_size > 1 else ""

    # 2. every prompt against every loaded verifier, still before the first write
    runner = _Runner(cfg, _resolve_process_device(cfg, state_device), model_factory, user_path(out_dir) / IMAGES_DIR)
    check_prompts(cfg, prompts, lambda name: runner.verifier(name, runner.default_device()))

    # 3. the rows an earlier run finished: reading them checks every shard, still before any write
    done = completed_rows(user_path(out_dir))

    out = _prepare_dir(Path(out_dir), rank)
    images_dir = out / IMAGES_DIR
    runner.images_dir = images_dir
    if rank == 0:
        _write_config(out, cfg, len(items), len(prompts))

    mine = shard(items, rank, world_size)
    own = shard_path(out, rank, world_size)
    cut = truncate_torn_tail(own)  # a torn tail is never a complete row: `done` stays as read
    if cut:
        say(f"{tag}discarded a torn last line ({cut} bytes) of {own.name}; its row will be recomputed")
    todo = [it for it in mine if it.key not in done]
    skipped = len(mine) - len(todo)
    say(f"{tag}{len(items)} rows in the sweep, {len(mine)} for this process, {skipped} already done")

    for n, item in enumerate(todo, start=1):
        row = runner.run(item)
        append_row(own, row)
        score = row["search_score"]
        evals = " ".join(f"{k}={v:.3g}" for k, v in row["eval"].items() if v is not None)
        say(
            f"{tag}{skipped + n}/{len(mine)} {item.model} {item.strategy.display} {item.search_verifier} "
            f"{item.budget} NFE seed {item.seed}: score {score if score is None else f'{score:.4g}'} {evals} | {abbreviate(item.prompt.text, 50)}"
        )

    if barrier is not None:
        barrier()
    results_path = None
    keys = [it.key for it in items]
    if rank == 0 and barrier is not None:
        results_path = merge(out, keys)
    elif barrier is None and all(k in completed_rows(out) for k in keys):
        results_path = merge(out, keys)
    if results_path is not None:
        say(f"{tag}wrote {results_path} ({len(keys)} rows)")
    elif barrier is None:
        say(f"{tag}this shard is done; results.jsonl is written once every shard is (run the other ranks)")
    if barrier is not None:
        barrier()  # nobody returns before results.jsonl exists
    return SweepSummary(out, results_path, len(items), len(mine), skipped, len(todo), rank, world_size)
