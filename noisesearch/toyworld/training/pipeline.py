"""Train the embedded toyworld text-to-image model and write a stock diffusers pipeline folder.

Two stages, both on CPU with fixed seeds:
1. the VAE, on renders (L1 + MSE reconstruction + a tiny KL term); its ``scaling_factor`` is then
   set to 1/std of the latents, as Stable Diffusion does;
2. the UNet and the text encoder jointly, from scratch, with the standard noise-prediction
   objective over uniform t, caption dropout for classifier-free guidance, and an EMA of weights.

    python -m noisesearch.toyworld.training.pipeline --out DIR [--quick]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, StableDiffusionPipeline

from noisesearch.toyworld import grammar, scenes
from noisesearch.toyworld import model as tw_model
from noisesearch.toyworld.assets import PIPELINE_DIR
from noisesearch.toyworld.training.data import ScenePool, batch_indices, render_pool

DEFAULT_OUT = PIPELINE_DIR


@dataclass(frozen=True)
class ToyTrainConfig:
    """Everything that determines a toyworld training run (recorded as training_config.json)."""

    seed: int = 0  # master seed: pool rendering, init, batches, noise
    pool_size: int = 20_000  # pre-rendered training (image, caption) pairs
    val_size: int = 1_000  # held-out renders (different seed) for the VAE PSNR
    scale_samples: int = 4_000  # renders used to measure the latent std for scaling_factor
    num_threads: int = 2  # torch intra-op threads
    # --- VAE stage
    vae_steps: int = 1_500  # optimizer steps (upper bound if vae_deadline_s stops earlier)
    vae_batch: int = 32  # images per step
    vae_lr: float = 1.5e-3  # AdamW learning rate (constant after warm-up; EMA does the averaging)
    vae_ema_decay: float = 0.998  # EMA decay of VAE weights (0 disables)
    vae_kl_weight: float = 1e-6  # weight of the KL term
    vae_mse_weight: float = 1.0  # weight of the MSE term (added to L1)
    # --- diffusion stage (UNet + text encoder)
    unet_steps: int = 6_000  # optimizer steps (upper bound if deadline_s stops earlier)
    unet_batch: int = 64  # latents per step
    unet_lr: float = 1e-3  # AdamW learning rate for UNet + text encoder (constant after warm-up)
    warmup_steps: int = 100  # linear warm-up steps for both stages
    weight_decay: float = 1e-2  # AdamW weight decay (both stages)
    grad_clip: float = 1.0  # gradient-norm clip (both stages)
    cfg_dropout: float = 0.1  # probability of replacing a caption by "" (for CFG)
    ema_decay: float = 0.999  # EMA decay of UNet + text encoder weights (0 disables)
    prediction_type: str = "epsilon"  # UNet target: "epsilon" or "v_prediction"
    max_length: int = 16  # tokenizer.model_max_length = text position embeddings
    log_every: int = 25  # print a log line every this many steps
    vae_deadline_s: float = 13 * 60.0  # stop the VAE stage this many seconds after start (0: off)
    deadline_s: float = 40.5 * 60.0  # stop the UNet stage this many seconds after start (0: off)
    vae_eval_every: int = 250  # held-out PSNR (first 256 held-out renders) every this many VAE steps

    @staticmethod
    def quick() -> ToyTrainConfig:
        """A few steps of each stage, end to end (for tests; well under a minute)."""
        return ToyTrainConfig(
            pool_size=256,
            val_size=64,
            scale_samples=128,
            vae_steps=3,
            vae_batch=8,
            unet_steps=3,
            unet_batch=8,
            warmup_steps=1,
            log_every=1,
            vae_eval_every=2,
            vae_deadline_s=0.0,
            deadline_s=0.0,
            num_threads=1,
        )

    def validate(self) -> None:
        """Raise ValueError on inconsistent settings."""
        positive = (
            "pool_size",
            "val_size",
            "scale_samples",
            "num_threads",
            "vae_steps",
            "vae_batch",
            "unet_steps",
            "unet_batch",
            "log_every",
            "vae_eval_every",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.cfg_dropout < 1.0:
            raise ValueError(f"cfg_dropout must be in [0, 1), got {self.cfg_dropout}")
        if self.vae_deadline_s < 0 or self.deadline_s < 0:
            raise ValueError("deadlines must be >= 0 seconds (0 disables them)")
        if not 0.0 <= self.vae_ema_decay < 1.0:
            raise ValueError(f"vae_ema_decay must be in [0, 1), got {self.vae_ema_decay}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(f"prediction_type must be 'epsilon' or 'v_prediction', got {self.prediction_type!r}")
        if self.max_length < 3:
            raise ValueError(f"max_length must be >= 3, got {self.max_length}")


def _lr_factor(step: int, warmup: int) -> float:
    """Linear warm-up, then constant.

    The schedule depends on the step only (not on the total), so a run stopped at step N by a
    deadline is reproduced exactly by a run configured with N steps; EMA replaces LR decay.
    """
    return min(1.0, (step + 1) / warmup)


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean PSNR (dB) between image batches in [0, 1]."""
    mse = (a - b).pow(2).flatten(1).mean(1).clamp_min(1e-10)
    return float((10.0 * torch.log10(1.0 / mse)).mean())


@torch.no_grad()
def _encode(vae: Any, pool: ScenePool, batch: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior mean and std of every pool image (unscaled latents)."""
    means, stds = [], []
    for i in range(0, len(pool), batch):
        dist = vae.encode(pool.as_float(slice(i, i + batch))).latent_dist
        means.append(dist.mean)
        stds.append(dist.std)
    return torch.cat(means), torch.cat(stds)


@torch.no_grad()
def vae_psnr(vae: Any, pool: ScenePool, batch: int = 256) -> float:
    """PSNR of decode(posterior mean) against the originals, over `pool`."""
    vals = []
    for i in range(0, len(pool), batch):
        x = pool.as_float(slice(i, i + batch))
        rec = vae.decode(vae.encode(x).latent_dist.mode()).sample
        vals.append(psnr((rec.clamp(-1, 1) + 1) / 2, (x + 1) / 2) * len(x))
    return sum(vals) / len(pool)


def train_vae(cfg: ToyTrainConfig, pool: ScenePool, val: ScenePool, t_start: float | None = None) -> tuple[Any, dict]:
    """Stage 1: train the VAE on renders; returns it (EMA weights, eval mode) and its metrics."""
    t_start = time.time() if t_start is None else t_start
    torch.manual_seed(cfg.seed + 1)
    vae = tw_model.build_vae(scenes.IMAGE_SIZE)
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, cfg.warmup_steps))
    batches = batch_indices(len(pool), cfg.vae_batch, cfg.seed + 2)
    gen = torch.Generator().manual_seed(cfg.seed + 3)
    ema = _EMA([vae], cfg.vae_ema_decay) if cfg.vae_ema_decay > 0 else None
    vae.train()
    t0 = time.time()
    recent: list[float] = []
    steps_done = 0
    for step in range(cfg.vae_steps):
        if cfg.vae_deadline_s and time.time() - t_start > cfg.vae_deadline_s:
            _log(f"vae deadline reached: stopping after {step} steps")
            break
        x = pool.as_float(next(batches))
        dist = vae.encode(x).latent_dist
        rec = vae.decode(dist.sample(generator=gen)).sample
        rec_loss = (rec - x).abs().mean() + cfg.vae_mse_weight * (rec - x).pow(2).mean()
        loss = rec_loss + cfg.vae_kl_weight * dist.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        if ema is not None:
            ema.update()
        steps_done = step + 1
        recent.append(rec_loss.item())
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.vae_steps:
            el = time.time() - t0
            _log(
                f"vae step {step + 1}/{cfg.vae_steps} rec_loss {np.mean(recent):.4f} "
                f"{(step + 1) / el:.2f} steps/s elapsed {el:.0f}s"
            )
            recent = []
        if (step + 1) % cfg.vae_eval_every == 0 and step + 1 < cfg.vae_steps:
            vae.eval()
            sub = ScenePool(val.images[:256], val.captions[:256])
            _log(f"vae step {step + 1}: held-out PSNR {vae_psnr(vae, sub):.2f} dB (raw weights)")
            vae.train()
    if ema is not None:
        ema.copy_to([vae])
    vae.eval()
    metrics = {
        "vae_steps": steps_done,
        "vae_final_rec_loss": rec_loss.item(),
        "vae_seconds": time.time() - t0,
        "vae_val_psnr_db": vae_psnr(vae, val),
    }
    _log(f"vae done: held-out PSNR {metrics['vae_val_psnr_db']:.2f} dB")
    return vae, metrics


class _EMA:
    """Exponential moving average of parameters, with the usual warm-up of the decay."""

    def __init__(self, modules: list[torch.nn.Module], decay: float) -> None:
        self.params = [p for m in modules for p in m.parameters()]
        self.shadow = [p.detach().clone() for p in self.params]
        self.decay = decay
        self.step = 0

    @torch.no_grad()
    def update(self) -> None:
        self.step += 1
        d = min(self.decay, (1 + self.step) / (10 + self.step))
        torch._foreach_lerp_(self.shadow, [p.detach() for p in self.params], 1.0 - d)

    @torch.no_grad()
    def copy_to(self, modules: list[torch.nn.Module]) -> None:
        for p, s in zip((p for m in modules for p in m.parameters()), self.shadow):
            p.copy_(s)


def train_diffusion(
    cfg: ToyTrainConfig,
    pool: ScenePool,
    lat_mean: torch.Tensor,
    lat_std: torch.Tensor,
    scaling: float,
    tokenizer,
    t_start: float | None = None,
) -> tuple:
    """Stage 2: train UNet + text encoder on frozen-VAE latents (posterior mean/std of `pool`).

    Returns (unet, text_encoder, metrics).
    """
    t_start = time.time() if t_start is None else t_start
    ids_all = tokenizer(
        list(pool.captions), padding="max_length", max_length=cfg.max_length, truncation=True, return_tensors="pt"
    ).input_ids
    ids_empty = tokenizer([""], padding="max_length", max_length=cfg.max_length, return_tensors="pt").input_ids
    torch.manual_seed(cfg.seed + 4)
    text_encoder = tw_model.build_text_encoder(tokenizer)
    unet = tw_model.build_unet(lat_mean.shape[-1], text_encoder.config.hidden_size)
    noise_sched = DDPMScheduler(
        **{
            k: v
            for k, v in tw_model.scheduler_config(cfg.prediction_type).items()
            if k not in ("set_alpha_to_one", "steps_offset")
        }
    )
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.unet_lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, cfg.warmup_steps))
    ema = _EMA([unet, text_encoder], cfg.ema_decay) if cfg.ema_decay > 0 else None
    batches = batch_indices(len(pool), cfg.unet_batch, cfg.seed + 5)
    gen = torch.Generator().manual_seed(cfg.seed + 6)
    unet.train()
    text_encoder.train()
    t0 = time.time()
    recent: list[float] = []
    losses: list[float] = []
    steps_done = 0
    for step in range(cfg.unet_steps):
        if cfg.deadline_s and time.time() - t_start > cfg.deadline_s:
            _log(f"deadline reached: stopping the UNet stage after {step} steps")
            break
        idx = torch.from_numpy(next(batches))
        b = len(idx)
        latents = (lat_mean[idx] + lat_std[idx] * torch.randn(lat_mean[idx].shape, generator=gen)) * scaling
        ids = ids_all[idx].clone()
        drop = torch.rand(b, generator=gen) < cfg.cfg_dropout
        ids[drop] = ids_empty
        noise = torch.randn(latents.shape, generator=gen)
        t = torch.randint(0, noise_sched.config.num_train_timesteps, (b,), generator=gen)
        noisy = noise_sched.add_noise(latents, noise, t)
        target = noise if cfg.prediction_type == "epsilon" else noise_sched.get_velocity(latents, noise, t)
        context = text_encoder(ids)[0]
        pred = unet(noisy, t, context).sample
        loss = F.mse_loss(pred, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        sched.step()
        if ema is not None:
            ema.update()
        steps_done = step + 1
        recent.append(loss.item())
        losses.append(recent[-1])
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.unet_steps:
            el = time.time() - t0
            _log(
                f"unet step {step + 1}/{cfg.unet_steps} loss {np.mean(recent):.4f} "
                f"{(step + 1) / el:.2f} steps/s elapsed {el:.0f}s"
            )
            recent = []
    if ema is not None:
        ema.copy_to([unet, text_encoder])
    unet.eval()
    text_encoder.eval()
    tail = losses[-min(len(losses), 200) :]
    metrics = {
        "unet_steps": steps_done,
        "unet_final_loss_mean_last200": float(np.mean(tail)),
        "unet_seconds": time.time() - t0,
    }
    return unet, text_encoder, metrics


def _write_readme(out: Path, cfg: ToyTrainConfig, metrics: dict, command: str) -> None:
    sizes = metrics["params"]
    text = f"""# toyworld default pipeline

A tiny text-to-image latent diffusion model (a stock diffusers `StableDiffusionPipeline` folder)
trained by noisesearch from scratch on procedural shape scenes (`noisesearch.toyworld.grammar` /
`scenes`), 32x32 RGB, latents 4x8x8. Load offline with
`StableDiffusionPipeline.from_pretrained(folder, local_files_only=True)`.

- Trained with: `{command}`
- Components (params): VAE {sizes["vae"]:,}, text encoder {sizes["text_encoder"]:,}, UNet {sizes["unet"]:,}
- VAE: {metrics["vae_steps"]} steps x batch {cfg.vae_batch}; held-out PSNR {metrics["vae_val_psnr_db"]:.2f} dB;
  final reconstruction loss (L1+MSE) {metrics["vae_final_rec_loss"]:.4f}; scaling_factor {metrics["scaling_factor"]:.4f}
- UNet + text encoder: {metrics["unet_steps"]} steps x batch {cfg.unet_batch}, {cfg.prediction_type} prediction,
  CFG caption dropout {cfg.cfg_dropout}, EMA {cfg.ema_decay}; final loss (mean of last 200 steps)
  {metrics["unet_final_loss_mean_last200"]:.4f}
- Wall time: {metrics["wall_seconds"] / 60:.1f} min on a shared CPU ({cfg.num_threads} threads); the run was
  capped by wall-clock deadlines (requested/done steps: {metrics["requested"]}); `training_config.json`
  records the steps actually taken, so training from it reproduces these weights
- Full settings: `training_config.json`; metrics: `training_metrics.json`.
- Reproduce these weights: `train_pipeline(ToyTrainConfig(**json.load(open("training_config.json"))), out_dir)`
  (from `noisesearch.toyworld.training.pipeline`; same thread count for bit-identical results).
- Inspect samples: `python -m noisesearch.toyworld.training.sample_grid --pipeline <this folder> --out grid.png`.
"""
    (out / "README.md").write_text(text)


def train_pipeline(config: ToyTrainConfig, out_dir: str | Path, command: str | None = None) -> Path:
    """Train the toyworld model with `config` and save a StableDiffusionPipeline folder at `out_dir`."""
    config.validate()
    out = Path(out_dir)
    t_start = time.time()
    torch.set_num_threads(config.num_threads)
    torch.manual_seed(config.seed)
    _log(f"config: {dataclasses.asdict(config)}")

    tokenizer = tw_model.build_tokenizer(grammar.vocabulary(), max_length=config.max_length)
    _log(f"rendering pools: {config.pool_size} train, {config.val_size} held-out")
    pool = render_pool(config.pool_size, seed=config.seed + 100)
    val = render_pool(config.val_size, seed=config.seed + 200)
    longest = max(len(tokenizer(c).input_ids) for c in set(pool.captions))
    if longest > config.max_length:
        raise ValueError(f"captions need {longest} tokens but max_length is {config.max_length}")

    vae, metrics = train_vae(config, pool, val, t_start)
    _log("encoding pool to latents")
    lat_mean, lat_std = _encode(vae, pool)
    n_scale = min(config.scale_samples, len(pool))
    gen = torch.Generator().manual_seed(config.seed + 7)
    z = lat_mean[:n_scale] + lat_std[:n_scale] * torch.randn(lat_mean[:n_scale].shape, generator=gen)
    scaling = float(1.0 / z.std())
    vae.register_to_config(scaling_factor=scaling)
    metrics["scaling_factor"] = scaling
    _log(f"latent std {float(z.std()):.4f} -> scaling_factor {scaling:.4f}")

    unet, text_encoder, m2 = train_diffusion(config, pool, lat_mean, lat_std, scaling, tokenizer, t_start)
    metrics.update(m2)
    metrics["params"] = {
        "vae": tw_model.count_params(vae),
        "unet": tw_model.count_params(unet),
        "text_encoder": tw_model.count_params(text_encoder),
    }

    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=tw_model.build_scheduler(config.prediction_type),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    out.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(out, safe_serialization=True)
    tw_model.save_tokenizer(tokenizer, out / "tokenizer")
    metrics["wall_seconds"] = time.time() - t_start
    metrics["versions"] = {"torch": torch.__version__, "python": platform.python_version()}
    # Record the effective config: steps actually taken, deadlines off. Because LR schedules depend
    # on the step only, train_pipeline(ToyTrainConfig(**that json)) reproduces these weights.
    effective = dataclasses.replace(
        config, vae_steps=metrics["vae_steps"], unet_steps=metrics["unet_steps"], vae_deadline_s=0.0, deadline_s=0.0
    )
    metrics["requested"] = {
        "vae_steps": config.vae_steps,
        "unet_steps": config.unet_steps,
        "vae_deadline_s": config.vae_deadline_s,
        "deadline_s": config.deadline_s,
    }
    (out / "training_config.json").write_text(json.dumps(dataclasses.asdict(effective), indent=2) + "\n")
    (out / "training_metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    _write_readme(out, config, metrics, command or "train_pipeline(...) from Python")
    _log(f"saved pipeline to {out} in {metrics['wall_seconds']:.0f}s")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    parser.add_argument("--quick", action="store_true", help="a few steps end to end (for tests)")
    args = parser.parse_args(argv)
    cfg = ToyTrainConfig.quick() if args.quick else ToyTrainConfig()
    command = "python -m noisesearch.toyworld.training.pipeline " + " ".join(sys.argv[1:] if argv is None else argv)
    train_pipeline(cfg, args.out, command=command.strip())


if __name__ == "__main__":
    main()
