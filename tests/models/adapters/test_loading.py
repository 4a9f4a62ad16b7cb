"""The new families load through load_model (built-in tiny names and saved diffusers folders) and sample."""

from __future__ import annotations

import pytest
import torch

from noisesearch.core import CoreConfig, DenoisingCore
from noisesearch.models import load_model
from noisesearch.models.adapters import FluxAdapter, HunyuanDiTAdapter, PixArtSigmaAdapter, StableDiffusion3Adapter
from noisesearch.testing.tiny import tiny_flux_pipeline


@pytest.mark.parametrize(
    ("name", "adapter_cls"),
    [
        ("tiny-random-sd3", StableDiffusion3Adapter),
        ("tiny-random-flux", FluxAdapter),
        ("tiny-random-pixart", PixArtSigmaAdapter),
        ("tiny-random-hunyuan", HunyuanDiTAdapter),
    ],
)
def test_tiny_random_models_sample(name, adapter_cls):
    adapter = load_model(name, device="cpu", dtype="fp32")
    assert isinstance(adapter, adapter_cls) and adapter.info.family == "tiny-random"
    core = DenoisingCore(adapter, CoreConfig(steps=1, guidance=2.0))  # native (tiny) size
    images = core.sample([0], ["a red circle"])
    assert images.shape[:2] == (1, 3) and torch.isfinite(images).all()


def test_saved_flux_schnell_folder_loads_offline(tmp_path):
    """save_pretrained -> load_model(folder): the stock loader, our adapter, and the schnell family."""
    folder = tmp_path / "tiny-flux"
    tiny_flux_pipeline(seed=0, guidance_embeds=False).save_pretrained(folder)
    adapter = load_model(str(folder), device="cpu", dtype="fp32")
    assert isinstance(adapter, FluxAdapter)
    assert adapter.info.family == "flux-schnell"
    assert adapter.info.details["steps"] == 4 and adapter.info.details["guidance"] == 0.0
