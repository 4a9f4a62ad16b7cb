"""Inference-time scaling of every search strategy on the embedded world, against ground truth.

The experiment of Ma et al. 2025, "Inference-Time Scaling for Diffusion Models beyond Scaling
Denoising Steps" (arXiv:2501.09732), on the embedded toyworld model (20 DDIM steps, guidance 4,
its defaults): for each search strategy (random, prune, zero-order, paths, smc, gradient) and each search
verifier (toyclip, toyrelation, toydetect), spend 1x, 4x, 16x and 64x the NFEs of one sample (an NFE budget
of multiple x steps) and measure, for the image the search returns,

- its score under the verifier the search optimised (what the search sees), and
- whether it satisfies the prompt according to the ground-truth evaluator
  (``noisesearch.toyworld.evaluator``: pixel parsing, independent of every learned model).

Prompts: a fixed, category-stratified subset of the 210 held-out prompts (``--prompts N``: the
per-category counts of ``noisesearch.prompts.select_prompts``, i.e. round-robin over the
categories, each category's prompts evenly spaced within it; 100 gives shape 6, counting 12,
color_binding 41, spatial 41). Prompt i of the held-out list searches with seed ``seed + 1000 i``
under every strategy, verifier and budget, so 1x is the same unsearched sample everywhere.

Compute: NFEs are counted by the engine's meter (``noisesearch.search`` -> ``SearchContext``);
this script never counts them itself, it only records ``result.accounting``. Shortcuts, all exact:

- **1x is shared.** With one sample's budget every strategy returns the unsearched sample of the
  prompt's seed (random: N = 1; prune: too small a budget to screen is random search; zero-order:
  the first pivot; paths: its fill sample, a search
  does not fit; smc: one particle; gradient: zero iterates), so 1x is computed once, by random
  search, and is every strategy's 1x point (the base rate).
- **Random search by prefixes.** Candidate i of a random search has seed ``seed + i`` whatever
  the budget, so best-of-4/16/... is the best of the first 4/16/... candidates of one run at the
  largest budget; the NFEs of a prefix are the meter's NFEs per candidate of that run times N.
- **Random search under every verifier from one run.** Random search's candidates do not depend
  on the verifier, so the run (searching with the first ``--verifiers``) is scored once by every
  embedded verifier and each selects its own best; its NFEs are that run's.
- Every other (strategy, verifier, budget) is its own metered search, with the strategy's defaults
  (``noisesearch strategies``), recorded in each row as ``options``. On 20 steps one Paths-2 search
  costs 88 NFEs at the current defaults (172 at the reported σ, Δf, Δb, where 4x could only buy
  random search's best-of-4); prune's screen (a 6-NFE coarse sample of each noise) at 4x sees 7
  noises and finishes 2, at 16x it sees 28 and finishes 8.

Outputs (``--out``, default ``docs/``; ``--quick`` defaults to a temporary folder):

- ``scaling_toyworld.jsonl``: one row per (prompt, strategy, search verifier, multiple), appended
  as soon as it is computed. A rerun skips the rows already there, so an interrupted run loses
  only the searches in flight, and runs with different ``--strategies``/``--verifiers``/
  ``--budgets`` accumulate in one file. Rows made with other steps, guidance, seed or weights
  (a fingerprint of the shipped model and verifier weights), or with other strategy options than
  the current defaults (recorded in each row), are ignored, never mixed in.
- ``scaling_toyworld.md``: (1) ground-truth satisfaction and search-verifier score (mean +- standard
  error over prompts) per strategy x search verifier at each multiple, with the ``oracle`` of random
  search (some candidate among the first N satisfies: the ceiling of a perfect verifier); (2) the
  verifier-hacking view: each run's returned image scored by every verifier and the ground truth,
  "search on A -> score under A, under B, satisfaction", with paired changes from the 1x base. A
  search that raises A but not B or the ground truth is exploiting A rather than finding better
  images. Tables are rendered from every compatible row in the JSONL.
- ``scaling_toyworld.png``: top row ground-truth satisfaction, bottom row the search verifier's
  score, against the NFE multiple (log scale); one column per search verifier, one line per
  strategy, error bars one standard error over prompts; the dashed line is random search's oracle.

Default run, ``python benchmarks/scaling.py`` (estimated 36 min on 2 idle CPU cores, two
single-threaded worker processes; ``--dry-run`` prints the plan and estimate, every run prints the
estimate at its start): 100 prompts; random search to 64x (one 64-candidate run per prompt,
selected by every verifier); zero-order, paths and smc searching on toyclip at 4x and 16x and on
toyrelation at 4x; no gradient search. Why: a sample costs about
0.22 s of one core batched (about 160 NFEs/s on 2 cores), 0.3-0.45 s in the small batches of
smc/paths/zero-order, and 2.1 s in gradient search (one candidate at a time, plus backward passes
that NFEs do not count), so the whole matrix (5 strategies x 2 verifiers to 64x on 100 prompts) is
about 16 core-hours, 8 hours on 2 cores. The rest of it comes in pieces that append to the same
JSONL and re-render the combined tables and plot (estimates on 2 idle cores):

    python benchmarks/scaling.py --strategies gradient --verifiers toyclip                      # 36 min
    python benchmarks/scaling.py --strategies gradient --verifiers toyrelation --max-multiple 16  # 36 min
    python benchmarks/scaling.py --strategies zero-order,paths,smc --verifiers toyrelation --budgets 16 --max-multiple 16  # 16 min
    python benchmarks/scaling.py --strategies zero-order --verifiers toyclip --budgets 64 --max-multiple 64  # 25 min
    python benchmarks/scaling.py --strategies paths,smc --verifiers toyclip --budgets 64 --max-multiple 64   # 39 min
    python benchmarks/scaling.py --strategies gradient --verifiers toyclip --budgets 64 --max-multiple 64    # 115 min

Searching on toydetect (the detector-based verifier, added later) goes to its own folder:

    python benchmarks/scaling.py --verifiers toydetect --strategies random,zero-order,smc --max-multiple toydetect=16 --out docs/scaling_toydetect  # 19 min
    python benchmarks/scaling.py --verifiers toydetect --strategies paths --max-multiple toydetect=16 --out docs/scaling_toydetect  # 5 min

``--quick``: 6 prompts, 1x/4x/16x, random, zero-order and smc on toyclip, written to a temporary
folder (about 1-2 min).

Units run in a category-interleaved order of prompts, so a run stopped early has covered a
category-proportional subset; every table says over how many prompts each figure is.

The tables also pair every strategy against random search on the same prompts and seeds (difference in
ground-truth satisfaction, its standard error, wins/losses) and list NFEs, verifier calls and decodes
per search.

Last line: ``RESULT random4=<rate> prune4=<rate> random16=<rate> prune16=<rate> prune16_vs_random_pts=<points>
prune16_vs_random_se=<points> prompts=<n> verifier=<v>``: ground-truth satisfaction searching on the first
``--verifiers`` entry over the n prompts where both random search and prune ran (``na``: prune not run).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import multiprocessing as mp
import os
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from noisesearch.toyworld.grammar import heldout_subset

STRATEGIES = ("random", "prune", "zero-order", "paths", "smc", "gradient")
VERIFIERS = ("toyclip", "toyrelation", "toydetect")  # the embedded world's learned verifiers
MULTIPLES = (1, 4, 16, 64)
SEED_STRIDE = 1000  # prompt i searches from seed + SEED_STRIDE * i; more seeds than any search here draws
FILE_STEM = "scaling_toyworld"

#: seconds of one CPU core per full 20-step sample in each strategy, measured on the development
#: machine at 4x and 16x (random: batched 64); used only for the estimate printed at the start
CORE_SECONDS_PER_SAMPLE = {
    "random": 0.22,
    "prune": 0.3,
    "zero-order": 0.45,
    "paths": 0.41,
    "smc": 0.30,
    "gradient": 2.15,
}

DEFAULTS = {
    "prompts": 100,
    "budgets": "1,4,16,64",
    "strategies": "random,zero-order,paths,smc",
    "verifiers": "toyclip,toyrelation",
    "max_multiple": "toyclip=16,toyrelation=4",
}
QUICK = {
    "prompts": 6,
    "budgets": "1,4,16",
    "strategies": "random,zero-order,smc",
    "verifiers": "toyclip",
    "max_multiple": "16",
}


# ----------------------------------------------------------------------------------------- plan
@dataclass(frozen=True)
class Settings:
    """Everything a row depends on besides its prompt, strategy, verifier and multiple."""

    steps: int
    guidance: float
    base_seed: int  # --seed; prompt i searches from base_seed + SEED_STRIDE * i
    weights: str  # fingerprint of the shipped model and verifier weights


@dataclass(frozen=True)
class Unit:
    """One piece of work: a prompt's searches with one strategy (and verifier) at some multiples."""

    index: int  # position in the held-out list
    prompt: str
    category: str
    seed: int
    strategy: str
    verifier: str  # search verifier (random: the one its run searches with; it reports all)
    multiples: tuple[int, ...]
    report: tuple[str, ...]  # verifiers that get rows (random: every embedded one)


def row_key(row: dict[str, Any]) -> tuple:
    return (row["prompt_index"], row["strategy"], row["verifier"], row["multiple"])


def weights_fingerprint() -> str:
    """Short SHA-256 over the shipped weights this benchmark uses (the model and the verifiers in
    VERIFIERS, not other files shipped beside them): rows from other weights are stale."""
    from noisesearch.toyworld import __file__ as toyworld_init

    root = Path(toyworld_init).parent / "weights"
    used = [*(root / "pipeline").rglob("*"), *(root / "verifiers" / f"{v}.safetensors" for v in VERIFIERS)]
    h = hashlib.sha256()
    for path in sorted(used):
        if path.is_file() and path.suffix in (".safetensors", ".json", ".txt", ".bin"):
            h.update(str(path.relative_to(root)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:12]


def select_prompts(n: int) -> list[tuple[int, str, str]]:
    """(held-out index, category, prompt) of a fixed, category-stratified subset of n held-out prompts."""
    from noisesearch.prompts import load_prompts
    from noisesearch.prompts import select_prompts as balanced
    from noisesearch.toyworld import grammar

    counts = Counter(item.category for item in balanced(load_prompts("toyworld-heldout"), limit=n))
    index = {p: i for i, (_, p) in enumerate(grammar.heldout_prompts())}
    return sorted((index[p], c, p) for c, p in heldout_subset(dict(counts)))


def plan_units(
    prompts: Sequence[tuple[int, str, str]],
    strategies: Sequence[str],
    verifiers: Sequence[str],
    budgets: Sequence[int],
    max_multiple: dict[str, int],
    settings: Settings,
) -> list[Unit]:
    """Every unit of the requested matrix, prompt by prompt (done rows are filtered out later)."""
    units = []
    random_top = max(budgets) if "random" in strategies else 1
    for index, category, prompt in prompts:
        seed = settings.base_seed + SEED_STRIDE * index
        if "random" in strategies or 1 in budgets:
            mults = tuple(m for m in budgets if m <= random_top) or (1,)
            units.append(Unit(index, prompt, category, seed, "random", verifiers[0], mults, VERIFIERS))
        for strategy in strategies:
            if strategy == "random":
                continue
            for verifier in verifiers:
                mults = tuple(m for m in budgets if 1 < m <= max_multiple[verifier])
                if mults:
                    units.append(Unit(index, prompt, category, seed, strategy, verifier, mults, (verifier,)))
    return units


def interleaved(units: Sequence[Unit]) -> list[Unit]:
    """``units`` in an order whose every prefix covers the categories in proportion (a stopped run is a
    category-balanced subset, not the first categories): by (position in category + 1/2) / category size."""
    by_cat: dict[str, list[int]] = defaultdict(list)
    for index in sorted({u.index for u in units}):
        by_cat[next(u.category for u in units if u.index == index)].append(index)
    rank = {i: (pos + 0.5) / len(ids) for ids in by_cat.values() for pos, i in enumerate(ids)}
    return sorted(units, key=lambda u: (rank[u.index], u.index))  # stable: a prompt's units stay in plan order


def pending(unit: Unit, done: set[tuple]) -> Unit | None:
    """The unit restricted to rows not yet in ``done`` (random: rerun whole if any row is missing)."""
    if unit.strategy == "random":
        missing = any((unit.index, "random", v, m) not in done for v in unit.report for m in unit.multiples)
        return unit if missing else None
    mults = tuple(m for m in unit.multiples if (unit.index, unit.strategy, unit.verifier, m) not in done)
    return Unit(**{**asdict(unit), "multiples": mults}) if mults else None


def estimate_core_seconds(unit: Unit, steps: int) -> float:
    per_sample = CORE_SECONDS_PER_SAMPLE[unit.strategy] * steps / 20
    samples = max(unit.multiples) if unit.strategy == "random" else sum(unit.multiples)
    return per_sample * samples + 0.01 * samples  # + scoring by every verifier and the ground-truth evaluator


# --------------------------------------------------------------------------------------- worker
_STATE: dict[str, Any] = {}


def init_worker(threads: int, settings: Settings) -> None:
    """Loads the model and every embedded verifier once per process (reused by all its units)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    import noisesearch

    torch.set_num_threads(threads)
    model = noisesearch.load_model("toyworld", device="cpu", dtype="fp32")
    _STATE.update(
        model=model, settings=settings, verifiers={name: noisesearch.load_verifier(name) for name in VERIFIERS}
    )


def _score_all(images, prompt: str) -> dict[str, np.ndarray]:
    import torch

    with torch.no_grad():
        out = {}
        for name, v in _STATE["verifiers"].items():
            s = v.score(images, [prompt] * images.shape[0]).float().cpu().numpy().astype(np.float64)
            out[name] = np.where(np.isfinite(s), s, -np.inf)
        return out


def _row(unit: Unit, verifier: str, multiple: int, **values: Any) -> dict[str, Any]:
    s: Settings = _STATE["settings"]
    return {
        "prompt_index": unit.index,
        "prompt": unit.prompt,
        "category": unit.category,
        "seed": unit.seed,
        "strategy": unit.strategy,
        "verifier": verifier,
        "multiple": multiple,
        "budget_nfe": multiple * s.steps,
        **asdict(s),
        **values,
    }


def _search(unit: Unit, strategy: str, verifier: str, multiple: int):
    import noisesearch

    s: Settings = _STATE["settings"]
    return noisesearch.search(
        _STATE["model"],
        unit.prompt,
        strategy=strategy,
        verifier=_STATE["verifiers"][verifier],
        budget=multiple * s.steps,
        seed=unit.seed,
        steps=s.steps,
        guidance=s.guidance,
        max_batch=64,
    )


def run_unit(unit: Unit) -> list[dict[str, Any]]:
    """The rows of one unit (runs in a worker, or in-process with ``--workers 1``)."""
    return run_random(unit) if unit.strategy == "random" else run_strategy(unit)


def run_random(unit: Unit) -> list[dict[str, Any]]:
    """One random search at the largest multiple; smaller multiples are prefixes; every verifier selects."""
    from noisesearch.toyworld import evaluator

    wall, cpu = time.perf_counter(), time.process_time()
    top = max(unit.multiples)
    result = _search(unit, "random", unit.verifier, top)
    cands = result.candidates
    seeds = [c.seed for c in cands]
    assert seeds == list(range(unit.seed, unit.seed + len(cands))), "random search candidates are not in seed order"
    per_candidate, rem = divmod(result.accounting.nfe, len(cands))
    assert rem == 0, "random search spent a fractional sample"
    images = np.stack([c.image.numpy() for c in cands]).astype(np.float32) / 255  # [N, 3, H, W]
    import torch

    scores = _score_all(torch.from_numpy(images), unit.prompt)
    # the searched verifier selects by the engine's own scores (of the float images), as result.best does
    scores_search = np.array([c.score if c.finite else -np.inf for c in cands])
    ok = evaluator.satisfies_batch(images, [unit.prompt] * len(cands)).astype(bool)
    seconds, cpu_seconds = time.perf_counter() - wall, time.process_time() - cpu
    rows = []
    for verifier in unit.report:
        select = scores_search if verifier == unit.verifier else scores[verifier]
        for n in unit.multiples:
            j = int(np.argmax(select[:n]))  # first maximum: ties go to the lowest seed, as in result.ranked()
            rows.append(
                _row(
                    unit,
                    verifier,
                    n,
                    status="ok",
                    reason=None,
                    nfe=per_candidate * n,
                    network_rows=None,
                    verifier_calls=n,
                    decoded=n,
                    nfe_source=f"meter of one {top}x random run, first {n} candidates"
                    + (
                        ""
                        if verifier == unit.verifier
                        else f" (searched on {unit.verifier}, re-selected by {verifier})"
                    ),
                    candidates=n,
                    best_seed=seeds[j],
                    search_score=float(select[j]),
                    scores={v: float(scores[v][j]) for v in VERIFIERS},
                    gt=bool(ok[j]),
                    oracle=bool(ok[:n].any()),
                    seconds=seconds,
                    cpu_seconds=cpu_seconds,
                )
            )
    return rows


def run_strategy(unit: Unit) -> list[dict[str, Any]]:
    """One metered search per multiple; gradient is skipped (with the reason) where it refuses."""
    from noisesearch.toyworld import evaluator

    rows = []
    verifier = _STATE["verifiers"][unit.verifier]
    for m in unit.multiples:
        if unit.strategy == "gradient" and not getattr(verifier, "differentiable", False):
            rows.append(_row(unit, unit.verifier, m, status="skipped", reason=f"{unit.verifier} is not differentiable"))
            continue
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            result = _search(unit, unit.strategy, unit.verifier, m)
        except ValueError as e:
            if unit.strategy != "gradient" or "differentiable" not in str(e):
                raise
            rows.append(_row(unit, unit.verifier, m, status="skipped", reason=str(e)))
            continue
        best = result.best
        image = best.image.float()[None] / 255  # the delivered image [1, 3, H, W]
        scores = _score_all(image, unit.prompt)
        ok = bool(evaluator.satisfies_batch(image.numpy(), [unit.prompt])[0])
        acc = result.accounting
        rows.append(
            _row(
                unit,
                unit.verifier,
                m,
                status="ok",
                reason=None,
                options=result.settings.get("strategy_options"),
                nfe=acc.nfe,
                network_rows=acc.network_rows,
                verifier_calls=acc.verifier_calls,
                decoded=acc.decoded,
                nfe_source="meter",
                candidates=len(result.candidates),
                best_seed=best.seed,
                search_score=best.score,
                scores={v: float(scores[v][0]) for v in VERIFIERS},
                gt=ok,
                oracle=None,
                seconds=time.perf_counter() - wall,
                cpu_seconds=time.process_time() - cpu,
            )
        )
    return rows


# ------------------------------------------------------------------------------------- storage
def read_rows(path: Path) -> list[dict[str, Any]]:
    """The complete rows written so far (a torn last line from an interrupted write is ignored; a
    damaged line elsewhere is named, as for sweeps)."""
    from noisesearch.io.storage import read_jsonl

    return read_jsonl(path, required_key="prompt_index", what="scaling benchmark row") if path.exists() else []


def strategy_defaults(strategy: str) -> dict[str, Any]:
    """The options a search with ``strategy``'s current defaults records (as they read back from JSON)."""
    from noisesearch.strategies import make_strategy

    return json.loads(json.dumps(vars(make_strategy(strategy))))


def compatible(rows: Iterable[dict[str, Any]], settings: Settings) -> list[dict[str, Any]]:
    """The rows made with ``settings`` and, for searches other than random search, with their
    strategy's current defaults (a row from before a change of defaults is stale, never mixed in)."""
    want = asdict(settings)
    defaults = {name: strategy_defaults(name) for name in STRATEGIES[1:]}
    return [
        r
        for r in rows
        if all(r.get(k) == v for k, v in want.items())
        and (r["strategy"] == "random" or r.get("status") != "ok" or r.get("options") == defaults.get(r["strategy"]))
    ]


def append_rows(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    with path.open("a") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


# ----------------------------------------------------------------------------------- summaries
def mean_se(values: Sequence[float]) -> tuple[float, float]:
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0:
        return math.nan, math.nan
    return float(a.mean()), float(a.std(ddof=1) / math.sqrt(a.size)) if a.size > 1 else 0.0


def summarise(rows: Sequence[dict[str, Any]], prompt_indices: Sequence[int]) -> dict[str, Any]:
    """Cells (strategy, verifier, multiple) -> per-prompt rows over the chosen prompts (latest row wins).

    The 1x cell of every strategy is random search's 1x row (the shared unsearched sample).
    """
    wanted = set(prompt_indices)
    latest: dict[tuple, dict[str, Any]] = {}
    for r in rows:
        if r["prompt_index"] in wanted:
            latest[row_key(r)] = r
    cells: dict[tuple[str, str, int], dict[int, dict[str, Any]]] = defaultdict(dict)
    for (index, strategy, verifier, multiple), r in latest.items():
        cells[(strategy, verifier, multiple)][index] = r
    for strategy in STRATEGIES[1:]:
        for verifier in VERIFIERS:
            if any(s == strategy and v == verifier for s, v, _ in cells) and ("random", verifier, 1) in cells:
                cells[(strategy, verifier, 1)] = cells[("random", verifier, 1)]
    return cells


def cell_stats(cell: dict[int, dict[str, Any]], n_prompts: int, verifier: str) -> dict[str, Any] | None:
    if not cell:
        return None
    ok = [r for r in cell.values() if r["status"] == "ok"]
    if not ok:
        reasons = sorted({r.get("reason") or "skipped" for r in cell.values()})
        return {"skipped": "; ".join(reasons)}
    out = {"n": len(ok), "complete": len(ok) == n_prompts}
    out["gt"] = mean_se([float(r["gt"]) for r in ok])
    out["score"] = mean_se([r["scores"][verifier] for r in ok])
    out["under"] = {v: mean_se([r["scores"][v] for r in ok]) for v in VERIFIERS}
    if all(r.get("oracle") is not None for r in ok):
        out["oracle"] = mean_se([float(r["oracle"]) for r in ok])
    out["nfe_max"] = max(r["nfe"] for r in ok)
    out["nfe_over_budget"] = sum(r["nfe"] > r["budget_nfe"] for r in ok)
    return out


def _pct(ms: tuple[float, float]) -> str:
    return f"{100 * ms[0]:.1f}% ± {100 * ms[1]:.1f}"


def _num(ms: tuple[float, float]) -> str:
    return f"{ms[0]:.3f} ± {ms[1]:.3f}"


def _paired(cell: dict[int, dict[str, Any]], base: dict[int, dict[str, Any]], key) -> tuple[float, float]:
    common = [i for i, r in cell.items() if r["status"] == "ok" and i in base]
    return mean_se([key(cell[i]) - key(base[i]) for i in common])


def render(cells, prompts: Sequence[tuple[int, str, str]], settings: Settings, meta: dict[str, Any]) -> str:
    n = len(prompts)
    cats = Counter(c for _, c, _ in prompts)
    lines = [
        f"# Inference-time scaling on the embedded world ({n} held-out prompts)",
        "",
        f"Generated by `python benchmarks/scaling.py {meta['argv']}`. Model `toyworld`, {settings.steps} DDIM steps, "
        f"guidance {settings.guidance}; prompts: "
        + ", ".join(f"{c} {k}" for c, k in sorted(cats.items()))
        + f" (category-stratified, evenly spaced within each category); prompt i of the held-out list uses seed "
        f"{settings.base_seed} + {SEED_STRIDE}·i for every strategy, verifier and budget. Weights fingerprint "
        f"`{settings.weights}`. Multiples are NFE budgets in units of one sample ({settings.steps} NFEs), NFEs counted "
        "by the engine's meter. 1× is the unsearched sample, shared by all strategies (with one sample's budget every "
        "strategy returns exactly that sample); random search's larger multiples are the best of the first N candidates "
        "of one run at its largest multiple, selected by each verifier from the same candidates. Each strategy ran with "
        "its defaults at the time (rows made since the defaults of zero-order, paths and smc changed record them as "
        "`options`). Values: mean ± "
        f"standard error over prompts; `(n=…)` where fewer prompts than {n} are done; `–` not run. Gradient search's NFEs count forward passes only (its backward passes cost about "
        "twice as much again). Method: Ma et al. 2025, *Inference-time scaling for diffusion models beyond scaling "
        "denoising steps*.",
        "",
        f"Wall time of this invocation: {meta['wall_min']:.1f} min ({meta['units_run']} units run, "
        f"{meta['workers']} worker(s) × {meta['threads']} thread(s)).",
        "",
        "## Ground-truth satisfaction and search-verifier score vs compute",
        "",
        "| strategy | search verifier | "
        + " | ".join(f"GT {m}×" for m in MULTIPLES)
        + " | "
        + " | ".join(f"score {m}×" for m in MULTIPLES)
        + " |",
        "|---|---|" + "---|" * (2 * len(MULTIPLES)),
    ]

    def fmt(st, key, f):
        if st is None:
            return "–"
        if "skipped" in st:
            return f"skipped: {st['skipped']}"
        txt = f(st[key])
        return txt if st["complete"] else f"{txt} (n={st['n']})"

    for strategy in STRATEGIES:
        for verifier in VERIFIERS:
            stats = {m: cell_stats(cells.get((strategy, verifier, m), {}), n, verifier) for m in MULTIPLES}
            searched = [stats[m] for m in MULTIPLES[1:] if stats[m] is not None]
            if not searched:  # not run: say so, and how to run it
                lines.append(
                    f"| {strategy} | {verifier} | not run (`--strategies {strategy} --verifiers {verifier}`) |"
                    + " |" * (2 * len(MULTIPLES) - 1)
                )
                continue
            if all("skipped" in st for st in searched):  # refused at every budget: one line says why
                lines.append(
                    f"| {strategy} | {verifier} | skipped: {searched[0]['skipped']} |" + " |" * (2 * len(MULTIPLES) - 1)
                )
                continue
            lines.append(
                f"| {strategy} | {verifier} | "
                + " | ".join(fmt(stats[m], "gt", _pct) for m in MULTIPLES)
                + " | "
                + " | ".join(fmt(stats[m], "score", _num) for m in MULTIPLES)
                + " |"
            )
    oracle = {m: cell_stats(cells.get(("random", VERIFIERS[0], m), {}), n, VERIFIERS[0]) for m in MULTIPLES}
    if any(st and "oracle" in st for st in oracle.values()):
        lines.append(
            "| oracle (some candidate of random search satisfies) | – | "
            + " | ".join(_pct(st["oracle"]) if st and "oracle" in st else "–" for st in oracle.values())
            + " |"
            + " – |" * len(MULTIPLES)
        )

    lines += [
        "",
        "## Verifier hacking: search on A, score the returned image under every verifier and the ground truth",
        "",
        "Δ: paired change from the 1× base image of the same prompts (mean ± standard error). A search that raises its "
        "own verifier's score but not the other verifier's or the ground truth is exploiting its verifier.",
        "",
        "| search on | strategy | NFEs | "
        + " | ".join(f"{v} score (Δ)" for v in VERIFIERS)
        + " | GT satisfaction (Δ) |",
        "|---|---|---|" + "---|" * len(VERIFIERS) + "---|",
    ]
    base_cell = cells.get(("random", VERIFIERS[0], 1), {})
    base = cell_stats(base_cell, n, VERIFIERS[0])
    if base and "skipped" not in base:
        lines.append(
            "| – (unsearched) | – | 1× | "
            + " | ".join(_num(base["under"][v]) for v in VERIFIERS)
            + f" | {_pct(base['gt'])} |"
        )
    for verifier in VERIFIERS:
        for strategy in STRATEGIES:
            for m in MULTIPLES[1:]:
                cell = cells.get((strategy, verifier, m), {})
                st = cell_stats(cell, n, verifier)
                if st is None or "skipped" in st:
                    continue
                base_rows = cells.get(("random", verifier, 1), {})
                parts = []
                for v in VERIFIERS:
                    d = _paired(cell, base_rows, lambda r, v=v: r["scores"][v])
                    txt = f"{_num(st['under'][v])} ({d[0]:+.3f} ± {d[1]:.3f})"
                    parts.append(f"**{txt}**" if v == verifier else txt)
                d = _paired(cell, base_rows, lambda r: float(r["gt"]))
                gt = f"{_pct(st['gt'])} ({100 * d[0]:+.1f} ± {100 * d[1]:.1f} pp)"
                tag = "" if st["complete"] else f" (n={st['n']})"
                lines.append(f"| {verifier} | {strategy} | {m}×{tag} | " + " | ".join(parts) + f" | {gt} |")

    lines += ["", *paired_section(cells, n)]
    over = sum((cell_stats(c, n, v) or {}).get("nfe_over_budget", 0) for (s, v, m), c in cells.items())
    lines += ["", f"Rows whose metered NFEs exceed their budget: {over}."]
    return "\n".join(lines) + "\n"


def paired_vs_random(cell: dict[int, dict[str, Any]], base: dict[int, dict[str, Any]]) -> dict[str, Any] | None:
    """A strategy's cell against random search's at the same verifier and multiple, on their common prompts."""
    common = sorted(i for i, r in cell.items() if r["status"] == "ok" and i in base and base[i]["status"] == "ok")
    if not common:
        return None
    d = [float(cell[i]["gt"]) - float(base[i]["gt"]) for i in common]
    out = {
        "n": len(common),
        "gt": mean_se([float(cell[i]["gt"]) for i in common]),
        "random_gt": mean_se([float(base[i]["gt"]) for i in common]),
        "diff": mean_se(d),
        "wins": sum(x > 0 for x in d),
        "losses": sum(x < 0 for x in d),
    }
    for key in ("nfe", "verifier_calls", "decoded"):
        vals = [cell[i].get(key) for i in common]
        out[key] = float(np.mean(vals)) if all(v is not None for v in vals) else math.nan
    return out


def paired_section(cells, n: int) -> list[str]:
    lines = [
        "## Paired against random search on the same prompts and seeds",
        "",
        "Ground-truth satisfaction of the returned image, the strategy minus random search at the same NFE budget, "
        "over the prompts both have (mean ± standard error; wins/losses: prompts where only one of the two "
        "satisfies). NFEs are the budget axis; verifier calls and decodes are what each search also paid per prompt "
        "(random search: one of each per candidate).",
        "",
        "| strategy | search verifier | budget | prompts | GT strategy | GT random | Δ (points) | wins / losses "
        "| NFEs | verifier calls | decodes |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for strategy in STRATEGIES[1:]:
        for verifier in VERIFIERS:
            for m in MULTIPLES[1:]:
                cell = cells.get((strategy, verifier, m))
                pv = paired_vs_random(cell or {}, cells.get(("random", verifier, m), {}))
                if pv is None:
                    continue
                base = cells[("random", verifier, m)]
                rnd_calls = float(np.mean([base[i]["verifier_calls"] for i in base]))
                lines.append(
                    f"| {strategy} | {verifier} | {m}× | {pv['n']} | {_pct(pv['gt'])} | {_pct(pv['random_gt'])} | "
                    f"{100 * pv['diff'][0]:+.1f} ± {100 * pv['diff'][1]:.1f} | {pv['wins']} / {pv['losses']} | "
                    f"{pv['nfe']:.0f} | {pv['verifier_calls']:.1f} (random {rnd_calls:.0f}) | {pv['decoded']:.1f} |"
                )
    return lines


def plot(cells, n: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    verifiers = [v for v in VERIFIERS if any(k[1] == v and k[2] > 1 for k in cells)] or [VERIFIERS[0]]
    fig, axes = plt.subplots(2, len(verifiers), figsize=(5.2 * len(verifiers), 7.0), dpi=120, squeeze=False)
    colours = dict(zip(STRATEGIES, ("C0", "C5", "C1", "C2", "C3", "C4")))
    for col, verifier in enumerate(verifiers):
        for k, strategy in enumerate(STRATEGIES):
            pts = []
            for m in MULTIPLES:
                st = cell_stats(cells.get((strategy, verifier, m), {}), n, verifier)
                if st and "skipped" not in st:
                    pts.append((m, st))
            if len(pts) < 2:
                continue
            xs = [m * 2 ** (0.06 * (k - 2)) for m, _ in pts]  # nudged sideways so error bars do not overlap
            for row, key, scale in ((0, "gt", 100.0), (1, "score", 1.0)):
                axes[row][col].errorbar(
                    xs,
                    [scale * st[key][0] for _, st in pts],
                    yerr=[scale * st[key][1] for _, st in pts],
                    marker="o",
                    capsize=3,
                    label=strategy,
                    color=colours[strategy],
                )
        oracle = [
            (m, st)
            for m in MULTIPLES
            if (st := cell_stats(cells.get(("random", verifier, m), {}), n, verifier)) and "oracle" in st
        ]
        if len(oracle) > 1:
            axes[0][col].plot(
                [m for m, _ in oracle],
                [100 * st["oracle"][0] for _, st in oracle],
                "k--",
                alpha=0.5,
                label="oracle (random)",
            )
        axes[0][col].set_title(f"search on {verifier}")
        axes[0][col].set_ylabel("ground-truth satisfaction (%)")
        axes[1][col].set_ylabel(f"{verifier} score of the returned image")
        for row in (0, 1):
            ax = axes[row][col]
            ax.set_xscale("log", base=2)
            ax.set_xticks(MULTIPLES, [f"{m}×" for m in MULTIPLES])
            ax.set_xlabel("NFEs, in multiples of one sample")
            ax.grid(alpha=0.3)
        axes[0][col].legend(fontsize=8)
    fig.suptitle(f"Inference-time scaling on the embedded world ({n} held-out prompts, mean ± s.e.)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def result_line(cells, n: int, verifier: str = "toyclip") -> str:
    """Ground-truth satisfaction of random search and prune at 4x and 16x searching on ``verifier``, and
    prune's paired difference from random search at 16x (points, standard error), over the prompts where
    both ran (``prompts=``; ``na``: prune not run there)."""
    parts, count = [], 0
    for m in (4, 16):
        pv = paired_vs_random(cells.get(("prune", verifier, m), {}), cells.get(("random", verifier, m), {}))
        parts.append(f"random{m}=" + (f"{pv['random_gt'][0]:.3f}" if pv else "na"))
        parts.append(f"prune{m}=" + (f"{pv['gt'][0]:.3f}" if pv else "na"))
        if m == 16:
            parts.append("prune16_vs_random_pts=" + (f"{100 * pv['diff'][0]:+.1f}" if pv else "na"))
            parts.append("prune16_vs_random_se=" + (f"{100 * pv['diff'][1]:.1f}" if pv else "na"))
            count = pv["n"] if pv else 0
    return "RESULT " + " ".join(parts) + f" prompts={count} verifier={verifier}"


# ----------------------------------------------------------------------------------------- main
def _csv(text: str, allowed: Sequence[str] | None, what: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise SystemExit(f"error: --{what} is empty")
    if allowed is not None:
        bad = [t for t in items if t not in allowed]
        if bad:
            raise SystemExit(f"error: unknown {what} {', '.join(bad)}; choose from {', '.join(allowed)}")
    return list(dict.fromkeys(items))


def parse_max_multiple(text: str, verifiers: Sequence[str]) -> dict[str, int]:
    """``16`` (every search verifier) or ``toyclip=16,toyrelation=4`` (a verifier left out: 1, i.e. not searched)."""
    try:
        if "=" not in text:
            return {v: int(text) for v in VERIFIERS}
        caps = {v: 1 for v in VERIFIERS}
        for part in text.split(","):
            name, value = (t.strip() for t in part.split("="))
            if name not in VERIFIERS:
                raise SystemExit(
                    f"error: --max-multiple names unknown verifier {name!r}; choose from {', '.join(VERIFIERS)}"
                )
            caps[name] = int(value)
        return caps
    except ValueError:
        raise SystemExit(f"error: --max-multiple must be a number or NAME=M,... pairs, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python benchmarks/scaling.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run: {QUICK['prompts']} prompts, budgets {QUICK['budgets']}, strategies "
        f"{QUICK['strategies']}, verifier {QUICK['verifiers']}; writes to a temporary folder "
        "unless --out is given (a few minutes)",
    )
    p.add_argument("--prompts", type=int, help=f"held-out prompts, category-stratified (default {DEFAULTS['prompts']})")
    p.add_argument(
        "--budgets",
        help=f"NFE multiples of one sample, from {','.join(map(str, MULTIPLES))} (default {DEFAULTS['budgets']})",
    )
    p.add_argument(
        "--max-multiple",
        help="largest multiple run by strategies other than random (whose larger budgets are prefixes of "
        "one run, nearly free): one number, or one per search verifier as NAME=M,... "
        f"(default {DEFAULTS['max_multiple']})",
    )
    p.add_argument("--strategies", help=f"from {','.join(STRATEGIES)} (default {DEFAULTS['strategies']})")
    p.add_argument(
        "--verifiers",
        help=f"search verifiers, from {','.join(VERIFIERS)} (default {DEFAULTS['verifiers']}; "
        "random search is always also reported under every verifier: it is free)",
    )
    p.add_argument("--steps", type=int, help="denoising steps (default: the model's, 20)")
    p.add_argument("--guidance", type=float, help="classifier-free guidance (default: the model's, 4.0)")
    p.add_argument("--seed", type=int, default=0, help=f"base seed; prompt i uses seed + {SEED_STRIDE}·i (default 0)")
    p.add_argument("--workers", type=int, default=2, help="worker processes, each loading the model once (default 2)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per worker (default 1)")
    p.add_argument("--out", type=Path, help="output folder (default docs/, or a temporary folder with --quick)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and the time estimate, run nothing")
    p.add_argument(
        "--report-only",
        action="store_true",
        help="run nothing: render the tables, plot and RESULT from the rows already in the JSONL "
        "(e.g. while or after a run stopped early; each figure says over how many prompts it is)",
    )
    p.add_argument("--fresh", action="store_true", help="ignore and replace an existing JSONL instead of resuming it")
    return p


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    preset = QUICK if args.quick else DEFAULTS
    n_prompts = args.prompts if args.prompts is not None else preset["prompts"]
    budgets = sorted({int(b) for b in _csv(args.budgets or preset["budgets"], [str(m) for m in MULTIPLES], "budgets")})
    strategies = _csv(args.strategies or preset["strategies"], STRATEGIES, "strategies")
    strategies = [s for s in STRATEGIES if s in strategies]
    verifiers = _csv(args.verifiers or preset["verifiers"], VERIFIERS, "verifiers")
    max_multiple = parse_max_multiple(args.max_multiple or preset["max_multiple"], verifiers)
    if not 1 <= n_prompts <= 210:
        raise SystemExit("error: --prompts must be between 1 and 210 (the held-out set)")
    if args.workers < 1 or args.threads < 1:
        raise SystemExit("error: --workers and --threads must be >= 1")
    out = args.out or (Path(tempfile.gettempdir()) / "noisesearch-scaling-quick" if args.quick else Path("docs"))
    out.mkdir(parents=True, exist_ok=True)

    from noisesearch.models import get_family

    rec = get_family("toyworld").defaults
    steps = args.steps if args.steps is not None else int(rec["steps"])
    guidance = args.guidance if args.guidance is not None else float(rec["guidance"])
    settings = Settings(steps=steps, guidance=guidance, base_seed=args.seed, weights=weights_fingerprint())
    prompts = select_prompts(n_prompts)

    jsonl = out / f"{FILE_STEM}.jsonl"
    if args.fresh and jsonl.exists():
        jsonl.unlink()
    existing = read_rows(jsonl)
    usable = compatible(existing, settings)
    done = {row_key(r) for r in usable}
    units = [
        u
        for u in (pending(u, done) for u in plan_units(prompts, strategies, verifiers, budgets, max_multiple, settings))
        if u is not None
    ]
    units = interleaved(units)
    core_s = sum(estimate_core_seconds(u, steps) for u in units)
    speed = min(args.workers, max(1, len(units))) * (1 + 0.6 * (args.threads - 1))
    caps = ", ".join(f"{v} to {max_multiple[v]}x" for v in verifiers)
    print(
        f"{len(prompts)} prompts, budgets {','.join(f'{b}x' for b in budgets)}, strategies {','.join(strategies)} "
        f"({f'random to {max(budgets)}x; ' if 'random' in strategies else ''}the others searching on {caps}); "
        f"{steps} steps, guidance {guidance}"
    )
    print(
        f"output: {out.resolve()}; {len(usable)} rows already done in {jsonl.name}"
        + (f" ({len(existing) - len(usable)} rows from other settings ignored)" if len(existing) > len(usable) else "")
    )
    print(
        f"estimated time: {core_s / speed / 60:.1f} min for {len(units)} units on idle cores "
        f"({args.workers} worker(s) x {args.threads} thread(s); {core_s / 60:.0f} core-minutes)",
        flush=True,
    )

    if args.report_only:
        units = []
    if args.dry_run:
        for u in units[: min(len(units), 8)]:
            print(
                f"  e.g. prompt {u.index} ({u.category}) {u.strategy} on {u.verifier} at "
                + ",".join(f"{m}x" for m in u.multiples)
            )
        return {"out": out, "units": units, "estimate_s": core_s / speed}
    start = time.perf_counter()
    init_args = (args.threads, settings)
    report_every = max(1, len(units) // 20)
    finished = 0

    def record(rows: list[dict[str, Any]]) -> None:
        nonlocal finished
        append_rows(jsonl, rows)
        finished += 1
        if finished % report_every == 0 or finished == len(units):
            el = time.perf_counter() - start
            eta = el / finished * (len(units) - finished)
            print(f"  {finished}/{len(units)} units, {el / 60:.1f} min elapsed, ~{eta / 60:.1f} min left", flush=True)

    if units:
        if args.workers == 1:
            import torch

            threads = torch.get_num_threads()
            try:
                init_worker(*init_args)
                for unit in units:
                    record(run_unit(unit))
            finally:
                torch.set_num_threads(threads)  # in-process callers (tests) keep their setting
        else:
            pool = mp.get_context("spawn").Pool(args.workers, initializer=init_worker, initargs=init_args)
            try:
                for rows in pool.imap_unordered(run_unit, units, chunksize=1):
                    record(rows)
                pool.close()
            except BaseException:
                pool.terminate()
                raise
            finally:
                pool.join()
    wall = time.perf_counter() - start

    rows = compatible(read_rows(jsonl), settings)
    cells = summarise(rows, [i for i, _, _ in prompts])
    meta = {
        "argv": " ".join(argv if argv is not None else sys.argv[1:]),
        "wall_min": wall / 60,
        "units_run": len(units),
        "workers": args.workers,
        "threads": args.threads,
    }
    table = render(cells, prompts, settings, meta)
    (out / f"{FILE_STEM}.md").write_text(table)
    plot(cells, len(prompts), out / f"{FILE_STEM}.png")
    print(table)
    print(f"wall time {wall / 60:.1f} min; wrote {out / (FILE_STEM + '.md')}, {out / (FILE_STEM + '.png')}, {jsonl}")
    line = result_line(cells, len(prompts), verifiers[0])
    print(line, flush=True)
    return {"out": out, "rows": rows, "cells": cells, "result": line, "wall_s": wall}


if __name__ == "__main__":
    main()
