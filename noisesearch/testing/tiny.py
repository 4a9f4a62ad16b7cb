"""Tiny random-weight diffusers pipelines built from configs, with no hub access.

Used by the tests (equivalence with the stock pipelines), by benchmarks, and as a stand-in model.
Everything is deterministic given ``seed``.
"""

from __future__ import annotations

import json
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

import torch

SD_SCHEDULER_CONFIG: dict[str, Any] = {
    # Stable Diffusion 1.x's scheduler config (PNDM in the original release; the betas are what matter)
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "prediction_type": "epsilon",
}


def _bytes_to_unicode() -> dict[int, str]:
    # the reversible byte -> printable-unicode map of GPT-2/CLIP BPE
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


@cache
def tiny_tokenizer_dir(max_length: int = 16) -> str:
    """A character-level CLIP BPE vocabulary (no merges) written to a temporary folder."""
    chars = list(_bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    folder = Path(tempfile.mkdtemp(prefix="noisesearch-tok-"))
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    (folder / "tokenizer_config.json").write_text(json.dumps({"model_max_length": max_length}))
    return str(folder)


def tiny_clip_tokenizer(max_length: int = 16) -> Any:
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(tiny_tokenizer_dir(max_length))


def _text_encoder(seed: int, hidden: int, projection: int | None = None, max_length: int = 16) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    cfg = CLIPTextConfig(
        vocab_size=514,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=max_length,
        bos_token_id=512,
        eos_token_id=513,
        pad_token_id=513,
        projection_dim=projection or hidden,
    )
    cls = CLIPTextModelWithProjection if projection else CLIPTextModel
    return cls(cfg).eval()


def _vae(seed: int) -> Any:
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(16, 32),
        latent_channels=4,
        norm_num_groups=8,
        layers_per_block=1,
        sample_size=32,
    ).eval()


def tiny_sd_pipeline(seed: int = 0, prediction_type: str = "epsilon", sample_size: int = 8) -> Any:
    """A StableDiffusionPipeline with ~0.5M random parameters (32x32 images, 4x16x16 latents by default)."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=4,
        out_channels=4,
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=4,
        norm_num_groups=8,
    ).eval()
    scheduler = DDIMScheduler.from_config({**SD_SCHEDULER_CONFIG, "prediction_type": prediction_type})
    return StableDiffusionPipeline(
        vae=_vae(seed + 1),
        text_encoder=_text_encoder(seed + 2, hidden=32),
        tokenizer=tiny_clip_tokenizer(),
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def tiny_sdxl_pipeline(seed: int = 0, sample_size: int = 8) -> Any:
    """A StableDiffusionXLPipeline with two tiny text encoders and SDXL's added conditioning."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=4,
        out_channels=4,
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=64,  # 32 + 32 from the two text encoders
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=8 * 6 + 32,
        norm_num_groups=8,
    ).eval()
    scheduler = EulerDiscreteScheduler.from_config(SD_SCHEDULER_CONFIG)
    return StableDiffusionXLPipeline(
        vae=_vae(seed + 1),
        text_encoder=_text_encoder(seed + 2, hidden=32),
        text_encoder_2=_text_encoder(seed + 3, hidden=32, projection=32),
        tokenizer=tiny_clip_tokenizer(),
        tokenizer_2=tiny_clip_tokenizer(),
        unet=unet,
        scheduler=scheduler,
    )


# --- transformer pipelines (SD 3.x, FLUX.1, PixArt-Sigma, Hunyuan-DiT) ---------------------------

#: characters the tiny T5 / BERT vocabularies spell words with (anything else is <unk>)
_TINY_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789"


@cache
def _tiny_t5_pieces() -> tuple[tuple[str, float], ...]:
    # SentencePiece-style Unigram pieces: specials, word-initial ("▁x") and inner characters
    specials = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -3.0)]
    return tuple(specials + [("▁" + c, -1.0) for c in _TINY_CHARS] + [(c, -2.0) for c in _TINY_CHARS])


def tiny_t5_tokenizer(max_length: int = 32) -> Any:
    """A character-level T5 tokenizer (Unigram model built in code: no sentencepiece, no hub).

    transformers builds the ``tokenizers`` Unigram from a list of (piece, score); ids 0/1/2 are
    <pad>/</s>/<unk> as in T5's real vocabulary.
    """
    from transformers import T5Tokenizer

    return T5Tokenizer(vocab=list(_tiny_t5_pieces()), extra_ids=0, model_max_length=max_length)


def tiny_bert_tokenizer(max_length: int = 77) -> Any:
    """A character-level WordPiece BERT tokenizer (Hunyuan-DiT's first text encoder), built in code."""
    from transformers import BertTokenizer

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list(_TINY_CHARS) + ["##" + c for c in _TINY_CHARS]
    return BertTokenizer(vocab={w: i for i, w in enumerate(words)}, model_max_length=max_length)


def _t5_encoder(seed: int, d_model: int = 32) -> Any:
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    cfg = T5Config(
        vocab_size=len(_tiny_t5_pieces()),
        d_model=d_model,
        d_kv=8,
        d_ff=2 * d_model,
        num_layers=1,
        num_heads=d_model // 8,
        relative_attention_num_buckets=8,
        dropout_rate=0.0,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    return T5EncoderModel(cfg).eval()


def _bert_encoder(seed: int, hidden: int = 32) -> Any:
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    cfg = BertConfig(
        vocab_size=len(tiny_bert_tokenizer()),
        hidden_size=hidden,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=80,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        pad_token_id=0,
    )
    return BertModel(cfg).eval()


def _flow_vae(seed: int, latent_channels: int = 4) -> Any:
    """SD3/FLUX-style VAE: no quant convs, latents normalised with a shift as well as a scale."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(16, 32),
        latent_channels=latent_channels,
        norm_num_groups=8,
        layers_per_block=1,
        sample_size=32,
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=0.0609,  # SD3's values
        scaling_factor=1.5035,
    ).eval()


def tiny_sd3_pipeline(seed: int = 0, with_t5: bool = True, dynamic_shifting: bool = False) -> Any:
    """A StableDiffusion3Pipeline: MMDiT on 4x16x16 latents (32x32 images), two CLIP encoders
    (16 + 16 wide, pooled 32) and a 32-wide T5 (or none: the pipeline then feeds zeros)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    torch.manual_seed(seed)
    transformer = SD3Transformer2DModel(
        sample_size=16,
        patch_size=2,
        in_channels=4,
        num_layers=1,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=32,  # T5 width; the two CLIP sequences (16 + 16) are padded to it
        caption_projection_dim=16,  # = heads * head_dim
        pooled_projection_dim=32,  # the two pooled CLIP embeddings, concatenated
        out_channels=4,
        pos_embed_max_size=16,
    ).eval()
    shifting = {"use_dynamic_shifting": True, "base_shift": 0.5, "max_shift": 1.16} if dynamic_shifting else {}
    return StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0, **shifting),
        vae=_flow_vae(seed + 1),
        text_encoder=_text_encoder(seed + 2, hidden=16, projection=16),
        tokenizer=tiny_clip_tokenizer(),
        text_encoder_2=_text_encoder(seed + 3, hidden=16, projection=16),
        tokenizer_2=tiny_clip_tokenizer(),
        text_encoder_3=_t5_encoder(seed + 4) if with_t5 else None,
        tokenizer_3=tiny_t5_tokenizer() if with_t5 else None,
    )


def tiny_flux_pipeline(seed: int = 0, guidance_embeds: bool = True) -> Any:
    """A FluxPipeline ([dev]-like with ``guidance_embeds``, else [schnell]-like): 4x16x16 latents
    packed to 64 tokens of 16 channels, CLIP (16 wide, pooled) and T5 (32 wide), dynamic shift."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=16,  # 4 latent channels x 2x2 packing
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=16,
        guidance_embeds=guidance_embeds,
        axes_dims_rope=(4, 6, 6),  # sums to the head dim
    ).eval()
    scheduler = FlowMatchEulerDiscreteScheduler(  # FLUX.1's scheduler config
        shift=3.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    )
    pipe = FluxPipeline(
        scheduler=scheduler,
        vae=_flow_vae(seed + 1),
        text_encoder=_text_encoder(seed + 2, hidden=16),
        tokenizer=tiny_clip_tokenizer(),
        text_encoder_2=_t5_encoder(seed + 3),
        tokenizer_2=tiny_t5_tokenizer(),
        transformer=transformer,
    )
    pipe.default_sample_size = 16  # the pipeline hard-codes 128 (1024 px); 32 px here
    return pipe


#: PixArt-Sigma's released scheduler config (DPM-Solver++ 2M on a linear beta schedule)
PIXART_SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "prediction_type": "epsilon",
    "algorithm_type": "dpmsolver++",
    "solver_order": 2,
    "solver_type": "midpoint",
    "lower_order_final": True,
    "steps_offset": 0,
    "timestep_spacing": "linspace",
}


def tiny_pixart_sigma_pipeline(seed: int = 0) -> Any:
    """A PixArtSigmaPipeline: DiT with learned sigma (8 output channels for 4 latent channels)
    on 4x16x16 latents (32x32 images), cross-attending to a 32-wide T5."""
    from diffusers import DPMSolverMultistepScheduler, PixArtSigmaPipeline, PixArtTransformer2DModel

    torch.manual_seed(seed)
    transformer = PixArtTransformer2DModel(
        sample_size=16,
        num_layers=1,
        patch_size=2,
        attention_head_dim=8,
        num_attention_heads=2,
        caption_channels=32,
        in_channels=4,
        cross_attention_dim=16,  # = heads * head_dim
        out_channels=8,  # learned sigma
        attention_bias=True,
        activation_fn="gelu-approximate",
        num_embeds_ada_norm=1000,
        norm_type="ada_norm_single",
        norm_elementwise_affine=False,
        norm_eps=1e-6,
        use_additional_conditions=False,
    ).eval()
    return PixArtSigmaPipeline(
        tokenizer=tiny_t5_tokenizer(),
        text_encoder=_t5_encoder(seed + 2),
        vae=_vae(seed + 1),
        transformer=transformer,
        scheduler=DPMSolverMultistepScheduler.from_config(PIXART_SCHEDULER_CONFIG),
    )


def _vae_f8(seed: int) -> Any:
    """A VAE with the released models' 8x downsampling (Hunyuan-DiT's pipeline assumes it)."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 8, 8),
        latent_channels=4,
        norm_num_groups=8,
        layers_per_block=1,
        sample_size=32,
    ).eval()


def tiny_hunyuan_dit_pipeline(seed: int = 0, prediction_type: str = "v_prediction") -> Any:
    """A HunyuanDiTPipeline: DiT with learned sigma and 2-D RoPE on 4x4x4 latents (32x32 images,
    8x VAE), a 32-wide BERT (77 tokens) and a 32-wide T5 (256 tokens)."""
    from diffusers import DDPMScheduler, HunyuanDiT2DModel, HunyuanDiTPipeline

    torch.manual_seed(seed)
    transformer = HunyuanDiT2DModel(
        sample_size=4,
        patch_size=2,
        in_channels=4,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=2,
        hidden_size=16,  # = heads * head_dim
        cross_attention_dim=32,  # BERT width
        cross_attention_dim_t5=32,  # T5 width
        pooled_projection_dim=16,
        activation_fn="gelu-approximate",
    ).eval()
    # Hunyuan-DiT ships DDPM with v-prediction on a scaled-linear schedule
    scheduler = DDPMScheduler.from_config({**SD_SCHEDULER_CONFIG, "beta_end": 0.03, "prediction_type": prediction_type})
    return HunyuanDiTPipeline(
        vae=_vae_f8(seed + 1),
        text_encoder=_bert_encoder(seed + 2),
        tokenizer=tiny_bert_tokenizer(),
        transformer=transformer,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
        text_encoder_2=_t5_encoder(seed + 3),
        tokenizer_2=tiny_t5_tokenizer(max_length=256),
    )
