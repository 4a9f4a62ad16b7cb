"""The batched denoising core.

One :class:`DenoisingCore` runs every candidate of a search through the sampler in as few network
calls as possible: the conditional and unconditional rows of classifier-free guidance go in the same
call, each prompt is encoded once, and candidates are chunked to ``max_batch`` per call. A
:class:`Trajectory` is a batch of candidates at one step of the schedule; it can be advanced to any
step, re-noised back to an earlier (noisier) step and resumed, and previewed as ``x0`` at any time,
which is what search over paths and SMC need. Noise is always an argument, never hidden state.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TypeGuard, TypeVar

import torch

from noisesearch.accounting import Meter
from noisesearch.core.adapter import ModelAdapter, PromptEmbeddings
from noisesearch.core.batching import bucket_for, bucket_sizes, pad_rows
from noisesearch.core.compile import denoiser_of, is_compiled
from noisesearch.core.schedule import Schedule, build_schedule
from noisesearch.core.seeds import initial_latents
from noisesearch.core.solvers import renoise as renoise_latents
from noisesearch.core.solvers import solver_step, split_prediction

_T = TypeVar("_T")

#: upper bounds that catch typos (``--height 100000``) before they exhaust memory or hang a run
MAX_STEPS = 10_000
MAX_SIDE = 16_384


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def check_steps(value: object) -> None:
    """Raises ``ValueError`` unless ``value`` is a step count from 1 to :data:`MAX_STEPS`."""
    if not _is_int(value) or not 1 <= value <= MAX_STEPS:
        raise ValueError(f"steps must be a positive integer (at most {MAX_STEPS}), got {value!r}")


def check_guidance(value: object) -> None:
    """Raises ``ValueError`` unless ``value`` is a finite guidance scale >= 0."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not (math.isfinite(value) and float(value) >= 0)
    ):
        raise ValueError(f"guidance must be a finite number >= 0, got {value!r}")


def check_side(name: str, value: object) -> None:
    """Raises ``ValueError`` unless ``value`` (the ``name`` of an image side) is None or 8 to :data:`MAX_SIDE` pixels."""
    if value is not None and (not _is_int(value) or not 8 <= value <= MAX_SIDE):
        raise ValueError(f"{name} must be an integer from 8 to {MAX_SIDE} pixels, got {value!r}")


@dataclass(frozen=True)
class CoreConfig:
    """Sampling settings shared by every candidate of a search."""

    solver: str | None = None  # "ddim" | "euler" | "dpm++2m" | "flow-euler"; None: the model's default
    steps: int = 20  # solver steps of one full sample
    guidance: float = 7.5  # classifier-free guidance scale; <= 1 disables the unconditional branch
    height: int | None = None  # pixels; None: the model's native size
    width: int | None = None  # pixels; None: the model's native size
    negative_prompt: str | None = None  # text of the unconditional branch (None: the pipeline's default)
    max_batch: int = 32  # candidates per network call (rows are twice that with guidance)
    decode_batch: int | None = None  # latents per VAE decode call; None: max_batch
    pad_to_buckets: bool | None = None  # pad chunks to a few fixed sizes; None: when the denoiser is compiled

    def __post_init__(self) -> None:
        check_steps(self.steps)
        check_guidance(self.guidance)
        if not _is_int(self.max_batch) or self.max_batch < 1:
            raise ValueError(f"max_batch must be a positive integer, got {self.max_batch!r}")
        if self.decode_batch is not None and (not _is_int(self.decode_batch) or self.decode_batch < 1):
            raise ValueError(f"decode_batch must be a positive integer or None, got {self.decode_batch!r}")
        check_side("height", self.height)
        check_side("width", self.width)


@dataclass(frozen=True)
class EvalCache:
    """A network evaluation already paid for at a trajectory's current state.

    Valid only for the very tensor ``x`` it was computed on, at ``step``: any change of state
    (a solver step, re-noising, churn) makes a new tensor and so invalidates it without bookkeeping.
    """

    x: torch.Tensor  # [B, *latent] the state that was evaluated (compared by identity)
    step: int  # the step it was evaluated at
    x0: torch.Tensor  # [B, *latent] data prediction
    eps: torch.Tensor  # [B, *latent] noise prediction

    def valid_for(self, trajectory: Trajectory) -> bool:
        return self.x is trajectory.x and self.step == trajectory.step


@dataclass
class Trajectory:
    """A batch of B candidates, all about to take step ``step`` of the core's schedule."""

    x: torch.Tensor  # [B, *latent] float32 state in the model's latent space
    step: int  # next solver step; == schedule.num_steps when finished
    prompt_index: torch.Tensor  # [B] long, rows of the core's prompt table
    seeds: list[int]  # [B] candidate seeds
    x0: torch.Tensor | None = None  # [B, *latent] data prediction of the last evaluation
    x0_step: int = -1  # step at which x0 was evaluated (-1: none)
    cache: EvalCache | None = None  # an evaluation at the current state (preview/lookahead) that run() reuses

    def cached(self) -> EvalCache | None:
        """The evaluation of the current state, if one was already paid for."""
        return self.cache if self.cache is not None and self.cache.valid_for(self) else None

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def select(self, index: Sequence[int] | torch.Tensor) -> Trajectory:
        """Candidates at ``index`` (repeats allowed, as in resampling)."""
        idx = torch.as_tensor(index, dtype=torch.long)
        x = self.x.index_select(0, idx.to(self.x.device))
        c = self.cached()
        return Trajectory(
            x=x,
            step=self.step,
            prompt_index=self.prompt_index.index_select(0, idx.to(self.prompt_index.device)),
            seeds=[self.seeds[int(i)] for i in idx],
            x0=None if self.x0 is None else self.x0.index_select(0, idx.to(self.x0.device)),
            x0_step=self.x0_step,
            cache=None
            if c is None
            else EvalCache(
                x, self.step, c.x0.index_select(0, idx.to(c.x0.device)), c.eps.index_select(0, idx.to(c.eps.device))
            ),
        )

    @staticmethod
    def concat(parts: Sequence[Trajectory]) -> Trajectory:
        """Joins trajectories at the same step into one batch."""
        if not parts:
            raise ValueError("nothing to concatenate")
        steps = {p.step for p in parts}
        if len(steps) != 1:
            raise ValueError(f"trajectories are at different steps {sorted(steps)}")
        with_x0 = all(p.x0 is not None and p.x0_step == parts[0].x0_step for p in parts)
        caches = [p.cached() for p in parts]
        x = torch.cat([p.x for p in parts])
        return Trajectory(
            x=x,
            step=parts[0].step,
            prompt_index=torch.cat([p.prompt_index for p in parts]),
            seeds=[s for p in parts for s in p.seeds],
            x0=torch.cat([p.x0 for p in parts]) if with_x0 else None,  # type: ignore[misc]
            x0_step=parts[0].x0_step if with_x0 else -1,
            cache=EvalCache(x, parts[0].step, torch.cat([c.x0 for c in caches]), torch.cat([c.eps for c in caches]))  # type: ignore[union-attr]
            if all(c is not None for c in caches)
            else None,
        )


class DenoisingCore:
    """Batched sampler over a :class:`ModelAdapter` with a fixed schedule."""

    def __init__(self, adapter: ModelAdapter, config: CoreConfig = CoreConfig(), meter: Meter | None = None) -> None:
        self.adapter = adapter
        self.config = config
        self.meter = meter or Meter(device=adapter.device)
        default_h, default_w = adapter.default_size()
        self.height = config.height or default_h
        self.width = config.width or default_w
        self.latent_shape = adapter.latent_shape(self.height, self.width)
        self.solver = config.solver or adapter.default_solver
        # optional adapter hook: schedule arguments that depend on the image size (FLUX's shift mu)
        timestep_kwargs = getattr(adapter, "set_timesteps_kwargs", None)
        extra = timestep_kwargs(config.steps, self.height, self.width) if timestep_kwargs is not None else {}
        self.schedule: Schedule = build_schedule(self.solver, adapter.scheduler_config, config.steps, **extra)
        if self.schedule.family == "flow" and adapter.prediction_type != "flow":
            raise ValueError(f"scheduler {self.solver!r} needs a flow-matching model")
        if self.schedule.family == "vp" and adapter.prediction_type == "flow":
            raise ValueError(f"this is a flow-matching model; use the 'flow-euler' scheduler, not {self.solver!r}")
        #: "cfg": classifier-free guidance rows; "embedded": the scale is a network input (FLUX.1)
        self.guidance_mode: str = getattr(adapter, "guidance_mode", "cfg")
        if self.guidance_mode not in ("cfg", "embedded"):
            raise ValueError(f"adapter guidance_mode must be 'cfg' or 'embedded', got {self.guidance_mode!r}")
        self.guided = self.guidance_mode == "cfg" and config.guidance > 1.0
        self._prompts: list[str] = []
        self._embeddings: PromptEmbeddings | None = None
        #: candidates per network call; halved on out-of-memory
        self.chunk_size = config.max_batch
        #: latents per decode call (the VAE's memory per image differs from the denoiser's); halved on out-of-memory
        self.decode_chunk_size = config.decode_batch or config.max_batch
        self.meter.acc.chunk_size = self.chunk_size
        #: pad denoiser chunks to bucket sizes, so a compiled network compiles once per bucket
        self._compiled = is_compiled(denoiser_of(adapter))
        self.pad_to_buckets = self._compiled if config.pad_to_buckets is None else bool(config.pad_to_buckets)

    # --- prompts ------------------------------------------------------------------------------
    def prompt_indices(self, prompts: Sequence[str]) -> torch.Tensor:
        """Encodes prompts not seen before (once each) and returns their rows in the prompt table."""
        new = [p for p in dict.fromkeys(prompts) if p not in self._prompts]
        if new:
            with self.meter.phase("other"):
                emb = self.adapter.encode_prompts(
                    new, self.config.negative_prompt, self.guided, self.height, self.width
                )
            if self._embeddings is None:
                self._embeddings = emb
            else:
                old = self._embeddings
                self._embeddings = PromptEmbeddings(
                    prompts=old.prompts + emb.prompts,
                    cond={k: torch.cat([old.cond[k], emb.cond[k]]) for k in old.cond},
                    uncond=None
                    if old.uncond is None or emb.uncond is None
                    else {k: torch.cat([old.uncond[k], emb.uncond[k]]) for k in old.uncond},
                )
            self._prompts.extend(new)
        return torch.tensor([self._prompts.index(p) for p in prompts], dtype=torch.long)

    def prompt_of(self, trajectory: Trajectory) -> list[str]:
        return [self._prompts[int(i)] for i in trajectory.prompt_index]

    # --- noise --------------------------------------------------------------------------------
    def initial_noise(self, seeds: Sequence[int]) -> torch.Tensor:
        """The standard normal latents the stock pipeline draws for each seed, as float32."""
        return initial_latents(seeds, self.latent_shape, self.adapter.device, self.adapter.dtype).float()

    def start(self, noise: torch.Tensor, prompts: Sequence[str], seeds: Sequence[int]) -> Trajectory:
        """A trajectory at step 0 from standard normal ``noise`` [B, *latent]."""
        if noise.shape[1:] != torch.Size(self.latent_shape):
            raise ValueError(f"noise has shape {tuple(noise.shape[1:])}, expected {self.latent_shape}")
        if not (len(prompts) == len(seeds) == noise.shape[0]):
            raise ValueError("noise, prompts and seeds must have the same length")
        return Trajectory(
            x=noise.float().to(self.adapter.device) * self.schedule.init_scale,
            step=0,
            prompt_index=self.prompt_indices(prompts),
            seeds=list(seeds),
        )

    # --- network ------------------------------------------------------------------------------
    def _evaluate_chunk(
        self, x: torch.Tensor, step: int, prompt_index: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One guided network call on a chunk: returns (x0, eps) in float32."""
        assert self._embeddings is not None
        b = x.shape[0]
        t = self.schedule.timesteps[step].to(self.adapter.device)
        # pad to a bucket (compiled networks): the padding rows' outputs are dropped below
        padded = bucket_for(b, bucket_sizes(self.chunk_size)) if self.pad_to_buckets else b
        xp, pidx = pad_rows(x, padded), pad_rows(prompt_index, padded)
        rows = self._embeddings.rows(pidx, self.guided)
        if self.guidance_mode == "embedded":  # one row per candidate; the scale goes in as conditioning
            rows["guidance"] = torch.full((padded,), float(self.config.guidance), device=x.device, dtype=torch.float32)
        model_in = torch.cat([xp, xp]) if self.guided else xp
        per_candidate = 2 if self.guided else 1
        # nfe and network_rows count real candidates only; padding is reported on its own
        self.meter.network_call(candidates=b, rows=per_candidate * b, padded_rows=per_candidate * (padded - b))
        if self._compiled:
            # each call is a new step for CUDA graph trees (mode="reduce-overhead"): the previous
            # call's outputs, already consumed, may be overwritten
            torch.compiler.cudagraph_mark_step_begin()
        out = self.adapter.predict(model_in.to(self.adapter.dtype), t, rows)
        if self.guided:
            uncond, cond = out.chunk(2)
            out = uncond + self.config.guidance * (cond - uncond)
        elif self._compiled:
            out = out.clone()  # a replayed CUDA graph reuses its output buffer on the next call
        out = out[:b]
        alpha, sigma = self.schedule.level(step)
        return split_prediction(out, x, alpha, sigma, self.adapter.prediction_type)

    def _map_chunks(self, n: int, fn: Callable[[slice], _T], decode: bool = False) -> list[_T]:
        """Applies ``fn`` to consecutive chunks of at most ``chunk_size`` candidates
        (``decode_chunk_size`` when ``decode``).

        On out-of-memory the failed chunk's accounting is rolled back, the chunk size is halved
        (down to 1) and the chunk is retried from its saved inputs, so no candidate is lost; the
        smaller size is kept for the rest of the search and reported in the accounting.
        """
        outs: list[_T] = []
        start = 0
        while start < n:
            size = min(self.decode_chunk_size if decode else self.chunk_size, n - start)
            snapshot = self.meter.snapshot()
            try:
                outs.append(fn(slice(start, start + size)))
            except torch.cuda.OutOfMemoryError:
                self.meter.restore(snapshot)
                self.meter.acc.oom_retries += 1
                if size == 1:
                    raise
                if decode:
                    self.decode_chunk_size = max(1, size // 2)
                else:
                    self.chunk_size = max(1, size // 2)
                    self.meter.acc.chunk_size = self.chunk_size
                if self.adapter.device.type == "cuda":
                    torch.cuda.empty_cache()
                continue
            start += size
        return outs

    def run(
        self,
        trajectory: Trajectory,
        until: int | None = None,
        callback: Callable[[int, Trajectory], None] | None = None,
        grad: bool = False,
    ) -> Trajectory:
        """Advances every candidate to step ``until`` (default: the end) and returns the new state.

        Work is chunked to ``chunk_size`` candidates; each chunk runs all its steps before the next
        starts (halving on out-of-memory, see :meth:`_map_chunks`). ``callback(step, chunk_state)`` sees each chunk after each step.
        ``grad=True`` keeps the autograd graph from ``trajectory.x`` to the result (gradient noise
        optimisation); only the forward evaluations are counted as NFEs.
        """
        n = self.schedule.num_steps
        until = n if until is None else until
        if not trajectory.step <= until <= n:
            raise ValueError(f"cannot run from step {trajectory.step} to step {until} (schedule has {n} steps)")
        if until == trajectory.step:
            return trajectory
        # an evaluation of the current state already paid for (preview, lookahead) is not paid again;
        # with grad it is recomputed, since the cached one carries no graph
        cache = None if grad else trajectory.cached()
        self.meter.reserve(len(trajectory) * (until - trajectory.step - (cache is not None)))

        def run_chunk(sl: slice) -> tuple[torch.Tensor, torch.Tensor]:
            x = trajectory.x[sl]
            pidx = trajectory.prompt_index[sl]
            x0 = None if trajectory.x0 is None else trajectory.x0[sl]
            x0_step = trajectory.x0_step
            for step in range(trajectory.step, until):
                prev = x0 if x0_step == step - 1 else None
                if cache is not None and step == trajectory.step:
                    new_x0, eps = cache.x0[sl], cache.eps[sl]
                else:
                    new_x0, eps = self._evaluate_chunk(x, step, pidx)
                x = solver_step(self.schedule, step, x, new_x0, eps, prev)
                x0, x0_step = new_x0, step
                if callback is not None:
                    callback(step, Trajectory(x, step + 1, pidx, trajectory.seeds[sl], x0, x0_step))
            assert x0 is not None
            return x, x0

        with self.meter.phase("denoise"), torch.set_grad_enabled(grad):
            parts = self._map_chunks(len(trajectory), run_chunk)
        return Trajectory(
            x=torch.cat([p[0] for p in parts]),
            step=until,
            prompt_index=trajectory.prompt_index,
            seeds=list(trajectory.seeds),
            x0=torch.cat([p[1] for p in parts]),
            x0_step=until - 1,
        )

    @torch.no_grad()
    def preview(self, trajectory: Trajectory, fresh: bool = False) -> torch.Tensor:
        """The data prediction ``x0`` of each candidate.

        By default this is the free prediction of the most recent network evaluation (an
        evaluation of the current state when one was already made, else the last solver step's at
        ``trajectory.x0_step``); a finished trajectory returns its final latents. ``fresh=True``
        evaluates the network at the current state (one NFE per candidate, none when that
        evaluation was already paid for). A fresh evaluation is kept on the trajectory
        (:meth:`Trajectory.cached`), and :meth:`run` continuing from this state reuses it instead of
        paying for the same call again.
        """
        cache = trajectory.cached()
        if cache is not None:
            return cache.x0
        if trajectory.step == self.schedule.num_steps and not fresh:
            return trajectory.x
        if fresh or trajectory.x0 is None:
            return self.evaluate_cached(trajectory).x0
        return trajectory.x0

    @torch.no_grad()
    def evaluate_cached(self, trajectory: Trajectory) -> EvalCache:
        """The network's ``(x0, eps)`` at the current state, evaluated at most once per state.

        The first call pays one NFE per candidate and stores the result on ``trajectory``; later
        calls, and :meth:`run` continuing from this state, reuse it.
        """
        cache = trajectory.cached()
        if cache is None:
            x0, eps = self._evaluate(trajectory)
            cache = EvalCache(trajectory.x, trajectory.step, x0, eps)
            trajectory.cache = cache
        return cache

    @staticmethod
    def lookahead_steps(step: int, num_steps: int, jumps: int) -> list[int]:
        """The steps a ``jumps``-jump lookahead from ``step`` evaluates after ``step`` itself.

        Evenly spaced over what is left of the schedule, never reaching its end:
        ``step + round(j·(n − step)/(jumps + 1))`` for j = 1..jumps, kept strictly increasing and
        below n (so fewer than ``jumps`` when too few steps remain).
        """
        out: list[int] = []
        for j in range(1, jumps + 1):
            s = step + int(j * (num_steps - step) / (jumps + 1) + 0.5)
            if (not out or s > out[-1]) and step < s < num_steps:
                out.append(s)
        return out

    @torch.no_grad()
    def lookahead(self, trajectory: Trajectory, jumps: int = 2) -> torch.Tensor:
        """An estimate of each candidate's final ``x0`` from a few large DDIM jumps ahead.

        Lookahead as in DSearch (Li et al. 2025): evaluate the current state (cached: a later
        :meth:`run` from here does not pay for it again), then ``jumps`` times move the state along
        the prediction with the first-order DDIM/flow rule ``x = α_s·x0 + σ_s·ε`` straight to a
        later step ``s`` (:meth:`lookahead_steps`) and evaluate there; the last evaluation's ``x0``
        is the estimate. Costs ``jumps + 1`` NFEs per candidate (``jumps`` when the current state
        was already evaluated), all metered. The trajectory itself does not move.
        Returns [B, *latent] float32; a finished trajectory returns its final latents.
        """
        if not isinstance(jumps, int) or jumps < 0:
            raise ValueError(f"jumps must be an integer >= 0, got {jumps!r}")
        n = self.schedule.num_steps
        if trajectory.step == n:
            return trajectory.x
        targets = self.lookahead_steps(trajectory.step, n, jumps)
        self.meter.reserve(len(trajectory) * (len(targets) + (trajectory.cached() is None)))
        first = self.evaluate_cached(trajectory)
        x0, eps = first.x0, first.eps
        for s in targets:
            alpha, sigma = self.schedule.level(s)
            ahead = Trajectory(alpha * x0 + sigma * eps, s, trajectory.prompt_index, trajectory.seeds)
            x0, eps = self._evaluate(ahead)
        return x0

    def _evaluate(self, trajectory: Trajectory) -> tuple[torch.Tensor, torch.Tensor]:
        """One metered network evaluation of every candidate at its current step: ``(x0, eps)``."""
        if trajectory.step == self.schedule.num_steps:
            raise ValueError("a finished trajectory has no further level to evaluate")
        self.meter.reserve(len(trajectory))
        with self.meter.phase("denoise"):
            outs = self._map_chunks(
                len(trajectory),
                lambda sl: self._evaluate_chunk(trajectory.x[sl], trajectory.step, trajectory.prompt_index[sl]),
            )
        return torch.cat([o[0] for o in outs]), torch.cat([o[1] for o in outs])

    @torch.no_grad()
    def invert(self, trajectory: Trajectory, to_step: int) -> Trajectory:
        """Deterministic DDIM inversion (Song et al. 2021; Mokady et al. 2023) to the noisier step ``to_step``.

        The network is evaluated once at the current state with this core's guidance (one NFE per
        candidate); the state then moves along that prediction: ``x = α_to · x0 + σ_to · ε``.
        NPNet's re-denoise sampling (Zhou et al. 2024) is one DDIM step at a high guidance followed
        by this inversion at guidance 1.
        """
        if not 0 <= to_step < trajectory.step:
            raise ValueError(f"inversion goes to an earlier step: {trajectory.step} -> {to_step}")
        cache = self.evaluate_cached(trajectory)  # reuses a preview of this state already paid for
        x0, eps = cache.x0, cache.eps
        alpha, sigma = self.schedule.level(to_step)
        return replace(trajectory, x=alpha * x0 + sigma * eps, step=to_step, x0=None, x0_step=-1, cache=None)

    @torch.no_grad()
    def text_embeddings(self, prompts: Sequence[str], key: str = "encoder_hidden_states") -> torch.Tensor:
        """The positive prompt embedding ``key`` of each prompt [B, tokens, dim], encoded once per prompt."""
        index = self.prompt_indices(prompts)
        assert self._embeddings is not None
        if key not in self._embeddings.cond:
            raise ValueError(f"this model's prompt embeddings have no {key!r}; it has {sorted(self._embeddings.cond)}")
        table = self._embeddings.cond[key]
        return table.index_select(0, index.to(table.device))

    def renoise(self, trajectory: Trajectory, to_step: int, noise: torch.Tensor) -> Trajectory:
        """Forward-diffuses each candidate back to the noisier step ``to_step`` with ``noise``."""
        if not 0 <= to_step <= trajectory.step:
            raise ValueError(f"re-noising goes to an earlier step: {trajectory.step} -> {to_step}")
        x = renoise_latents(
            trajectory.x,
            self.schedule.level(trajectory.step),
            self.schedule.level(to_step),
            noise.to(trajectory.x.device),
        )
        return replace(trajectory, x=x, step=to_step, x0=None, x0_step=-1, cache=None)

    def decode(self, latents: torch.Tensor, grad: bool = False) -> torch.Tensor:
        """Latents [B, *latent] -> images [B, 3, H, W] float32 in [0, 1], chunked (``grad``: keep the graph)."""
        with self.meter.phase("decode"), torch.set_grad_enabled(grad):
            return torch.cat(
                self._map_chunks(latents.shape[0], lambda sl: self.adapter.decode(latents[sl]).float(), decode=True)
            )

    def sample(self, seeds: Sequence[int], prompts: Sequence[str]) -> torch.Tensor:
        """Convenience: full sampling of one candidate per seed; returns images [B, 3, H, W]."""
        traj = self.run(self.start(self.initial_noise(seeds), prompts, seeds))
        return self.decode(traj.x)
