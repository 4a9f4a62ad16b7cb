"""NPNet, the noise prompt network of Zhou et al. 2024, "Golden Noise for Diffusion Models:
A Learning Framework" (arXiv:2411.09502).

NPNet maps a standard Gaussian initial noise ``x_T`` and the prompt's text embedding to a "golden"
noise that the unchanged diffusion model turns into a better image::

    e      = AdaGroupNorm(x_T, text)                        # text injected into the noise
    golden = SVD(x_T) + (2·sigmoid(α) − 1)·e + β·Residual(x_T + e)

* ``SVD``: the latent's channels are tiled into one square matrix whose singular vectors and values
  go through small MLPs and a self-attention layer that predict new singular values (the matrix is
  rebuilt from the original singular vectors).
* ``Residual``: a vision backbone (Swin-Tiny from timm for the official checkpoints) applied to the
  noise upsampled to the backbone's input size; its NHWC feature map is resized to the latent size
  with its *rows* acting as channels (as in the official code), then a 1×1 convolution.
* ``α`` and ``β`` are learnable scalars initialised at 0.

Parameter names follow the official code so official checkpoints load strictly (see
:mod:`noisesearch.npnet.checkpoint`). Unlike the official code, :class:`NPNet` is built in eval
mode (Swin's stochastic depth would otherwise give a different golden noise on every call), never
downloads the backbone's pretrained weights, and conditions each sample on its own prompt.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from diffusers.models.normalization import AdaGroupNorm
from timm import create_model
from timm.layers import Attention
from torch import nn


@dataclass(frozen=True)
class NPNetConfig:
    """Architecture of an NPNet; the defaults are the official SDXL layout (about 30.5M parameters)."""

    latent_channels: int = 4  # channels of the diffusion model's latent (a square number: tiled √C × √C)
    latent_size: int = 128  # latent height = width (SDXL at 1024 px: 128)
    text_tokens: int = 77  # prompt embedding length
    text_dim: int = 2048  # prompt embedding width (SDXL: both text encoders concatenated)
    svd_hidden: int = 64  # hidden width of the MLPs on U and Vᵀ
    svd_head_hidden: int = 1024  # hidden width of the MLP that predicts the new singular values
    svd_heads: int = 8  # attention heads over the singular-vector tokens
    backbone: str = "swin_tiny_patch4_window7_224"  # timm model of the residual branch
    backbone_size: int = 224  # the noise is upsampled to this size before the backbone
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)  # timm create_model overrides

    def __post_init__(self) -> None:
        tile = math.isqrt(self.latent_channels)
        if tile * tile != self.latent_channels:
            raise ValueError(f"latent_channels must be a square number (4, 16, ...), got {self.latent_channels}")
        for name in (
            "latent_size",
            "text_tokens",
            "text_dim",
            "svd_hidden",
            "svd_head_hidden",
            "svd_heads",
            "backbone_size",
        ):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.matrix_size % self.svd_heads:
            raise ValueError(f"svd_heads ({self.svd_heads}) must divide the SVD matrix size ({self.matrix_size})")

    @property
    def tile(self) -> int:
        return math.isqrt(self.latent_channels)

    @property
    def matrix_size(self) -> int:
        """Side of the square matrix the latent is tiled into (SDXL: 2 × 128 = 256)."""
        return self.tile * self.latent_size

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> NPNetConfig:
        data = json.loads(text)
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown NPNet config fields {unknown}; this file was written by a newer noisesearch?")
        kwargs = data.get("backbone_kwargs", {})
        # JSON has no tuples; timm takes lists for depths/heads just as well
        return cls(**{**data, "backbone_kwargs": dict(kwargs)})


#: Official checkpoints (Zhou et al.): SDXL and DreamShaper-XL share the SDXL layout; ``dit`` is
#: Hunyuan-DiT (its first text encoder, 1024 wide). ``toyworld`` is the small embedded-world NPNet.
PRESETS: dict[str, NPNetConfig] = {
    "sdxl": NPNetConfig(),
    "dreamshaper": NPNetConfig(),
    "dit": NPNetConfig(text_dim=1024),
    "toyworld": NPNetConfig(
        latent_size=8,
        text_tokens=16,
        text_dim=128,
        svd_hidden=64,
        svd_head_hidden=256,
        svd_heads=4,
        backbone_size=32,
        backbone_kwargs={
            "img_size": 32,
            "patch_size": 2,
            "window_size": 4,
            "embed_dim": 32,
            "depths": [2, 2],
            "num_heads": [2, 4],
            "num_classes": 0,
        },
    ),
}


def preset(name: str, **overrides: Any) -> NPNetConfig:
    """A named configuration (``sdxl``, ``dreamshaper``, ``dit``, ``toyworld``) with overrides."""
    if name not in PRESETS:
        raise ValueError(f"unknown NPNet preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return replace(PRESETS[name], **overrides)


class SVDBranch(nn.Module):
    """Predicts new singular values of the tiled noise matrix (the official ``SVDNoiseUnet``)."""

    def __init__(self, config: NPNetConfig) -> None:
        super().__init__()
        n, h = config.matrix_size, config.svd_hidden
        self.tile = config.tile
        self.mlp1 = nn.Sequential(nn.Linear(n, h), nn.ReLU(inplace=True), nn.Linear(h, n))  # on Uᵀ
        self.mlp2 = nn.Sequential(nn.Linear(n, h), nn.ReLU(inplace=True), nn.Linear(h, n))  # on Vᵀ (rows of Vh)
        self.mlp3 = nn.Sequential(nn.Linear(n, n))  # on the singular values
        self.attention = Attention(n, num_heads=config.svd_heads)
        self.mlp4 = nn.Sequential(
            nn.Linear(n, config.svd_head_hidden), nn.ReLU(inplace=True), nn.Linear(config.svd_head_hidden, n)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, hgt, wid = x.shape
        t = self.tile
        # [B, (a c), H, W] -> [B, (a H), (c W)]: channel (i, j) becomes tile row i, column j
        m = x.reshape(b, t, t, hgt, wid).permute(0, 1, 3, 2, 4).reshape(b, t * hgt, t * wid)
        u, s, vh = torch.linalg.svd(m)
        tokens = self.mlp1(u.transpose(1, 2)) + self.mlp2(vh) + self.mlp3(s).unsqueeze(1)
        new_s = self.mlp4(self.attention(tokens).mean(1)) + s
        out = u @ torch.diag_embed(new_s) @ vh
        return out.reshape(b, t, hgt, t, wid).permute(0, 1, 3, 2, 4).reshape(b, c, hgt, wid)


class ResidualBranch(nn.Module):
    """A vision backbone over the upsampled noise (the official ``NoiseTransformer``)."""

    def __init__(self, config: NPNetConfig) -> None:
        super().__init__()
        self.latent_size = config.latent_size
        self.backbone_size = config.backbone_size
        # pretrained=False: the official checkpoints hold the backbone's trained weights; never download
        self.swin = create_model(config.backbone, pretrained=False, **config.backbone_kwargs)
        rows = config.backbone_size // int(self.swin.feature_info[-1]["reduction"])
        self.upconv = nn.Conv2d(rows, config.latent_channels, 1)
        self.downconv = nn.Conv2d(config.latent_channels, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downconv(F.interpolate(x, [self.backbone_size, self.backbone_size]))
        feats = self.swin.forward_features(x)  # [B, h, w, C] (NHWC)
        # official formulation: resize the NHWC map as if h were channels, (w, C) -> latent size
        feats = F.interpolate(feats, [self.latent_size, self.latent_size])
        return self.upconv(feats)


class NPNet(nn.Module):
    """Golden noise from standard noise and a prompt embedding (Zhou et al. 2024, Eq. 6–8)."""

    def __init__(self, config: NPNetConfig = NPNetConfig()) -> None:
        super().__init__()
        self.config = config
        self.unet_svd = SVDBranch(config)
        self.unet_embedding = ResidualBranch(config)
        self.text_embedding = AdaGroupNorm(config.text_dim * config.text_tokens, config.latent_channels, 1, eps=1e-6)
        self.alpha = nn.Parameter(torch.zeros(1))
        self.beta = nn.Parameter(torch.zeros(1))
        self.eval()

    def check_inputs(self, noise: torch.Tensor, text: torch.Tensor) -> None:
        cfg = self.config
        want = (cfg.latent_channels, cfg.latent_size, cfg.latent_size)
        if noise.ndim != 4 or tuple(noise.shape[1:]) != want:
            raise ValueError(f"NPNet expects noise of shape [B, {', '.join(map(str, want))}], got {tuple(noise.shape)}")
        if (
            text.ndim != 3
            or tuple(text.shape[1:]) != (cfg.text_tokens, cfg.text_dim)
            or text.shape[0] != noise.shape[0]
        ):
            raise ValueError(
                f"NPNet expects prompt embeddings of shape [{noise.shape[0]}, {cfg.text_tokens}, {cfg.text_dim}], "
                f"got {tuple(text.shape)}; was it trained for another model?"
            )

    def forward(self, noise: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """``noise`` [B, C, H, W] standard normal, ``text`` [B, tokens, dim] each sample's own prompt."""
        self.check_inputs(noise, text)
        noise = noise.float()
        e = self.text_embedding(noise, text.float().flatten(1))
        return (
            self.unet_svd(noise) + (2 * torch.sigmoid(self.alpha) - 1) * e + self.beta * self.unet_embedding(noise + e)
        )

    @torch.no_grad()
    def golden_noise(self, noise: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Deterministic inference: eval mode, no graph, float32 out on ``noise``'s device."""
        was_training = self.training
        self.eval()
        try:
            return self(noise.to(self.alpha.device), text.to(self.alpha.device)).to(noise.device)
        finally:
            self.train(was_training)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
