"""Latents -> images through a diffusers ``AutoencoderKL``, as the transformer pipelines decode.

SD 3.x and FLUX.1 (Esser et al. 2024; Black Forest Labs 2024) normalise their latents with a
``shift_factor`` as well as a ``scaling_factor``: ``z = latents / scaling_factor + shift_factor``.
PixArt-Sigma and Hunyuan-DiT use the SD VAE, whose config has no shift (None). Shared by the
transformer adapters; the SD/SDXL adapters keep their own (latents_mean/std) path.
"""

from __future__ import annotations

from typing import Any

import torch


def decode_latents(vae: Any, latents: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Latents [B, C, h, w] in the denoiser's space -> images [B, 3, H, W] float32 in [0, 1].

    ``dtype`` is the denoiser's: the pipelines cast to it before unscaling, then to the VAE's.
    """
    cfg = vae.config
    shift = getattr(cfg, "shift_factor", None) or 0.0
    z = latents.to(dtype) / cfg.scaling_factor + shift
    vae_dtype = next(vae.parameters()).dtype
    image = vae.decode(z.to(vae_dtype), return_dict=False)[0]
    # the pipelines' postprocess(output_type="pt"): [-1, 1] -> [0, 1]
    return (image.float() / 2 + 0.5).clamp(0, 1)
