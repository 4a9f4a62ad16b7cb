"""ImageReward (Xu et al. 2023, "ImageReward: Learning and Evaluating Human Preferences for
Text-to-Image Generation", arXiv:2304.05977).

A BLIP image-text encoder with a reward head, trained on expert preference rankings:

    V = ViT-L/16(x)                              image tokens [B, 1 + 196, 1024]
    T = BERT(p; cross-attention to V)            text states [B, 35, 768]
    r = MLP(T[:, 0])                             768 -> 1024 -> 128 -> 64 -> 16 -> 1 (no activations)
    ImageReward(x, p) = (r - 0.16717362830052426) / 1.0333394966054072

Images are resized (bicubic, shorter side) and centre-cropped to 224, with CLIP's normalisation
(the reference resizes PIL images, i.e. with Pillow's 8-bit resampler: ``preprocess="official"``
does the same, the default float resize stays differentiable);
prompts are tokenised with ``bert-base-uncased`` (+ BLIP's ``[DEC]``/``[ENC]`` tokens), padded or
truncated to 35 tokens. The official ``ImageReward.pt`` holds the state dict of the reference
``ImageReward`` module (``blip.visual_encoder.*``, ``blip.text_encoder.*``, ``mlp.layers.*``); the
modules below carry the same names so it loads strictly (the reference loads it with
``strict=False``). The text encoder is BLIP's ``med.py`` BERT, whose cross-attention reads 1024-wide
image tokens into a 768-wide model, which ``transformers.BertModel`` cannot express; transformers'
``BlipTextModel`` can, but ties cross-attention to ``is_decoder`` and changes between major versions,
so the encoder (about 100 lines) is written out here; the ViT is timm's, as in BLIP.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from noisesearch.io.checkpoints import (
    find_file,
    load_strict,
    load_weights,
    parse_dtype,
    resolve_file,
    resolve_folder,
)
from noisesearch.verifiers.aesthetic import PreferenceMLP
from noisesearch.verifiers.base import register_verifier
from noisesearch.verifiers.catalog import BERT_TOKENIZER, IMAGEREWARD, IMAGEREWARD_MED_CONFIG
from noisesearch.verifiers.clip import validate_preprocess
from noisesearch.verifiers.transforms import (
    CLIP_MEAN,
    CLIP_STD,
    check_images,
    check_preprocess,
    normalize,
    pil_resize_center_crop,
    resize_center_crop,
)

#: reward normalisation of the reference ``ImageReward`` module
REWARD_MEAN = 0.16717362830052426
REWARD_STD = 1.0333394966054072
#: prompts are padded/truncated to this many tokens
MAX_LENGTH = 35
#: keys of ``ImageReward.pt`` the reward does not use: BLIP's contrastive projections and a
#: position-index buffer that old transformers versions saved
UNUSED_KEYS = ("blip.vision_proj.", "blip.text_proj.", "blip.text_encoder.embeddings.position_ids")


@dataclass(frozen=True)
class BlipVisionConfig:
    """BLIP's ViT image encoder (``create_vit('large', 224)``)."""

    image_size: int = 224  # input resolution (square)
    patch_size: int = 16  # pixels per patch side
    width: int = 1024  # token width (ViT-L)
    layers: int = 24  # transformer blocks
    heads: int = 16  # attention heads


@dataclass(frozen=True)
class BlipTextConfig:
    """BLIP's BERT text encoder with cross-attention (``med_config.json``)."""

    vocab_size: int = 30524  # bert-base-uncased's 30522 + [DEC] + [ENC]
    hidden_size: int = 768  # token width
    num_hidden_layers: int = 12  # transformer layers, each with self- and cross-attention
    num_attention_heads: int = 12  # heads in both attentions
    intermediate_size: int = 3072  # feed-forward width
    max_position_embeddings: int = 512  # learned absolute positions
    layer_norm_eps: float = 1e-12  # BERT's LayerNorm epsilon
    hidden_act: str = "gelu"  # feed-forward activation (exact GELU)
    pad_token_id: int = 0  # [PAD]

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> BlipTextConfig:
        """Reads ``med_config.json``; keys this encoder does not use are ignored."""
        raw = json.loads(Path(path).read_text())
        if raw.get("hidden_act", "gelu") != "gelu" or raw.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"{path}: only hidden_act='gelu' and absolute position embeddings are supported")
        return cls(**{f.name: raw[f.name] for f in fields(cls) if f.name in raw})


# --- BLIP's BERT with cross-attention (med.py), key names kept ---------------------------------------
class _SelfAttention(nn.Module):
    """``query``/``key``/``value`` projections; keys and values may come from a wider encoder."""

    def __init__(self, width: int, heads: int, kv_width: int) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"hidden size {width} is not a multiple of the {heads} attention heads")
        self.heads = heads
        self.query = nn.Linear(width, width)
        self.key = nn.Linear(kv_width, width)
        self.value = nn.Linear(kv_width, width)

    def forward(self, x: torch.Tensor, kv: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b, n, w = x.shape
        split = lambda t: t.view(b, t.shape[1], self.heads, w // self.heads).transpose(1, 2)  # noqa: E731
        q, k, v = split(self.query(x)), split(self.key(kv)), split(self.value(kv))  # [B, h, L, d]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # softmax(q·kᵀ/√d + mask)·v
        return out.transpose(1, 2).reshape(b, n, w)


class _Output(nn.Module):
    """``dense`` then ``LayerNorm`` of the residual sum."""

    def __init__(self, in_width: int, width: int, eps: float) -> None:
        super().__init__()
        self.dense = nn.Linear(in_width, width)
        self.LayerNorm = nn.LayerNorm(width, eps=eps)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class _Attention(nn.Module):
    def __init__(self, cfg: BlipTextConfig, kv_width: int) -> None:
        super().__init__()
        self.self = _SelfAttention(cfg.hidden_size, cfg.num_attention_heads, kv_width)
        self.output = _Output(cfg.hidden_size, cfg.hidden_size, cfg.layer_norm_eps)

    def forward(self, x: torch.Tensor, kv: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return self.output(self.self(x, kv, mask), x)


class _Intermediate(nn.Module):
    def __init__(self, cfg: BlipTextConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.intermediate_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x))


class _Layer(nn.Module):
    """Self-attention over the prompt, cross-attention to the image tokens, feed-forward."""

    def __init__(self, cfg: BlipTextConfig, encoder_width: int) -> None:
        super().__init__()
        self.attention = _Attention(cfg, cfg.hidden_size)
        self.crossattention = _Attention(cfg, encoder_width)
        self.intermediate = _Intermediate(cfg)
        self.output = _Output(cfg.intermediate_size, cfg.hidden_size, cfg.layer_norm_eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, image_tokens: torch.Tensor) -> torch.Tensor:
        x = self.attention(x, x, mask)
        x = self.crossattention(x, image_tokens, None)  # every image token is attended (mask of ones)
        return self.output(self.intermediate(x), x)


class _Embeddings(nn.Module):
    """Word + learned absolute position embeddings (BLIP's BERT has no token-type embeddings)."""

    def __init__(self, cfg: BlipTextConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size, padding_idx=cfg.pad_token_id)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        return self.LayerNorm(self.word_embeddings(input_ids) + self.position_embeddings(positions))


class _Encoder(nn.Module):
    def __init__(self, cfg: BlipTextConfig, encoder_width: int) -> None:
        super().__init__()
        self.layer = nn.ModuleList(_Layer(cfg, encoder_width) for _ in range(cfg.num_hidden_layers))


class BlipTextEncoder(nn.Module):
    """BLIP's ``BertModel(add_pooling_layer=False)`` in multimodal mode: a bidirectional encoder
    whose every layer cross-attends to the image tokens."""

    def __init__(self, cfg: BlipTextConfig, encoder_width: int) -> None:
        super().__init__()
        self.embeddings = _Embeddings(cfg)
        self.encoder = _Encoder(cfg, encoder_width)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, image_tokens: torch.Tensor
    ) -> torch.Tensor:
        """input_ids, attention_mask [B, L]; image_tokens [B, N, W] -> text states [B, L, hidden]."""
        x = self.embeddings(input_ids)
        # BERT's additive padding mask: 0 where attended, -10000 at padding
        mask = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * -10000.0
        for layer in self.encoder.layer:
            x = layer(x, mask, image_tokens)
        return x


def _blip_vit(cfg: BlipVisionConfig) -> nn.Module:
    """BLIP's ViT is timm's (qkv bias, LayerNorm eps 1e-6, exact GELU, class token), headless."""
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(
        img_size=cfg.image_size,
        patch_size=cfg.patch_size,
        embed_dim=cfg.width,
        depth=cfg.layers,
        num_heads=cfg.heads,
        mlp_ratio=4.0,
        qkv_bias=True,
        num_classes=0,
        global_pool="",
    )


class ImageRewardModel(nn.Module):
    """The reference ``ImageReward`` module's scoring path, under its parameter names."""

    def __init__(self, vision: BlipVisionConfig = BlipVisionConfig(), text: BlipTextConfig = BlipTextConfig()) -> None:
        super().__init__()
        self.vision_config, self.text_config = vision, text
        self.blip: Any = nn.Module()  # named like the official BLIP so checkpoint keys match
        self.blip.visual_encoder = _blip_vit(vision)
        self.blip.text_encoder = BlipTextEncoder(text, encoder_width=vision.width)
        self.mlp = PreferenceMLP(text.hidden_size)  # the aesthetic predictor's head, on BLIP features

    def forward(self, pixels: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """pixels [B, 3, S, S] normalised; tokens [B, L] -> raw (unnormalised) reward [B]."""
        image_tokens = self.blip.visual_encoder.forward_features(pixels)  # [B, 1 + N, Wv]
        text_states = self.blip.text_encoder(input_ids, attention_mask, image_tokens)  # [B, L, H]
        return self.mlp(text_states[:, 0]).squeeze(-1).float()


class ImageRewardVerifier:
    """ImageReward, batched over images and prompts; differentiable with respect to the images
    unless ``preprocess_mode="official"`` (the reference's 8-bit Pillow resize)."""

    def __init__(
        self,
        model: ImageRewardModel,
        tokenizer,
        max_length: int = MAX_LENGTH,
        name: str = "imagereward",
        preprocess_mode: str = "float",
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.image_size = model.vision_config.image_size
        self.name = name
        self.preprocess_mode = check_preprocess(preprocess_mode)
        self.differentiable = preprocess_mode == "float"

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] in [0, 1] -> [B, 3, 224, 224]: bicubic shorter side, centre crop, CLIP norm."""
        resize = pil_resize_center_crop if self.preprocess_mode == "official" else resize_center_crop
        return normalize(resize(images, self.image_size), CLIP_MEAN, CLIP_STD)

    def tokenize(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """B prompts -> (input_ids, attention_mask) [B, 35], as the reference ``score``."""
        t = self.tokenizer(
            list(prompts), padding="max_length", truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return t["input_ids"], t["attention_mask"]

    def score(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        """images [B, 3, H, W] in [0, 1], B prompts -> normalised reward [B] (about N(0, 1) on real data)."""
        prompts = list(prompts)
        check_images(images, prompts)
        param = next(self.model.parameters())
        pixels = self.preprocess(images.to(device=param.device, dtype=torch.float32)).to(param.dtype)
        ids, mask = (t.to(param.device) for t in self.tokenize(prompts))
        raw = self.model(pixels, ids, mask)
        return (raw - REWARD_MEAN) / REWARD_STD


def load_bert_tokenizer(path: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None):
    """``bert-base-uncased`` from a local folder or the HF cache, with BLIP's extra tokens."""
    from transformers import BertTokenizer

    folder = resolve_folder(BERT_TOKENIZER, path, cache_dir)
    tok = BertTokenizer.from_pretrained(str(folder), local_files_only=True)
    # BLIP's init_tokenizer: ids 30522/30523 in bert-base-uncased; they never occur in a prompt's
    # tokens but size the embedding table
    tok.add_special_tokens({"bos_token": "[DEC]"})
    tok.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    return tok


def _med_config(option: str | os.PathLike | None, checkpoint: Path, cache_dir) -> Path | None:
    if option is not None:
        return resolve_file(IMAGEREWARD_MED_CONFIG, option)
    beside = checkpoint.parent / IMAGEREWARD_MED_CONFIG.filename
    return beside if beside.is_file() else find_file(IMAGEREWARD_MED_CONFIG, cache_dir)


def load_imagereward(
    path: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    *,
    tokenizer: str | os.PathLike | None = None,
    med_config: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    dtype: str | torch.dtype = "float32",
    vision: BlipVisionConfig | None = None,
    text: BlipTextConfig | None = None,
    preprocess: str = "float",
) -> ImageRewardVerifier:
    """Builds ImageReward from ``ImageReward.pt``, offline and strictly.

    ``path``: the checkpoint or its folder; ``tokenizer``: a ``bert-base-uncased`` folder;
    ``med_config``: BLIP's text config (default: next to the checkpoint, in the HF cache, else
    BLIP's published values). ``vision``/``text`` override the architecture (tests only).
    ``preprocess``: "float" (differentiable) or "official" (8-bit Pillow resize, as the reference).
    """
    check_preprocess(preprocess)
    ckpt = resolve_file(IMAGEREWARD, path, cache_dir)
    if text is None:
        med = _med_config(med_config, ckpt, cache_dir)
        text = BlipTextConfig.from_json(med) if med is not None else BlipTextConfig()
    tok = load_bert_tokenizer(tokenizer, cache_dir)
    if len(tok) > text.vocab_size:
        raise ValueError(
            f"the tokenizer has {len(tok)} tokens but the text encoder only {text.vocab_size}; pass the "
            "bert-base-uncased tokenizer (option tokenizer=) that matches ImageReward.pt"
        )
    model = ImageRewardModel(vision or BlipVisionConfig(), text)
    load_strict(model, load_weights(ckpt), ckpt, unused=UNUSED_KEYS)
    model = model.to(device=device, dtype=parse_dtype(dtype)).eval().requires_grad_(False)
    return ImageRewardVerifier(model, tok, preprocess_mode=preprocess)


@register_verifier(
    "imagereward",
    "ImageReward (Xu et al. 2023): BLIP reward model; THUDM/ImageReward ImageReward.pt",
    validate=validate_preprocess,
)
def imagereward_factory(
    device: str | torch.device = "cpu",
    path: str | None = None,
    tokenizer: str | None = None,
    med_config: str | None = None,
    cache_dir: str | None = None,
    dtype: str = "float32",
    preprocess: str = "float",
) -> ImageRewardVerifier:
    """Options: ``path`` (ImageReward.pt or its folder), ``tokenizer`` (bert-base-uncased folder),
    ``med_config``, ``cache_dir`` (HF cache), ``dtype``, ``preprocess`` ("float" or "official")."""
    return load_imagereward(
        path,
        device,
        tokenizer=tokenizer,
        med_config=med_config,
        cache_dir=cache_dir,
        dtype=dtype,
        preprocess=preprocess,
    )
