"""What models noisesearch supports, and which of them are in the local Hugging Face cache.

:func:`catalog` lists each supported family's example checkpoints on the hub (from the family table);
:func:`list_models` checks each against the local cache with ``huggingface_hub.scan_cache_dir``
(a walk of the cache folder: never any network), and also reports cached diffusers pipelines of a
supported class that the catalog does not name. ``noisesearch models`` prints the result.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from noisesearch.models.families import base_family, detect_family, families

if TYPE_CHECKING:
    from huggingface_hub import CachedRepoInfo


@dataclass(frozen=True)
class CatalogEntry:
    """One example checkpoint of a supported family."""

    family: str  # name of its ModelFamily
    hub_id: str  # repository on the Hugging Face hub (diffusers layout), or a built-in name
    pipeline_class: str  # the diffusers pipeline class its model_index.json names (a builder for built-ins)
    gated: bool = False  # the hub asks users to accept a license before downloading


def catalog() -> tuple[CatalogEntry, ...]:
    """Every registered family's example checkpoints."""
    return tuple(CatalogEntry(f.name, ex.hub_id, f.pipeline_class, ex.gated) for f in families() for ex in f.examples)


@dataclass(frozen=True)
class ModelStatus:
    """A checkpoint and what the local cache holds of it."""

    entry: CatalogEntry
    status: str  # "cached" | "partial" (components missing) | "missing" | "built-in"
    snapshot: str | None = None  # snapshot folder in the cache (the newest with a model_index.json)
    size_bytes: int = 0  # bytes the repository takes in the cache
    missing: tuple[str, ...] = ()  # pipeline components model_index.json names but the snapshot lacks

    @property
    def found(self) -> bool:
        return self.status in ("cached", "built-in")


#: component classes that carry no weights (everything else needs a .safetensors / .bin file)
_WEIGHTLESS = ("Tokenizer", "Scheduler", "FeatureExtractor", "ImageProcessor", "Processor")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")


def _missing_components(model_index: dict[str, Any], snapshot: Path, files: list[Path]) -> tuple[str, ...]:
    """Components model_index.json names that the snapshot lacks, or whose weights it lacks.

    model_index.json maps component -> [library, class], e.g. "vae": ["diffusers", "AutoencoderKL"];
    optional components are [null, null].
    """
    present: dict[str, list[str]] = {}
    for f in files:
        parts = f.relative_to(snapshot).parts
        if len(parts) > 1:
            present.setdefault(parts[0], []).append(parts[-1])
    missing = []
    for name, spec in model_index.items():
        if name.startswith("_") or not isinstance(spec, list) or len(spec) != 2 or spec[0] is None:
            continue
        names = present.get(name)
        if not names:
            missing.append(name)
        elif not any(w in str(spec[1]) for w in _WEIGHTLESS) and not any(n.endswith(_WEIGHT_SUFFIXES) for n in names):
            missing.append(f"{name} weights")
    return tuple(missing)


def _inspect_repo(repo: CachedRepoInfo) -> tuple[str | None, dict[str, Any] | None, tuple[str, ...]]:
    """(snapshot path, model_index.json, missing components) of the newest snapshot with a model index."""
    for rev in sorted(repo.revisions, key=lambda r: r.last_modified, reverse=True):
        snapshot = Path(rev.snapshot_path)
        index_file = snapshot / "model_index.json"
        if not index_file.is_file():
            continue
        try:
            index = json.loads(index_file.read_text())
        except (OSError, ValueError):
            continue
        return str(snapshot), index, _missing_components(index, snapshot, [Path(f.file_path) for f in rev.files])
    return None, None, ()


def list_models(cache_dir: str | Path | None = None) -> list[ModelStatus]:
    """Every catalog checkpoint with its local status, then any other cached pipeline of a
    supported class, then the built-in models. ``cache_dir``: the hub cache folder (default: the
    one huggingface_hub uses, from ``HF_HUB_CACHE`` / ``HF_HOME``). Reads the disk only."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        repos = {r.repo_id: r for r in scan_cache_dir(cache_dir).repos if r.repo_type == "model"}
    except CacheNotFound:
        repos = {}

    entries = catalog()
    out: list[ModelStatus] = []
    for entry in entries:
        repo = repos.get(entry.hub_id)
        if repo is None:
            out.append(ModelStatus(entry, "missing"))
            continue
        snapshot, _, missing = _inspect_repo(repo)
        status = "missing" if snapshot is None else ("partial" if missing else "cached")
        out.append(ModelStatus(entry, status, snapshot, int(repo.size_on_disk), missing))

    # cached diffusers pipelines the catalog does not name, if noisesearch can run their class
    named = {e.hub_id for e in entries}
    for repo_id in sorted(set(repos) - named):
        snapshot, index, missing = _inspect_repo(repos[repo_id])
        cls = (index or {}).get("_class_name")
        if snapshot is None or not isinstance(cls, str) or base_family(cls) is None:
            continue
        family = _family_from_index(repo_id, cls, snapshot)
        entry = CatalogEntry(family, repo_id, cls)
        status = "partial" if missing else "cached"
        out.append(ModelStatus(entry, status, snapshot, int(repos[repo_id].size_on_disk), missing))

    out.append(ModelStatus(CatalogEntry("toyworld", "toyworld", "StableDiffusionPipeline"), "built-in"))
    for record in families():
        if record.tiny_model is not None and record.tiny_builder is not None:
            builder = record.tiny_builder.rpartition(":")[2]
            out.append(ModelStatus(CatalogEntry("tiny-random", record.tiny_model, builder), "built-in"))
    return out


def _family_from_index(repo_id: str, pipeline_class: str, snapshot: str) -> str:
    """The family :func:`noisesearch.models.detect_family` gives on loading, from files alone."""
    config: dict[str, Any] = {}
    for denoiser in ("transformer", "unet"):
        try:
            config = json.loads((Path(snapshot) / denoiser / "config.json").read_text())
            config.setdefault("guidance_embeds", False)  # diffusers' default when the file omits it
            break
        except (OSError, ValueError):
            continue
    return detect_family(repo_id, pipeline_class, config).name
