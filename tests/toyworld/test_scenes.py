"""Renderer contracts: shape, range, determinism, colours where the objects are."""

from __future__ import annotations

import numpy as np
import pytest

from noisesearch.toyworld.scenes import BACKGROUND, COLORS, IMAGE_SIZE, SHAPES, Obj, Scene, render


def test_palette_and_constants() -> None:
    assert set(COLORS) == {"red", "green", "blue", "yellow", "purple", "orange"}
    assert SHAPES == ("circle", "square", "triangle")
    rgb = {k: np.array(v) for k, v in COLORS.items()}
    bg = np.array(BACKGROUND)
    for name, c in rgb.items():
        assert np.all((c >= 0) & (c <= 1))
        assert np.linalg.norm(c - bg) > 0.5, name
        for other, d in rgb.items():
            if other != name:
                assert np.linalg.norm(c - d) > 0.3, (name, other)


def test_render_shape_range_dtype_and_empty_scene() -> None:
    img = render(Scene(()))
    assert img.shape == (3, IMAGE_SIZE, IMAGE_SIZE) and img.dtype == np.float32
    np.testing.assert_allclose(img, np.broadcast_to(np.array(BACKGROUND, np.float32)[:, None, None], img.shape))
    img = render(Scene((Obj("red", "circle", 0.5, 0.5, 0.3),)), size=48, supersample=2)
    assert img.shape == (3, 48, 48)
    assert img.min() >= 0.0 and img.max() <= 1.0


def test_render_is_deterministic() -> None:
    scene = Scene((Obj("blue", "triangle", 0.3, 0.4, 0.25), Obj("yellow", "square", 0.75, 0.7, 0.3)))
    np.testing.assert_array_equal(render(scene), render(scene))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("color", sorted(COLORS))
def test_colour_lands_at_object_centroid_only(color: str, shape: str) -> None:
    obj = Obj(color, shape, 0.35, 0.6, 0.3)
    img = render(Scene((obj,)), size=32)
    cx, cy = obj.centroid
    px = img[:, int(cy * 32), int(cx * 32)]
    np.testing.assert_allclose(px, COLORS[color], atol=1e-6)
    # far corner is untouched background
    np.testing.assert_allclose(img[:, 2, 30], BACKGROUND, atol=1e-6)
    # covered area matches the ideal shape area (supersampled antialiasing)
    coverage = np.abs(img - np.array(BACKGROUND, np.float32)[:, None, None]).sum(0)
    coverage /= np.abs(np.array(COLORS[color]) - np.array(BACKGROUND)).sum()
    ideal = {"circle": np.pi / 4, "square": 1.0, "triangle": 0.5}[shape] * (0.3 * 32) ** 2
    assert abs(coverage.sum() - ideal) / ideal < 0.05


def test_triangle_points_up() -> None:
    img = render(Scene((Obj("red", "triangle", 0.5, 0.5, 0.5),)), size=32)
    mask = np.abs(img - np.array(BACKGROUND, np.float32)[:, None, None]).sum(0) > 0.3
    rows = mask.sum(1)
    filled = np.nonzero(rows)[0]
    top, bottom = rows[filled[:3]].sum(), rows[filled[-3:]].sum()
    assert bottom > 3 * top


def test_obj_validation() -> None:
    with pytest.raises(ValueError, match="colour"):
        Obj("pink", "circle", 0.5, 0.5, 0.2)
    with pytest.raises(ValueError, match="shape"):
        Obj("red", "star", 0.5, 0.5, 0.2)
    with pytest.raises(ValueError, match="sticks out"):
        Obj("red", "circle", 0.05, 0.5, 0.2)
    with pytest.raises(ValueError, match="tuple"):
        Scene([Obj("red", "circle", 0.5, 0.5, 0.2)])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="size"):
        render(Scene(()), size=0)
