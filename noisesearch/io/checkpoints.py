"""Offline resolution and safe, strict loading of verifier checkpoints.

Verifier weights are never downloaded at run time. A file (or a Hugging Face model folder) is
looked up, in this order:

1. the verifier option that takes it (e.g. ``path=``), a file or a folder holding it;
2. an environment variable (e.g. ``NOISESEARCH_HPSV2_PATH``), a file or a folder;
3. the Hugging Face cache (``HF_HUB_CACHE`` / ``HF_HOME``, or the ``cache_dir`` option), under
   each hub id the file is published at;
4. the directories the reference packages download to (e.g. ``~/.cache/hpsv2``).

When nothing is found the error names the file, its hub id, the option and the environment
variable, and gives the command that fetches it on a connected machine.

Loading is safe (safetensors, or ``torch.load(weights_only=True)``) and strict: every parameter
the score uses must come from the file with the right shape, and anything left over is an error
unless the caller lists it as known to be unused.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from noisesearch.io.paths import user_path


@dataclass(frozen=True)
class HubFile:
    """One checkpoint file and every place it may be found offline."""

    #: file name, in a local folder and in the hub repo
    filename: str
    #: hub repos that publish the file, most canonical first
    hub_ids: tuple[str, ...]
    #: environment variable holding the file or a folder with it
    env_var: str
    #: verifier option that takes the file or a folder with it
    option: str = "path"
    #: folders the reference packages download to ("~" expanded at lookup time); an entry
    #: "$VAR|default" means the folder named by $VAR if set, else the default
    legacy_dirs: tuple[str, ...] = ()
    #: where the file comes from when it is not on the hub (shown in errors)
    source_url: str = ""

    def fetch_hint(self) -> str:
        if self.hub_ids:
            return f"`hf download {self.hub_ids[0]} {self.filename}`"
        return f"download {self.source_url}"


@dataclass(frozen=True)
class HubFolder:
    """A Hugging Face model/processor folder (``save_pretrained`` layout)."""

    #: hub repos that publish the folder, most canonical first
    hub_ids: tuple[str, ...]
    #: files that must all be present
    required: tuple[str, ...]
    #: environment variable holding the folder
    env_var: str
    #: verifier option that takes the folder
    option: str
    #: at least one of these must be present too (e.g. the weights in either format); empty: none
    any_of: tuple[str, ...] = ()

    def fetch_hint(self) -> str:
        return f"`hf download {self.hub_ids[0]}`"


def _missing_in(folder: Path, spec: HubFolder) -> list[str]:
    missing = [f for f in spec.required if not (folder / f).is_file()]
    if spec.any_of and not any((folder / f).is_file() for f in spec.any_of):
        missing.append(" or ".join(spec.any_of))
    return missing


def _legacy_dirs(spec: HubFile) -> list[Path]:
    out = []
    for entry in spec.legacy_dirs:
        var, _, default = entry.rpartition("|")
        value = os.environ.get(var.lstrip("$")) if var else None
        out.append(Path(os.path.expanduser(value or default)))
    return out


def _from_hf_cache(hub_ids: Iterable[str], filename: str, cache_dir: str | os.PathLike | None) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    for repo in hub_ids:
        found = try_to_load_from_cache(repo, filename, cache_dir=None if cache_dir is None else os.fspath(cache_dir))
        if isinstance(found, str) and os.path.isfile(found):
            return Path(found)
    return None


def _user_file(value: str | os.PathLike, filename: str, origin: str) -> Path:
    """A file given by the user, or ``filename`` inside a folder given by the user."""
    p = user_path(value)
    if p.is_dir():
        p = p / filename
    if not p.is_file():
        raise FileNotFoundError(f"{origin} points at {str(p)!r}, which does not exist; expected the file {filename}")
    return p


def find_file(spec: HubFile, cache_dir: str | os.PathLike | None = None) -> Path | None:
    """The file from the environment variable, the HF cache or a legacy folder; None if absent."""
    env = os.environ.get(spec.env_var)
    if env:
        p = user_path(env)
        p = p / spec.filename if p.is_dir() else p
        return p if p.is_file() else None
    found = _from_hf_cache(spec.hub_ids, spec.filename, cache_dir)
    if found is not None:
        return found
    for folder in _legacy_dirs(spec):
        if (folder / spec.filename).is_file():
            return folder / spec.filename
    return None


def resolve_file(
    spec: HubFile, path: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None
) -> Path:
    """Finds ``spec``'s file offline (see the module docstring for the order) or raises
    ``FileNotFoundError`` naming the file, its hub id, the option and the environment variable."""
    if path is not None:
        return _user_file(path, spec.filename, f"option {spec.option}=")
    env = os.environ.get(spec.env_var)
    if env:
        return _user_file(env, spec.filename, f"environment variable {spec.env_var}")
    found = find_file(spec, cache_dir)
    if found is not None:
        return found
    where = [f"the Hugging Face cache{f' at {cache_dir}' if cache_dir else ''} under {' or '.join(spec.hub_ids)}"]
    where += [str(d) for d in _legacy_dirs(spec)]
    origin = f"hub repo {spec.hub_ids[0]!r}" if spec.hub_ids else spec.source_url
    raise FileNotFoundError(
        f"{spec.filename} (from {origin}) is not available offline; looked in {'; '.join(where)}. "
        f"Fetch it on a connected machine ({spec.fetch_hint()}), or pass the file or its folder with the "
        f"option {spec.option}=PATH or the environment variable {spec.env_var}."
    )


def find_folder(spec: HubFolder, cache_dir: str | os.PathLike | None = None) -> Path | None:
    """The folder from the environment variable or the HF cache; None if absent or incomplete."""
    env = os.environ.get(spec.env_var) if spec.env_var else None
    if env:
        p = user_path(env)
        return p if p.is_dir() and not _missing_in(p, spec) else None
    for repo in spec.hub_ids:
        for name in spec.required + spec.any_of:  # any cached file locates the snapshot folder
            anchor = _from_hf_cache([repo], name, cache_dir)
            if anchor is not None:
                if not _missing_in(anchor.parent, spec):
                    return anchor.parent
                break
    return None


def resolve_folder(
    spec: HubFolder, path: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None
) -> Path:
    """Finds a model/processor folder offline or raises ``FileNotFoundError`` saying what to do."""
    env = os.environ.get(spec.env_var) if spec.env_var else None
    for value, origin in ((path, f"option {spec.option}="), (env, f"environment variable {spec.env_var}")):
        if value:
            p = user_path(value)
            if not p.is_dir():
                raise FileNotFoundError(
                    f"{origin} points at {str(p)!r}, which is not a folder; expected a "
                    f"{spec.hub_ids[0]} folder (save_pretrained layout)"
                )
            missing = _missing_in(p, spec)
            if missing:
                raise FileNotFoundError(
                    f"folder {str(p)!r} (from {origin}) lacks {', '.join(missing)}; "
                    f"expected a copy of hub repo {spec.hub_ids[0]!r}"
                )
            return p
    found = find_folder(spec, cache_dir)
    if found is not None:
        return found
    raise FileNotFoundError(
        f"{spec.hub_ids[0]} ({', '.join(spec.required + ((' or '.join(spec.any_of),) if spec.any_of else ()))}) "
        f"is not available offline in the Hugging Face cache{f' at {cache_dir}' if cache_dir else ''}. Fetch it "
        f"on a connected machine ({spec.fetch_hint()}), or pass its folder with the option {spec.option}=PATH"
        + (f" or the environment variable {spec.env_var}." if spec.env_var else ".")
    )


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def describe_error(err: BaseException, limit: int = 240) -> str:
    """``Type: cause`` of an exception on one line; torch's multi-line weights-only refusal is reduced
    to the global or instruction it refused (e.g. ``Unsupported global: GLOBAL exec``)."""
    lines = [line.strip() for line in _ANSI.sub("", str(err)).splitlines() if line.strip()]
    cause = lines[0] if lines else ""
    for i, line in enumerate(lines):
        if "WeightsUnpickler error:" in line:
            rest = line.split("WeightsUnpickler error:", 1)[1].strip() or (lines[i + 1] if i + 1 < len(lines) else "")
            cause = "refused by the weights-only unpickler: " + rest.split(". ")[0]
            break
    if len(cause) > limit:
        cause = cause[: limit - 3] + "..."
    return f"{type(err).__name__}: {cause}" if cause else type(err).__name__


def unreadable_error(path: str | os.PathLike, err: BaseException) -> ValueError:
    """The error for a checkpoint that is not plain tensors (pickled code or objects, truncated, foreign)."""
    return ValueError(
        f"could not read {str(path)!r} as tensors with torch.load(weights_only=True) ({describe_error(err, 100)}); "
        "pass the official file (tensors, not pickled code)"
    )


def load_weights(path: str | os.PathLike) -> dict:
    """Reads a checkpoint safely: safetensors, or a torch file with ``weights_only=True``."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as err:  # truncated or not a safetensors file
            raise ValueError(f"could not read {str(path)!r} as safetensors ({describe_error(err, 100)})") from err
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # pickle with code, truncated file, not a torch file
        raise unreadable_error(path, err) from err


#: what to do about a mismatched verifier checkpoint (the default advice of :func:`mismatch_error`)
VERIFIER_HINT = "Pass the official file for this verifier (and the matching architecture option, if you changed it)."


def mismatch_error(
    architecture: str,
    source: str | os.PathLike,
    missing: list[str],
    unexpected: list[str],
    shapes: list[str],
    hint: str = VERIFIER_HINT,
) -> ValueError:
    """The error for a checkpoint whose keys or shapes do not match ``architecture``: counts and the
    first few names of each kind of mismatch, the file they were read from, and ``hint`` (what to
    pass instead; each kind of checkpoint gives its own)."""

    def first(items: list[str]) -> str:
        return ", ".join(items[:5]) + (f", ... ({len(items) - 5} more)" if len(items) > 5 else "")

    parts = [
        f"{len(missing)} missing ({first(missing)})" if missing else "",
        f"{len(unexpected)} unexpected ({first(unexpected)})" if unexpected else "",
        f"{len(shapes)} mis-shaped ({first(shapes)})" if shapes else "",
    ]
    return ValueError(
        f"checkpoint {str(source)!r} does not match the {architecture} architecture: "
        f"{'; '.join(p for p in parts if p)}. {hint}"
    )


def load_strict(
    module: torch.nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    source: str | os.PathLike,
    unused: Iterable[str] = (),
    hint: str = VERIFIER_HINT,
) -> None:
    """``module.load_state_dict(strict=True)`` after dropping keys known to be unused (exact names
    or prefixes ending in "."), with an error that names the first missing, unexpected and
    mis-shaped keys, the file they were read from, and ``hint`` (see :func:`mismatch_error`)."""
    unused = tuple(unused)

    def is_unused(key: str) -> bool:
        return any(key == u or (u.endswith(".") and key.startswith(u)) for u in unused)

    sd = {k: v for k, v in state_dict.items() if not is_unused(k)}
    own = module.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [
        f"{k}: file {tuple(sd[k].shape)} vs model {tuple(v.shape)}"
        for k, v in own.items()
        if k in sd and tuple(sd[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or shapes:
        raise mismatch_error(type(module).__name__, source, missing, unexpected, shapes, hint)
    module.load_state_dict(sd, strict=True)


_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


def parse_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """The torch dtype for a verifier's ``dtype`` option ("float32", "float16", "bfloat16")."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of: float32, float16, bfloat16")
    return _DTYPES[dtype]
