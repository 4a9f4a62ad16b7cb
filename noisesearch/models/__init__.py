"""Models: the family table, offline loading, the catalog of example checkpoints, and the adapters.

``load_model`` is the entry point; :mod:`noisesearch.models.families` holds one record per
supported family (pipeline class, adapter, sampling defaults, examples, test pipeline).
"""

from noisesearch.models.families import (
    Example,
    ModelFamily,
    detect_family,
    families,
    get_family,
    register_family,
    supported_pipelines,
)
from noisesearch.models.loading import (
    DEFAULT_MODEL,
    TOYWORLD_DIR,
    ModelNotFoundError,
    check_model,
    load_model,
    resolve_device,
    resolve_dtype,
)

__all__ = [
    "DEFAULT_MODEL",
    "TOYWORLD_DIR",
    "Example",
    "ModelFamily",
    "ModelNotFoundError",
    "check_model",
    "detect_family",
    "families",
    "get_family",
    "load_model",
    "register_family",
    "resolve_device",
    "resolve_dtype",
    "supported_pipelines",
]
