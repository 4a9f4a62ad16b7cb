"""Compiling a denoiser whose batch size changes: bucket padding vs dynamic shapes vs torch's default.

A search calls the network with chunk sizes that vary (last chunks, SMC, pruning, out-of-memory
halving). Three ways to compile it are timed side by side on the same sequence of searches
(candidates 5, 7, 3 and 6 at ``--max-batch 4``: chunks of 4, 1, 4, 3, 3, 4 and 2 candidates):

* ``buckets``: static shapes (``dynamic=False``), chunks padded to 1, 2, 4 (noisesearch's choice);
* ``dynamic``: ``dynamic=True``, no padding (one symbolic-shape graph; size 1 is still specialised);
* ``default``: torch's default (``dynamic=None``): static first, dynamic after a shape changes;

and ``eager`` as the reference. For each: compilations (dynamo's unique graphs), the wall time of
the whole sequence (compilation included), steady-state NFE/s once every shape is compiled, and the
largest difference of the final scores from eager. The last line is
``RESULT buckets_graphs=.. dynamic_graphs=.. buckets_steady_nfe_s=.. dynamic_steady_nfe_s=.. ...``.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch._dynamo.utils import counters

from noisesearch.core.compile import compile_denoiser
from noisesearch.core.sampler import CoreConfig, DenoisingCore
from noisesearch.models.adapters import StableDiffusionAdapter
from noisesearch.testing.tiny import tiny_sd_pipeline

SEQUENCE = (5, 7, 3, 6)


def red(images, prompts):
    return images[:, 0].mean(dim=(1, 2))


def run_sequence(adapter, steps: int, pad: bool | None) -> tuple[float, torch.Tensor]:
    scores = []
    start = time.perf_counter()
    for n in SEQUENCE:
        core = DenoisingCore(adapter, CoreConfig(steps=steps, guidance=3.0, max_batch=4, pad_to_buckets=pad))
        images = core.sample(list(range(n)), ["a red circle"] * n)
        scores.append(red(images, []))
    return time.perf_counter() - start, torch.cat(scores)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 solver steps instead of 5")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    steps = 2 if args.quick else 5
    device = torch.device(args.device)
    nfe = sum(SEQUENCE) * steps
    pipe = tiny_sd_pipeline(seed=1).to(device)
    eager_net = pipe.unet
    with torch.no_grad():
        _, ref = run_sequence(StableDiffusionAdapter(pipe), steps, pad=False)
        eager_s, _ = run_sequence(StableDiffusionAdapter(pipe), steps, pad=False)
    print(f"eager: {nfe / eager_s:.1f} NFE/s", flush=True)
    out = {}
    for name, dynamic, pad in (("buckets", False, True), ("dynamic", True, False), ("default", None, False)):
        torch._dynamo.reset()
        before = int(counters["stats"]["unique_graphs"])
        if dynamic is False:
            pipe.unet = compile_denoiser(eager_net, device, mode="default")
        else:
            pipe.unet = torch.compile(eager_net, mode="default", fullgraph=True, dynamic=dynamic)
        adapter = StableDiffusionAdapter(pipe)
        with torch.no_grad():
            first_s, scores = run_sequence(adapter, steps, pad)
            steady_s, _ = run_sequence(adapter, steps, pad)
        graphs = int(counters["stats"]["unique_graphs"]) - before
        diff = float((scores - ref).abs().max())
        out[name] = (graphs, first_s, nfe / steady_s, diff)
        print(
            f"{name}: {graphs} compilations, first sequence {first_s:.1f} s (compiling), steady {nfe / steady_s:.1f} NFE/s, "
            f"max |score - eager| {diff:.1e}",
            flush=True,
        )
    pipe.unet = eager_net
    print(
        "RESULT "
        + " ".join(
            f"{k}_graphs={v[0]} {k}_first_s={v[1]:.1f} {k}_steady_nfe_s={v[2]:.1f} {k}_max_diff={v[3]:.1e}"
            for k, v in out.items()
        )
        + f" eager_nfe_s={nfe / eager_s:.1f}"
    )


if __name__ == "__main__":
    main()
