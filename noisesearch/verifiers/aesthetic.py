"""LAION aesthetic predictor v2 (Schuhmann 2022, github.com/christophschuhmann/improved-aesthetic-predictor;
used as the aesthetic reward of e.g. DDPO, Black et al. 2023).

A linear MLP on the normalised OpenAI CLIP ViT-L/14 image embedding, regressed on aesthetic ratings
(SAC + LAION-Logos + AVA, "linearMSE"):

    Aesthetic(x) = MLP( E_img(x) / |E_img(x)| )       MLP: 768 -> 1024 -> 128 -> 64 -> 16 -> 1

The prompt is not used. The head is ``sac+logos+ava1-l14-linearMSE.pth`` (a state dict with keys
``layers.{0,2,4,6,7}.{weight,bias}``; TRL republishes it as ``aesthetic-model.pth``); the CLIP tower
is open_clip's ``ViT-L-14``/``openai`` with the reference ``clip.load`` transform (bicubic resize of
the shorter side, centre crop 224, CLIP normalisation), batched and differentiable
(``preprocess="official"``: the reference's 8-bit Pillow resize). OpenAI's CLIP uses QuickGELU;
open_clip switches it on for the ``openai`` tag only, so a CLIP *file* is built with it here.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn as nn

from noisesearch.io.checkpoints import find_file, load_strict, load_weights, parse_dtype, resolve_file
from noisesearch.io.paths import user_path
from noisesearch.verifiers.base import register_verifier
from noisesearch.verifiers.catalog import AESTHETIC, AESTHETIC_TRL
from noisesearch.verifiers.clip import CLIPScoreVerifier, validate_preprocess
from noisesearch.verifiers.transforms import check_images, check_preprocess


class PreferenceMLP(nn.Module):
    """The predictor's ``MLP``: linear layers with dropout and no activations. ImageReward's
    reward head is the same module on BLIP features."""

    def __init__(self, input_size: int = 768) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(input_size, 1024),
            nn.Dropout(0.2),
            nn.Linear(1024, 128),
            nn.Dropout(0.2),
            nn.Linear(128, 64),
            nn.Dropout(0.1),
            nn.Linear(64, 16),
            nn.Linear(16, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class AestheticVerifier:
    """Aesthetic score of each image (prompts ignored); differentiable with respect to the images
    unless its CLIP preprocesses the reference's way (``preprocess="official"``)."""

    def __init__(self, clip: CLIPScoreVerifier, head: PreferenceMLP, name: str = "aesthetic") -> None:
        self.clip = clip
        self.head = head
        self.name = name

    @property
    def differentiable(self) -> bool:
        return self.clip.differentiable

    def score(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        """images [B, 3, H, W] in [0, 1], B prompts (unused) -> predicted rating [B] (1-10 scale)."""
        check_images(images, list(prompts))
        emb = self.clip.encode_images(images)  # [B, 768], unit norm
        param = next(self.head.parameters())
        return self.head(emb.to(device=param.device, dtype=param.dtype)).squeeze(-1).float()


def _head_file(path: str | os.PathLike | None, cache_dir: str | os.PathLike | None) -> Path:
    """The head checkpoint: ``path`` (file, or folder with either file name), else found offline."""
    if path is not None and user_path(path).is_dir():
        folder = user_path(path)
        for spec in (AESTHETIC, AESTHETIC_TRL):
            if (folder / spec.filename).is_file():
                return folder / spec.filename
    if path is not None or os.environ.get(AESTHETIC.env_var):
        return resolve_file(AESTHETIC, path, cache_dir)
    found = find_file(AESTHETIC, cache_dir) or find_file(AESTHETIC_TRL, cache_dir)
    if found is not None:
        return found
    try:
        resolve_file(AESTHETIC, None, cache_dir)
    except FileNotFoundError as err:
        raise FileNotFoundError(
            f"{err} The same head is also published as {AESTHETIC_TRL.filename} in hub repo "
            f"{AESTHETIC_TRL.hub_ids[0]!r} ({AESTHETIC_TRL.fetch_hint()}), which is used when cached."
        ) from None
    raise AssertionError("unreachable")  # pragma: no cover


def load_aesthetic(
    path: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    *,
    clip_model: str = "ViT-L-14",
    clip_pretrained: str | os.PathLike | None = "openai",
    cache_dir: str | os.PathLike | None = None,
    dtype: str | torch.dtype = "float32",
    preprocess: str = "float",
) -> AestheticVerifier:
    """Builds the predictor offline: the MLP head from ``path`` (or found as the module docstring
    says) and the CLIP image tower through :meth:`CLIPScoreVerifier.from_open_clip`
    (``clip_pretrained``: an open_clip tag resolved in the HF cache, or a local file of OpenAI's
    weights, built with QuickGELU as OpenAI's CLIP is). ``preprocess``: "float" or "official"."""
    import open_clip

    check_preprocess(preprocess)
    file = _head_file(path, cache_dir)
    sd = load_weights(file)
    first = sd.get("layers.0.weight") if isinstance(sd, dict) else None
    if first is None:
        raise ValueError(f"{str(file)!r} is not an aesthetic-predictor head: it has no 'layers.0.weight' entry")
    head = PreferenceMLP(first.shape[1])
    load_strict(head, sd, file)
    is_tag = isinstance(clip_pretrained, str) and bool(open_clip.get_pretrained_cfg(clip_model, clip_pretrained))
    clip = CLIPScoreVerifier.from_open_clip(
        clip_model,
        clip_pretrained,
        device,
        cache_dir=cache_dir,
        name="aesthetic-clip",
        # a tag says itself whether it needs QuickGELU; a file is OpenAI's CLIP, which does
        quick_gelu=None if is_tag or clip_pretrained is None else True,
        preprocess=preprocess,
    )
    embed = getattr(clip.model.visual, "output_dim", first.shape[1])
    if embed != first.shape[1]:
        raise ValueError(
            f"the head in {str(file)!r} takes {first.shape[1]}-d embeddings but open_clip {clip_model} gives "
            f"{embed}-d ones; the official head is for ViT-L-14 (option clip_model=)"
        )
    torch_dtype = parse_dtype(dtype)
    clip.model.to(dtype=torch_dtype)
    head = head.to(device=device, dtype=torch_dtype).eval().requires_grad_(False)
    return AestheticVerifier(clip, head)


@register_verifier(
    "aesthetic",
    "LAION aesthetic predictor v2 (Schuhmann 2022): MLP on CLIP ViT-L/14 embeddings",
    validate=validate_preprocess,
)
def aesthetic_factory(
    device: str | torch.device = "cpu",
    path: str | None = None,
    clip_model: str = "ViT-L-14",
    clip_pretrained: str | None = "openai",
    cache_dir: str | None = None,
    dtype: str = "float32",
    preprocess: str = "float",
) -> AestheticVerifier:
    """Options: ``path`` (head .pth or its folder), ``clip_model``, ``clip_pretrained`` (tag, or a file of
    OpenAI's weights), ``cache_dir`` (HF cache), ``dtype``, ``preprocess`` ("float" or "official")."""
    return load_aesthetic(
        path,
        device,
        clip_model=clip_model,
        clip_pretrained=clip_pretrained,
        cache_dir=cache_dir,
        dtype=dtype,
        preprocess=preprocess,
    )
