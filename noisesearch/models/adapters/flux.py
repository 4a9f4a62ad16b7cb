"""Adapter for FLUX.1 [dev] and [schnell] (Black Forest Labs 2024).

FLUX.1 is a rectified-flow transformer (double- and single-stream blocks, rotary position ids)
conditioned on T5 tokens and a pooled CLIP embedding. Three things differ from SD 3.x:

* **Packed latents.** The transformer sees 2x2 patches of the VAE latents as tokens,
  [B, C, h, w] -> [B, (h/2)(w/2), 4C]. The core keeps latents unpacked, so that candidate noise is
  the very tensor the pipeline draws for a seed (before packing) and every solver stays
  element-wise; the adapter packs before the network and unpacks its output (a permutation).
* **Embedded guidance.** [dev] is guidance-distilled: the guidance scale is an input of the
  network (``guidance_embeds=True``), there are no unconditional rows. The adapter declares
  ``guidance_mode = "embedded"``; the core then runs one row per candidate and passes the scale
  in the conditioning as ``"guidance"``. [schnell] has no guidance input and ignores the scale.
* **Resolution-dependent shift.** The pipeline's sigma grid is ``linspace(1, 1/n, n)`` shifted by
  ``mu``, a linear function of the number of image tokens; :meth:`set_timesteps_kwargs` hands both
  to the core's schedule.

The adapter reuses the pipeline's ``encode_prompt``, ``_pack_latents``/``_unpack_latents`` and
``_prepare_latent_image_ids``. Not supported: "true CFG" with a negative prompt (``true_cfg_scale``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from noisesearch.core.adapter import ModelInfo, PromptEmbeddings
from noisesearch.models.adapters.transformer import TransformerPipelineAdapter


class FluxAdapter(TransformerPipelineAdapter):
    """FLUX.1 through a :class:`diffusers.FluxPipeline`."""

    family = "flux"
    default_solver = "flow-euler"
    prediction_type = "flow"
    guidance_mode = "embedded"

    def __init__(self, pipe: Any, info: ModelInfo | None = None, max_sequence_length: int = 512) -> None:
        """``max_sequence_length``: T5 tokens per prompt (the pipeline's default, 512)."""
        super().__init__(pipe, info)
        self.max_sequence_length = max_sequence_length
        self._image_ids: dict[tuple[int, int], torch.Tensor] = {}

    @property
    def guidance_embeds(self) -> bool:
        """True for [dev] (guidance is a network input), False for [schnell]."""
        return bool(self.transformer.config.guidance_embeds)

    def default_size(self) -> tuple[int, int]:
        size = self.pipe.default_sample_size * self.vae_scale_factor
        return size, size

    @property
    def latent_channels(self) -> int:
        # unpacked latents [C, h, w] with C = in_channels / 4 and h, w even (2x2 packing)
        return int(self.transformer.config.in_channels) // 4

    def size_multiple(self) -> int:
        return self.vae_scale_factor * 2

    def set_timesteps_kwargs(self, num_steps: int, height: int, width: int) -> dict[str, Any]:
        """The FLUX pipeline's grid: ``sigmas = linspace(1, 1/n, n)`` and shift ``mu`` from the token count."""
        from diffusers.pipelines.flux.pipeline_flux import calculate_shift

        cfg = self.scheduler_config
        _, h, w = self.latent_shape(height, width)
        mu = calculate_shift(
            (h // 2) * (w // 2),
            cfg.get("base_image_seq_len", 256),
            cfg.get("max_image_seq_len", 4096),
            cfg.get("base_shift", 0.5),
            cfg.get("max_shift", 1.15),
        )
        kwargs: dict[str, Any] = {"mu": mu}
        if not cfg.get("use_flow_sigmas"):
            kwargs["sigmas"] = np.linspace(1.0, 1 / num_steps, num_steps)
        return kwargs

    @torch.no_grad()
    def encode_prompts(
        self, prompts: list[str], negative_prompt: str | None, guided: bool, height: int, width: int
    ) -> PromptEmbeddings:
        if negative_prompt is not None:
            raise ValueError(
                "FLUX.1 is guidance-distilled and takes no negative prompt here; drop the negative prompt "
                "(the guidance scale is embedded in the network)"
            )
        if guided:  # pragma: no cover - the core never asks an "embedded" adapter for CFG rows
            raise AssertionError("FLUX.1 adapter asked for classifier-free guidance rows")
        cond, pooled, text_ids = self.pipe.encode_prompt(
            prompt=list(prompts),
            prompt_2=None,
            device=self.device,
            num_images_per_prompt=1,
            max_sequence_length=self.max_sequence_length,
        )
        # txt_ids [L, 3] are the same for every prompt; stored per prompt so the core can index rows
        txt_ids = text_ids.unsqueeze(0).expand(len(prompts), -1, -1)
        return PromptEmbeddings(
            prompts=list(prompts),
            cond={"encoder_hidden_states": cond, "pooled_projections": pooled, "txt_ids": txt_ids},
        )

    def _img_ids(self, h: int, w: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        key = (h, w)
        if key not in self._image_ids:
            self._image_ids[key] = self.pipe._prepare_latent_image_ids(1, h // 2, w // 2, device, dtype)
        return self._image_ids[key]

    def predict(self, x: torch.Tensor, timestep: torch.Tensor, conditioning: dict[str, torch.Tensor]) -> torch.Tensor:
        r, c, h, w = x.shape
        packed = self.pipe._pack_latents(x.to(self.dtype), r, c, h, w)  # [R, (h/2)(w/2), 4C]
        guidance = None
        if self.guidance_embeds:
            if "guidance" not in conditioning:
                raise ValueError("FLUX.1 [dev] needs a guidance scale in the conditioning (key 'guidance')")
            guidance = conditioning["guidance"].to(device=x.device, dtype=torch.float32)
        out = self.transformer(
            hidden_states=packed,
            # the scheduler's timesteps are t * 1000; the pipeline hands the transformer t
            timestep=timestep.expand(r).to(self.dtype) / 1000,
            guidance=guidance,
            pooled_projections=conditioning["pooled_projections"],
            encoder_hidden_states=conditioning["encoder_hidden_states"],
            txt_ids=conditioning["txt_ids"][0],
            img_ids=self._img_ids(h, w, x.device, self.dtype),
            return_dict=False,
        )[0]
        # back to [R, C, h, w]; _unpack_latents takes the pixel size
        f = self.vae_scale_factor
        return self.pipe._unpack_latents(out, h * f, w * f, f)
