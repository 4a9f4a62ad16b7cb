"""One prepared GPU check: correctness, throughput, verifiers and memory of the CUDA path in one run.

GPU time is short and rare, so this script is built to be run once, as one command, and to leave
figures behind even if it is cut off. It runs four parts in order of importance, each printing
(and flushing) its figures as soon as they are measured:

1. correctness: the embedded model and a small SDXL-shaped pipeline on the device in fp32 equal the
   CPU images (max abs pixel difference <= 1e-3); bf16 (and fp16 on CUDA) equal fp32 within
   :data:`LOW_PRECISION_TOL`; the compiled denoiser equals the eager one within the same tolerance;
2. throughput of SD-1.5-sized (512 px) and SDXL-sized (1024 px) random-weight UNets in bf16:
   NFE/s of batched random search (compile off and on), of the stock diffusers pipeline called once
   per candidate, and of the bare network at the same batch; the fraction of the GPU's bf16 matmul
   peak, measured here, that the search reaches;
3. verifiers (random weights, real architectures: CLIP ViT-L/14, HPSv2's ViT-H/14, ImageReward's
   BLIP) scoring a batch at once vs one image at a time;
4. peak memory per candidate at each size, and what ``max_batch="auto"`` picks from it.

The last line is ``RESULT speedup_sd15=... speedup_sdxl=... efficiency_sdxl=... peak_fraction_sdxl=...
compile_gain_sdxl=... verifier_speedup_min=... correct=...`` (``nan`` for figures a part did not
reach). Parts that would start after ``--time-limit`` seconds are skipped, so the RESULT line is
printed even when time runs short.

Run on a GPU machine (the whole check is sized for about 6 minutes on one H100/H200-class GPU; an
estimate, it has not been run on a GPU yet)::

    timeout 540 python benchmarks/gpu_check.py          # default sizes
    timeout 300 python benchmarks/gpu_check.py --quick  # fewer steps and candidates, SD-1.5 compile skipped

``--smoke`` runs the same code paths on the CPU at tiny sizes in well under a minute (the default
test suite runs it): dtype casts, channels-last, compile wrapping (dynamo with the ``eager``
backend, so no kernels are built), bucket padding, memory probing (through a simulated probe whose
figures are labelled as such) and result printing. Only the CUDA calls are skipped; they are
isolated in :func:`synchronize`, :func:`device_name` and :class:`noisesearch.core.memory.CudaMemoryProbe`.
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

import noisesearch
from noisesearch.core import CoreConfig, DenoisingCore
from noisesearch.core.adapter import ModelInfo
from noisesearch.core.compile import compile_denoiser
from noisesearch.core.memory import CudaMemoryProbe, MemoryProbe, RowCost, auto_batch
from noisesearch.core.schedule import make_scheduler
from noisesearch.models.adapters import StableDiffusionAdapter, StableDiffusionXLAdapter
from noisesearch.testing.tiny import SD_SCHEDULER_CONFIG, _text_encoder, tiny_clip_tokenizer

#: fp32 on the device vs fp32 on the CPU: max abs pixel difference (images in [0, 1])
FP32_TOL = 1e-3
#: bf16/fp16 (and compiled vs eager) vs fp32: mean and max abs pixel difference
LOW_PRECISION_TOL = {"mean": 0.02, "max": 0.25}
PROMPT = "a red circle left of a blue square"

# --- model configs ---------------------------------------------------------------------------------

#: Stable Diffusion 1.5's UNet (860M parameters), 64x64 latents (512 px)
SD15_UNET = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    cross_attention_dim=768,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    attention_head_dim=8,
    layers_per_block=2,
)
#: SDXL-base's UNet (2.6B parameters), 128x128 latents (1024 px)
SDXL_UNET = dict(
    sample_size=128,
    in_channels=4,
    out_channels=4,
    cross_attention_dim=2048,
    block_out_channels=(320, 640, 1280),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    attention_head_dim=(5, 10, 20),
    transformer_layers_per_block=(1, 2, 10),
    use_linear_projection=True,
    layers_per_block=2,
    addition_embed_type="text_time",
    addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816,
)
#: a small SDXL-shaped UNet (the correctness part's pipeline)
SMALL_SDXL_UNET = dict(
    sample_size=16,
    in_channels=4,
    out_channels=4,
    cross_attention_dim=64,
    block_out_channels=(32, 64),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    attention_head_dim=(2, 4),
    transformer_layers_per_block=(1, 2),
    use_linear_projection=True,
    layers_per_block=1,
    addition_embed_type="text_time",
    addition_time_embed_dim=8,
    projection_class_embeddings_input_dim=8 * 6 + 32,
    norm_num_groups=8,
)


def smoke_unet(sdxl: bool) -> dict[str, Any]:
    """The smallest UNet of each layout (one cross-attention level, no middle block), so that
    dynamo traces it in seconds."""
    cfg: dict[str, Any] = dict(
        sample_size=4,
        in_channels=4,
        out_channels=4,
        block_out_channels=(8,),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D",),
        up_block_types=("CrossAttnUpBlock2D",),
        attention_head_dim=2,
        norm_num_groups=4,
        cross_attention_dim=16,
        mid_block_type=None,  # halves what dynamo traces; the full-size UNets keep theirs
    )
    if sdxl:
        cfg.update(
            cross_attention_dim=32,
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=4,
            projection_class_embeddings_input_dim=4 * 6 + 16,
        )
    return cfg


# --- the few CUDA-only calls -------------------------------------------------------------------------


def synchronize(device: torch.device) -> None:
    """Waits for queued kernels, so wall-clock timings are real (CUDA-only; no-op elsewhere)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_name(device: torch.device) -> str:
    return (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"{device.type} ({torch.get_num_threads()} threads)"
    )


class SimulatedProbe:
    """The smoke run's memory probe: fixed 1 GiB free, peaks of 1 MiB per network row. Its figures
    are labelled simulated; the selection code it feeds is the one the GPU run uses."""

    def __init__(self, adapter: Any) -> None:
        self.peak = 0
        predict = adapter.predict

        def counted(x, t, cond):
            self.peak = max(self.peak, x.shape[0] * 2**20)
            return predict(x, t, cond)

        adapter.predict = counted

    def free_bytes(self) -> int:
        return 2**30

    def start(self) -> None:
        self.peak = 0

    def peak_bytes(self) -> int:
        return self.peak


def memory_probe(adapter: Any, device: torch.device) -> tuple[MemoryProbe, bool]:
    """(probe, simulated?)"""
    if device.type == "cuda":
        return CudaMemoryProbe(device), False
    return SimulatedProbe(adapter), True


# --- building pipelines ------------------------------------------------------------------------------


def _vae(levels: int, device: torch.device) -> Any:
    """A light random-weight VAE with the right scale factor (2 ** (levels - 1)), so decoding is cheap."""
    from diffusers import AutoencoderKL

    return (
        AutoencoderKL(
            in_channels=3,
            out_channels=3,
            latent_channels=4,
            block_out_channels=(16,) * levels,
            down_block_types=("DownEncoderBlock2D",) * levels,
            up_block_types=("UpDecoderBlock2D",) * levels,
            norm_num_groups=8,
            layers_per_block=1,
        )
        .to(device)
        .eval()
    )


def build_pipeline(
    unet_cfg: dict[str, Any], device: torch.device, dtype: torch.dtype, vae_levels: int, max_length: int, seed: int = 0
) -> Any:
    """A random-weight SD (or SDXL, when the UNet has ``addition_embed_type``) pipeline: the given
    UNet, light CLIP text encoders of the matching widths, a light VAE, no downloads."""
    from diffusers import (
        DDIMScheduler,
        EulerDiscreteScheduler,
        StableDiffusionPipeline,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )

    torch.manual_seed(seed)
    with torch.device(device):  # initialise the weights where they will run (2.6B parameters on a CPU is slow)
        unet = UNet2DConditionModel(**unet_cfg).eval()
        vae = _vae(vae_levels, device)
    unet.to(dtype)
    vae.to(dtype)
    tok = tiny_clip_tokenizer(max_length)
    ctx = unet_cfg["cross_attention_dim"]
    if unet_cfg.get("addition_embed_type") == "text_time":
        pooled = unet_cfg["projection_class_embeddings_input_dim"] - 6 * unet_cfg["addition_time_embed_dim"]
        te1 = _text_encoder(seed + 2, hidden=ctx - pooled, max_length=max_length)
        te2 = _text_encoder(seed + 3, hidden=pooled, projection=pooled, max_length=max_length)
        pipe = StableDiffusionXLPipeline(
            vae=vae,
            text_encoder=te1,
            text_encoder_2=te2,
            tokenizer=tok,
            tokenizer_2=tok,
            unet=unet,
            scheduler=EulerDiscreteScheduler.from_config(SD_SCHEDULER_CONFIG),
        )
    else:
        pipe = StableDiffusionPipeline(
            vae=vae,
            text_encoder=_text_encoder(seed + 2, hidden=ctx, max_length=max_length),
            tokenizer=tok,
            unet=unet,
            scheduler=DDIMScheduler.from_config(SD_SCHEDULER_CONFIG),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    pipe.set_progress_bar_config(disable=True)
    pipe.to(device)
    pipe.text_encoder.to(dtype)
    if getattr(pipe, "text_encoder_2", None) is not None:
        pipe.text_encoder_2.to(dtype)
    return pipe


def adapter_of(pipe: Any, name: str, channels_last: bool = True) -> Any:
    """The noisesearch adapter of ``pipe`` (its UNet in channels-last memory, as load_model does on CUDA)."""
    if channels_last:
        pipe.unet.to(memory_format=torch.channels_last)
    sdxl = type(pipe).__name__ == "StableDiffusionXLPipeline"
    cls = StableDiffusionXLAdapter if sdxl else StableDiffusionAdapter
    return cls(pipe, ModelInfo(name=name, family="sdxl" if sdxl else "sd", pipeline_class=type(pipe).__name__))


def with_compiled_unet(pipe: Any, name: str, device: torch.device, backend: str) -> Any:
    """A new adapter of ``pipe`` whose UNet is compiled (the core then pads chunks to buckets)."""
    pipe.unet = compile_denoiser(getattr(pipe.unet, "_orig_mod", pipe.unet), device, backend=backend)
    return adapter_of(pipe, name + "+compile", channels_last=False)


# --- measurements ------------------------------------------------------------------------------------


def mean_red(images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
    """A verifier of negligible cost, so throughput measures the sampler."""
    return images[:, 0].mean(dim=(1, 2)) - images[:, 1:].mean(dim=(1, 2, 3))


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    synchronize(device)
    start = time.perf_counter()
    out = fn()
    synchronize(device)
    return time.perf_counter() - start, out


def matmul_tflops(device: torch.device, dtype: torch.dtype, n: int, reps: int) -> float:
    """Measured dense matmul throughput (TFLOP/s): the peak the efficiency figures are relative to."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    seconds, _ = timed(lambda: [a @ b for _ in range(reps)], device)
    return 2 * n**3 * reps / seconds / 1e12


def flops_per_row(adapter: Any, core: DenoisingCore) -> float:
    """FLOPs of one denoiser row (torch's FLOP counter on a one-row call)."""
    from torch.utils.flop_counter import FlopCounterMode

    idx = core.prompt_indices([PROMPT])
    rows = core._embeddings.rows(idx, False)  # noqa: SLF001 - the benchmark peeks at the prompt table
    x = torch.randn(1, *core.latent_shape, device=adapter.device, dtype=adapter.dtype)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        adapter.predict(x, core.schedule.timesteps[0].to(adapter.device), rows)
    return float(counter.get_total_flops())


@torch.no_grad()
def bare_nfe_per_s(adapter: Any, core: DenoisingCore, batch: int, reps: int) -> float:
    """NFE/s of the denoiser alone on ``batch`` guided candidates (2 x batch rows)."""
    idx = core.prompt_indices([PROMPT] * batch)
    rows = core._embeddings.rows(idx, core.guided)  # noqa: SLF001
    x = torch.randn(batch * (2 if core.guided else 1), *core.latent_shape, device=adapter.device, dtype=adapter.dtype)
    t = core.schedule.timesteps[0].to(adapter.device)
    adapter.predict(x, t, rows)
    seconds, _ = timed(lambda: [adapter.predict(x, t, rows) for _ in range(reps)], adapter.device)
    return batch * reps / seconds


def loop_nfe_per_s(pipe: Any, adapter: Any, n: int, steps: int, guidance: float, solver: str) -> float:
    """NFE/s of the stock pipeline called once per candidate (how most noise-search code runs)."""
    pipe.scheduler = make_scheduler(solver, adapter.scheduler_config)

    def loop() -> None:
        for s in range(n):
            g = torch.Generator(adapter.device).manual_seed(s)
            img = pipe(PROMPT, generator=g, num_inference_steps=steps, guidance_scale=guidance, output_type="pt").images
            mean_red(img, [PROMPT])

    seconds, _ = timed(loop, adapter.device)
    return n * steps / seconds


def search_nfe_per_s(adapter: Any, n: int, steps: int, guidance: float, batch: int) -> tuple[float, Any]:
    seconds, result = timed(
        lambda: noisesearch.search(
            adapter, PROMPT, verifier=mean_red, candidates=n, steps=steps, guidance=guidance, max_batch=batch
        ),
        adapter.device,
    )
    return result.accounting.nfe / seconds, result


# --- the run -----------------------------------------------------------------------------------------


@dataclass
class Plan:
    """Sizes of one run (the full GPU check, --quick, or the CPU --smoke)."""

    device: torch.device
    low_dtypes: tuple[torch.dtype, ...]  # reduced precisions checked against fp32
    throughput_dtype: torch.dtype
    unets: dict[str, dict[str, Any]]  # throughput sizes
    correctness_unet: dict[str, Any]
    vae_levels: int  # 2 ** (levels - 1) pixels per latent
    max_length: int  # text tokens
    candidates: int
    batch: int  # candidates per network call in the throughput part
    loop_candidates: int
    steps: int
    compile_backend: str
    compile_sizes: tuple[str, ...]  # sizes whose throughput is also measured compiled, in order
    verifiers: str  # "real" architectures or "tiny" ones
    image_side: int  # side of the images the verifiers score
    matmul_n: int
    correctness_candidates: int = 2


def make_plan(args: argparse.Namespace) -> Plan:
    if args.smoke:
        return Plan(
            device=torch.device("cpu"),
            low_dtypes=(torch.bfloat16,),
            throughput_dtype=torch.bfloat16,
            unets={"sd15": smoke_unet(False), "sdxl": smoke_unet(True)},
            correctness_unet=smoke_unet(True),
            vae_levels=2,
            max_length=8,
            candidates=3,
            batch=2,
            loop_candidates=1,
            steps=2,
            compile_backend="eager",
            compile_sizes=("sdxl",),
            verifiers="tiny",
            image_side=32,
            matmul_n=128,
        )
    if not torch.cuda.is_available():
        raise SystemExit("error: no CUDA device; run with --smoke for the CPU variant")
    quick = args.quick
    return Plan(
        device=torch.device("cuda"),
        low_dtypes=(torch.bfloat16, torch.float16),
        throughput_dtype=torch.bfloat16,
        unets={"sd15": SD15_UNET, "sdxl": SDXL_UNET},
        correctness_unet=SMALL_SDXL_UNET,
        vae_levels=4,
        max_length=77,
        candidates=8 if quick else 16,
        batch=8 if quick else 16,
        loop_candidates=2 if quick else 4,
        steps=5 if quick else 10,
        compile_backend="inductor",
        compile_sizes=("sdxl",) if quick else ("sdxl", "sd15"),
        verifiers="real",
        image_side=512,
        matmul_n=8192,
    )


@dataclass
class Report:
    """Figures as they are measured; ``result`` is the RESULT line's."""

    start: float
    time_limit: float
    result: dict[str, float] = field(default_factory=dict)
    memory: dict[str, dict[str, float]] = field(default_factory=dict)
    pipes: dict[str, Any] = field(default_factory=dict)  # throughput pipelines, reused by the memory part

    def say(self, text: str) -> None:
        print(f"[{time.perf_counter() - self.start:6.1f}s] {text}", flush=True)

    def has_time(self, part: str) -> bool:
        if time.perf_counter() - self.start < self.time_limit:
            return True
        self.say(f"{part}: skipped (past --time-limit {self.time_limit:.0f} s)")
        return False

    def result_line(self) -> str:
        keys = (
            "speedup_sd15",
            "speedup_sdxl",
            "efficiency_sdxl",
            "peak_fraction_sdxl",
            "compile_gain_sdxl",
            "verifier_speedup_min",
            "correct",
        )
        return "RESULT " + " ".join(f"{k}={self.result.get(k, math.nan):.3f}" for k in keys)


def images_of(adapter: Any, steps: int, n: int, guidance: float = 5.0) -> torch.Tensor:
    core = DenoisingCore(adapter, CoreConfig(steps=steps, guidance=guidance, max_batch=max(1, n - 1)))
    with torch.no_grad():
        return core.sample(list(range(n)), [PROMPT] * n).float().cpu()


def compare(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    d = (a - b).abs()
    return float(d.mean()), float(d.max())


def part_correctness(plan: Plan, rep: Report) -> None:
    from noisesearch.models import TOYWORLD_DIR, load_model

    ok = True
    n, steps = plan.correctness_candidates, 4
    dev = plan.device
    # (a) the embedded model, fp32 on the device vs the CPU
    if (TOYWORLD_DIR / "model_index.json").exists():
        ref = images_of(load_model("toyworld", device="cpu", dtype="fp32"), steps, n, guidance=4.0)
        got = images_of(load_model("toyworld", device=dev, dtype="fp32"), steps, n, guidance=4.0)
        _, mx = compare(got, ref)
        ok &= mx <= FP32_TOL
        rep.say(f"correctness toyworld fp32 {dev.type} vs cpu: max |diff| {mx:.2e} (tol {FP32_TOL:g})")
    else:
        rep.say("correctness toyworld: the embedded model is not installed; skipped")
    # (b) an SDXL-shaped pipeline: fp32 device vs CPU, then reduced precisions and compile on the device
    cfg = plan.correctness_unet
    ref = images_of(
        adapter_of(build_pipeline(cfg, torch.device("cpu"), torch.float32, 2, plan.max_length), "ref"), steps, n
    )
    pipe32 = build_pipeline(cfg, dev, torch.float32, 2, plan.max_length)
    fp32 = images_of(adapter_of(pipe32, "fp32"), steps, n)
    _, mx = compare(fp32, ref)
    ok &= mx <= FP32_TOL
    rep.say(f"correctness sdxl-shaped fp32 {dev.type} vs cpu: max |diff| {mx:.2e} (tol {FP32_TOL:g})")
    tol = LOW_PRECISION_TOL
    for dtype in plan.low_dtypes:
        low = images_of(adapter_of(build_pipeline(cfg, dev, dtype, 2, plan.max_length), str(dtype)), steps, n)
        mean, mx = compare(low, fp32)
        ok &= mean <= tol["mean"] and mx <= tol["max"]
        rep.say(f"correctness sdxl-shaped {str(dtype)[6:]} vs fp32: mean |diff| {mean:.2e} max {mx:.2e} (tol {tol})")
    compiled = images_of(with_compiled_unet(pipe32, "fp32", dev, plan.compile_backend), steps, n)
    mean, mx = compare(compiled, fp32)
    ok &= mean <= tol["mean"] and mx <= tol["max"]
    rep.say(
        f"correctness sdxl-shaped compiled ({plan.compile_backend}) vs eager, fp32: mean |diff| {mean:.2e} max {mx:.2e}"
    )
    rep.result["correct"] = float(ok)


def part_throughput(plan: Plan, rep: Report, peak_tflops: float) -> None:
    dev, n, batch, steps, guidance = plan.device, plan.candidates, plan.batch, plan.steps, 5.0
    pipes = rep.pipes  # kept for the memory part, even if a later size fails
    eager: dict[str, float] = {}
    flops: dict[str, float] = {}  # per row, counted on the eager network
    for name, cfg in plan.unets.items():
        if not rep.has_time(f"throughput {name}"):
            return
        t0 = time.perf_counter()
        pipe = build_pipeline(cfg, dev, plan.throughput_dtype, plan.vae_levels, plan.max_length)
        adapter = adapter_of(pipe, name)
        core = DenoisingCore(adapter, CoreConfig(steps=steps, guidance=guidance, max_batch=batch))
        flops[name] = flops_per_row(adapter, core)
        probe, simulated = memory_probe(adapter, dev)
        bare = bare_nfe_per_s(adapter, core, batch, reps=steps)
        search_nfe_per_s(adapter, min(n, batch), 1, guidance, batch)  # warm-up (cuDNN autotuning, allocator)
        probe.start()
        nfe_s, result = search_nfe_per_s(adapter, n, steps, guidance, batch)
        peak = probe.peak_bytes()
        loop = loop_nfe_per_s(pipe, adapter, plan.loop_candidates, steps, guidance, core.solver)
        frac = nfe_s * (2 if core.guided else 1) * flops[name] / 1e12 / peak_tflops
        eager[name] = nfe_s
        rep.result[f"speedup_{name}"] = nfe_s / loop
        if name == "sdxl":
            rep.result["efficiency_sdxl"] = nfe_s / bare
            rep.result["peak_fraction_sdxl"] = frac
        rep.memory[name] = {"search_peak_per_candidate": peak / min(n, batch), "simulated": float(simulated)}
        rep.say(
            f"throughput {name} {str(plan.throughput_dtype)[6:]} eager: search {nfe_s:.1f} NFE/s, per-candidate pipeline "
            f"loop {loop:.1f} NFE/s (x{nfe_s / loop:.2f}), bare network {bare:.1f} NFE/s at {batch} candidates "
            f"(efficiency {nfe_s / bare:.2f}), {flops[name] / 1e9:.1f} GFLOP/row, {frac:.3f} of the matmul peak; "
            f"split {result.accounting.to_dict()['seconds']}; {time.perf_counter() - t0:.0f} s"
        )
        pipes[name] = pipe
    for name in plan.compile_sizes:
        if name not in pipes or not rep.has_time(f"throughput {name} compiled"):
            continue
        t0 = time.perf_counter()
        adapter = with_compiled_unet(pipes[name], name, dev, plan.compile_backend)
        try:
            compile_s, _ = timed(
                lambda adapter=adapter: search_nfe_per_s(adapter, n, 1, guidance, batch), dev
            )  # compiles the bucket
            nfe_s, result = search_nfe_per_s(adapter, n, steps, guidance, batch)
        finally:
            pipes[name].unet = pipes[name].unet._orig_mod  # back to eager for the memory part
        gain = nfe_s / eager[name]
        rep.result[f"compile_gain_{name}"] = gain
        if name == "sdxl":
            frac = nfe_s * 2 * flops[name] / 1e12 / peak_tflops
            rep.result["peak_fraction_sdxl"] = max(rep.result.get("peak_fraction_sdxl", 0.0), frac)
        rep.say(
            f"throughput {name} compiled ({plan.compile_backend}): search {nfe_s:.1f} NFE/s (x{gain:.2f} vs eager), "
            f"first search {compile_s:.0f} s (compilation), padded rows {result.accounting.padded_rows}; "
            f"{time.perf_counter() - t0:.0f} s"
        )


def build_verifiers(plan: Plan) -> dict[str, Any]:
    """Random-weight verifiers: the real architectures, or tiny ones in --smoke."""
    import open_clip

    from noisesearch.testing.tiny import tiny_bert_tokenizer
    from noisesearch.verifiers.clip import CLIPScoreVerifier
    from noisesearch.verifiers.hps import HPSVerifier
    from noisesearch.verifiers.imagereward import (
        BlipTextConfig,
        BlipVisionConfig,
        ImageRewardModel,
        ImageRewardVerifier,
    )

    dev = plan.device
    if plan.verifiers == "real":
        with torch.device(dev):  # initialise on the device: ViT-H/14 has about 1B parameters
            clip_model = open_clip.create_model("ViT-L-14", pretrained=None, device=dev).eval().requires_grad_(False)
            hps_model = open_clip.create_model("ViT-H-14", pretrained=None, device=dev).eval().requires_grad_(False)
            ir = ImageRewardModel(BlipVisionConfig(), BlipTextConfig()).eval().requires_grad_(False)
        clip = CLIPScoreVerifier(
            clip_model,
            open_clip.get_tokenizer("ViT-L-14"),
            224,
            open_clip.OPENAI_DATASET_MEAN,
            open_clip.OPENAI_DATASET_STD,
        )
        hps = HPSVerifier(hps_model, open_clip.get_tokenizer("ViT-H-14"))
        return {
            "clipscore-L14": clip,
            "hpsv2-H14": hps,
            "imagereward-blip": ImageRewardVerifier(ir, tiny_bert_tokenizer(35)),
        }
    import tempfile
    from pathlib import Path

    from noisesearch.testing import tiny_open_clip

    cfg = {
        "embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    }
    model = tiny_open_clip("gpu-check-tiny", cfg, Path(tempfile.mkdtemp(prefix="gpu-check-")))
    tok = open_clip.get_tokenizer("gpu-check-tiny")
    clip = CLIPScoreVerifier(model, tok, 32, open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD)
    ir = ImageRewardModel(
        BlipVisionConfig(image_size=32, patch_size=16, width=16, layers=1, heads=2),
        BlipTextConfig(
            vocab_size=100,
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            max_position_embeddings=40,
        ),
    ).eval()
    return {
        "clipscore-tiny": clip,
        "hpsv2-tiny": HPSVerifier(model, tok, 32),
        "imagereward-tiny": ImageRewardVerifier(ir, tiny_bert_tokenizer(35)),
    }


@torch.no_grad()
def part_verifiers(plan: Plan, rep: Report, batch: int) -> None:
    dev = plan.device
    g = torch.Generator().manual_seed(0)
    images = torch.rand(batch, 3, plan.image_side, plan.image_side, generator=g).to(dev)
    prompts = [PROMPT] * batch
    speedups = []
    for name, verifier in build_verifiers(plan).items():
        if not rep.has_time(f"verifier {name}"):
            break
        verifier.score(images[:2], prompts[:2])  # warm-up and text cache
        batched, scores = timed(lambda verifier=verifier: verifier.score(images, prompts), dev)
        single, one_by_one = timed(
            lambda verifier=verifier: torch.cat([verifier.score(images[i : i + 1], prompts[:1]) for i in range(batch)]),
            dev,
        )
        diff = float((scores.float() - one_by_one.float()).abs().max())
        speedups.append(single / batched)
        rep.say(
            f"verifier {name}: batch of {batch} {batch / batched:.1f} img/s, one at a time {batch / single:.1f} img/s "
            f"(x{single / batched:.2f}); max |score diff| {diff:.1e}"
        )
    if speedups:
        rep.result["verifier_speedup_min"] = min(speedups)


def part_memory(plan: Plan, rep: Report) -> None:
    for name, pipe in rep.pipes.items():
        if not rep.has_time(f"memory {name}"):
            return
        adapter = adapter_of(pipe, name, channels_last=False)
        probe, simulated = memory_probe(adapter, plan.device)
        config = CoreConfig(steps=plan.steps, guidance=5.0)
        chosen = auto_batch(adapter, config, PROMPT, probe=probe)
        label = " (SIMULATED probe: not a measurement)" if simulated else ""
        cost: RowCost = chosen.denoise_cost  # type: ignore[assignment]
        dcost: RowCost = chosen.decode_cost  # type: ignore[assignment]
        searched = rep.memory.get(name, {}).get("search_peak_per_candidate", math.nan)
        rep.say(
            f"memory {name}{label}: denoiser {cost.per_candidate / 2**20:.1f} MiB/candidate + {cost.fixed / 2**20:.0f} MiB, "
            f"decode {dcost.per_candidate / 2**20:.1f} MiB/image, search peak {searched / 2**20:.1f} MiB/candidate; "
            f"free {chosen.free_bytes / 2**30:.1f} GiB -> max_batch auto = {chosen.max_batch}, decode {chosen.decode_batch}"
        )


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--quick", action="store_true", help="reduced run: fewer candidates and steps, no SD-1.5 compile"
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU (the test suite's run)")
    parser.add_argument(
        "--time-limit",
        type=float,
        default=None,
        help="start no part after this many seconds (default 420 on a GPU, none with --smoke)",
    )
    args = parser.parse_args(argv)
    if args.time_limit is None:
        args.time_limit = math.inf if args.smoke else 420.0
    plan = make_plan(args)
    rep = Report(start=time.perf_counter(), time_limit=args.time_limit)
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 comparisons are fp32
    rep.say(f"device {device_name(plan.device)}, torch {torch.__version__}, smoke={args.smoke} quick={args.quick}")

    def throughput() -> None:
        peak = matmul_tflops(plan.device, plan.throughput_dtype, plan.matmul_n, reps=3 if args.smoke else 20)
        rep.say(f"measured {str(plan.throughput_dtype)[6:]} matmul peak {peak:.2f} TFLOP/s ({plan.matmul_n}^3)")
        part_throughput(plan, rep, peak)

    parts: list[tuple[str, Callable[[], None]]] = [
        ("correctness", lambda: part_correctness(plan, rep)),
        ("throughput", throughput),
        ("verifiers", lambda: part_verifiers(plan, rep, batch=4 if args.smoke else 16)),
        ("memory", lambda: part_memory(plan, rep)),
    ]
    # an outer `timeout` sends SIGTERM: end through `finally`, so the RESULT line is still printed
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        for title, run in parts:
            if not rep.has_time(title):
                continue
            try:
                run()
            except Exception as e:  # one failing part must not cost the figures of the others
                if args.smoke:
                    raise
                rep.say(f"{title}: FAILED with {type(e).__name__}: {e}")
                traceback.print_exc(file=sys.stdout)
                sys.stdout.flush()
    finally:
        signal.signal(signal.SIGTERM, previous)
        print(rep.result_line(), flush=True)
    return rep.result


def _terminated(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    main(sys.argv[1:])
