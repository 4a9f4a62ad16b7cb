"""Search strategies: decide which noises (and paths) to spend compute on.

Importing this package registers every built-in strategy by name.
"""

from noisesearch.strategies.base import Strategy, available_strategies, make_strategy, register_strategy
from noisesearch.strategies.gradient import GradientSearch
from noisesearch.strategies.npnet import NPNetSearch
from noisesearch.strategies.paths import PathsSearch
from noisesearch.strategies.prune import PruneSearch
from noisesearch.strategies.random_search import RandomSearch
from noisesearch.strategies.smc import SMCSearch
from noisesearch.strategies.zero_order import ZeroOrderSearch

__all__ = [
    "GradientSearch",
    "NPNetSearch",
    "PathsSearch",
    "PruneSearch",
    "RandomSearch",
    "SMCSearch",
    "Strategy",
    "ZeroOrderSearch",
    "available_strategies",
    "make_strategy",
    "register_strategy",
]
