"""Benchmark sweeps: prompts × models × strategies × search verifiers × budgets × seeds.

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

import dataclasses
import difflib
import hashlib
import importlib
import io
import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch

from noisesearch.io.paths import user_path
from noisesearch.io.storage import append_row, read_jsonl, truncate_torn_tail, write_atomic  # noqa: F401 (read_jsonl re-exported)
from noisesearch.io.usertext import abbreviate, quote
from noisesearch.prompts import BUILTIN_SETS, PromptItem, load_prompts, select_prompts
from noisesearch.request import Sampling
from noisesearch.verifiers.spec import VerifierSpec

#: evaluation metrics that are not registered verifiers -> description
BUILTIN_METRICS: dict[str, str] = {
    "ground_truth": "embedded world: 1 if the ground-truth evaluator finds exactly the prompt's scene, else 0",
}
#: version of the row-key payload; bump when the meaning of a key's fields changes
KEY_VERSION = 1
#: how long the processes of a sharded sweep wait for the slowest one at the final barrier
BARRIER_TIMEOUT = timedelta(hours=24)
RESULTS_FILE = "results.jsonl"
CONFIG_FILE = "sweep_config.json"
SHARDS_DIR = "shards"
IMAGES_DIR = "images"
DTYPES = ("auto", "fp32", "float32", "fp16", "float16", "bf16", "bfloat16")
#: noise priors a strategy entry may name: standard Gaussian noise, or NPNet's golden noise (Zhou et al. 2024)
PRIORS = ("none", "npnet")
#: strategy-entry keys that configure the noise prior rather than the strategy
PRIOR_KEYS = ("prior", "npnet_checkpoint")


# ----------------------------------------------------------------------------------- config


def _freeze(value: Any) -> Any:
    """TOML arrays -> tuples (recursively), so options stay immutable inside frozen dataclasses."""
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    return value


def _thaw(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    return value


@dataclass(frozen=True)
class StrategySpec:
    """One strategy of a sweep: a registered name and its hyperparameters."""

    name: str  # registered strategy name (see `noisesearch strategies`)
    options: tuple[tuple[str, Any], ...] = ()  # hyperparameters as sorted (option, value) pairs
    label: str = ""  # name shown in tables and plots; default: name(option=value, ...)
    prior: str = "none"  # source of initial noises: 'none' (standard Gaussian) or 'npnet' (golden noise)
    npnet_checkpoint: str = ""  # NPNet file for prior = 'npnet'; "": the embedded world's shipped NPNet

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"a strategy needs a non-empty 'name', got {self.name!r}")
        object.__setattr__(self, "options", tuple(sorted((str(k), _freeze(v)) for k, v in self.options)))
        where = f"sweep config key 'strategies': {self.name!r}"
        if self.prior not in PRIORS:
            raise ValueError(f"{where}: unknown prior {self.prior!r}; choose one of: {', '.join(PRIORS)}")
        if not isinstance(self.npnet_checkpoint, str):
            raise ValueError(f"{where}: 'npnet_checkpoint' must be a file path (text), got {self.npnet_checkpoint!r}")
        if self.npnet_checkpoint and self.prior != "npnet":
            raise ValueError(f"{where}: 'npnet_checkpoint' needs prior = \"npnet\" in the same entry")

    @property
    def options_dict(self) -> dict[str, Any]:
        return dict(self.options)

    @property
    def display(self) -> str:
        if self.label:
            return self.label
        parts = [f"{k}={v}" for k, v in self.options]
        if self.prior != "none":
            parts.append(f"prior={self.prior}")
        if self.npnet_checkpoint:
            parts.append(f"npnet_checkpoint={Path(self.npnet_checkpoint).name}")
        return f"{self.name}({', '.join(parts)})" if parts else self.name

    @property
    def prior_identity(self) -> dict[str, Any] | None:
        """What of the noise prior determines a row (None for standard noise, keeping those keys unchanged)."""
        if self.prior == "none":
            return None
        return {"name": self.prior, "checkpoint": self.npnet_checkpoint or None}

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            **({"label": self.label} if self.label else {}),
            **({"prior": self.prior} if self.prior != "none" else {}),
            **({"npnet_checkpoint": self.npnet_checkpoint} if self.npnet_checkpoint else {}),
            **{k: _thaw(v) for k, v in self.options},
        }


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclass(frozen=True)
class SweepConfig:
    """What a sweep runs; a TOML file with the same keys (see ``examples/sweep_toyworld.toml``)."""

    prompts: str  # a .txt/.csv prompts file (relative to the config file) or a built-in set: toyworld-heldout
    budgets: tuple[int, ...]  # NFE budgets per search, the x axis of the scaling plots
    search_verifiers: tuple[
        str, ...
    ]  # verifier specs the search maximises (one sweep axis), e.g. "clipscore(model=ViT-B-32)"
    strategies: tuple[StrategySpec, ...] = (StrategySpec("random"),)  # strategies with hyperparameters
    models: tuple[str, ...] = ("toyworld",)  # model names, diffusers folders or cached hub ids
    eval_verifiers: tuple[
        str, ...
    ] = ()  # held-out metrics (verifier specs) on the chosen image(s); 'ground_truth' on toyworld
    seeds: tuple[int, ...] = (0,)  # base seeds; candidate i gets seed+i, so space them > max candidates apart
    prompt_limit: int | None = None  # at most this many prompts, balanced over categories; None: all
    prompt_column: str | None = None  # CSV prompt column; None: 'prompt' or 'prompts'
    prompt_categories: tuple[str, ...] = ()  # keep only these categories; empty: all
    steps: int | None = None  # solver steps per sample; None: the model's default
    guidance: float | None = None  # classifier-free guidance scale; None: the model's default
    scheduler: str | None = None  # ddim, euler, dpm++2m or flow-euler; None: the model's default
    height: int | None = None  # image height in pixels; None: the model's default
    width: int | None = None  # image width in pixels; None: the model's default
    negative_prompt: str | None = None  # negative prompt for guidance; None: empty
    top_k: int = 1  # best images saved and evaluated per row (the headline scores are those of the best)
    device: str = "auto"  # cpu, cuda, cuda:N or auto (auto: each process's own GPU when sharded)
    dtype: str = "auto"  # auto, fp32, fp16 or bf16
    max_batch: int = 32  # candidates per network call (results do not depend on it)
    imports: tuple[str, ...] = ()  # Python modules imported first, to register custom verifiers/strategies
    name: str = "sweep"  # title of the report

    def __post_init__(self) -> None:
        def bad(key: str, expected: str, value: Any) -> ValueError:
            return ValueError(f"sweep config key {key!r} must be {expected}, got {value!r}")

        if not isinstance(self.prompts, str) or not self.prompts.strip():
            raise bad("prompts", f"a prompts file or a built-in set ({', '.join(BUILTIN_SETS)})", self.prompts)
        for key in ("models", "search_verifiers", "eval_verifiers", "prompt_categories", "imports"):
            values = getattr(self, key)
            if not isinstance(values, tuple) or not all(isinstance(v, str) and v.strip() for v in values):
                raise bad(key, "a list of non-empty strings", values)
        for key in ("models", "search_verifiers"):
            if not getattr(self, key):
                raise bad(key, "a non-empty list", getattr(self, key))
        for key in ("search_verifiers", "eval_verifiers"):  # canonical spec text: the row key and the label
            object.__setattr__(self, key, tuple(_canonical_spec(key, v) for v in getattr(self, key)))
        for key, positive in (("budgets", True), ("seeds", False)):
            values = getattr(self, key)
            if (
                not isinstance(values, tuple)
                or not values
                or not all(_is_int(v) and (v > 0 if positive else v >= 0) for v in values)
            ):
                raise bad(
                    key, f"a non-empty list of {'positive integers (NFEs)' if positive else 'integers >= 0'}", values
                )
        if not self.strategies or not all(isinstance(s, StrategySpec) for s in self.strategies):
            raise bad("strategies", "a non-empty list of strategies", self.strategies)
        for key in ("models", "search_verifiers", "eval_verifiers", "budgets", "seeds", "prompt_categories"):
            values = getattr(self, key)
            dupes = sorted({str(v) for v in values if values.count(v) > 1})
            if dupes:
                raise ValueError(f"sweep config key {key!r} lists {', '.join(dupes)} more than once; list each once")
        seen: dict[tuple[Any, ...], str] = {}
        for s in self.strategies:
            ident = (s.name, s.options, s.prior, s.npnet_checkpoint)
            if ident in seen:
                raise ValueError(
                    f"sweep config key 'strategies' lists {s.display!r} twice (same name, options and prior)"
                )
            seen[ident] = s.display
        labels = [s.display for s in self.strategies]
        if len(set(labels)) != len(labels):
            raise ValueError(
                f"sweep config key 'strategies' has repeated labels {labels}; give each a distinct 'label'"
            )
        for key in ("prompt_limit", "steps", "height", "width"):
            v = getattr(self, key)
            if v is not None and (not _is_int(v) or v < 1):
                raise bad(key, "a positive integer (or left out)", v)
        for key in ("top_k", "max_batch"):
            v = getattr(self, key)
            if not _is_int(v) or v < 1:
                raise bad(key, "a positive integer", v)
        if self.guidance is not None and (
            isinstance(self.guidance, bool)
            or not isinstance(self.guidance, int | float)
            or not math.isfinite(self.guidance)
            or self.guidance < 0
        ):
            raise bad("guidance", "a finite number >= 0 (or left out)", self.guidance)
        for key in ("prompt_column", "scheduler", "negative_prompt"):
            v = getattr(self, key)
            if v is not None and not isinstance(v, str):
                raise bad(key, "a string (or left out)", v)
        if not isinstance(self.device, str) or not self.device:
            raise bad("device", "cpu, cuda, cuda:N or auto", self.device)
        if self.dtype not in DTYPES:
            raise ValueError(f"sweep config key 'dtype' must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if not isinstance(self.name, str):
            raise bad("name", "a string", self.name)
        if self.guidance is not None:
            object.__setattr__(self, "guidance", float(self.guidance))

    # --- serialisation ----------------------------------------------------------------------
    @property
    def sampling(self) -> Sampling:
        """The sampling settings every row of the sweep shares (the same type a single run uses)."""
        return Sampling(
            self.steps, self.guidance, self.scheduler, self.height, self.width, self.negative_prompt, self.max_batch
        )

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], base_dir: str | Path | None = None) -> SweepConfig:
        """Builds a config from a parsed TOML/JSON mapping; ``ValueError`` names any bad key or value.

        A relative ``prompts`` file path is resolved against ``base_dir`` (the config file's folder).
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"a sweep config must be a table of keys, got {type(data).__name__}")
        names = cls.field_names()
        unknown = [k for k in data if k not in names]
        if unknown:
            hints, guessed = [], True
            for k in unknown:
                close = difflib.get_close_matches(k, names, n=1)
                hints.append(quote(k, 40) + (f" (did you mean {close[0]!r}?)" if close else ""))
                guessed = guessed and bool(close)
            # every key has a likely meaning: the full list would only push the hint off one line
            listing = "" if guessed else f"; valid keys: {', '.join(names)}"
            raise ValueError(f"unknown sweep config key {', '.join(hints)}{listing}")
        missing = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING and f.name not in data]
        if missing:
            raise ValueError(f"sweep config is missing required key {', '.join(map(repr, missing))}")
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key == "strategies":
                kwargs[key] = _parse_strategies(value)
            elif key in ("search_verifiers", "eval_verifiers"):
                entries = tuple(value) if isinstance(value, list | tuple) else (value,)
                kwargs[key] = tuple(_spec_entry(key, v) for v in entries)
            elif key in ("models", "budgets", "seeds", "prompt_categories", "imports"):
                kwargs[key] = tuple(value) if isinstance(value, list | tuple) else (value,)
            else:
                kwargs[key] = value
        if base_dir is not None and isinstance(kwargs.get("prompts"), str) and kwargs["prompts"] not in BUILTIN_SETS:
            path = user_path(kwargs["prompts"])
            if not path.is_absolute():
                kwargs["prompts"] = str((Path(base_dir) / path).resolve())
        if base_dir is not None and "strategies" in kwargs:  # NPNet files relative to the config file too
            kwargs["strategies"] = tuple(
                dataclasses.replace(s, npnet_checkpoint=str((Path(base_dir) / user_path(s.npnet_checkpoint)).resolve()))
                if s.npnet_checkpoint and not user_path(s.npnet_checkpoint).is_absolute()
                else s
                for s in kwargs["strategies"]
            )
        return cls(**kwargs)

    @classmethod
    def from_toml(cls, path: str | Path) -> SweepConfig:
        """Reads a TOML sweep config; errors name the file and the bad key."""
        try:
            import tomllib
        except ModuleNotFoundError:  # pragma: no cover - Python 3.10
            try:
                import tomli as tomllib
            except ModuleNotFoundError as e:
                raise ValueError("reading TOML needs Python >= 3.11 or `pip install tomli`") from e
        path = user_path(path)
        shown = quote(str(path), 200)
        if path.is_dir():
            raise ValueError(f"sweep config {shown} is a folder; pass the sweep's .toml file")
        try:
            data = tomllib.loads(path.read_bytes().decode("utf-8"))
        except OSError as e:
            raise ValueError(f"cannot read sweep config {shown}: {e.strerror or e}") from None
        except UnicodeDecodeError as e:
            raise ValueError(
                f"sweep config {shown} is not UTF-8 TOML (byte {e.object[e.start]:#04x} at offset {e.start}); "
                "pass the sweep's .toml file"
            ) from None
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f"sweep config {shown} is not valid TOML: {e}") from None
        try:
            return cls.from_dict(data, base_dir=path.parent)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None

    def to_dict(self) -> dict[str, Any]:
        """The config as plain data (JSON/TOML); ``from_dict(to_dict())`` gives it back."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "strategies":
                out[f.name] = [s.to_dict() for s in value]
            else:
                out[f.name] = _thaw(value)
        return out

    # --- checks that need the registries ----------------------------------------------------
    def check_names(self) -> None:
        """Imports ``imports`` and checks strategy, verifier and scheduler names and options."""
        from noisesearch.core.schedule import SOLVERS
        from noisesearch.request import ensure_registrations
        from noisesearch.strategies import make_strategy
        from noisesearch.verifiers import available_verifiers

        for module in self.imports:
            try:
                importlib.import_module(module)
            except ImportError as e:
                raise ValueError(f"sweep config key 'imports': cannot import {module!r} ({e}); check PYTHONPATH") from e
        ensure_registrations()
        verifiers = available_verifiers()
        for key in ("search_verifiers", "eval_verifiers"):
            for text in getattr(self, key):
                spec = VerifierSpec.parse(text)
                if key == "eval_verifiers" and spec.name in BUILTIN_METRICS:
                    if spec.options:
                        raise ValueError(f"sweep config key {key!r}: {spec.name!r} takes no options; write {spec.name}")
                    continue
                if spec.name not in verifiers:
                    choices = [*verifiers, *(BUILTIN_METRICS if key == "eval_verifiers" else ())]
                    raise ValueError(
                        f"sweep config key {key!r}: unknown verifier {quote(spec.name)}; choose one of: {', '.join(choices)}"
                    )
                try:
                    spec.validate()  # option names, types and values, ensemble members: nothing is loaded
                except ValueError as e:
                    raise ValueError(f"sweep config key {key!r}: {e}") from e
        for s in self.strategies:
            try:
                make_strategy(s.name, **s.options_dict)
            except (ValueError, TypeError) as e:
                raise ValueError(f"sweep config key 'strategies': {e}") from e
            self._check_prior(s)
        if self.scheduler is not None and self.scheduler not in SOLVERS:
            raise ValueError(
                f"sweep config key 'scheduler': unknown scheduler {quote(self.scheduler)}; choose one of: {', '.join(SOLVERS)}"
            )

    def _check_prior(self, s: StrategySpec) -> None:
        """The NPNet file of a prior exists; without one, every model must be the embedded world's."""
        if s.prior != "npnet":
            return
        where = f"sweep config key 'strategies': {s.display!r}"
        if s.npnet_checkpoint:
            path = user_path(s.npnet_checkpoint)
            if not path.is_file():
                raise ValueError(f"{where}: npnet_checkpoint {str(path)!r} is not a file; give an existing NPNet file")
            return
        from noisesearch.npnet.prior import TOYWORLD_NPNET

        others = [m for m in self.models if m != "toyworld"]
        if others:
            raise ValueError(
                f"{where}: an NPNet ships only for model 'toyworld'; give npnet_checkpoint = PATH for {', '.join(map(repr, others))}"
            )
        if not TOYWORLD_NPNET.is_file():  # pragma: no cover - the file ships with the package
            raise ValueError(
                f"{where}: the shipped NPNet {str(TOYWORLD_NPNET)!r} is missing; give npnet_checkpoint = PATH"
            )


def _spec_entry(key: str, value: Any) -> Any:
    """A verifier entry of a sweep config: spec text stays, a table becomes spec text."""
    if isinstance(value, Mapping | VerifierSpec):
        try:
            return str(VerifierSpec.coerce(value))
        except ValueError as e:
            raise ValueError(f"sweep config key {key!r}: {e}") from e
    return value


def _canonical_spec(key: str, value: Any) -> str:
    """Checks the syntax of a verifier entry and returns its canonical text (options sorted)."""
    try:
        return str(VerifierSpec.coerce(value))
    except ValueError as e:
        raise ValueError(f"sweep config key {key!r}: {e}") from e


def _parse_strategies(value: Any) -> tuple[StrategySpec, ...]:
    entries = value if isinstance(value, list | tuple) else [value]
    specs = []
    for entry in entries:
        if isinstance(entry, StrategySpec):
            specs.append(entry)
        elif isinstance(entry, str):
            specs.append(StrategySpec(entry))
        elif isinstance(entry, Mapping):
            if "name" not in entry:
                raise ValueError(f"sweep config key 'strategies': entry {dict(entry)!r} has no 'name'")
            options = {k: v for k, v in entry.items() if k not in ("name", "label", *PRIOR_KEYS)}
            label = entry.get("label", "")
            if not isinstance(label, str):
                raise ValueError(f"sweep config key 'strategies': 'label' must be a string, got {label!r}")
            prior = {k: entry[k] for k in PRIOR_KEYS if k in entry}
            specs.append(StrategySpec(entry["name"], tuple(options.items()), label, **prior))
        else:
            raise ValueError(
                f"sweep config key 'strategies' takes names or tables with a 'name' (and options), got {entry!r}"
            )
    return tuple(specs)


# ----------------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class WorkItem:
    """One row of a sweep: a prompt, a configuration and a seed."""

    prompt: PromptItem
    model: str
    strategy: StrategySpec
    search_verifier: str
    budget: int  # NFEs
    seed: int
    identity: dict[str, Any] = field(repr=False)  # everything that determines the row; hashed into key
    key: str = ""


def row_key(identity: Mapping[str, Any]) -> str:
    """SHA-256 (hex, first 32 digits) of the canonical JSON of a row's configuration."""
    payload = json.dumps(
        {"key_version": KEY_VERSION, **identity}, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:32]


def _sampling(config: SweepConfig) -> dict[str, Any]:
    """Requested sampling settings (None: the model's default); part of every row's identity."""
    return {
        "steps": config.steps,
        "guidance": config.guidance,
        "scheduler": config.scheduler,
        "height": config.height,
        "width": config.width,
        "negative_prompt": config.negative_prompt,
        "dtype": config.dtype,
    }


def sweep_prompts(config: SweepConfig) -> list[PromptItem]:
    """The sweep's prompts: loaded, de-duplicated, filtered by category and limited (balanced)."""
    items = load_prompts(config.prompts, column=config.prompt_column)
    chosen = select_prompts(items, config.prompt_limit, config.prompt_categories)
    if "ground_truth" in config.eval_verifiers:
        from noisesearch.toyworld.grammar import parse

        for item in chosen:
            try:
                parse(item.text)
            except ValueError as e:
                raise ValueError(
                    f"eval verifier 'ground_truth' judges embedded-world prompts only, and {quote(item.text)} is not one "
                    f"({e}); drop 'ground_truth' or use prompts = \"toyworld-heldout\""
                ) from None
    return chosen


def plan(config: SweepConfig, prompts: Sequence[PromptItem] | None = None) -> list[WorkItem]:
    """Every row of the sweep, in a fixed order: model, strategy, search verifier, budget, seed, prompt."""
    prompts = sweep_prompts(config) if prompts is None else list(prompts)
    sampling = _sampling(config)
    evals = sorted(config.eval_verifiers)
    items = []
    for model in config.models:
        for strategy in config.strategies:
            for verifier in config.search_verifiers:
                for budget in config.budgets:
                    for seed in config.seeds:
                        for prompt in prompts:
                            identity = {
                                "prompt": prompt.text,
                                "model": model,
                                "strategy": {
                                    "name": strategy.name,
                                    "options": {k: _thaw(v) for k, v in strategy.options},
                                    # only with a prior, so that the keys of existing rows stay the same
                                    **({"prior": strategy.prior_identity} if strategy.prior_identity else {}),
                                },
                                "search_verifier": verifier,
                                "budget_nfe": budget,
                                "seed": seed,
                                "sampling": sampling,
                                "eval_verifiers": evals,
                                "top_k": config.top_k,
                            }
                            items.append(
                                WorkItem(prompt, model, strategy, verifier, budget, seed, identity, row_key(identity))
                            )
    if len({it.key for it in items}) != len(items):  # prompts and axes are de-duplicated above
        raise AssertionError("two rows of the sweep have the same key")
    return items


def shard(items: Sequence[WorkItem], rank: int, world_size: int) -> list[WorkItem]:
    """Process ``rank``'s rows: every ``world_size``-th row of the plan, starting at ``rank``."""
    return [it for i, it in enumerate(items) if i % world_size == rank]


# ----------------------------------------------------------------------------------- storage


def shard_path(out_dir: Path, rank: int, world_size: int) -> Path:
    return out_dir / SHARDS_DIR / f"rank-{rank}-of-{world_size}.jsonl"


#: fields every result row has, with their JSON types (reports and resumes rely on them)
ROW_FIELDS: dict[str, tuple[type, ...]] = {
    "key": (str,),
    "prompt": (str,),
    "model": (str,),
    "strategy": (str,),
    "search_verifier": (str,),
    "budget_nfe": (int,),
    "seed": (int,),
    "accounting": (dict,),
}
#: optional fields: JSON types besides null
OPTIONAL_ROW_FIELDS: dict[str, tuple[type, ...]] = {
    "search_score": (int, float),
    "image": (str,),
    "category": (str,),
    "eval": (dict,),
    "timing": (dict,),
}


def check_result_row(row: Mapping[str, Any]) -> None:
    """Raises ``ValueError`` (what is wrong, in a few words) unless ``row`` has the shape of a sweep result row."""

    def kind(types: tuple[type, ...]) -> str:
        return " or ".join({str: "a string", int: "an integer", float: "a number", dict: "an object"}[t] for t in types)

    def is_a(value: Any, types: tuple[type, ...]) -> bool:
        return isinstance(value, types) and not isinstance(value, bool)

    for name, types in ROW_FIELDS.items():
        if name not in row:
            raise ValueError(f"missing {name!r}")
        if not is_a(row[name], types):
            raise ValueError(f"{name!r} is not {kind(types)}")
    for name, types in OPTIONAL_ROW_FIELDS.items():
        if row.get(name) is not None and not is_a(row[name], types):
            raise ValueError(f"{name!r} is not {kind(types)} or null")
    numbers = [("eval", k, v) for k, v in (row.get("eval") or {}).items()]
    numbers += [("accounting", k, row["accounting"].get(k)) for k in ("nfe", "verifier_calls")]
    numbers += [("timing", "row", (row.get("timing") or {}).get("row"))]
    for field_name, k, v in numbers:
        if v is not None and not is_a(v, (int, float)):
            raise ValueError(f"{field_name}.{k} is not a number or null")


def read_result_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a results or shard file, each checked by :func:`check_result_row`; errors name file and line."""
    return read_jsonl(path, check=check_result_row, what="sweep result row")


def completed_rows(out_dir: str | Path) -> dict[str, dict[str, Any]]:
    """Every complete row in the shards of ``out_dir`` by key (first occurrence, shards sorted by name)."""
    rows: dict[str, dict[str, Any]] = {}
    folder = Path(out_dir) / SHARDS_DIR
    for path in sorted(folder.glob("*.jsonl")) if folder.is_dir() else []:
        for row in read_result_rows(path):
            rows.setdefault(row["key"], row)
    return rows


def store_image(image: torch.Tensor, images_dir: Path) -> str:
    """Saves a [3, H, W] uint8 image as ``<sha256 of its PNG bytes>.png``; returns the file name."""
    from noisesearch.io.results import to_pil

    buf = io.BytesIO()
    to_pil(image).save(buf, format="PNG")
    data = buf.getvalue()
    name = f"{hashlib.sha256(data).hexdigest()}.png"
    target = images_dir / name
    if not target.exists():  # same name, same bytes: concurrent writers may both rename, harmlessly
        write_atomic(target, data)
    return name


def merge(out_dir: str | Path, keys: Sequence[str]) -> Path:
    """Writes ``results.jsonl``: the rows of ``keys`` from all shards, sorted by key, atomically.

    Raises ``RuntimeError`` naming how many rows are missing when a key has no complete row.
    """
    out = Path(out_dir)
    rows = completed_rows(out)
    missing = [k for k in keys if k not in rows]
    if missing:
        raise RuntimeError(
            f"{len(missing)} of {len(keys)} rows are not complete in {out / SHARDS_DIR}; run the sweep again to finish them"
        )
    lines = [json.dumps(rows[k], ensure_ascii=False, allow_nan=False) + "\n" for k in sorted(keys)]
    path = out / RESULTS_FILE
    write_atomic(path, "".join(lines).encode("utf-8"))
    return path


def read_results(results_dir: str | Path) -> tuple[list[dict[str, Any]], bool]:
    """Rows of a sweep folder and whether they are final: ``results.jsonl``, else the shards so far."""
    folder = user_path(results_dir)
    if not folder.is_dir():
        what = "does not exist" if not folder.exists() else "is a file, not a folder"
        raise ValueError(
            f"sweep results folder {quote(str(folder), 200)} {what}; pass the --out folder of `noisesearch sweep`"
        )
    if (folder / RESULTS_FILE).exists():
        rows = read_result_rows(folder / RESULTS_FILE)
        if not rows:
            raise ValueError(
                f"{quote(str(folder / RESULTS_FILE), 200)} holds no rows; run the sweep again to rewrite it"
            )
        return rows, True
    rows_by_key = completed_rows(folder)
    if not rows_by_key:
        raise ValueError(
            f"{quote(str(folder), 200)} holds no sweep results ({RESULTS_FILE} or {SHARDS_DIR}/*.jsonl); "
            "pass the --out folder of `noisesearch sweep`"
        )
    return [rows_by_key[k] for k in sorted(rows_by_key)], False


# ----------------------------------------------------------------------------------- checks


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
