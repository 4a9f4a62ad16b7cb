"""Loading models by name, local folder or Hugging Face id, offline.

``toyworld`` is the embedded default (a tiny pipeline this project trains and ships);
``tiny-random-sd`` / ``tiny-random-sdxl`` are random-weight test pipelines. Anything else is a
diffusers pipeline folder or a hub id resolved from the local Hugging Face cache only: nothing is
ever downloaded at run time.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from noisesearch.core.adapters.base import ModelAdapter, ModelInfo
from noisesearch.core.adapters.stable_diffusion import StableDiffusionAdapter, StableDiffusionXLAdapter

TOYWORLD_DIR = Path(__file__).parent / "toyworld" / "weights" / "pipeline"
DEFAULT_MODEL = "toyworld"

#: diffusers pipeline class -> adapter class
ADAPTERS: dict[str, Callable[..., ModelAdapter]] = {
    "StableDiffusionPipeline": StableDiffusionAdapter,
    "StableDiffusionXLPipeline": StableDiffusionXLAdapter,
}

#: per-family sampling defaults when the user gives none: (steps, guidance, verifier)
RECOMMENDED: dict[str, dict[str, Any]] = {
    "toyworld": {"steps": 20, "guidance": 4.0, "verifier": "toyrelation"},
    "tiny-random": {"steps": 10, "guidance": 4.0, "verifier": "toyclip"},
    "sd": {"steps": 30, "guidance": 7.5, "verifier": "clipscore"},
    "sdxl": {"steps": 30, "guidance": 5.0, "verifier": "clipscore"},
}


class ModelNotFoundError(ValueError):
    """A model could not be found locally; the message says where to put it."""


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """``auto``: bfloat16 on CUDA (fp32 where bf16 is unsupported), float32 elsewhere."""
    if isinstance(dtype, torch.dtype):
        return dtype
    choices = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16,
               "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}
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
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("CUDA was requested but torch sees no GPU; use --device cpu")
    return dev


def _from_pretrained(source: Any, **kwargs: Any) -> Any:
    from diffusers import DiffusionPipeline

    with warnings.catch_warnings():
        # newer diffusers renamed torch_dtype to dtype; the old name works on every supported version
        warnings.filterwarnings("ignore", message=".*torch_dtype.*", category=FutureWarning)
        return DiffusionPipeline.from_pretrained(source, **kwargs)


def _wrap(pipe: Any, name: str, family: str) -> ModelAdapter:
    cls_name = type(pipe).__name__
    if cls_name not in ADAPTERS:
        raise ValueError(
            f"model {name!r} is a {cls_name}, which noisesearch does not support yet; supported: {', '.join(ADAPTERS)}"
        )
    info = ModelInfo(name=name, family=family, pipeline_class=cls_name, details=dict(RECOMMENDED.get(family, {})))
    return ADAPTERS[cls_name](pipe, info)


def _optimise_for_device(pipe: Any, device: torch.device, compile: bool) -> None:
    if device.type != "cuda":
        return  # channels-last and compilation only pay off on GPU
    pipe.unet.to(memory_format=torch.channels_last)
    if compile:
        # CUDA graphs via "reduce-overhead"; chunk shapes repeat across steps so graphs are reused
        pipe.unet = torch.compile(pipe.unet, mode="reduce-overhead", fullgraph=True)


def load_model(
    name: str | None = None,
    device: str | torch.device | None = "cpu",
    dtype: str | torch.dtype | None = "auto",
    compile: bool = False,
) -> ModelAdapter:
    """Loads a model adapter offline from a name, a diffusers folder or a cached hub id."""
    name = name or DEFAULT_MODEL
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
    elif name in ("tiny-random-sd", "tiny-random-sdxl"):
        from noisesearch.core.tiny import tiny_sd_pipeline, tiny_sdxl_pipeline

        pipe = tiny_sd_pipeline() if name == "tiny-random-sd" else tiny_sdxl_pipeline()
        if torch_dtype != torch.float32:
            pipe.to(torch_dtype)
        family = "tiny-random"
    else:
        path = Path(name).expanduser()
        if path.exists():
            if not (path / "model_index.json").exists():
                raise ModelNotFoundError(
                    f"{path} is not a diffusers pipeline folder (no model_index.json); pass a folder saved with "
                    "save_pretrained or a Hugging Face id in your cache"
                )
            class_name = json.loads((path / "model_index.json").read_text()).get("_class_name", "?")
            if class_name not in ADAPTERS:
                raise ValueError(f"{path} holds a {class_name}; supported: {', '.join(ADAPTERS)}")
            pipe = _from_pretrained(path, local_files_only=True, torch_dtype=torch_dtype)
        elif "/" in name and not name.startswith((".", "/")):
            try:
                pipe = _from_pretrained(name, local_files_only=True, torch_dtype=torch_dtype)
            except (OSError, ValueError, EnvironmentError) as e:
                cache = os.environ.get("HF_HUB_CACHE") or os.environ.get("HF_HOME") or "~/.cache/huggingface"
                raise ModelNotFoundError(
                    f"model {name!r} is not in the local Hugging Face cache ({cache}) and noisesearch never "
                    f"downloads at run time; on a connected machine run `hf download {name}` and copy the cache "
                    "here (or set HF_HOME), or pass --model /path/to/a/diffusers/folder"
                ) from e
        else:
            raise ModelNotFoundError(
                f"unknown model {name!r}; use 'toyworld' (the embedded default), a diffusers folder, "
                "or a Hugging Face id such as stabilityai/stable-diffusion-xl-base-1.0 from your cache"
            )
        family = "sdxl" if type(pipe).__name__ == "StableDiffusionXLPipeline" else "sd"
    pipe.set_progress_bar_config(disable=True)
    pipe.to(dev)
    _optimise_for_device(pipe, dev, compile)
    return _wrap(pipe, name, family)
