"""NPNet's golden noise (Zhou et al. 2024, "Golden Noise for Diffusion Models: A Learning
Framework") as a strategy: best-of-N over golden noises; N = 1 is plain NPNet sampling.

Any other strategy can start from golden noises too (``prior="npnet"``); this one exists so that
"NPNet" is a row of its own in sweeps and benchmarks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from noisesearch.npnet.prior import NPNetPrior, default_checkpoint, load_cached
from noisesearch.strategies.base import register_strategy
from noisesearch.strategies.random_search import RandomSearch

if TYPE_CHECKING:
    from noisesearch.engine import SearchContext


@register_strategy
@dataclass(frozen=True)
class NPNetSearch(RandomSearch):
    """NPNet golden noise: best-of-N over golden noises (N = 1 is plain NPNet sampling)."""

    name: ClassVar[str] = "npnet"

    checkpoint: str = (
        ""  # NPNet file (.safetensors or official .pth); "": the model's shipped NPNet (CLI: --npnet-checkpoint)
    )

    def run(self, ctx: SearchContext) -> None:
        if ctx.prior is None:
            path = self.checkpoint or default_checkpoint(ctx.core.adapter.info.family)
            ctx.set_prior(NPNetPrior(load_cached(path)))
        super().run(ctx)
