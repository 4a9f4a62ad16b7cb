"""How much a zero-order neighbour inherits its pivot's outcome, by cosine λ, on training-split prompts.

For each of ``--prompts`` training-split prompts (the held-out category mix) and ``--pivots`` pivot
noises, sample the pivot and ``--neighbours`` neighbours at each cosine λ in ``--cosines`` (the
neighbours zero-order search draws), and score every image with ``toydetect``. An image "passes"
when toydetect's probability that it satisfies the prompt is over one half (score > log 0.5); no
ground-truth evaluator is used. Printed per λ: P(neighbour passes | pivot fails),
P(neighbour passes | pivot passes), the base rate of pivots, and the rank correlation of neighbour
and pivot scores. The zero-order defaults are chosen from this table.

    python benchmarks/zero_order_neighbourhood.py      # 10 prompts x 64 samples; about 3 min on an idle core

Last line: ``RESULT base=<rate> <λ>:fail=<rate>,pass=<rate> ...``.
"""

from __future__ import annotations

import argparse
import math
import os

import numpy as np

from noisesearch.toyworld.grammar import training_subset

BASE_SEED = 8_000_000


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(
        prog="python benchmarks/zero_order_neighbourhood.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--pivots", type=int, default=8)
    p.add_argument("--neighbours", type=int, default=2)
    p.add_argument("--cosines", default="0.95,0.8,0.6")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="smoke run: 1 prompt per category, 2 pivots")
    args = p.parse_args(argv)
    if args.quick:
        args.prompts, args.pivots = 1, 2
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    import noisesearch
    from noisesearch.core import CoreConfig, DenoisingCore
    from noisesearch.core.seeds import gaussian_like
    from noisesearch.models import get_family
    from noisesearch.strategies.zero_order import _DIRECTION_KEY, neighbours

    torch.set_num_threads(args.threads)
    model = noisesearch.load_model("toyworld", device="cpu", dtype="fp32")
    verifier = noisesearch.load_verifier("toydetect")
    rec = get_family("toyworld").defaults
    core = DenoisingCore(model, CoreConfig(steps=int(rec["steps"]), guidance=float(rec["guidance"]), max_batch=64))
    cosines = [float(c) for c in args.cosines.split(",")]
    threshold = math.log(0.5)
    pivot_pass: list[bool] = []
    stats = {c: {"pivot": [], "nb": [], "pivot_score": [], "nb_score": []} for c in cosines}
    prompts = training_subset(args.prompts)
    for i, (_, prompt) in enumerate(prompts):
        seeds = [BASE_SEED + 1000 * i + j for j in range(args.pivots)]
        pivots = core.initial_noise(seeds)  # [P, *latent]
        noises, owners = [pivots], []
        for c in cosines:
            for j, s in enumerate(seeds):
                dirs = gaussian_like(
                    [s * 16 + k for k in range(args.neighbours)], core.latent_shape, core.adapter.device, _DIRECTION_KEY
                )
                noises.append(neighbours(pivots[j], dirs, c))
                owners += [(c, j)] * args.neighbours
        noise = torch.cat(noises)
        n = noise.shape[0]
        with torch.no_grad():
            traj = core.run(core.start(noise, [prompt] * n, list(range(n))))
            scores = verifier.score(core.decode(traj.x), [prompt] * n).double().numpy()
        piv = scores[: args.pivots]
        pivot_pass += list(piv > threshold)
        for (c, j), s in zip(owners, scores[args.pivots :]):
            st = stats[c]
            st["pivot"].append(piv[j] > threshold)
            st["nb"].append(s > threshold)
            st["pivot_score"].append(piv[j])
            st["nb_score"].append(s)
        print(f"  prompt {i + 1}/{len(prompts)}", flush=True)
    base = float(np.mean(pivot_pass))
    print(
        f"{len(prompts)} training prompts x {args.pivots} pivots x {args.neighbours} neighbours; "
        f"pass = toydetect > log 0.5; base rate of pivots {base:.3f}"
    )
    print(
        "| cosine λ | P(neighbour passes | pivot fails) | P(neighbour passes | pivot passes) | same outcome | Spearman |"
    )
    print("|---|---|---|---|---|")
    parts = [f"base={base:.3f}"]
    for c in cosines:
        st = stats[c]
        pv, nb = np.array(st["pivot"]), np.array(st["nb"])
        fail = float(nb[~pv].mean()) if (~pv).any() else math.nan
        ok = float(nb[pv].mean()) if pv.any() else math.nan
        ra = np.argsort(np.argsort(st["pivot_score"]))
        rb = np.argsort(np.argsort(st["nb_score"]))
        rho = float(np.corrcoef(ra, rb)[0, 1])
        print(
            f"| {c} | {fail:.3f} (n={int((~pv).sum())}) | {ok:.3f} (n={int(pv.sum())}) | {float((pv == nb).mean()):.3f} "
            f"| {rho:.2f} |"
        )
        parts.append(f"{c}:fail={fail:.3f},pass={ok:.3f}")
    line = "RESULT " + " ".join(parts)
    print(line, flush=True)
    return line


if __name__ == "__main__":
    main()
