"""Adapter for Hunyuan-DiT (Li et al. 2024, "Hunyuan-DiT: A Powerful Multi-Resolution Diffusion
Transformer with Fine-Grained Chinese Understanding").

Hunyuan-DiT is a variance-preserving DiT (v-prediction in the released checkpoints) with learned
sigma, 2-D rotary position embeddings, and two text encoders: a bilingual CLIP-style BERT (77
tokens) and multilingual T5 (256 tokens), plus size and style conditioning. The adapter holds a
stock :class:`diffusers.HunyuanDiTPipeline`, reuses its ``encode_prompt`` (called once per text
encoder, as the pipeline does) and its rotary helpers, and keeps the epsilon/v half of the
learned-sigma output. Any of the core's VP solvers applies (the checkpoints ship DDPM, which is
stochastic; ``ddim`` is its deterministic counterpart).

Not applied: resolution binning (``use_resolution_binning``), ``guidance_rescale`` (0 by
default), and the safety checker (noise search scores raw decodes).
"""

from __future__ import annotations

from typing import Any

import torch

from noisesearch.core.adapter import ModelInfo, PromptEmbeddings
from noisesearch.models.adapters.transformer import TransformerPipelineAdapter

#: the pipeline's micro-conditioning defaults: original size, crop top-left (target size = output size)
ORIGINAL_SIZE = (1024, 1024)
CROPS_TOP_LEFT = (0, 0)


class HunyuanDiTAdapter(TransformerPipelineAdapter):
    """Hunyuan-DiT through a :class:`diffusers.HunyuanDiTPipeline`."""

    family = "hunyuan-dit"
    default_solver = "ddim"

    def __init__(self, pipe: Any, info: ModelInfo | None = None) -> None:
        super().__init__(pipe, info)
        self.prediction_type = self.scheduler_config.get("prediction_type", "epsilon")
        self._rotary: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}

    def size_multiple(self) -> int:
        # the pipeline rounds sizes down to multiples of 16; we ask for them instead
        return max(16, super().size_multiple())

    @torch.no_grad()
    def encode_prompts(
        self, prompts: list[str], negative_prompt: str | None, guided: bool, height: int, width: int
    ) -> PromptEmbeddings:
        common = dict(
            prompt=list(prompts),
            device=self.device,
            dtype=self.dtype,
            num_images_per_prompt=1,
            do_classifier_free_guidance=guided,
            negative_prompt=None if negative_prompt is None else [negative_prompt] * len(prompts),
        )
        # 1. BERT (77 tokens) and 2. mT5 (256 tokens), the lengths the pipeline fixes
        emb, neg_emb, mask, neg_mask = self.pipe.encode_prompt(**common, max_sequence_length=77, text_encoder_index=0)
        emb_t5, neg_emb_t5, mask_t5, neg_mask_t5 = self.pipe.encode_prompt(
            **common, max_sequence_length=256, text_encoder_index=1
        )
        # 3. size conditioning (original size, target size, crop) and style 0, one row per prompt
        meta = torch.tensor([list(ORIGINAL_SIZE + (height, width) + CROPS_TOP_LEFT)], dtype=emb.dtype)
        meta = meta.to(self.device).repeat(len(prompts), 1)
        style = torch.zeros(len(prompts), dtype=torch.long, device=self.device)
        embeds = PromptEmbeddings(
            prompts=list(prompts),
            cond={
                "encoder_hidden_states": emb,
                "text_embedding_mask": mask,
                "encoder_hidden_states_t5": emb_t5,
                "text_embedding_mask_t5": mask_t5,
                "image_meta_size": meta,
                "style": style,
            },
        )
        if guided:
            embeds.uncond = {
                "encoder_hidden_states": neg_emb,
                "text_embedding_mask": neg_mask,
                "encoder_hidden_states_t5": neg_emb_t5,
                "text_embedding_mask_t5": neg_mask_t5,
                "image_meta_size": meta,
                "style": style,
            }
        return embeds

    def _rotary_embedding(self, h: int, w: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """2-D RoPE for an h x w latent, computed as the pipeline does (from the pixel size, which
        it divides by 8, the released VAE's factor, then by the patch size)."""
        key = (h, w)
        if key not in self._rotary:
            from diffusers.models.embeddings import get_2d_rotary_pos_embed
            from diffusers.pipelines.hunyuandit.pipeline_hunyuandit import get_resize_crop_region_for_grid

            p = self.transformer.config.patch_size
            grid_h = h * self.vae_scale_factor // 8 // p
            grid_w = w * self.vae_scale_factor // 8 // p
            base_size = 512 // 8 // p
            self._rotary[key] = get_2d_rotary_pos_embed(
                self.transformer.inner_dim // self.transformer.num_heads,
                get_resize_crop_region_for_grid((grid_h, grid_w), base_size),
                (grid_h, grid_w),
                device=device,
                output_type="pt",
            )
        return self._rotary[key]

    def predict(self, x: torch.Tensor, timestep: torch.Tensor, conditioning: dict[str, torch.Tensor]) -> torch.Tensor:
        r, _, h, w = x.shape
        out = self.transformer(
            x.to(self.dtype),
            timestep.expand(r).to(self.dtype),
            encoder_hidden_states=conditioning["encoder_hidden_states"],
            text_embedding_mask=conditioning["text_embedding_mask"],
            encoder_hidden_states_t5=conditioning["encoder_hidden_states_t5"],
            text_embedding_mask_t5=conditioning["text_embedding_mask_t5"],
            image_meta_size=conditioning["image_meta_size"],
            style=conditioning["style"],
            image_rotary_emb=self._rotary_embedding(h, w, x.device),
            return_dict=False,
        )[0]
        # learned sigma: the pipeline always keeps the first half of the channels
        return out.chunk(2, dim=1)[0]
