"""The GPU check's CPU variant (--smoke): every part runs, in order, and the RESULT line is complete.

The GPU run itself needs CUDA; this keeps its code paths (dtype casts, channels-last, compile
wrapping and bucket padding, memory probing, result printing) executing on every test run.
"""

from __future__ import annotations

import math


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
    assert set(fields) == {"speedup_sd15", "speedup_sdxl", "efficiency_sdxl", "peak_fraction_sdxl",
                           "compile_gain_sdxl", "verifier_speedup_min", "correct"}
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
