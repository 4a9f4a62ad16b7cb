"""Hunyuan-DiT adapter: two text encoders, size/style conditioning, 2-D RoPE and learned sigma
reproduce the stock HunyuanDiTPipeline (resolution binning off) for the same initial latents."""

from __future__ import annotations

import pytest
from adapter_helpers import PROMPTS, TOLERANCE, max_diff, run_ours

from noisesearch.core.schedule import make_scheduler
from noisesearch.models.adapters.hunyuan import HunyuanDiTAdapter
from noisesearch.testing.tiny import tiny_hunyuan_dit_pipeline

STEPS = 3
SIZE = 32


@pytest.fixture(scope="module")
def pipe():
    return tiny_hunyuan_dit_pipeline(seed=0)


def _stock(pipe, solver, noise, guidance, **kwargs):
    stock = pipe.scheduler
    try:
        pipe.scheduler = make_scheduler(solver, stock.config)
        return pipe(
            PROMPTS,
            latents=noise.clone(),
            num_inference_steps=STEPS,
            guidance_scale=guidance,
            height=SIZE,
            width=SIZE,
            use_resolution_binning=False,
            output_type="pt",
            **kwargs,
        ).images
    finally:
        pipe.scheduler = stock


@pytest.mark.parametrize(("solver", "guidance"), [("ddim", 5.0), ("dpm++2m", 1.0)])
def test_hunyuan_dit_matches_stock_pipeline(pipe, solver, guidance):
    adapter = HunyuanDiTAdapter(pipe)
    ours, noise, _ = run_ours(adapter, [3, 4], guidance, STEPS, SIZE, solver=solver)
    ref = _stock(pipe, solver, noise, guidance)
    assert ours.shape == (2, 3, SIZE, SIZE)
    assert max_diff(ours, ref) <= TOLERANCE


def test_hunyuan_dit_negative_prompt(pipe):
    adapter = HunyuanDiTAdapter(pipe)
    ours, noise, _ = run_ours(adapter, [5, 6], 4.0, STEPS, SIZE, solver="euler", negative_prompt="blurry")
    ref = _stock(pipe, "euler", noise, 4.0, negative_prompt=["blurry"] * len(PROMPTS))
    assert max_diff(ours, ref) <= TOLERANCE
