"""Test utilities: a counting stub model that needs no weights.

:class:`StubAdapter` follows the :class:`~noisesearch.core.adapter.ModelAdapter` contract
with a cheap deterministic row-wise "network", counts every call and row it sees, and decodes
latents to images by a fixed map. Strategy and accounting tests use it to check that reported
compute equals actual calls.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from noisesearch.core.adapter import ModelInfo, PromptEmbeddings
from noisesearch.testing.tiny import SD_SCHEDULER_CONFIG

FLOW_SCHEDULER_CONFIG: dict[str, Any] = {"num_train_timesteps": 1000, "shift": 1.0}


class StubAdapter:
    """A weightless model: output = 0.5 * tanh(x) + per-prompt bias; decode = sigmoid of 3 channels."""

    default_solver = "ddim"

    def __init__(self, prediction_type: str = "epsilon", latent_size: int = 8, image_scale: int = 4) -> None:
        self.info = ModelInfo(name="stub", family="stub", pipeline_class="none", details={"steps": 10, "guidance": 3.0})
        self.device = torch.device("cpu")
        self.dtype = torch.float32
        self.prediction_type = prediction_type
        if prediction_type == "flow":
            self.scheduler_config = dict(FLOW_SCHEDULER_CONFIG)
            self.default_solver = "flow-euler"
        else:
            self.scheduler_config = {**SD_SCHEDULER_CONFIG, "prediction_type": prediction_type}
        self.latent_size = latent_size
        self.image_scale = image_scale
        self.calls = 0  # forward calls
        self.rows = 0  # rows seen
        self.encoded: list[str] = []  # prompts encoded, in order

    def default_size(self) -> tuple[int, int]:
        s = self.latent_size * self.image_scale
        return s, s

    def latent_shape(self, height: int, width: int) -> tuple[int, ...]:
        return (4, height // self.image_scale, width // self.image_scale)

    def _embed(self, prompt: str) -> torch.Tensor:
        g = torch.Generator().manual_seed(sum(map(ord, prompt)) + 7 * len(prompt))
        return torch.randn(1, 4, generator=g) * 0.3

    def encode_prompts(
        self, prompts: list[str], negative_prompt: str | None, guided: bool, height: int, width: int
    ) -> PromptEmbeddings:
        self.encoded.extend(prompts)
        cond = torch.cat([self._embed(p) for p in prompts])
        uncond = torch.zeros_like(cond) if guided else None
        return PromptEmbeddings(list(prompts), {"bias": cond}, None if uncond is None else {"bias": uncond})

    def predict(self, x: torch.Tensor, timestep: torch.Tensor, conditioning: dict[str, torch.Tensor]) -> torch.Tensor:
        self.calls += 1
        self.rows += x.shape[0]
        return 0.5 * torch.tanh(x) + conditioning["bias"][:, :, None, None]

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(latents[:, :3].float(), scale_factor=self.image_scale, mode="nearest")
        return torch.sigmoid(up)


def tiny_open_clip(name: str, config: dict, folder: Path, seed: int = 0) -> torch.nn.Module:
    """Registers the open_clip architecture ``name`` from a config dict (written to ``folder``) and
    returns its random-weight model in eval mode: official-layout checkpoints for tests are written
    from it, no download needed."""
    import json

    import open_clip

    path = Path(folder) / f"{name}.json"
    path.write_text(json.dumps(config))
    open_clip.add_model_config(path)
    torch.manual_seed(seed)
    return open_clip.create_model(name, pretrained=None).eval()
