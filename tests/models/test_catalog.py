"""`noisesearch models`: supported families, and what a (fake) local Hugging Face cache holds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from noisesearch.cli import app
from noisesearch.models import detect_family, get_family, supported_pipelines
from noisesearch.models.catalog import catalog, list_models


def _fake_repo(cache: Path, repo_id: str, index: dict, files: dict[str, dict]) -> None:
    """A repository in the hub cache layout: models--org--name/{refs/main, snapshots/<hash>/...}."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    for rel, content in {"model_index.json": index, **files}.items():
        (snapshot / rel).parent.mkdir(parents=True, exist_ok=True)
        (snapshot / rel).write_text(json.dumps(content))


@pytest.fixture
def cache(tmp_path):
    cache = tmp_path / "hub"
    sdxl_turbo = {
        "_class_name": "StableDiffusionXLPipeline",
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "feature_extractor": [None, None],
        "scheduler": ["diffusers", "EulerAncestralDiscreteScheduler"],
    }  # weightless
    weights = "diffusion_pytorch_model.safetensors"
    files = {f"unet/{weights}": {}, f"vae/{weights}": {}, "scheduler/scheduler_config.json": {}}
    _fake_repo(cache, "stabilityai/sdxl-turbo", sdxl_turbo, files)
    flux = {
        "_class_name": "FluxPipeline",
        "transformer": ["diffusers", "FluxTransformer2DModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "text_encoder_2": ["transformers", "T5EncoderModel"],
    }
    # an interrupted download: no transformer, a T5 config without its weights
    _fake_repo(cache, "black-forest-labs/FLUX.1-dev", flux, {f"vae/{weights}": {}, "text_encoder_2/config.json": {}})
    complete = {f"{k}/{weights}": {} for k in ("transformer", "vae", "text_encoder_2")}
    _fake_repo(cache, "someone/flux-fast", flux, {**complete, "transformer/config.json": {"guidance_embeds": False}})
    _fake_repo(cache, "someone/kandinsky", {"_class_name": "KandinskyPipeline"}, {})
    return cache


def test_catalog_is_consistent():
    entries = catalog()
    assert len(entries) == 15
    for entry in entries:
        assert entry.pipeline_class in supported_pipelines()
        assert get_family(entry.family).note
        config = {"guidance_embeds": entry.family != "flux-schnell"}
        assert detect_family(entry.hub_id, entry.pipeline_class, config).name == entry.family


def test_list_models_reads_the_cache(cache):
    by_id = {m.entry.hub_id: m for m in list_models(cache)}
    assert by_id["stabilityai/sdxl-turbo"].status == "cached"
    assert by_id["stabilityai/sdxl-turbo"].snapshot.endswith("0123456789abcdef0123456789abcdef01234567")
    dev = by_id["black-forest-labs/FLUX.1-dev"]
    assert dev.status == "partial" and set(dev.missing) == {"transformer", "text_encoder_2 weights"}
    assert by_id["stabilityai/stable-diffusion-xl-base-1.0"].status == "missing"
    # a cached pipeline the catalog does not name is listed when its class is supported
    assert by_id["someone/flux-fast"].status == "cached"
    assert by_id["someone/flux-fast"].entry.family == "flux-schnell"  # no guidance input
    assert "someone/kandinsky" not in by_id
    assert by_id["toyworld"].status == "built-in"


def test_list_models_without_a_cache(tmp_path):
    statuses = list_models(tmp_path / "nowhere")
    assert all(m.status in ("missing", "built-in") for m in statuses)


def test_models_command(cache):
    result = CliRunner().invoke(app, ["models", "--cache-dir", str(cache)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "stabilityai/sdxl-turbo" in result.output and "cached" in result.output
    assert "black-forest-labs/FLUX.1-dev lacks" in result.output
    assert "hf download" in result.output
    local = CliRunner().invoke(app, ["models", "--local", "--cache-dir", str(cache)], catch_exceptions=False)
    assert "stabilityai/sdxl-turbo" in local.output and "stabilityai/stable-diffusion-xl-base-1.0" not in local.output


def test_models_command_bad_cache_dir(tmp_path):
    result = CliRunner().invoke(app, ["models", "--cache-dir", str(tmp_path / "nope")], catch_exceptions=False)
    assert result.exit_code == 2 and "not a folder" in result.output


@pytest.mark.parametrize(
    ("name", "cls", "embeds", "family"),
    [
        ("stabilityai/sd-turbo", "StableDiffusionPipeline", None, "sd-turbo"),
        ("Lykon/dreamshaper-xl-v2-turbo", "StableDiffusionXLPipeline", None, "dreamshaper-xl-turbo"),
        ("Lykon/dreamshaper-xl-1-0", "StableDiffusionXLPipeline", None, "sdxl"),
        ("black-forest-labs/FLUX.1-schnell", "FluxPipeline", False, "flux-schnell"),
        ("/models/my-flux", "FluxPipeline", True, "flux"),
        ("PixArt-alpha/PixArt-Sigma-XL-2-1024-MS", "PixArtSigmaPipeline", None, "pixart-sigma"),
    ],
)
def test_detect_family(name, cls, embeds, family):
    config = {} if embeds is None else {"guidance_embeds": embeds}
    assert detect_family(name, cls, config).name == family
