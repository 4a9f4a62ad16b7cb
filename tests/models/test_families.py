"""A model family is one record: a new one loads and searches without any change to the core."""

from __future__ import annotations

import pytest
from diffusers import StableDiffusionPipeline

import noisesearch
from noisesearch.models import families, get_family, load_model, register_family
from noisesearch.models.families import ModelFamily, detect_family, unregister_family
from noisesearch.testing.tiny import tiny_sd_pipeline


class FakePipeline(StableDiffusionPipeline):
    """A pipeline class noisesearch has never heard of (SD layout, so the SD adapter can wrap it)."""


def build_fake_pipeline() -> FakePipeline:
    return FakePipeline(**tiny_sd_pipeline(seed=3).components)


@pytest.fixture
def fake_family():
    family = register_family(
        ModelFamily(
            "fake",
            "FakePipeline",
            "noisesearch.models.adapters.stable_diffusion:StableDiffusionAdapter",
            steps=3,
            guidance=2.0,
            verifier="toyclip",
            note="registered by a test",
            tiny_model="tiny-random-fake",
            tiny_builder=f"{__name__}:build_fake_pipeline",
        )
    )
    yield family
    unregister_family("fake")


def test_a_registered_family_loads_and_searches(fake_family):
    adapter = load_model("tiny-random-fake")
    assert type(adapter).__name__ == "StableDiffusionAdapter"
    assert adapter.info.pipeline_class == "FakePipeline"
    result = noisesearch.search(adapter, "a red circle", verifier=lambda im, p: im.mean(dim=(1, 2, 3)), candidates=2)
    assert result.accounting.nfe == 2 * 10  # the tiny-random family's default steps
    assert len(result.candidates) == 2


def test_variants_refine_their_base_family():
    assert detect_family("stabilityai/sdxl-turbo", "StableDiffusionXLPipeline").name == "sdxl-turbo"
    assert detect_family("Lykon/dreamshaper-xl-v2-turbo", "StableDiffusionXLPipeline").name == "dreamshaper-xl-turbo"
    assert detect_family("x/flux", "FluxPipeline", {"guidance_embeds": False}).name == "flux-schnell"
    assert detect_family("x/flux", "FluxPipeline", {"guidance_embeds": True}).name == "flux"
    assert detect_family("x/unknown", "KandinskyPipeline").name == "sd"


def test_the_table_refuses_clashes(fake_family):
    with pytest.raises(ValueError, match="already registered"):
        register_family(fake_family)
    with pytest.raises(ValueError, match="already has a base family"):
        register_family(ModelFamily("other", "FakePipeline", "x:y", 1, 0.0))
    with pytest.raises(ValueError, match="needs a registered base family"):
        register_family(ModelFamily("orphan", "FakePipeline", "x:y", 1, 0.0, variant_of="nope"))


def test_every_family_has_defaults_and_an_importable_adapter():
    for family in families():
        assert family.steps >= 1 and family.guidance >= 0
        assert callable(family.adapter_class())
    assert get_family("toyworld").verifier == "toydetect"
