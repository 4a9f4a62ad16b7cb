"""Gradient noise optimisation in the manner of ReNO (Eyring et al. 2024, "ReNO: Enhancing One-step
Text-to-Image Models through Reward-based Noise Optimization").

The initial noise z is optimised by gradient ascent on a differentiable verifier's score of the image
a few-step sampler makes from it, with ReNO's norm regulariser: the negative log-likelihood of ‖z‖
under the χ distribution with d degrees of freedom, ``½‖z‖² − (d − 1)·log‖z‖``, minimal at
‖z‖² = d − 1 ≈ E‖z‖² = d, which keeps z on the shell where Gaussian noise lives. ReNO's settings:
SGD with Nesterov momentum 0.9, lr 5, gradient-norm clipping 0.1, regulariser weight 0.01, 50
iterations through one-step models; the image kept is the best-scoring iterate.

Here the sampler gradients flow through is a ``opt_steps``-step DenoisingCore over the same model
(a proxy when the search's own schedule is longer; exact when they match). The best iterate by proxy
score is then sampled with the search's own schedule and scored as the candidate (free when the proxy
is the search's schedule: the image is already computed).

Compute: ``nfe`` counts forward network evaluations only (opt_steps per candidate per iteration);
the backward pass, roughly twice a forward, is not in ``nfe`` but its wall time is in the
``denoise``/``decode``/``verify`` seconds. Equal-NFE comparisons with search strategies therefore
favour this one by about 3× in wall-clock compute.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, ClassVar

import torch

from noisesearch.strategies.base import register_strategy

if TYPE_CHECKING:
    from noisesearch.engine import SearchContext

OPTIMIZERS = ("sgd", "adam")


def chi_norm_penalty(z: torch.Tensor) -> torch.Tensor:
    """ReNO's regulariser per candidate: −log χ_d(‖z‖) up to a constant, for z [B, *latent] -> [B]."""
    d = z[0].numel()
    r = z.flatten(1).norm(dim=1)
    return 0.5 * r**2 - (d - 1) * torch.log(r)


@register_strategy
@dataclass(frozen=True)
class GradientSearch:
    """ReNO-style gradient ascent on the initial noise through a few-step sampler (differentiable verifiers)."""

    name: ClassVar[str] = "gradient"
    #: CLI flag -> field
    cli_options: ClassVar[dict[str, str]] = {
        "--grad-candidates": "candidates",
        "--grad-opt-steps": "opt_steps",
        "--grad-iterations": "iterations",
        "--grad-lr": "lr",
        "--grad-optimizer": "optimizer",
        "--grad-momentum": "momentum",
        "--grad-clip": "grad_clip",
        "--grad-reg-weight": "reg_weight",
    }

    candidates: int = 1  # noises optimised side by side, each independently (ReNO: 1)
    opt_steps: int = 4  # steps of the sampler gradients flow through (ReNO: 1, one-step models); 0: the search's own
    iterations: int = 50  # scored iterates per candidate at most (ReNO: 50); the budget may allow fewer
    lr: float = 5.0  # learning rate (ReNO: 5 with SGD; Adam needs a much smaller one, e.g. 0.05)
    optimizer: str = "sgd"  # "sgd" (ReNO, Nesterov momentum) | "adam"
    momentum: float = 0.9  # SGD momentum (ReNO: 0.9, Nesterov)
    grad_clip: float = 0.1  # max gradient norm per candidate (ReNO: 0.1); 0 disables clipping
    reg_weight: float = 0.01  # weight of the χ norm regulariser (ReNO: 0.01); 0 disables it

    def __post_init__(self) -> None:
        for name, low in (("candidates", 1), ("opt_steps", 0), ("iterations", 1)):
            v = getattr(self, name)
            if not isinstance(v, int) or v < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {v!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; choose one of: {', '.join(OPTIMIZERS)}")
        for name in ("lr", "grad_clip", "reg_weight", "momentum"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
        if self.lr == 0:
            raise ValueError("lr must be > 0")
        if self.momentum >= 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum!r}")

    def run(self, ctx: SearchContext) -> None:
        if not getattr(ctx.verifier, "differentiable", False):
            raise ValueError(
                f"strategy 'gradient' needs a differentiable verifier, and {ctx.verifier.name!r} is not; "
                "use one that is (e.g. clipscore, toyclip, toyrelation) or a search strategy such as random or zero-order"
            )
        n = ctx.steps
        proxy_steps = n if self.opt_steps == 0 else min(self.opt_steps, n)
        rnd = 0
        # 1. one optimisation run per batch of candidates while a full sample still fits
        while ctx.nfe_left >= n:
            b = min(self.candidates, ctx.nfe_left // n)
            exact = proxy_steps == n  # the proxy is the search's schedule: the final sample is free
            spare = ctx.nfe_left - (0 if exact else b * n)
            evals = min(self.iterations, spare // (b * proxy_steps))
            self._optimise(ctx, b, proxy_steps, evals, rnd)
            rnd += 1

    def _optimise(self, ctx: SearchContext, b: int, proxy_steps: int, evals: int, rnd: int) -> None:
        n = ctx.steps
        proxy = ctx.proxy_core(proxy_steps)
        seeds = ctx.new_seeds(b)
        z0 = ctx.initial_noise(seeds)  # [B, *latent], through the prior if one is set
        z = z0.clone().requires_grad_(True)
        if self.optimizer == "sgd":
            opt: torch.optim.Optimizer = torch.optim.SGD(
                [z], lr=self.lr, momentum=self.momentum, nesterov=self.momentum > 0
            )
        else:
            opt = torch.optim.Adam([z], lr=self.lr, eps=1e-2)  # ReNO's Adam eps
        best = torch.full((b,), -math.inf)  # best proxy score per candidate
        first = torch.full((b,), -math.inf)
        best_it = torch.zeros(b, dtype=torch.long)  # iterate the best score came from (0: the seed's own noise)
        best_z = z0.detach().clone()
        best_x = None  # [B, *latent] final latents of the best iterate (exact mode only)
        prompts = [ctx.prompt] * b
        for it in range(evals):
            # 2. z [B, *latent] -> proxy sample -> image [B, 3, H, W] -> score [B], keeping the graph
            traj = proxy.run(proxy.start(z, prompts, seeds), grad=True)
            reward = ctx.score(ctx.decode(traj.x, grad=True), grad=True)
            r = reward.detach()
            if it == 0:
                first = r.clone()
                if proxy is ctx.core:
                    best_x = traj.x.detach().clone()  # the sample of z0, replaced row by row below
            better = r > best
            if better.any():
                best = torch.where(better, r, best)
                best_it[better] = it
                rows = better.nonzero().flatten().to(z.device)
                best_z[rows] = z.detach()[rows]
                if best_x is not None:
                    best_x[rows] = traj.x.detach()[rows]
            if it == evals - 1:
                break  # no update after the last scored iterate
            # 3. loss = −score + w·χ-penalty per candidate; rows do not interact   scalar
            finite = torch.isfinite(reward).to(reward.device)
            loss = -torch.where(finite, reward, torch.zeros_like(reward)).sum()
            if self.reg_weight > 0:
                loss = loss + self.reg_weight * chi_norm_penalty(z).sum().to(loss.device)
            opt.zero_grad()
            loss.backward()
            # 4. per-candidate gradient-norm clipping (ReNO clips its single candidate at 0.1)
            assert z.grad is not None
            grad = torch.nan_to_num(z.grad, nan=0.0, posinf=0.0, neginf=0.0)
            if self.grad_clip > 0:
                norms = grad.flatten(1).norm(dim=1).clamp(min=1e-12)
                grad = grad * (self.grad_clip / norms).clamp(max=1.0).view(-1, *([1] * (grad.ndim - 1)))
            z.grad = grad
            opt.step()
        # 5. the best iterate becomes the candidate, sampled with the search's own schedule
        traj = ctx.start(seeds, noise=best_z)
        if best_x is not None:
            traj = replace(traj, x=best_x, step=n, x0=None, x0_step=-1)  # already sampled: no NFE
        info = [
            {
                "optimised": bool(best_it[i] > 0),  # False: the noise is the seed's own
                "best_iterate": int(best_it[i]),
                "iterates": evals,
                "proxy_steps": proxy_steps,
                "proxy_score_first": float(first[i]) if math.isfinite(float(first[i])) else None,
                "proxy_score_best": float(best[i]) if math.isfinite(float(best[i])) else None,
            }
            for i in range(b)
        ]
        ctx.finish(traj, round=rnd, info=info)
        ctx.log_round(rnd, b, f"{evals} iterates through a {proxy_steps}-step sampler")
