"""One search request, checked and resolved in one place.

The command line, the Python API (:func:`noisesearch.search`), sweeps and NPNet collection all
describe a run as a :class:`SearchRequest` and turn it into loaded parts with :func:`resolve`, so
every default (a model family's steps, guidance and verifier) and every check lives here once.
Adding a sampling option is one field of :class:`Sampling` plus its command-line flag.

:meth:`SearchRequest.check` is cheap (no weights are read): callers run it first so that a typo
fails in a second, before a model loads.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeGuard

from noisesearch.core.memory import DEFAULT_MAX_BATCH
from noisesearch.core.sampler import CoreConfig, check_guidance, check_side, check_steps

if TYPE_CHECKING:
    import torch

    from noisesearch.core.adapter import ModelAdapter
    from noisesearch.engine import NoisePrior
    from noisesearch.strategies.base import Strategy
    from noisesearch.verifiers.base import Verifier
    from noisesearch.verifiers.spec import VerifierSpec

#: where the embedded world's defaults come from when no model is named
DEFAULT_MODEL = "toyworld"
#: noise priors a request may name (``npnet``: NPNet's golden noise, Zhou et al. 2024)
PRIORS = ("none", "npnet")
#: largest candidate seed + 1: candidate seeds ``seed + i`` must fit torch's 64-bit generator seeds
SEED_LIMIT = 2**63


def ensure_registrations() -> None:
    """Registers the built-in strategies and verifiers (idempotent; imports no weights)."""
    import noisesearch.strategies  # noqa: F401  (importing registers them)
    from noisesearch.verifiers.base import register_builtin_verifiers

    register_builtin_verifiers()


@dataclass(frozen=True)
class Sampling:
    """How every candidate is sampled. ``None`` takes the model family's default."""

    steps: int | None = None  # solver steps of one full sample
    guidance: float | None = None  # classifier-free guidance scale (0: no unconditional branch)
    scheduler: str | None = None  # solver: ddim, euler, dpm++2m or flow-euler
    height: int | None = None  # pixels; None: the model's native size
    width: int | None = None  # pixels; None: the model's native size
    negative_prompt: str | None = None  # text of the unconditional branch; None: the pipeline's default
    max_batch: int | str = 32  # candidates per network call (rows twice that with guidance); "auto": fit free memory

    def check(self) -> None:
        """Raises ``ValueError`` naming the first bad setting (no model needed)."""
        from noisesearch.core.schedule import SOLVERS

        if self.steps is not None:
            check_steps(self.steps)
        if self.guidance is not None:
            check_guidance(self.guidance)
        if self.scheduler is not None and self.scheduler not in SOLVERS:
            raise ValueError(f"unknown scheduler {self.scheduler!r}; choose one of: {', '.join(SOLVERS)}")
        check_side("height", self.height)
        check_side("width", self.width)
        from noisesearch.core.memory import parse_max_batch

        parse_max_batch(self.max_batch)

    @property
    def auto_batch(self) -> bool:
        """True when the batch size is to be measured (``max_batch="auto"``)."""
        from noisesearch.core.memory import parse_max_batch

        return parse_max_batch(self.max_batch) == "auto"

    def core_config(self, defaults: Mapping[str, Any]) -> CoreConfig:
        """The core's settings, the model's ``defaults`` (``steps``, ``guidance``) filling the gaps."""
        return CoreConfig(
            solver=self.scheduler,
            steps=self.steps if self.steps is not None else int(defaults.get("steps", 20)),
            guidance=self.guidance if self.guidance is not None else float(defaults.get("guidance", 7.5)),
            height=self.height,
            width=self.width,
            negative_prompt=self.negative_prompt,
            max_batch=DEFAULT_MAX_BATCH if self.auto_batch else int(self.max_batch),
        )


@dataclass(frozen=True)
class SearchRequest:
    """A whole search but its prompt: model, sampling, strategy, verifier, budget, prior, seed.

    Names are resolved by :func:`resolve`; already-built objects (an adapter, a strategy, a
    verifier or any ``callable(images, prompts) -> scores``) are accepted in their place.
    """

    model: str | ModelAdapter | None = None  # name, folder or cached hub id; None: toyworld
    strategy: str | Strategy = "random"  # registered name or a strategy object
    strategy_options: Mapping[str, Any] = field(default_factory=dict)  # hyperparameters of a named strategy
    verifier: str | VerifierSpec | Verifier | Callable[..., Any] | None = None  # spec; None: the family's default
    budget: int | None = None  # NFEs; None: 16 full samples (or ``candidates``)
    candidates: int | None = None  # budget as full samples instead of NFEs
    seed: int = 0  # candidate i gets seed ``seed + i``
    sampling: Sampling = field(default_factory=Sampling)
    prior: str | NoisePrior | None = None  # "none", "npnet" or a prior object
    npnet_checkpoint: str | Path | None = None  # NPNet file for prior "npnet" (default: the model's shipped one)
    device: str | torch.device | None = "auto"  # cpu, cuda, cuda:N or auto
    dtype: str | torch.dtype | None = "auto"  # auto, fp32, fp16 or bf16
    compile: bool = False  # torch.compile the denoiser (GPU only)

    def check(self) -> None:
        """Every check that needs no weights; raises ``ValueError`` saying what to change."""
        ensure_registrations()
        self.sampling.check()
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < SEED_LIMIT:
            raise ValueError(f"seed must be an integer >= 0 and < 2**63, got {self.seed!r}")
        if isinstance(self.strategy, str):
            build_strategy(self.strategy, self.strategy_options)
        elif self.strategy_options:
            raise ValueError("strategy options are only accepted together with a strategy name")
        if _is_spec(self.verifier):
            verifier_spec(self.verifier)
        self.check_budget()
        if isinstance(self.prior, str) and self.prior not in PRIORS:
            raise ValueError(f"unknown prior {self.prior!r}; choose one of: {', '.join(PRIORS)}")
        if self.npnet_checkpoint is not None and not self.wants_npnet:
            raise ValueError("an NPNet checkpoint needs prior 'npnet' or strategy 'npnet'")
        if isinstance(self.model, str):
            from noisesearch.models import check_model

            check_model(self.model)  # last, as it reads the disk (no weights): unknown or uncached names

    def check_budget(self) -> None:
        """Raises ``ValueError`` unless the budget is one positive number of NFEs or of candidates."""
        if self.budget is not None and self.candidates is not None:
            raise ValueError("give either a budget in NFEs or a number of candidates, not both")
        if self.candidates is not None and (
            isinstance(self.candidates, bool) or not isinstance(self.candidates, int) or self.candidates < 1
        ):
            raise ValueError(f"candidates must be a positive integer, got {self.candidates!r}")
        if self.budget is not None and (
            isinstance(self.budget, bool) or not isinstance(self.budget, int) or self.budget <= 0
        ):
            raise ValueError(f"budget must be a positive number of NFEs, got {self.budget!r}")

    @property
    def wants_npnet(self) -> bool:
        return self.prior == "npnet" or self.strategy == "npnet"

    def nfe_budget(self, steps: int) -> int:
        """The budget in NFEs for samples of ``steps`` steps (default: 16 full samples)."""
        self.check_budget()
        if self.candidates is not None:
            return self.candidates * steps
        if self.budget is None:
            return 16 * steps
        if self.budget < steps:
            raise ValueError(
                f"budget of {self.budget} NFEs is smaller than one full sample ({steps} steps); "
                "raise the budget or lower the steps"
            )
        return self.budget


def build_strategy(name: str, options: Mapping[str, Any]) -> Strategy:
    """The registered strategy ``name`` with ``options`` (values are checked by its dataclass)."""
    from noisesearch.strategies.base import make_strategy

    ensure_registrations()
    return make_strategy(name, **dict(options))


@dataclass
class ResolvedSearch:
    """A request with every part loaded: what :func:`noisesearch.engine.run_request` runs."""

    request: SearchRequest
    adapter: ModelAdapter
    core_config: CoreConfig
    strategy: Strategy
    verifier: Verifier
    prior: Any  # a NoisePrior, a prior with bind(core) (NPNet), or None
    nfe_budget: int


def resolve(request: SearchRequest, adapter: ModelAdapter | None = None) -> ResolvedSearch:
    """Loads the model (unless ``adapter`` is given), builds strategy, verifier and prior.

    Runs :meth:`SearchRequest.check` first, so bad names fail before any weights load.
    """
    from noisesearch.core.adapter import ModelAdapter
    from noisesearch.models import load_model

    request.check()
    if adapter is None:
        if isinstance(request.model, ModelAdapter):
            adapter = request.model
        else:
            adapter = load_model(request.model, device=request.device, dtype=request.dtype, compile=request.compile)
    defaults = adapter.info.details
    core_config = request.sampling.core_config(defaults)
    strategy = (
        build_strategy(request.strategy, request.strategy_options)
        if isinstance(request.strategy, str)
        else request.strategy
    )
    verifier_choice = request.verifier if request.verifier is not None else defaults.get("verifier", "clipscore")
    verifier = build_verifier(verifier_choice, adapter.device)
    return ResolvedSearch(
        request=request,
        adapter=adapter,
        core_config=core_config,
        strategy=strategy,
        verifier=verifier,
        prior=_prior(request, adapter.info.family),
        nfe_budget=request.nfe_budget(core_config.steps),
    )


def _is_spec(verifier: object) -> TypeGuard[str | VerifierSpec]:
    from noisesearch.verifiers.spec import VerifierSpec

    return isinstance(verifier, str | VerifierSpec)


def verifier_spec(verifier: str | VerifierSpec) -> VerifierSpec:
    """A verifier spec (``'clipscore(model=ViT-B-32)'`` or a :class:`VerifierSpec`), validated
    without loading anything; ``ValueError`` says what to change."""
    from noisesearch.verifiers.spec import VerifierSpec

    ensure_registrations()
    return VerifierSpec.coerce(verifier).validate()


def build_verifier(
    verifier: str | VerifierSpec | Verifier | Callable[..., Any], device: str | torch.device
) -> Verifier:
    """Builds the verifier of a spec (text or :class:`VerifierSpec`); passes verifiers and callables through.

    A verifier built from a spec with options is named by the spec's canonical text, so results
    and reports say exactly which verifier scored them.
    """
    from noisesearch.verifiers.base import as_verifier
    from noisesearch.verifiers.spec import VerifierSpec

    if not isinstance(verifier, str | VerifierSpec):
        return as_verifier(verifier)
    spec = verifier_spec(verifier)
    built = spec.load(device)
    if spec.options:
        try:
            built.name = str(spec)
        except (AttributeError, TypeError, dataclasses.FrozenInstanceError):  # a read-only name: keep it
            pass
    return built


def _prior(request: SearchRequest, family: str) -> Any:
    """A NoisePrior, an object with ``bind(core)`` (NPNet reads the core's text embeddings) or None."""
    if request.prior is not None and not isinstance(request.prior, str):
        return request.prior
    if request.prior != "npnet" and request.npnet_checkpoint is None:
        return None  # the npnet strategy, if asked for, loads its own (or the model's shipped) NPNet
    from noisesearch.npnet.prior import NPNetPrior, default_checkpoint, load_cached

    checkpoint = Path(request.npnet_checkpoint) if request.npnet_checkpoint is not None else default_checkpoint(family)
    return NPNetPrior(load_cached(checkpoint))
