"""Search over paths (Paths-N) of Ma et al. 2025, "Inference-Time Scaling for Diffusion Models beyond
Scaling Denoising Steps": branch sampling trajectories at intermediate noise levels.

The paper's algorithm: (1) run N noises down to level σ; (2) for each, draw M noises and re-noise
σ → σ + Δf; (3) solve each of the N·M branches back by Δb and score its x0 prediction (verifiers do
not take noisy inputs), keeping the top N; repeat (2)–(3) until the level reaches 0; keep the best.

Levels here are **fractions of the sampling schedule**: level ℓ ∈ [0, 1] is the state with a fraction
ℓ of the steps still to go, so ℓ = 1 is pure noise (step 0) and ℓ = 0 the clean sample (step n).
A level maps to the core's discrete schedule as ``step(ℓ) = n − round(ℓ·n)`` (half up). This is the
time axis of the paper's SiT runs (uniform grid, t ∈ [0, 1]); being a step index it works for every
solver and schedule shape. Each iteration re-noises to step(ℓ + Δf) and solves back to
step(ℓ + Δf − Δb), forced to move at least one step down in level (and one up in noise when
re-noising) so that rounding cannot stall; ℓ then becomes the level actually reached.

Defaults. The reported σ = 0.11, Δf = 0.78, Δb = 0.81 branch at step 18 of 20, re-noise every
branch to step 2 and solve 17 of the 20 steps again; on 20 steps a Paths-2 search then costs 172
NFEs for 4 finished candidates, and its intermediate branches end at step 19, one NFE short of a
finished sample, scored by preview and dropped. The defaults here branch late and locally instead:
σ = 0.4, Δf = 0.1, Δb = 0.2 (on 20 steps: start at step 12, each iteration re-noises 2 steps and
solves back 4, so a branch costs 4 NFEs, and a Paths-2 search 88 NFEs). A hop or start that would
stop within ``finish_within`` steps of the end (default 1) goes to the end instead, so those
branches (or roots) are finished and recorded as candidates rather than previewed and dropped.
The reported values stay reachable: ``sigma=0.11, delta_f=0.78, delta_b=0.81, finish_within=0``.

L, the NFEs per backward step, is 1 on this core: each of its solvers (DDIM, Euler, DPM++2M,
flow-Euler) evaluates the network once per schedule step (the paper's SiT runs used Heun, L = 2).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from noisesearch.core.seeds import gaussian_like
from noisesearch.strategies.base import register_strategy

if TYPE_CHECKING:
    from noisesearch.core.sampler import Trajectory
    from noisesearch.engine import SearchContext

#: sub-stream key of a branch's re-noising noise: gaussian_like(branch seed, ..., _BRANCH_KEY)
_BRANCH_KEY = 0x9A75


def level_to_step(level: float, num_steps: int) -> int:
    """Schedule step of a level (fraction of the steps still to go): 1 -> 0, 0 -> num_steps."""
    level = min(max(level, 0.0), 1.0)
    return num_steps - int(level * num_steps + 0.5)


@dataclass(frozen=True)
class PathsPlan:
    """The discrete steps one Paths search visits on an n-step schedule."""

    start: int  # step the N initial noises are solved to (level σ)
    hops: tuple[tuple[int, int], ...]  # per iteration: (re-noise to step, solve back to step)

    def cost(self, paths: int, branches: int) -> int:
        """NFEs of one search with N = paths and M = branches (branches of the last hop end clean)."""
        return paths * self.start + sum(paths * branches * (back - fwd) for fwd, back in self.hops)


@register_strategy
@dataclass(frozen=True)
class PathsSearch:
    """Search over paths (Paths-N): branch the best N trajectories at intermediate levels, keep the top N."""

    name: ClassVar[str] = "paths"
    #: CLI flag -> field
    cli_options: ClassVar[dict[str, str]] = {
        "--paths-n": "paths",
        "--paths-m": "branches",
        "--paths-sigma": "sigma",
        "--paths-delta-f": "delta_f",
        "--paths-delta-b": "delta_b",
        "--paths-l": "nfe_per_step",
        "--paths-finish-within": "finish_within",
    }

    paths: int = 2  # N, initial paths and survivors kept per iteration (paper: Paths-2 for text-to-image)
    branches: int = 2  # M, noises drawn per path at each iteration (not found in the paper's text; 2 here)
    sigma: float = 0.4  # σ, level (fraction of the schedule still to go) where the search starts (reported: 0.11)
    delta_f: float = 0.1  # Δf, forward re-noising, in levels (reported: 0.78)
    delta_b: float = 0.2  # Δb, backward solve, in levels; must exceed Δf (reported: 0.81)
    nfe_per_step: int = 1  # L, NFEs per backward solver step: 1 for this core's solvers
    finish_within: int = 1  # a start or hop ending this few steps from the end is run to the end (0: never)

    def __post_init__(self) -> None:
        for name in ("paths", "branches"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if not 0.0 <= self.sigma < 1.0:
            raise ValueError(
                f"sigma must be a level in [0, 1) (fraction of the schedule still to go), got {self.sigma!r}"
            )
        if not 0.0 < self.delta_f <= 1.0:
            raise ValueError(f"delta_f must be in (0, 1], got {self.delta_f!r}")
        if not self.delta_b > self.delta_f:
            raise ValueError(
                f"delta_b ({self.delta_b!r}) must exceed delta_f ({self.delta_f!r}): each iteration moves the "
                "level down by delta_b - delta_f"
            )
        if not isinstance(self.finish_within, int) or self.finish_within < 0:
            raise ValueError(f"finish_within must be an integer >= 0 (steps from the end), got {self.finish_within!r}")
        if self.nfe_per_step != 1:
            raise ValueError(
                "nfe_per_step (L) must be 1: this core's solvers evaluate the network once per step; "
                "for a finer backward solve raise --steps"
            )

    def plan(self, num_steps: int) -> PathsPlan:
        """Maps σ, Δf, Δb onto an n-step schedule (see the module docstring)."""
        n = num_steps
        k = min(max(level_to_step(self.sigma, n), 1), n)
        if k >= n - self.finish_within:  # roots this close to the end are finished, not branched
            k = n
        start, hops = k, []
        while k < n:
            level = (n - k) / n
            fwd = max(0, min(level_to_step(level + self.delta_f, n), k - 1))
            back = min(n, max(level_to_step(level + self.delta_f - self.delta_b, n), k + 1))
            if back >= n - self.finish_within:  # branches this close to the end are finished and recorded
                back = n
            hops.append((fwd, back))
            k = back
        return PathsPlan(start, tuple(hops))

    def run(self, ctx: SearchContext) -> None:
        plan = self.plan(ctx.steps)
        rnd = 0
        # 1. as many full searches as fit; then one with fewer paths; leftover NFEs go to plain samples
        while True:
            paths = self.paths
            while paths >= 1 and plan.cost(paths, self.branches) > ctx.nfe_left:
                paths -= 1
            if paths == 0:
                break
            rnd = self._search(ctx, plan, paths, rnd)
        if ctx.nfe_left >= ctx.steps:
            k = ctx.nfe_left // ctx.steps
            ctx.finish(ctx.start(ctx.new_seeds(k)), round=rnd, info=[{"role": "fill"}] * k)
            ctx.log_round(rnd, k, "fill: full samples with the NFEs left over")

    def _search(self, ctx: SearchContext, plan: PathsPlan, paths: int, rnd: int) -> int:
        """One Paths-N search; returns the next round number."""
        shape, device = ctx.core.latent_shape, ctx.core.adapter.device
        m = self.branches
        # 2. N initial noises solved down to level σ, in one batch   [N, *latent]
        roots = ctx.new_seeds(paths)
        traj: Trajectory = ctx.denoise(ctx.start(roots), until=plan.start)
        root_of = dict(zip(roots, roots))  # candidate seed -> seed of the initial noise of its path
        if not plan.hops:
            ctx.finish(traj, round=rnd, info=[{"path": s} for s in roots])
            ctx.log_round(rnd, paths, "sigma = 0: no branching")
            return rnd + 1
        for it, (fwd, back) in enumerate(plan.hops):
            # 3. M branches per survivor, each re-noised with its own seed's noise   [N·M, *latent]
            parent = torch.arange(len(traj)).repeat_interleave(m)
            branch_seeds = ctx.new_seeds(len(parent))
            noise = gaussian_like(branch_seeds, shape, device, _BRANCH_KEY)
            branches = ctx.renoise(traj.select(parent), fwd, noise)
            branches = replace(branches, seeds=branch_seeds)
            info: list[dict[str, Any]] = [
                {"path": root_of[traj.seeds[int(p)]], "parent": traj.seeds[int(p)], "iteration": it} for p in parent
            ]
            root_of.update({s: i["path"] for s, i in zip(branch_seeds, info)})
            # 4. all branches solved back by Δb in one batch
            branches = ctx.denoise(branches, until=back)
            if back == ctx.steps:
                # the last hop lands on clean samples: finish (decode, score, record) every branch
                ctx.finish(branches, round=rnd, info=info)
                ctx.log_round(rnd, len(branches), f"paths={paths}: final iteration {it}, steps {fwd}->{back}")
                return rnd + 1
            # 5. score the x0 previews of the last evaluation (free) and keep the top N   [N·M] -> [N]
            scores = ctx.score(ctx.decode(ctx.preview(branches)))
            keep = torch.sort(scores, descending=True, stable=True).indices[:paths]
            traj = branches.select(keep)
            best = float(scores[keep[0]])
            ctx.log_round(
                rnd, len(branches), f"paths={paths}: iteration {it}, steps {fwd}->{back}, best preview {best:.4g}"
            )
            rnd += 1
        raise AssertionError("a plan always ends on the clean step")  # pragma: no cover
