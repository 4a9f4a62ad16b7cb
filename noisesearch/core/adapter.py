"""The model adapter contract: what the denoising core needs from a text-to-image model.

An adapter wraps the components of a diffusers pipeline (denoiser network, VAE, text encoders,
scheduler config) and exposes five operations. The core never touches a pipeline directly, so a
new family (SD3, FLUX, PixArt-Sigma, Hunyuan-DiT) is one new adapter and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch


@dataclass
class PromptEmbeddings:
    """Text conditioning for P prompts, encoded once and indexed per candidate row.

    ``cond`` and ``uncond`` map keyword names of the network's forward (``encoder_hidden_states``,
    SDXL's ``text_embeds`` and ``time_ids``, ...) to tensors whose first dimension is P.
    ``uncond`` is None when classifier-free guidance is off.
    """

    prompts: list[str]
    cond: dict[str, torch.Tensor]
    uncond: dict[str, torch.Tensor] | None = None

    def rows(self, prompt_index: torch.Tensor, guided: bool) -> dict[str, torch.Tensor]:
        """Per-row conditioning for candidates with prompt indices ``prompt_index`` [B].

        With guidance the result has 2B rows, unconditional first, as diffusers pipelines stack them.
        """
        index = prompt_index.to(next(iter(self.cond.values())).device)
        cond = {k: v.index_select(0, index) for k, v in self.cond.items()}
        if not guided:
            return cond
        if self.uncond is None:
            raise ValueError("these embeddings were encoded without guidance")
        uncond = {k: v.index_select(0, index) for k, v in self.uncond.items()}
        return {k: torch.cat([uncond[k], cond[k]]) for k in cond}


@dataclass(frozen=True)
class ModelInfo:
    """What a report says about a loaded model."""

    name: str  # user-facing name or path
    family: str  # e.g. "sd", "sdxl", "toyworld"
    pipeline_class: str  # diffusers pipeline class the components come from
    details: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class ModelAdapter(Protocol):
    """A text-to-image diffusion model as seen by the core.

    Two optional members, read with ``getattr`` by :class:`~noisesearch.core.sampler.DenoisingCore`:

    * ``guidance_mode: str`` -- ``"cfg"`` (default): classifier-free guidance, the core stacks
      unconditional rows; ``"embedded"`` (guidance-distilled FLUX.1): one row per candidate and the
      scale arrives in ``predict``'s conditioning as ``"guidance"``, a float32 tensor [R].
    * ``set_timesteps_kwargs(num_steps, height, width) -> dict`` -- extra ``set_timesteps``
      arguments of the scheduler (a custom ``sigmas`` grid, the shift ``mu``).
    """

    info: ModelInfo
    device: torch.device
    dtype: torch.dtype
    #: "epsilon", "v_prediction", "sample" or "flow"
    prediction_type: str
    #: the diffusers scheduler config schedules are built from
    scheduler_config: dict[str, Any]
    #: solver used when the user names none
    default_solver: str

    def default_size(self) -> tuple[int, int]:
        """(height, width) in pixels the model was trained at."""
        ...

    def latent_shape(self, height: int, width: int) -> tuple[int, ...]:
        """Shape of one candidate's latents (no batch dimension) for an image of this size."""
        ...

    def encode_prompts(
        self, prompts: list[str], negative_prompt: str | None, guided: bool, height: int, width: int
    ) -> PromptEmbeddings:
        """Encodes each prompt once; ``guided`` adds the unconditional branch."""
        ...

    def predict(self, x: torch.Tensor, timestep: torch.Tensor, conditioning: dict[str, torch.Tensor]) -> torch.Tensor:
        """One network evaluation on R rows: raw output of the denoiser, same shape as ``x``."""
        ...

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents [B, ...] -> images [B, 3, H, W] float in [0, 1]."""
        ...
