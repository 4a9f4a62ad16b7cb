"""Train the three learned toyworld verifiers and measure them on held-out prompts.

    python -m noisesearch.toyworld.training.verifiers --out noisesearch/toyworld/weights/verifiers [--quick]

``toyclip`` and ``toyrelation`` learn from (caption, image) pairs; ``toydetect`` learns to detect
objects from dense per-cell labels (see "toydetect" below).

Data for the two caption verifiers (infinite, rendered on the fly, train split only): each *group* is a prompt spec ``p``
(``grammar.sample_spec(rng, "train")``) plus one hard negative per applicable type, each with its
own scene from ``grammar.sample_scene``:

- ``color_swap``: the two objects' colours exchanged (binding);
- ``color``: one object's colour replaced;
- ``shape``: one object's shape replaced;
- ``count``: the count moved by ±1 (1..3);
- ``relation``: the opposite relation, or the two objects exchanged.

Which (caption, image) pairs match is decided symbolically by ``grammar.satisfies_spec`` (so
paraphrases and duplicates across groups are handled), never by the pixel evaluator. Negatives of
training groups never mention a held-out (colour, shape) pair, so no held-out pair is ever drawn.

- ``toyclip``: symmetric multi-positive InfoNCE over all images and captions of the batch; the
  group's negative captions are the hard negatives of each image, its negative scenes those of each
  caption.
- ``toyrelation``: balanced binary cross-entropy: every image with its caption (positives) and two
  non-matching captions each (negatives; from its own group with probability 3/4, weighted towards
  colour swaps and relations, else from the batch), plus two dense auxiliary losses whose labels
  come from the scene layout:

  * grid: a training-only linear probe predicts each 8×8 grid token's colour and shape;
  * grounding: the first block's cross-attention centroid of each colour/shape word (positive
    pairs, single objects) must land on the object it names.

  Without them the matcher sat at the "which colours are present" plateau for the whole CPU
  budget; with them the grid tokens say what is where and the words find their objects within
  ~100 steps, leaving the rest of the budget for binding, relations and counts. Relation and
  colour-swap negatives are rare in the train split (a swap often lands on a held-out pair), so
  the recipe oversamples two-object prompts and those negative types.

``toydetect`` (:mod:`noisesearch.toyworld.verifiers`): batches of 64 training-split scenes, each
labelled on the 16×16 grid from its description (CenterNet heatmap at each object's area
centroid, centre offset, and the colour and shape painted at each cell centre); focal loss on the
heatmap, L1 on the offsets, cross-entropy on shape (object cells) and colour (all cells, object
cells weighted 4×). Its shape branch sees each image under a random background-preserving colour
transform (:func:`recolor`), so that shape and objectness cannot be learned from colour.

Images are augmented to resemble decoded samples: Gaussian blur σ ∈ [0, 1] px, noise std ≤ 0.05,
slight brightness/per-channel colour jitter.

Measurement, on ``grammar.sample_spec(rng, "heldout")`` prompts: per hard-negative type, the share
of cases where the verifier ranks

- ``caption``: the true caption above the negative caption, for the true image (the task asked of
  a captioning metric), and
- ``image``: the true image above the negative spec's image, for the true caption (what noise
  search asks of a verifier: the prompt is fixed, candidates vary);

ties count one half; on clean renders and on augmented ones.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import math
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from noisesearch.toyworld import grammar, scenes
from noisesearch.toyworld.assets import VERIFIER_WEIGHTS_DIR
from noisesearch.toyworld.grammar import ObjectSpec, PromptSpec
from noisesearch.toyworld.networks import (
    COLOR_NAMES,
    SHAPE_NAMES,
    ToyCLIPConfig,
    ToyDetectConfig,
    ToyDetectNet,
    ToyRelationConfig,
    ToyRelationNet,
    WordTokenizer,
    build_toyclip,
    count_parameters,
    save_verifier,
)

NEGATIVE_TYPES: tuple[str, ...] = ("color_swap", "color", "shape", "count", "relation")
KINDS: tuple[str, ...] = ("toyclip", "toyrelation", "toydetect")
#: what each verifier's score means (recorded in metrics.json)
SCORES: dict[str, str] = {
    "toyclip": "CLIPScore 2.5·max(cos, 0)",
    "toyrelation": "match logit (log-odds)",
    "toydetect": "log P(image satisfies prompt) from detections",
}


@dataclass(frozen=True)
class TrainConfig:
    """Training and measurement settings for one verifier."""

    steps: int = 2000  # optimiser steps (upper bound; see minutes)
    minutes: float = 10.0  # wall budget for the training loop; the LR schedule follows whichever runs out first
    groups: int = 16  # groups per batch (≈ 3.7 images each)
    lr: float = 1e-3  # peak AdamW learning rate
    weight_decay: float = 0.05
    warmup: float = 0.05  # fraction of progress spent warming up, then cosine to 0
    augment_p: float = 0.8  # probability that a training image is augmented
    hard_p: float = 0.75  # toyrelation: chance that a negative caption comes from the own group
    aux_weight: float = 0.5  # toyrelation: weight of the per-cell colour/shape loss on the grid tokens
    ground_weight: float = 2.0  # toyrelation: weight of the word-grounding loss (see grounding_loss)
    negatives_per_image: int = 1  # toyrelation: negative captions per image (positives weighted to balance)
    # relative frequency of the prompt categories (shape, color_binding, spatial, counting)
    category_weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    # toyrelation: how often each hard-negative type is picked (color_swap, color, shape, count, relation)
    negative_type_weights: tuple[float, float, float, float, float] = (1.0, 1.0, 1.0, 1.0, 1.0)
    eval_specs: int = 600  # held-out specs measured (each with all its negative types)
    seed: int = 0
    threads: int = 1  # torch threads (the machine is shared)


#: the recipes the shipped weights were trained with; the two run in parallel (one thread each)
DEFAULTS: dict[str, TrainConfig] = {
    "toyclip": TrainConfig(),
    # binding and relations are the hard part: show more two-object prompts and their hardest
    # negatives, two negatives per image
    "toyrelation": TrainConfig(
        negatives_per_image=2,
        category_weights=(1.0, 2.0, 3.0, 1.5),
        negative_type_weights=(6.0, 1.0, 1.0, 2.0, 4.0),
    ),
    # a detector learns from dense per-cell labels: 64 scenes per step, ~0.4 s per step on 2 threads
    "toydetect": TrainConfig(steps=2500, minutes=20.0, groups=64, lr=2e-3, threads=2),
}
QUICK = TrainConfig(steps=3, minutes=1.0, groups=4, eval_specs=8)


# ------------------------------------------------------------------------------ hard negatives


def _valid(category: str, objects: Sequence[ObjectSpec], relation: str | None = None) -> PromptSpec | None:
    try:
        return PromptSpec(category, tuple(objects), relation)
    except ValueError:
        return None


def negative_candidates(spec: PromptSpec) -> dict[str, list[PromptSpec]]:
    """All hard negatives of ``spec`` by type (a type is absent when it does not apply)."""
    objs = list(spec.objects)
    out: dict[str, list[PromptSpec]] = defaultdict(list)
    if len(objs) == 2:
        a, b = objs
        s = _valid(spec.category, [replace(a, color=b.color), replace(b, color=a.color)], spec.relation)
        if s is not None:
            out["color_swap"].append(s)
    for i, o in enumerate(objs):
        for c in scenes.COLORS:
            if c != o.color:
                s = _valid(
                    spec.category, [replace(o, color=c) if j == i else x for j, x in enumerate(objs)], spec.relation
                )
                if s is not None:
                    out["color"].append(s)
        for sh in scenes.SHAPES:
            if sh != o.shape:
                s = _valid(
                    spec.category, [replace(o, shape=sh) if j == i else x for j, x in enumerate(objs)], spec.relation
                )
                if s is not None:
                    out["shape"].append(s)
    if len(objs) == 1:
        o = objs[0]
        for n in (o.count - 1, o.count + 1):
            if n in grammar.NUMBER_WORDS:
                out["count"].append(PromptSpec("shape" if n == 1 else "counting", (replace(o, count=n),)))
    if spec.category == "spatial":
        opposite = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
        assert spec.relation is not None  # every spatial prompt names its relation
        out["relation"].append(PromptSpec("spatial", spec.objects, opposite[spec.relation]))
        out["relation"].append(PromptSpec("spatial", spec.objects[::-1], spec.relation))
    return dict(out)


def sample_negatives(spec: PromptSpec, rng: np.random.Generator, split: str) -> dict[str, PromptSpec]:
    """One random hard negative per applicable type; for ``split="train"`` none mentions a held-out pair."""
    out = {}
    for kind, cands in negative_candidates(spec).items():
        if split == "train":
            cands = [c for c in cands if not grammar.is_heldout(c)]
        if cands:
            out[kind] = cands[int(rng.integers(len(cands)))]
    return out


# --------------------------------------------------------------------------------------- data


@dataclass
class Batch:
    images: torch.Tensor  # [N, 3, 32, 32] clean renders
    captions: list[str]  # N, caption of each image's spec
    group: torch.Tensor  # [N] group index
    kind: list[str]  # N: "positive" for a group's prompt, else the negative type it was made by
    match: torch.Tensor  # [N, N] bool: caption i describes image j
    layout: torch.Tensor  # [N, 2, 8, 8] long: colour / shape class of each grid cell (0 = background)
    specs: list[PromptSpec]  # N, the spec of each image
    scenes: list[scenes.Scene]  # N, the scene of each image


def _scene_key(scene: scenes.Scene) -> tuple:
    return tuple(sorted(Counter((o.color, o.shape) for o in scene.objects).items()))


def _spec_key(spec: PromptSpec) -> tuple:
    return tuple(sorted(Counter({(o.color, o.shape): o.count for o in spec.objects}).items()))


def sample_batch(
    rng: np.random.Generator, groups: int, split: str = "train", category_weights: Sequence[float] | None = None
) -> Batch:
    """``groups`` groups of (spec + one hard negative per type), each with its own scene.

    ``category_weights`` (aligned with ``grammar.CATEGORIES``) reweights the categories of
    ``grammar.sample_spec`` by rejection."""
    accept = None
    if category_weights is not None and len(set(category_weights)) > 1:  # uniform: no rejection draws
        w = np.asarray(category_weights, dtype=np.float64)
        accept = dict(zip(grammar.CATEGORIES, w / w.max()))
    specs: list[PromptSpec] = []
    group: list[int] = []
    kind: list[str] = []
    for g in range(groups):
        p = grammar.sample_spec(rng, split)
        while accept is not None and rng.random() >= accept[p.category]:
            p = grammar.sample_spec(rng, split)
        negs = sample_negatives(p, rng, split)
        specs += [p, *negs.values()]
        kind += ["positive", *negs]
        group += [g] * (1 + len(negs))
    scene_list = [grammar.sample_scene(s, rng) for s in specs]
    images = torch.from_numpy(np.stack([scenes.render(s) for s in scene_list]))
    # caption i matches image j: only possible when the object multisets agree
    n = len(specs)
    match = torch.zeros(n, n, dtype=torch.bool)
    by_key: dict[tuple, list[int]] = defaultdict(list)
    for j, s in enumerate(scene_list):
        by_key[_scene_key(s)].append(j)
    for i, sp in enumerate(specs):
        for j in by_key.get(_spec_key(sp), ()):
            match[i, j] = grammar.satisfies_spec(scene_list[j], sp)
    assert bool(match.diagonal().all()), "a sampled scene does not satisfy its own spec"
    layout = torch.from_numpy(np.stack([grid_layout(s) for s in scene_list]))
    return Batch(
        images, [grammar.caption(s) for s in specs], torch.tensor(group), kind, match, layout, specs, scene_list
    )


_COLOR_CLASS = {c: i + 1 for i, c in enumerate(scenes.COLORS)}
_SHAPE_CLASS = {s: i + 1 for i, s in enumerate(scenes.SHAPES)}


def grid_layout(scene: scenes.Scene, grid: int = 8) -> np.ndarray:
    """[2, grid, grid] colour and shape classes (0 = background) of the object whose bounding box
    holds each cell centre: dense labels for toyrelation's auxiliary loss."""
    out = np.zeros((2, grid, grid), dtype=np.int64)
    centres = (np.arange(grid) + 0.5) / grid
    for o in scene.objects:
        x0, y0, x1, y1 = o.bbox
        rows = (centres >= y0) & (centres <= y1)
        cols = (centres >= x0) & (centres <= x1)
        cells = rows[:, None] & cols[None, :]
        out[0][cells] = _COLOR_CLASS[o.color]
        out[1][cells] = _SHAPE_CLASS[o.shape]
    return out


def augment(images: torch.Tensor, generator: torch.Generator | None = None, p: float = 1.0) -> torch.Tensor:
    """Make clean renders look like decoded samples; batched, per-image random parameters.

    1. Gaussian blur, σ ~ U[0, 1] px (5-tap separable kernel, reflect padding);
    2. colour jitter: brightness ×U[0.92, 1.08], per-channel gain ×U[0.95, 1.05], offset ±0.03;
    3. Gaussian noise, std ~ U[0, 0.05]; then clip to [0, 1].
    Images not drawn (probability 1 - p) pass unchanged.
    """
    B, C, H, W = images.shape
    dev = images.device
    u = lambda *shape: torch.rand(*shape, generator=generator, device=dev)  # noqa: E731
    # 1. blur: per-image kernels [B, 5]
    sigma = u(B, 1).clamp_min(1e-3)
    taps = torch.arange(-2, 3, device=dev, dtype=images.dtype)[None]
    k = torch.exp(-0.5 * (taps / sigma) ** 2)
    k = k / k.sum(dim=1, keepdim=True)  # σ → 0 gives the identity kernel
    kx = k.repeat_interleave(C, 0)[:, None, None, :]  # [B*C, 1, 1, 5]
    x = images.reshape(1, B * C, H, W)
    x = F.conv2d(F.pad(x, (2, 2, 0, 0), mode="reflect"), kx, groups=B * C)
    x = F.conv2d(F.pad(x, (0, 0, 2, 2), mode="reflect"), kx.transpose(2, 3), groups=B * C)
    x = x.reshape(B, C, H, W)
    # 2. colour jitter
    bright = 0.92 + 0.16 * u(B, 1, 1, 1)
    gain = 0.95 + 0.10 * u(B, C, 1, 1)
    offset = 0.06 * u(B, C, 1, 1) - 0.03
    x = x * bright * gain + offset
    # 3. noise
    std = 0.05 * u(B, 1, 1, 1)
    x = (x + std * torch.randn(x.shape, generator=generator, device=dev)).clamp(0.0, 1.0)
    if p < 1.0:
        keep = u(B, 1, 1, 1) >= p
        x = torch.where(keep, images, x)
    return x


# ----------------------------------------------------------------------------------- training


def world_tokenizer() -> WordTokenizer:
    return WordTokenizer(grammar.vocabulary(), context_length=16)


def build(kind: str, tokenizer: WordTokenizer) -> tuple[Any, Any]:
    """A fresh network of ``kind`` and its config (their types depend on ``kind``)."""
    if kind == "toyclip":
        clip_cfg = ToyCLIPConfig(
            vocab_size=len(tokenizer), context_length=tokenizer.context_length, eot_id=tokenizer.eot_id
        )
        return build_toyclip(clip_cfg), clip_cfg
    if kind == "toyrelation":
        relation_cfg = ToyRelationConfig(vocab_size=len(tokenizer), context_length=tokenizer.context_length)
        return ToyRelationNet(relation_cfg), relation_cfg
    if kind == "toydetect":
        detect_cfg = ToyDetectConfig()
        return ToyDetectNet(detect_cfg), detect_cfg
    raise ValueError(f"unknown verifier {kind!r}; use one of {list(KINDS)}")


def _lr_factor(progress: float, warmup: float) -> float:
    if progress < warmup:
        return progress / warmup
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (progress - warmup) / (1 - warmup))))


def clip_loss(
    model: Any, images: torch.Tensor, tokens: torch.Tensor, match: torch.Tensor
) -> tuple[torch.Tensor, dict[str, float]]:
    """Symmetric multi-positive InfoNCE: -log Σ_{positives} softmax, over captions and over images."""
    mean = torch.tensor(model.visual.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(model.visual.image_std).view(1, 3, 1, 1)
    fi = model.encode_image((images - mean) / std, normalize=True)  # [N, D]
    ft = model.encode_text(tokens, normalize=True)  # [N, D]
    logits = model.logit_scale.exp().clamp(max=100) * ft @ fi.T  # [captions, images]
    neg_inf = torch.finfo(logits.dtype).min
    pos = lambda lg: lg.masked_fill(~match, neg_inf).logsumexp(1)  # noqa: E731
    t2i = (logits.logsumexp(1) - pos(logits)).mean()
    lt, mt = logits.T, match.T
    i2t = (lt.logsumexp(1) - lt.masked_fill(~mt, neg_inf).logsumexp(1)).mean()
    loss = 0.5 * (t2i + i2t)
    return loss, {"infonce": loss.item()}


class GridProbe(torch.nn.Module):
    """Training-only head: colour and shape class of each 8×8 grid token (not shipped)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.color = torch.nn.Linear(width, len(scenes.COLORS) + 1)
        self.shape = torch.nn.Linear(width, len(scenes.SHAPES) + 1)

    def forward(self, tokens: torch.Tensor, layout: torch.Tensor) -> torch.Tensor:
        # tokens [N, 64, W]; layout [N, 2, 8, 8]
        target = layout.flatten(2)  # [N, 2, 64]
        c = F.cross_entropy(self.color(tokens).transpose(1, 2), target[:, 0])
        s = F.cross_entropy(self.shape(tokens).transpose(1, 2), target[:, 1])
        return c + s


def grounding_targets(
    batch: Batch, tokens: torch.Tensor, tokenizer: WordTokenizer
) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each word points, for a caption paired with its own image: the colour and shape words
    of a single object -> that object's centroid, in [-1, 1]² (x right, y down).

    Returns (targets [N, L, 2], mask [N, L] bool). Counting captions (several instances) and the
    other words are masked out.
    """
    n, length = tokens.shape
    target = torch.zeros(n, length, 2)
    mask = torch.zeros(n, length, dtype=torch.bool)
    ids = tokens.tolist()
    for i, (spec, scene) in enumerate(zip(batch.specs, batch.scenes)):
        for o in spec.objects:
            if o.count != 1:
                continue
            obj = next(x for x in scene.objects if (x.color, x.shape) == (o.color, o.shape))
            xy = torch.tensor(obj.centroid) * 2 - 1
            for word in (o.color, o.shape):
                wid = tokenizer.index.get(word)
                for pos, t in enumerate(ids[i]):
                    if t == wid:
                        target[i, pos], mask[i, pos] = xy, True
    return target, mask


def grounding_loss(centroids: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """MSE between where a word's cross-attention looked (first block, [N, L, 2]) and the object it
    names: teaches the matcher to find the mentioned object, so later layers only compare."""
    if not mask.any():
        return centroids.sum() * 0.0
    return F.mse_loss(centroids[mask], target[mask])


def relation_loss(
    model: ToyRelationNet,
    images: torch.Tensor,
    tokens: torch.Tensor,
    batch: Batch,
    rng: np.random.Generator,
    cfg: TrainConfig,
    probe: GridProbe | None = None,
    tokenizer: WordTokenizer | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Balanced BCE over N positive pairs (image, own caption) and k·N negatives (k per image:
    from the own group with probability ``hard_p``, picked by ``negative_type_weights``, else from
    the batch), plus ``aux_weight`` × the grid probe's per-cell colour/shape cross-entropy (dense
    supervision that makes the grid tokens say what is where early in training), plus
    ``ground_weight`` × the grounding loss on the positive pairs."""
    n, k = images.shape[0], cfg.negatives_per_image
    group = batch.group.numpy()
    match = batch.match.numpy()
    type_w = dict(zip(NEGATIVE_TYPES, cfg.negative_type_weights))
    kinds = batch.kind
    neg_caption = np.empty((k, n), dtype=np.int64)
    for j in range(n):
        hard = np.flatnonzero((group == group[j]) & ~match[:, j])
        # a group's prompt vs one of its negatives differ by that negative's type; two negatives
        # of the same prompt differ by two edits and count as easy
        w = np.array(
            [
                type_w.get(kinds[i] if kinds[j] == "positive" else kinds[j], 1.0)
                if "positive" in (kinds[i], kinds[j])
                else 1.0
                for i in hard
            ]
        )
        anywhere = np.flatnonzero(~match[:, j])
        for r in range(k):
            if len(hard) and rng.random() < cfg.hard_p:
                neg_caption[r, j] = hard[rng.choice(len(hard), p=w / w.sum())]
            else:
                neg_caption[r, j] = anywhere[int(rng.integers(len(anywhere)))]
    img_index = torch.arange(n).repeat(k + 1)
    cap_index = torch.cat([torch.arange(n), torch.from_numpy(neg_caption.reshape(-1))])
    labels = torch.cat([torch.ones(n), torch.zeros(k * n)])
    weights = torch.cat([torch.full((n,), 0.5 / n), torch.full((k * n,), 0.5 / (k * n))])  # balanced
    grid = model.encode_images(images)
    centroids: list[torch.Tensor] = []
    logits = model.pair_logits(grid, tokens[cap_index], img_index, centroids)
    bce = (F.binary_cross_entropy_with_logits(logits, labels, reduction="none") * weights).sum()
    aux = probe(grid, batch.layout) if probe is not None and cfg.aux_weight > 0 else torch.zeros(())
    gnd = torch.zeros(())
    if tokenizer is not None and cfg.ground_weight > 0:
        target, mask = grounding_targets(batch, tokens, tokenizer)
        gnd = grounding_loss(centroids[0][:n], target, mask)  # the first n pairs are the positives
    loss = bce + cfg.aux_weight * aux + cfg.ground_weight * gnd
    return loss, {"bce": bce.item(), "aux": aux.item(), "ground": gnd.item()}


# ------------------------------------------------------------------------------- toydetect


def sample_scenes(rng: np.random.Generator, n: int, split: str = "train") -> list[scenes.Scene]:
    """``n`` scenes of random specs of ``split`` (categories uniform): 1-3 objects each."""
    return [grammar.sample_scene(grammar.sample_spec(rng, split), rng) for _ in range(n)]


def detection_targets(scene_list: Sequence[scenes.Scene], grid: int) -> dict[str, torch.Tensor]:
    """Dense labels on the ``grid``×``grid`` cells from the scene descriptions (CenterNet targets):

    - ``heatmap`` [N, 1, g, g]: Gaussian bumps (σ = size/6 of the object, in cells) at each object's
      area centroid, exactly 1 at the cell holding it; ``centre`` [N, g, g] marks those cells;
    - ``offset`` [N, 2, g, g]: where in its cell the centroid lies (x, y in [-0.5, 0.5]);
    - ``color`` [N, g, g]: colour class of the object covering the cell centre (0 = background);
    - ``shape`` [N, g, g]: shape class there, -1 on background (ignored)."""
    n = len(scene_list)
    centres = (np.arange(grid) + 0.5) / grid
    xs, ys = centres[None, :], centres[:, None]
    heat = np.zeros((n, 1, grid, grid), dtype=np.float32)
    centre = np.zeros((n, grid, grid), dtype=bool)
    offset = np.zeros((n, 2, grid, grid), dtype=np.float32)
    color = np.zeros((n, grid, grid), dtype=np.int64)
    shape = np.full((n, grid, grid), -1, dtype=np.int64)
    for i, scene in enumerate(scene_list):
        for o in scene.objects:
            inside = scenes.shape_mask(o.shape, o.x, o.y, o.size, xs, ys)
            color[i][inside] = COLOR_NAMES.index(o.color) + 1
            shape[i][inside] = SHAPE_NAMES.index(o.shape)
            cx, cy = (v * grid for v in o.centroid)
            col, row = min(int(cx), grid - 1), min(int(cy), grid - 1)
            sigma = max(o.size * grid / 6, 0.5)
            bump = np.exp(-((xs * grid - cx) ** 2 + (ys * grid - cy) ** 2) / (2 * sigma**2))
            heat[i, 0] = np.maximum(heat[i, 0], bump)
            heat[i, 0, row, col] = 1.0
            centre[i, row, col] = True
            offset[i, :, row, col] = (cx - col - 0.5, cy - row - 0.5)
    return {
        k: torch.from_numpy(v)
        for k, v in dict(heatmap=heat, centre=centre, offset=offset, color=color, shape=shape).items()
    }


def recolor(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """A random colour transform per image that keeps the background: ``bg + s·Q (x - bg)`` with a
    random orthogonal ``Q`` and a gain ``s`` in [0.7, 1.2]. What the detector's shape branch sees
    in training, so that objectness and shape cannot depend on colour."""
    B = images.shape[0]
    bg = torch.tensor(scenes.BACKGROUND, dtype=images.dtype).view(1, 3, 1, 1)
    q, r = torch.linalg.qr(torch.randn(B, 3, 3, generator=generator))
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))[:, None, :]  # uniform over O(3)
    gain = 0.7 + 0.5 * torch.rand(B, 1, 1, generator=generator)
    x = torch.einsum("bij,bjhw->bihw", (gain * q).to(images.dtype), images - bg) + bg
    return x.clamp(0.0, 1.0)


def focal_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss (α = 2, β = 4), normalised by the number of centres."""
    p = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    pos = target.eq(1).to(p.dtype)
    pos_loss = -torch.log(p) * (1 - p) ** 2 * pos
    neg_loss = -torch.log(1 - p) * p**2 * (1 - target) ** 4 * (1 - pos)
    return (pos_loss.sum() + neg_loss.sum()) / pos.sum().clamp_min(1.0)


def detect_loss(
    model: ToyDetectNet, images: torch.Tensor, shape_images: torch.Tensor, targets: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, dict[str, float]]:
    """Heatmap focal loss + centre-offset L1 + per-cell shape and colour cross-entropy."""
    maps = model(images, shape_images)
    heat = focal_loss(maps["heatmap"], targets["heatmap"])
    centre = targets["centre"][:, None].expand(-1, 2, -1, -1)
    off = F.l1_loss(maps["offset"][centre], targets["offset"][centre]) if centre.any() else heat * 0
    shp = F.cross_entropy(maps["shape"], targets["shape"], ignore_index=-1)
    # object cells are ~10% of the grid: weight them up so colour errors on objects are not drowned
    weight = torch.ones(1 + len(COLOR_NAMES))
    weight[1:] = 4.0
    col = F.cross_entropy(maps["color"], targets["color"], weight=weight)
    loss = heat + off + shp + col
    return loss, {"heat": heat.item(), "offset": off.item(), "shape": shp.item(), "color": col.item()}


def train(kind: str, cfg: TrainConfig, log=print) -> tuple[Any, Any, WordTokenizer | None, dict]:
    """Trains one verifier; returns (model in eval mode, model config, tokenizer (None for
    toydetect, which reads no words), run info)."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    tokenizer = world_tokenizer()
    model, mcfg = build(kind, tokenizer)
    model.train()
    probes = torch.nn.ModuleDict()
    if kind == "toyrelation":
        probes["grid"] = GridProbe(mcfg.width)
    params = list(model.named_parameters()) + list(probes.named_parameters())
    decay = [p for n, p in params if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in params if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.98),
    )
    start = time.perf_counter()
    budget = cfg.minutes * 60.0
    step, progress, ema, seen = 0, 0.0, None, 0
    while progress < 1.0:
        for g in opt.param_groups:
            g["lr"] = cfg.lr * _lr_factor(progress, cfg.warmup)
        if kind == "toydetect":  # scenes with dense labels, no captions
            scene_list = sample_scenes(rng, cfg.groups)
            seen += len(scene_list)
            clean = torch.from_numpy(np.stack([scenes.render(s) for s in scene_list]))
            images = augment(clean, gen, p=cfg.augment_p)
            loss, parts = detect_loss(model, images, recolor(images, gen), detection_targets(scene_list, mcfg.grid))
        else:
            batch = sample_batch(rng, cfg.groups, category_weights=cfg.category_weights)
            seen += len(batch.captions)
            images = augment(batch.images, gen, p=cfg.augment_p)
            tokens = tokenizer(batch.captions)
            if kind == "toyclip":
                loss, parts = clip_loss(model, images, tokens, batch.match)
            else:
                probe = probes["grid"]
                assert isinstance(probe, GridProbe)
                loss, parts = relation_loss(model, images, tokens, batch, rng, cfg, probe, tokenizer)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for _, p in params], 1.0)
        opt.step()
        step += 1
        elapsed = time.perf_counter() - start
        progress = max(step / cfg.steps, elapsed / budget)
        ema = dict(parts) if ema is None else {k: 0.95 * ema[k] + 0.05 * v for k, v in parts.items()}
        if step % 25 == 0 or progress >= 1.0:
            shown = " ".join(f"{k} {v:.4f}" for k, v in ema.items())
            log(f"[{kind}] step {step} {shown} lr {opt.param_groups[0]['lr']:.2e} {elapsed:.0f}s")
    assert ema is not None  # at least one step ran
    info = {
        "steps": step,
        "train_seconds": round(time.perf_counter() - start, 1),
        "final_loss_ema": {k: round(v, 4) for k, v in ema.items()},
        "images_seen": seen,
    }
    words = None if kind == "toydetect" else tokenizer
    return model.eval().requires_grad_(False), mcfg, words, info


# -------------------------------------------------------------------------------- measurement


@torch.no_grad()
def measure(verifier, n_specs: int, seed: int = 1234, split: str = "heldout") -> dict:
    """Ranking accuracy per negative type (see module docstring), clean and augmented."""
    rng = np.random.default_rng(seed)
    rows = []  # (type, true spec index, negative spec index)
    specs: list[PromptSpec] = []
    for _ in range(n_specs):
        p = grammar.sample_spec(rng, split)
        i = len(specs)
        specs.append(p)
        for kind, neg in sample_negatives(p, rng, "any").items():
            rows.append((kind, i, len(specs)))
            specs.append(neg)
    clean = torch.from_numpy(np.stack([scenes.render(grammar.sample_scene(s, rng)) for s in specs]))
    augmented = augment(clean, torch.Generator().manual_seed(seed))
    caps = [grammar.caption(s) for s in specs]
    t = np.array([r[1] for r in rows])
    n = np.array([r[2] for r in rows])
    out: dict = {"n_specs": n_specs, "n_pairs": len(rows), "split": split}
    for name, imgs in (("clean", clean), ("augmented", augmented)):
        scores = _pair_scorer(verifier, imgs, caps)
        s_true = scores(t, t)
        win_caption = _wins(s_true, scores(t, n))  # true image: true caption vs negative caption
        win_image = _wins(s_true, scores(n, t))  # true caption: true image vs negative image
        res = {}
        for label, win in (("caption", win_caption), ("image", win_image)):
            per = {
                k: round(float(win[[r[0] == k for r in rows]].mean()), 4)
                for k in NEGATIVE_TYPES
                if any(r[0] == k for r in rows)
            }
            res[label] = {"overall": round(float(win.mean()), 4), **per}
        out[name] = res
    return out


def _pair_scorer(verifier, imgs: torch.Tensor, caps: list[str]):
    """Returns ``scores(img_idx, cap_idx) -> np.ndarray`` of verifier scores for index pairs.

    Images are encoded once: CLIPScore from embeddings (the same formula as ``score``), the
    relation matcher from its image tokens; anything else through ``score`` in chunks.
    """
    from noisesearch.toyworld.verifiers import Detections, ToyDetectVerifier, ToyRelationVerifier, satisfaction_log_prob
    from noisesearch.verifiers.clip import CLIPScoreVerifier

    if isinstance(verifier, CLIPScoreVerifier):
        fi = torch.cat([verifier.encode_images(imgs[k : k + 512]) for k in range(0, len(imgs), 512)])
        ft = verifier.encode_texts(caps)
        return lambda i, c: (verifier.w * (fi[i] * ft[c]).sum(-1).clamp_min(0)).numpy()
    if isinstance(verifier, ToyDetectVerifier):
        det = Detections.cat([verifier.detect(imgs[k : k + 512]) for k in range(0, len(imgs), 512)])
        specs = [grammar.parse(c) for c in caps]

        def detect(i: np.ndarray, c: np.ndarray) -> np.ndarray:
            out = np.empty(len(i))
            for cap in np.unique(c):  # one batched pass per caption
                rows = np.flatnonzero(c == cap)
                sub = det.select(torch.from_numpy(i[rows]))
                out[rows] = satisfaction_log_prob(sub, specs[int(cap)], verifier.cfg).numpy()
            return out

        return detect
    if isinstance(verifier, ToyRelationVerifier):
        model = verifier.model
        tokens = verifier.tokenizer(caps)
        tok = torch.cat([model.encode_images(imgs[k : k + 512]) for k in range(0, len(imgs), 512)])

        def rel(i: np.ndarray, c: np.ndarray) -> np.ndarray:
            out = [
                model.pair_logits(tok, tokens[torch.from_numpy(c[k : k + 512])], torch.from_numpy(i[k : k + 512]))
                for k in range(0, len(i), 512)
            ]
            return torch.cat(out).numpy()

        return rel

    def generic(i: np.ndarray, c: np.ndarray) -> np.ndarray:
        out = [
            verifier.score(imgs[torch.from_numpy(i[k : k + 256])], [caps[j] for j in c[k : k + 256]]).float()
            for k in range(0, len(i), 256)
        ]
        return torch.cat(out).numpy()

    return generic


def _wins(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a > b).astype(np.float64) + 0.5 * (a == b)


def _format(kind: str, m: dict) -> str:
    lines = [f"{kind}: {m['split']} ranking accuracy ({m['n_pairs']} pairs from {m['n_specs']} prompts)"]
    header = f"  {'':24s}" + "".join(f"{k:>11s}" for k in ("overall", *NEGATIVE_TYPES))
    lines.append(header)
    for cond in ("clean", "augmented"):
        for label in ("caption", "image"):
            r = m[cond][label]
            lines.append(
                f"  {cond + ' / ' + label:24s}"
                + "".join(f"{r.get(k, float('nan')):11.3f}" for k in ("overall", *NEGATIVE_TYPES))
            )
    return "\n".join(lines)


def _merge_metrics(path: Path, kind: str, entry: dict) -> None:
    """Read-modify-write ``metrics.json`` under a lock (two trainings may finish together)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = json.loads(path.read_text()) if path.is_file() else {}
        data[kind] = entry
        path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    path.with_suffix(".lock").unlink(missing_ok=True)


def run(kind: str, cfg: TrainConfig, out: Path, log=print) -> dict:
    torch.set_num_threads(cfg.threads)
    model, mcfg, tokenizer, info = train(kind, cfg, log)
    path = out / f"{kind}.safetensors"
    save_verifier(path, kind, model, mcfg, tokenizer, extra={"train": asdict(cfg), **info})
    # measure what ships: the verifier as the registry loads it from the file just written
    from noisesearch.toyworld.verifiers import load_toy_verifier

    verifier = load_toy_verifier(kind, "cpu", path)
    t0 = time.perf_counter()
    metrics = {
        "heldout": measure(verifier, cfg.eval_specs, split="heldout"),
        "train_split": measure(verifier, max(cfg.eval_specs // 3, 4), split="train"),
    }
    entry = {
        "params": count_parameters(model),
        "file_mb": round(path.stat().st_size / 2**20, 2),
        "model_config": asdict(mcfg),
        "train_config": asdict(cfg),
        **info,
        "eval_seconds": round(time.perf_counter() - t0, 1),
        "score": SCORES[kind],
        **metrics,
    }
    _merge_metrics(out / "metrics.json", kind, entry)
    log(_format(kind, metrics["heldout"]))
    log(_format(kind, metrics["train_split"]))
    return entry


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    ap.add_argument("--out", type=Path, default=VERIFIER_WEIGHTS_DIR, help="folder for the weights and metrics.json")
    ap.add_argument("--quick", action="store_true", help="a few steps and a tiny measurement (smoke test)")
    ap.add_argument("--only", choices=KINDS, action="append", help="train only this verifier (repeatable)")
    ap.add_argument("--minutes", type=float, default=None, help="wall budget per verifier for training")
    ap.add_argument("--steps", type=int, default=None, help="maximum optimiser steps per verifier")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--sequential",
        action="store_true",
        help="train one verifier after the other (by default toyclip and toyrelation train in "
        "two parallel single-thread processes, then toydetect on two threads)",
    )
    args = ap.parse_args(argv)
    kinds = list(dict.fromkeys(args.only or KINDS))
    configs = {}
    for kind in kinds:
        cfg = replace(QUICK if args.quick else DEFAULTS[kind], seed=args.seed)
        if args.minutes is not None:
            cfg = replace(cfg, minutes=args.minutes)
        if args.steps is not None:
            cfg = replace(cfg, steps=args.steps)
        configs[kind] = cfg
    # the single-thread verifiers train side by side (one process and thread each: the default fits
    # a 2-core machine); a verifier that uses several threads trains alone, after them
    parallel = [] if args.sequential or args.quick else [k for k in kinds if configs[k].threads == 1]
    if len(parallel) < 2:
        parallel = []
    _run_parallel(parallel, configs, args.out)
    for kind in kinds:
        if kind not in parallel:
            run(kind, configs[kind], args.out)


def _run_parallel(kinds: Sequence[str], configs: dict[str, TrainConfig], out: Path) -> None:
    if not kinds:
        return
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=run, args=(kind, configs[kind], out), name=kind) for kind in kinds]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    failed = [p.name for p in procs if p.exitcode != 0]
    if failed:
        raise SystemExit(f"training failed for {failed}; see the messages above")


if __name__ == "__main__":
    main()
