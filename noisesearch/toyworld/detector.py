"""``toydetect``: a learned object detector plus a symbolic scorer, GenEval-style.

Detector-based verifiers (GenEval, Ghosh et al. 2023; T2I-CompBench's UniDet scorer, Huang et al.
2023) find the objects first and then check the prompt against them. Contrastive verifiers must
bind a colour to a shape inside one embedding, which is where toyclip and toyrelation fail on
(colour, shape) pairs never seen in training. Here binding is done by counting instead, so any
pair of a known colour and a known shape can be scored:

1. **Detector** (:class:`ToyDetectNet`), on a 16×16 grid over the 32×32 image, CenterNet style
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

Trained by :mod:`noisesearch.toyworld.train_verifiers` (``--only toydetect``) on rendered training
scenes with labels from the scene description (where each object is, its colour and shape); it
shares no code or weights with the pixel evaluator.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from noisesearch.toyworld import grammar, scenes
from noisesearch.toyworld.grammar import PromptSpec
from noisesearch.toyworld.verifier_models import ToyImageInput
from noisesearch.verifiers.transforms import check_images

COLOR_NAMES: tuple[str, ...] = tuple(scenes.COLORS)  # colour class i + 1 (0 = background)
SHAPE_NAMES: tuple[str, ...] = tuple(scenes.SHAPES)  # shape class i


@dataclass(frozen=True)
class ToyDetectConfig:
    """Sizes of :class:`ToyDetectNet` and the scorer's constants."""

    image_size: int = 32  # input resolution (other sizes are resized)
    widths: tuple[int, int, int] = (32, 64, 128)  # shape branch at 32², 16², 8²
    color_width: int = 32  # colour branch channels
    max_objects: int = 8  # heatmap peaks kept as detections
    relation_margin: float = grammar.RELATION_MARGIN  # a relation holds beyond this centre offset
    relation_temperature: float = 0.02  # softness of the relation test (image fractions)
    floor: float = 1e-12  # the score is log(max(P, floor)): bounded below

    @property
    def grid(self) -> int:
        return self.image_size // 2


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.GroupNorm(8, cout), nn.GELU())


class ToyDetectNet(nn.Module):
    """Per-cell maps on the 16×16 grid: ``heatmap`` logits [N, 1, g, g], ``offset`` [N, 2, g, g]
    (centre within the cell, in cells, x then y), ``shape`` logits [N, 3, g, g] and ``color`` logits
    [N, 7, g, g] (class 0 = background)."""

    def __init__(self, cfg: ToyDetectConfig) -> None:
        super().__init__()
        self.cfg = cfg
        w1, w2, w3 = cfg.widths
        self.stem = _conv(3, w1)  # 32²
        self.down1 = nn.Sequential(_conv(w1, w2, 2), _conv(w2, w2))  # 16²
        self.down2 = nn.Sequential(_conv(w2, w3, 2), _conv(w3, w3), _conv(w3, w3))  # 8²
        self.fuse = nn.Sequential(_conv(w2 + w3, w2), _conv(w2, w2))  # 16²
        self.heads = nn.Conv2d(w2, 1 + 2 + len(SHAPE_NAMES), 1)
        c = cfg.color_width
        self.color = nn.Sequential(  # receptive field 4×4 pixels: colour, never shape
            nn.Conv2d(3, c, 1), nn.GELU(), nn.Conv2d(c, c, 2, stride=2), nn.GELU(),
            nn.Conv2d(c, c, 1), nn.GELU(), nn.Conv2d(c, 1 + len(COLOR_NAMES), 1),
        )
        with torch.no_grad():  # CenterNet's prior: few cells are centres
            self.heads.bias[0].fill_(-4.0)
        self.prepare = ToyImageInput(cfg.image_size)

    def forward(self, images: torch.Tensor, shape_images: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """``images`` [N, 3, H, W] in [0, 1]. ``shape_images`` (training) is what the shape branch
        sees instead, e.g. the same images under a colour transform."""
        x = self.prepare(images)
        x1 = self.down1(self.stem(x if shape_images is None else self.prepare(shape_images)))
        x2 = self.down2(x1)
        up = F.interpolate(x2, scale_factor=2, mode="nearest")
        h = self.heads(self.fuse(torch.cat([x1, up], dim=1)))
        return {
            "heatmap": h[:, :1],
            "offset": h[:, 1:3],
            "shape": h[:, 3:],
            "color": self.color(x),
        }


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
        rel = torch.sigmoid((_relation_value(spec.relation, det.xy[:, :, None], det.xy[:, None, :])
                             - cfg.relation_margin) / cfg.relation_temperature)  # [N, i, j]: i is A, j is B
        eye = torch.eye(K, dtype=torch.bool, device=a.device)
        # every other detection absent: prod over k of absent_k, with k = i and k = j left out
        others = torch.where((eye[:, None, :] | eye[None, :, :])[None], torch.ones_like(absent)[:, None, None, :],
                             absent[:, None, None, :]).prod(-1)  # [N, i, j]
        pair = a[:, :, None] * b[:, None, :] * rel * others
        prob = pair.masked_fill(eye[None], 0.0).sum((1, 2))
    else:
        counts = [n for _, _, n in types]
        shape = [len(det.p)] + [n + 1 for n in counts]
        dp = torch.zeros(shape, dtype=det.p.dtype, device=det.p.device)
        dp[(slice(None), *([0] * len(counts)))] = 1.0
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
        prob = dp[(slice(None), *counts)]
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


__all__ = [
    "COLOR_NAMES",
    "SHAPE_NAMES",
    "Detections",
    "ToyDetectConfig",
    "ToyDetectNet",
    "ToyDetectVerifier",
    "decode",
    "satisfaction_log_prob",
]
