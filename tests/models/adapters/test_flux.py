"""FLUX.1 adapter: packed latents, embedded guidance and the resolution-dependent shift reproduce
the stock FluxPipeline for the same initial latents."""

from __future__ import annotations

import pytest
import torch
from adapter_helpers import PROMPTS, TOLERANCE, max_diff, run_ours

from noisesearch.models.adapters.flux import FluxAdapter
from noisesearch.testing.tiny import tiny_flux_pipeline

STEPS = 3
SIZE = 32
MAX_LEN = 8  # T5 tokens, passed to both sides


@pytest.fixture(scope="module")
def dev_pipe():
    return tiny_flux_pipeline(seed=0, guidance_embeds=True)


def _stock(pipe, noise, guidance, steps=STEPS, size=SIZE):
    c, h, w = noise.shape[1:]
    packed = pipe._pack_latents(noise.clone(), noise.shape[0], c, h, w)  # the pipeline takes packed latents
    return pipe(
        PROMPTS,
        latents=packed,
        num_inference_steps=steps,
        guidance_scale=guidance,
        height=size,
        width=size,
        max_sequence_length=MAX_LEN,
        output_type="pt",
    ).images


@pytest.mark.parametrize("guidance", [1.0, 3.5])
def test_flux_dev_matches_stock_pipeline(dev_pipe, guidance):
    adapter = FluxAdapter(dev_pipe, max_sequence_length=MAX_LEN)
    ours, noise, core = run_ours(adapter, [3, 4], guidance, STEPS, SIZE)
    ref = _stock(dev_pipe, noise, guidance)
    assert ours.shape == (2, 3, SIZE, SIZE)
    assert max_diff(ours, ref) <= TOLERANCE
    # embedded guidance: no unconditional rows at any scale
    assert not core.guided
    assert core.meter.acc.nfe == core.meter.acc.network_rows == 2 * STEPS


def test_flux_guidance_is_an_input(dev_pipe):
    """The scale changes the output although there is a single row per candidate."""
    adapter = FluxAdapter(dev_pipe, max_sequence_length=MAX_LEN)
    a, _, _ = run_ours(adapter, [3], 1.0, 2, SIZE, prompts=PROMPTS[:1])
    b, _, _ = run_ours(adapter, [3], 5.0, 2, SIZE, prompts=PROMPTS[:1])
    assert max_diff(a, b) > 1e-4


def test_flux_schnell_matches_stock_pipeline():
    pipe = tiny_flux_pipeline(seed=1, guidance_embeds=False)
    adapter = FluxAdapter(pipe, max_sequence_length=MAX_LEN)
    ours, noise, _ = run_ours(adapter, [5, 6], 0.0, 2, SIZE)
    assert max_diff(ours, _stock(pipe, noise, 0.0, steps=2)) <= TOLERANCE


def test_flux_resolution_shift_and_seed_convention(dev_pipe):
    """A non-square size changes mu; candidate seed s is the pipeline's Generator("cpu").manual_seed(s)."""
    adapter = FluxAdapter(dev_pipe, max_sequence_length=MAX_LEN)
    from noisesearch.core import CoreConfig, DenoisingCore

    core = DenoisingCore(adapter, CoreConfig(steps=STEPS, guidance=3.5, height=16, width=48))
    mu_square = adapter.set_timesteps_kwargs(STEPS, SIZE, SIZE)["mu"]
    mu_wide = adapter.set_timesteps_kwargs(STEPS, 16, 48)["mu"]
    assert mu_square != mu_wide
    images = core.decode(core.run(core.start(core.initial_noise([77]), PROMPTS[:1], [77])).x)
    ref = dev_pipe(
        PROMPTS[0],
        generator=torch.Generator("cpu").manual_seed(77),
        num_inference_steps=STEPS,
        guidance_scale=3.5,
        height=16,
        width=48,
        max_sequence_length=MAX_LEN,
        output_type="pt",
    ).images
    assert images.shape == (1, 3, 16, 48)
    assert max_diff(images, ref) <= TOLERANCE


def test_flux_rejects_negative_prompt_and_odd_size(dev_pipe):
    adapter = FluxAdapter(dev_pipe, max_sequence_length=MAX_LEN)
    with pytest.raises(ValueError, match="negative prompt"):
        run_ours(adapter, [0], 3.5, 1, SIZE, negative_prompt="ugly", prompts=PROMPTS[:1])
    with pytest.raises(ValueError, match="multiples of 4"):
        adapter.latent_shape(34, 32)
