"""The self-supervised verifier (early x0 preview vs final image) on the stub."""

from __future__ import annotations

import pytest
import torch
from strategy_world import GaussianWorld, colour_score

from noisesearch.core import CoreConfig, DenoisingCore
from noisesearch.engine import SearchContext
from noisesearch.strategies.self_consistency import SelfConsistency, pixel_features
from noisesearch.verifiers.base import as_verifier


def test_similarity_of_identical_and_inverted_images():
    sc = SelfConsistency()
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(sc.similarity(images, images), torch.ones(3), atol=1e-5)
    assert torch.allclose(sc.similarity(images, 1 - images), -torch.ones(3), atol=1e-5)
    assert pixel_features(images).shape == (3, 3 * 16 * 16)


def test_preview_step_maps_the_level_onto_the_schedule():
    assert SelfConsistency().preview_step(20) == 12  # 40% of the steps still to go
    assert SelfConsistency(level=0.01).preview_step(10) == 10 and SelfConsistency(level=0.99).preview_step(10) == 1
    with pytest.raises(ValueError):
        SelfConsistency(level=1.0)


def test_finish_scores_candidates_at_no_extra_nfe():
    core = DenoisingCore(GaussianWorld(), CoreConfig(steps=10, guidance=3.0))
    ctx = SearchContext(core, as_verifier(colour_score), "p", budget_nfe=40)
    seeds = ctx.new_seeds(4)
    sim = SelfConsistency().finish(ctx, ctx.start(seeds))
    assert ctx.nfe_used == 40  # exactly four full samples: the preview is free
    assert [c.info["self_consistency"] for c in ctx.candidates] == pytest.approx(sim.tolist())
    assert ((sim > -1) & (sim <= 1)).all()
    # by hand: the free preview at step 6 (made at step 5) against the final image
    ref = DenoisingCore(GaussianWorld(), CoreConfig(steps=10, guidance=3.0))
    traj = ref.run(ref.start(ref.initial_noise(seeds), ["p"] * 4, seeds), until=6)
    early = ref.decode(ref.preview(traj))
    final = ref.decode(ref.run(traj).x)
    assert torch.allclose(sim, SelfConsistency().similarity(early, final), atol=1e-5)


def test_features_are_pluggable():
    mean_colour = SelfConsistency(features=lambda im: im.mean(dim=(2, 3)))
    a = torch.zeros(2, 3, 8, 8)
    a[:, 0] = 1.0
    b = a.clone()
    b[1] = torch.zeros(3, 8, 8)
    b[1, 1] = 1.0
    assert mean_colour.similarity(a, b).tolist() == pytest.approx([1.0, 0.0])
