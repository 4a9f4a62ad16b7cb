"""Model adapters: one thin wrapper per diffusers pipeline family (the protocol is
:class:`noisesearch.core.adapter.ModelAdapter`)."""

from noisesearch.models.adapters.flux import FluxAdapter
from noisesearch.models.adapters.hunyuan import HunyuanDiTAdapter
from noisesearch.models.adapters.pixart import PixArtSigmaAdapter
from noisesearch.models.adapters.sd3 import StableDiffusion3Adapter
from noisesearch.models.adapters.stable_diffusion import StableDiffusionAdapter, StableDiffusionXLAdapter

__all__ = [
    "FluxAdapter",
    "HunyuanDiTAdapter",
    "PixArtSigmaAdapter",
    "StableDiffusion3Adapter",
    "StableDiffusionAdapter",
    "StableDiffusionXLAdapter",
]
