"""Helpers shared by the adapter equivalence tests: run our core and the stock pipeline from the same latents."""

from __future__ import annotations

import torch

from noisesearch.core import CoreConfig, DenoisingCore

PROMPTS = ["a red circle", "two blue squares"]
TOLERANCE = 1e-4  # max abs difference of fp32 images in [0, 1]


def run_ours(adapter, seeds, guidance, steps, size, solver=None, negative_prompt=None, prompts=PROMPTS):
    """Images [B, 3, size, size] from our core, the standard-normal noise it started from, and the core."""
    config = CoreConfig(
        solver=solver, steps=steps, guidance=guidance, height=size, width=size, negative_prompt=negative_prompt
    )
    core = DenoisingCore(adapter, config)
    noise = core.initial_noise(seeds)
    traj = core.run(core.start(noise, prompts, seeds))
    return core.decode(traj.x), noise, core


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a.float() - b.float()).abs().max().item()
