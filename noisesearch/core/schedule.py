"""Noise-level schedules, read from diffusers schedulers.

Every sampler state in noisesearch is a latent ``x = alpha * x0 + sigma * eps`` in the model's own
space: variance preserving (``alpha = sqrt(abar)``, ``sigma = sqrt(1 - abar)``) for DDPM-trained
models, rectified flow (``alpha = 1 - t``, ``sigma = t``) for flow-matching models. A
:class:`Schedule` lists, for each solver step, the level it starts from, the level it lands on and
the timestep the network is called with. The grids come from the diffusers scheduler's own
``set_timesteps`` (spacing, offsets, Karras sigmas, shifts), so a schedule is exactly the one the
stock pipeline would use; only the update rules live in :mod:`noisesearch.core.solvers`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

#: solver name -> (diffusers scheduler class name, config overrides); the user-facing choices
SOLVERS: dict[str, tuple[str, dict[str, Any]]] = {
    "ddim": ("DDIMScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
    "dpm++2m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "flow-euler": ("FlowMatchEulerDiscreteScheduler", {}),
}
FLOW_SOLVERS = frozenset({"flow-euler"})


@dataclass(frozen=True)
class Schedule:
    """The discrete plan of one sampling run of ``num_steps`` solver steps.

    Step ``i`` evaluates the network at ``timesteps[i]`` on a state at level
    ``(alpha_in[i], sigma_in[i])`` and moves it to ``(alpha_out[i], sigma_out[i])``. For the usual
    grids ``out[i] == in[i + 1]``; DDIM with ``trailing`` spacing is the known exception, kept as
    diffusers has it so that outputs match the stock pipeline.
    """

    solver: str  # one of SOLVERS
    family: str  # "vp" (variance preserving) or "flow" (rectified flow)
    timesteps: torch.Tensor  # [n] network timesteps, float32
    alpha_in: torch.Tensor  # [n] float64
    sigma_in: torch.Tensor  # [n] float64
    alpha_out: torch.Tensor  # [n] float64
    sigma_out: torch.Tensor  # [n] float64
    init_scale: (
        float  # initial latents = standard normal noise * init_scale (diffusers' init_noise_sigma, in our space)
    )
    max_order: tuple[int, ...]  # [n] highest solver order allowed at each step (multistep solvers)

    @property
    def num_steps(self) -> int:
        return int(self.timesteps.shape[0])

    def level(self, step: int) -> tuple[float, float]:
        """(alpha, sigma) of a state about to take step ``step``; ``step == num_steps`` is the end."""
        if not 0 <= step <= self.num_steps:
            raise ValueError(f"step must be in [0, {self.num_steps}], got {step}")
        if step == self.num_steps:
            return float(self.alpha_out[-1]), float(self.sigma_out[-1])
        return float(self.alpha_in[step]), float(self.sigma_in[step])

    def noise_to_signal(self, step: int) -> float:
        """sigma / alpha at ``step`` (the k-diffusion sigma); monotone decreasing in ``step``."""
        alpha, sigma = self.level(step)
        return math.inf if alpha == 0 else sigma / alpha


def make_scheduler(solver: str, base_config: dict[str, Any]) -> Any:
    """Builds the diffusers scheduler behind ``solver`` from a pipeline's scheduler config."""
    import diffusers

    if solver not in SOLVERS:
        raise ValueError(f"unknown scheduler {solver!r}; choose one of: {', '.join(SOLVERS)}")
    class_name, overrides = SOLVERS[solver]
    cls = getattr(diffusers, class_name)
    config = dict(base_config)
    if class_name == "DDIMScheduler":
        # DDIM's own default clips x0 to [-1, 1], which no latent model wants and the core does not
        # do; it only bites configs written for another scheduler (PixArt's DPM-Solver config)
        config.setdefault("clip_sample", False)
    return cls.from_config(config, **overrides)


def build_schedule(solver: str, base_config: dict[str, Any], num_steps: int, **set_timesteps_kwargs: Any) -> Schedule:
    """Reads the step grid of ``solver`` for ``num_steps`` steps from the diffusers scheduler.

    ``base_config`` is the pipeline's scheduler config (``pipe.scheduler.config``); extra keyword
    arguments go to ``set_timesteps`` (e.g. ``mu`` for FLUX's resolution-dependent shift, or a custom
    ``sigmas`` grid of ``num_steps`` entries).
    """
    if not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"steps must be a positive integer, got {num_steps!r}")
    scheduler = make_scheduler(solver, base_config)
    custom = next((k for k in ("sigmas", "timesteps") if set_timesteps_kwargs.get(k) is not None), None)
    if custom is not None:
        # a custom grid (FLUX's sigmas) fixes the step count; diffusers' retrieve_timesteps then
        # calls set_timesteps without num_inference_steps, which some schedulers insist on
        if len(set_timesteps_kwargs[custom]) != num_steps:
            raise ValueError(f"{custom} has {len(set_timesteps_kwargs[custom])} entries for {num_steps} steps")
        scheduler.set_timesteps(**set_timesteps_kwargs)
    else:
        scheduler.set_timesteps(num_steps, **set_timesteps_kwargs)
    timesteps = torch.as_tensor(scheduler.timesteps).float().cpu()
    n = int(timesteps.shape[0])
    max_order = [1] * n

    if solver == "ddim":
        if scheduler.config.clip_sample or scheduler.config.thresholding:
            raise ValueError(
                "DDIM with clip_sample or thresholding is not supported; set both to False in the scheduler config"
            )
        # DDIM steps from abar(t_i) to abar(t_i - T // n), or to final_alpha_cumprod below t = 0.
        abar = scheduler.alphas_cumprod.double()
        ratio = scheduler.config.num_train_timesteps // scheduler.num_inference_steps
        t_int = timesteps.long()
        abar_in = abar[t_int]
        prev = t_int - ratio
        final = torch.as_tensor(scheduler.final_alpha_cumprod, dtype=torch.float64)
        abar_out = torch.where(prev >= 0, abar[prev.clamp(min=0)], final)
        alpha_in, sigma_in = abar_in.sqrt(), (1 - abar_in).sqrt()
        alpha_out, sigma_out = abar_out.sqrt(), (1 - abar_out).sqrt()
        init_scale = float(scheduler.init_noise_sigma)
        family = "vp"
    elif solver in ("euler", "dpm++2m"):
        # These schedulers work with k-diffusion sigmas s = sqrt((1 - abar) / abar) ending at 0
        # (or sigma_min); in variance-preserving terms alpha = 1 / sqrt(1 + s^2), sigma = s * alpha.
        if getattr(scheduler.config, "use_flow_sigmas", False):
            raise ValueError("flow sigmas in DPM-Solver are not supported; use the 'flow-euler' scheduler")
        ks = torch.as_tensor(scheduler.sigmas).double().cpu()
        alpha = 1 / (1 + ks**2).sqrt()
        sigma = ks * alpha
        alpha_in, sigma_in = alpha[:-1], sigma[:-1]
        alpha_out, sigma_out = alpha[1:], sigma[1:]
        init_scale = float(scheduler.init_noise_sigma)
        if solver == "euler":
            # Euler's samples live in k-space (x / alpha); ours are variance preserving
            init_scale /= math.sqrt(1 + float(ks[0]) ** 2)
        family = "vp"
        if solver == "dpm++2m":
            cfg = scheduler.config
            final_first_order = (
                cfg.euler_at_final or (cfg.lower_order_final and n < 15) or cfg.final_sigmas_type == "zero"
            )
            max_order = [1] + [2] * (n - 1)
            if final_first_order:
                max_order[-1] = 1
    elif solver == "flow-euler":
        ts = torch.as_tensor(scheduler.sigmas).double().cpu()
        alpha_in, sigma_in = 1 - ts[:-1], ts[:-1]
        alpha_out, sigma_out = 1 - ts[1:], ts[1:]
        init_scale = float(getattr(scheduler, "init_noise_sigma", 1.0))
        family = "flow"
    else:  # pragma: no cover - guarded by make_scheduler
        raise AssertionError(solver)

    return Schedule(
        solver=solver,
        family=family,
        timesteps=timesteps,
        alpha_in=alpha_in,
        sigma_in=sigma_in,
        alpha_out=alpha_out,
        sigma_out=sigma_out,
        init_scale=init_scale,
        max_order=tuple(max_order),
    )
