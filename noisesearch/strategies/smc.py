"""Sequential Monte Carlo steering: Feynman–Kac steering of Singhal et al. 2025, "A General Framework
for Inference-time Scaling and Steering of Diffusion Models".

K particles are denoised together in one batch. At scheduled steps each particle's free x0 preview
(or, with ``lookahead`` J > 0, a J-jump DDIM lookahead of its final x0) is decoded and scored, giving
a reward r_t; a potential G_t = exp(λ·s_t) multiplies its weight, with s_t the reward increment
r_t − r_prev ("difference"), the running maximum ("max") or the running sum ("sum") of the rewards
seen on its lineage.

Scale-free potentials (default): the rewards of each scored step are standardised across the
particles, z = (r − mean) / std, before they enter s_t, so λ means the same for every verifier. FK's
λ = 10 assumes rewards spanning about ±2 (ImageReward); on a log-probability verifier such as
``toydetect`` (scores in [−27.6, 0]) exp(10·r) is one-hot and resampling keeps one or two lineages.
On z-scores λ = 1 gives an effective sample size of about e^(−λ²) ≈ 0.37·K for Gaussian rewards.
Scoring starts at 0.4 of the schedule by default, where previews begin to carry information (on the
embedded world the Spearman correlation of a free preview with the final score is 0.23 after 4 of 20
steps and 0.47 after 8). FK's settings stay reachable: ``standardize=False, lam=10, start=0.2``. When the effective sample size of the weights drops
below ``ess_threshold``·K the particles are resampled in proportion to their weights. All particles
are finished and scored at the end, and the best one wins, so with resampling off (``resample_every
= 0`` or λ = 0) this is exactly best-of-N random search on the same seeds.

Differences from the reference code (Fk-Diffusion-Steering), on purpose:

* Weights accumulate between resampling events (the FK product of potentials); the reference code
  drops the weights of a step where it decided not to resample.
* The reference samples with a stochastic (DDPM) sampler, so resampled copies of one particle
  diverge. This core's solvers are deterministic ODE solvers, under which copies would stay
  identical; instead each extra copy has a fraction ``churn`` of its noise component replaced by
  fresh noise at the resampling step, x = α·x0 + σ·(sqrt(1 − γ²)·ε̂ + γ·ξ), which keeps its level and
  its x0 prediction (no extra NFE). The first copy of each ancestor continues unchanged.
* No final resampling: every final particle is scored anyway and the best one is kept.

Candidate seeds identify particle slots: slot k keeps seed k whatever lineage it carries after
resampling; ``info["root"]`` is the seed of the initial noise of its lineage. Resampling and churn
randomness derive from the slot seeds, so a search is reproducible and independent of chunking.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, ClassVar

import torch

from noisesearch.core.seeds import derived_seed, gaussian_like
from noisesearch.strategies.base import register_strategy

if TYPE_CHECKING:
    from noisesearch.core.sampler import Trajectory
    from noisesearch.core.schedule import Schedule
    from noisesearch.engine import SearchContext

POTENTIALS = ("difference", "max", "sum")
RESAMPLERS = ("multinomial", "systematic")
_RESAMPLE_KEY = 0x5EC
_CHURN_KEY = 0xC4A2


def effective_sample_size(log_weights: torch.Tensor) -> float:
    """ESS = (Σw)² / Σw² of unnormalised log-weights [K]; 0 when every weight is zero."""
    lw = log_weights.double()
    if not torch.isfinite(lw).any():
        return 0.0
    w = torch.softmax(lw, dim=0)
    return float(1.0 / (w**2).sum())


def resample_indices(log_weights: torch.Tensor, method: str, generator: torch.Generator) -> torch.Tensor:
    """K ancestor indices drawn in proportion to exp(log_weights) [K] (long tensor [K])."""
    w = torch.softmax(log_weights.double(), dim=0)
    k = w.shape[0]
    if method == "multinomial":
        return torch.multinomial(w, k, replacement=True, generator=generator)
    if method == "systematic":
        # one uniform offset, K evenly spaced positions on the CDF
        u = (torch.rand(1, generator=generator, dtype=torch.float64) + torch.arange(k, dtype=torch.float64)) / k
        return torch.searchsorted(torch.cumsum(w, 0), u).clamp(max=k - 1)
    raise ValueError(f"unknown resampler {method!r}; choose one of: {', '.join(RESAMPLERS)}")


def potential_statistic(kind: str, reward: torch.Tensor, previous: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(s_t, new running state) for one scored step; λ·s_t is the log-potential.

    ``previous`` is the lineage's running state: last reward (difference), running max (max) or
    running sum (sum); it starts at 0, −inf and 0 so that at the first scored step s_t = r_t.
    """
    if kind == "difference":
        return reward - previous, reward
    if kind == "max":
        m = torch.maximum(reward, previous)
        return m, m
    if kind == "sum":
        s = previous + reward
        return s, s
    raise ValueError(f"unknown potential {kind!r}; choose one of: {', '.join(POTENTIALS)}")


_INITIAL_STATE = {"difference": 0.0, "max": -math.inf, "sum": 0.0}


def standardized(reward: torch.Tensor) -> torch.Tensor:
    """z-scores of rewards [K] across the finite ones (all 0 when they are equal); non-finite stay -inf."""
    ok = torch.isfinite(reward)
    if int(ok.sum()) == 0:
        return reward
    mu = reward[ok].mean()
    sd = reward[ok].std(unbiased=False)
    z = (reward - mu) / sd if float(sd) > 0 else torch.zeros_like(reward)
    return torch.where(ok, z, torch.full_like(reward, -math.inf))


@register_strategy
@dataclass(frozen=True)
class SMCSearch:
    """Feynman–Kac steering (SMC): particles in one batch, resampled by potentials of x0-preview rewards."""

    name: ClassVar[str] = "smc"
    #: CLI flag -> field
    cli_options: ClassVar[dict[str, str]] = {
        "--smc-particles": "particles",
        "--smc-potential": "potential",
        "--smc-lambda": "lam",
        "--smc-resample-every": "resample_every",
        "--smc-ess-threshold": "ess_threshold",
        "--smc-start": "start",
        "--smc-end": "end",
        "--smc-resampler": "resampler",
        "--smc-churn": "churn",
        "--smc-standardize/--smc-no-standardize": "standardize",
        "--smc-lookahead": "lookahead",
    }

    particles: int = 0  # K, particles per batch; 0: as many as the budget allows (FK's examples use 4)
    potential: str = "max"  # "difference" | "max" | "sum" (FK's image examples use max)
    lam: float = 1.0  # λ, inverse temperature of the potential exp(λ·s), on z-scores (FK: 10 on raw ImageReward)
    resample_every: int = 5  # score and maybe resample every this many steps; 0 turns SMC off (best-of-N)
    ess_threshold: float = 0.5  # resample when ESS < threshold·K (FK's adaptive resampling: 0.5); 1.0 always
    start: float = 0.4  # first scored step, as a fraction of the schedule (FK: 0.2, step 20 of 100)
    end: float = 0.8  # last scored step, as a fraction of the schedule (FK: step 80 of 100)
    resampler: str = "multinomial"  # "multinomial" (FK) | "systematic" (lower variance)
    churn: float = 0.5  # γ, fraction of the noise refreshed in extra copies after resampling (0: exact copies)
    standardize: bool = True  # z-score the rewards across particles at each scored step (False: FK's raw rewards)
    lookahead: int = (
        0  # J > 0: score a J-jump DDIM lookahead (J + 1 NFEs per particle and scored step) instead of the free preview
    )

    def __post_init__(self) -> None:
        if not isinstance(self.particles, int) or self.particles < 0:
            raise ValueError(f"particles must be an integer >= 0 (0: fit the budget), got {self.particles!r}")
        if self.potential not in POTENTIALS:
            raise ValueError(f"unknown potential {self.potential!r}; choose one of: {', '.join(POTENTIALS)}")
        if not (self.lam >= 0 and math.isfinite(self.lam)):
            raise ValueError(f"lam must be a finite number >= 0, got {self.lam!r}")
        if not isinstance(self.resample_every, int) or self.resample_every < 0:
            raise ValueError(f"resample_every must be an integer >= 0 (0: no resampling), got {self.resample_every!r}")
        if not 0.0 <= self.ess_threshold <= 1.0:
            raise ValueError(f"ess_threshold must be in [0, 1], got {self.ess_threshold!r}")
        if not 0.0 <= self.start <= self.end <= 1.0:
            raise ValueError(
                f"need 0 <= start <= end <= 1 (fractions of the schedule), got {self.start!r}, {self.end!r}"
            )
        if self.resampler not in RESAMPLERS:
            raise ValueError(f"unknown resampler {self.resampler!r}; choose one of: {', '.join(RESAMPLERS)}")
        if not 0.0 <= self.churn <= 1.0:
            raise ValueError(f"churn must be in [0, 1], got {self.churn!r}")
        if not isinstance(self.lookahead, int) or self.lookahead < 0:
            raise ValueError(f"lookahead must be an integer >= 0 (0: free previews), got {self.lookahead!r}")

    def scored_steps(self, num_steps: int) -> list[int]:
        """Steps (states after that many solver steps) where previews are scored; [] when SMC is off."""
        if self.resample_every == 0 or self.lam == 0:
            return []
        first = max(1, math.ceil(self.start * num_steps))
        last = min(num_steps - 1, math.floor(self.end * num_steps))
        return list(range(first, last + 1, self.resample_every))

    def particle_cost(self, num_steps: int) -> int:
        """NFEs one particle may cost: its sample, plus J + 1 per scored step with a lookahead (an upper
        bound: the lookahead's first evaluation is reused unless churn moved the particle)."""
        looks = 0
        if self.lookahead:
            from noisesearch.core.sampler import DenoisingCore

            looks = sum(
                1 + len(DenoisingCore.lookahead_steps(t, num_steps, self.lookahead))
                for t in self.scored_steps(num_steps)
            )
        return num_steps + looks

    def run(self, ctx: SearchContext) -> None:
        rnd = 0
        per = self.particle_cost(ctx.steps)
        # 1. batches of K particles while full samples fit (K: all of them when particles = 0)
        while ctx.nfe_left >= ctx.steps:
            room = ctx.nfe_left // per
            if room == 0:  # a lookahead-scored particle no longer fits: plain samples with what is left
                k = ctx.nfe_left // ctx.steps
                ctx.finish(ctx.start(ctx.new_seeds(k)), round=rnd, info=[{"role": "fill"}] * k)
                ctx.log_round(rnd, k, "fill: full samples with the NFEs left over")
                break
            k = min(self.particles, room) if self.particles else room
            self._steer(ctx, k, rnd)
            rnd += 1

    def _steer(self, ctx: SearchContext, k: int, rnd: int) -> None:
        schedule = ctx.core.schedule
        shape, device = ctx.core.latent_shape, ctx.core.adapter.device
        slots = ctx.new_seeds(k)
        traj = ctx.start(slots)  # [K, *latent]
        roots = list(slots)  # seed of the initial noise of each slot's lineage
        log_w = torch.zeros(k, dtype=torch.float64)  # accumulated log-weights since the last resampling
        state = torch.full((k,), _INITIAL_STATE[self.potential], dtype=torch.float64)
        resamples = 0
        for step in self.scored_steps(ctx.steps):
            # 2. denoise every particle to this step in one batch; score the free x0 previews   [K]
            traj = ctx.denoise(traj, until=step)
            x0 = ctx.lookahead(traj, jumps=self.lookahead) if self.lookahead else ctx.preview(traj)
            reward = ctx.score(ctx.decode(x0)).double()
            if self.standardize:
                reward = standardized(reward)
            s, state = potential_statistic(self.potential, reward, state)
            # 3. multiply in the potential exp(λ·s); a non-finite reward kills the particle's lineage
            inc = torch.where(torch.isfinite(s), self.lam * s, torch.full_like(s, -math.inf))
            log_w = log_w + inc
            ess = effective_sample_size(log_w)
            note = f"step {step}: ESS {ess:.2f}/{k}"
            # 4. resample when the weights have degenerated (and some particle is still alive)
            if 0 < ess < self.ess_threshold * k - 1e-6:
                g = torch.Generator().manual_seed(derived_seed(slots[0], _RESAMPLE_KEY, rnd, step))
                idx = resample_indices(log_w, self.resampler, g)  # [K] ancestors
                traj = self._churned(replace(traj.select(idx), seeds=list(slots)), idx, step, schedule, shape, device)
                roots = [roots[int(i)] for i in idx]
                state = state[idx]
                log_w = torch.zeros(k, dtype=torch.float64)
                resamples += 1
                note += f", resampled ({len(set(idx.tolist()))} distinct ancestors)"
            ctx.log_round(rnd, k, note)
        # 5. finish, decode and score every particle; the engine keeps the best
        info = [{"root": r, "resamples": resamples} for r in roots]
        ctx.finish(traj, round=rnd, info=info)
        ctx.log_round(rnd, k, f"{k} particles finished, {resamples} resampling events")

    def _churned(
        self,
        traj: Trajectory,
        idx: torch.Tensor,
        step: int,
        schedule: Schedule,
        shape: Sequence[int],
        device: torch.device,
    ) -> Trajectory:
        """Refreshes a fraction γ of the noise of every copy after the first of each ancestor."""
        first: set[int] = set()
        extra = []
        for j, a in enumerate(idx.tolist()):
            if a in first:
                extra.append(j)
            first.add(a)
        if not extra or self.churn == 0.0 or traj.x0 is None:
            return traj
        alpha, sigma = schedule.level(step)
        rows = torch.tensor(extra, device=traj.x.device)
        x, x0 = traj.x[rows], traj.x0[rows]  # [E, *latent]
        eps = (x - alpha * x0) / sigma  # the noise component of each copy
        fresh = gaussian_like([traj.seeds[j] for j in extra], shape, device, _CHURN_KEY, step).to(x.device)
        g = self.churn
        new_x = traj.x.clone()
        new_x[rows] = alpha * x0 + sigma * (math.sqrt(1.0 - g * g) * eps + g * fresh)
        return replace(traj, x=new_x)
