"""A sweep's configuration: the grid (prompts, models, strategies with options and priors,
search and evaluation verifiers, budgets, seeds) and shared sampling settings, read from TOML and
checked before anything runs."""

from __future__ import annotations

import dataclasses
import difflib
import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from noisesearch.io.paths import user_path
from noisesearch.io.usertext import quote
from noisesearch.prompts import BUILTIN_SETS
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
        if self.prompt_limit is not None and (not _is_int(self.prompt_limit) or self.prompt_limit < 1):
            raise bad("prompt_limit", "a positive integer (or left out)", self.prompt_limit)
        for key in ("top_k", "max_batch"):
            v = getattr(self, key)
            if not _is_int(v) or v < 1:
                raise bad(key, "a positive integer", v)
        for key in ("prompt_column", "scheduler", "negative_prompt"):
            v = getattr(self, key)
            if v is not None and not isinstance(v, str):
                raise bad(key, "a string (or left out)", v)
        try:  # steps, guidance, height, width: the checks of a single run (the scheduler: see validate)
            dataclasses.replace(self.sampling, scheduler=None).check()
        except ValueError as e:
            key, _, rest = str(e).partition(" ")  # "steps must be ..."
            raise ValueError(f"sweep config key {key!r} {rest}") from e
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
