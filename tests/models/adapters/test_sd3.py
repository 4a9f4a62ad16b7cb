"""SD 3.x adapter: the core reproduces the stock StableDiffusion3Pipeline for the same initial latents."""

from __future__ import annotations

import pytest
import torch
from adapter_helpers import PROMPTS, TOLERANCE, max_diff, run_ours

from noisesearch.models.adapters.sd3 import StableDiffusion3Adapter
from noisesearch.testing.tiny import tiny_sd3_pipeline

STEPS = 3
SIZE = 32
MAX_LEN = 8  # T5 tokens, passed to both sides


@pytest.fixture(scope="module")
def pipe():
    return tiny_sd3_pipeline(seed=0)


def _stock(pipe, noise, guidance, **kwargs):
    return pipe(
        PROMPTS,
        latents=noise.clone(),
        num_inference_steps=STEPS,
        guidance_scale=guidance,
        height=SIZE,
        width=SIZE,
        max_sequence_length=MAX_LEN,
        output_type="pt",
        **kwargs,
    ).images


@pytest.mark.parametrize("guidance", [1.0, 5.0])
def test_sd3_matches_stock_pipeline(pipe, guidance):
    adapter = StableDiffusion3Adapter(pipe, max_sequence_length=MAX_LEN)
    ours, noise, core = run_ours(adapter, [3, 4], guidance, STEPS, SIZE)
    ref = _stock(pipe, noise, guidance)
    assert ours.shape == (2, 3, SIZE, SIZE)
    assert max_diff(ours, ref) <= TOLERANCE
    # accounting: one NFE per candidate and step; CFG doubles the rows, not the NFEs
    assert core.meter.acc.nfe == 2 * STEPS
    assert core.meter.acc.network_rows == (4 if guidance > 1 else 2) * STEPS


def test_sd3_negative_prompt_and_no_t5():
    pipe = tiny_sd3_pipeline(seed=1, with_t5=False)  # text_encoder_3=None: the pipeline feeds zeros
    adapter = StableDiffusion3Adapter(pipe, max_sequence_length=MAX_LEN)
    ours, noise, _ = run_ours(adapter, [5, 6], 4.0, STEPS, SIZE, negative_prompt="blurry")
    ref = _stock(pipe, noise, 4.0, negative_prompt=["blurry"] * len(PROMPTS))
    assert max_diff(ours, ref) <= TOLERANCE


def test_sd3_dynamic_shift_matches_stock_pipeline():
    """SD 3.5-style resolution-dependent shift: the adapter hands the pipeline's mu to the schedule."""
    pipe = tiny_sd3_pipeline(seed=2, dynamic_shifting=True)
    adapter = StableDiffusion3Adapter(pipe, max_sequence_length=MAX_LEN)
    ours, noise, core = run_ours(adapter, [7, 8], 3.0, STEPS, SIZE)
    ref = _stock(pipe, noise, 3.0)
    assert max_diff(ours, ref) <= TOLERANCE
    pipe.scheduler.set_timesteps(STEPS, mu=adapter.set_timesteps_kwargs(STEPS, SIZE, SIZE)["mu"])
    assert torch.allclose(core.schedule.timesteps, pipe.scheduler.timesteps.float())


def test_sd3_seed_convention(pipe):
    """Candidate with seed s is the image the pipeline draws with Generator("cpu").manual_seed(s)."""
    adapter = StableDiffusion3Adapter(pipe, max_sequence_length=MAX_LEN)
    ours, _, _ = run_ours(adapter, [1234], 5.0, STEPS, SIZE, prompts=PROMPTS[:1])
    ref = pipe(
        PROMPTS[0],
        generator=torch.Generator("cpu").manual_seed(1234),
        num_inference_steps=STEPS,
        guidance_scale=5.0,
        height=SIZE,
        width=SIZE,
        max_sequence_length=MAX_LEN,
        output_type="pt",
    ).images
    assert max_diff(ours, ref) <= TOLERANCE


def test_sd3_rejects_bad_size(pipe):
    with pytest.raises(ValueError, match="multiples of 4"):
        StableDiffusion3Adapter(pipe).latent_shape(30, 32)
