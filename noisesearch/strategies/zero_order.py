"""Zero-order search (ZO-N) of Ma et al. 2025, "Inference-Time Scaling for Diffusion Models beyond
Scaling Denoising Steps": hill-climbing on the initial noise with verifier feedback only.

Each round keeps a pivot noise, samples N neighbours of it fully and scores them; the best scorer
becomes the next pivot. The paper defines the neighbourhood as the points at a fixed distance λ from
the pivot and does not give a default λ for text-to-image. We follow the community implementation
(tt-scale-flux): a neighbour has cosine similarity λ = 0.95 with the pivot and the same norm, the
pivot is scored alongside its neighbours (here its score is reused, never recomputed), and a round in
which no neighbour beats the pivot is rejected and the search restarts from a fresh base noise (the
authors report that ZO otherwise converges to a fixed point).

Defaults for verifiers whose score is nearly pass/fail (``toydetect``'s log-probability, GenEval-like
detectors): on the embedded world a neighbour at λ = 0.95 had its pivot's ground-truth outcome 91.5%
of the time, and satisfied the prompt with probability 0.034 when its pivot failed, against a base
rate of 0.18, so neighbours of a failing pivot are nearly wasted. Two changes follow: neighbours are
drawn at λ = 0.8 by default (further from the pivot, so less of its outcome is inherited; this value
is a judgement, not yet measured: ``benchmarks/zero_order_neighbourhood.py`` measures the
inheritance for any λ on training-split prompts with the verifier alone), and each round also
samples ``fresh`` new base noises that compete with the neighbours for the pivot (the best of pivot,
neighbours and fresh noises becomes the next pivot), so a failing pivot is replaced as soon as any
fresh noise does better. The community settings stay reachable: ``cosine=0.95, fresh=0``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from noisesearch.core.seeds import gaussian_like
from noisesearch.strategies.base import register_strategy

if TYPE_CHECKING:
    from noisesearch.engine import SearchContext

#: sub-stream key of a neighbour's direction: gaussian_like(seed, ..., _DIRECTION_KEY)
_DIRECTION_KEY = 0x2E0


def neighbours(pivot: torch.Tensor, directions: torch.Tensor, cosine: float) -> torch.Tensor:
    """Points at cosine similarity ``cosine`` to ``pivot`` with the pivot's norm.

    pivot: [*latent]; directions: [K, *latent] (any non-degenerate vectors, e.g. Gaussian). Neighbour
    k lies in the plane of the pivot and direction k: ``|p| (λ p̂ + sqrt(1 - λ²) û_k)`` with û_k the
    unit part of direction k orthogonal to the pivot. Returns [K, *latent] float32.
    """
    p = pivot.reshape(-1).double()  # [D]
    d = directions.reshape(directions.shape[0], -1).double()  # [K, D]
    norm = p.norm()
    p_hat = p / norm
    # 1. remove each direction's component along the pivot: u_k ⟂ p   [K, D]
    u = d - (d @ p_hat)[:, None] * p_hat[None, :]
    u_hat = u / u.norm(dim=1, keepdim=True)
    # 2. rotate away from the pivot by arccos(λ), keeping the norm   [K, D]
    out = norm * (cosine * p_hat[None, :] + math.sqrt(1.0 - cosine**2) * u_hat)
    return out.reshape(directions.shape).to(torch.float32)


@register_strategy
@dataclass(frozen=True)
class ZeroOrderSearch:
    """Zero-order search (ZO-N): hill-climb from a pivot noise through neighbours at cosine λ."""

    name: ClassVar[str] = "zero-order"
    #: CLI flag -> field
    cli_options: ClassVar[dict[str, str]] = {
        "--zo-neighbors": "neighbors",
        "--zo-cosine": "cosine",
        "--zo-restart/--zo-no-restart": "restart",
        "--zo-fresh": "fresh",
    }

    neighbors: int = 2  # N, neighbours per round (paper: 2 for text-to-image, 2 or 4 on ImageNet)
    cosine: float = (
        0.8  # λ, cosine similarity of a neighbour to the pivot (community implementation: 0.95; paper gives none)
    )
    restart: bool = True  # reject a round nothing wins and draw a fresh base noise (community implementation)
    fresh: int = (
        1  # new base noises sampled in every round beside the neighbours, competing for the pivot (community: 0)
    )

    def __post_init__(self) -> None:
        if not isinstance(self.neighbors, int) or self.neighbors < 1:
            raise ValueError(f"neighbors must be a positive integer, got {self.neighbors!r}")
        if not 0.0 <= self.cosine < 1.0:
            raise ValueError(
                f"cosine must be in [0, 1), got {self.cosine!r}: 1 would copy the pivot, lower values step further from it"
            )
        if not isinstance(self.fresh, int) or self.fresh < 0:
            raise ValueError(f"fresh must be an integer >= 0 (new base noises per round), got {self.fresh!r}")

    def run(self, ctx: SearchContext) -> None:
        n = ctx.steps
        shape, device = ctx.core.latent_shape, ctx.core.adapter.device
        pivot_seed, pivot_noise, pivot_score = -1, torch.empty(0), -math.inf
        fresh, rnd = True, 0
        while ctx.nfe_left >= n:
            room = ctx.nfe_left // n  # full samples that still fit
            seeds: list[int] = []
            noises: list[torch.Tensor] = []
            infos: list[dict[str, Any]] = []
            # 1. a fresh base noise (first round, or after a rejected round) is scored in this round
            if fresh:
                pivot_seed = ctx.new_seeds(1)[0]
                pivot_noise = ctx.initial_noise([pivot_seed])[0]  # [*latent], through the prior if one is set
                seeds.append(pivot_seed)
                noises.append(pivot_noise[None])
                infos.append({"role": "pivot"})
            # 2. neighbours at cosine λ with the pivot's norm, a deterministic function of (pivot, own seed)
            k = max(0, min(self.neighbors, room - len(seeds)))
            nb_seeds = ctx.new_seeds(k)
            if k:
                directions = gaussian_like(nb_seeds, shape, device, _DIRECTION_KEY)  # [k, *latent]
                noises.append(neighbours(pivot_noise, directions, self.cosine).to(pivot_noise.device))
            seeds += nb_seeds
            infos += [{"role": "neighbor", "parent": pivot_seed} for _ in nb_seeds]
            # 2b. fresh base noises competing for the pivot (after the neighbours: those come first)
            f = max(0, min(self.fresh, room - len(seeds))) if k else 0
            fr_seeds = ctx.new_seeds(f)
            if f:
                noises.append(ctx.initial_noise(fr_seeds))
            seeds += fr_seeds
            infos += [{"role": "fresh"} for _ in fr_seeds]
            # 3. sample and score the whole round in one batch   [len(seeds)] scores
            scores = ctx.finish(ctx.start(seeds, noise=torch.cat(noises)), round=rnd, info=infos)
            if fresh:
                pivot_score = float(scores[0])
            # challengers: the neighbours then the fresh noises, in seed order   [k + f]
            ch_scores = scores[len(scores) - k - f :]
            ch_seeds = nb_seeds + fr_seeds
            ch_noise = torch.cat(noises)[len(seeds) - k - f :]
            # 4. the best challenger becomes the pivot if it beats it; otherwise reject the round
            note, fresh = "no neighbour fitted in the budget", False
            if k:
                j = int(torch.argmax(ch_scores))
                if float(ch_scores[j]) > pivot_score:
                    pivot_seed, pivot_noise, pivot_score = ch_seeds[j], ch_noise[j], float(ch_scores[j])
                    note = f"pivot -> seed {pivot_seed}" + (" (fresh)" if j >= k else "")
                elif self.restart:
                    fresh, note = True, "rejected: fresh base noise"
                else:
                    note = "rejected: pivot kept"
            ctx.log_round(rnd, len(infos), note)
            rnd += 1
