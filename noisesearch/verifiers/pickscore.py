"""PickScore (Kirstain et al. 2023, "Pick-a-Pic: An Open Dataset of User Preferences for
Text-to-Image Generation", arXiv:2305.01569).

A CLIP-H (``transformers.CLIPModel``, hub ``yuvalkirstain/PickScore_v1``) fine-tuned on user
preferences, with the processor of ``laion/CLIP-ViT-H-14-laion2B-s32B-b79K``. The score is the
CLIP logit:

    PickScore(x, p) = exp(logit_scale) · cos(E_img(x), E_txt(p))

Images: shorter side resized (bicubic) to 224 (the longer one ``int(224 · long / short)``),
centre-cropped with transformers' offsets (``excess // 2``), CLIP-normalised (``preprocess="official"``:
with the reference ``CLIPImageProcessor``'s 8-bit Pillow resize); prompts: CLIP BPE,
truncated to 77 tokens. The reference pads prompts to the longest in the batch; we pad to 77, which
changes nothing because the text tower is causal and pools the end-of-text token.
"""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from noisesearch.io.checkpoints import parse_dtype, resolve_folder, unreadable_error
from noisesearch.verifiers.base import register_verifier
from noisesearch.verifiers.catalog import PICKSCORE, PICKSCORE_PROCESSOR
from noisesearch.verifiers.clip import CLIPScoreVerifier, validate_preprocess
from noisesearch.verifiers.transforms import check_images, check_preprocess

#: position-index buffers that older transformers versions saved; not weights
_IGNORED_UNEXPECTED = ("text_model.embeddings.position_ids", "vision_model.embeddings.position_ids")


class CLIPTowers(nn.Module):
    """``encode_image`` / ``encode_text`` (projected, unnormalised) over a transformers ``CLIPModel``,
    the interface :class:`~noisesearch.verifiers.clip.CLIPScoreVerifier` expects."""

    def __init__(self, clip: Any) -> None:  # a transformers CLIPModel
        super().__init__()
        self.clip = clip

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.clip.visual_projection(self.clip.vision_model(pixel_values=pixels).pooler_output)

    def encode_text(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.clip.text_projection(self.clip.text_model(input_ids=input_ids).pooler_output)


class PickScoreVerifier(CLIPScoreVerifier):
    """PickScore: CLIPScore's preprocessing, encoders and prompt cache on a transformers CLIP, with
    the logit formula. Differentiable with respect to the images."""

    def score(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        """images [B, 3, H, W] in [0, 1], B prompts -> exp(logit_scale)·cos [B] (about 20 on real data)."""
        prompts = list(prompts)
        check_images(images, prompts)
        cos = (self.encode_images(images) * self.encode_texts(prompts)).sum(dim=-1)
        return self.model.clip.logit_scale.exp().float() * cos


def _processor_settings(folder: Path) -> tuple[int, list[float], list[float]]:
    """(image size, mean, std) from ``preprocessor_config.json``; rejects non-CLIP geometries."""
    cfg = json.loads((folder / "preprocessor_config.json").read_text())
    crop = cfg.get("crop_size", 224)
    crop = crop if isinstance(crop, int) else crop.get("height", crop.get("shortest_edge"))
    size = cfg.get("size", crop)
    size = size if isinstance(size, int) else size.get("shortest_edge", size.get("height"))
    if size != crop or not cfg.get("do_center_crop", True) or cfg.get("resample", 3) != 3:
        raise ValueError(
            f"{folder / 'preprocessor_config.json'}: expected CLIP's transform (bicubic resize of the shorter side "
            f"to the crop size, then centre crop), got size={size}, crop={crop}; pass the processor of "
            f"{PICKSCORE_PROCESSOR.hub_ids[0]}"
        )
    return int(crop), list(cfg["image_mean"]), list(cfg["image_std"])


def load_pickscore(
    path: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    *,
    processor: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    dtype: str | torch.dtype = "float32",
    preprocess: str = "float",
) -> PickScoreVerifier:
    """Builds PickScore offline: ``path`` is the ``yuvalkirstain/PickScore_v1`` folder and
    ``processor`` the ``laion/CLIP-ViT-H-14-laion2B-s32B-b79K`` one (tokenizer + image settings);
    by default both come from the HF cache. Every weight must come from the checkpoint.
    ``preprocess``: "float" (differentiable) or "official" (8-bit Pillow resize)."""
    from transformers import AutoTokenizer, CLIPModel

    check_preprocess(preprocess)
    model_dir = resolve_folder(PICKSCORE, path, cache_dir)
    proc_dir = resolve_folder(PICKSCORE_PROCESSOR, processor, cache_dir)
    try:
        clip, info = CLIPModel.from_pretrained(str(model_dir), local_files_only=True, output_loading_info=True)
    except pickle.UnpicklingError as err:  # a pytorch_model.bin with pickled code or objects: refused
        raise unreadable_error(model_dir, err) from err
    missing = list(info.get("missing_keys", []))
    unexpected = [k for k in info.get("unexpected_keys", []) if k not in _IGNORED_UNEXPECTED]
    mismatched = [str(m[0]) if isinstance(m, tuple) else str(m) for m in info.get("mismatched_keys", [])]
    if missing or unexpected or mismatched:
        raise ValueError(
            f"checkpoint {str(model_dir)!r} does not match its CLIPModel config: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}, mis-shaped {mismatched[:5]}; pass the {PICKSCORE.hub_ids[0]} folder"
        )
    clip = clip.to(device=device, dtype=parse_dtype(dtype)).eval().requires_grad_(False)
    hf_tok = AutoTokenizer.from_pretrained(str(proc_dir), local_files_only=True)

    def tokenizer(prompts: list[str]) -> torch.Tensor:
        max_length = min(77, clip.config.text_config.max_position_embeddings)
        return hf_tok(
            prompts, padding="max_length", truncation=True, max_length=max_length, return_tensors="pt"
        ).input_ids

    size, mean, std = _processor_settings(proc_dir)
    return PickScoreVerifier(
        CLIPTowers(clip),
        tokenizer,
        size,
        mean,
        std,
        w=1.0,
        name="pickscore",
        preprocess_mode=preprocess,
        crop="transformers",
    )


@register_verifier(
    "pickscore",
    "PickScore (Kirstain et al. 2023): CLIP-H preference logit; yuvalkirstain/PickScore_v1",
    validate=validate_preprocess,
)
def pickscore_factory(
    device: str | torch.device = "cpu",
    path: str | None = None,
    processor: str | None = None,
    cache_dir: str | None = None,
    dtype: str = "float32",
    preprocess: str = "float",
) -> PickScoreVerifier:
    """Options: ``path`` (PickScore_v1 folder), ``processor`` (laion CLIP-H folder), ``cache_dir``, ``dtype``,
    ``preprocess`` ("float" or "official")."""
    return load_pickscore(path, device, processor=processor, cache_dir=cache_dir, dtype=dtype, preprocess=preprocess)
