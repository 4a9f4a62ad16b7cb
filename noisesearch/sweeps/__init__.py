"""Benchmark sweeps: prompts × models × strategies × search verifiers × budgets × seeds, resumable
and sharded across processes (see :mod:`noisesearch.sweeps.run` for the folder layout).

:mod:`.config` (the grid, read from TOML and checked), :mod:`.plan` (rows and their keys),
:mod:`.store` (shards, images, merged results), :mod:`.run` (checks before writing, the runner),
:mod:`.report` (plots and the HTML report).
"""

from noisesearch.io.storage import read_jsonl
from noisesearch.sweeps.config import (
    BUILTIN_METRICS,
    CONFIG_FILE,
    KEY_VERSION,
    RESULTS_FILE,
    StrategySpec,
    SweepConfig,
)
from noisesearch.sweeps.plan import WorkItem, plan, row_key, shard, shard_path, sweep_prompts
from noisesearch.sweeps.run import SweepSummary, check_prompts, check_sweep, sweep
from noisesearch.sweeps.store import completed_rows, read_results

__all__ = [
    "BUILTIN_METRICS",
    "CONFIG_FILE",
    "KEY_VERSION",
    "RESULTS_FILE",
    "StrategySpec",
    "SweepConfig",
    "SweepSummary",
    "WorkItem",
    "check_prompts",
    "check_sweep",
    "completed_rows",
    "plan",
    "read_jsonl",
    "read_results",
    "row_key",
    "shard",
    "shard_path",
    "sweep",
    "sweep_prompts",
]
