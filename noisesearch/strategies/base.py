"""The strategy contract and registry.

A strategy is a frozen dataclass of hyperparameters with a ``run(ctx)`` method that spends the
budget of a :class:`~noisesearch.engine.SearchContext`; its results are the candidates it finishes
through ``ctx.finish``. Strategies never count compute themselves.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

if TYPE_CHECKING:
    from noisesearch.engine import SearchContext


@runtime_checkable
class Strategy(Protocol):
    name: ClassVar[str]

    def run(self, ctx: SearchContext) -> None:
        """Spends (at most) ``ctx.nfe_left`` NFEs and finishes candidates via ``ctx.finish``."""
        ...


_STRATEGIES: dict[str, type] = {}


def register_strategy(cls: type) -> type:
    """Class decorator: registers a strategy dataclass under its ``name``."""
    name = cls.name  # type: ignore[attr-defined]
    if name in _STRATEGIES:
        raise ValueError(f"strategy {name!r} is already registered")
    _STRATEGIES[name] = cls
    return cls


def available_strategies() -> dict[str, str]:
    """Strategy names and the first line of their docstrings."""
    return {n: (c.__doc__ or "").strip().splitlines()[0] for n, c in sorted(_STRATEGIES.items())}


def make_strategy(name: str, **options: Any) -> Strategy:
    """Builds strategy ``name`` with hyperparameter overrides; clear errors for unknown names/options."""
    if name not in _STRATEGIES:
        from noisesearch.io.usertext import quote

        raise ValueError(f"unknown strategy {quote(name)}; choose one of: {', '.join(sorted(_STRATEGIES))}")
    cls = _STRATEGIES[name]
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(options) - fields)
    if unknown:
        raise ValueError(
            f"strategy {name!r} has no option {', '.join(unknown)}; its options are: {', '.join(sorted(fields)) or '(none)'}"
        )
    return cls(**options)
