"""The self-supervised verifier of Ma et al. 2025, "Inference-Time Scaling for Diffusion Models beyond
Scaling Denoising Steps": no reward model, only the sampler's own consistency.

Score = cosine similarity, in a feature space, between the x0 prediction at an early noise level
(the paper: σ = 0.4, with DINO or CLIP features) and the final sample. Noises whose early layout
survives to the end score high; the paper found it tracks FID/IS on ImageNet without any
conditioning-aware model.

It needs the sampler's intermediate state, which the :class:`~noisesearch.verifiers.base.Verifier`
protocol (final images only) does not see, so it is a strategy-side helper rather than a verifier:
:meth:`SelfConsistency.finish` runs candidates through a search context, reads the free x0 preview at
the early level on the way, finishes them (the usual decode, verifier score and record) and stores
the similarity in each candidate's ``info["self_consistency"]``; :meth:`similarity` is the score on
images already at hand. It costs no NFE beyond the samples themselves (the preview is the free
prediction of the last network evaluation), plus one extra decode per candidate.

Levels are fractions of the schedule still to go, as in search over paths: level 0.4 is the state
after 60% of the steps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from noisesearch.core.sampler import Trajectory
    from noisesearch.engine import SearchContext

FeatureFn = Callable[[torch.Tensor], torch.Tensor]


def pixel_features(images: torch.Tensor, size: int = 16) -> torch.Tensor:
    """Model-free features: the image pooled to size×size, centred per image. [B, 3, H, W] -> [B, 3·size²].

    Their cosine similarity is the Pearson correlation of the two pooled images. Pass a learned
    image encoder (e.g. a CLIP verifier's ``encode_images``) to :class:`SelfConsistency` for the
    paper's feature-space version.
    """
    pooled = F.adaptive_avg_pool2d(images.float(), (min(size, images.shape[-2]), min(size, images.shape[-1])))
    flat = pooled.flatten(1)
    return flat - flat.mean(dim=1, keepdim=True)


@dataclass(frozen=True)
class SelfConsistency:
    """Similarity of an early x0 preview and the final image (Ma et al. 2025's self-supervised verifier)."""

    level: float = 0.4  # level of the early preview, fraction of the schedule still to go (paper: σ = 0.4)
    features: FeatureFn | None = None  # images [B, 3, H, W] -> features [B, D]; None: pixel_features

    name = "self-consistency"

    def __post_init__(self) -> None:
        if not 0.0 < self.level < 1.0:
            raise ValueError(f"level must be in (0, 1) (fraction of the schedule still to go), got {self.level!r}")

    def preview_step(self, num_steps: int) -> int:
        """Step whose state is at ``level``: its free preview is the prediction made one step earlier."""
        step = num_steps - int(self.level * num_steps + 0.5)
        return min(max(step, 1), num_steps)

    def similarity(self, early: torch.Tensor, final: torch.Tensor) -> torch.Tensor:
        """Cosine similarity of features of two image batches [B, 3, H, W] -> [B] in [-1, 1]."""
        f = self.features or pixel_features
        a, b = f(early).float(), f(final).float()
        return F.cosine_similarity(a, b.to(a.device), dim=1, eps=1e-8).cpu()

    def finish(
        self, ctx: SearchContext, trajectory: Trajectory, round: int = 0, info: Sequence[dict[str, Any]] | None = None
    ) -> torch.Tensor:
        """Samples ``trajectory`` (at a step before the preview step) to the end through ``ctx``,
        records the candidates with ``info["self_consistency"]`` and returns that score [B]."""
        step = self.preview_step(ctx.steps)
        if trajectory.step >= step:
            raise ValueError(f"the trajectory is at step {trajectory.step}, past the preview step {step}")
        # 1. run to the early level; its preview is the free x0 of the last evaluation   [B, *latent]
        trajectory = ctx.denoise(trajectory, until=step)
        early = ctx.decode(ctx.preview(trajectory))
        # 2. run to the end and compare in feature space   [B]
        trajectory = ctx.denoise(trajectory)
        sim = self.similarity(early, ctx.decode(trajectory.x))
        base = list(info) if info is not None else [{} for _ in range(len(trajectory))]
        ctx.finish(trajectory, round=round, info=[{**d, "self_consistency": float(s)} for d, s in zip(base, sim)])
        return sim
