"""PixArt-Sigma adapter: learned-sigma output and T5 conditioning reproduce the stock
PixArtSigmaPipeline (resolution binning off) for the same initial latents."""

from __future__ import annotations

import pytest
import torch
from adapter_helpers import PROMPTS, TOLERANCE, max_diff, run_ours

from noisesearch.core.schedule import make_scheduler
from noisesearch.models.adapters.pixart import PixArtSigmaAdapter
from noisesearch.testing.tiny import tiny_pixart_sigma_pipeline

STEPS = 4
SIZE = 32
MAX_LEN = 8  # T5 tokens, passed to both sides


@pytest.fixture(scope="module")
def pipe():
    return tiny_pixart_sigma_pipeline(seed=0)


@pytest.mark.parametrize(("solver", "guidance"), [("dpm++2m", 4.5), ("ddim", 4.5), ("euler", 1.0)])
def test_pixart_sigma_matches_stock_pipeline(pipe, solver, guidance):
    adapter = PixArtSigmaAdapter(pipe, max_sequence_length=MAX_LEN)
    ours, noise, core = run_ours(adapter, [3, 4], guidance, STEPS, SIZE, solver=solver)
    stock = pipe.scheduler
    try:
        pipe.scheduler = make_scheduler(solver, stock.config)
        ref = pipe(
            PROMPTS,
            latents=noise.clone(),  # prepare_latents scales by init_noise_sigma itself
            num_inference_steps=STEPS,
            guidance_scale=guidance,
            height=SIZE,
            width=SIZE,
            max_sequence_length=MAX_LEN,
            use_resolution_binning=False,
            output_type="pt",
        ).images
    finally:
        pipe.scheduler = stock
    assert ours.shape == (2, 3, SIZE, SIZE)
    assert max_diff(ours, ref) <= TOLERANCE


def test_pixart_learned_sigma_keeps_epsilon_half(pipe):
    adapter = PixArtSigmaAdapter(pipe, max_sequence_length=MAX_LEN)
    assert adapter.learned_sigma and pipe.transformer.config.out_channels == 8
    emb = adapter.encode_prompts(PROMPTS[:1], None, False, SIZE, SIZE)
    x = torch.randn(1, *adapter.latent_shape(SIZE, SIZE))
    out = adapter.predict(x, torch.tensor(500.0), emb.rows(torch.tensor([0]), False))
    assert out.shape == x.shape
