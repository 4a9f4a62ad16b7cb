"""Update rules of the supported ODE solvers, written against :class:`~noisesearch.core.schedule.Schedule`.

All solvers see the network through its data prediction ``x0`` and noise prediction ``eps`` at a
state ``x = alpha * x0 + sigma * eps``:

* ``ddim``, ``euler`` and ``flow-euler`` are the same first-order rule, DDIM (Song et al. 2021):
  ``x' = alpha' * x0 + sigma' * eps``. Euler on the k-diffusion ODE (Karras et al. 2022) and Euler
  on the rectified-flow ODE are this rule written in another parameterisation of the state.
* ``dpm++2m`` is DPM-Solver++(2M) (Lu et al. 2022), the multistep second-order data-prediction
  solver, in half-log-SNR ``lambda = log(alpha / sigma)``.
"""

from __future__ import annotations

import math

import torch

from noisesearch.core.schedule import Schedule

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample", "flow")


def split_prediction(
    output: torch.Tensor, x: torch.Tensor, alpha: float, sigma: float, prediction_type: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Converts a raw network output at level (alpha, sigma) into ``(x0, eps)``, in float32."""
    out = output.float()
    x = x.float()
    if prediction_type == "epsilon":
        eps = out
        x0 = (x - sigma * eps) / alpha
    elif prediction_type == "v_prediction":  # v = alpha * eps - sigma * x0 (Salimans & Ho 2022)
        x0 = alpha * x - sigma * out
        eps = sigma * x + alpha * out
    elif prediction_type == "flow":  # velocity v = eps - x0 of x = (1 - t) x0 + t eps
        x0 = x - sigma * out
        eps = x + alpha * out
    elif prediction_type == "sample":
        x0 = out
        eps = (x - alpha * x0) / sigma
    else:
        raise ValueError(f"unknown prediction type {prediction_type!r}; expected one of {PREDICTION_TYPES}")
    return x0, eps


def solver_step(
    schedule: Schedule,
    step: int,
    x: torch.Tensor,
    x0: torch.Tensor,
    eps: torch.Tensor,
    prev_x0: torch.Tensor | None,
) -> torch.Tensor:
    """Moves ``x`` from the input level of ``step`` to its output level.

    ``prev_x0`` is the data prediction of step ``step - 1`` on the same trajectory, or ``None``
    when there is none (first step, or the trajectory was re-noised or resumed): multistep solvers
    then fall back to first order, as DPM-Solver++ does at its first step.
    Returns float32.
    """
    a_out = float(schedule.alpha_out[step])
    s_out = float(schedule.sigma_out[step])
    x = x.float()
    if schedule.solver != "dpm++2m":
        return a_out * x0 + s_out * eps

    if s_out == 0.0:  # landing on sigma = 0: the data prediction itself
        return x0
    a_s0, s_s0 = float(schedule.alpha_in[step]), float(schedule.sigma_in[step])
    lam_t = math.log(a_out) - math.log(s_out)
    lam_s0 = math.log(a_s0) - math.log(s_s0)
    h = lam_t - lam_s0
    phi = math.expm1(-h)  # exp(-h) - 1
    if prev_x0 is None or schedule.max_order[step] < 2 or step == 0:
        # first order: x_t = (sigma_t / sigma_s) x - alpha_t (e^{-h} - 1) D0
        return (s_out / s_s0) * x - (a_out * phi) * x0
    a_s1, s_s1 = float(schedule.alpha_in[step - 1]), float(schedule.sigma_in[step - 1])
    lam_s1 = math.log(a_s1) - math.log(s_s1)
    r0 = (lam_s0 - lam_s1) / h
    d1 = (1.0 / r0) * (x0 - prev_x0.float())
    # midpoint variant of the second-order multistep update
    return (s_out / s_s0) * x - (a_out * phi) * x0 - 0.5 * (a_out * phi) * d1


def renoise(
    x: torch.Tensor, level_from: tuple[float, float], level_to: tuple[float, float], noise: torch.Tensor
) -> torch.Tensor:
    """Forward-diffuses ``x`` from a level to a noisier one with fresh ``noise`` (same shape).

    With ``x = a x0 + s eps``, the target ``a' x0 + s' eps'`` is reached by scaling by ``a' / a``
    and adding independent Gaussian noise of variance ``s'^2 - (a' s / a)^2``.
    """
    a, s = level_from
    a2, s2 = level_to
    if a <= 0:
        raise ValueError("cannot re-noise a state at pure noise (alpha = 0)")
    scale = a2 / a
    var = s2**2 - (scale * s) ** 2
    if var < -1e-9:
        raise ValueError(f"re-noising must go to a noisier level: sigma/alpha {s / a:.4g} -> {s2 / max(a2, 1e-12):.4g}")
    return scale * x.float() + math.sqrt(max(var, 0.0)) * noise.float()
