"""Adapter for PixArt-Sigma (Chen et al. 2024, "PixArt-Sigma: Weak-to-Strong Training of
Diffusion Transformer for 4K Text-to-Image Generation").

PixArt-Sigma is a DiT with adaLN-single timestep conditioning and cross-attention to T5 tokens,
trained as a variance-preserving epsilon model with *learned sigma* (Nichol & Dhariwal 2021): the
transformer outputs 2C channels, the epsilon prediction and the variance interpolation; the
deterministic solvers use only the first C, as the pipeline does. The adapter holds a stock
:class:`diffusers.PixArtSigmaPipeline` and reuses its ``encode_prompt`` (T5 embeddings with their
attention mask). Any of the core's VP solvers applies; the checkpoints ship DPM-Solver++.

Resolution binning (the pipeline's ``use_resolution_binning``: generate at the nearest trained
aspect-ratio bucket, then resize) is not applied: candidates are generated at the requested size.
"""

from __future__ import annotations

from typing import Any

import torch

from noisesearch.core.adapter import ModelInfo, PromptEmbeddings
from noisesearch.models.adapters.transformer import TransformerPipelineAdapter


class PixArtSigmaAdapter(TransformerPipelineAdapter):
    """PixArt-Sigma through a :class:`diffusers.PixArtSigmaPipeline`."""

    family = "pixart-sigma"
    default_solver = "dpm++2m"

    def __init__(
        self, pipe: Any, info: ModelInfo | None = None, max_sequence_length: int = 300, clean_caption: bool = True
    ) -> None:
        """``max_sequence_length`` (300) and ``clean_caption`` (True; a no-op with a warning when
        ``bs4``/``ftfy`` are missing) are the pipeline's defaults."""
        super().__init__(pipe, info)
        self.prediction_type = self.scheduler_config.get("prediction_type", "epsilon")
        self.max_sequence_length = max_sequence_length
        self.clean_caption = clean_caption

    @property
    def learned_sigma(self) -> bool:
        cfg = self.transformer.config
        return cfg.out_channels // 2 == cfg.in_channels

    @torch.no_grad()
    def encode_prompts(
        self, prompts: list[str], negative_prompt: str | None, guided: bool, height: int, width: int
    ) -> PromptEmbeddings:
        cond, mask, uncond, uncond_mask = self.pipe.encode_prompt(
            list(prompts),
            do_classifier_free_guidance=guided,
            negative_prompt="" if negative_prompt is None else negative_prompt,
            num_images_per_prompt=1,
            device=self.device,
            clean_caption=self.clean_caption,
            max_sequence_length=self.max_sequence_length,
        )
        embeds = PromptEmbeddings(
            prompts=list(prompts), cond={"encoder_hidden_states": cond, "encoder_attention_mask": mask}
        )
        if guided:
            embeds.uncond = {"encoder_hidden_states": uncond, "encoder_attention_mask": uncond_mask}
        return embeds

    def predict(self, x: torch.Tensor, timestep: torch.Tensor, conditioning: dict[str, torch.Tensor]) -> torch.Tensor:
        out = self.transformer(
            x.to(self.dtype),
            encoder_hidden_states=conditioning["encoder_hidden_states"],
            encoder_attention_mask=conditioning["encoder_attention_mask"],
            timestep=timestep.expand(x.shape[0]),
            # PixArt-Sigma has no size/aspect micro-conditioning (PixArt-Alpha 1024 did)
            added_cond_kwargs={"resolution": None, "aspect_ratio": None},
            return_dict=False,
        )[0]
        # learned sigma: [R, 2C] -> the epsilon half [R, C] (guidance is linear per channel)
        return out.chunk(2, dim=1)[0] if self.learned_sigma else out
