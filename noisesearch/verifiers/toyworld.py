"""The learned toyworld verifiers, ``toyclip``, ``toyrelation`` and ``toydetect``, loaded from shipped weights.

- ``toyclip``: CLIPScore (2.5·max(cos, 0), in [0, 2.5]) with a small CLIP trained on toyworld;
  the same :class:`~noisesearch.verifiers.clip.CLIPScoreVerifier` code path as real CLIP models.
- ``toyrelation``: the match logit (log-odds that the caption describes the image, unbounded,
  0 = undecided) of a grid-token / cross-attention matcher that sees positions and counts.
- ``toydetect``: log-probability (≤ 0) that the image shows exactly what the prompt says, from a
  learned CenterNet-style detector whose colour and shape are predicted by separate branches and
  composed symbolically (:mod:`noisesearch.toyworld.detector`); toyworld grammar prompts only.

Both are differentiable with respect to the images. Models and training live in
:mod:`noisesearch.toyworld.verifier_models` and :mod:`noisesearch.toyworld.train_verifiers`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from noisesearch.verifiers.base import register_verifier
from noisesearch.verifiers.clip import CLIPScoreVerifier
from noisesearch.verifiers.transforms import check_images


class ToyRelationVerifier:
    """Scores with :class:`~noisesearch.toyworld.verifier_models.ToyRelationNet`: the match logit."""

    differentiable = True

    def __init__(self, model: torch.nn.Module, tokenizer, name: str = "toyrelation") -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.name = name

    def score(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        """images [B, 3, H, W] in [0, 1] (resized to 32×32 if needed), B prompts -> logits [B]."""
        prompts = list(prompts)
        check_images(images, prompts)
        param = next(self.model.parameters())
        tokens = self.tokenizer(prompts).to(param.device)
        return self.model(images.to(device=param.device, dtype=param.dtype), tokens).float()


def toy_verifier_from_model(kind: str, model: torch.nn.Module, tokenizer=None):
    """Wraps a trained toy model into its verifier (shared by the loader and the training script)."""
    if kind == "toyclip":
        from open_clip import get_model_preprocess_cfg

        pp = get_model_preprocess_cfg(model)
        return CLIPScoreVerifier(model, tokenizer, pp["size"], pp["mean"], pp["std"], w=2.5, name="toyclip")
    if kind == "toyrelation":
        return ToyRelationVerifier(model, tokenizer)
    if kind == "toydetect":
        from noisesearch.toyworld.detector import ToyDetectVerifier

        return ToyDetectVerifier(model)
    raise ValueError(f"unknown toy verifier {kind!r}; use 'toyclip', 'toyrelation' or 'toydetect'")


def load_toy_verifier(kind: str, device: str | torch.device = "cpu", path: str | Path | None = None):
    """Loads shipped (or ``path``) safetensors weights, in eval mode on ``device``."""
    from noisesearch.toyworld.verifier_models import WEIGHTS_DIR, load_verifier_file

    model, _, tokenizer = load_verifier_file(path or WEIGHTS_DIR / f"{kind}.safetensors", kind, device)
    return toy_verifier_from_model(kind, model, tokenizer)


@register_verifier("toyclip", "toyworld: CLIPScore with a small CLIP trained on toyworld (weak on relations)")
def toyclip_factory(device: str | torch.device = "cpu", path: str | None = None) -> CLIPScoreVerifier:
    """Option ``path``: another weights file written by ``train_verifiers``."""
    return load_toy_verifier("toyclip", device, path)


@register_verifier("toyrelation", "toyworld: match logit of a grid-token cross-attention matcher (relations, counts)")
def toyrelation_factory(device: str | torch.device = "cpu", path: str | None = None) -> ToyRelationVerifier:
    """Option ``path``: another weights file written by ``train_verifiers``."""
    return load_toy_verifier("toyrelation", device, path)


@register_verifier("toydetect", "toyworld: log P(prompt holds) from a learned object detector (GenEval-style; grammar prompts only)")
def toydetect_factory(device: str | torch.device = "cpu", path: str | None = None):
    """Option ``path``: another weights file written by ``train_verifiers``."""
    return load_toy_verifier("toydetect", device, path)
