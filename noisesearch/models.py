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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from noisesearch.core.adapters.base import ModelAdapter, ModelInfo
from noisesearch.core.adapters.flux import FluxAdapter
from noisesearch.core.adapters.hunyuan import HunyuanDiTAdapter
from noisesearch.core.adapters.pixart import PixArtSigmaAdapter
from noisesearch.core.adapters.sd3 import StableDiffusion3Adapter
from noisesearch.core.adapters.stable_diffusion import StableDiffusionAdapter, StableDiffusionXLAdapter
from noisesearch.paths import user_path

TOYWORLD_DIR = Path(__file__).parent / "toyworld" / "weights" / "pipeline"
DEFAULT_MODEL = "toyworld"

#: diffusers pipeline class -> adapter class
ADAPTERS: dict[str, Callable[..., ModelAdapter]] = {
    "StableDiffusionPipeline": StableDiffusionAdapter,
    "StableDiffusionXLPipeline": StableDiffusionXLAdapter,
    "StableDiffusion3Pipeline": StableDiffusion3Adapter,
    "FluxPipeline": FluxAdapter,
    "PixArtSigmaPipeline": PixArtSigmaAdapter,
    "HunyuanDiTPipeline": HunyuanDiTAdapter,
}

#: diffusers pipeline class -> model family (a key of RECOMMENDED); refined by :func:`detect_family`
PIPELINE_FAMILIES: dict[str, str] = {
    "StableDiffusionPipeline": "sd",
    "StableDiffusionXLPipeline": "sdxl",
    "StableDiffusion3Pipeline": "sd3",
    "FluxPipeline": "flux",
    "PixArtSigmaPipeline": "pixart-sigma",
    "HunyuanDiTPipeline": "hunyuan-dit",
}

#: random-weight pipelines by name -> builder in noisesearch.core.tiny
TINY_RANDOM_MODELS: dict[str, str] = {
    "tiny-random-sd": "tiny_sd_pipeline",
    "tiny-random-sdxl": "tiny_sdxl_pipeline",
    "tiny-random-sd3": "tiny_sd3_pipeline",
    "tiny-random-flux": "tiny_flux_pipeline",
    "tiny-random-pixart": "tiny_pixart_sigma_pipeline",
    "tiny-random-hunyuan": "tiny_hunyuan_dit_pipeline",
}

#: per-family sampling defaults when the user gives none: (steps, guidance, verifier)
RECOMMENDED: dict[str, dict[str, Any]] = {
    "toyworld": {"steps": 20, "guidance": 4.0, "verifier": "toydetect"},
    "tiny-random": {"steps": 10, "guidance": 4.0, "verifier": "toyclip"},
    "sd": {"steps": 30, "guidance": 7.5, "verifier": "clipscore"},
    "sdxl": {"steps": 30, "guidance": 5.0, "verifier": "clipscore"},
    # few-step distilled models (model cards): no classifier-free guidance
    "sd-turbo": {"steps": 1, "guidance": 0.0, "verifier": "clipscore"},
    "sdxl-turbo": {"steps": 1, "guidance": 0.0, "verifier": "clipscore"},
    "dreamshaper-xl-turbo": {"steps": 6, "guidance": 2.0, "verifier": "clipscore"},
    # transformer families: the stock pipelines' defaults
    "sd3": {"steps": 28, "guidance": 7.0, "verifier": "clipscore"},
    "sd3-turbo": {"steps": 4, "guidance": 0.0, "verifier": "clipscore"},  # SD 3.5 Large Turbo
    "flux": {"steps": 28, "guidance": 3.5, "verifier": "clipscore"},  # embedded guidance (one row per candidate)
    "flux-schnell": {"steps": 4, "guidance": 0.0, "verifier": "clipscore"},  # no guidance input
    "pixart-sigma": {"steps": 20, "guidance": 4.5, "verifier": "clipscore"},
    "hunyuan-dit": {"steps": 50, "guidance": 5.0, "verifier": "clipscore"},
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


def detect_family(name: str, pipeline_class: str, guidance_embeds: bool | None = None) -> str:
    """The family (a key of :data:`RECOMMENDED`) of a checkpoint: its pipeline class, refined for
    few-step variants by the checkpoint's name and for FLUX.1 [schnell] by its transformer's
    ``guidance_embeds`` (False: no guidance input)."""
    family = PIPELINE_FAMILIES.get(pipeline_class, "sd")
    lowered = str(name).lower()
    if family == "sdxl" and "dreamshaper" in lowered and "turbo" in lowered:
        return "dreamshaper-xl-turbo"
    if family in ("sd", "sdxl", "sd3") and "turbo" in lowered:
        return family + "-turbo"
    if family == "flux" and guidance_embeds is False:
        return "flux-schnell"
    return family


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
    attr = "unet" if getattr(pipe, "unet", None) is not None else "transformer"
    denoiser = getattr(pipe, attr)
    if attr == "unet":  # channels-last helps convolutions; the transformers work on token sequences
        denoiser.to(memory_format=torch.channels_last)
    if compile:
        # CUDA graphs via "reduce-overhead"; chunk shapes repeat across steps so graphs are reused
        setattr(pipe, attr, torch.compile(denoiser, mode="reduce-overhead", fullgraph=True))


def _not_cached(name: str) -> ModelNotFoundError:
    from noisesearch.usertext import abbreviate, quote

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
        raise ModelNotFoundError(f"{index_file} is not a readable model_index.json ({getattr(e, 'msg', None) or e})") from None
    if not isinstance(index, dict):
        raise ModelNotFoundError(f"{index_file} is not a model_index.json (expected a JSON object, found {type(index).__name__})")
    return str(index.get("_class_name", "?"))


def check_model(name: str) -> str | None:
    """Checks offline, without loading weights, that :func:`load_model` can find ``name``; returns its
    family (a key of :data:`RECOMMENDED`) when the files tell it, else None.

    Raises the error :func:`load_model` would raise for an empty, unknown or uncached name, a folder
    that is not a diffusers pipeline, or a pipeline class noisesearch does not support.
    """
    from noisesearch.usertext import quote

    if not isinstance(name, str) or not name.strip():
        raise ModelNotFoundError("--model is empty; use 'toyworld' (the embedded default), a diffusers folder or a Hugging Face id")
    if name == "stub":
        return None
    if name == "toyworld":
        if not (TOYWORLD_DIR / "model_index.json").exists():
            raise ModelNotFoundError(f"the embedded toyworld model is missing from {TOYWORLD_DIR}; reinstall noisesearch")
        return "toyworld"
    if name in TINY_RANDOM_MODELS:
        return "tiny-random"
    from noisesearch.model_catalog import _family_from_index

    path = user_path(name)
    if path.exists():
        if not (path / "model_index.json").is_file():
            raise ModelNotFoundError(
                f"{path} is not a diffusers pipeline folder (no model_index.json); pass a folder saved with "
                "save_pretrained or a Hugging Face id in your cache"
            )
        class_name = _read_model_index(path)
        if class_name not in ADAPTERS:
            raise ValueError(f"{path} holds a {class_name}; supported: {', '.join(ADAPTERS)}")
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
        if class_name not in ADAPTERS:
            raise ValueError(f"model {quote(name)} holds a {class_name}; supported: {', '.join(ADAPTERS)}")
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
        raise ModelNotFoundError("--model is empty; use 'toyworld' (the embedded default), a diffusers folder or a Hugging Face id")
    name = name or DEFAULT_MODEL
    if name == "stub":
        # the weightless counting model of noisesearch.testing (CPU, fp32): fast tests of sweeps and CLIs
        from noisesearch.testing import StubAdapter

        return StubAdapter()  # type: ignore[return-value]
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
    elif name in TINY_RANDOM_MODELS:
        from noisesearch.core import tiny

        pipe = getattr(tiny, TINY_RANDOM_MODELS[name])()
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
            if class_name not in ADAPTERS:
                raise ValueError(f"{path} holds a {class_name}; supported: {', '.join(ADAPTERS)}")
            try:
                pipe = _from_pretrained(path, local_files_only=True, torch_dtype=torch_dtype)
            except (OSError, pickle.UnpicklingError) as e:  # missing, truncated or unsafe (pickled code) weights
                from noisesearch.verifiers.checkpoints import describe_error

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
            except (OSError, ValueError, EnvironmentError) as e:
                raise _not_cached(name) from e
        else:
            from noisesearch.usertext import quote

            raise ModelNotFoundError(
                f"unknown model {quote(name)}; use 'toyworld' (the embedded default), a diffusers folder, "
                "or a Hugging Face id such as stabilityai/stable-diffusion-xl-base-1.0 from your cache"
            )
        transformer_config = getattr(getattr(pipe, "transformer", None), "config", None)
        family = detect_family(name, type(pipe).__name__, getattr(transformer_config, "guidance_embeds", None))
    pipe.set_progress_bar_config(disable=True)
    pipe.to(dev)
    _optimise_for_device(pipe, dev, compile)
    return _wrap(pipe, name, family)
