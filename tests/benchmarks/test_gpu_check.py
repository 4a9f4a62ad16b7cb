"""The GPU check's CPU variant (--smoke): every part runs, in order, and the RESULT line is complete.

The GPU run itself needs CUDA; this keeps its code paths (dtype casts, channels-last, compile
wrapping and bucket padding, memory probing, result printing) executing on every test run.
"""

from __future__ import annotations

import math

import pytest
import torch

from noisesearch.core import CoreConfig, DenoisingCore


def test_smoke_run_prints_every_part_in_order_and_a_complete_result(benchmark_script, capsys):
    gpu_check = benchmark_script("gpu_check")
    result = gpu_check.main(["--smoke"])
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("[") or line.startswith("RESULT")]
    parts = [line.split("] ", 1)[1].split(" ")[0] for line in lines if line.startswith("[")]
    order = ["device", "correctness", "measured", "throughput", "verifier", "memory"]
    assert [p for p in order if p in parts] == order, parts
    assert [parts.index(p) for p in order] == sorted(parts.index(p) for p in order)
    assert "skipped" not in out
    assert lines[-1].startswith("RESULT ")
    fields = dict(kv.split("=") for kv in lines[-1].split()[1:])
    assert set(fields) == {
        "speedup_sd15",
        "speedup_sdxl",
        "efficiency_sdxl",
        "peak_fraction_sdxl",
        "compile_gain_sdxl",
        "verifier_speedup_min",
        "correct",
    }
    assert all(math.isfinite(float(v)) and float(v) >= 0 for v in fields.values()), fields
    assert result["correct"] == 1.0  # fp32 equal, bf16 within tolerance, compiled equal to eager
    assert "SIMULATED" in out  # the smoke run's memory figures are never passed off as measurements
    assert "compiled (eager)" in out and "padded rows" in out


def test_a_part_past_the_time_limit_is_skipped_and_the_result_line_still_printed(benchmark_script, capsys):
    gpu_check = benchmark_script("gpu_check")
    result = gpu_check.main(["--smoke", "--time-limit", "0"])
    out = capsys.readouterr().out
    assert "correctness: skipped" in out and "verifiers: skipped" in out
    assert out.strip().splitlines()[-1].startswith("RESULT speedup_sd15=nan")
    assert result == {}


@pytest.mark.slow
def test_full_size_unet_configs_build_and_run_on_the_meta_device(benchmark_script):
    """The SD-1.5- and SDXL-sized pipelines of the GPU run are consistent (text widths, added
    conditioning, latent sizes): built and evaluated on the meta device, without memory."""
    gpu_check = benchmark_script("gpu_check")
    for cfg, params, side in ((gpu_check.SD15_UNET, 0.86e9, 512), (gpu_check.SDXL_UNET, 2.57e9, 1024)):
        pipe = gpu_check.build_pipeline(cfg, torch.device("meta"), torch.bfloat16, 4, 77)
        core = DenoisingCore(gpu_check.adapter_of(pipe, "meta"), CoreConfig(steps=2, guidance=5.0, max_batch=2))
        assert core.height == core.width == side
        assert abs(sum(p.numel() for p in pipe.unet.parameters()) - params) < 0.01e9
        idx = core.prompt_indices([gpu_check.PROMPT])
        x0, eps = core._evaluate_chunk(torch.zeros(2, *core.latent_shape, device="meta"), 0, idx.expand(2))
        assert x0.shape == eps.shape == (2, 4, side // 8, side // 8)


@pytest.mark.slow
def test_real_verifier_architectures_build_and_score_on_the_meta_device(benchmark_script):
    """CLIP ViT-L/14, HPSv2's ViT-H/14 and ImageReward's BLIP as the GPU run builds them."""
    from types import SimpleNamespace

    gpu_check = benchmark_script("gpu_check")
    verifiers = gpu_check.build_verifiers(SimpleNamespace(device=torch.device("meta"), verifiers="real"))
    images = torch.rand(2, 3, 512, 512, device="meta")
    for name, verifier in verifiers.items():
        assert verifier.score(images, [gpu_check.PROMPT] * 2).shape == (2,), name
