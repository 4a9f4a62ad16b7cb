"""toydetect: the symbolic scorer against brute-force enumeration, peak decoding, the training
targets and colour transform, and the shipped detector on held-out renders."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from noisesearch.toyworld import grammar, scenes
from noisesearch.toyworld.training.verifiers import detection_targets, recolor
from noisesearch.toyworld.verifiers import (
    COLOR_NAMES,
    SHAPE_NAMES,
    Detections,
    ToyDetectConfig,
    decode,
    satisfaction_log_prob,
)

CFG = ToyDetectConfig()


def _random_detections(n: int, k: int, seed: int) -> Detections:
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(n, k, generator=g, dtype=torch.float64)
    color = torch.softmax(3 * torch.randn(n, k, len(COLOR_NAMES), generator=g, dtype=torch.float64), -1)
    shape = torch.softmax(3 * torch.randn(n, k, len(SHAPE_NAMES), generator=g, dtype=torch.float64), -1)
    xy = torch.rand(n, k, 2, generator=g, dtype=torch.float64)
    return Detections(p, color, shape, xy)


def _brute_force(det: Detections, row: int, spec: grammar.PromptSpec) -> float:
    """Enumerate every detection's state (absent, or present as one (colour, shape)) and add up the
    probability of the worlds that satisfy ``spec``: the grammar's own rule, with the relation
    replaced by the scorer's soft test."""
    K = det.p.shape[1]
    P, C, S = det.p[row].tolist(), det.color[row].tolist(), det.shape[row].tolist()
    total = 0.0
    states = [None] + [(c, s) for c in range(len(COLOR_NAMES)) for s in range(len(SHAPE_NAMES))]
    for world in itertools.product(states, repeat=K):
        prob = 1.0
        for k, st in enumerate(world):
            prob *= (1 - P[k]) if st is None else P[k] * C[k][st[0]] * S[k][st[1]]
        if prob == 0.0:
            continue
        present = [(COLOR_NAMES[st[0]], SHAPE_NAMES[st[1]], k) for k, st in enumerate(world) if st is not None]
        found = sorted((c, s) for c, s, _ in present)
        wanted = sorted((o.color, o.shape) for o in spec.objects for _ in range(o.count))
        if found != wanted:
            continue
        if spec.category == "spatial":
            a, b = spec.objects
            ka = next(k for c, s, k in present if (c, s) == (a.color, a.shape))
            kb = next(k for c, s, k in present if (c, s) == (b.color, b.shape))
            xa, xb = det.xy[row, ka].tolist(), det.xy[row, kb].tolist()
            delta = {
                "left of": xb[0] - xa[0],
                "right of": xa[0] - xb[0],
                "above": xb[1] - xa[1],
                "below": xa[1] - xb[1],
            }[spec.relation]
            prob *= 1 / (1 + math.exp(-(delta - CFG.relation_margin) / CFG.relation_temperature))
        total += prob
    return total


@pytest.mark.parametrize(
    "prompt",
    [
        "a red circle",
        "two blue squares",
        "three green triangles",
        "a red circle and a blue square",
        "a yellow square left of a purple circle",
        "an orange triangle below a green circle",
    ],
)
def test_scorer_equals_brute_force_enumeration(prompt):
    spec = grammar.parse(prompt)
    det = _random_detections(3, 3, seed=len(prompt))
    # make the mentioned objects likely, so the probabilities are not all ~0
    for o in spec.objects:
        det.color[:, :, COLOR_NAMES.index(o.color)] += 1.0
        det.shape[:, :, SHAPE_NAMES.index(o.shape)] += 1.0
    det.color /= det.color.sum(-1, keepdim=True)
    det.shape /= det.shape.sum(-1, keepdim=True)
    got = satisfaction_log_prob(det, spec, CFG).exp()
    want = torch.tensor([_brute_force(det, r, spec) for r in range(3)], dtype=torch.float64)
    torch.testing.assert_close(got, want.clamp_min(CFG.floor), rtol=1e-9, atol=0)
    assert (want > 1e-6).all()


def test_scorer_on_certain_detections_is_the_grammar_rule():
    # two sure objects: a red circle at x=0.2 and a blue square at x=0.7, plus two sure absences
    det = Detections(
        p=torch.tensor([[1.0, 1.0, 0.0, 0.0]]),
        color=torch.eye(len(COLOR_NAMES))[[0, 2, 1, 1]][None],
        shape=torch.eye(len(SHAPE_NAMES))[[0, 1, 2, 2]][None],
        xy=torch.tensor([[[0.2, 0.5], [0.7, 0.5], [0.5, 0.5], [0.5, 0.5]]]),
    )
    lp = lambda prompt: float(satisfaction_log_prob(det, grammar.parse(prompt), CFG))  # noqa: E731
    assert lp("a red circle and a blue square") == pytest.approx(0.0, abs=1e-6)
    assert lp("a red circle left of a blue square") == pytest.approx(0.0, abs=1e-6)
    false = math.log(1e-9)
    assert lp("a red circle right of a blue square") < false  # σ(-27.5): the soft relation test
    assert lp("a red circle") < false  # an extra object makes it wrong
    assert lp("a blue circle and a red square") < false  # binding
    assert lp("two red circles") < false


def test_decode_finds_peaks_positions_and_colours():
    g = CFG.grid
    heat = torch.full((1, 1, g, g), -10.0)
    heat[0, 0, 4, 3] = 5.0  # row 4, column 3
    heat[0, 0, 10, 12] = 2.0
    heat[0, 0, 10, 11] = 1.0  # a shoulder of the second peak: suppressed by the 3x3 max-pool
    offset = torch.zeros(1, 2, g, g)
    offset[0, :, 4, 3] = torch.tensor([0.25, -0.25])
    shape = torch.zeros(1, len(SHAPE_NAMES), g, g)
    shape[0, 2, 4, 3] = 10.0
    color = torch.zeros(1, 1 + len(COLOR_NAMES), g, g)
    color[0, 0] = 10.0  # background everywhere ...
    color[0, 0, 3:6, 2:5] = 0.0
    color[0, 1 + 4, 3:6, 2:5] = 10.0  # ... but purple around the first peak
    det = decode({"heatmap": heat, "offset": offset, "shape": shape, "color": color}, max_objects=3)
    assert det.p.shape == (1, 3)
    assert det.p[0, 0] == pytest.approx(torch.sigmoid(torch.tensor(5.0)).item())
    assert det.p[0, 1] == pytest.approx(torch.sigmoid(torch.tensor(2.0)).item())
    assert det.p[0, 2] < 1e-3  # the shoulder is not a detection
    torch.testing.assert_close(det.xy[0, 0], torch.tensor([(3 + 0.5 + 0.25) / g, (4 + 0.5 - 0.25) / g]))
    assert COLOR_NAMES[int(det.color[0, 0].argmax())] == "purple" and det.color[0, 0].max() > 0.99
    assert SHAPE_NAMES[int(det.shape[0, 0].argmax())] == "triangle"
    assert det.objects(0) == [
        ("purple", "triangle", pytest.approx(3.75 / g), pytest.approx(4.25 / g), pytest.approx(float(det.p[0, 0]))),
        pytest.approx(det.objects(0)[1]),
    ]


def test_detection_targets_agree_with_the_render():
    rng = np.random.default_rng(0)
    scene_list = [grammar.sample_scene(grammar.sample_spec(rng, "any"), rng) for _ in range(20)]
    t = detection_targets(scene_list, CFG.grid)
    for i, scene in enumerate(scene_list):
        assert int(t["centre"][i].sum()) == len(scene.objects)
        assert t["heatmap"][i].max() == 1.0 and int((t["heatmap"][i] == 1).sum()) == len(scene.objects)
        # each cell's label is the colour the renderer paints at the cell centre: render with one
        # sample per pixel at 9x the grid, so that pixel 9j + 4 is centred on cell j's centre
        g = CFG.grid
        img = scenes.render(scene, size=9 * g, supersample=1)[:, 4::9, 4::9]  # [3, g, g]
        want = np.zeros((g, g), dtype=np.int64)
        for k, name in enumerate(COLOR_NAMES):
            want[np.abs(img - np.asarray(scenes.COLORS[name])[:, None, None]).max(0) < 1e-6] = k + 1
        np.testing.assert_array_equal(t["color"][i].numpy(), want)
        labelled = t["color"][i] > 0
        assert ((t["shape"][i] >= 0) == labelled).all()
        for o in scene.objects:  # the offset points at the centroid from the centre cell
            cx, cy = (v * CFG.grid for v in o.centroid)
            r, c = int(cy), int(cx)
            assert t["centre"][i, r, c]
            torch.testing.assert_close(t["offset"][i, :, r, c], torch.tensor([cx - c - 0.5, cy - r - 0.5]))


def test_recolor_keeps_background_and_moves_colours():
    rng = np.random.default_rng(1)
    scene_list = [grammar.sample_scene(grammar.sample_spec(rng, "train"), rng) for _ in range(8)]
    images = torch.from_numpy(np.stack([scenes.render(s) for s in scene_list]))
    out = recolor(images, torch.Generator().manual_seed(0))
    bg = torch.tensor(scenes.BACKGROUND).view(1, 3, 1, 1)
    is_bg = (images - bg).abs().amax(1) < 1e-6  # [N, H, W]
    assert torch.allclose(out.permute(0, 2, 3, 1)[is_bg], images.permute(0, 2, 3, 1)[is_bg], atol=1e-6)
    assert (out - images).abs().amax() > 0.2  # colours did change
    assert torch.equal(recolor(images, torch.Generator().manual_seed(0)), out)  # deterministic
