"""Learned toyworld verifiers: hard negatives, augmentation, tokenizer, the shipped weights through
the registry (shape, range, batch invariance, gradients), and a quick-train smoke test."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from noisesearch.toyworld import grammar, scenes
from noisesearch.toyworld.assets import VERIFIER_WEIGHTS_DIR as WEIGHTS_DIR
from noisesearch.toyworld.networks import WordTokenizer
from noisesearch.toyworld.training.verifiers import (
    QUICK,
    augment,
    measure,
    negative_candidates,
    run,
    sample_batch,
    sample_negatives,
)
from noisesearch.toyworld.verifiers import load_toy_verifier  # registers the three toy verifiers
from noisesearch.verifiers import available_verifiers, load_verifier

KINDS = ("toyclip", "toyrelation", "toydetect")


# ------------------------------------------------------------------------------ data pieces


def test_hard_negatives_are_false_and_train_negatives_not_heldout():
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(200):
        spec = grammar.sample_spec(rng, "any")
        scene = grammar.sample_scene(spec, rng)
        for kind, negs in negative_candidates(spec).items():
            seen.add(kind)
            for neg in negs:
                assert not grammar.satisfies_spec(scene, neg), (kind, grammar.caption(spec), grammar.caption(neg))
        for neg in sample_negatives(grammar.sample_spec(rng, "train"), rng, "train").values():
            assert not grammar.is_heldout(neg)
    assert seen == {"color_swap", "color", "shape", "count", "relation"}


def test_batch_match_matrix_is_symbolic_truth():
    batch = sample_batch(np.random.default_rng(1), groups=6)
    assert batch.images.shape == (len(batch.captions), 3, 32, 32)
    assert bool(batch.match.diagonal().all())
    # identical captions match each other's images
    for i, ci in enumerate(batch.captions):
        for j, cj in enumerate(batch.captions):
            if ci == cj:
                assert batch.match[i, j]


def test_augment_range_determinism_and_identity():
    x = torch.rand(5, 3, 32, 32)
    a = augment(x, torch.Generator().manual_seed(0))
    b = augment(x, torch.Generator().manual_seed(0))
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1
    torch.testing.assert_close(a, b)
    assert (a - x).abs().mean() < 0.1  # slight, not destructive
    torch.testing.assert_close(augment(x, torch.Generator().manual_seed(0), p=0.0), x)


def test_word_tokenizer():
    tok = WordTokenizer(grammar.vocabulary(), context_length=8)
    ids = tok(["A red circle.", "a zebra"])
    assert ids.shape == (2, 8)
    assert ids[0, :5].tolist() == [tok.sot_id, tok.index["a"], tok.index["red"], tok.index["circle"], tok.eot_id]
    assert ids[1, 2].item() == tok.unk_id
    long = tok("a red circle left of a blue square and more words")
    assert long[0, -1].item() == tok.eot_id
    assert WordTokenizer.from_json(tok.to_json()).vocab == tok.vocab


# ------------------------------------------------------------------------- shipped weights


def _shipped(kind: str):
    if not (WEIGHTS_DIR / f"{kind}.safetensors").is_file():
        pytest.skip(
            f"{kind} weights not shipped yet ({WEIGHTS_DIR}); run python -m noisesearch.toyworld.training.verifiers"
        )
    return load_verifier(kind)


def _renders(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    specs = [grammar.sample_spec(rng, "heldout") for _ in range(n)]
    imgs = torch.from_numpy(np.stack([scenes.render(grammar.sample_scene(s, rng)) for s in specs]))
    return imgs, [grammar.caption(s) for s in specs], specs


@pytest.mark.parametrize("kind", KINDS)
def test_shipped_verifier_contract(kind):
    assert kind in available_verifiers()
    v = _shipped(kind)
    assert v.name == kind and v.differentiable
    assert not any(m.training for m in v.model.modules())
    images, prompts, _ = _renders(6)
    s = v.score(images, prompts)
    assert s.shape == (6,) and s.dtype == torch.float32 and torch.isfinite(s).all()
    if kind == "toyclip":
        assert (s >= 0).all() and (s <= 2.5).all()
    # batch invariance
    single = torch.cat([v.score(images[i : i + 1], prompts[i : i + 1]) for i in range(6)])
    torch.testing.assert_close(s, single, atol=1e-5, rtol=0)
    # other resolutions are resized
    big = torch.nn.functional.interpolate(images, size=64, mode="nearest")
    assert v.score(big, prompts).shape == (6,)


@pytest.mark.parametrize("kind", KINDS)
def test_shipped_verifier_gradient_flows_to_images(kind):
    v = _shipped(kind)
    images, prompts, _ = _renders(3, seed=1)
    images = (0.9 * images + 0.05).requires_grad_(True)  # stay clear of the [0, 1] clamp
    v.score(images, prompts).sum().backward()
    assert images.grad is not None and torch.isfinite(images.grad).all() and images.grad.abs().sum() > 0


def test_toyrelation_prefers_true_caption_over_hard_negatives():
    v = _shipped("toyrelation")
    images, prompts, specs = _renders(24, seed=2)
    rng = np.random.default_rng(3)
    negs = [grammar.caption(next(iter(sample_negatives(s, rng, "any").values()))) for s in specs]
    wins = (v.score(images, prompts) > v.score(images, negs)).float().mean()
    assert wins >= 0.7


def test_toydetect_ranks_true_images_above_every_hard_negative_on_heldout_renders():
    """Held-out (colour, shape) pairs were never rendered in training: the factorised detector
    must still tell the true scene from each hard negative's scene, for the true prompt."""
    v = _shipped("toydetect")
    rng = np.random.default_rng(4)
    specs = [grammar.sample_spec(rng, "heldout") for _ in range(16)]
    rows = [(s, neg) for s in specs for neg in sample_negatives(s, rng, "any").values()]
    render = lambda spec: scenes.render(grammar.sample_scene(spec, rng))  # noqa: E731
    true = torch.from_numpy(np.stack([render(s) for s, _ in rows]))
    wrong = torch.from_numpy(np.stack([render(n) for _, n in rows]))
    prompts = [grammar.caption(s) for s, _ in rows]
    win = (v.score(true, prompts) > v.score(wrong, prompts)).float().mean()
    assert len(rows) > 40 and win >= 0.95
    # and on a true image the score is a confident log-probability
    assert v.score(true, prompts).median() > -0.5


def test_toydetect_refuses_prompts_outside_the_grammar_before_generating():
    v = _shipped("toydetect")
    with pytest.raises(ValueError, match="toydetect scores toyworld prompts only.*'cat'"):
        v.check_prompt("a red cat")
    with pytest.raises(ValueError, match="toydetect scores toyworld prompts only"):
        v.score(torch.zeros(1, 3, 32, 32), ["a red cat"])
    from noisesearch.verifiers.ensemble import RankEnsemble

    with pytest.raises(ValueError, match="toyworld prompts only"):
        RankEnsemble([load_verifier("toyclip"), v]).check_prompt("a red cat")
    import noisesearch
    from noisesearch.strategies.random_search import RandomSearch

    class Spy(RandomSearch):
        ran = False

        def run(self, ctx):  # noqa: D102
            Spy.ran = True
            return super().run(ctx)

    with pytest.raises(ValueError, match="toyworld prompts only"):
        noisesearch.search("toyworld", "a red cat", strategy=Spy(), verifier=v, candidates=1)
    assert not Spy.ran


def test_missing_weights_error_names_file_and_command(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nothing\.safetensors.*train-verifiers"):
        load_toy_verifier("toyclip", path=tmp_path / "nothing.safetensors")


# ------------------------------------------------------------------------------ training smoke


def test_quick_train_saves_loads_and_measures(tmp_path):
    cfg = dataclasses.replace(QUICK, steps=2, groups=2, eval_specs=3)
    logs: list[str] = []
    for kind in KINDS:
        entry = run(kind, cfg, tmp_path, log=logs.append)
        assert entry["steps"] == 2 and entry["params"] > 100_000
        v = load_toy_verifier(kind, path=tmp_path / f"{kind}.safetensors")
        images, prompts, _ = _renders(2)
        assert v.score(images, prompts).shape == (2,)
        m = measure(v, 3)
        assert 0.0 <= m["clean"]["caption"]["overall"] <= 1.0
    import json

    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert set(metrics) == set(KINDS) and "train_config" in metrics["toyclip"]
