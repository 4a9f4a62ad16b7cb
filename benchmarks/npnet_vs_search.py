"""NPNet golden noise versus search at equal compute, on the embedded world, against ground truth.

Zhou et al. 2024 ("Golden Noise for Diffusion Models") compare NPNet with standard noise only; this
benchmark adds the baseline that matters for a user with compute to spend: random search (best-of-N)
at the same number of NFEs, and NPNet used as the prior of that search. For each held-out prompt
(a fixed, category-stratified subset), prompt i draws standard noises with seeds
``seed + 1000·i + j`` (j = 0..N-1) and their golden noises (the same noises through NPNet); all
2N are sampled with the model's defaults, scored by the search verifier and judged by the
ground-truth evaluator. Methods, at k× the NFEs of one sample:

* ``standard``: the sample from seed j = 0 (1× only);
* ``npnet``: the golden sample from the same seed (1× plus NPNet's small cost, reported apart);
* ``random``: best of the first k standard samples by the verifier;
* ``npnet+random``: best of the first k golden samples by the verifier.

Because candidate j always has the same seed, best-of-k for every k comes from one run (prefixes).
NPNet's own cost is reported as a fraction of the time of one generation (one candidate, batch 1).

Writes ``npnet_vs_search.png`` and ``npnet_vs_search.md`` to ``--out``; the last line is
``RESULT standard=<rate> npnet=<rate> random16=<rate> npnet_random16=<rate> overhead=<fraction>``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

import noisesearch  # noqa: E402
from noisesearch.npnet.prior import TOYWORLD_NPNET, NPNetPrior, load_cached  # noqa: E402
from noisesearch.toyworld import evaluator  # noqa: E402
from noisesearch.toyworld.grammar import heldout_subset

METHODS = ("standard", "npnet", "random", "npnet+random")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    ap.add_argument("--per-category", type=int, default=34, help="held-out prompts per category (all where fewer)")
    ap.add_argument("--candidates", type=int, default=16, help="N: the largest compute multiple")
    ap.add_argument("--npnet", type=Path, default=TOYWORLD_NPNET, help="NPNet checkpoint")
    ap.add_argument("--verifier", default="toyclip", help="search verifier")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--guidance", type=float, default=4.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("docs"))
    ap.add_argument("--quick", action="store_true", help="3 prompts per category, N = 4, output to a temp-like folder")
    args = ap.parse_args(argv)
    if args.quick:
        args.per_category, args.candidates = 3, 4
        if args.out == Path("docs"):
            args.out = Path("/tmp/noisesearch-npnet-vs-search-quick")
    if args.candidates < 1 or args.per_category < 1:
        ap.error("--candidates and --per-category must be >= 1")
    return args


def overhead_fraction(model, net, steps: int, guidance: float, repeats: int = 5) -> dict[str, float]:
    """NPNet time / time of one full generation (batch 1), best of ``repeats`` each."""
    prompt = "a red circle left of a blue square"
    prior = NPNetPrior(net)

    def timed(fn) -> float:
        best = math.inf
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t)
        return best

    core = noisesearch.DenoisingCore(model, noisesearch.CoreConfig(steps=steps, guidance=guidance, max_batch=1))
    bound = prior.bind(core)
    noise = core.initial_noise([0])
    core.text_embeddings([prompt])  # encode once, as in a search
    t_npnet = timed(lambda: bound(noise, [prompt]))
    t_gen = timed(lambda: core.decode(core.run(core.start(noise, [prompt], [0])).x))
    return {"npnet_s": t_npnet, "generation_s": t_gen, "fraction": t_npnet / t_gen}


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    prompts = heldout_subset(args.per_category)
    n = args.candidates
    ks = [k for k in (1, 2, 4, 8, 16, 32, 64) if k <= n]
    model = noisesearch.load_model("toyworld", device="cpu", dtype="fp32")
    verifier = noisesearch.load_verifier(args.verifier)
    net = load_cached(args.npnet)
    print(
        f"{len(prompts)} prompts × {n} standard + {n} golden candidates, verifier {args.verifier}, NPNet {args.npnet}",
        flush=True,
    )

    ok = {m: np.zeros((len(prompts), len(ks))) for m in ("random", "npnet+random")}
    score = {m: np.zeros((len(prompts), len(ks))) for m in ("random", "npnet+random")}
    cats, prior_calls, nfe = [], 0, 0
    t0 = time.perf_counter()
    for i, (category, prompt) in enumerate(prompts):
        cats.append(category)
        common = dict(
            verifier=verifier,
            candidates=n,
            seed=args.seed + 1000 * i,
            steps=args.steps,
            guidance=args.guidance,
            max_batch=n,
        )
        for method, prior in (("random", None), ("npnet+random", NPNetPrior(net))):
            result = noisesearch.search(model, prompt, prior=prior, **common)
            cands = sorted(result.candidates, key=lambda c: c.seed)
            images = torch.stack([c.image for c in cands]).float() / 255
            sat = evaluator.satisfies_batch(images.numpy(), [prompt] * n).astype(bool)
            s = np.array([c.score for c in cands])
            for j, k in enumerate(ks):
                best = int(np.argmax(s[:k]))  # first-best on ties, as SearchResult.ranked (seed order)
                ok[method][i, j], score[method][i, j] = sat[best], s[best]
            prior_calls += result.accounting.prior_calls
            nfe += result.accounting.nfe
        if (i + 1) % 10 == 0 or i + 1 == len(prompts):
            print(f"  {i + 1}/{len(prompts)} prompts, {time.perf_counter() - t0:.0f} s", flush=True)

    over = overhead_fraction(model, net, args.steps, args.guidance)
    rates = {
        "standard": ok["random"][:, 0],
        "npnet": ok["npnet+random"][:, 0],
    }
    summary = {
        "prompts": len(prompts),
        "candidates": n,
        "ks": ks,
        "verifier": args.verifier,
        "npnet": str(args.npnet),
        "steps": args.steps,
        "guidance": args.guidance,
        "nfe_total": nfe,
        "prior_calls": prior_calls,
        "overhead": over,
        "seconds": round(time.perf_counter() - t0, 1),
        "satisfaction": {m: [float(v) for v in ok[m].mean(0)] for m in ok},
        "satisfaction_se": {
            m: [float(v) for v in ok[m].std(0, ddof=1) / math.sqrt(len(prompts))]
            if len(prompts) > 1
            else [0.0] * len(ks)
            for m in ok
        },
        "score": {m: [float(v) for v in score[m].mean(0)] for m in score},
        "per_category": {
            c: {m: [float(v) for v in ok[m][[x == c for x in cats]].mean(0)] for m in ok} for c in sorted(set(cats))
        },
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_table(summary, args.out / "npnet_vs_search.md")
    write_plot(summary, args.out / "npnet_vs_search.png")
    (args.out / "npnet_vs_search.json").write_text(json.dumps(summary, indent=2) + "\n")
    k16 = ks.index(16) if 16 in ks else len(ks) - 1
    print(f"wrote {args.out / 'npnet_vs_search.md'} and .png")
    print(
        f"RESULT standard={rates['standard'].mean():.3f} npnet={rates['npnet'].mean():.3f} "
        f"random{ks[k16]}={summary['satisfaction']['random'][k16]:.3f} "
        f"npnet_random{ks[k16]}={summary['satisfaction']['npnet+random'][k16]:.3f} overhead={over['fraction']:.4f}"
    )
    return summary


def write_table(s: dict, path: Path) -> None:
    ks = s["ks"]
    lines = [
        f"NPNet vs search on the embedded world: {s['prompts']} held-out prompts, search verifier `{s['verifier']}`, "
        f"{s['steps']} DDIM steps, guidance {s['guidance']}. Ground-truth satisfaction (± s.e.) of the chosen image; "
        "k× = NFEs of k samples. `standard` = random at 1×, `npnet` = npnet+random at 1×.",
        "",
        "| method | " + " | ".join(f"{k}×" for k in ks) + " |",
        "|---|" + "---|" * len(ks),
    ]
    for m in ("random", "npnet+random"):
        cells = [f"{v:.3f} ± {e:.3f}" for v, e in zip(s["satisfaction"][m], s["satisfaction_se"][m])]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Mean `{s['verifier']}` score of the chosen image:",
        "",
        "| method | " + " | ".join(f"{k}×" for k in ks) + " |",
        "|---|" + "---|" * len(ks),
    ]
    for m in ("random", "npnet+random"):
        lines.append(f"| {m} | " + " | ".join(f"{v:.3f}" for v in s["score"][m]) + " |")
    lines += [
        "",
        "Per category (ground truth, " + ", ".join(f"{k}×" for k in ks) + "):",
        "",
        "| category | random | npnet+random |",
        "|---|---|---|",
    ]
    for c, d in s["per_category"].items():
        lines.append(
            f"| {c} | "
            + " / ".join(f"{v:.2f}" for v in d["random"])
            + " | "
            + " / ".join(f"{v:.2f}" for v in d["npnet+random"])
            + " |"
        )
    o = s["overhead"]
    lines += [
        "",
        f"NPNet cost: {o['npnet_s'] * 1e3:.1f} ms per noise vs {o['generation_s'] * 1e3:.1f} ms per generation "
        f"(batch 1, CPU) = {100 * o['fraction']:.1f}% extra time per sample; it adds no NFEs.",
    ]
    path.write_text("\n".join(lines) + "\n")


def write_plot(s: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = s["ks"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for m, style in (("random", "o-"), ("npnet+random", "s-")):
        sat, se = np.array(s["satisfaction"][m]), np.array(s["satisfaction_se"][m])
        axes[0].errorbar(ks, sat, yerr=se, fmt=style, capsize=3, label=m)
        axes[1].plot(ks, s["score"][m], style, label=m)
    axes[0].axhline(s["satisfaction"]["random"][0], color="gray", ls=":", label="standard noise (1 sample)")
    axes[0].axhline(s["satisfaction"]["npnet+random"][0], color="C1", ls=":", label="NPNet (1 sample)")
    for ax, title in zip(axes, ("ground-truth satisfaction", f"{s['verifier']} score of the chosen image")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(ks, [f"{k}×" for k in ks])
        ax.set_xlabel("compute (NFEs of k samples)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"NPNet vs search, embedded world ({s['prompts']} held-out prompts)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
