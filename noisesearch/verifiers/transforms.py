"""Batched, differentiable versions of the verifiers' reference image transforms.

The reference implementations convert each image to PIL and run torchvision transforms one image
at a time. These functions do the same geometry on a ``[B, 3, H, W]`` float tensor in [0, 1], so a
whole batch is preprocessed at once and gradients reach the pixels. Bicubic resizing is
antialiased (as PIL's) and clipped to [0, 1] (PIL works in 8 bits and cannot overshoot).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

#: OpenAI CLIP's normalisation, used by every verifier here
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def check_images(images: torch.Tensor, prompts: Sequence[str]) -> None:
    """Raises ``ValueError`` unless ``images`` is [B, 3, H, W] with one prompt per image."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images of shape [B, 3, H, W] in [0, 1], got {tuple(images.shape)}")
    if len(prompts) != images.shape[0]:
        raise ValueError(f"got {images.shape[0]} images but {len(prompts)} prompts; pass one prompt per image")


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == size:
        return x
    x = F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True)
    return x.clamp(0.0, 1.0)


def resize_center_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    """torchvision ``Resize(size, BICUBIC)`` then ``CenterCrop(size)``: the shorter side becomes
    ``size`` (the longer one ``int(size · long / short)``), then the centre square is kept."""
    h, w = images.shape[-2:]
    if h <= w:
        nh, nw = size, int(size * w / h)
    else:
        nh, nw = int(size * h / w), size
    x = _resize(images, (nh, nw))
    top, left = int(round((nh - size) / 2.0)), int(round((nw - size) / 2.0))
    return x[..., top : top + size, left : left + size]


def resize_longest_pad(images: torch.Tensor, size: int, fill: float = 0.0) -> torch.Tensor:
    """HPSv2's ``ResizeMaxSize``: the longer side becomes ``size`` (the shorter one
    ``round(side · size / long)``), then the short side is padded evenly with ``fill`` to a square."""
    h, w = images.shape[-2:]
    scale = size / max(h, w)
    nh, nw = round(h * scale), round(w * scale)
    x = _resize(images, (nh, nw))
    ph, pw = size - nh, size - nw
    if ph or pw:
        x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), value=fill)
    return x


def normalize(images: torch.Tensor, mean: Sequence[float] = CLIP_MEAN, std: Sequence[float] = CLIP_STD) -> torch.Tensor:
    """(x - mean) / std per channel."""
    m = torch.tensor(mean, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    return (images - m) / s
