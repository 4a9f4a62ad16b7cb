"""Few-step models: SD-Turbo / SDXL-Turbo (adversarial diffusion distillation, Sauer et al. 2023)
are SD 2.1 / SDXL pipelines sampled with ``timestep_spacing="trailing"``, guidance 0 and 1-4 steps;
DreamShaper-XL is an SDXL fine-tune. All run through the SD/SDXL adapters, so what is tested here
is the schedule: trailing grids at 1, 2 and 4 steps, Karras sigmas, and the 1-step equivalence of
SDXL-Turbo's Euler-ancestral scheduler with deterministic Euler."""

from __future__ import annotations

import pytest
from adapter_helpers import PROMPTS, TOLERANCE, max_diff, run_ours
from diffusers import EulerAncestralDiscreteScheduler, EulerDiscreteScheduler

from noisesearch.core.schedule import make_scheduler
from noisesearch.models.adapters import StableDiffusionAdapter, StableDiffusionXLAdapter
from noisesearch.testing.tiny import SD_SCHEDULER_CONFIG, tiny_sd_pipeline, tiny_sdxl_pipeline

SIZE = 16  # the tiny pipelines' native size
TRAILING = {**SD_SCHEDULER_CONFIG, "timestep_spacing": "trailing"}


@pytest.fixture(scope="module")
def sd_turbo():
    pipe = tiny_sd_pipeline(seed=0)
    pipe.scheduler = EulerDiscreteScheduler.from_config(TRAILING)  # sd-turbo's scheduler
    return pipe


@pytest.fixture(scope="module")
def sdxl_turbo():
    pipe = tiny_sdxl_pipeline(seed=0)
    pipe.scheduler = EulerAncestralDiscreteScheduler.from_config(TRAILING)  # sdxl-turbo's scheduler
    return pipe


def _stock(pipe, scheduler, noise, steps, guidance):
    stock = pipe.scheduler
    try:
        pipe.scheduler = scheduler
        return pipe(
            PROMPTS, latents=noise.clone(), num_inference_steps=steps, guidance_scale=guidance, output_type="pt"
        ).images
    finally:
        pipe.scheduler = stock


@pytest.mark.parametrize("solver", ["euler", "ddim"])
@pytest.mark.parametrize("steps", [1, 2, 4])
def test_sd_turbo_trailing_matches_stock(sd_turbo, solver, steps):
    adapter = StableDiffusionAdapter(sd_turbo)
    ours, noise, core = run_ours(adapter, [3, 4], 0.0, steps, SIZE, solver=solver)
    ref = _stock(sd_turbo, make_scheduler(solver, sd_turbo.scheduler.config), noise, steps, 0.0)
    assert max_diff(ours, ref) <= TOLERANCE
    assert core.meter.acc.network_rows == 2 * steps  # guidance 0: no unconditional rows
    assert float(core.schedule.timesteps[0]) == 999.0  # trailing spacing starts at the last train step


def test_sdxl_turbo_one_step_equals_euler_ancestral(sdxl_turbo):
    """At one step Euler ancestral lands on sigma = 0, so it adds no noise: deterministic Euler is exact."""
    adapter = StableDiffusionXLAdapter(sdxl_turbo)
    ours, noise, _ = run_ours(adapter, [5, 6], 0.0, 1, SIZE, solver="euler")
    ref = _stock(sdxl_turbo, sdxl_turbo.scheduler, noise, 1, 0.0)  # the stock ancestral scheduler
    assert max_diff(ours, ref) <= TOLERANCE


@pytest.mark.parametrize("steps", [2, 4])
def test_sdxl_turbo_trailing_euler_matches_stock(sdxl_turbo, steps):
    adapter = StableDiffusionXLAdapter(sdxl_turbo)
    ours, noise, _ = run_ours(adapter, [5, 6], 0.0, steps, SIZE, solver="euler")
    ref = _stock(sdxl_turbo, make_scheduler("euler", sdxl_turbo.scheduler.config), noise, steps, 0.0)
    assert max_diff(ours, ref) <= TOLERANCE


def test_dreamshaper_xl_dpm_karras_matches_stock(sdxl_turbo):
    """DreamShaper-XL's deterministic recipe: DPM++ 2M with Karras sigmas, low guidance, few steps."""
    adapter = StableDiffusionXLAdapter(sdxl_turbo)  # same SDXL weights, a fine-tune's scheduler config
    adapter.scheduler_config = {**SD_SCHEDULER_CONFIG, "use_karras_sigmas": True}
    ours, noise, _ = run_ours(adapter, [7, 8], 2.0, 4, SIZE, solver="dpm++2m")
    ref = _stock(sdxl_turbo, make_scheduler("dpm++2m", adapter.scheduler_config), noise, 4, 2.0)
    assert max_diff(ours, ref) <= TOLERANCE
