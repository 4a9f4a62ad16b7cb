"""A synthetic world for strategy tests: an exact denoiser of Gaussian data and verifiers with known optima.

:class:`GaussianWorld` is the counting :class:`~noisesearch.testing.StubAdapter` with its network
replaced by the exact noise predictor of data ``x0 ~ N(bias(prompt), spread²)`` per latent element,
``E[eps | x] = sigma (x - alpha mu) / (alpha² spread² + sigma²)``. Unlike the plain stub, its ODE,
re-noising and x0 previews behave as they do for a trained model (the marginals of the forward
process are consistent), which is what search over paths and SMC rely on.
"""

from __future__ import annotations

import torch

from noisesearch.testing import StubAdapter
from noisesearch.testing.tiny import SD_SCHEDULER_CONFIG
from noisesearch.verifiers.base import CallableVerifier

TARGET = torch.tensor([0.8, 0.3, 0.6])  # the verifier's optimum: this mean colour in the top-left quadrant


class GaussianWorld(StubAdapter):
    """Exact denoiser of per-prompt Gaussian data; counts calls and rows like the stub."""

    def __init__(self, spread: float = 1.0) -> None:
        super().__init__()
        cfg = SD_SCHEDULER_CONFIG
        betas = torch.linspace(cfg["beta_start"] ** 0.5, cfg["beta_end"] ** 0.5, cfg["num_train_timesteps"]) ** 2
        self.abar = torch.cumprod(1 - betas.double(), 0)
        self.spread = spread

    def predict(self, x: torch.Tensor, timestep: torch.Tensor, conditioning: dict[str, torch.Tensor]) -> torch.Tensor:
        self.calls += 1
        self.rows += x.shape[0]
        abar = self.abar[int(timestep.round().item())]
        alpha, sigma = float(abar.sqrt()), float((1 - abar).sqrt())
        mu = conditioning["bias"][:, :, None, None]
        return sigma * (x - alpha * mu) / (alpha**2 * self.spread**2 + sigma**2)


def colour_score(images: torch.Tensor, prompts) -> torch.Tensor:
    """Minus the squared distance of the top-left quadrant's mean colour to TARGET; smooth, max 0."""
    h, w = images.shape[-2] // 2, images.shape[-1] // 2
    mean = images[:, :, :h, :w].mean(dim=(2, 3))  # [B, 3]
    return -((mean - TARGET.to(mean)) ** 2).sum(dim=1)


def colour_verifier(differentiable: bool = True) -> CallableVerifier:
    return CallableVerifier(colour_score, name="colour", differentiable=differentiable)
