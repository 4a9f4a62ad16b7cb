"""The search engine: a budgeted search context, typed results, and :func:`run_search`.

Strategies spend compute only through a :class:`SearchContext`, whose primitives (draw noises,
denoise between steps, re-noise, preview x0, decode, score) are metered by the one
:class:`~noisesearch.accounting.Meter` of the search. A strategy therefore cannot under-report its
compute, and the NFE budget is checked before any network call that would exceed it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from noisesearch.accounting import Accounting, Meter
from noisesearch.core.sampler import DenoisingCore, Trajectory
from noisesearch.verifiers.base import Verifier, check_scores, score_details

#: ``prior(noise, prompts) -> noise``: maps standard normal noises [B, *latent] and their prompts to
#: the initial noises the sampler starts from (NPNet's golden noise). A prior that needs the model
#: itself (NPNet reads the prompt embeddings) may instead offer ``bind(core) -> NoisePrior``;
#: :class:`SearchContext` binds it to its core.
NoisePrior = Callable[[torch.Tensor, Sequence[str]], torch.Tensor]


def bind_prior(prior: Any, core: DenoisingCore) -> NoisePrior | None:
    """``prior`` ready to call: bound to ``core`` when it has a ``bind`` method."""
    if prior is None:
        return None
    bind = getattr(prior, "bind", None)
    return bind(core) if callable(bind) else prior


def _finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None


@dataclass
class Candidate:
    """One finished, decoded and scored candidate."""

    seed: int  # reproduce in diffusers with generator=torch.Generator(device).manual_seed(seed)
    prompt: str
    score: float  # verifier score; -inf when the candidate was not finite
    finite: bool  # False when its latents or score were NaN/inf (excluded from selection)
    round: int  # search round that produced it
    image: torch.Tensor | None = None  # [3, H, W] uint8 on CPU
    noise: torch.Tensor | None = None  # [*latent] float32 initial noise on CPU (what the sampler started from)
    info: dict[str, Any] = field(default_factory=dict)  # strategy-specific (e.g. path id, parent seed)

    def to_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "prompt": self.prompt,
            "score": self.score if math.isfinite(self.score) else None,
            "finite": self.finite,
            "round": self.round,
            **({"info": self.info} if self.info else {}),
        }


@dataclass
class RoundRecord:
    """Progress after one round of a strategy."""

    round: int
    nfe: int  # cumulative NFEs after this round
    candidates: int  # candidates scored in this round
    best_score: float  # best score so far
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        best = self.best_score if math.isfinite(self.best_score) else None
        return {
            "round": self.round,
            "nfe": self.nfe,
            "candidates": self.candidates,
            "best_score": best,
            "note": self.note,
        }


@dataclass
class SearchResult:
    """What a search returns: every scored candidate, the best ones, compute spent, history."""

    prompt: str
    model: str
    strategy: str
    verifier: str
    budget_nfe: int
    candidates: list[Candidate]
    accounting: Accounting
    history: list[RoundRecord]
    settings: dict[str, Any] = field(default_factory=dict)
    partial: bool = False  # True when the search was interrupted before spending its budget

    def ranked(self) -> list[Candidate]:
        """Finite candidates, best first (ties broken by seed for determinism)."""
        return sorted((c for c in self.candidates if c.finite), key=lambda c: (-c.score, c.seed))

    @property
    def best(self) -> Candidate:
        ranked = self.ranked()
        if not ranked:
            raise ValueError("the search produced no finite candidate")
        return ranked[0]

    @property
    def scores(self) -> torch.Tensor:
        return torch.tensor([c.score for c in self.candidates])

    @property
    def non_finite(self) -> int:
        return sum(not c.finite for c in self.candidates)

    def best_images(self, k: int = 1) -> torch.Tensor:
        """The k best images as float [k, 3, H, W] in [0, 1]."""
        return torch.stack([c.image for c in self.ranked()[:k] if c.image is not None]).float() / 255

    def to_dict(self) -> dict[str, Any]:
        best = self.ranked()[0] if self.ranked() else None
        return {
            "prompt": self.prompt,
            "model": self.model,
            "strategy": self.strategy,
            "verifier": self.verifier,
            "budget_nfe": self.budget_nfe,
            "partial": self.partial,
            "best": None if best is None else best.to_dict(),
            "non_finite_candidates": self.non_finite,
            "accounting": self.accounting.to_dict(),
            "settings": self.settings,
            "history": [r.to_dict() for r in self.history],
            "candidates": [c.to_dict() for c in self.candidates],
        }


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    return (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()


class SearchContext:
    """The only way a strategy spends compute; counts everything through one meter."""

    def __init__(
        self,
        core: DenoisingCore,
        verifier: Verifier,
        prompt: str,
        budget_nfe: int,
        seed: int = 0,
        prior: NoisePrior | None = None,
        keep_images: bool = True,
    ) -> None:
        if budget_nfe < core.schedule.num_steps:
            raise ValueError(
                f"budget of {budget_nfe} NFEs is smaller than one full sample ({core.schedule.num_steps} steps); "
                "raise --budget or lower --steps"
            )
        self.core = core
        self.verifier = verifier
        self.prompt = prompt
        self.seed = seed
        self.prior = bind_prior(prior, core)
        self.keep_images = keep_images
        self.meter = Meter(budget_nfe=budget_nfe, device=core.adapter.device)
        core.meter = self.meter
        self.candidates: list[Candidate] = []
        self.history: list[RoundRecord] = []
        self._next_offset = 0
        self._noise: dict[int, torch.Tensor] = {}
        self._proxies: dict[int, DenoisingCore] = {}

    # --- budget -------------------------------------------------------------------------------
    @property
    def budget_nfe(self) -> int:
        assert self.meter.budget_nfe is not None
        return self.meter.budget_nfe

    @property
    def nfe_used(self) -> int:
        return self.meter.acc.nfe

    @property
    def nfe_left(self) -> int:
        return self.budget_nfe - self.meter.acc.nfe

    @property
    def steps(self) -> int:
        """NFEs of one full sample from noise."""
        return self.core.schedule.num_steps

    # --- noise --------------------------------------------------------------------------------
    def new_seeds(self, count: int) -> list[int]:
        """The next ``count`` candidate seeds: seed + i for the i-th candidate of the search."""
        seeds = [self.seed + self._next_offset + i for i in range(count)]
        self._next_offset += count
        return seeds

    def initial_noise(self, seeds: Sequence[int]) -> torch.Tensor:
        """Each seed's diffusers-compatible Gaussian noise, passed through the prior if one is set."""
        noise = self.core.initial_noise(seeds)
        if self.prior is not None:
            with self.meter.phase("prior"):
                noise = self.prior(noise, [self.prompt] * len(seeds))
            self.meter.prior_call(len(seeds))
        return noise

    def set_prior(self, prior: Any) -> None:
        """Makes ``prior`` (a :data:`NoisePrior` or an object with ``bind(core)``) the source of initial noises."""
        self.prior = bind_prior(prior, self.core)

    def start(self, seeds: Sequence[int], noise: torch.Tensor | None = None) -> Trajectory:
        """Trajectories at step 0 for ``seeds`` (from their own noise unless ``noise`` is given)."""
        noise = self.initial_noise(seeds) if noise is None else noise
        for s, z in zip(seeds, noise):
            self._noise[s] = z.detach().cpu()
        return self.core.start(noise, [self.prompt] * len(seeds), seeds)

    # --- compute ------------------------------------------------------------------------------
    def denoise(self, trajectory: Trajectory, until: int | None = None, grad: bool = False) -> Trajectory:
        return self.core.run(trajectory, until, grad=grad)

    def renoise(self, trajectory: Trajectory, to_step: int, noise: torch.Tensor) -> Trajectory:
        return self.core.renoise(trajectory, to_step, noise)

    def preview(self, trajectory: Trajectory, fresh: bool = False) -> torch.Tensor:
        """x0 previews [B, *latent]: free from the last evaluation, or ``fresh`` (one NFE per candidate,
        paid once: continuing the trajectory from this state reuses that evaluation)."""
        return self.core.preview(trajectory, fresh=fresh)

    def lookahead(self, trajectory: Trajectory, jumps: int = 2) -> torch.Tensor:
        """Estimated final x0 [B, *latent] from ``jumps`` large DDIM jumps ahead (``jumps + 1`` NFEs per
        candidate, the first one cached so that continuing from this state does not pay it again);
        see :meth:`~noisesearch.core.sampler.DenoisingCore.lookahead`."""
        return self.core.lookahead(trajectory, jumps=jumps)

    def decode(self, latents: torch.Tensor, grad: bool = False) -> torch.Tensor:
        images = self.core.decode(latents, grad=grad)
        self.meter.acc.decoded += latents.shape[0]
        return images

    def score(self, images: torch.Tensor, prompts: Sequence[str] | None = None, grad: bool = False) -> torch.Tensor:
        """Verifier scores [B]; non-finite images or scores come back as -inf.

        ``grad=True`` keeps the graph from ``images`` to the scores (the verifier must be
        differentiable); the call is counted like any other.
        """
        prompts = list(prompts) if prompts is not None else [self.prompt] * images.shape[0]
        if grad and not getattr(self.verifier, "differentiable", False):
            raise ValueError(f"verifier {self.verifier.name!r} is not differentiable; gradients need one that is")
        with self.meter.phase("verify"), torch.set_grad_enabled(grad):
            scores = check_scores(self.verifier.score(images, prompts), len(prompts), self.verifier.name).cpu()
        self.meter.verifier_call(images.shape[0])
        bad = ~torch.isfinite(scores.detach()) | ~torch.isfinite(images.detach().flatten(1)).all(dim=1).cpu()
        return scores.masked_fill(bad, -math.inf)

    def proxy_core(self, steps: int) -> DenoisingCore:
        """A core over the same model and settings with ``steps`` solver steps, metered by this search.

        Gradient optimisation backpropagates through a few-step sampler; its NFEs count against the
        same budget. ``steps`` equal to the search's own returns :attr:`core` itself.
        """
        if steps == self.steps:
            return self.core
        if steps not in self._proxies:
            proxy = DenoisingCore(self.core.adapter, replace(self.core.config, steps=steps), meter=self.meter)
            self._proxies[steps] = proxy
        return self._proxies[steps]

    # --- results ------------------------------------------------------------------------------
    def finish(
        self, trajectory: Trajectory, round: int = 0, info: Sequence[dict[str, Any]] | None = None
    ) -> torch.Tensor:
        """Runs candidates to the end, decodes and scores them, and records them as results."""
        trajectory = self.denoise(trajectory)
        images = self.decode(trajectory.x)
        scores = self.score(images)
        # sub-scores of this call (e.g. a judge's per-aspect scores), kept in each candidate's info
        details = {k: v for k, v in score_details(self.verifier).items() if v.numel() == len(trajectory.seeds)}
        latent_ok = torch.isfinite(trajectory.x.flatten(1)).all(dim=1).cpu()
        kept = to_uint8(images) if self.keep_images else None
        for i, seed in enumerate(trajectory.seeds):
            finite = bool(latent_ok[i]) and math.isfinite(float(scores[i]))
            self.candidates.append(
                Candidate(
                    seed=seed,
                    prompt=self.prompt,
                    score=float(scores[i]) if finite else -math.inf,
                    finite=finite,
                    round=round,
                    image=None if kept is None else kept[i],
                    noise=self._noise.get(seed),
                    info={
                        **(dict(info[i]) if info is not None else {}),
                        **(
                            {"verifier_details": {k: _finite_or_none(float(v[i])) for k, v in details.items()}}
                            if details
                            else {}
                        ),
                    },
                )
            )
        return scores

    @property
    def best_score(self) -> float:
        finite = [c.score for c in self.candidates if c.finite]
        return max(finite) if finite else -math.inf

    def log_round(self, round: int, candidates: int, note: str = "") -> None:
        self.history.append(RoundRecord(round, self.nfe_used, candidates, self.best_score, note))
