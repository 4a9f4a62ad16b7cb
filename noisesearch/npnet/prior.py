"""NPNet as a noise prior for any strategy (the ``npnet`` strategy itself is :mod:`noisesearch.strategies.npnet`)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from noisesearch.npnet.checkpoint import check_checkpoint_path, load_npnet
from noisesearch.npnet.model import NPNet
from noisesearch.toyworld.assets import NPNET_FILE

if TYPE_CHECKING:
    from noisesearch.core.sampler import DenoisingCore
    from noisesearch.engine import NoisePrior

#: the NPNet trained for the embedded world and shipped with it (see its README for the command)
TOYWORLD_NPNET = NPNET_FILE


def default_checkpoint(family: str) -> Path:
    """The shipped NPNet for a model family; other families need the user's checkpoint."""
    if family == "toyworld" and TOYWORLD_NPNET.is_file():
        return TOYWORLD_NPNET
    raise ValueError(
        f"no NPNet ships for model family {family!r}; pass a checkpoint with --npnet-checkpoint "
        "(an official sdxl.pth / dreamshaper.pth / dit.pth, or a file from `noisesearch npnet train`)"
    )


@lru_cache(maxsize=4)
def _cached(path: str, mtime: float) -> NPNet:
    return load_npnet(path)


def load_cached(path: str | os.PathLike) -> NPNet:
    """:func:`load_npnet`, cached per file (searches over many prompts load it once)."""
    p = check_checkpoint_path(path).resolve()
    return _cached(str(p), p.stat().st_mtime)


class NPNetPrior:
    """Golden noises (Zhou et al. 2024) as the initial noises of a search.

    Each standard noise becomes ``NPNet(noise, embedding of its prompt)``; the prompt embeddings
    are the diffusion model's own positive ``encoder_hidden_states`` (encoded once per prompt by the
    core). Its time is metered as the ``prior`` phase and its calls as ``prior_calls``, not NFEs.
    """

    def __init__(self, net: NPNet, embedding_key: str = "encoder_hidden_states") -> None:
        self.net = net
        self.embedding_key = embedding_key

    def bind(self, core: DenoisingCore) -> NoisePrior:
        net = self.net.to(core.adapter.device)
        cfg = net.config
        want = (cfg.latent_channels, cfg.latent_size, cfg.latent_size)
        if tuple(core.latent_shape) != want:
            raise ValueError(
                f"this NPNet was built for latents {want} but the model samples latents {tuple(core.latent_shape)}; "
                "use an NPNet trained for this model and image size"
            )

        def prior(noise: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
            text = core.text_embeddings(prompts, self.embedding_key)
            return net.golden_noise(noise.float(), text)

        return prior
