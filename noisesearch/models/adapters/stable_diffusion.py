"""Adapters for Stable Diffusion 1.x/2.x (epsilon and v prediction) and SDXL.

They hold the components of a stock diffusers pipeline and reuse its own ``encode_prompt`` (and,
for SDXL, ``_get_add_time_ids``), so conditioning is exactly the pipeline's; the denoising loop is
the core's.
"""

from __future__ import annotations

from typing import Any

import torch

from noisesearch.core.adapter import ModelInfo, PromptEmbeddings


class StableDiffusionAdapter:
    """Stable Diffusion 1.x / 2.x through a :class:`diffusers.StableDiffusionPipeline`."""

    default_solver = "ddim"

    def __init__(self, pipe: Any, info: ModelInfo | None = None) -> None:
        self.pipe = pipe
        self.unet = pipe.unet
        self.vae = pipe.vae
        self.device = self.unet.device
        self.dtype = self.unet.dtype
        self.scheduler_config = dict(pipe.scheduler.config)
        self.prediction_type = self.scheduler_config.get("prediction_type", "epsilon")
        self.info = info or ModelInfo(name=type(pipe).__name__, family="sd", pipeline_class=type(pipe).__name__)
        if getattr(self.unet.config, "time_cond_proj_dim", None) is not None:
            raise ValueError("guidance-distilled UNets (time_cond_proj_dim set, e.g. LCM) are not supported yet")

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def default_size(self) -> tuple[int, int]:
        size = self.unet.config.sample_size
        h, w = (size, size) if isinstance(size, int) else tuple(size)
        return h * self.vae_scale_factor, w * self.vae_scale_factor

    def latent_shape(self, height: int, width: int) -> tuple[int, ...]:
        f = self.vae_scale_factor
        if height % f or width % f:
            raise ValueError(f"height and width must be multiples of {f} for this model, got {height}x{width}")
        return (self.unet.config.in_channels, height // f, width // f)

    @torch.no_grad()
    def encode_prompts(
        self, prompts: list[str], negative_prompt: str | None, guided: bool, height: int, width: int
    ) -> PromptEmbeddings:
        cond, uncond = self.pipe.encode_prompt(
            prompts,
            self.device,
            1,
            guided,
            negative_prompt=None if negative_prompt is None else [negative_prompt] * len(prompts),
        )
        return PromptEmbeddings(
            prompts=list(prompts),
            cond={"encoder_hidden_states": cond},
            uncond={"encoder_hidden_states": uncond} if guided else None,
        )

    def predict(self, x: torch.Tensor, timestep: torch.Tensor, conditioning: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.unet(
            x.to(self.dtype),
            timestep,
            encoder_hidden_states=conditioning["encoder_hidden_states"],
            return_dict=False,
        )[0]

    def _unscale_latents(self, latents: torch.Tensor) -> torch.Tensor:
        cfg = self.vae.config
        mean, std = getattr(cfg, "latents_mean", None), getattr(cfg, "latents_std", None)
        if mean is not None and std is not None:
            c = latents.shape[1]
            mean_t = torch.tensor(mean).view(1, c, 1, 1).to(latents.device, latents.dtype)
            std_t = torch.tensor(std).view(1, c, 1, 1).to(latents.device, latents.dtype)
            return latents * std_t / cfg.scaling_factor + mean_t
        return latents / cfg.scaling_factor

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        vae_dtype = next(self.vae.parameters()).dtype
        z = self._unscale_latents(latents.to(self.dtype)).to(vae_dtype)
        image = self.vae.decode(z, return_dict=False)[0]
        return (image.float() / 2 + 0.5).clamp(0, 1)


class StableDiffusionXLAdapter(StableDiffusionAdapter):
    """SDXL through a :class:`diffusers.StableDiffusionXLPipeline`: two text encoders, pooled
    text embeddings and size/crop micro-conditioning (``time_ids``)."""

    default_solver = "euler"

    def __init__(self, pipe: Any, info: ModelInfo | None = None) -> None:
        super().__init__(
            pipe, info or ModelInfo(name=type(pipe).__name__, family="sdxl", pipeline_class=type(pipe).__name__)
        )

    @torch.no_grad()
    def encode_prompts(
        self, prompts: list[str], negative_prompt: str | None, guided: bool, height: int, width: int
    ) -> PromptEmbeddings:
        pipe = self.pipe
        cond, uncond, pooled, uncond_pooled = pipe.encode_prompt(
            prompt=prompts,
            device=self.device,
            num_images_per_prompt=1,
            do_classifier_free_guidance=guided,
            negative_prompt=None if negative_prompt is None else [negative_prompt] * len(prompts),
        )
        if pipe.text_encoder_2 is None:
            projection_dim = int(pooled.shape[-1])
        else:
            projection_dim = pipe.text_encoder_2.config.projection_dim
        # micro-conditioning (original size, crop top-left, target size), the pipeline's defaults
        time_ids = pipe._get_add_time_ids(
            (height, width), (0, 0), (height, width), dtype=cond.dtype, text_encoder_projection_dim=projection_dim
        ).to(self.device)
        time_ids = time_ids.repeat(len(prompts), 1)
        embeds = PromptEmbeddings(
            prompts=list(prompts),
            cond={"encoder_hidden_states": cond, "text_embeds": pooled, "time_ids": time_ids},
        )
        if guided:
            embeds.uncond = {"encoder_hidden_states": uncond, "text_embeds": uncond_pooled, "time_ids": time_ids}
        return embeds

    def predict(self, x: torch.Tensor, timestep: torch.Tensor, conditioning: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.unet(
            x.to(self.dtype),
            timestep,
            encoder_hidden_states=conditioning["encoder_hidden_states"],
            added_cond_kwargs={"text_embeds": conditioning["text_embeds"], "time_ids": conditioning["time_ids"]},
            return_dict=False,
        )[0]

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        # SDXL's VAE overflows in fp16 (config.force_upcast): decode in fp32 as the pipeline does
        if self.vae.dtype == torch.float16 and getattr(self.vae.config, "force_upcast", False):
            self.vae.to(torch.float32)
        return super().decode(latents)
