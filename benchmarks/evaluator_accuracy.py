"""Accuracy of the toyworld pixel evaluator on held-out prompts, clean and degraded renders.

For every prompt of ``grammar.heldout_prompts()`` it renders positive scenes (``sample_scene``) and
hard negatives built from them (``grammar.hard_negatives``: changed colour or shape, swapped
colours, swapped objects for spatial prompts, a count off by one, an extra or a missing object), and
counts how often ``evaluator.satisfies`` decides correctly: True on positives, False on negatives.
"Degraded" renders go through ``evaluator.degrade`` (blur 0.7 px, +-0.05 colour shift, speckles,
noise std 0.04), a stand-in for a tiny VAE's decoding errors.

    python benchmarks/evaluator_accuracy.py [--quick] [--size 32] [--seed 0]

The last line reads ``RESULT clean_acc=<x> degraded_acc=<y>``.
"""

from __future__ import annotations

import argparse
import math
import time
from collections import Counter, defaultdict

import numpy as np

from noisesearch.toyworld import evaluator, grammar
from noisesearch.toyworld.scenes import IMAGE_SIZE, render


def run(positives: int, size: int, seed: int, degrade_kw: dict[str, float]) -> dict[str, dict[str, list[int]]]:
    """[correct, total] decisions, keyed by condition, then by category, category:label, kind:<kind>.

    The small categories (shape, counting) get more positive scenes per prompt so that every
    category is judged on about ``positives`` x (largest category's prompt count) scenes.
    """
    rng = np.random.default_rng(seed)
    tally: dict[str, dict[str, list[int]]] = {c: defaultdict(lambda: [0, 0]) for c in ("clean", "degraded")}
    prompts = grammar.heldout_prompts()
    per_cat = Counter(c for c, _ in prompts)
    for category, prompt in prompts:
        spec = grammar.parse(prompt)
        for _ in range(math.ceil(positives * max(per_cat.values()) / per_cat[category])):
            scene = grammar.sample_scene(spec, rng)
            cases = [("positive", scene, True)] + [(k, s, False) for k, s in grammar.hard_negatives(scene, spec, rng)]
            for kind, case, expected in cases:
                img = render(case, size=size)
                for cond, im in (("clean", img), ("degraded", evaluator.degrade(img, rng, **degrade_kw))):
                    ok = int(evaluator.satisfies(im, spec) == expected)
                    label = "positive" if expected else "negative"
                    for key in (category, f"{category}:{label}", f"kind:{kind}", "all"):
                        tally[cond][key][0] += ok
                        tally[cond][key][1] += 1
    return tally


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 positive scene per (large-category) prompt")
    parser.add_argument("--positives", type=int, default=4, help="positive scenes per large-category prompt")
    parser.add_argument("--blur", type=float, default=0.7, help="degradation: Gaussian blur sigma (px at 32x32)")
    parser.add_argument("--noise", type=float, default=0.04, help="degradation: additive noise std")
    parser.add_argument("--shift", type=float, default=0.05, help="degradation: max colour shift per channel")
    parser.add_argument("--size", type=int, default=IMAGE_SIZE, help="render size in pixels")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    positives = 1 if args.quick else args.positives
    t0 = time.perf_counter()
    tally = run(positives, args.size, args.seed, {"blur": args.blur, "noise": args.noise, "shift": args.shift})
    seconds = time.perf_counter() - t0

    keys = sorted(tally["clean"], key=lambda k: (k == "all", k.startswith("kind:"), k))
    print(
        f"evaluator accuracy on held-out prompts, {args.size}x{args.size}, {positives} positive scene(s) per "
        f"large-category prompt; degraded: blur {args.blur}, noise {args.noise}, shift {args.shift}"
    )
    print(f"{'group':<30} {'n':>6} {'clean':>8} {'degraded':>9}")
    for k in keys:
        c, n = tally["clean"][k]
        d, m = tally["degraded"][k]
        print(f"{k:<30} {n:>6} {c / n:>8.4f} {d / m:>9.4f}")
    clean = tally["clean"]["all"][0] / tally["clean"]["all"][1]
    degraded = tally["degraded"]["all"][0] / tally["degraded"]["all"][1]
    print(f"({seconds:.1f} s)")
    print(f"RESULT clean_acc={clean:.4f} degraded_acc={degraded:.4f}")


if __name__ == "__main__":
    main()
