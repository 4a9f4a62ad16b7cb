"""Shared plumbing of adapters over diffusers pipelines whose denoiser is a ``transformer``
(SD3, FLUX, PixArt-Sigma, Hunyuan-DiT): components, sizes, latent shape and decoding."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from noisesearch.core.adapter import ModelInfo
from noisesearch.models.adapters.vae import decode_latents


class TransformerPipelineAdapter:
    """Base of the DiT adapters; subclasses add prompt encoding and the network call."""

    family: ClassVar[str]  # ModelInfo.family when the caller gives no info

    def __init__(self, pipe: Any, info: ModelInfo | None = None) -> None:
        self.pipe = pipe
        self.transformer = pipe.transformer
        self.vae = pipe.vae
        self.device = self.transformer.device
        self.dtype = self.transformer.dtype
        self.scheduler_config = dict(pipe.scheduler.config)
        cls = type(pipe).__name__
        self.info = info or ModelInfo(name=cls, family=self.family, pipeline_class=cls)

    @property
    def vae_scale_factor(self) -> int:
        return int(self.pipe.vae_scale_factor)

    @property
    def latent_channels(self) -> int:
        return int(self.transformer.config.in_channels)

    def size_multiple(self) -> int:
        """Pixel sizes must be multiples of this (VAE factor times the patch size)."""
        return self.vae_scale_factor * self.transformer.config.patch_size

    def default_size(self) -> tuple[int, int]:
        size = self.transformer.config.sample_size * self.vae_scale_factor
        return size, size

    def latent_shape(self, height: int, width: int) -> tuple[int, ...]:
        f = self.size_multiple()
        if height % f or width % f:
            raise ValueError(f"height and width must be multiples of {f} for this model, got {height}x{width}")
        return (self.latent_channels, height // self.vae_scale_factor, width // self.vae_scale_factor)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return decode_latents(self.vae, latents, self.dtype)
