"""NPNet: official layout and strict loading, the formulation, determinism, and collect -> train -> use."""

from __future__ import annotations

import json
import math
import os
import pickle
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from noisesearch.cli import app
from noisesearch.npnet.checkpoint import (
    UNUSED_OFFICIAL_KEYS,
    flat_to_official,
    load_npnet,
    load_official,
    read_official_file,
    save_npnet,
)
from noisesearch.npnet.model import NPNet, preset

runner = CliRunner()
#: key names, shapes and dtypes of the official checkpoints, dumped from the official module
#: definitions (see the file's "_about" entry for how); the source of truth for the layout
OFFICIAL_KEYS = json.loads((Path(__file__).parent / "official_keys_npnet.json").read_text())
BN_KEYS = {"bn.weight", "bn.bias", "bn.running_mean", "bn.running_var", "bn.num_batches_tracked"}


def _official_checkpoint(layout: str, seed: int = 0, alpha: torch.Tensor | None = None) -> dict:
    """A random-weight checkpoint with exactly the official key names, shapes and dtypes of
    ``layout`` (``sdxl`` or ``dit``), nested as the official training code saves it."""
    g = torch.Generator().manual_seed(seed)
    out: dict = {}
    for entry, spec in OFFICIAL_KEYS[layout].items():
        if entry in ("alpha", "beta"):
            continue
        out[entry] = {}
        for key, (shape, dtype) in spec.items():
            if dtype == "float32":
                out[entry][key] = torch.randn(shape, generator=g) * 0.05
            else:  # BatchNorm's step counter
                out[entry][key] = torch.full(shape, 1234, dtype=getattr(torch, dtype))
    out["alpha"] = torch.tensor([0.7]) if alpha is None else alpha
    out["beta"] = torch.tensor([-0.4])
    return out


def _randomise(net: NPNet, seed: int = 0) -> NPNet:
    """Non-trivial weights everywhere, including α and β (0 at initialisation)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
        net.alpha.fill_(0.7)
        net.beta.fill_(-0.4)
    return net


@pytest.fixture(scope="module")
def official_sdxl(tmp_path_factory) -> Path:
    """A random-weight checkpoint with the official SDXL key list (BatchNorm entries included), saved
    as the official code saves it (a nested dict, torch.save)."""
    path = tmp_path_factory.mktemp("official") / "sdxl.pth"
    torch.save(_official_checkpoint("sdxl"), path)
    return path


@pytest.mark.parametrize("layout", ["sdxl", "dit"])
def test_our_layout_is_the_official_key_list_without_the_unused_batchnorm(layout):
    ours = flat_to_official(NPNet(preset(layout)).state_dict())
    for entry, spec in OFFICIAL_KEYS[layout].items():
        if entry in ("alpha", "beta"):
            assert tuple(ours[entry].shape) == tuple(spec[0]) == (1,)
            continue
        official = {k: tuple(shape) for k, (shape, _) in spec.items()}
        unused = set(UNUSED_OFFICIAL_KEYS.get(entry, ()))
        assert {k: tuple(v.shape) for k, v in ours[entry].items()} == {
            k: v for k, v in official.items() if k not in unused
        }
        assert unused <= set(official)  # every name set aside is really in the official files
    assert set(UNUSED_OFFICIAL_KEYS["unet_svd"]) == BN_KEYS


def test_official_sdxl_layout_has_the_published_entries_and_shapes(official_sdxl):
    raw = torch.load(official_sdxl, weights_only=True)
    assert set(raw) == {"unet_svd", "unet_embedding", "embeeding", "alpha", "beta"}
    assert raw["alpha"].shape == raw["beta"].shape == (1,)
    # the text AdaGroupNorm: 77 tokens × 2048 (SDXL's two encoders) -> scale and shift of 4 channels
    assert {k: tuple(v.shape) for k, v in raw["embeeding"].items()} == {
        "linear.weight": (8, 77 * 2048),
        "linear.bias": (8,),
    }
    svd = {k: tuple(v.shape) for k, v in raw["unet_svd"].items() if k not in BN_KEYS}
    assert {k: tuple(raw["unet_svd"][k].shape) for k in BN_KEYS} == {
        "bn.weight": (256,),
        "bn.bias": (256,),
        "bn.running_mean": (256,),
        "bn.running_var": (256,),
        "bn.num_batches_tracked": (),
    }
    assert svd == {
        "mlp1.0.weight": (64, 256),
        "mlp1.0.bias": (64,),
        "mlp1.2.weight": (256, 64),
        "mlp1.2.bias": (256,),
        "mlp2.0.weight": (64, 256),
        "mlp2.0.bias": (64,),
        "mlp2.2.weight": (256, 64),
        "mlp2.2.bias": (256,),
        "mlp3.0.weight": (256, 256),
        "mlp3.0.bias": (256,),
        "attention.qkv.weight": (768, 256),
        "attention.proj.weight": (256, 256),
        "attention.proj.bias": (256,),
        "mlp4.0.weight": (1024, 256),
        "mlp4.0.bias": (1024,),
        "mlp4.2.weight": (256, 1024),
        "mlp4.2.bias": (256,),
    }
    emb = raw["unet_embedding"]
    assert tuple(emb["upconv.weight"].shape) == (4, 7, 1, 1)  # Swin-Tiny's 7 NHWC rows act as channels
    assert tuple(emb["downconv.weight"].shape) == (3, 4, 1, 1)
    assert tuple(emb["swin.patch_embed.proj.weight"].shape) == (96, 3, 4, 4)
    assert tuple(emb["swin.head.fc.weight"].shape) == (1000, 768)
    total = (
        sum(
            v.numel()
            for d in ("unet_svd", "unet_embedding", "embeeding")
            for k, v in raw[d].items()
            if not (d == "unet_svd" and k in BN_KEYS)
        )
        + 2
    )
    assert 30.0e6 < total < 31.0e6  # "about 30.5M parameters" for SDXL


def test_official_checkpoint_loads_strictly_in_eval_mode_and_is_deterministic(official_sdxl):
    net = load_official(official_sdxl)
    assert not net.training and not any(m.training for m in net.modules())
    assert net.config == preset("sdxl")
    assert float(net.alpha.detach()) == pytest.approx(0.7) and float(net.beta.detach()) == pytest.approx(-0.4)
    g = torch.Generator().manual_seed(1)
    noise, text = torch.randn(2, 4, 128, 128, generator=g), torch.randn(2, 77, 2048, generator=g)
    a, b = net.golden_noise(noise, text), net.golden_noise(noise, text)
    assert torch.equal(a, b)
    assert a.shape == noise.shape and torch.isfinite(a).all()
    # each sample is conditioned on its own prompt: swapping the prompts changes the outputs
    swapped = net.golden_noise(noise, text.flip(0))
    assert not torch.allclose(swapped, a)


def test_official_checkpoint_loads_every_official_weight_and_sets_aside_only_the_batchnorm(official_sdxl):
    raw = torch.load(official_sdxl, weights_only=True)
    loaded = read_official_file(official_sdxl)
    assert set(loaded.set_aside) == {f"unet_svd.{k}" for k in BN_KEYS}
    sd = loaded.net.state_dict()
    prefixes = {"unet_svd": "unet_svd.", "unet_embedding": "unet_embedding.", "embeeding": "text_embedding."}
    for entry, prefix in prefixes.items():
        for key, value in raw[entry].items():
            if entry == "unet_svd" and key in BN_KEYS:
                assert prefix + key not in sd
            else:
                assert torch.equal(sd[prefix + key], value), key


def test_convert_writes_safetensors_that_reload_identically(official_sdxl, tmp_path):
    out = tmp_path / "sdxl.safetensors"
    result = runner.invoke(app, ["npnet", "convert", str(official_sdxl), str(out)])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "set aside 5 entries the official code creates but never uses" in text
    assert all(f"unet_svd.{k}" in text for k in BN_KEYS)
    a, b = load_official(official_sdxl), load_npnet(out)
    assert a.config == b.config
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_official_dit_layout_is_recognised_and_loads(tmp_path):
    path = tmp_path / "dit.pth"
    torch.save(_official_checkpoint("dit", seed=3), path)
    loaded = read_official_file(path)
    assert loaded.net.config == preset("dit") and len(loaded.set_aside) == 5


@pytest.mark.parametrize("alpha", [torch.tensor(0.7), torch.tensor([[0.7]])])
def test_alpha_and_beta_load_from_any_one_element_tensor(alpha, tmp_path):
    net = _randomise(NPNet(preset("toyworld")))
    ckpt = flat_to_official(net.state_dict())
    ckpt["alpha"] = alpha
    torch.save(ckpt, tmp_path / "a.pth")
    assert float(load_official(tmp_path / "a.pth", preset("toyworld")).alpha.detach()) == pytest.approx(0.7)


def _write_official(net: NPNet, path: Path, edit) -> Path:
    ckpt = flat_to_official(net.state_dict())
    edit(ckpt)
    torch.save(ckpt, path)
    return path


@pytest.mark.parametrize(
    "edit, expected",
    [
        (lambda c: c["unet_svd"].pop("mlp4.2.bias"), "1 missing (unet_svd.mlp4.2.bias)"),
        (
            lambda c: c["unet_embedding"].__setitem__("extra.weight", torch.zeros(2)),
            "1 unexpected (unet_embedding.extra.weight)",
        ),
        (
            lambda c: c["embeeding"].__setitem__("linear.bias", torch.zeros(9)),
            "text_embedding.linear.bias: file (9,) vs model (8,)",
        ),
        (lambda c: c.pop("beta"), "missing entries ['beta']"),
        (lambda c: c.__setitem__("text_embedding", {}), "unexpected entries ['text_embedding']"),
        # only the official BatchNorm's exact entries are set aside, and only with its shapes
        (lambda c: c["unet_svd"].__setitem__("bn.extra", torch.zeros(16)), "1 unexpected (unet_svd.bn.extra)"),
        (
            lambda c: c["unet_svd"].__setitem__("bn.weight", torch.zeros(17)),
            "unet_svd.bn.weight: file (17,) vs official (16,)",
        ),
        (lambda c: c.__setitem__("alpha", torch.zeros(2)), "'alpha' should be a 1-element tensor, found shape (2,)"),
    ],
)
def test_convert_names_the_first_mismatched_keys_and_exits_2(tmp_path, edit, expected):
    # the small toyworld architecture keeps this fast; the validation code is the same for every preset
    net = _randomise(NPNet(preset("toyworld")))
    src = _write_official(net, tmp_path / "bad.pth", edit)
    result = runner.invoke(
        app, ["npnet", "convert", str(src), str(tmp_path / "out.safetensors"), "--preset", "toyworld"]
    )
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert expected in text
    assert "verifier" not in text  # the advice speaks of NPNet checkpoints
    if "missing (" in text or "unexpected (" in text or "mis-shaped (" in text:
        assert "does not match the NPNet architecture" in text and "official NPNet checkpoint" in text
    assert "Traceback" not in result.output
    assert not (tmp_path / "out.safetensors").exists()


class _Payload:
    def __reduce__(self):
        return (os.makedirs, (str(_Payload.marker),))


def test_convert_refuses_a_pickle_that_would_run_code(tmp_path):
    _Payload.marker = tmp_path / "code-ran"
    src = tmp_path / "evil.pth"
    with open(src, "wb") as f:
        pickle.dump({"unet_svd": _Payload()}, f)
    result = runner.invoke(app, ["npnet", "convert", str(src), str(tmp_path / "out.safetensors")])
    assert result.exit_code == 2
    assert "weights_only" in " ".join(result.output.split())
    assert not _Payload.marker.exists()


def test_formulation_matches_the_paper_equation():
    """golden = SVD(x) + (2σ(α) − 1)·e + β·Residual(x + e), e = AdaGroupNorm(x, text)."""
    net = _randomise(NPNet(preset("toyworld")), seed=3)
    g = torch.Generator().manual_seed(0)
    x, text = torch.randn(3, 4, 8, 8, generator=g), torch.randn(3, 16, 128, generator=g)
    with torch.no_grad():
        e = net.text_embedding(x, text.flatten(1))
        expected = net.unet_svd(x) + (2 * torch.sigmoid(net.alpha) - 1) * e + net.beta * net.unet_embedding(x + e)
        assert torch.allclose(net(x, text), expected, atol=1e-6)
        # at initialisation (α = β = 0) NPNet is its SVD branch alone
        fresh = NPNet(preset("toyworld"))
        assert torch.allclose(fresh(x, text), fresh.unet_svd(x), atol=1e-6)


def test_svd_branch_tiles_channels_two_by_two_as_the_official_code():
    """Channel 2a + c goes to tile (row a, column c) of the 2H × 2W matrix and back."""
    net = NPNet(preset("toyworld"))
    branch = net.unet_svd
    x = torch.randn(1, 4, 8, 8)
    captured = {}
    original = torch.linalg.svd

    def spy(m, *args, **kwargs):
        captured["m"] = m
        return original(m, *args, **kwargs)

    torch.linalg.svd = spy
    try:
        with torch.no_grad():
            branch(x)
    finally:
        torch.linalg.svd = original
    m = captured["m"][0]
    for a in range(2):
        for c in range(2):
            assert torch.equal(m[a * 8 : (a + 1) * 8, c * 8 : (c + 1) * 8], x[0, 2 * a + c])


def test_golden_noise_does_not_depend_on_the_batch():
    net = _randomise(NPNet(preset("toyworld")), seed=5)
    g = torch.Generator().manual_seed(0)
    x, text = torch.randn(7, 4, 8, 8, generator=g), torch.randn(7, 16, 128, generator=g)
    batched = net.golden_noise(x, text)
    alone = torch.cat([net.golden_noise(x[i : i + 1], text[i : i + 1]) for i in range(7)])
    assert torch.allclose(batched, alone, atol=1e-5)


def test_wrong_input_shapes_get_a_clear_error():
    net = NPNet(preset("toyworld"))
    with pytest.raises(ValueError, match=r"noise of shape \[B, 4, 8, 8\]"):
        net(torch.randn(1, 4, 16, 16), torch.randn(1, 16, 128))
    with pytest.raises(ValueError, match="prompt embeddings of shape"):
        net(torch.randn(1, 4, 8, 8), torch.randn(1, 77, 2048))


def test_safetensors_round_trip_keeps_the_config(tmp_path):
    net = _randomise(NPNet(preset("toyworld")))
    path = save_npnet(net, tmp_path / "n.safetensors", metadata={"note": "x"})
    back = load_npnet(path)
    assert back.config == net.config and not back.training
    x, text = torch.randn(2, 4, 8, 8), torch.randn(2, 16, 128)
    assert torch.equal(net.golden_noise(x, text), back.golden_noise(x, text))
    assert path.stat().st_size < 5 * 2**20  # the embedded world's NPNet ships under 5 MB


# --------------------------------------------------------------- collect -> train -> use (toyworld)


@pytest.fixture(scope="module")
def toyworld():
    from noisesearch.models import load_model

    return load_model("toyworld", device="cpu")


@pytest.fixture(scope="module")
def tiny_npd(toyworld, tmp_path_factory):
    from noisesearch.api import resolve_verifier
    from noisesearch.core.sampler import CoreConfig
    from noisesearch.npnet.collect import CollectConfig, collect

    prompts = ["a red circle", "two blue squares", "a green triangle left of a yellow circle"]
    out = tmp_path_factory.mktemp("npd") / "npd"
    config = CollectConfig(pairs_per_prompt=3, shard_size=4, margin=-math.inf)  # keep every pair
    core_config = CoreConfig(steps=4, guidance=4.0)
    verifier = resolve_verifier("toyclip", toyworld.device)
    return toyworld, prompts, out, config, core_config, verifier, collect


def test_collect_resumes_without_losing_or_duplicating_pairs(tiny_npd, tmp_path):
    from noisesearch.npnet.collect import MANIFEST_FILE, load_dataset

    adapter, prompts, out, config, core_config, verifier, collect = tiny_npd
    first = collect(adapter, prompts, verifier, out, config, core_config, max_shards=1)
    assert (first.shards_computed, first.shards_total, first.complete) == (1, 3, False)
    # a torn manifest line (killed mid-append) is discarded and its shard recomputed
    with open(out / MANIFEST_FILE, "ab") as f:
        f.write(b'{"shard": 1, "fi')
    rest = collect(adapter, prompts, verifier, out, config, core_config)
    assert rest.complete and rest.shards_computed == 2
    resumed = load_dataset(out)
    whole = load_dataset(_collect_fresh(tiny_npd, tmp_path / "whole"))
    assert len(resumed) == len(whole) == 9  # 3 prompts × 3 seeds, margin -inf keeps all
    assert resumed.seed.tolist() == whole.seed.tolist() == list(range(9))
    assert torch.allclose(resumed.golden, whole.golden, atol=1e-6) and torch.equal(resumed.noise, whole.noise)
    # re-denoise sampling moves the noise, but not far: one step out and one step back
    moved = (resumed.golden - resumed.noise).pow(2).mean()
    assert 0 < float(moved) < float(resumed.noise.pow(2).mean())
    # different settings in the same folder are refused, not mixed
    from dataclasses import replace

    with pytest.raises(ValueError, match="different collect"):
        collect(adapter, prompts, verifier, out, replace(config, guidance_high=7.0), core_config)


def _collect_fresh(tiny_npd, folder: Path) -> Path:
    adapter, prompts, _, config, core_config, verifier, collect = tiny_npd
    collect(adapter, prompts, verifier, folder, config, core_config)
    return folder


def test_collect_keeps_only_pairs_won_by_the_margin(tiny_npd, tmp_path):
    from dataclasses import replace

    from noisesearch.npnet.collect import load_dataset

    adapter, prompts, _, config, core_config, verifier, collect = tiny_npd
    folder = tmp_path / "strict"
    collect(adapter, prompts, verifier, folder, replace(config, margin=0.0), core_config)
    from safetensors.torch import load_file

    shards = [load_file(str(p)) for p in sorted((folder / "shards").glob("*.safetensors"))]
    wins = torch.cat([s["score_golden"] - s["score_noise"] for s in shards])
    assert (wins > 0).all()
    from noisesearch.io.storage import read_jsonl

    manifest = read_jsonl(folder / "manifest.jsonl", required_key="shard")
    assert sum(r["units"] for r in manifest) == 9 and sum(r["kept"] for r in manifest) == wins.numel()
    if wins.numel():
        assert len(load_dataset(folder)) == wins.numel()


def test_collect_train_use_end_to_end(tiny_npd, tmp_path):
    from noisesearch.api import search
    from noisesearch.npnet.collect import load_dataset
    from noisesearch.npnet.prior import NPNetPrior
    from noisesearch.npnet.train import TrainConfig, prompt_embedding_table, train_npnet

    adapter, prompts, _, config, core_config, verifier, _ = tiny_npd
    data = load_dataset(_collect_fresh(tiny_npd, tmp_path / "npd"))
    text = prompt_embedding_table(adapter, data.prompts, core_config)
    assert text.shape == (3, 16, 128)
    out = tmp_path / "npnet.safetensors"
    summary = train_npnet(
        data, text, preset("toyworld"), out, TrainConfig(epochs=3, batch_size=4, lr=1e-3, val_fraction=0.2)
    )
    assert summary.train_pairs + summary.val_pairs == 9 and summary.val_pairs >= 1
    assert [h["epoch"] for h in summary.history] == [1, 2, 3]
    assert all(math.isfinite(h["train_loss"]) for h in summary.history)
    assert summary.history[-1]["train_loss"] < summary.history[0]["train_loss"]
    net = load_npnet(out)

    # as a strategy: golden noises are the candidates' initial noises; prior calls are not NFEs
    result = search(
        adapter,
        prompts[0],
        strategy="npnet",
        verifier=verifier,
        candidates=2,
        steps=4,
        guidance=4.0,
        strategy_options={"checkpoint": str(out)},
    )
    assert result.accounting.prior_calls == 2 and result.accounting.nfe == 8
    from noisesearch.core.seeds import initial_latents

    first = min(result.candidates, key=lambda c: c.seed)
    standard = initial_latents([first.seed], adapter.latent_shape(32, 32), adapter.device, torch.float32)
    expected = net.golden_noise(standard, text[:1])[0]
    assert torch.allclose(first.noise, expected, atol=1e-5)

    # as a prior for random search, zero-order search and search over paths
    for strategy in ("random", "zero-order", "paths"):
        r = search(
            adapter,
            prompts[2],
            strategy=strategy,
            verifier=verifier,
            budget=16,
            steps=4,
            guidance=4.0,
            prior=NPNetPrior(net),
        )
        assert r.accounting.nfe <= 16 and r.accounting.prior_calls >= 1, strategy
        assert r.best.finite


def test_cli_collect_and_train_run_and_reject_bad_values(tmp_path):
    npd = tmp_path / "npd"
    result = runner.invoke(app, ["npnet", "collect", "--out", str(npd), "--pairs-per-prompt", "0"])
    assert result.exit_code == 2 and "pairs_per_prompt must be a positive integer" in result.output
    result = runner.invoke(app, ["npnet", "collect", "--out", str(npd), "--max-shards", "0"])
    assert result.exit_code == 2 and "--max-shards must be >= 1" in result.output
    result = runner.invoke(app, ["npnet", "train", str(tmp_path / "nothing")])
    assert result.exit_code == 2 and "not an NPD folder" in result.output
    result = runner.invoke(app, ["npnet", "train", str(npd), "--out", str(tmp_path / "x.pt")])
    assert result.exit_code == 2 and ".safetensors" in result.output
    result = runner.invoke(app, ["run", "-p", "a red circle", "--prior", "golden", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "unknown --prior 'golden'" in result.output
    result = runner.invoke(
        app,
        [
            "run",
            "-p",
            "a red circle",
            "--npnet-checkpoint",
            str(tmp_path / "n.safetensors"),
            "--model",
            "stub",
            "--verifier",
            "toyclip",
            "--out",
            str(tmp_path / "o"),
        ],
    )
    assert result.exit_code == 2 and "--npnet-checkpoint needs --prior npnet" in result.output
    result = runner.invoke(
        app,
        [
            "run",
            "-p",
            "a red circle",
            "--prior",
            "npnet",
            "--model",
            "stub",
            "--verifier",
            "toyclip",
            "--out",
            str(tmp_path / "o"),
        ],
    )
    assert result.exit_code == 2 and "no NPNet ships for model family 'stub'" in result.output


def test_core_ddim_inversion_moves_along_the_prediction_and_costs_one_nfe_per_candidate():
    from noisesearch.core.sampler import CoreConfig, DenoisingCore
    from noisesearch.testing import StubAdapter

    core = DenoisingCore(StubAdapter(), CoreConfig(solver="ddim", steps=10, guidance=3.0))
    traj = core.run(core.start(core.initial_noise([0, 1, 2]), ["a"] * 3, [0, 1, 2]), until=3)
    before = core.meter.acc.nfe
    inverted = core.invert(traj, to_step=1)
    assert core.meter.acc.nfe - before == 3 and inverted.step == 1
    x0 = core.preview(traj, fresh=True)  # the same evaluation the inversion made
    a3, s3 = core.schedule.level(3)
    eps = (traj.x - a3 * x0) / s3
    a1, s1 = core.schedule.level(1)
    assert torch.allclose(inverted.x, a1 * x0 + s1 * eps, atol=1e-5)
    with pytest.raises(ValueError, match="earlier step"):
        core.invert(traj, to_step=3)


@pytest.mark.parametrize("budget", [4, 7, 13])
def test_npnet_strategy_keeps_the_contract(toyworld, budget):
    """The strategy contract (tests/strategies/test_contract.py) on the embedded world with its shipped
    NPNet: budget never exceeded, accounting equals the calls, same result in any batch size."""
    from noisesearch.api import search

    def go(max_batch: int):
        return search(
            toyworld,
            "two blue squares",
            strategy="npnet",
            verifier="toyclip",
            budget=budget,
            steps=2,
            guidance=4.0,
            seed=3,
            max_batch=max_batch,
        )

    a, b, c = go(8), go(8), go(1)
    acc = a.accounting
    assert acc.nfe <= budget and budget - acc.nfe < 2
    assert acc.network_rows == 2 * acc.nfe and acc.prior_calls == len(a.candidates) == budget // 2
    assert [x.seed for x in a.candidates] == [x.seed for x in c.candidates] == list(range(3, 3 + budget // 2))
    assert torch.equal(a.scores, b.scores) and torch.allclose(a.scores, c.scores, atol=1e-4)
    assert a.best.score == max(x.score for x in a.candidates)
