"""The core reproduces the stock diffusers pipelines for the same initial latents."""

from __future__ import annotations

import pytest
import torch

from noisesearch.core import CoreConfig, DenoisingCore
from noisesearch.core.schedule import make_scheduler
from noisesearch.models.adapters import StableDiffusionAdapter, StableDiffusionXLAdapter
from noisesearch.testing.tiny import tiny_sd_pipeline, tiny_sdxl_pipeline

PROMPTS = ["a red circle", "two blue squares"]
STEPS = 6


@pytest.fixture(scope="module")
def sd_pipes():
    return {p: tiny_sd_pipeline(seed=0, prediction_type=p) for p in ("epsilon", "v_prediction")}


@pytest.fixture(scope="module")
def sdxl_pipe():
    return tiny_sdxl_pipeline(seed=0)


def _stock(pipe, solver, prompts, latents, guidance, **kwargs):
    pipe.scheduler = make_scheduler(solver, pipe.scheduler.config)
    return pipe(
        prompts,
        latents=latents.clone(),
        num_inference_steps=STEPS,
        guidance_scale=guidance,
        output_type="pt",
        **kwargs,
    ).images


def _ours(adapter, solver, prompts, seeds, guidance):
    core = DenoisingCore(adapter, CoreConfig(solver=solver, steps=STEPS, guidance=guidance, max_batch=64))
    noise = core.initial_noise(seeds)
    traj = core.run(core.start(noise, prompts, seeds))
    return core.decode(traj.x), noise


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("solver", ["ddim", "euler", "dpm++2m"])
@pytest.mark.parametrize("guidance", [1.0, 7.5])
def test_sd_matches_stock_pipeline(sd_pipes, prediction_type, solver, guidance):
    pipe = sd_pipes[prediction_type]
    ours, noise = _ours(StableDiffusionAdapter(pipe), solver, PROMPTS, [3, 4], guidance)
    ref = _stock(pipe, solver, PROMPTS, noise, guidance)
    assert ours.shape == ref.shape == (2, 3, 16, 16)
    assert (ours - ref).abs().max().item() <= 1e-4


@pytest.mark.parametrize("solver", ["ddim", "euler", "dpm++2m"])
def test_sdxl_matches_stock_pipeline(sdxl_pipe, solver):
    ours, noise = _ours(StableDiffusionXLAdapter(sdxl_pipe), solver, PROMPTS, [5, 6], 5.0)
    ref = _stock(sdxl_pipe, solver, PROMPTS, noise, 5.0)
    assert (ours - ref).abs().max().item() <= 1e-4


def test_seed_convention_matches_pipeline_generator(sd_pipes):
    """Candidate with seed s is the image diffusers draws with Generator(device).manual_seed(s)."""
    pipe = sd_pipes["epsilon"]
    seed = 1234
    ours, _ = _ours(StableDiffusionAdapter(pipe), "ddim", [PROMPTS[0]], [seed], 7.5)
    pipe.scheduler = make_scheduler("ddim", pipe.scheduler.config)
    ref = pipe(
        PROMPTS[0],
        generator=torch.Generator("cpu").manual_seed(seed),
        num_inference_steps=STEPS,
        guidance_scale=7.5,
        output_type="pt",
    ).images
    assert (ours - ref).abs().max().item() <= 1e-4
