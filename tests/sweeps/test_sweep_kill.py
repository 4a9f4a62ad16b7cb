"""A sweep killed (SIGKILL) at random moments and restarted ends with every row exactly once and
the same results as an uninterrupted run.

The default test forks sweep processes from a server that imported torch once, so several kills
cost seconds; the slow test kills the real command line, ``python -m noisesearch sweep``.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sweep_support import image_files, shard_keys, without_timing

import noisesearch
from noisesearch.sweeps import read_jsonl

SLEEP = "0.03"  # seconds per scoring call: a stub row then takes ~0.1-0.3 s, long enough to land kills in it


def complete_lines(out: Path) -> int:
    return len(shard_keys(out)) if (out / "shards").is_dir() else 0


def kill_at_random_points(
    start: Callable[[], Callable[[], None]],
    is_alive: Callable[[], bool],
    out: Path,
    rows: int,
    rng: random.Random,
    kills: int,
) -> list[str]:
    """Starts a sweep ``kills`` times and SIGKILLs it: once during start-up, then a few rows in, at a random moment."""
    log = []
    for attempt in range(kills):
        before = complete_lines(out)
        kill = start()
        if attempt == 0:
            time.sleep(rng.uniform(0.0, 0.5))  # during start-up, config writing or the first row
        else:
            target = min(rows - 1, before + rng.randint(1, 3))
            deadline = time.monotonic() + 300
            while complete_lines(out) < target and is_alive() and time.monotonic() < deadline:
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 0.15))  # somewhere inside the next row: search, images or append
        finished = not is_alive()
        kill()
        log.append(f"kill {attempt}: {before} -> {complete_lines(out)} rows{' (had finished)' if finished else ''}")
    return log


def check_same_as_reference(out: Path, reference: tuple) -> None:
    _, ref_out, ref_rows = reference
    keys = shard_keys(out)
    assert len(keys) == len(set(keys)) == len(ref_rows), "a row was lost or written twice"
    for path in (out / "shards").glob("*.jsonl"):
        assert path.read_bytes().endswith(b"\n"), f"{path.name} ends with a torn line"
    assert without_timing(read_jsonl(out / "results.jsonl")) == without_timing(ref_rows)
    assert image_files(out) == image_files(ref_out)


def test_sigkill_at_random_points_then_resume(reference, forkserver, tmp_path: Path) -> None:
    import sweep_support

    config, _, ref_rows = reference
    out = tmp_path / "out"
    seed = int(os.environ.get("NOISESEARCH_KILL_SEED", time.time_ns() % 2**31))
    rng = random.Random(seed)
    procs: list = []

    def start() -> Callable[[], None]:
        p = forkserver.Process(
            target=sweep_support.run_sweep, args=(str(config), str(out), {"NOISESEARCH_TEST_SCORE_SLEEP": SLEEP})
        )
        p.start()
        procs.append(p)

        def kill() -> None:
            p.kill()  # SIGKILL
            p.join(30)
            assert p.exitcode in (-signal.SIGKILL, 0), p.exitcode

        return kill

    log = kill_at_random_points(start, lambda: procs[-1].is_alive(), out, len(ref_rows), rng, kills=4)
    assert complete_lines(out) < len(ref_rows), f"the sweep finished before the last kill; seed {seed}: {log}"
    summary = noisesearch.sweep(config, out)  # resume, uninterrupted
    assert summary.skipped == complete_lines(out) - summary.ran
    check_same_as_reference(out, reference)


@pytest.mark.slow
def test_sigkill_the_command_line_then_resume(reference, tmp_path: Path) -> None:
    config, _, ref_rows = reference
    out = tmp_path / "out"
    seed = int(os.environ.get("NOISESEARCH_KILL_SEED", time.time_ns() % 2**31))
    rng = random.Random(seed)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]),
        "NOISESEARCH_TEST_SCORE_SLEEP": SLEEP,
        "OMP_NUM_THREADS": "1",
    }
    cmd = [sys.executable, "-m", "noisesearch", "sweep", str(config), "--out", str(out)]
    procs: list[subprocess.Popen] = []

    def start() -> Callable[[], None]:
        p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        procs.append(p)

        def kill() -> None:
            p.send_signal(signal.SIGKILL)
            p.wait(30)

        return kill

    def alive() -> bool:
        return procs[-1].poll() is None

    # the first kill lands during interpreter start-up; wait for rows before the others
    log = kill_at_random_points(start, alive, out, len(ref_rows), rng, kills=3)
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr + f"\nseed {seed}: {log}"
    check_same_as_reference(out, reference)
