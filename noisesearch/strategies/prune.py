"""Early rejection with lookahead: screen many noises part of the way, finish only the promising ones.

Speculative rejection (Sun et al. 2024, "Fast Best-of-N Decoding via Speculative Rejection") stops
most best-of-N generations early on the verdict of a partial generation; DSearch (Li et al. 2025,
"Dynamic Search for Inference-Time Alignment in Diffusion Models") scores a diffusion state by a
short lookahead of its final sample rather than by its free x0 preview. Here:

1. draw N0 noises and solve them together to step k (``at``·steps);
2. score each with a J-jump DDIM lookahead (:meth:`~noisesearch.core.sampler.DenoisingCore.lookahead`,
   J + 1 NFEs; its first evaluation is cached, so a survivor does not pay it again). With the
   defaults (k = 0, J = 5) the screen is a coarse 6-NFE DDIM sample of each noise;
3. keep the top m (``keep``·B, B = budget // steps full samples) and finish them; they are the
   search's candidates (screened-out noises are not);
4. spend the NFEs left over on plain full samples of fresh noises.

N0 is the largest count whose total fits the budget; when N0 <= B the screen would look at no more
noises than random search finishes, and the search *is* random search (best-of-B, same seeds). With
the defaults N0 ≈ B·(n + 1) / (2·(J + 1)), so on a schedule of n < 12 steps prune is random search
(a screen costing 6 of 10 NFEs does not pay); give a cheaper screen there (e.g. ``jumps=2, keep=0.25``).
With ``halving`` a second screen (successive halving, Karnin et al. 2013) at ``second_at``·steps
re-scores the first screen's ⌈N0/``eta``⌉ (at least m) survivors with a new lookahead before the
final cut to m. Each screened noise costs one decode and one verifier call per screen.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, ClassVar

import torch

from noisesearch.core.sampler import DenoisingCore
from noisesearch.strategies.base import register_strategy

if TYPE_CHECKING:
    from noisesearch.engine import SearchContext


@dataclass(frozen=True)
class PrunePlan:
    """Counts and steps of one prune search on an n-step schedule (all NFEs exact)."""

    screened: int  # N0, noises solved to the first screen; 0: no screen fits, plain random search
    screens: tuple[tuple[int, int, int], ...]  # per screen: (step k, lookahead NFEs per noise, survivors kept)
    fill: int  # plain full samples bought with the NFEs left over (or the random-search count)

    def cost(self, num_steps: int) -> int:
        """NFEs of the whole search."""
        total, alive, at = 0, self.screened, 0
        for step, look, kept in self.screens:
            total += alive * (step - at) + alive * look  # solve to the screen (cached eval there) + lookahead
            alive, at = kept, step + 1  # survivors resume after the cached evaluation at the screen step
        if self.screens:
            total += alive * (num_steps - at)
        return total + self.fill * num_steps


@register_strategy
@dataclass(frozen=True)
class PruneSearch:
    """Early rejection: screen many noises at an early step by a DDIM lookahead, finish only the best."""

    name: ClassVar[str] = "prune"
    #: CLI flag -> field
    cli_options: ClassVar[dict[str, str]] = {
        "--prune-at": "at",
        "--prune-jumps": "jumps",
        "--prune-keep": "keep",
        "--prune-halving/--prune-no-halving": "halving",
        "--prune-second-at": "second_at",
        "--prune-eta": "eta",
    }

    # defaults chosen on training-split prompts (benchmarks/prune_tuning.py); the first proposal,
    # at=0.4, jumps=2, keep=0.25, stays reachable as options
    at: float = 0.0  # first screen at step round(at·steps), a fraction of the schedule (0: from the noise)
    jumps: int = 5  # J, DDIM jumps of the lookahead (J + 1 NFEs per screened noise)
    keep: float = 0.5  # m = ⌈keep·B⌉ survivors finished, B = budget // steps
    halving: bool = False  # successive halving: a second screen before the final cut
    second_at: float = 0.6  # second screen (halving) at step round(second_at·steps)
    eta: int = 3  # halving: the first screen keeps ⌈N0/eta⌉ (at least m)

    def __post_init__(self) -> None:
        if not 0.0 <= self.at < 1.0:
            raise ValueError(f"at must be a fraction of the schedule in [0, 1), got {self.at!r}")
        if not isinstance(self.jumps, int) or self.jumps < 0:
            raise ValueError(f"jumps must be an integer >= 0, got {self.jumps!r}")
        if not 0.0 < self.keep <= 1.0:
            raise ValueError(f"keep must be a fraction in (0, 1], got {self.keep!r}")
        if not self.at < self.second_at < 1.0:
            raise ValueError(f"second_at must lie between at ({self.at!r}) and 1, got {self.second_at!r}")
        if not isinstance(self.eta, int) or self.eta < 2:
            raise ValueError(f"eta must be an integer >= 2, got {self.eta!r}")

    def screen_steps(self, num_steps: int) -> list[int]:
        """Steps of the screens on an n-step schedule (one, or two with halving)."""
        first = min(int(self.at * num_steps + 0.5), num_steps - 1)
        if not self.halving:
            return [first]
        second = min(int(self.second_at * num_steps + 0.5), num_steps - 1)
        return [first, second] if second > first else [first]

    def plan(self, budget: int, num_steps: int) -> PrunePlan:
        """The largest screen that fits ``budget`` NFEs; plain random search when it would not beat B."""
        n = num_steps
        b = budget // n
        m = max(1, math.ceil(self.keep * b))
        steps = self.screen_steps(n)
        looks = [1 + len(DenoisingCore.lookahead_steps(k, n, self.jumps)) for k in steps]

        def make(n0: int) -> PrunePlan:
            kept = [max(m, math.ceil(n0 / self.eta)) for _ in steps[:-1]] + [m]
            kept = [min(k, n0) for k in kept]
            screens = tuple(zip(steps, looks, kept))
            base = PrunePlan(n0, screens, 0)
            return PrunePlan(n0, screens, max(0, budget - base.cost(n)) // n)

        # cost grows with N0, so the largest fitting N0 is found by walking down from a bound
        n0 = budget // (steps[0] + looks[0])
        while n0 > b and make(n0).cost(n) > budget:
            n0 -= 1
        if n0 <= b:
            return PrunePlan(0, (), b)
        plan = make(n0)
        if len(plan.screens) == 2 and plan.screens[0][2] <= m:  # a second screen would cut nothing
            return replace(self, halving=False).plan(budget, num_steps)
        return plan

    def run(self, ctx: SearchContext) -> None:
        plan = self.plan(ctx.nfe_left, ctx.steps)
        if not plan.screens:
            # the screen would see no more noises than random search finishes: random search
            ctx.finish(ctx.start(ctx.new_seeds(plan.fill)), round=0)
            ctx.log_round(0, plan.fill, "a screen would see no more noises than random search finishes: random search")
            return
        # 1. N0 noises solved together to the first screen   [N0, *latent]
        seeds = ctx.new_seeds(plan.screened)
        traj = ctx.start(seeds)
        look_score = torch.full((plan.screened,), -math.inf, dtype=torch.float64)
        for rnd, (step, _, kept) in enumerate(plan.screens):
            traj = ctx.denoise(traj, until=step)
            # 2. score each noise's lookahead estimate of its final x0   [alive]
            scores = ctx.score(ctx.decode(ctx.lookahead(traj, jumps=self.jumps))).double()
            # 3. keep the top `kept` (stable: ties go to the earlier seed)   [alive] -> [kept]
            order = torch.sort(scores, descending=True, stable=True).indices[:kept]
            traj = traj.select(order)
            look_score = scores[order]
            ctx.log_round(
                rnd,
                len(scores),
                f"screen at step {step}: kept {kept} of {len(scores)}, best lookahead {float(look_score[0]):.4g}",
            )
        # 4. finish the survivors (their cached evaluation at the screen step is not paid again)
        rnd = len(plan.screens)
        info = [{"role": "survivor", "lookahead": float(s) if math.isfinite(s) else None} for s in look_score.tolist()]
        ctx.finish(traj, round=rnd, info=info)
        ctx.log_round(rnd, len(traj), f"{len(traj)} survivors finished")
        # 5. NFEs left over: plain full samples
        if plan.fill:
            ctx.finish(ctx.start(ctx.new_seeds(plan.fill)), round=rnd + 1, info=[{"role": "fill"}] * plan.fill)
            ctx.log_round(rnd + 1, plan.fill, "fill: full samples with the NFEs left over")
