"""Sharded sweeps: two processes in a gloo group split the rows deterministically, each writes its
shard, and rank 0 merges after a barrier into the same results as a single process.

The default test starts the two ranks from a forkserver with torchrun's environment variables
(RANK, WORLD_SIZE, MASTER_ADDR, ...), so ``accelerate.PartialState`` builds a real gloo group in
seconds; the slow test runs ``accelerate launch --multi_gpu --num_processes 2 -m noisesearch sweep`` on
the CPU (accelerate's ``--cpu`` flag launches a single process without MPI).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from sweep_support import image_files, without_timing

from noisesearch.sweeps import SweepConfig, plan, read_jsonl, shard


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_sharded(out: Path, reference: tuple) -> None:
    config, ref_out, ref_rows = reference
    items = plan(SweepConfig.from_toml(config))
    for rank in range(2):
        rows = read_jsonl(out / "shards" / f"rank-{rank}-of-2.jsonl")
        assert [r["key"] for r in rows] == [it.key for it in shard(items, rank, 2)]
    assert without_timing(read_jsonl(out / "results.jsonl")) == without_timing(ref_rows)
    assert image_files(out) == image_files(ref_out)


def test_two_gloo_processes_split_and_merge(reference, forkserver, tmp_path: Path) -> None:
    import sweep_support

    config, _, _ = reference
    out = tmp_path / "out"
    port = str(free_port())
    procs = []
    for rank in range(2):
        env = {
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": "2",
            "LOCAL_WORLD_SIZE": "2",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": port,
            "OMP_NUM_THREADS": "1",
        }
        p = forkserver.Process(target=sweep_support.run_sweep, args=(str(config), str(out), env))
        p.start()
        procs.append(p)
    for p in procs:
        p.join(600)
    codes = [p.exitcode for p in procs]
    for p in procs:
        if p.is_alive():
            p.kill()
    assert codes == [0, 0], codes
    check_sharded(out, reference)


@pytest.mark.slow
def test_accelerate_launch_two_cpu_processes(reference, tmp_path: Path) -> None:
    launcher = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or shutil.which("accelerate")
    if launcher is None:
        pytest.skip("the accelerate launcher is not installed")
    config, _, _ = reference
    out = tmp_path / "out"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
        "HF_HOME": str(tmp_path / "hf"),  # no user accelerate config file
    }
    cmd = [
        # accelerate 1.x runs `--cpu` as ONE process unless MPI is set up; its torchrun-based launcher
        # (--multi_gpu) starts two, and with no GPU the sweep joins them in a gloo group
        launcher,
        "launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(free_port()),
        "-m",
        "noisesearch",
        "sweep",
        str(config),
        "--out",
        str(out),
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "[rank 0/2]" in done.stdout and "[rank 1/2]" in done.stdout
    check_sharded(out, reference)
