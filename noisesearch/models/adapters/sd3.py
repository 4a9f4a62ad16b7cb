"""Adapter for Stable Diffusion 3 / 3.5 (Esser et al. 2024, "Scaling Rectified Flow Transformers").

SD 3.x is a rectified-flow model (``x_t = (1 - t) x0 + t eps``, the network predicts the velocity
``eps - x0``) with a joint-attention transformer (MMDiT) conditioned on two CLIP encoders and T5.
The adapter holds a stock :class:`diffusers.StableDiffusion3Pipeline` and reuses its own
``encode_prompt`` (CLIP-L + CLIP-G sequence padded to T5's width and concatenated with T5's, plus
the two pooled embeddings), so the conditioning is exactly the pipeline's; the denoising loop is
the core's ``flow-euler`` solver on the pipeline's ``FlowMatchEulerDiscreteScheduler`` grid.

Not supported: skip-layer guidance (SD 3.5 Medium's optional ``skip_guidance_layers``) and IP-Adapter.
"""

from __future__ import annotations

from typing import Any

import torch

from noisesearch.core.adapter import ModelInfo, PromptEmbeddings
from noisesearch.models.adapters.transformer import TransformerPipelineAdapter


class StableDiffusion3Adapter(TransformerPipelineAdapter):
    """SD 3.x through a :class:`diffusers.StableDiffusion3Pipeline` (``text_encoder_3`` may be None)."""

    family = "sd3"
    default_solver = "flow-euler"
    prediction_type = "flow"

    def __init__(self, pipe: Any, info: ModelInfo | None = None, max_sequence_length: int = 256) -> None:
        """``max_sequence_length``: T5 tokens per prompt (the pipeline's default, 256)."""
        super().__init__(pipe, info)
        self.max_sequence_length = max_sequence_length

    def set_timesteps_kwargs(self, num_steps: int, height: int, width: int) -> dict[str, Any]:
        """``mu`` of the resolution-dependent shift when the scheduler uses dynamic shifting (as
        the SD3 pipeline computes it from the number of image tokens); nothing otherwise."""
        cfg = self.scheduler_config
        if not cfg.get("use_dynamic_shifting"):
            return {}
        from diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3 import calculate_shift

        p = self.transformer.config.patch_size
        seq_len = (height // self.vae_scale_factor // p) * (width // self.vae_scale_factor // p)
        mu = calculate_shift(
            seq_len,
            cfg.get("base_image_seq_len", 256),
            cfg.get("max_image_seq_len", 4096),
            cfg.get("base_shift", 0.5),
            cfg.get("max_shift", 1.16),  # the SD3 pipeline's default (FLUX's is 1.15)
        )
        return {"mu": mu}

    @torch.no_grad()
    def encode_prompts(
        self, prompts: list[str], negative_prompt: str | None, guided: bool, height: int, width: int
    ) -> PromptEmbeddings:
        cond, uncond, pooled, uncond_pooled = self.pipe.encode_prompt(
            prompt=list(prompts),
            prompt_2=None,
            prompt_3=None,
            device=self.device,
            num_images_per_prompt=1,
            do_classifier_free_guidance=guided,
            negative_prompt=None if negative_prompt is None else [negative_prompt] * len(prompts),
            max_sequence_length=self.max_sequence_length,
        )
        embeds = PromptEmbeddings(
            prompts=list(prompts), cond={"encoder_hidden_states": cond, "pooled_projections": pooled}
        )
        if guided:
            embeds.uncond = {"encoder_hidden_states": uncond, "pooled_projections": uncond_pooled}
        return embeds

    def predict(self, x: torch.Tensor, timestep: torch.Tensor, conditioning: dict[str, torch.Tensor]) -> torch.Tensor:
        # the transformer embeds a [R] timestep t * 1000 (the scheduler's timesteps); output: velocity
        return self.transformer(
            hidden_states=x.to(self.dtype),
            timestep=timestep.expand(x.shape[0]),
            encoder_hidden_states=conditioning["encoder_hidden_states"],
            pooled_projections=conditioning["pooled_projections"],
            return_dict=False,
        )[0]
