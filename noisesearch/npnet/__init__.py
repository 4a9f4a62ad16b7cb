"""NPNet (Zhou et al. 2024, "Golden Noise for Diffusion Models: A Learning Framework"): the model,
official-checkpoint loading, NPD collection, training, and its use as a prior and a strategy."""

from noisesearch.npnet.checkpoint import convert_official, load_npnet, save_npnet
from noisesearch.npnet.model import PRESETS, NPNet, NPNetConfig, preset

__all__ = ["PRESETS", "NPNet", "NPNetConfig", "convert_official", "load_npnet", "preset", "save_npnet"]
