"""The verifier contract and a registry by name.

A verifier scores decoded images against their prompts, higher is better. It is anything with a
batched ``score(images, prompts) -> Tensor[B]`` method; images are float in [0, 1] with shape
``[B, 3, H, W]``, one prompt per image. Plain Python callables of that shape are accepted too and
wrapped by :func:`as_verifier`.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class Verifier(Protocol):
    """Scores images against prompts; higher is better."""

    #: name shown in reports and tables
    name: str

    @property
    def differentiable(self) -> bool:
        """True when ``score`` is differentiable with respect to ``images``."""
        ...

    def score(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        """images: [B, 3, H, W] float in [0, 1]; prompts: B strings. Returns scores [B]."""
        ...


ScoreFn = Callable[[torch.Tensor, Sequence[str]], torch.Tensor]


def check_prompt(verifier: object, prompt: str) -> None:
    """Raises ``ValueError`` if ``verifier`` cannot score ``prompt``, before any image is made.

    A verifier that only understands some prompts (e.g. ``toydetect``, which parses the toyworld
    grammar) defines an optional ``check_prompt(prompt)`` method; others accept every prompt.
    """
    check = getattr(verifier, "check_prompt", None)
    if callable(check):
        check(prompt)


def score_details(verifier: object) -> dict[str, torch.Tensor]:
    """Per-image sub-scores of ``verifier``'s most recent ``score`` call, e.g. each rubric aspect of a
    judge: ``{name: Tensor[B]}``; empty for verifiers that keep none (an optional ``last_details``)."""
    details = getattr(verifier, "last_details", None)
    return {str(k): v.detach().reshape(-1).float().cpu() for k, v in details.items()} if details else {}


@dataclass
class CallableVerifier:
    """Adapts a user function ``fn(images, prompts) -> Tensor[B]`` to the :class:`Verifier` protocol."""

    fn: ScoreFn
    name: str = "custom"
    differentiable: bool = False

    def score(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        return check_scores(self.fn(images, prompts), len(prompts), self.name)


def check_scores(scores: object, batch: int, name: str) -> torch.Tensor:
    """Validates a verifier's output: a float tensor of shape [batch]."""
    if not isinstance(scores, torch.Tensor):
        scores = torch.as_tensor(scores, dtype=torch.float32)
    scores = scores.reshape(-1) if scores.ndim == 2 and scores.shape[1] == 1 else scores
    if scores.shape != (batch,):
        raise ValueError(
            f"verifier {name!r} returned scores of shape {tuple(scores.shape)}; expected ({batch},): "
            "one score per image"
        )
    return scores.float()


def as_verifier(obj: Verifier | ScoreFn, name: str | None = None) -> Verifier:
    """Returns ``obj`` if it already follows the protocol, else wraps a plain callable."""
    if isinstance(obj, Verifier):
        return obj
    if callable(obj):
        return CallableVerifier(obj, name=name or str(getattr(obj, "__name__", "custom")))
    raise TypeError(f"expected a verifier or a callable(images, prompts), got {type(obj).__name__}")


# name -> factory(device) ; factories import lazily so that listing names costs nothing
_REGISTRY: dict[str, Callable[..., Verifier]] = {}
_DESCRIPTIONS: dict[str, str] = {}
# name -> validate(**options): raises ValueError on bad option values without loading a model
_VALIDATORS: dict[str, Callable[..., None]] = {}


def register_verifier(
    name: str, description: str = "", *, validate: Callable[..., None] | None = None
) -> Callable[[Callable[..., Verifier]], Callable[..., Verifier]]:
    """Decorator registering a verifier factory ``factory(device="cpu", **options) -> Verifier``.

    ``validate(**options)``, when given, checks option values cheaply (no weights are read) and
    raises ``ValueError`` saying what to change; :func:`check_verifier_options` runs it before any
    model loads, with every named option of the factory (its default where not given).
    """

    def decorate(factory: Callable[..., Verifier]) -> Callable[..., Verifier]:
        if name in _REGISTRY:
            raise ValueError(f"verifier {name!r} is already registered")
        _REGISTRY[name] = factory
        _DESCRIPTIONS[name] = description
        if validate is not None:
            _VALIDATORS[name] = validate
        return factory

    return decorate


def verifier_option_names(name: str) -> tuple[str, ...] | None:
    """The options verifier ``name`` accepts (``None`` when its factory takes any ``**options``)."""
    register_builtin_verifiers()
    _check_name(name)
    params = inspect.signature(_REGISTRY[name]).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return tuple(p.name for p in params if p.name != "device" and p.kind is not inspect.Parameter.VAR_POSITIONAL)


def check_verifier_options(name: str, options: Mapping[str, object]) -> None:
    """Raises ``ValueError`` for an unknown verifier, an option it does not take, or a bad value.

    Cheap: reads no weights, so a command line or a sweep config is checked before any compute.
    """
    accepted = verifier_option_names(name)
    if accepted is not None:
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            raise ValueError(
                f"verifier {name!r} has no option {', '.join(unknown)}; "
                f"its options are: {', '.join(accepted) or '(none)'}"
            )
    for key in LOCAL_PATH_OPTIONS.intersection(options):
        check_local_path(name, key, options[key])
    validate = _VALIDATORS.get(name)
    if validate is not None:
        validate(**{**factory_defaults(name), **options})


def factory_defaults(name: str) -> dict[str, object]:
    """The default of every named option of verifier ``name``'s factory: a validator sees the values
    the factory will use, so it need not repeat the factory's defaults."""
    params = inspect.signature(_REGISTRY[name]).parameters.values()
    return {p.name: p.default for p in params if p.name != "device" and p.default is not inspect.Parameter.empty}


#: options that name weights, a tokenizer or a processor: a local file or folder, or a hub id / model name
LOCAL_PATH_OPTIONS = frozenset(
    {"path", "pretrained", "clip_pretrained", "tokenizer", "processor", "med_config", "model"}
)
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".json", ".txt")


def check_local_path(verifier: str, key: str, value: object) -> None:
    """Raises ``ValueError`` when option ``key`` is plainly a local path (absolute, ``./``, ``~``, or a
    weights file name) that does not exist; a hub id (``org/name``) or a model name is left to the loader."""
    if not isinstance(value, str) or not value:
        return
    local = value.startswith(("/", "./", "../", "~")) or value.lower().endswith(_WEIGHT_SUFFIXES)
    if local and not os.path.exists(os.path.expanduser(value)):
        from noisesearch.io.usertext import quote

        raise ValueError(
            f"verifier {verifier!r}: {key}={quote(value)} does not exist; give an existing local file or folder"
        )


def _check_name(name: str) -> None:
    if name not in _REGISTRY:
        choices = ", ".join(sorted(_REGISTRY)) or "(none registered)"
        from noisesearch.io.usertext import quote

        raise ValueError(f"unknown verifier {quote(name)}; choose one of: {choices}")


_BUILTIN_MODULES = (
    "noisesearch.verifiers.clip",
    "noisesearch.toyworld.verifiers",
    "noisesearch.verifiers.ensemble",
)


def register_builtin_verifiers() -> None:
    """Imports the modules that register noisesearch's own verifiers (idempotent, cheap: no weights)."""
    import importlib

    for module in _BUILTIN_MODULES:
        importlib.import_module(module)
    from noisesearch.verifiers.catalog import register_all

    register_all()


def available_verifiers() -> dict[str, str]:
    """Registered verifier names and their one-line descriptions."""
    register_builtin_verifiers()
    return dict(sorted(_DESCRIPTIONS.items()))


def load_verifier(name: str, device: str | torch.device = "cpu", **options: object) -> Verifier:
    """Builds the registered verifier ``name``; raises ``ValueError`` listing the choices if unknown."""
    register_builtin_verifiers()
    _check_name(name)
    return _REGISTRY[name](device=device, **options)
