"""Caption grammar: round trips, parse errors, the held-out split, scene sampling."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from noisesearch.toyworld import grammar as g
from noisesearch.toyworld.scenes import COLORS, SHAPES, Scene


def _specs(n: int, split: str, seed: int = 0) -> list[g.PromptSpec]:
    rng = np.random.default_rng(seed)
    return [g.sample_spec(rng, split) for _ in range(n)]


def test_captions_of_the_brief() -> None:
    Obj = g.ObjectSpec
    assert g.caption(g.PromptSpec("shape", (Obj("red", "circle"),))) == "a red circle"
    assert g.caption(g.PromptSpec("color_binding", (Obj("red", "circle"), Obj("blue", "square")))) == (
        "a red circle and a blue square"
    )
    assert g.caption(g.PromptSpec("spatial", (Obj("red", "circle"), Obj("blue", "square")), "left of")) == (
        "a red circle left of a blue square"
    )
    assert g.caption(g.PromptSpec("spatial", (Obj("green", "square"), Obj("purple", "circle")), "above")) == (
        "a green square above a purple circle"
    )
    assert g.caption(g.PromptSpec("counting", (Obj("yellow", "triangle", 2),))) == "two yellow triangles"
    assert g.caption(g.PromptSpec("counting", (Obj("blue", "circle", 3),))) == "three blue circles"
    assert g.caption(g.PromptSpec("shape", (Obj("orange", "square"),))) == "an orange square"


@pytest.mark.parametrize("category", g.CATEGORIES)
def test_round_trip_over_every_spec(category: str) -> None:
    for spec in g._all_specs(category):
        text = g.caption(spec)
        assert g.parse(text) == spec
        assert g.parse("  " + text.upper().replace(" ", "   ") + ". ") == spec
        assert set(text.split()) <= set(g.vocabulary())


def test_round_trip_over_sampled_specs() -> None:
    for split in g.SPLITS:
        for spec in _specs(300, split):
            assert g.parse(g.caption(spec)) == spec


def test_parse_accepts_one_and_article_variants() -> None:
    assert g.parse("one red circle") == g.parse("a red circle")
    assert g.parse("an orange circle") == g.parse("a orange circle")


@pytest.mark.parametrize(
    ("prompt", "needle"),
    [
        ("a pink circle", "'pink'"),
        ("a red star", "'star'"),
        ("a red circle next to a blue square", "'next'"),
        ("two red circle", "'circle'"),
        ("a red circle left a blue square", "'a'"),
        ("a red circle and", "ends too early"),
        ("", "empty"),
        ("two red circles and a blue square", "'and'"),
        ("a red circle and a blue circle", "differ"),
        ("a red circle blue", "'blue'"),
    ],
)
def test_parse_errors_name_the_problem(prompt: str, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        g.parse(prompt)


def test_parse_error_lists_valid_words() -> None:
    with pytest.raises(ValueError) as info:
        g.parse("a pink circle")
    for color in COLORS:
        assert color in str(info.value)


def test_spec_validation() -> None:
    Obj = g.ObjectSpec
    with pytest.raises(ValueError, match="category"):
        g.PromptSpec("size", (Obj("red", "circle"),))
    with pytest.raises(ValueError, match="relation"):
        g.PromptSpec("spatial", (Obj("red", "circle"), Obj("blue", "square")))
    with pytest.raises(ValueError, match="relation"):
        g.PromptSpec("shape", (Obj("red", "circle"),), "above")
    with pytest.raises(ValueError, match="counting"):
        g.PromptSpec("counting", (Obj("red", "circle", 1),))
    with pytest.raises(ValueError, match="count"):
        Obj("red", "circle", 4)


def test_vocabulary_is_sorted_and_complete() -> None:
    vocab = g.vocabulary()
    assert vocab == sorted(set(vocab))
    emitted = {w for cat in g.CATEGORIES for s in g._all_specs(cat) for w in g.caption(s).split()}
    assert emitted == set(vocab)


def test_heldout_design_keeps_every_colour_and_shape_in_training() -> None:
    train_pairs = {(o.color, o.shape) for cat in g.CATEGORIES for s in g._specs_for(cat, "train") for o in s.objects}
    assert {c for c, _ in train_pairs} == set(COLORS)
    assert {s for _, s in train_pairs} == set(SHAPES)
    assert train_pairs.isdisjoint(g.HELDOUT_PAIRS)
    assert Counter(c for c, _ in g.HELDOUT_PAIRS) == Counter({c: 1 for c in COLORS})
    assert Counter(s for _, s in g.HELDOUT_PAIRS) == Counter({s: 2 for s in SHAPES})


def test_heldout_prompts_properties() -> None:
    prompts = g.heldout_prompts()
    assert prompts == g.heldout_prompts()  # deterministic
    texts = [p for _, p in prompts]
    assert len(prompts) >= 200 and len(set(texts)) == len(texts)
    per_cat = Counter(c for c, _ in prompts)
    assert set(per_cat) == set(g.CATEGORIES)
    assert per_cat["color_binding"] >= 50 and per_cat["spatial"] >= 50
    # the grammar has only 6 held-out single-object and 12 held-out counting prompts: all listed
    assert per_cat["shape"] == len(g._specs_for("shape", "heldout")) == 6
    assert per_cat["counting"] == len(g._specs_for("counting", "heldout")) == 12
    for cat, text in prompts:
        spec = g.parse(text)
        assert spec.category == cat and g.is_heldout(spec)
    # spatial prompts never paraphrase each other ("A left of B" == "B right of A")
    inverse = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
    canon = set()
    for cat, text in prompts:
        if cat == "spatial":
            s = g.parse(text)
            key = (s.objects, s.relation)
            alt = ((s.objects[1], s.objects[0]), inverse[s.relation])
            assert key not in canon and alt not in canon
            canon.add(key)
    assert Counter(g.parse(t).relation for c, t in prompts if c == "spatial") == Counter({r: 24 for r in g.RELATIONS})


def test_train_split_never_emits_heldout_and_categories_balanced() -> None:
    train = _specs(2000, "train", seed=1)
    assert not any(g.is_heldout(s) for s in train)
    counts = Counter(s.category for s in train)
    assert all(400 <= counts[c] <= 600 for c in g.CATEGORIES)
    held = _specs(400, "heldout", seed=2)
    assert all(g.is_heldout(s) for s in held)
    anys = _specs(2000, "any", seed=3)
    assert 0 < sum(g.is_heldout(s) for s in anys) < 2000


def test_train_pairs_never_show_heldout_objects() -> None:
    rng = np.random.default_rng(4)
    for _ in range(300):
        scene, text = g.sample_pair(rng, "train")
        assert not g.is_heldout(g.parse(text))
        assert all((o.color, o.shape) not in g.HELDOUT_PAIRS for o in scene.objects)
        assert g.satisfies_spec(scene, g.parse(text))


def test_bad_split_rejected() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="split"):
        g.sample_spec(rng, "test")
    with pytest.raises(ValueError, match="split"):
        g.sample_pair(rng, "val")


def test_sample_scene_satisfies_spec_with_clear_margins() -> None:
    rng = np.random.default_rng(5)
    for spec in _specs(400, "any", seed=6):
        scene = g.sample_scene(spec, rng)
        assert isinstance(scene, Scene)
        assert g.satisfies_spec(scene, spec)
        assert len(scene.objects) == sum(o.count for o in spec.objects)
        for i, a in enumerate(scene.objects):
            for b in scene.objects[i + 1 :]:
                assert g._gap_ok(a, b)
        if spec.category == "spatial":
            pos = {(o.color, o.shape): o.centroid for o in scene.objects}
            a, b = (pos[(o.color, o.shape)] for o in spec.objects)
            assert g._relation_value(spec.relation, a, b) >= g.SPATIAL_SAMPLE_MARGIN


def test_satisfies_spec_rejects_mismatches() -> None:
    Obj = g.ObjectSpec
    spec = g.PromptSpec("spatial", (Obj("red", "circle"), Obj("blue", "square")), "left of")
    scene = g.sample_scene(spec, np.random.default_rng(7))
    assert g.satisfies_spec(scene, spec)
    assert not g.satisfies_spec(scene, g.PromptSpec("spatial", spec.objects, "right of"))
    assert not g.satisfies_spec(
        scene, g.PromptSpec("spatial", (Obj("blue", "circle"), Obj("red", "square")), "left of")
    )
    assert g.satisfies_spec(scene, g.PromptSpec("color_binding", spec.objects))
    assert not g.satisfies_spec(scene, g.PromptSpec("shape", (Obj("red", "circle"),)))  # extra object
    two = g.sample_scene(g.PromptSpec("counting", (Obj("green", "triangle", 2),)), np.random.default_rng(8))
    assert not g.satisfies_spec(two, g.PromptSpec("counting", (Obj("green", "triangle", 3),)))
