"""Pixel evaluator: detections on renders, robustness to degradation, hard negatives rejected."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from noisesearch.toyworld import evaluator as ev
from noisesearch.toyworld import grammar as g
from noisesearch.toyworld.scenes import BACKGROUND, COLORS, SHAPES, Obj, Scene, render

Case = tuple[str, str, np.ndarray, bool, str]  # category, kind, clean render, expected, prompt


@pytest.fixture(scope="module")
def cases() -> list[Case]:
    """One positive scene and its hard negatives for every 6th held-out prompt (all categories)."""
    prompts = [p for _, p in g.heldout_prompts()[::6]]
    out = []
    rng = np.random.default_rng(0)
    for prompt in prompts:
        spec = g.parse(prompt)
        scene = g.sample_scene(spec, rng)
        out.append((spec.category, "positive", render(scene), True, prompt))
        out += [(spec.category, k, render(s), False, prompt) for k, s in g.hard_negatives(scene, spec, rng)]
    return out


@pytest.mark.parametrize("size", [32, 64])
def test_detects_every_object_of_sampled_scenes(size: int) -> None:
    rng = np.random.default_rng(1)
    for _ in range(60):
        scene, _ = g.sample_pair(rng, "any")
        found = ev.detect(render(scene, size=size))
        assert Counter((d.color, d.shape) for d in found) == Counter((o.color, o.shape) for o in scene.objects)
        for o in scene.objects:
            d = min(found, key=lambda d: (d.x - o.centroid[0]) ** 2 + (d.y - o.centroid[1]) ** 2)
            assert abs(d.x - o.centroid[0]) < 0.01 and abs(d.y - o.centroid[1]) < 0.01
            ideal = {"circle": np.pi / 4, "square": 1.0, "triangle": 0.5}[o.shape] * o.size**2
            assert abs(d.area - ideal) / ideal < 0.05


def test_empty_scene_and_speckles_give_no_detections() -> None:
    img = render(Scene(()))
    assert ev.detect(img) == []
    noisy = ev.degrade(img, np.random.default_rng(2), speckles=8)
    assert ev.detect(noisy) == []


def test_clean_accuracy_on_heldout_sample_and_every_negative_kind_rejected(cases: list[Case]) -> None:
    correct: Counter[str] = Counter()
    total: Counter[str] = Counter()
    wrongly_accepted = []
    for cat, kind, img, expected, prompt in cases:
        ok = ev.satisfies(img, prompt) == expected
        total[cat] += 1
        correct[cat] += ok
        if not ok and not expected:
            wrongly_accepted.append((kind, prompt))
    assert set(total) == set(g.CATEGORIES)
    for cat in total:
        assert correct[cat] / total[cat] >= 0.98, (cat, correct[cat], total[cat])
    kinds = {k for _, k, _, e, _ in cases if not e}
    assert kinds == {
        "change_color",
        "change_shape",
        "swap_colors",
        "swap_objects",
        "count_minus",
        "count_plus",
        "extra_object",
        "missing_object",
    }
    assert wrongly_accepted == []


def test_degraded_accuracy_on_heldout_sample(cases: list[Case]) -> None:
    rng = np.random.default_rng(3)
    correct: Counter[str] = Counter()
    total: Counter[str] = Counter()
    for cat, _, img, expected, prompt in cases:
        total[cat] += 1
        correct[cat] += ev.satisfies(ev.degrade(img, rng), prompt) == expected
    for cat in total:
        assert correct[cat] / total[cat] >= 0.97, (cat, correct[cat], total[cat])


def test_relation_margin_is_applied_on_centroids() -> None:
    spec = g.parse("a red circle left of a blue square")
    far = Scene((Obj("red", "circle", 0.25, 0.5, 0.25), Obj("blue", "square", 0.7, 0.5, 0.25)))
    close = Scene((Obj("red", "circle", 0.3, 0.2, 0.25), Obj("blue", "square", 0.33, 0.75, 0.25)))
    assert ev.satisfies(render(far), spec)
    assert not ev.satisfies(render(far), g.parse("a red circle right of a blue square"))
    assert not ev.satisfies(render(close), spec)  # 0.03 apart: below RELATION_MARGIN
    assert ev.satisfies(render(close), g.parse("a red circle above a blue square"))


def test_robust_to_background_shift_and_accepts_tensors_and_sizes() -> None:
    scene = Scene((Obj("purple", "triangle", 0.3, 0.3, 0.3), Obj("green", "square", 0.7, 0.7, 0.25)))
    prompt = "a purple triangle above a green square"
    img = render(scene)
    assert ev.satisfies(np.clip(img + np.array([0.08, -0.06, 0.05], np.float32)[:, None, None], 0, 1), prompt)
    assert ev.satisfies(torch.from_numpy(img), prompt)
    assert ev.satisfies(torch.from_numpy(img).double().requires_grad_(True), g.parse(prompt))
    for size in (16, 24, 48):
        assert ev.satisfies(render(scene, size=size), prompt)


def test_off_palette_and_off_shape_blobs_fail() -> None:
    bg = np.array(BACKGROUND, np.float32)[:, None, None]
    img = render(Scene((Obj("red", "circle", 0.3, 0.5, 0.25),)))
    brown = img.copy()
    brown[:, 10:18, 20:28] = np.array([0.45, 0.3, 0.15], np.float32)[:, None, None]
    found = ev.detect(brown)
    assert Counter(d.color for d in found) == Counter({"red": 1, "unknown": 1})
    assert not ev.satisfies(brown, "a red circle")
    rect = np.broadcast_to(bg, img.shape).copy()
    rect[:, 12:20, 6:26] = np.array(COLORS["blue"], np.float32)[:, None, None]  # 2.5:1 rectangle
    assert [(d.color, d.shape) for d in ev.detect(rect)] == [("blue", "unknown")]
    assert not any(ev.satisfies(rect, f"a blue {s}") for s in SHAPES)


def test_touching_objects_of_different_colours_are_split() -> None:
    scene = Scene((Obj("red", "square", 0.35, 0.5, 0.25), Obj("blue", "circle", 0.6, 0.5, 0.25)))
    found = ev.detect(render(scene))
    assert sorted((d.color, d.shape) for d in found) == [("blue", "circle"), ("red", "square")]


def test_satisfaction_rate_batches_and_validation() -> None:
    rng = np.random.default_rng(4)
    specs = [g.sample_spec(rng, "heldout") for _ in range(6)]
    imgs = np.stack([render(g.sample_scene(s, rng)) for s in specs])
    prompts = [g.caption(s) for s in specs]
    assert ev.satisfaction_rate(imgs, prompts) == 1.0
    assert ev.satisfaction_rate(torch.from_numpy(imgs), specs) == 1.0
    same = ev.satisfies_batch(imgs, prompts[0])  # one prompt for every image
    assert same.dtype == bool and same.shape == (6,) and same[0]
    assert same.tolist() == [g.caption(s) == prompts[0] for s in specs]
    rolled = prompts[1:] + prompts[:1]
    assert ev.satisfaction_rate(imgs, rolled) < 1.0
    with pytest.raises(ValueError, match="prompts"):
        ev.satisfaction_rate(imgs, prompts[:3])
    with pytest.raises(ValueError, match="no images"):
        ev.satisfaction_rate(imgs[:0], [])
    with pytest.raises(ValueError, match="batch"):
        ev.satisfaction_rate(imgs[0], prompts[0])


@pytest.mark.parametrize(
    ("bad", "needle"),
    [
        (np.zeros((32, 32, 3)), "shape"),
        (np.zeros((3, 8, 8)), "16x16"),
        (np.zeros((3, 32, 40)), "square"),
        (np.full((3, 32, 32), np.nan), "NaN"),
    ],
)
def test_bad_images_rejected(bad: np.ndarray, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        ev.detect(bad)


def test_bad_prompt_rejected() -> None:
    with pytest.raises(ValueError, match="pink"):
        ev.satisfies(render(Scene(())), "a pink circle")
    with pytest.raises(ValueError, match="PromptSpec"):
        ev.satisfies(render(Scene(())), 3)  # type: ignore[arg-type]


@pytest.mark.parametrize("rgb", [(0.05, 0.05, 0.05), (0.45, 0.3, 0.15), (0.2, 0.6, 0.6)])
def test_off_palette_object_counts_as_an_extra_object(rgb: tuple[float, float, float]) -> None:
    img = render(Scene((Obj("green", "triangle", 0.3, 0.5, 0.3),)))
    img[:, 6:14, 20:28] = np.array(rgb, np.float32)[:, None, None]
    assert ("unknown", "unknown") in [(d.color, d.shape) for d in ev.detect(img)]
    assert not ev.satisfies(img, "a green triangle")
