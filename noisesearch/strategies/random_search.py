"""Random search (best-of-N), the baseline of Ma et al. 2025, "Inference-Time Scaling for
Diffusion Models beyond Scaling Denoising Steps": draw N noises, sample each fully, keep the best.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from noisesearch.strategies.base import register_strategy

if TYPE_CHECKING:
    from noisesearch.engine import SearchContext


@register_strategy
@dataclass(frozen=True)
class RandomSearch:
    """Best-of-N: sample N = budget // steps noises fully and keep the best by the verifier."""

    name: ClassVar[str] = "random"

    round_size: int = 0  # candidates per round (one history point each); 0: one round of core.max_batch

    def __post_init__(self) -> None:
        if self.round_size < 0:
            raise ValueError(f"round_size must be >= 0, got {self.round_size}")

    def run(self, ctx: SearchContext) -> None:
        total = ctx.nfe_left // ctx.steps
        per_round = self.round_size or ctx.core.config.max_batch
        done, rnd = 0, 0
        while done < total:
            n = min(per_round, total - done)
            ctx.finish(ctx.start(ctx.new_seeds(n)), round=rnd)
            ctx.log_round(rnd, n)
            done += n
            rnd += 1
