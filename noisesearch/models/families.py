"""Supported model families: one record each, in one table.

A family is what noisesearch needs to know about a kind of checkpoint: the diffusers pipeline
class that identifies it, the adapter that wraps that pipeline (imported only when a model of the
family loads), the sampling defaults used when the user gives none, example checkpoints on the
hub, and optionally a random-weight test pipeline. Adding a family is one :func:`register_family`
call plus its adapter module; nothing in :mod:`noisesearch.core` changes.

Variants (few-step distillations, FLUX.1 [schnell]) share their base family's pipeline class and
adapter; ``matches`` tells them apart by the checkpoint's name and its denoiser's config.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

#: ``matches(name_lowercase, denoiser_config) -> bool`` for a variant of a base family
VariantRule = Callable[[str, Mapping[str, Any]], bool]


@dataclass(frozen=True)
class Example:
    """An example checkpoint of a family on the Hugging Face hub (diffusers layout)."""

    hub_id: str
    gated: bool = False  # the hub asks users to accept a license before downloading


@dataclass(frozen=True)
class ModelFamily:
    """Everything noisesearch knows about one family of checkpoints."""

    name: str  # e.g. "sdxl"; shown in reports and `noisesearch models`
    pipeline_class: str  # the diffusers pipeline class its model_index.json names
    adapter: str  # "module:Class" of its ModelAdapter, imported lazily
    steps: int  # default sampling steps when the user gives none
    guidance: float  # default classifier-free guidance scale (0: no CFG)
    verifier: str = "clipscore"  # default verifier when the user gives none
    note: str = ""  # one line for listings
    examples: tuple[Example, ...] = ()  # example checkpoints on the hub
    variant_of: str | None = None  # base family whose pipeline class this refines
    matches: VariantRule | None = field(default=None, compare=False)  # which checkpoints are this variant
    tiny_model: str | None = None  # name of a built-in random-weight pipeline, e.g. "tiny-random-sdxl"
    tiny_builder: str | None = None  # "module:function" building it (no download)

    @property
    def defaults(self) -> dict[str, Any]:
        """Sampling defaults, as :attr:`~noisesearch.core.adapter.ModelInfo.details` carries them."""
        return {"steps": self.steps, "guidance": self.guidance, "verifier": self.verifier}

    def adapter_class(self) -> Callable[..., Any]:
        """The adapter class (imports its module on first use)."""
        return _import(self.adapter)

    def build_tiny(self) -> Any:
        """A random-weight pipeline of this family (tests, smoke runs)."""
        if self.tiny_builder is None:
            raise ValueError(f"model family {self.name!r} has no random-weight test pipeline")
        return _import(self.tiny_builder)()


def _import(target: str) -> Any:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


_FAMILIES: dict[str, ModelFamily] = {}


def register_family(family: ModelFamily) -> ModelFamily:
    """Adds ``family`` to the table; raises ``ValueError`` on a clash of names or pipeline classes."""
    if family.name in _FAMILIES:
        raise ValueError(f"model family {family.name!r} is already registered")
    if family.variant_of is None:
        if family.pipeline_class and any(
            f.variant_of is None and f.pipeline_class == family.pipeline_class for f in _FAMILIES.values()
        ):
            raise ValueError(f"pipeline class {family.pipeline_class} already has a base family")
    elif family.variant_of not in _FAMILIES or family.matches is None:
        raise ValueError(f"variant {family.name!r} needs a registered base family and a matches rule")
    if family.tiny_model is not None and family_of_tiny_model(family.tiny_model) is not None:
        raise ValueError(f"built-in model name {family.tiny_model!r} is already taken")
    _FAMILIES[family.name] = family
    return family


def unregister_family(name: str) -> None:
    """Removes a family (tests that register a temporary one clean up with this)."""
    _FAMILIES.pop(name, None)


def families() -> tuple[ModelFamily, ...]:
    """Every registered family, in registration order."""
    return tuple(_FAMILIES.values())


def get_family(name: str) -> ModelFamily:
    if name not in _FAMILIES:
        raise ValueError(f"unknown model family {name!r}; known: {', '.join(_FAMILIES)}")
    return _FAMILIES[name]


def supported_pipelines() -> tuple[str, ...]:
    """The diffusers pipeline classes noisesearch can run."""
    return tuple(dict.fromkeys(f.pipeline_class for f in _FAMILIES.values() if f.pipeline_class))


def base_family(pipeline_class: str) -> ModelFamily | None:
    """The base family of a pipeline class, or None if noisesearch does not support it."""
    for f in _FAMILIES.values():
        if f.variant_of is None and f.pipeline_class == pipeline_class:
            return f
    return None


def detect_family(name: str, pipeline_class: str, denoiser_config: Mapping[str, Any] | None = None) -> ModelFamily:
    """The family of a checkpoint: its pipeline class's base family, refined to the first variant
    whose rule matches the checkpoint's name and denoiser config. Unknown classes fall back to "sd"."""
    base = base_family(pipeline_class) or _FAMILIES["sd"]
    lowered, config = str(name).lower(), denoiser_config or {}
    for f in _FAMILIES.values():
        if f.variant_of == base.name and f.matches is not None and f.matches(lowered, config):
            return f
    return base


def family_of_tiny_model(name: str) -> ModelFamily | None:
    """The family whose built-in random-weight pipeline is called ``name``."""
    for f in _FAMILIES.values():
        if f.tiny_model == name:
            return f
    return None


def _turbo(name: str, config: Mapping[str, Any]) -> bool:
    return "turbo" in name


_ADAPTERS = "noisesearch.models.adapters"
_TINY = "noisesearch.testing.tiny"

# The embedded default and the random-weight test family are families like any other; they are
# listed first so that tables read from the built-in models to the large ones.
for _family in (
    ModelFamily(
        "toyworld",
        "",
        f"{_ADAPTERS}.stable_diffusion:StableDiffusionAdapter",
        20,
        4.0,
        "toydetect",
        "the embedded default",
    ),
    ModelFamily(
        "tiny-random",
        "",
        f"{_ADAPTERS}.stable_diffusion:StableDiffusionAdapter",
        10,
        4.0,
        "toyclip",
        "random weights, for tests",
    ),
    ModelFamily(
        "sd",
        "StableDiffusionPipeline",
        f"{_ADAPTERS}.stable_diffusion:StableDiffusionAdapter",
        30,
        7.5,
        note="Stable Diffusion 1.x/2.x (epsilon or v-prediction)",
        examples=(Example("stable-diffusion-v1-5/stable-diffusion-v1-5"), Example("stabilityai/stable-diffusion-2-1")),
        tiny_model="tiny-random-sd",
        tiny_builder=f"{_TINY}:tiny_sd_pipeline",
    ),
    ModelFamily(
        "sdxl",
        "StableDiffusionXLPipeline",
        f"{_ADAPTERS}.stable_diffusion:StableDiffusionXLAdapter",
        30,
        5.0,
        note="SDXL and fine-tunes (DreamShaper-XL)",
        examples=(Example("stabilityai/stable-diffusion-xl-base-1.0"), Example("Lykon/dreamshaper-xl-1-0")),
        tiny_model="tiny-random-sdxl",
        tiny_builder=f"{_TINY}:tiny_sdxl_pipeline",
    ),
    # few-step distilled models (model cards): no classifier-free guidance
    ModelFamily(
        "sd-turbo",
        "StableDiffusionPipeline",
        f"{_ADAPTERS}.stable_diffusion:StableDiffusionAdapter",
        1,
        0.0,
        note="distilled: 1-4 steps, no CFG",
        examples=(Example("stabilityai/sd-turbo"),),
        variant_of="sd",
        matches=_turbo,
    ),
    # listed before sdxl-turbo: the first matching variant wins
    ModelFamily(
        "dreamshaper-xl-turbo",
        "StableDiffusionXLPipeline",
        f"{_ADAPTERS}.stable_diffusion:StableDiffusionXLAdapter",
        6,
        2.0,
        note="4-8 steps; its DPM++ SDE sampler is stochastic: use euler or dpm++2m",
        examples=(Example("Lykon/dreamshaper-xl-v2-turbo"),),
        variant_of="sdxl",
        matches=lambda name, cfg: "dreamshaper" in name and "turbo" in name,
    ),
    ModelFamily(
        "sdxl-turbo",
        "StableDiffusionXLPipeline",
        f"{_ADAPTERS}.stable_diffusion:StableDiffusionXLAdapter",
        1,
        0.0,
        note="distilled: 1-4 steps, no CFG",
        examples=(Example("stabilityai/sdxl-turbo"),),
        variant_of="sdxl",
        matches=_turbo,
    ),
    # transformer families: the stock pipelines' defaults
    ModelFamily(
        "sd3",
        "StableDiffusion3Pipeline",
        f"{_ADAPTERS}.sd3:StableDiffusion3Adapter",
        28,
        7.0,
        note="rectified flow, MMDiT, CLIP-L + CLIP-G + T5",
        examples=(
            Example("stabilityai/stable-diffusion-3-medium-diffusers", gated=True),
            Example("stabilityai/stable-diffusion-3.5-medium", gated=True),
            Example("stabilityai/stable-diffusion-3.5-large", gated=True),
        ),
        tiny_model="tiny-random-sd3",
        tiny_builder=f"{_TINY}:tiny_sd3_pipeline",
    ),
    ModelFamily(
        "sd3-turbo",
        "StableDiffusion3Pipeline",
        f"{_ADAPTERS}.sd3:StableDiffusion3Adapter",
        4,
        0.0,
        note="SD 3.5 Large Turbo: 4 steps, no CFG",
        examples=(Example("stabilityai/stable-diffusion-3.5-large-turbo", gated=True),),
        variant_of="sd3",
        matches=_turbo,
    ),
    ModelFamily(
        "flux",
        "FluxPipeline",
        f"{_ADAPTERS}.flux:FluxAdapter",
        28,
        3.5,
        note="rectified flow, packed latents, embedded guidance (one row per candidate)",
        examples=(Example("black-forest-labs/FLUX.1-dev", gated=True),),
        tiny_model="tiny-random-flux",
        tiny_builder=f"{_TINY}:tiny_flux_pipeline",
    ),
    ModelFamily(
        "flux-schnell",
        "FluxPipeline",
        f"{_ADAPTERS}.flux:FluxAdapter",
        4,
        0.0,
        note="distilled: 1-4 steps, no guidance",
        examples=(Example("black-forest-labs/FLUX.1-schnell"),),
        variant_of="flux",
        matches=lambda name, cfg: cfg.get("guidance_embeds") is False,
    ),
    ModelFamily(
        "pixart-sigma",
        "PixArtSigmaPipeline",
        f"{_ADAPTERS}.pixart:PixArtSigmaAdapter",
        20,
        4.5,
        note="DiT with learned sigma, T5; no resolution binning",
        examples=(Example("PixArt-alpha/PixArt-Sigma-XL-2-1024-MS"),),
        tiny_model="tiny-random-pixart",
        tiny_builder=f"{_TINY}:tiny_pixart_sigma_pipeline",
    ),
    ModelFamily(
        "hunyuan-dit",
        "HunyuanDiTPipeline",
        f"{_ADAPTERS}.hunyuan:HunyuanDiTAdapter",
        50,
        5.0,
        note="DiT with learned sigma, BERT + mT5; no resolution binning",
        examples=(Example("Tencent-Hunyuan/HunyuanDiT-v1.2-Diffusers"),),
        tiny_model="tiny-random-hunyuan",
        tiny_builder=f"{_TINY}:tiny_hunyuan_dit_pipeline",
    ),
):
    register_family(_family)
