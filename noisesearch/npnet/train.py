"""Training NPNet on a noise prompt dataset: ``MSE(NPNet(x_T, c), x'_T)`` (Zhou et al. 2024, Eq. 9).

Defaults are the paper's: AdamW, learning rate 1e-4, 30 epochs, batch 64. Each sample is
conditioned on the embedding of its *own* prompt (the official training code uses the first prompt
of the batch for every sample). A fixed fraction of pairs, chosen by hashing their (prompt, seed),
is held out for validation; the checkpoint with the lowest validation loss is written as
safetensors with the training settings in its metadata.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from noisesearch.core.adapter import ModelAdapter
from noisesearch.core.sampler import CoreConfig, DenoisingCore
from noisesearch.npnet.checkpoint import save_npnet
from noisesearch.npnet.collect import NoisePromptDataset
from noisesearch.npnet.model import NPNet, NPNetConfig


@dataclass(frozen=True)
class TrainConfig:
    """NPNet training settings (paper defaults; ``val_fraction`` and ``seed`` are ours)."""

    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-4
    weight_decay: float = 0.01  # AdamW's default, as in the official code
    val_fraction: float = 0.05  # pairs held out by a hash of (prompt, seed)
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction!r}")


@dataclass
class TrainSummary:
    path: Path
    train_pairs: int
    val_pairs: int
    best_epoch: int
    best_val_loss: float  # MSE(NPNet(x_T), x'_T) on held-out pairs
    identity_val_loss: float  # MSE(x_T, x'_T): the loss of returning the noise unchanged
    history: list[dict[str, float]]
    seconds: float


def validation_mask(data: NoisePromptDataset, fraction: float) -> torch.Tensor:
    """True for held-out pairs: a stable hash of (prompt text, seed) below ``fraction``."""
    flags = []
    for pid, seed in zip(data.prompt_id.tolist(), data.seed.tolist()):
        digest = hashlib.sha256(f"{data.prompts[pid]}\x00{seed}".encode()).digest()
        flags.append(int.from_bytes(digest[:8], "big") / 2**64 < fraction)
    return torch.tensor(flags, dtype=torch.bool)


def prompt_embedding_table(adapter: ModelAdapter, prompts: list[str], core_config: CoreConfig) -> torch.Tensor:
    """Positive prompt embeddings [P, tokens, dim] of the diffusion model, each prompt encoded once."""
    core = DenoisingCore(adapter, core_config)
    return torch.cat([core.text_embeddings(prompts[i : i + 256]).float().cpu() for i in range(0, len(prompts), 256)])


def _mse(net: NPNet, noise: torch.Tensor, golden: torch.Tensor, text: torch.Tensor, batch: int) -> float:
    total, n = 0.0, 0
    with torch.no_grad():
        for i in range(0, noise.shape[0], batch):
            pred = net(noise[i : i + batch], text[i : i + batch])
            total += float(F.mse_loss(pred, golden[i : i + batch], reduction="sum"))
            n += pred.numel()
    return total / max(n, 1)


def train_npnet(
    data: NoisePromptDataset,
    text_table: torch.Tensor,
    net_config: NPNetConfig,
    out_path: str | Path,
    config: TrainConfig = TrainConfig(),
    progress: Callable[[int, int, float], None] | None = None,
    metadata: dict[str, Any] | None = None,
) -> TrainSummary:
    """Trains a fresh NPNet; ``progress(step, total_steps, loss)`` after each optimiser step."""
    torch.manual_seed(config.seed)
    val = validation_mask(data, config.val_fraction)
    if (~val).sum() == 0:
        raise ValueError("no training pairs left after the validation split; collect more pairs")
    text = text_table.index_select(0, data.prompt_id)
    train_idx = (~val).nonzero().flatten()
    val_idx = val.nonzero().flatten()
    net = NPNet(net_config)
    net.check_inputs(data.noise[:1], text[:1])
    opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    gen = torch.Generator().manual_seed(config.seed)
    steps_per_epoch = math.ceil(len(train_idx) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    identity = float(F.mse_loss(data.noise[val_idx], data.golden[val_idx])) if len(val_idx) else float("nan")
    best, best_epoch, history, step = math.inf, 0, [], 0
    start = time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        net.train()
        order = train_idx[torch.randperm(len(train_idx), generator=gen)]
        running = 0.0
        for i in range(0, len(order), config.batch_size):
            b = order[i : i + config.batch_size]
            loss = F.mse_loss(net(data.noise[b], text[b]), data.golden[b])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            running += float(loss.detach()) * len(b)
            if progress is not None:
                progress(step, total_steps, float(loss.detach()))
        net.eval()
        train_loss = running / len(order)
        val_loss = (
            _mse(net, data.noise[val_idx], data.golden[val_idx], text[val_idx], 256) if len(val_idx) else train_loss
        )
        history.append({"epoch": epoch, "train_loss": round(train_loss, 6), "val_loss": round(val_loss, 6)})
        if val_loss < best:
            best, best_epoch = val_loss, epoch
            meta = {
                "epoch": str(epoch),
                "val_loss": f"{val_loss:.6f}",
                "identity_val_loss": f"{identity:.6f}",
                "train_config": json.dumps(asdict(config)),
                **{k: str(v) for k, v in (metadata or {}).items()},
            }
            save_npnet(net, out_path, metadata=meta)
    return TrainSummary(
        Path(out_path),
        len(train_idx),
        len(val_idx),
        best_epoch,
        best,
        identity,
        history,
        round(time.perf_counter() - start, 1),
    )
