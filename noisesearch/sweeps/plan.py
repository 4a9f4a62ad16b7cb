"""The work list of a sweep: one row per (model, strategy, search verifier, budget, seed, prompt),
keyed by the SHA-256 of its configuration, and dealt round-robin to processes."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from noisesearch.io.usertext import quote
from noisesearch.prompts import PromptItem, load_prompts, select_prompts
from noisesearch.sweeps.config import KEY_VERSION, SHARDS_DIR, StrategySpec, SweepConfig, _thaw


@dataclass(frozen=True)
class WorkItem:
    """One row of a sweep: a prompt, a configuration and a seed."""

    prompt: PromptItem
    model: str
    strategy: StrategySpec
    search_verifier: str
    budget: int  # NFEs
    seed: int
    identity: dict[str, Any] = field(repr=False)  # everything that determines the row; hashed into key
    key: str = ""


def row_key(identity: Mapping[str, Any]) -> str:
    """SHA-256 (hex, first 32 digits) of the canonical JSON of a row's configuration."""
    payload = json.dumps(
        {"key_version": KEY_VERSION, **identity}, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:32]


def _sampling(config: SweepConfig) -> dict[str, Any]:
    """Requested sampling settings (None: the model's default); part of every row's identity."""
    return {
        "steps": config.steps,
        "guidance": config.guidance,
        "scheduler": config.scheduler,
        "height": config.height,
        "width": config.width,
        "negative_prompt": config.negative_prompt,
        "dtype": config.dtype,
    }


def sweep_prompts(config: SweepConfig) -> list[PromptItem]:
    """The sweep's prompts: loaded, de-duplicated, filtered by category and limited (balanced)."""
    items = load_prompts(config.prompts, column=config.prompt_column)
    chosen = select_prompts(items, config.prompt_limit, config.prompt_categories)
    if "ground_truth" in config.eval_verifiers:
        from noisesearch.toyworld.grammar import parse

        for item in chosen:
            try:
                parse(item.text)
            except ValueError as e:
                raise ValueError(
                    f"eval verifier 'ground_truth' judges embedded-world prompts only, and {quote(item.text)} is not one "
                    f"({e}); drop 'ground_truth' or use prompts = \"toyworld-heldout\""
                ) from None
    return chosen


def plan(config: SweepConfig, prompts: Sequence[PromptItem] | None = None) -> list[WorkItem]:
    """Every row of the sweep, in a fixed order: model, strategy, search verifier, budget, seed, prompt."""
    prompts = sweep_prompts(config) if prompts is None else list(prompts)
    sampling = _sampling(config)
    evals = sorted(config.eval_verifiers)
    items = []
    for model in config.models:
        for strategy in config.strategies:
            for verifier in config.search_verifiers:
                for budget in config.budgets:
                    for seed in config.seeds:
                        for prompt in prompts:
                            identity = {
                                "prompt": prompt.text,
                                "model": model,
                                "strategy": {
                                    "name": strategy.name,
                                    "options": {k: _thaw(v) for k, v in strategy.options},
                                    # only with a prior, so that the keys of existing rows stay the same
                                    **({"prior": strategy.prior_identity} if strategy.prior_identity else {}),
                                },
                                "search_verifier": verifier,
                                "budget_nfe": budget,
                                "seed": seed,
                                "sampling": sampling,
                                "eval_verifiers": evals,
                                "top_k": config.top_k,
                            }
                            items.append(
                                WorkItem(prompt, model, strategy, verifier, budget, seed, identity, row_key(identity))
                            )
    if len({it.key for it in items}) != len(items):  # prompts and axes are de-duplicated above
        raise AssertionError("two rows of the sweep have the same key")
    return items


def shard(items: Sequence[WorkItem], rank: int, world_size: int) -> list[WorkItem]:
    """Process ``rank``'s rows: every ``world_size``-th row of the plan, starting at ``rank``."""
    return [it for i, it in enumerate(items) if i % world_size == rank]


# ----------------------------------------------------------------------------------- storage


def shard_path(out_dir: Path, rank: int, world_size: int) -> Path:
    return out_dir / SHARDS_DIR / f"rank-{rank}-of-{world_size}.jsonl"


#: fields every result row has, with their JSON types (reports and resumes rely on them)
