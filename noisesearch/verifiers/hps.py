"""HPSv2 and HPSv2.1 (Wu et al. 2023, "Human Preference Score v2: A Solid Benchmark for Evaluating
Human Preferences of Text-to-Image Synthesis", arXiv:2306.09341).

An open_clip ViT-H-14 fine-tuned on human preference pairs. The score is the cosine between the
normalised image and text embeddings, with no logit scale (papers usually quote it ×100):

    HPS(x, p) = < E_img(x) / |E_img(x)| , E_txt(p) / |E_txt(p)| >

As in the reference ``hpsv2.score``: the checkpoint is ``{"state_dict": ...}`` for the open_clip
model; images are resized so the *longer* side is 224 and padded with black to a square
(``ResizeMaxSize``), then normalised with CLIP's mean/std. The reference resizes the float tensor
that ``ToTensor`` made, so the bicubic overshoot is kept (not clipped), as here. Unlike the
reference, the checkpoint is read once, images are scored as one batch, and the score is
differentiable in the pixels; ``preprocess="official"`` first rounds the images to 8 bits, as the
reference reads them from image files.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence

import torch

from noisesearch.io.checkpoints import load_strict, load_weights, parse_dtype, resolve_file
from noisesearch.verifiers.base import register_verifier
from noisesearch.verifiers.catalog import HPSV2, HPSV21
from noisesearch.verifiers.clip import CLIPScoreVerifier, Tokenizer, quiet_random_init, validate_preprocess
from noisesearch.verifiers.transforms import (
    CLIP_MEAN,
    CLIP_STD,
    check_images,
    check_preprocess,
    normalize,
    resize_longest_pad,
)

VERSIONS = {"v2.0": HPSV2, "v2.1": HPSV21}


class HPSVerifier(CLIPScoreVerifier):
    """HPSv2 on an open_clip ``CLIP``: CLIPScore's encoders and prompt cache, HPS's transform and
    formula. Differentiable with respect to the images."""

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Tokenizer,
        image_size: int = 224,
        name: str = "hpsv2",
        preprocess_mode: str = "float",
    ) -> None:
        super().__init__(
            model, tokenizer, image_size, CLIP_MEAN, CLIP_STD, w=1.0, name=name, preprocess_mode=preprocess_mode
        )

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] in [0, 1] -> [B, 3, 224, 224]: longest side to 224 (overshoot kept), black
        padding, CLIP norm."""
        official = self.preprocess_mode == "official"
        return normalize(resize_longest_pad(images, self.image_size[0], official=official), CLIP_MEAN, CLIP_STD)

    def score(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        """images [B, 3, H, W] in [0, 1], B prompts -> HPS [B] (cosine, in [-1, 1])."""
        prompts = list(prompts)
        check_images(images, prompts)
        return (self.encode_images(images) * self.encode_texts(prompts)).sum(dim=-1)


def load_hps(
    version: str = "v2.1",
    path: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    *,
    model: str = "ViT-H-14",
    cache_dir: str | os.PathLike | None = None,
    dtype: str | torch.dtype = "float32",
    preprocess: str = "float",
) -> HPSVerifier:
    """Builds HPS ``version`` ("v2.0" or "v2.1") from its official checkpoint, offline.

    ``path`` is the checkpoint file or a folder holding it; without it the file is looked up as
    :mod:`noisesearch.io.checkpoints` describes. ``model`` is the open_clip architecture the
    weights are for; only tests change it (a tiny config written in the same layout). ``preprocess``:
    ``"float"`` (differentiable) or ``"official"`` (8-bit input, as the reference reads files).
    """
    import open_clip

    check_preprocess(preprocess)
    if version not in VERSIONS:
        raise ValueError(f"unknown HPS version {version!r}; choose one of: {', '.join(VERSIONS)}")
    if open_clip.get_model_config(model) is None:
        raise ValueError(f"unknown open_clip architecture {model!r}; HPSv2 uses ViT-H-14")
    ckpt = resolve_file(VERSIONS[version], path, cache_dir)
    # 1. the architecture, random weights (no download), then the whole state dict, strictly
    clip = build_architecture(model)
    obj = load_weights(ckpt)
    if not (isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict)):
        raise ValueError(
            f"{str(ckpt)!r} is not an HPSv2 checkpoint: expected a dict with a 'state_dict' entry "
            f"(the layout of {VERSIONS[version].filename} in hub repo xswu/HPSv2)"
        )
    load_strict(clip, obj["state_dict"], ckpt)
    clip = clip.to(device=device, dtype=parse_dtype(dtype)).eval().requires_grad_(False)
    size = open_clip.get_model_preprocess_cfg(clip)["size"]
    size = size if isinstance(size, int) else size[0]
    name = "hpsv2" if version == "v2.0" else "hpsv2.1"
    return HPSVerifier(clip, _tokenizer(model), size, name=name, preprocess_mode=preprocess)


def build_architecture(model: str = "ViT-H-14", device: str = "cpu") -> torch.nn.Module:
    """The open_clip model an HPS checkpoint's ``state_dict`` loads into, with random weights and no
    download (``device="meta"`` lists its keys and shapes without allocating them)."""
    import open_clip

    with quiet_random_init(), torch.device(device):
        return open_clip.create_model(
            model, pretrained=None, device=device, pretrained_image=False, pretrained_text=False
        )


@functools.lru_cache(maxsize=4)
def _tokenizer(model: str) -> Tokenizer:
    """open_clip's BPE tokenizer for ``model``; building it takes about a second, so it is shared."""
    import open_clip

    return open_clip.get_tokenizer(model)


@register_verifier(
    "hpsv2",
    "HPSv2 (Wu et al. 2023): preference-tuned ViT-H-14 cosine; xswu/HPSv2 HPS_v2_compressed.pt",
    validate=validate_preprocess,
)
def hpsv2_factory(
    device: str | torch.device = "cpu",
    path: str | None = None,
    model: str = "ViT-H-14",
    cache_dir: str | None = None,
    dtype: str = "float32",
    preprocess: str = "float",
) -> HPSVerifier:
    """Options: ``path`` (checkpoint file or folder), ``cache_dir`` (HF cache), ``dtype``, ``preprocess``."""
    return load_hps("v2.0", path, device, model=model, cache_dir=cache_dir, dtype=dtype, preprocess=preprocess)


@register_verifier(
    "hpsv2.1",
    "HPSv2.1 (Wu et al. 2023): HPSv2 retrained; xswu/HPSv2 HPS_v2.1_compressed.pt",
    validate=validate_preprocess,
)
def hpsv21_factory(
    device: str | torch.device = "cpu",
    path: str | None = None,
    model: str = "ViT-H-14",
    cache_dir: str | None = None,
    dtype: str = "float32",
    preprocess: str = "float",
) -> HPSVerifier:
    """Options: ``path`` (checkpoint file or folder), ``cache_dir`` (HF cache), ``dtype``, ``preprocess``."""
    return load_hps("v2.1", path, device, model=model, cache_dir=cache_dir, dtype=dtype, preprocess=preprocess)
