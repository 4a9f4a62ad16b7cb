"""Component configs and builders for the embedded toyworld text-to-image model.

Every component is a stock diffusers / transformers class built from a plain config dict, so the
trained folder loads offline with ``StableDiffusionPipeline.from_pretrained(folder)``. Nothing is
downloaded: the tokenizer's BPE vocabulary and merges are constructed here from the grammar's word
list so that every grammar word is exactly one token.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
WORD_SUFFIX = "</w>"
# CLIP's pre-tokenizer split (letters runs, single digits, punctuation runs).
_PRETOKEN_RE = re.compile(r"'s|'t|'re|'ve|'m|'ll|'d|[^\W\d_]+|\d|[^\s\w]+|_+")


# --------------------------------------------------------------------------------------------
# Configs
# --------------------------------------------------------------------------------------------


def vae_config(image_size: int = 32) -> dict[str, Any]:
    """AutoencoderKL with three blocks (downsampling factor 4): 3x32x32 images -> 4x8x8 latents."""
    return dict(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(32, 64, 64),
        layers_per_block=1,
        act_fn="silu",
        latent_channels=4,
        norm_num_groups=16,
        sample_size=image_size,
        scaling_factor=1.0,  # replaced by 1/std(latents) after the VAE is trained
    )


def text_encoder_config(vocab_size: int, max_length: int, bos_id: int, eos_id: int) -> dict[str, Any]:
    """A tiny CLIP text transformer (causal, like CLIP); its last hidden state is the UNet context."""
    return dict(
        vocab_size=vocab_size,
        hidden_size=128,
        intermediate_size=512,
        num_hidden_layers=3,
        num_attention_heads=4,
        max_position_embeddings=max_length,
        hidden_act="quick_gelu",
        projection_dim=128,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
    )


def unet_config(latent_size: int = 8, cross_attention_dim: int = 128) -> dict[str, Any]:
    """UNet2DConditionModel for 4x8x8 latents with cross-attention at 8x8 and 4x4."""
    return dict(
        sample_size=latent_size,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(64, 96, 96),
        layers_per_block=1,
        attention_head_dim=8,
        cross_attention_dim=cross_attention_dim,
        norm_num_groups=32,
    )


def scheduler_config(prediction_type: str = "epsilon") -> dict[str, Any]:
    """Stable Diffusion's noise schedule (scaled_linear 0.00085 -> 0.012, 1000 steps) as DDIM."""
    if prediction_type not in ("epsilon", "v_prediction"):
        raise ValueError(f"prediction_type must be 'epsilon' or 'v_prediction', got {prediction_type!r}")
    return dict(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type=prediction_type,
    )


# --------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable unicode map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def pretokenize(text: str) -> list[str]:
    """Split text the way CLIP's pre-tokenizer does (lowercased letter runs, digits, punctuation)."""
    return _PRETOKEN_RE.findall(text.lower())


def _learn_merges(pieces: Iterable[str]) -> list[tuple[str, str]]:
    """Greedy BPE training until every piece is a single symbol (deterministic tie-breaking)."""
    b2u = _bytes_to_unicode()
    words: list[list[str]] = []
    for piece in sorted(set(pieces)):
        syms = [b2u[b] for b in piece.encode("utf-8")]
        syms[-1] += WORD_SUFFIX
        words.append(syms)
    merges: list[tuple[str, str]] = []
    while True:
        counts: Counter[tuple[str, str]] = Counter()
        for w in words:
            for pair in zip(w[:-1], w[1:]):
                counts[pair] += 1
        if not counts:
            return merges
        best = min(counts, key=lambda p: (-counts[p], p))
        merges.append(best)
        joined = best[0] + best[1]
        for i, w in enumerate(words):
            out: list[str] = []
            j = 0
            while j < len(w):
                if j + 1 < len(w) and (w[j], w[j + 1]) == best:
                    out.append(joined)
                    j += 2
                else:
                    out.append(w[j])
                    j += 1
            words[i] = out


def build_tokenizer(words: Sequence[str], max_length: int = 16) -> CLIPTokenizer:
    """A CLIPTokenizer whose BPE merges make every (pre-tokenized) word in `words` one token.

    Layout follows CLIP: 256 byte symbols, the same with the end-of-word suffix, learned merges,
    then ``<|startoftext|>`` and ``<|endoftext|>`` (also used for padding and unknowns).
    """
    if max_length < 3:
        raise ValueError(f"max_length must be >= 3 (BOS, a word, EOS), got {max_length}")
    pieces = [p for w in words for p in pretokenize(w)]
    if not pieces:
        raise ValueError("words must contain at least one word with letters, digits or punctuation")
    b2u = _bytes_to_unicode()
    symbols = list(b2u.values())
    vocab_list = symbols + [s + WORD_SUFFIX for s in symbols]
    merges = _learn_merges(pieces)
    seen = set(vocab_list)
    for a, b in merges:
        if a + b not in seen:
            vocab_list.append(a + b)
            seen.add(a + b)
    vocab_list += [BOS_TOKEN, EOS_TOKEN]
    vocab = {tok: i for i, tok in enumerate(vocab_list)}
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=max_length)


def save_tokenizer(tokenizer: CLIPTokenizer, folder: str | Path) -> None:
    """Save with ``save_pretrained`` and make sure the classic vocab.json / merges.txt exist too."""
    folder = Path(folder)
    tokenizer.save_pretrained(folder)
    backend = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
    if not (folder / "vocab.json").exists():
        (folder / "vocab.json").write_text(json.dumps(backend["vocab"], ensure_ascii=False))
    if not (folder / "merges.txt").exists():
        lines = [m if isinstance(m, str) else " ".join(m) for m in backend["merges"]]
        (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(lines) + "\n")


# --------------------------------------------------------------------------------------------
# Builders
# --------------------------------------------------------------------------------------------


def build_vae(image_size: int = 32) -> AutoencoderKL:
    """A freshly initialised toyworld VAE."""
    return AutoencoderKL(**vae_config(image_size))


def build_text_encoder(tokenizer: CLIPTokenizer) -> CLIPTextModel:
    """A freshly initialised tiny CLIP text encoder sized to `tokenizer`."""
    cfg = text_encoder_config(
        vocab_size=len(tokenizer),
        max_length=tokenizer.model_max_length,
        bos_id=tokenizer.bos_token_id,
        eos_id=tokenizer.eos_token_id,
    )
    return CLIPTextModel(CLIPTextConfig(**cfg))


def build_unet(latent_size: int = 8, cross_attention_dim: int = 128) -> UNet2DConditionModel:
    """A freshly initialised toyworld UNet."""
    return UNet2DConditionModel(**unet_config(latent_size, cross_attention_dim))


def build_scheduler(prediction_type: str = "epsilon") -> DDIMScheduler:
    """The shipped sampling scheduler (DDIM over SD's training schedule)."""
    return DDIMScheduler(**scheduler_config(prediction_type))


def count_params(module: Any) -> int:
    """Number of parameters of a torch module."""
    return sum(p.numel() for p in module.parameters())
