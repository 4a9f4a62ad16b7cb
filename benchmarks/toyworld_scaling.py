"""Best-of-N scaling on the embedded world, measured against pixel ground truth.

For each held-out prompt (fixed list, ``noisesearch toyworld prompts``) the embedded model samples
N_max candidates with seeds 0..N_max-1 through ``noisesearch.search``; every candidate is scored by
every learned verifier and judged by the ground-truth evaluator (pixel parsing, independent of all
learned models). Because candidate i always has seed i, random search with N candidates is exactly
the first N of them, so best-of-1/4/16/64 come from one run. Reported per verifier: ground-truth
satisfaction of the chosen image per category, the verifier's own mean score of the chosen image,
a ``rank-ensemble`` row (all verifiers, rank mean over the N candidates, as Ma et al. 2025's
ensemble) and an ``oracle`` row (any of the first N satisfies: the ceiling of a perfect verifier),
and each verifier's pairwise accuracy on the generated candidates (a satisfying one scored above
a failing one of the same prompt).

Last line: ``RESULT base=<rate> best16=<rate> best64=<rate>`` for the strongest verifier at 16.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

import noisesearch
from noisesearch.toyworld import evaluator, grammar

VERIFIERS = ("toyclip", "toyrelation", "toydetect")
ENSEMBLE = "rank-ensemble"  # all verifiers, rank mean over the N candidates (Ma et al. 2025)


def rank_mean(scores: list[np.ndarray]) -> np.ndarray:
    """Mean over verifiers of each candidate's rank among the candidates (0 = worst), as
    :class:`noisesearch.verifiers.ensemble.RankEnsemble` ranks a batch."""
    return np.mean([np.argsort(np.argsort(s, kind="stable"), kind="stable") for s in scores], axis=0)


def run(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    prompts = grammar.heldout_prompts()
    per_category = args.quick_per_category if args.quick else args.per_category
    if per_category:
        prompts = grammar.heldout_subset(per_category)
    elif args.limit:
        prompts = prompts[: args.limit]
    n_max = args.candidates if not args.quick else min(args.candidates, 16)
    ks = [k for k in (1, 4, 16, 64) if k <= n_max]
    model = noisesearch.load_model("toyworld", device="cpu", dtype="fp32")
    verifiers = {name: noisesearch.load_verifier(name) for name in VERIFIERS}

    # per prompt: satisfied[N], scores[v][N]
    records = []
    t0 = time.perf_counter()
    for i, (category, prompt) in enumerate(prompts):
        start = time.perf_counter()
        result = noisesearch.search(
            model,
            prompt,
            verifier=verifiers[VERIFIERS[0]],
            candidates=n_max,
            seed=args.seed,
            steps=args.steps,
            guidance=args.guidance,
            max_batch=n_max,
        )
        images = torch.stack([c.image for c in result.candidates]).float() / 255  # seeds seed..seed+n-1 in order
        with torch.no_grad():
            scores = {name: v.score(images, [prompt] * n_max).cpu().numpy() for name, v in verifiers.items()}
        ok = evaluator.satisfies_batch(images.numpy(), [prompt] * n_max).astype(bool)
        records.append(
            {"category": category, "prompt": prompt, "ok": ok, "scores": scores, "seconds": time.perf_counter() - start}
        )
        if (i + 1) % 20 == 0:
            print(f"  {i + 1}/{len(prompts)} prompts, {time.perf_counter() - t0:.0f} s", flush=True)

    cats = sorted({r["category"] for r in records})
    table: dict[str, dict[int, dict[str, float]]] = {}
    for name in (*VERIFIERS, ENSEMBLE, "oracle"):
        table[name] = {}
        for k in ks:
            row: dict[str, float] = {}
            sat_all, own = [], []
            for cat in cats:
                sats = []
                for r in (r for r in records if r["category"] == cat):
                    if name == "oracle":
                        sats.append(bool(r["ok"][:k].any()))
                    elif name == ENSEMBLE:
                        j = int(np.argmax(rank_mean([r["scores"][v][:k] for v in VERIFIERS])))
                        sats.append(bool(r["ok"][j]))
                    else:
                        j = int(np.argmax(r["scores"][name][:k]))  # ties: lowest seed, as the engine
                        sats.append(bool(r["ok"][j]))
                        own.append(float(r["scores"][name][j]))
                row[cat] = float(np.mean(sats))
                sat_all += sats
            row["all"] = float(np.mean(sat_all))
            if own:
                row["own_score"] = float(np.mean(own))
            table[name][k] = row
    return {
        "prompts": len(records),
        "candidates": n_max,
        "steps": args.steps,
        "guidance": args.guidance,
        "seconds_per_prompt": float(np.mean([r["seconds"] for r in records])),
        "categories": cats,
        "ks": ks,
        "table": table,
        "pairwise": pairwise_accuracy(records),
    }


def pairwise_accuracy(records: list[dict]) -> dict[str, dict[str, float]]:
    """How well each verifier orders the generated candidates of one prompt, which is all that
    best-of-N asks of it: over every (satisfying, failing) pair of candidates of the same prompt,
    the share it scores the satisfying one higher (ties count one half), pooled over prompts."""
    out = {}
    for name in VERIFIERS:
        wins, pairs, prompts = 0.0, 0, 0
        for r in records:
            s, ok = np.asarray(r["scores"][name], dtype=np.float64), r["ok"]
            good, bad = s[ok], s[~ok]
            if len(good) and len(bad):
                diff = good[:, None] - bad[None, :]
                wins += float((diff > 0).sum() + 0.5 * (diff == 0).sum())
                pairs += diff.size
                prompts += 1
        out[name] = {"accuracy": wins / pairs if pairs else float("nan"), "pairs": pairs, "prompts": prompts}
    return out


def render(summary: dict) -> str:
    cats = summary["categories"]
    lines = [
        f"held-out prompts: {summary['prompts']}, candidates per prompt: {summary['candidates']}, "
        f"steps: {summary['steps']}, guidance: {summary['guidance']}, "
        f"wall time per prompt (all candidates): {summary['seconds_per_prompt']:.2f} s",
        "",
        "| selector | N | " + " | ".join(cats) + " | all | selector's own score |",
        "|---|---|" + "---|" * len(cats) + "---|---|",
    ]
    for name, rows in summary["table"].items():
        for k, row in rows.items():
            own = f"{row['own_score']:.3f}" if "own_score" in row else "-"
            lines.append(
                f"| {name} | {k} | "
                + " | ".join(f"{100 * row[c]:.1f}%" for c in cats)
                + f" | **{100 * row['all']:.1f}%** | {own} |"
            )
    if "pairwise" in summary:
        lines += [
            "",
            "Pairwise accuracy on generated candidates (a satisfying candidate scored above a failing "
            "one of the same prompt):",
            "",
            "| verifier | accuracy | pairs | prompts |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {name} | {100 * p['accuracy']:.1f}% | {p['pairs']} | {p['prompts']} |"
            for name, p in summary["pairwise"].items()
        ]
    return "\n".join(lines)


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.6), dpi=120)
    for name, rows in summary["table"].items():
        ks = [int(k) for k in rows]
        ax.plot(
            ks,
            [100 * rows[k]["all"] for k in rows],
            marker="o",
            label=name,
            linestyle="--" if name == "oracle" else "-",
        )
    ax.set_xscale("log", base=2)
    ax.set_xlabel("candidates (NFEs = candidates x steps)")
    ax.set_ylabel("ground-truth satisfaction (%)")
    ax.set_title(f"best-of-N on the embedded world ({summary['prompts']} held-out prompts)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10 prompts per category, 16 candidates")
    parser.add_argument("--quick-per-category", type=int, default=10)
    parser.add_argument("--limit", type=int, default=0, help="only the first N held-out prompts")
    parser.add_argument("--per-category", type=int, default=0, help="at most N prompts per category (0: all)")
    parser.add_argument("--candidates", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=4.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("docs"), help="where the plot and table go")
    args = parser.parse_args()
    summary = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = "_quick" if args.quick else ""
    table = render(summary)
    print(table)
    (args.out / f"toyworld_scaling{suffix}.md").write_text(table + "\n")
    (args.out / f"toyworld_scaling{suffix}.json").write_text(json.dumps(summary, indent=1))
    plot(summary, args.out / f"toyworld_scaling{suffix}.png")
    t = summary["table"]
    k16 = 16 if 16 in summary["ks"] else max(summary["ks"])
    strongest = max((*VERIFIERS, ENSEMBLE), key=lambda v: t[v][k16]["all"])
    best64 = t[strongest][64]["all"] if 64 in t[strongest] else float("nan")
    print(f"strongest verifier at N={k16}: {strongest}")
    print(f"RESULT base={t[strongest][1]['all']:.3f} best16={t[strongest][k16]['all']:.3f} best64={best64:.3f}")


if __name__ == "__main__":
    main()
