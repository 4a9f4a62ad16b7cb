"""Search strategies: decide which noises (and paths) to spend compute on."""

from noisesearch.strategies.base import Strategy, available_strategies, make_strategy, register_strategy
from noisesearch.strategies.random_search import RandomSearch

__all__ = ["RandomSearch", "Strategy", "available_strategies", "make_strategy", "register_strategy"]
from noisesearch.strategies.gradient import GradientSearch
from noisesearch.strategies.paths import PathsSearch
from noisesearch.strategies.prune import PruneSearch
from noisesearch.strategies.smc import SMCSearch
from noisesearch.strategies.zero_order import ZeroOrderSearch

__all__ += ["GradientSearch", "PathsSearch", "PruneSearch", "SMCSearch", "ZeroOrderSearch"]

# NPNet (Zhou et al. 2024) as a strategy; registered here so every strategy is known after import
from noisesearch.npnet.prior import NPNetSearch  # noqa: E402

__all__ += ["NPNetSearch"]
