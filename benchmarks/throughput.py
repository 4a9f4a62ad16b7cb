"""Throughput of random search: noisesearch's batched core vs a naive per-candidate pipeline loop.

Side by side in one run, same model, steps, scheduler, guidance and seeds:

* ``naive``: the stock diffusers pipeline called once per candidate (``generator`` seeded s+i),
  each image scored as it comes out -- how most public noise-search code runs;
* ``batched``: ``noisesearch.search`` (CFG rows in one call, prompt encoded once, chunks of
  ``--max-batch`` candidates);
* ``bare``: the denoiser network alone on the same batch shape, which bounds what any sampler can
  reach on this machine; ``efficiency`` = batched NFE/s / bare NFE/s.

Both searches must pick the same best seed (they compute the same images). The last line is
``RESULT speedup=<x> nfe_per_s=<y> efficiency=<z>``.

``--gpu`` instead times SD-1.5-sized and SDXL-sized random-weight UNets on CUDA in bf16/fp16
with and without torch.compile, and reports NFE/s, the ratio to a per-candidate loop and the
fraction of the GPU's measured bf16 matmul peak.
"""

from __future__ import annotations

import argparse
import time

import torch

import noisesearch
from noisesearch.core import CoreConfig, DenoisingCore
from noisesearch.core.schedule import make_scheduler
from noisesearch.models import TOYWORLD_DIR, load_model


def mean_red(images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
    """A verifier with negligible cost, so the comparison measures the sampler."""
    return images[:, 0].mean(dim=(1, 2)) - images[:, 1:].mean(dim=(1, 2, 3))


def naive_loop(adapter, prompt: str, seeds: list[int], steps: int, guidance: float, solver: str):
    pipe = adapter.pipe
    pipe.scheduler = make_scheduler(solver, adapter.scheduler_config)
    pipe.set_progress_bar_config(disable=True)
    scores = []
    for s in seeds:
        g = torch.Generator(adapter.device).manual_seed(s)
        img = pipe(prompt, generator=g, num_inference_steps=steps, guidance_scale=guidance, output_type="pt").images
        scores.append(float(mean_red(img, [prompt])[0]))
    best = max(range(len(seeds)), key=lambda i: (scores[i], -seeds[i]))
    return seeds[best], scores


@torch.no_grad()
def bare_network(adapter, prompt: str, batch: int, steps: int, guidance: float, solver: str) -> float:
    """NFE/s of the network alone on `batch` candidates (2x rows with guidance)."""
    core = DenoisingCore(adapter, CoreConfig(solver=solver, steps=steps, guidance=guidance, max_batch=batch))
    idx = core.prompt_indices([prompt] * batch)
    emb = core._embeddings.rows(idx, core.guided)  # noqa: SLF001 - benchmark peeks at the table
    x = torch.randn(batch * (2 if core.guided else 1), *core.latent_shape, device=adapter.device, dtype=adapter.dtype)
    t = core.schedule.timesteps[0].to(adapter.device)
    adapter.predict(x, t, emb)  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        adapter.predict(x, t, emb)
    if adapter.device.type == "cuda":
        torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - start)


def cpu_benchmark(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    model = args.model or ("toyworld" if (TOYWORLD_DIR / "model_index.json").exists() else "tiny-random-sd")
    adapter = load_model(model, device="cpu", dtype="fp32")
    n, steps = (16, 10) if args.quick else (args.candidates, args.steps)
    if args.quick:
        args.repeats = 1
    guidance = float(adapter.info.details.get("guidance", 4.0))
    solver = adapter.default_solver
    prompt = args.prompt
    seeds = list(range(n))
    print(f"model={model} candidates={n} steps={steps} guidance={guidance} scheduler={solver} threads={args.threads}")

    # each side is timed `--repeats` times, interleaved, and the best time kept (machines are noisy)
    naive_s, batched_s, bare = float("inf"), float("inf"), 0.0
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        naive_best, _ = naive_loop(adapter, prompt, seeds, steps, guidance, solver)
        naive_s = min(naive_s, time.perf_counter() - t0)

        t0 = time.perf_counter()
        result = noisesearch.search(
            adapter,
            prompt,
            verifier=mean_red,
            candidates=n,
            steps=steps,
            guidance=guidance,
            scheduler=solver,
            max_batch=args.max_batch,
        )
        batched_s = min(batched_s, time.perf_counter() - t0)

        bare = max(bare, bare_network(adapter, prompt, min(n, args.max_batch), steps, guidance, solver))
    nfe = result.accounting.nfe
    speedup = naive_s / batched_s
    nfe_per_s = nfe / batched_s
    efficiency = nfe_per_s / bare
    print(f"naive loop      : {naive_s:8.2f} s  ({nfe / naive_s:8.1f} NFE/s)  best seed {naive_best}")
    print(f"batched core    : {batched_s:8.2f} s  ({nfe_per_s:8.1f} NFE/s)  best seed {result.best.seed}")
    print(f"bare network    : {'':8s}    ({bare:8.1f} NFE/s at batch {min(n, args.max_batch)})")
    print(f"time split (s)  : {result.accounting.to_dict()['seconds']}")
    print(f"same best seed  : {naive_best == result.best.seed}")
    print(f"RESULT speedup={speedup:.2f} nfe_per_s={nfe_per_s:.1f} efficiency={efficiency:.3f}")


def matmul_peak_tflops(dtype: torch.dtype) -> float:
    a = torch.randn(8192, 8192, device="cuda", dtype=dtype)
    b = torch.randn(8192, 8192, device="cuda", dtype=dtype)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    reps = 20
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    torch.cuda.synchronize()
    return 2 * 8192**3 * reps / (time.perf_counter() - start) / 1e12


def unet_flops_per_row(unet, x, t, kwargs) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        unet(
            x[:1],
            t,
            **{k: (v[:1] if torch.is_tensor(v) else {kk: vv[:1] for kk, vv in v.items()}) for k, v in kwargs.items()},
        )
    return float(counter.get_total_flops())


@torch.no_grad()
def gpu_benchmark(args: argparse.Namespace) -> None:
    from diffusers import UNet2DConditionModel

    if not torch.cuda.is_available():
        raise SystemExit("--gpu needs a CUDA device")
    peak = matmul_peak_tflops(torch.bfloat16)
    print(f"device={torch.cuda.get_device_name()} measured bf16 matmul peak={peak:.1f} TFLOP/s")
    configs = {
        "sd15": dict(
            sample_size=64,
            cross_attention_dim=768,
            block_out_channels=(320, 640, 1280, 1280),
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
            attention_head_dim=8,
        ),
        "sdxl": dict(
            sample_size=128,
            cross_attention_dim=2048,
            block_out_channels=(320, 640, 1280),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            attention_head_dim=(5, 10, 20),
            transformer_layers_per_block=(1, 2, 10),
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=256,
            projection_class_embeddings_input_dim=2816,
        ),
    }
    batch = 8 if args.quick else args.gpu_batch
    steps = 5 if args.quick else 20
    rows = []
    for name, cfg in configs.items():
        unet = UNet2DConditionModel(**cfg).cuda().eval()
        for dtype in (torch.bfloat16, torch.float16):
            unet = unet.to(dtype).to(memory_format=torch.channels_last)
            size = cfg["sample_size"]
            x = torch.randn(2 * batch, 4, size, size, device="cuda", dtype=dtype)
            kwargs = {
                "encoder_hidden_states": torch.randn(
                    2 * batch, 77, cfg["cross_attention_dim"], device="cuda", dtype=dtype
                )
            }
            if name == "sdxl":
                kwargs["added_cond_kwargs"] = {
                    "text_embeds": torch.randn(2 * batch, 1280, device="cuda", dtype=dtype),
                    "time_ids": torch.randn(2 * batch, 6, device="cuda", dtype=dtype),
                }
            t = torch.tensor(500.0, device="cuda")
            flops = unet_flops_per_row(unet, x, t, kwargs)
            for compiled in (False, True):
                net = torch.compile(unet, mode="max-autotune-no-cudagraphs") if compiled else unet

                def timed(xx, kw, reps, net=net, t=t):
                    for _ in range(2):
                        net(xx, t, **kw)
                    torch.cuda.synchronize()
                    s = time.perf_counter()
                    for _ in range(reps):
                        net(xx, t, **kw)
                    torch.cuda.synchronize()
                    return (time.perf_counter() - s) / reps

                per_call = timed(x, kwargs, steps)
                one = {
                    k: (v[:2] if torch.is_tensor(v) else {kk: vv[:2] for kk, vv in v.items()})
                    for k, v in kwargs.items()
                }
                per_single = timed(x[:2], one, steps)  # naive loop: one candidate (CFG pair) per call
                nfe_s = batch / per_call
                ratio = per_single * batch / per_call
                frac = flops * 2 * batch / per_call / 1e12 / peak
                rows.append((name, str(dtype).replace("torch.", ""), compiled, nfe_s, ratio, frac))
                print(
                    f"{name:5s} {str(dtype):15s} compile={compiled!s:5s} NFE/s={nfe_s:8.1f} "
                    f"vs-loop={ratio:5.2f}x peak-frac={frac:.3f}"
                )
        del unet
        torch.cuda.empty_cache()
    best = {n: max(r[3] for r in rows if r[0] == n) for n in configs}
    print(
        "RESULT "
        + " ".join(f"{n}_nfe_per_s={v:.1f}" for n, v in best.items())
        + f" peak_tflops={peak:.1f} best_peak_frac={max(r[5] for r in rows):.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="reduced run (16 candidates x 10 steps)")
    parser.add_argument("--gpu", action="store_true", help="GPU variant with SD-1.5/SDXL-sized random UNets")
    parser.add_argument("--model", default=None, help="model (default: toyworld, else tiny-random-sd)")
    parser.add_argument("--candidates", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--max-batch", type=int, default=64)
    parser.add_argument("--gpu-batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2, help="timed repeats per side; the best is kept")
    parser.add_argument("--prompt", default="a red circle left of a blue square")
    args = parser.parse_args()
    if args.gpu:
        gpu_benchmark(args)
    else:
        cpu_benchmark(args)


if __name__ == "__main__":
    main()
