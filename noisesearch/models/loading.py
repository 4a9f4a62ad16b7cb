"""Loading models by name, local folder or Hugging Face id, offline.

``toyworld`` is the embedded default (a tiny pipeline this project trains and ships);
``tiny-random-sd`` / ``-sdxl`` / ``-sd3`` / ``-flux`` / ``-pixart`` / ``-hunyuan`` are random-weight
test pipelines and ``stub`` the weightless counting model of :mod:`noisesearch.testing`. Anything else is a
diffusers pipeline folder or a hub id resolved from the local Hugging Face cache only: nothing is
ever downloaded at run time.
"""

from __future__ import annotations

import json
import os
import pickle
import warnings
from pathlib import Path
from typing import Any

import torch

from noisesearch.core.adapter import ModelAdapter, ModelInfo
from noisesearch.io.paths import user_path
from noisesearch.models.families import (
    base_family,
    detect_family,
    family_of_tiny_model,
    get_family,
    supported_pipelines,
)
from noisesearch.toyworld.assets import PIPELINE_DIR

TOYWORLD_DIR = PIPELINE_DIR
DEFAULT_MODEL = "toyworld"


class ModelNotFoundError(ValueError):
    """A model could not be found locally; the message says where to put it."""


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """``auto``: bfloat16 on CUDA (fp32 where bf16 is unsupported), float32 elsewhere."""
    if isinstance(dtype, torch.dtype):
        return dtype
    choices = {
        "fp32": torch.float32,
        "float32": torch.float32,
        "fp16": torch.float16,
        "float16": torch.float16,
        "bf16": torch.bfloat16,
        "bfloat16": torch.bfloat16,
    }
    if dtype in (None, "auto"):
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if dtype not in choices:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of: auto, fp32, fp16, bf16")
    if device.type == "cpu" and choices[dtype] == torch.float16:
        raise ValueError("fp16 is not supported on CPU; use --dtype fp32 or bf16")
    return choices[dtype]


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``auto``/None: CUDA when available, else CPU; a clear error for an unavailable device."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise ValueError(f"unknown device {device!r}; use cpu, cuda, cuda:N or auto") from e
    if dev.type not in ("cpu", "cuda", "mps"):  # e.g. "meta" or "xpu" would fail deep inside loading
        raise ValueError(f"unsupported device {device!r}; use cpu, cuda, cuda:N or auto")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("CUDA was requested but torch sees no GPU; use --device cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"--device {device}: torch sees {torch.cuda.device_count()} GPU(s), numbered from 0")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError("MPS was requested but torch sees no MPS device; use --device cpu")
    return dev


def _from_pretrained(source: Any, **kwargs: Any) -> Any:
    from diffusers import DiffusionPipeline

    with warnings.catch_warnings():
        # newer diffusers renamed torch_dtype to dtype; the old name works on every supported version
        warnings.filterwarnings("ignore", message=".*torch_dtype.*", category=FutureWarning)
        return DiffusionPipeline.from_pretrained(source, **kwargs)


def _wrap(pipe: Any, name: str, family: str) -> ModelAdapter:
    """Wraps ``pipe`` in its family's adapter; ``family`` gives the sampling defaults."""
    cls_name = type(pipe).__name__
    base = base_family(cls_name)
    if base is None:
        raise ValueError(
            f"model {name!r} is a {cls_name}, which noisesearch does not support yet; "
            f"supported: {', '.join(supported_pipelines())}"
        )
    info = ModelInfo(name=name, family=family, pipeline_class=cls_name, details=get_family(family).defaults)
    return base.adapter_class()(pipe, info)


def _optimise_for_device(pipe: Any, device: torch.device, compile: bool) -> None:
    if device.type != "cuda":
        return  # channels-last and compilation only pay off on GPU
    attr = "unet" if getattr(pipe, "unet", None) is not None else "transformer"
    denoiser = getattr(pipe, attr)
    if attr == "unet":  # channels-last helps convolutions; the transformers work on token sequences
        denoiser.to(memory_format=torch.channels_last)
    if compile:
        # CUDA graphs via "reduce-overhead", static shapes; the core pads chunks to a few bucket sizes
        # so that each bucket compiles (and records its graph) once
        from noisesearch.core.compile import compile_denoiser

        setattr(pipe, attr, compile_denoiser(denoiser, device))


def _not_cached(name: str) -> ModelNotFoundError:
    from noisesearch.io.usertext import abbreviate, quote

    cache = os.environ.get("HF_HUB_CACHE") or os.environ.get("HF_HOME") or "~/.cache/huggingface"
    return ModelNotFoundError(
        f"model {quote(name)} is not in the local Hugging Face cache ({abbreviate(cache, 80)}); noisesearch never "
        f"downloads: `hf download {abbreviate(name, 40)}` elsewhere, then copy the cache here or set HF_HOME"
    )


def _read_model_index(path: Path) -> str:
    """The pipeline class a ``model_index.json`` names; ``ModelNotFoundError`` names a bad file."""
    index_file = path / "model_index.json"
    try:
        index = json.loads(index_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelNotFoundError(
            f"{index_file} is not a readable model_index.json ({getattr(e, 'msg', None) or e})"
        ) from None
    if not isinstance(index, dict):
        raise ModelNotFoundError(
            f"{index_file} is not a model_index.json (expected a JSON object, found {type(index).__name__})"
        )
    return str(index.get("_class_name", "?"))


def check_model(name: str) -> str | None:
    """Checks offline, without loading weights, that :func:`load_model` can find ``name``; returns its
    family's name when the files tell it, else None.

    Raises the error :func:`load_model` would raise for an empty, unknown or uncached name, a folder
    that is not a diffusers pipeline, or a pipeline class noisesearch does not support.
    """
    from noisesearch.io.usertext import quote

    if not isinstance(name, str) or not name.strip():
        raise ModelNotFoundError(
            "--model is empty; use 'toyworld' (the embedded default), a diffusers folder or a Hugging Face id"
        )
    if name == "stub":
        return None
    if name == "toyworld":
        if not (TOYWORLD_DIR / "model_index.json").exists():
            raise ModelNotFoundError(
                f"the embedded toyworld model is missing from {TOYWORLD_DIR}; reinstall noisesearch"
            )
        return "toyworld"
    if family_of_tiny_model(name) is not None:
        return "tiny-random"
    from noisesearch.models.catalog import _family_from_index

    path = user_path(name)
    if path.exists():
        if not (path / "model_index.json").is_file():
            raise ModelNotFoundError(
                f"{path} is not a diffusers pipeline folder (no model_index.json); pass a folder saved with "
                "save_pretrained or a Hugging Face id in your cache"
            )
        class_name = _read_model_index(path)
        if base_family(class_name) is None:
            raise ValueError(f"{path} holds a {class_name}; supported: {', '.join(supported_pipelines())}")
        return _family_from_index(name, class_name, str(path))
    if "/" in name and not name.startswith((".", "/")):
        from huggingface_hub import try_to_load_from_cache

        try:
            found = try_to_load_from_cache(name, "model_index.json")
        except ValueError:  # not a valid repo id
            found = None
        if not isinstance(found, str):
            raise _not_cached(name)
        snapshot = Path(found).parent
        class_name = _read_model_index(snapshot)
        if base_family(class_name) is None:
            raise ValueError(f"model {quote(name)} holds a {class_name}; supported: {', '.join(supported_pipelines())}")
        return _family_from_index(name, class_name, str(snapshot))
    raise ModelNotFoundError(
        f"unknown model {quote(name)}; use 'toyworld' (the embedded default), a diffusers folder, "
        "or a Hugging Face id such as stabilityai/stable-diffusion-xl-base-1.0 from your cache"
    )


def load_model(
    name: str | None = None,
    device: str | torch.device | None = "cpu",
    dtype: str | torch.dtype | None = "auto",
    compile: bool = False,
) -> ModelAdapter:
    """Loads a model adapter offline from a name, a diffusers folder or a cached hub id."""
    if name is not None and not name.strip():
        raise ModelNotFoundError(
            "--model is empty; use 'toyworld' (the embedded default), a diffusers folder or a Hugging Face id"
        )
    name = name or DEFAULT_MODEL
    if name == "stub":
        # the weightless counting model of noisesearch.testing (CPU, fp32): fast tests of sweeps and CLIs
        from noisesearch.testing import StubAdapter

        return StubAdapter()
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)

    if name == "toyworld":
        if not (TOYWORLD_DIR / "model_index.json").exists():
            raise ModelNotFoundError(
                f"the embedded toyworld model is missing from {TOYWORLD_DIR}; reinstall noisesearch or "
                "train it with `noisesearch toyworld train`"
            )
        pipe = _from_pretrained(TOYWORLD_DIR, local_files_only=True, torch_dtype=torch_dtype)
        family = "toyworld"
    elif (tiny_family := family_of_tiny_model(name)) is not None:
        pipe = tiny_family.build_tiny()
        if torch_dtype != torch.float32:
            pipe.to(torch_dtype)
        family = "tiny-random"
    else:
        path = user_path(name)
        if path.exists():
            if not (path / "model_index.json").exists():
                raise ModelNotFoundError(
                    f"{path} is not a diffusers pipeline folder (no model_index.json); pass a folder saved with "
                    "save_pretrained or a Hugging Face id in your cache"
                )
            class_name = _read_model_index(path)
            if base_family(class_name) is None:
                raise ValueError(f"{path} holds a {class_name}; supported: {', '.join(supported_pipelines())}")
            try:
                pipe = _from_pretrained(path, local_files_only=True, torch_dtype=torch_dtype)
            except (OSError, pickle.UnpicklingError) as e:  # missing, truncated or unsafe (pickled code) weights
                from noisesearch.io.checkpoints import describe_error

                cause: BaseException | None = e  # diffusers re-raises torch's refusal as a generic OSError
                for _ in range(8):
                    if cause is None or isinstance(cause, pickle.UnpicklingError):
                        break
                    cause = cause.__cause__ or cause.__context__
                detail = describe_error(cause if isinstance(cause, pickle.UnpicklingError) else e)
                raise ValueError(f"could not load the diffusers pipeline in {str(path)!r}: {detail}") from e
        elif "/" in name and not name.startswith((".", "/")):
            try:
                pipe = _from_pretrained(name, local_files_only=True, torch_dtype=torch_dtype)
            except (OSError, ValueError) as e:
                raise _not_cached(name) from e
        else:
            from noisesearch.io.usertext import quote

            raise ModelNotFoundError(
                f"unknown model {quote(name)}; use 'toyworld' (the embedded default), a diffusers folder, "
                "or a Hugging Face id such as stabilityai/stable-diffusion-xl-base-1.0 from your cache"
            )
        denoiser = getattr(pipe, "transformer", None) or getattr(pipe, "unet", None)
        family = detect_family(name, type(pipe).__name__, dict(getattr(denoiser, "config", None) or {})).name
    pipe.set_progress_bar_config(disable=True)
    pipe.to(dev)
    _optimise_for_device(pipe, dev, compile)
    return _wrap(pipe, name, family)
