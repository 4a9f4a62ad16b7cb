"""Model adapters: one per diffusers model family."""

from noisesearch.core.adapters.base import ModelAdapter, ModelInfo, PromptEmbeddings
from noisesearch.core.adapters.flux import FluxAdapter
from noisesearch.core.adapters.hunyuan import HunyuanDiTAdapter
from noisesearch.core.adapters.pixart import PixArtSigmaAdapter
from noisesearch.core.adapters.sd3 import StableDiffusion3Adapter
from noisesearch.core.adapters.stable_diffusion import StableDiffusionAdapter, StableDiffusionXLAdapter

__all__ = [
    "FluxAdapter",
    "HunyuanDiTAdapter",
    "ModelAdapter",
    "ModelInfo",
    "PixArtSigmaAdapter",
    "PromptEmbeddings",
    "StableDiffusion3Adapter",
    "StableDiffusionAdapter",
    "StableDiffusionXLAdapter",
]
