"""The toyworld verifiers' networks: definitions, the word tokenizer, and safetensors I/O.

Three verifiers of different kinds, all trained by :mod:`noisesearch.toyworld.training.verifiers`
and scored by :mod:`noisesearch.toyworld.verifiers`:

- ``toyclip``: a small open_clip ``CLIP`` (ViT 32px/patch 4, causal text transformer) trained
  contrastively (InfoNCE with hard-negative captions). It is scored through the same
  :class:`~noisesearch.verifiers.clip.CLIPScoreVerifier` as real CLIP checkpoints.
- ``toyrelation``: a structured matcher: a CNN turns the image into an 8×8 grid of tokens with
  2-D positional embeddings; the caption's words (own embedding) self-attend and cross-attend to
  the grid; a head on the pooled token states gives a match logit. Trained as balanced binary
  classification of matching vs hard-negative (caption, image) pairs.
- ``toydetect``: a CenterNet-style detector (:class:`ToyDetectNet`) with separate colour and shape
  branches; :mod:`noisesearch.toyworld.verifiers` turns its detections into a symbolic score.

Neither reads the ground-truth evaluator: they learn from rendered scenes and captions only.
Weights are stored as one safetensors file per verifier; the architecture config and the
vocabulary travel in the file's metadata, so a file is self-contained.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from noisesearch.toyworld import grammar, scenes
from noisesearch.toyworld.assets import VERIFIER_WEIGHTS_DIR

#: fixed image normalisation of both toy verifiers (toyworld images are mostly light gray)
TOY_MEAN: tuple[float, float, float] = (0.5, 0.5, 0.5)
TOY_STD: tuple[float, float, float] = (0.25, 0.25, 0.25)

PAD, UNK, SOT, EOT = "<pad>", "<unk>", "<sot>", "<eot>"


class ToyImageInput(nn.Module):
    """[N, 3, H, W] in [0, 1] -> resized to ``image_size`` (bilinear, antialiased) and normalised
    with TOY_MEAN / TOY_STD: the input stage of the toy verifiers' own networks (no weights)."""

    mean: torch.Tensor  # [1, 3, 1, 1] buffer
    std: torch.Tensor  # [1, 3, 1, 1] buffer

    def __init__(self, image_size: int) -> None:
        super().__init__()
        self.image_size = int(image_size)
        self.register_buffer("mean", torch.tensor(TOY_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(TOY_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        s = self.image_size
        if images.shape[-2:] != (s, s):
            images = F.interpolate(images, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
        return (images - self.mean) / self.std


SPECIALS: tuple[str, ...] = (PAD, UNK, SOT, EOT)


# ------------------------------------------------------------------------------------ tokenizer


class WordTokenizer:
    """Word-level tokenizer over the toyworld vocabulary, open_clip style.

    ``tokenizer(texts) -> LongTensor[B, context_length]``: ``<sot> words... <eot> <pad>...``;
    lower-cased, split on anything that is not a letter; unknown words map to ``<unk>``; long
    prompts are truncated but always end with ``<eot>``. Ids: pad 0, unk 1, sot 2, eot 3.
    """

    def __init__(self, words: Sequence[str], context_length: int = 16) -> None:
        words = [w for w in words if w not in SPECIALS]
        self.vocab: list[str] = [*SPECIALS, *words]
        self.index = {w: i for i, w in enumerate(self.vocab)}
        self.context_length = int(context_length)
        self.pad_id, self.unk_id, self.sot_id, self.eot_id = (self.index[s] for s in SPECIALS)

    def __len__(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> list[int]:
        ids = [self.index.get(w, self.unk_id) for w in re.findall(r"[a-z]+", text.lower())]
        ids = [self.sot_id, *ids[: self.context_length - 2], self.eot_id]
        return ids + [self.pad_id] * (self.context_length - len(ids))

    def __call__(self, texts: str | Sequence[str], context_length: int | None = None) -> torch.Tensor:
        if context_length not in (None, self.context_length):
            raise ValueError(f"this tokenizer has a fixed context length of {self.context_length}")
        texts = [texts] if isinstance(texts, str) else list(texts)
        return torch.tensor([self.encode(t) for t in texts], dtype=torch.long)

    def to_json(self) -> str:
        return json.dumps({"words": self.vocab[len(SPECIALS) :], "context_length": self.context_length})

    @classmethod
    def from_json(cls, text: str) -> WordTokenizer:
        d = json.loads(text)
        return cls(d["words"], d["context_length"])


# -------------------------------------------------------------------------------------- toyclip


@dataclass(frozen=True)
class ToyCLIPConfig:
    """A small open_clip CLIP for 32×32 toyworld images."""

    vocab_size: int  # tokenizer size (specials + words)
    context_length: int = 16  # text tokens incl. <sot>/<eot>
    embed_dim: int = 128  # joint embedding size
    image_size: int = 32  # input resolution
    patch_size: int = 4  # 8×8 = 64 patches
    vision_width: int = 128
    vision_layers: int = 4
    text_width: int = 128
    text_layers: int = 3
    head_width: int = 32  # 4 heads at width 128
    eot_id: int = 3  # text is pooled at the <eot> token (open_clip pool_type="eos")


def build_toyclip(cfg: ToyCLIPConfig) -> nn.Module:
    """An ``open_clip.CLIP`` from the config (random init)."""
    import open_clip
    from open_clip.model import CLIPTextCfg, CLIPVisionCfg

    vision = CLIPVisionCfg(
        layers=cfg.vision_layers,
        width=cfg.vision_width,
        head_width=cfg.head_width,
        patch_size=cfg.patch_size,
        image_size=cfg.image_size,
    )
    text = CLIPTextCfg(
        context_length=cfg.context_length,
        vocab_size=cfg.vocab_size,
        width=cfg.text_width,
        heads=cfg.text_width // cfg.head_width,
        layers=cfg.text_layers,
        pad_id=0,
        eos_id=cfg.eot_id,
        pool_type="eos",
    )
    model = open_clip.CLIP(embed_dim=cfg.embed_dim, vision_cfg=vision, text_cfg=text)
    open_clip.model.set_model_preprocess_cfg(
        model,
        {
            "size": cfg.image_size,
            "mean": TOY_MEAN,
            "std": TOY_STD,
            "interpolation": "bicubic",
            "resize_mode": "shortest",
        },
    )
    return model


# ---------------------------------------------------------------------------------- toyrelation


@dataclass(frozen=True)
class ToyRelationConfig:
    """CNN grid tokens + a caption transformer that cross-attends to them."""

    vocab_size: int  # tokenizer size
    context_length: int = 16  # text tokens incl. <sot>/<eot>
    image_size: int = 32  # input resolution (other sizes are resized)
    width: int = 128  # token width for image and text
    heads: int = 4
    cnn_channels: tuple[int, int, int] = (32, 64, 128)  # 32² -> 16² -> 8² (last = width)
    image_layers: int = 1  # self-attention layers over the 8×8 grid (lets tokens see counts)
    text_layers: int = 3  # text self-attn + cross-attn to the grid + MLP
    mlp_ratio: int = 4


class _CrossBlock(nn.Module):
    """Pre-norm block: text self-attention, cross-attention to image tokens, MLP."""

    def __init__(self, width: int, heads: int, mlp_ratio: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2, self.ln3 = nn.LayerNorm(width), nn.LayerNorm(width), nn.LayerNorm(width)
        self.self_attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.q = nn.Linear(width, width)
        self.kv = nn.Linear(width, 2 * width)
        self.o = nn.Linear(width, width)
        self.mlp = nn.Sequential(nn.Linear(width, mlp_ratio * width), nn.GELU(), nn.Linear(mlp_ratio * width, width))

    def memory(self, image_tokens: torch.Tensor) -> torch.Tensor:
        """Keys and values of the image tokens [N, 64, 2W]: computed once per image, not per pair."""
        return self.kv(image_tokens)

    def forward(
        self, t: torch.Tensor, kv: torch.Tensor, pad: torch.Tensor, coords: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """t: [P, L, W] text states; kv: [P, 64, 2W] per-pair image keys/values; pad: [P, L] bool;
        coords: [64, 2] cell centres. Returns new states and, per word, where its cross-attention
        looked: the attention-weighted mean cell position, averaged over heads [P, L, 2]."""
        h = self.ln1(t)
        t = t + self.self_attn(h, h, h, key_padding_mask=pad, need_weights=False)[0]
        q = self.q(self.ln2(t))
        k, v = kv.chunk(2, dim=-1)
        P, L, W = q.shape
        split = lambda x: x.view(P, x.shape[1], self.heads, W // self.heads).transpose(1, 2)  # noqa: E731
        q, k, v = split(q), split(k), split(v)  # [P, heads, *, W/heads]
        attn = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(W // self.heads), dim=-1)  # [P, heads, L, 64]
        a = attn @ v
        t = t + self.o(a.transpose(1, 2).reshape(P, L, W))
        centroid = attn.mean(1) @ coords  # [P, L, 2]
        return t + self.mlp(self.ln3(t)), centroid


class ToyRelationNet(nn.Module):
    """Match logit of (image, caption) pairs.

    1. CNN: [N, 3, 32, 32] -> [N, W, 8, 8] -> 64 tokens, plus learned row and column embeddings.
    2. ``image_layers`` transformer layers over the grid.
    3. Caption tokens (own embedding + position) pass ``text_layers`` blocks of self-attention and
       cross-attention to the grid; the mean of the caption's token states plus a linear map of
       all token slots and of where each word's cross-attention looked (attention-weighted mean
       cell position, per block) goes through an MLP to one logit.
    """

    def __init__(self, cfg: ToyRelationConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c1, c2, c3 = cfg.cnn_channels
        if c3 != cfg.width:
            raise ValueError(f"the last CNN channel count ({c3}) must equal width ({cfg.width})")
        g = lambda c: nn.GroupNorm(8, c)  # noqa: E731
        self.cnn = nn.Sequential(
            nn.Conv2d(3, c1, 3, padding=1),
            g(c1),
            nn.GELU(),
            nn.Conv2d(c1, c2, 3, stride=2, padding=1),
            g(c2),
            nn.GELU(),  # 16×16
            nn.Conv2d(c2, c2, 3, padding=1),
            g(c2),
            nn.GELU(),
            nn.Conv2d(c2, c3, 3, stride=2, padding=1),
            g(c3),
            nn.GELU(),  # 8×8
            nn.Conv2d(c3, c3, 1),
        )
        grid = cfg.image_size // 4
        self.row = nn.Parameter(torch.randn(grid, cfg.width) * 0.02)
        self.col = nn.Parameter(torch.randn(grid, cfg.width) * 0.02)
        self.image_encoder = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(
                cfg.width,
                cfg.heads,
                cfg.mlp_ratio * cfg.width,
                dropout=0.0,
                activation="gelu",
                batch_first=True,
                norm_first=True,
            ),
            cfg.image_layers,
            enable_nested_tensor=False,
        )
        self.image_ln = nn.LayerNorm(cfg.width)
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.width)
        self.positional_embedding = nn.Parameter(torch.randn(cfg.context_length, cfg.width) * 0.02)
        self.blocks = nn.ModuleList(_CrossBlock(cfg.width, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.text_layers))
        self.ln_final = nn.LayerNorm(cfg.width)
        # positional readout: captions are short and rigid ("A rel B"), so a linear map of the
        # concatenated token states and attention centroids can compare where the words for A and
        # B looked, slot by slot
        self.slots = nn.Linear(cfg.context_length * (cfg.width + 2 * cfg.text_layers), cfg.width)
        cells = (torch.arange(grid) + 0.5) / grid * 2 - 1  # cell centres in [-1, 1]
        coords = torch.stack(torch.meshgrid(cells, cells, indexing="ij")[::-1], dim=-1)  # (x, y) per cell
        self.register_buffer("coords", coords.reshape(-1, 2), persistent=False)  # [64, 2], row-major
        self.head = nn.Sequential(nn.GELU(), nn.Linear(cfg.width, cfg.width), nn.GELU(), nn.Linear(cfg.width, 1))
        self.prepare = ToyImageInput(cfg.image_size)

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """[N, 3, H, W] in [0, 1] -> image tokens [N, 64, W]."""
        x = self.cnn(self.prepare(images))  # [N, W, 8, 8]
        pos = self.row[:, None, :] + self.col[None, :, :]  # [8, 8, W]
        x = x.flatten(2).transpose(1, 2) + pos.flatten(0, 1)  # [N, 64, W]
        return self.image_ln(self.image_encoder(x))

    def pair_logits(
        self,
        image_tokens: torch.Tensor,
        tokens: torch.Tensor,
        image_index: torch.Tensor,
        centroids: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Logits [P] of pairs (image ``image_index[p]``, caption ``tokens[p]``); image keys and
        values are computed once per image and gathered per pair. If ``centroids`` is a list, each
        block's per-word attention centroids [P, L, 2] (x, y in [-1, 1]) are appended to it."""
        pad = tokens == 0
        t = self.token_embedding(tokens) + self.positional_embedding  # [P, L, W]
        where = []
        for block in self.blocks:
            assert isinstance(block, _CrossBlock)
            t, c = block(t, block.memory(image_tokens)[image_index], pad, self.coords)
            where.append(c)
        if centroids is not None:
            centroids.extend(where)
        # readout: the mean over the caption's tokens plus a linear map of all token slots
        keep = (~pad).unsqueeze(-1).to(t.dtype)
        t = self.ln_final(t) * keep  # [P, L, W], pads zeroed
        slots = torch.cat([t, *(c * keep for c in where)], dim=-1)  # [P, L, W + 2·blocks]
        pooled = t.sum(1) / keep.sum(1) + self.slots(slots.flatten(1))
        return self.head(pooled).squeeze(-1)

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Row-wise pairs: images [B, 3, H, W], tokens [B, L] -> logits [B]."""
        index = torch.arange(images.shape[0], device=images.device)
        return self.pair_logits(self.encode_images(images), tokens, index)


# ------------------------------------------------------------------------------------------- I/O


# --- toydetect: CenterNet-style detector (scoring in noisesearch.toyworld.verifiers) ---------------

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
            nn.Conv2d(3, c, 1),
            nn.GELU(),
            nn.Conv2d(c, c, 2, stride=2),
            nn.GELU(),
            nn.Conv2d(c, c, 1),
            nn.GELU(),
            nn.Conv2d(c, 1 + len(COLOR_NAMES), 1),
        )
        with torch.no_grad():  # CenterNet's prior: few cells are centres
            assert self.heads.bias is not None
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


def save_verifier(
    path: str | Path,
    kind: str,
    model: nn.Module,
    config: Any,
    tokenizer: WordTokenizer | None,
    extra: dict | None = None,
    dtype: torch.dtype = torch.float16,
) -> None:
    """Writes weights (stored as ``dtype``, fp16 by default to halve the shipped size; loaded back as
    fp32) with the config, vocabulary (if the verifier reads words) and ``extra`` in the safetensors
    metadata."""
    from safetensors.torch import save_file

    state = {k: v.detach().to(dtype).cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {"kind": kind, "config": json.dumps(asdict(config)), "extra": json.dumps(extra or {})}
    if tokenizer is not None:
        meta["tokenizer"] = tokenizer.to_json()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata=meta)
    Path(path).chmod(0o644)  # shipped with the package: readable by everyone


def load_verifier_file(path: str | Path, kind: str, device: str | torch.device = "cpu"):
    """Returns (model in eval mode, config, tokenizer or None) from a file written by :func:`save_verifier`."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from noisesearch.io.checkpoints import describe_error, load_strict

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{kind} weights {str(path)!r} not found; they ship with the package under "
            f"{VERIFIER_WEIGHTS_DIR} (train them with `noisesearch toyworld train-verifiers "
            f"--out {VERIFIER_WEIGHTS_DIR}`) or pass another file with the `path` option"
        )
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
    except Exception as err:  # truncated or not a safetensors file
        raise ValueError(f"could not read {str(path)!r} as safetensors ({describe_error(err)})") from err
    if meta.get("kind") != kind:
        raise ValueError(f"{str(path)!r} holds a {meta.get('kind')!r} verifier, not {kind!r}")
    tokenizer = WordTokenizer.from_json(meta["tokenizer"]) if "tokenizer" in meta else None
    cfg_dict = json.loads(meta["config"])
    cfg: Any
    model: nn.Module
    if kind == "toydetect":
        cfg_dict["widths"] = tuple(cfg_dict["widths"])
        cfg = ToyDetectConfig(**cfg_dict)
        model = ToyDetectNet(cfg)
    elif kind == "toyclip":
        cfg = ToyCLIPConfig(**cfg_dict)
        model = build_toyclip(cfg)
    elif kind == "toyrelation":
        cfg_dict["cnn_channels"] = tuple(cfg_dict["cnn_channels"])
        cfg = ToyRelationConfig(**cfg_dict)
        model = ToyRelationNet(cfg)
    else:
        raise ValueError(f"unknown toy verifier kind {kind!r}; use 'toyclip', 'toyrelation' or 'toydetect'")
    state = {k: v.float() for k, v in load_file(str(path)).items()}
    load_strict(model, state, path)  # a ValueError naming the first missing, unexpected or mis-shaped keys
    return model.to(device).eval().requires_grad_(False), cfg, tokenizer


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = [
    "COLOR_NAMES",
    "SHAPE_NAMES",
    "TOY_MEAN",
    "TOY_STD",
    "ToyCLIPConfig",
    "ToyDetectConfig",
    "ToyDetectNet",
    "ToyImageInput",
    "ToyRelationConfig",
    "ToyRelationNet",
    "WordTokenizer",
    "build_toyclip",
    "count_parameters",
    "load_verifier_file",
    "save_verifier",
]
