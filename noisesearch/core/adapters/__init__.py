"""Model adapters: one per diffusers model family."""

from noisesearch.core.adapters.base import ModelAdapter, ModelInfo, PromptEmbeddings
from noisesearch.core.adapters.stable_diffusion import StableDiffusionAdapter, StableDiffusionXLAdapter

__all__ = ["ModelAdapter", "ModelInfo", "PromptEmbeddings", "StableDiffusionAdapter", "StableDiffusionXLAdapter"]
