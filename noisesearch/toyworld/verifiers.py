"""The embedded world's verifiers, ``toyclip``, ``toyrelation`` and ``toydetect``, from shipped weights.

- ``toyclip``: CLIPScore (2.5·max(cos, 0), in [0, 2.5]) with a small CLIP trained on toyworld;
  the same :class:`~noisesearch.verifiers.clip.CLIPScoreVerifier` code path as real CLIP models.
- ``toyrelation``: the match logit (log-odds that the caption describes the image, unbounded,
  0 = undecided) of a grid-token / cross-attention matcher that sees positions and counts.
- ``toydetect``: log-probability (≤ 0) that the image shows exactly what the prompt says, from a
  learned detector, GenEval-style (below); toyworld grammar prompts only.

All three are differentiable with respect to the images. Their networks live in
:mod:`noisesearch.toyworld.networks`, their training in :mod:`noisesearch.toyworld.training.verifiers`.


Detector-based verifiers (GenEval, Ghosh et al. 2023; T2I-CompBench's UniDet scorer, Huang et al.
2023) find the objects first and then check the prompt against them. Contrastive verifiers must
bind a colour to a shape inside one embedding, which is where toyclip and toyrelation fail on
(colour, shape) pairs never seen in training. Here binding is done by counting instead, so any
pair of a known colour and a known shape can be scored:

1. **Detector** (:class:`~noisesearch.toyworld.networks.ToyDetectNet`), on a 16×16 grid over the 32×32 image, CenterNet style
   (Zhou et al. 2019, "Objects as Points"):

   * a *shape branch* (a small U-Net) predicts an object-centre heatmap, a sub-cell offset of the
     centre and the shape class of each cell; in training it sees the image under a random colour
     transform that fixes the background, so shape and objectness never depend on colour;
   * a *colour branch* with a 4-pixel receptive field predicts each cell's colour class (or
     background); it is too local to see shape.

   The two factors are trained on separate evidence and multiplied only at scoring time, which is
   what lets a held-out pair such as "red square" be recognised from red circles and blue squares.
2. **Detections**: the ``max_objects`` highest local maxima of the heatmap (3×3 max-pool, as
   CenterNet), each with a probability ``p`` of being an object, a colour distribution (the cell
   colours around the peak, weighted by how much they look like an object, background removed), a
   shape distribution and a position.
3. **Score** (:func:`satisfaction_log_prob`): the log-probability that the image shows exactly what
   the prompt says, treating detections as independent: each is absent (``1 - p``), an instance of
   a mentioned (colour, shape) (``p·P(colour)·P(shape)``), or something else. Counts are exact
   (a dynamic programme over the detections; anything else present makes the scene wrong, as in the
   grammar), and a spatial relation holds with probability ``σ((Δ - margin) / τ)`` on the two
   objects' centres, summed over all assignments of detections to the two objects.

Trained by :mod:`noisesearch.toyworld.training.verifiers` (``--only toydetect``) on rendered training
scenes with labels from the scene description (where each object is, its colour and shape); it
shares no code or weights with the pixel evaluator.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from noisesearch.toyworld import grammar
from noisesearch.toyworld.assets import VERIFIER_WEIGHTS_DIR
from noisesearch.toyworld.grammar import PromptSpec
from noisesearch.toyworld.networks import COLOR_NAMES, SHAPE_NAMES, ToyDetectConfig, ToyDetectNet, load_verifier_file
from noisesearch.verifiers.base import register_verifier
from noisesearch.verifiers.clip import CLIPScoreVerifier
from noisesearch.verifiers.transforms import check_images

# --- toydetect: detections and the symbolic score ---------------------------------------------


@dataclass
class Detections:
    """``K`` candidate objects per image: ``p`` [N, K] probability that it is an object, ``color``
    [N, K, 6] and ``shape`` [N, K, 3] class probabilities, ``xy`` [N, K, 2] centre in image fractions."""

    p: torch.Tensor
    color: torch.Tensor
    shape: torch.Tensor
    xy: torch.Tensor

    def select(self, rows: torch.Tensor) -> Detections:
        """The detections of images ``rows`` (an index tensor)."""
        return Detections(self.p[rows], self.color[rows], self.shape[rows], self.xy[rows])

    @staticmethod
    def cat(parts: Sequence[Detections]) -> Detections:
        """Detections of several image batches, concatenated."""
        return Detections(*(torch.cat([getattr(d, f) for d in parts]) for f in ("p", "color", "shape", "xy")))

    def objects(self, index: int, threshold: float = 0.5) -> list[tuple[str, str, float, float, float]]:
        """Readable detections of image ``index``: (colour, shape, x, y, p) with ``p >= threshold``."""
        out = []
        for k in range(self.p.shape[1]):
            p = float(self.p[index, k])
            if p >= threshold:
                c = COLOR_NAMES[int(self.color[index, k].argmax())]
                s = SHAPE_NAMES[int(self.shape[index, k].argmax())]
                x, y = (float(v) for v in self.xy[index, k])
                out.append((c, s, x, y, p))
        return out


def decode(maps: dict[str, torch.Tensor], max_objects: int) -> Detections:
    """Heatmap peaks (3×3 local maxima, CenterNet) -> the ``max_objects`` strongest detections."""
    heat = torch.sigmoid(maps["heatmap"])  # [N, 1, g, g]
    n, _, g, _ = heat.shape
    peaks = heat * (F.max_pool2d(heat, 3, stride=1, padding=1) == heat).to(heat.dtype)
    k = min(max_objects, g * g)
    index = peaks.flatten(1).topk(k, dim=1).indices  # [N, K]
    gather = lambda m: m.flatten(2).gather(2, index[:, None, :].expand(-1, m.shape[1], -1)).transpose(1, 2)  # noqa: E731
    p = gather(peaks)[..., 0]  # a cell that is not a local maximum (picked only if peaks run out) is no object
    # colour: cells around the peak, weighted by how little they look like background
    color = torch.softmax(maps["color"], dim=1)  # [N, 7, g, g]
    fg = 1 - color[:, :1]
    pooled = F.avg_pool2d(color[:, 1:] * fg, 3, stride=1, padding=1)  # [N, 6, g, g]
    color_k = gather(pooled)
    color_k = color_k / color_k.sum(-1, keepdim=True).clamp_min(1e-8)
    shape_k = gather(torch.softmax(maps["shape"], dim=1))
    cells = torch.stack([index % g, index // g], dim=-1).to(heat.dtype)  # (col, row)
    xy = (cells + 0.5 + gather(maps["offset"])) / g
    return Detections(p, color_k, shape_k, xy)


def _relation_value(relation: str, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """How far ``a <relation> b`` holds (positive when it does), for centres [..., 2]: the grammar's
    rule (:data:`grammar.RELATION_AXES`) on tensors."""
    axis, sign = grammar.RELATION_AXES[relation]
    return sign * (b[..., axis] - a[..., axis])


def satisfaction_log_prob(det: Detections, spec: PromptSpec, cfg: ToyDetectConfig) -> torch.Tensor:
    """log P(the image shows exactly ``spec``) [N] for detections of N images (see module docstring)."""
    types = [(COLOR_NAMES.index(o.color), SHAPE_NAMES.index(o.shape), o.count) for o in spec.objects]
    # is_t[n, k, t]: detection k is an instance of mentioned type t
    is_t = torch.stack([det.p * det.color[..., c] * det.shape[..., s] for c, s, _ in types], dim=-1)
    absent = 1 - det.p  # [N, K]
    if spec.category == "spatial":
        assert spec.relation is not None
        a, b = is_t[..., 0], is_t[..., 1]  # [N, K]
        K = a.shape[1]
        rel = torch.sigmoid(
            (_relation_value(spec.relation, det.xy[:, :, None], det.xy[:, None, :]) - cfg.relation_margin)
            / cfg.relation_temperature
        )  # [N, i, j]: i is A, j is B
        eye = torch.eye(K, dtype=torch.bool, device=a.device)
        # every other detection absent: prod over k of absent_k, with k = i and k = j left out
        others = torch.where(
            (eye[:, None, :] | eye[None, :, :])[None],
            torch.ones_like(absent)[:, None, None, :],
            absent[:, None, None, :],
        ).prod(-1)  # [N, i, j]
        pair = a[:, :, None] * b[:, None, :] * rel * others
        prob = pair.masked_fill(eye[None], 0.0).sum((1, 2))
    else:
        counts = [n for _, _, n in types]
        shape = [len(det.p)] + [n + 1 for n in counts]
        dp = torch.zeros(shape, dtype=det.p.dtype, device=det.p.device)
        dp[tuple([slice(None)] + [0] * len(counts))] = 1.0
        for k in range(det.p.shape[1]):
            new = dp * absent[:, k].view(-1, *[1] * len(counts))
            for t in range(len(counts)):  # detection k is one more instance of type t
                shifted = torch.zeros_like(dp)
                src = [slice(None)] * (1 + len(counts))
                dst = [slice(None)] * (1 + len(counts))
                src[1 + t], dst[1 + t] = slice(0, -1), slice(1, None)
                shifted[tuple(dst)] = dp[tuple(src)]
                new = new + shifted * is_t[:, k, t].view(-1, *[1] * len(counts))
            dp = new
        exact: tuple[Any, ...] = (slice(None), *counts)  # every image, exactly counts[t] of each type
        prob = dp[exact]
    return torch.log(prob.clamp_min(cfg.floor))


class ToyDetectVerifier:
    """Verifier: log-probability (≤ 0) that the image satisfies the prompt, from :class:`ToyDetectNet`.

    Only prompts of the toyworld grammar can be scored (``noisesearch toyworld prompts`` lists
    examples); others raise a ``ValueError`` naming the word that did not parse.
    """

    differentiable = True

    def __init__(self, model: ToyDetectNet, name: str = "toydetect") -> None:
        self.model = model
        self.cfg = model.cfg
        self.name = name

    def check_prompt(self, prompt: str) -> None:
        """Raises ``ValueError`` unless ``prompt`` parses in the toyworld grammar."""
        self._spec(prompt)

    @staticmethod
    def _spec(prompt: str) -> PromptSpec:
        try:
            return grammar.parse(prompt)
        except ValueError as err:
            raise ValueError(f"toydetect scores toyworld prompts only: {err}") from None

    def detect(self, images: torch.Tensor) -> Detections:
        param = next(self.model.parameters())
        return decode(self.model(images.to(device=param.device, dtype=param.dtype)), self.cfg.max_objects)

    def score(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        """images [B, 3, H, W] in [0, 1], B prompts -> log-probabilities [B]."""
        prompts = list(prompts)
        check_images(images, prompts)
        specs = {text: self._spec(text) for text in dict.fromkeys(prompts)}
        det = self.detect(images)
        out = torch.empty(len(prompts), dtype=torch.float32, device=det.p.device)
        for text, spec in specs.items():  # one batched pass per distinct prompt
            rows = torch.tensor([i for i, t in enumerate(prompts) if t == text], device=det.p.device)
            out = out.index_put((rows,), satisfaction_log_prob(det.select(rows), spec, self.cfg).float())
        return out


# --- loading and registration ---------------------------------------------------------------------


class ToyRelationVerifier:
    """Scores with :class:`~noisesearch.toyworld.networks.ToyRelationNet`: the match logit."""

    differentiable = True

    def __init__(self, model: Any, tokenizer: Any, name: str = "toyrelation") -> None:
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


def toy_verifier_from_model(kind: str, model: Any, tokenizer: Any = None) -> Any:
    """Wraps a trained toy model into its verifier (shared by the loader and the training script)."""
    if kind == "toyclip":
        from open_clip import get_model_preprocess_cfg

        pp = get_model_preprocess_cfg(model)
        return CLIPScoreVerifier(model, tokenizer, pp["size"], pp["mean"], pp["std"], w=2.5, name="toyclip")
    if kind == "toyrelation":
        return ToyRelationVerifier(model, tokenizer)
    if kind == "toydetect":
        return ToyDetectVerifier(model)
    raise ValueError(f"unknown toy verifier {kind!r}; use 'toyclip', 'toyrelation' or 'toydetect'")


def load_toy_verifier(kind: str, device: str | torch.device = "cpu", path: str | Path | None = None):
    """Loads shipped (or ``path``) safetensors weights, in eval mode on ``device``."""
    model, _, tokenizer = load_verifier_file(path or VERIFIER_WEIGHTS_DIR / f"{kind}.safetensors", kind, device)
    return toy_verifier_from_model(kind, model, tokenizer)


@register_verifier("toyclip", "toyworld: CLIPScore with a small CLIP trained on toyworld (weak on relations)")
def toyclip_factory(device: str | torch.device = "cpu", path: str | None = None) -> CLIPScoreVerifier:
    """Option ``path``: another weights file written by ``train_verifiers``."""
    return load_toy_verifier("toyclip", device, path)


@register_verifier("toyrelation", "toyworld: match logit of a grid-token cross-attention matcher (relations, counts)")
def toyrelation_factory(device: str | torch.device = "cpu", path: str | None = None) -> ToyRelationVerifier:
    """Option ``path``: another weights file written by ``train_verifiers``."""
    return load_toy_verifier("toyrelation", device, path)


@register_verifier(
    "toydetect", "toyworld: log P(prompt holds) from a learned object detector (GenEval-style; grammar prompts only)"
)
def toydetect_factory(device: str | torch.device = "cpu", path: str | None = None):
    """Option ``path``: another weights file written by ``train_verifiers``."""
    return load_toy_verifier("toydetect", device, path)
