"""The verifiers' reference image transforms, in two modes.

* ``"float"`` (default): the reference geometry on a ``[B, 3, H, W]`` float tensor in [0, 1], so a
  whole batch is preprocessed at once and gradients reach the pixels (gradient search needs it).
  Bicubic resizing is antialiased (as PIL's) and, where the reference resizes PIL images, clipped to
  [0, 1] (PIL works in 8 bits and cannot overshoot). It differs from the reference by the 8-bit
  rounding of PIL's two-pass resampler (measured per verifier in the README's verifier table).
* ``"official"``: the reference itself, for reproducing published numbers from image files: the
  images are rounded to 8 bits, resized by Pillow one image at a time exactly as the reference
  transform does, then cropped and converted as it does. Not differentiable. For images that were
  8-bit files, the result equals the reference transform's bit for bit.

Geometry shared by both: torchvision's ``Resize(size)`` (openai CLIP, open_clip, BLIP/ImageReward)
and transformers' ``CLIPImageProcessor`` (PickScore) size the longer side with
``int(size · long / short)``; torchvision's ``CenterCrop`` offsets by ``int(round(excess / 2))``,
transformers' by ``excess // 2``; HPSv2's ``ResizeMaxSize`` sizes the shorter side with ``round``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
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


#: preprocessing modes every image verifier takes (its ``preprocess`` option)
PREPROCESS_MODES = ("float", "official")


def check_preprocess(mode: str) -> str:
    """Returns ``mode`` if it is a preprocessing mode, else raises ``ValueError`` saying which exist."""
    if mode not in PREPROCESS_MODES:
        raise ValueError(
            f"unknown preprocess mode {mode!r}; choose 'float' (batched, differentiable, the default) or "
            "'official' (the reference's 8-bit Pillow resize, to reproduce published numbers; not differentiable)"
        )
    return mode


def _resize(x: torch.Tensor, size: tuple[int, int], clip: bool = True) -> torch.Tensor:
    if tuple(x.shape[-2:]) == size:
        return x
    x = F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True)
    return x.clamp(0.0, 1.0) if clip else x


def shortest_side_size(h: int, w: int, size: int) -> tuple[int, int]:
    """torchvision ``Resize(size)``'s output (height, width): the shorter side becomes ``size``, the
    longer one ``int(size · long / short)`` (truncated, not rounded)."""
    return (size, int(size * w / h)) if h <= w else (int(size * h / w), size)


def crop_offsets(h: int, w: int, size: int, rounding: str = "torchvision") -> tuple[int, int]:
    """(top, left) of a centred ``size`` square: torchvision's ``CenterCrop`` rounds half the excess
    (``int(round(excess / 2))``), transformers' ``center_crop`` floors it (``excess // 2``)."""
    if rounding == "transformers":
        return (h - size) // 2, (w - size) // 2
    return int(round((h - size) / 2.0)), int(round((w - size) / 2.0))


def resize_center_crop(images: torch.Tensor, size: int, crop: str = "torchvision") -> torch.Tensor:
    """torchvision ``Resize(size, BICUBIC)`` then ``CenterCrop(size)`` on a float batch: the shorter
    side becomes ``size`` (see :func:`shortest_side_size`), then the centre square is kept."""
    h, w = images.shape[-2:]
    nh, nw = shortest_side_size(h, w, size)
    x = _resize(images, (nh, nw))
    top, left = crop_offsets(nh, nw, size, crop)
    return x[..., top : top + size, left : left + size]


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] in [0, 1] -> uint8, rounded as noisesearch saves images (exact for 8-bit files)."""
    return (images.detach().float().clamp(0.0, 1.0) * 255).round().to(torch.uint8)


def pil_resize_center_crop(images: torch.Tensor, size: int, crop: str = "torchvision") -> torch.Tensor:
    """The reference transform on PIL images, batched only in its output: each image is rounded to
    8 bits, resized by Pillow's bicubic resampler (the shorter side to ``size``, as
    :func:`shortest_side_size`), centre-cropped (``crop``: see :func:`crop_offsets`), and returned as
    float in [0, 1] (``ToTensor``), [B, 3, size, size] on the input's device."""
    from PIL import Image

    out = []
    for img in to_uint8(images).cpu():
        pil = Image.fromarray(img.permute(1, 2, 0).numpy())
        h, w = img.shape[-2:]
        nh, nw = shortest_side_size(h, w, size)
        if (nh, nw) != (h, w):
            pil = pil.resize((nw, nh), Image.Resampling.BICUBIC)
        arr = torch.from_numpy(np.asarray(pil).copy()).permute(2, 0, 1)
        top, left = crop_offsets(nh, nw, size, crop)
        out.append(arr[:, top : top + size, left : left + size])
    return (torch.stack(out).float() / 255).to(images.device)


def resize_longest_pad(images: torch.Tensor, size: int, fill: float = 0.0, official: bool = False) -> torch.Tensor:
    """HPSv2's ``ResizeMaxSize``: the longer side becomes ``size`` (the shorter one
    ``round(side · size / long)``), then the short side is padded evenly with ``fill`` to a square.

    The reference applies it after ``ToTensor``, i.e. to a float tensor, and does not clip the
    bicubic overshoot; neither does this. ``official=True`` first rounds the images to 8 bits, as
    the reference reads them from image files (then the result equals the reference's exactly, with
    torchvision ≥ 0.17, whose tensor resize antialiases by default). Unlike the reference, an image
    whose longer side is already ``size`` is still padded to a square."""
    if official:
        images = to_uint8(images).to(images.device).float() / 255
    h, w = images.shape[-2:]
    scale = size / max(h, w)
    nh, nw = round(h * scale), round(w * scale)
    x = _resize(images, (nh, nw), clip=False)
    ph, pw = size - nh, size - nw
    if ph or pw:
        x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), value=fill)
    return x


def normalize(images: torch.Tensor, mean: Sequence[float] = CLIP_MEAN, std: Sequence[float] = CLIP_STD) -> torch.Tensor:
    """(x - mean) / std per channel."""
    m = torch.tensor(mean, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    return (images - m) / s
