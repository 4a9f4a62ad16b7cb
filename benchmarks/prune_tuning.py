"""Choosing `prune`'s hyperparameters on the embedded world's *training-split* prompts only.

No held-out prompt and no ground-truth verdict enters the choice: the objective is the searched
verifier's own score (``toydetect``) of the image each configuration would return, as a percentile
among the final scores of all the seeds recorded for its prompt, paired against random search at
the same NFEs (a percentile does not depend on the verifier's scale, so a few prompts whose
log-probabilities swing widely do not decide). Ground-truth satisfaction on these training prompts
is printed for information only.

One pass per prompt records, for S seeds, everything any configuration could see: the lookahead
estimate's toydetect score at each screen step k in ``--ks`` with J in ``--jumps`` (the screen
step's evaluation is shared, as the engine caches it), and each seed's finished sample's score.
Every configuration (k, J, keep, halving) is then replayed exactly with
:meth:`noisesearch.strategies.prune.PruneSearch.plan` (screen the first N0 seeds, keep the top m by
lookahead score, finish them and the fill seeds, return the best finished score) and compared with
best-of-B on the same seeds. Replays that would need more than S seeds are skipped.

    python benchmarks/prune_tuning.py            # 80 prompts x 64 seeds: about 30 min on 2 idle cores
    python benchmarks/prune_tuning.py --quick    # smoke run, about 1 min

The shipped records (docs/prune_tuning) hold 108 prompts: a run with ``--prompts 40`` and then the
default run (records are matched by prompt text, and every recorded prompt is replayed).

Last line: ``RESULT best=<config> pct4=<mean percentile gain at 4x> pct16=<at 16x> d4=<mean score
gain at 4x> d16=<at 16x>``.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import multiprocessing as mp
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

VERIFIER = "toydetect"
#: held-out mix (shape 6, counting 12, color_binding 96, spatial 96 of 210), mirrored on training prompts
BASE_SEED = 7_000_000  # far from the held-out benchmark's seeds
TOP = 30  # configurations shown in the report


_STATE: dict[str, Any] = {}


def init_worker(threads: int) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    import noisesearch

    torch.set_num_threads(threads)
    _STATE["model"] = noisesearch.load_model("toyworld", device="cpu", dtype="fp32")
    _STATE["verifier"] = noisesearch.load_verifier(VERIFIER)


def record_prompt(job: tuple[int, str, str, int, tuple[int, ...], tuple[int, ...], int]) -> dict[str, Any]:
    """Lookahead scores at every (k, J) and final scores of S seeds of one training prompt."""
    import torch

    from noisesearch.core import CoreConfig, DenoisingCore
    from noisesearch.models import get_family
    from noisesearch.toyworld import evaluator

    index, category, prompt, seeds, ks, jumps, steps = job
    rec = get_family("toyworld").defaults
    core = DenoisingCore(_STATE["model"], CoreConfig(steps=steps, guidance=float(rec["guidance"]), max_batch=64))
    verifier = _STATE["verifier"]
    seed_list = [BASE_SEED + 1000 * index + i for i in range(seeds)]

    def score(latents: torch.Tensor) -> list[float]:
        with torch.no_grad():
            s = verifier.score(core.decode(latents), [prompt] * latents.shape[0]).double()
        return torch.where(torch.isfinite(s), s, torch.full_like(s, -math.inf)).tolist()

    traj = core.start(core.initial_noise(seed_list), [prompt] * seeds, seed_list)
    look: dict[str, list[float]] = {}
    for k in sorted(ks):
        traj = core.run(traj, until=k)
        look[f"free{k}"] = score(core.preview(traj))  # the free preview of step k-1's evaluation
        for j in sorted(jumps):
            look[f"{k}/{j}"] = score(core.lookahead(traj, jumps=j))
    final = core.run(traj)
    with torch.no_grad():
        images = core.decode(final.x)
        fs = verifier.score(images, [prompt] * seeds).double()
    ok = evaluator.satisfies_batch(images.numpy(), [prompt] * seeds).astype(bool)
    return {
        "index": index,
        "category": category,
        "prompt": prompt,
        "look": look,
        "final": torch.where(torch.isfinite(fs), fs, torch.full_like(fs, -math.inf)).tolist(),
        "gt": ok.tolist(),
    }


def percentile(finals: list[float], score: float) -> float:
    """Fraction of ``finals`` below ``score``, ties counted half: where a score stands among a prompt's noises."""
    a = np.asarray(finals)
    return float(((a < score).sum() + 0.5 * ((a == score).sum() - 1)) / max(1, a.size - 1))


def mean_se(values: list[float]) -> tuple[float, float]:
    return float(np.mean(values)), float(np.std(values, ddof=1) / math.sqrt(len(values)))


def replay(rec: dict[str, Any], cfg: dict[str, Any], budget: int, steps: int) -> tuple[int, float, bool] | None:
    """(seed offset, final score, ground truth) of the image prune with ``cfg`` returns, or None if
    the recorded seeds are too few for its plan."""
    from noisesearch.strategies.prune import PruneSearch

    s = PruneSearch(**cfg)
    plan = s.plan(budget, steps)
    final, gt = np.asarray(rec["final"]), rec["gt"]
    if not plan.screens:
        finished = list(range(plan.fill))
    else:
        if plan.screened + plan.fill > len(final):
            return None
        alive = list(range(plan.screened))
        for step, _, kept in plan.screens:
            look = np.asarray(rec["look"][f"{step}/{s.jumps}"])
            order = sorted(alive, key=lambda i: (-look[i], alive.index(i)))  # stable, as torch.sort(stable=True)
            alive = order[:kept]
        finished = alive + list(range(plan.screened, plan.screened + plan.fill))
    best = min(finished, key=lambda i: (-final[i], i))
    return best, float(final[best]), bool(gt[best])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(
        prog="python benchmarks/prune_tuning.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--prompts", type=int, default=80, help="training-split prompts (default 80)")
    p.add_argument("--seeds", type=int, default=64, help="seeds recorded per prompt (default 64)")
    p.add_argument("--ks", default="0,2,4,6", help="screen steps recorded (default 0,2,4,6)")
    p.add_argument("--jumps", default="1,2,3,4,5", help="lookahead jumps recorded (default 1,2,3,4,5)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, help="folder of records.jsonl and the table (default docs/prune_tuning)")
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 4 prompts x 64 seeds of 6 steps, screens at steps 0 and 2 with 1-2 jumps, into a temporary folder",
    )
    p.add_argument(
        "--replay-only",
        action="store_true",
        help="record nothing: replay the prompts already recorded in --out (a run stopped early)",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.prompts, args.seeds, args.steps, args.ks, args.jumps, args.workers = 1, 64, 6, "0,2", "1,2", 1
        args.out = args.out or Path(tempfile.mkdtemp(prefix="prune_tuning_"))
    args.out = args.out or Path("docs/prune_tuning")
    ks = tuple(int(x) for x in args.ks.split(","))
    jumps = tuple(int(x) for x in args.jumps.split(","))
    args.out.mkdir(parents=True, exist_ok=True)
    records_path = args.out / "records.jsonl"
    have = {}
    if records_path.exists():
        for line in records_path.read_text().splitlines():
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue
            if len(r["final"]) == args.seeds and all(f"{k}/{j}" in r["look"] for k in ks for j in jumps):
                have[r["prompt"]] = r  # by text: another --prompts count orders prompts differently
    from noisesearch.toyworld.grammar import training_subset

    prompts = training_subset(args.prompts)
    jobs = [(i, c, pr, args.seeds, ks, jumps, args.steps) for i, (c, pr) in enumerate(prompts) if pr not in have]
    if args.replay_only:
        jobs = []
    start = time.perf_counter()
    print(
        f"{len(prompts)} training prompts ({dict(Counter(c for c, _ in prompts))}), {args.seeds} seeds; "
        f"{len(jobs)} to record",
        flush=True,
    )
    if jobs:
        with contextlib.ExitStack() as stack, records_path.open("a") as f:
            if args.workers > 1:
                pool = stack.enter_context(
                    mp.get_context("spawn").Pool(args.workers, initializer=init_worker, initargs=(args.threads,))
                )
                made = pool.imap_unordered(record_prompt, jobs)
            else:  # in this process (no spawn: also what a test importing this file needs)
                init_worker(args.threads)
                made = map(record_prompt, jobs)
            for n, rec in enumerate(made, 1):
                f.write(json.dumps(rec) + "\n")
                f.flush()
                have[rec["prompt"]] = rec
                print(f"  {n}/{len(jobs)} prompts, {(time.perf_counter() - start) / 60:.1f} min", flush=True)
    # every recorded training prompt counts, also those of an earlier run with another --prompts
    records = [have[pr] for _, pr in prompts if pr in have]
    records += [r for pr, r in have.items() if pr not in {p for _, p in prompts}]

    # Spearman of each screen signal with the final score (pooled within prompts)
    def spearman(a, b) -> float:
        ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
        return float(np.corrcoef(ra, rb)[0, 1]) if np.std(ra) > 0 and np.std(rb) > 0 else math.nan

    lines = [
        "# prune hyperparameters, chosen on training-split prompts",
        "",
        f"{len(records)} training prompts recorded ("
        + ", ".join(f"{c} {k}" for c, k in sorted(Counter(r["category"] for r in records).items()))
        + f"), {args.seeds} seeds each, {args.steps} steps, searching on {VERIFIER}. Generated by "
        f"`python benchmarks/prune_tuning.py {' '.join(argv if argv is not None else sys.argv[1:])}`.",
        "",
        "## Spearman of the screen signal with the final score (mean over prompts)",
        "",
        "| signal | " + " | ".join(f"k={k}" for k in ks) + " |",
        "|---|" + "---|" * len(ks),
    ]
    for sig in ["free", *map(str, jumps)]:
        row = []
        for k in ks:
            key = f"free{k}" if sig == "free" else f"{k}/{sig}"
            row.append(np.nanmean([spearman(np.asarray(r["look"][key]), np.asarray(r["final"])) for r in records]))
        name = "free x0 preview (0 NFEs)" if sig == "free" else f"lookahead J={sig} ({int(sig) + 1} NFEs)"
        lines.append(f"| {name} | " + " | ".join(f"{v:.2f}" for v in row) + " |")

    configs = []
    for k, j, keep in itertools.product(ks, jumps, (0.125, 0.25, 0.5)):
        configs.append({"at": k / args.steps, "jumps": j, "keep": keep, "halving": False})
        for k2, eta in itertools.product([k2 for k2 in ks if k2 > k], (2, 3)):
            configs.append(
                {
                    "at": k / args.steps,
                    "jumps": j,
                    "keep": keep,
                    "halving": True,
                    "second_at": k2 / args.steps,
                    "eta": eta,
                }
            )
    table = []
    for cfg in configs:
        res: dict[int, Any] = {}
        for mult in (4, 16):
            budget = mult * args.steps
            q, d, g = [], [], []
            for r in records:
                got = replay(r, cfg, budget, args.steps)
                if got is None:
                    break
                b = budget // args.steps  # random search: best of the first B seeds
                j = min(range(b), key=lambda i: (-r["final"][i], i))
                q.append(percentile(r["final"], got[1]) - percentile(r["final"], r["final"][j]))
                d.append(got[1] - r["final"][j])
                g.append(float(got[2]) - float(r["gt"][j]))
            if len(d) < len(records):
                res = {}
                break
            res[mult] = (*mean_se(q), *mean_se(d), float(np.mean(g)))
        if res:
            table.append((cfg, res))
    table.sort(key=lambda t: -(t[1][4][0] + t[1][16][0]))
    lines += [
        "",
        "## Replayed configurations, paired against random search on the same seeds",
        "",
        "Ranked by the mean gain in the returned image's score percentile at 4× plus 16× (the choice "
        "uses nothing else): the percentile of its final verifier score among the final scores of all "
        "the seeds recorded for its prompt, so that it does not depend on the verifier's scale and a few "
        "prompts with large log-probability swings do not decide. Score Δ: the same in the verifier's "
        "units. GT Δ: ground-truth satisfaction difference on these training prompts, for information only.",
        "",
        "| at | J | keep | halving | percentile Δ 4× (pts) | percentile Δ 16× (pts) | score Δ 4× | score Δ 16× "
        "| GT Δ 4× (pts) | GT Δ 16× (pts) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    shown = table[:TOP]
    if len(table) > len(shown):
        lines.insert(-4, f"{len(table)} configurations replayed; the best {len(shown)} shown.")
        lines.insert(-4, "")
    for cfg, res in shown:
        cells = [
            f"{cfg['at']:.2f}",
            str(cfg["jumps"]),
            str(cfg["keep"]),
            f"yes (second at {cfg['second_at']:.2f}, eta {cfg['eta']})" if cfg["halving"] else "no",
            *(f"{100 * res[m][0]:+.2f} ± {100 * res[m][1]:.2f}" for m in (4, 16)),
            *(f"{res[m][2]:+.3f} ± {res[m][3]:.3f}" for m in (4, 16)),
            *(f"{100 * res[m][4]:+.1f}" for m in (4, 16)),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    (args.out / "prune_tuning.md").write_text(text)
    print(text)
    if not table:
        line = "RESULT best=none (no configuration fits the recorded seeds at both budgets: record more --seeds)"
        print(line, flush=True)
        return {"table": table, "result": line}
    best_cfg, best = table[0]
    line = (
        f"RESULT best={json.dumps(best_cfg, separators=(',', ':'))} pct4={best[4][0]:.4f} pct16={best[16][0]:.4f} "
        f"d4={best[4][2]:.4f} d16={best[16][2]:.4f}"
    )
    print(line, flush=True)
    return {"table": table, "result": line}


if __name__ == "__main__":
    main()
