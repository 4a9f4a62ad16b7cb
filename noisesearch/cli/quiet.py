"""Third-party output: the libraries' progress bars, log lines and warnings stay off the terminal.

diffusers and transformers print a progress bar for every pipeline they load ("Loading pipeline
components…", "Loading weights"), and log warnings that echo user input (a tokenizer's truncation
warning repeats the cut-off part of a prompt, however long). A command shows only its own progress
and messages by default; ``--verbose`` gives the libraries their own defaults back.

:func:`library_output` imports diffusers' and transformers' logging modules, so a command calls it
just before it loads a model (when those libraries are imported anyway), not on a path that only
checks its options.
"""

from __future__ import annotations

import importlib
import logging
import warnings
from typing import cast

#: loggers of libraries noisesearch drives (their own names, i.e. their package names)
LIBRARY_LOGGERS = ("diffusers", "transformers", "huggingface_hub", "accelerate", "open_clip", "timm", "torch")
#: warnings raised from inside these packages are hidden unless --verbose
_LIBRARY_MODULES = (
    r"(diffusers|transformers|huggingface_hub|accelerate|open_clip|timm|torch|torchvision|safetensors)(\..*)?$"
)

_added_filters: list[tuple] = []


def _set_progress_bars(enabled: bool) -> None:
    for module, on, off in (
        ("diffusers.utils.logging", "enable_progress_bar", "disable_progress_bar"),
        ("transformers.utils.logging", "enable_progress_bar", "disable_progress_bar"),
        ("huggingface_hub.utils", "enable_progress_bars", "disable_progress_bars"),
    ):
        try:
            lib = importlib.import_module(module)
        except ImportError:  # pragma: no cover - optional library absent
            continue
        fn = getattr(lib, on if enabled else off, None)
        if callable(fn):
            fn()


def _set_log_level(level: int) -> None:
    for module in ("diffusers.utils.logging", "transformers.utils.logging"):
        try:
            lib = importlib.import_module(module)
        except ImportError:  # pragma: no cover
            continue
        lib.set_verbosity(level)  # also configures the library's own handler
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(level)


def library_output(verbose: bool) -> None:
    """Shows (``verbose``) or hides the libraries' progress bars, info/warning logs and warnings."""
    global _added_filters
    for entry in _added_filters:  # drop the filters this function added before, whatever the mode
        if entry in warnings.filters:
            cast(list, warnings.filters).remove(entry)  # a list at run time; typeshed calls it a Sequence
    warnings._filters_mutated()  # type: ignore[attr-defined]  # drop the lookup cache after a direct edit
    _added_filters = []
    if verbose:
        _set_log_level(logging.WARNING)  # the libraries' own default
        _set_progress_bars(True)
        return
    _set_log_level(logging.ERROR)
    _set_progress_bars(False)
    before = list(warnings.filters)
    warnings.filterwarnings("ignore", module=_LIBRARY_MODULES)
    # deprecation notices address developers of the code that calls the library, not its users
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    _added_filters = [f for f in warnings.filters if f not in before]
