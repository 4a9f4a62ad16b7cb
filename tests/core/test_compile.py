"""Compiled denoisers: one compilation per batch bucket, images equal to eager, honest accounting."""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.utils import counters

import noisesearch
from noisesearch.core import CoreConfig, DenoisingCore
from noisesearch.core.batching import bucket_for, bucket_sizes, pad_rows
from noisesearch.core.compile import compile_denoiser, is_compiled
from noisesearch.testing import StubAdapter


class MicroDenoiser(torch.nn.Module):
    """Convolutions, group norm and a conditioning projection: the row-independent layer types of a
    UNet, small enough that inductor compiles it in seconds on a CPU."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv_in = torch.nn.Conv2d(4, 8, 3, padding=1)
        self.norm = torch.nn.GroupNorm(2, 8)
        self.cond = torch.nn.Linear(4, 8)
        self.conv_out = torch.nn.Conv2d(8, 4, 3, padding=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        h = self.norm(self.conv_in(x)) + self.cond(bias)[:, :, None, None] * (t / 1000)
        return self.conv_out(torch.nn.functional.silu(h))


class MicroAdapter(StubAdapter):
    """The stub model with :class:`MicroDenoiser` as its network, exposed as ``unet``."""

    def __init__(self, unet: torch.nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def predict(self, x, timestep, conditioning):
        self.calls += 1
        self.rows += x.shape[0]
        with torch.no_grad():
            return self.unet(x, timestep.float(), conditioning["bias"])


def red(images, prompts):
    return images[:, 0].mean(dim=(1, 2))


def test_buckets_are_powers_of_two_and_the_limit():
    assert bucket_sizes(1) == (1,)
    assert bucket_sizes(32) == (1, 2, 4, 8, 16, 32)
    assert bucket_sizes(37) == (1, 2, 4, 8, 16, 32, 37)
    assert [bucket_for(n, bucket_sizes(12)) for n in (1, 3, 5, 9, 12)] == [1, 4, 8, 12, 12]
    with pytest.raises(ValueError, match="larger than the largest bucket"):
        bucket_for(13, bucket_sizes(12))
    x = torch.arange(6.0).view(3, 2)
    assert pad_rows(x, 5).tolist() == [[0, 1], [2, 3], [4, 5], [4, 5], [4, 5]]


def test_padding_changes_no_candidate_and_is_counted_apart():
    """Bucket padding: the same images as unpadded chunks, the same NFEs and network rows, and the
    extra rows the network saw reported as padded_rows."""
    seeds = list(range(7))
    prompts = ["p", "q"] * 3 + ["p"]
    out = {}
    for pad in (False, True):
        stub = StubAdapter()
        core = DenoisingCore(stub, CoreConfig(steps=3, guidance=3.0, max_batch=4, pad_to_buckets=pad))
        out[pad] = (core.sample(seeds, prompts), core.meter.acc, stub)
    (a, acc_a, _), (b, acc_b, stub_b) = out[False], out[True]
    assert (a - b).abs().max().item() <= 1e-6
    assert acc_b.nfe == acc_a.nfe == 7 * 3
    assert acc_b.network_rows == acc_a.network_rows == 2 * 7 * 3
    assert acc_a.padded_rows == 0
    assert acc_b.padded_rows == 2 * 1 * 3  # the chunk of 3 is padded to 4 at each of 3 steps
    assert stub_b.rows == acc_b.network_rows + acc_b.padded_rows


def _unique_graphs() -> int:
    return int(counters["stats"]["unique_graphs"])


@pytest.mark.parametrize(
    "backend",
    # inductor's C++ kernels take 15-70 s to build on two CPU cores; aot_eager traces and counts the same
    ["aot_eager", pytest.param("inductor", marks=pytest.mark.slow)],
)
def test_compiled_search_compiles_once_per_bucket_and_matches_eager(backend):
    """A compiled network (inductor: mode="default") behind the core: searches whose chunks are
    4, 3 and then 4, 4, 1 candidates compile it once for bucket 4 and once for bucket 1, and score
    the candidates as the eager network does (within 1e-4)."""
    eager_net = MicroDenoiser().eval()
    compiled = compile_denoiser(MicroDenoiser().eval(), "cpu", mode="default", backend=backend)
    assert is_compiled(compiled) and not is_compiled(eager_net)
    torch._dynamo.reset()
    kw = dict(verifier=red, steps=3, guidance=3.0, max_batch=4)
    eager_results = [noisesearch.search(MicroAdapter(eager_net), "p", candidates=n, **kw) for n in (7, 9)]
    before = _unique_graphs()
    adapter = MicroAdapter(compiled)
    results = []
    for n, graphs in ((7, 1), (9, 2)):  # buckets used so far: {4}, then {4, 1}
        results.append(noisesearch.search(adapter, "p", candidates=n, **kw))
        assert _unique_graphs() - before == graphs
    for got, ref in zip(results, eager_results):
        torch.testing.assert_close(got.scores, ref.scores, atol=1e-4, rtol=0)
        assert got.accounting.nfe == ref.accounting.nfe and got.accounting.network_rows == ref.accounting.network_rows
    assert results[0].accounting.padded_rows == 2 * 1 * 3  # chunk of 3 padded to 4, 3 steps, CFG rows
    assert results[1].accounting.padded_rows == 0
    # the same compiled network on one more chunk size without padding is one more compilation
    core = DenoisingCore(adapter, CoreConfig(steps=1, guidance=3.0, max_batch=4, pad_to_buckets=False))
    core.sample(list(range(3)), ["p"] * 3)
    assert _unique_graphs() - before == 3


@pytest.mark.slow
def test_inductor_compiled_unet_compiles_once_for_chunks_of_3_and_4():
    """The tiny SD UNet under inductor (mode="default", whole graph) through the core: a search of 3
    candidates and one of 4 at max_batch 4 share bucket 4 (one compilation), and the images equal
    the eager UNet's within 1e-4. About 1-2 minutes of kernel building on two CPU cores."""
    from noisesearch.models.adapters import StableDiffusionAdapter
    from noisesearch.testing.tiny import tiny_sd_pipeline

    pipe = tiny_sd_pipeline(seed=1)
    eager = StableDiffusionAdapter(pipe)
    refs = [
        DenoisingCore(eager, CoreConfig(steps=2, guidance=3.0, max_batch=4)).sample(list(range(n)), ["p"] * n)
        for n in (3, 4)
    ]
    torch._dynamo.reset()
    pipe.unet = compile_denoiser(pipe.unet, "cpu", mode="default")
    adapter = StableDiffusionAdapter(pipe)
    before = _unique_graphs()
    for n, ref in zip((3, 4), refs):
        core = DenoisingCore(adapter, CoreConfig(steps=2, guidance=3.0, max_batch=4))
        assert core.pad_to_buckets
        got = core.sample(list(range(n)), ["p"] * n)
        assert (got - ref).abs().max().item() <= 1e-4
    assert _unique_graphs() - before == 1
