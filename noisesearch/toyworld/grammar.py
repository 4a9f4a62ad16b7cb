"""Toyworld caption grammar: prompt specs, canonical captions, parsing, and the held-out split.

Four prompt categories (GenEval-style, on toyworld shapes):

- ``shape``: one object, ``"a red circle"``;
- ``color_binding``: two objects of different colour *and* different shape joined by "and",
  ``"a red circle and a blue square"`` (no position constraint);
- ``spatial``: the same kind of pair in a relation, ``"a red circle left of a blue square"``
  (``objects[0] <relation> objects[1]``);
- ``counting``: two or three objects of one (colour, shape) type, ``"three blue circles"``.

A scene matches a caption *exactly*: it holds the mentioned objects, with the said counts, and
nothing else (no distractors). Relations are judged on area centroids in image coordinates
(y down): ``A left of B`` holds when ``x_A + RELATION_MARGIN < x_B``, ``A above B`` when
``y_A + RELATION_MARGIN < y_B``, and so on. :func:`sample_scene` places spatial pairs with a much
larger gap, ``SPATIAL_SAMPLE_MARGIN`` along the relation's axis, so training scenes are never
borderline; the other axis is left free.

Held-out split (compositional generalisation). Six of the 18 (colour, shape) pairs are reserved for
evaluation, ``HELDOUT_PAIRS``: one per colour and two per shape (a Latin-square pattern), so that
training still shows every colour with two shapes and every shape with four colours, and the model
has to *compose* colour and shape to draw a held-out pair. A spec is held out when any of its
objects is a held-out pair. The train split never emits such a spec, and since training scenes
contain exactly the captioned objects, a held-out pair never appears in a training image either.

The grammar is small, so not every category can have 50 distinct held-out prompts: there are only 18
single-object prompts and 36 counting prompts in all. :func:`heldout_prompts` lists every held-out
``shape`` (6) and ``counting`` (12) prompt, every ordered held-out ``color_binding`` pair (96), and
96 ``spatial`` prompts (two per unordered held-out pair, on different axes, relations balanced):
210 unique prompts. Evaluate several seeds per prompt for the two small categories.
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cache

import numpy as np

from noisesearch.io.usertext import quote
from noisesearch.toyworld.scenes import (
    BORDER,
    COLORS,
    MIN_GAP,
    SHAPES,
    SIZE_RANGE,
    Obj,
    Scene,
)

#: spatial relations; ``objects[0] <relation> objects[1]``
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
#: prompt categories
CATEGORIES: tuple[str, ...] = ("shape", "color_binding", "spatial", "counting")
#: words for counts; count 1 is written "a" (or "an" before a vowel), parse also accepts "one"
NUMBER_WORDS: dict[int, str] = {1: "a", 2: "two", 3: "three"}
#: counts used by the counting category
COUNTING_COUNTS: tuple[int, ...] = (2, 3)

#: (colour, shape) pairs reserved for evaluation: one per colour, two per shape
HELDOUT_PAIRS: frozenset[tuple[str, str]] = frozenset(
    {
        ("red", "square"),
        ("green", "square"),
        ("blue", "circle"),
        ("orange", "circle"),
        ("yellow", "triangle"),
        ("purple", "triangle"),
    }
)

#: relation -> (axis, sign): "a <relation> b" holds by ``sign * (b[axis] - a[axis])`` (x right, y down)
RELATION_AXES: dict[str, tuple[int, float]] = {
    "left of": (0, 1.0),
    "right of": (0, -1.0),
    "above": (1, 1.0),
    "below": (1, -1.0),
}
#: a relation holds when the centroids differ by more than this along its axis (fraction of image)
RELATION_MARGIN: float = 0.05
#: sample_scene separates spatial pairs' centroids by at least this along the relation's axis
SPATIAL_SAMPLE_MARGIN: float = 0.2

SPLITS: tuple[str, ...] = ("train", "heldout", "any")

_PLURAL = {s: s + "s" for s in SHAPES}
_SINGULAR = {v: k for k, v in _PLURAL.items()}
_WORD_TO_COUNT = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3}


@dataclass(frozen=True)
class ObjectSpec:
    """A mentioned object type and how many of it."""

    color: str  # a key of scenes.COLORS
    shape: str  # one of scenes.SHAPES
    count: int = 1  # 1 except in the counting category (2 or 3)

    def __post_init__(self) -> None:
        if self.color not in COLORS:
            raise ValueError(f"unknown colour {self.color!r}; use one of {sorted(COLORS)}")
        if self.shape not in SHAPES:
            raise ValueError(f"unknown shape {self.shape!r}; use one of {list(SHAPES)}")
        if self.count not in NUMBER_WORDS:
            raise ValueError(f"count {self.count!r} is not supported; use one of {sorted(NUMBER_WORDS)}")


@dataclass(frozen=True)
class PromptSpec:
    """A structured prompt; :func:`caption` writes it, :func:`parse` reads it back."""

    category: str  # one of CATEGORIES
    objects: tuple[ObjectSpec, ...]  # 1 entry (shape, counting) or 2 (color_binding, spatial)
    relation: str | None = None  # spatial only: objects[0] <relation> objects[1]

    def __post_init__(self) -> None:
        cat = self.category
        if cat not in CATEGORIES:
            raise ValueError(f"unknown category {cat!r}; use one of {list(CATEGORIES)}")
        if not isinstance(self.objects, tuple) or not all(isinstance(o, ObjectSpec) for o in self.objects):
            raise ValueError("PromptSpec.objects must be a tuple of ObjectSpec; wrap a list with tuple(...)")
        n_expected = 1 if cat in ("shape", "counting") else 2
        if len(self.objects) != n_expected:
            raise ValueError(f"a {cat!r} prompt has {n_expected} object(s), got {len(self.objects)}")
        if cat == "spatial":
            if self.relation not in RELATIONS:
                raise ValueError(f"spatial prompts need a relation in {list(RELATIONS)}, got {self.relation!r}")
        elif self.relation is not None:
            raise ValueError(f"only spatial prompts take a relation; drop relation={self.relation!r} for {cat!r}")
        if cat == "counting":
            if self.objects[0].count not in COUNTING_COUNTS:
                raise ValueError(
                    f"counting prompts use counts {list(COUNTING_COUNTS)}, got {self.objects[0].count}; "
                    "use category 'shape' for a single object"
                )
        elif any(o.count != 1 for o in self.objects):
            raise ValueError(f"objects of a {cat!r} prompt have count 1; use category 'counting' for 2 or 3")
        if n_expected == 2:
            a, b = self.objects
            if a.color == b.color or a.shape == b.shape:
                raise ValueError(
                    f"the two objects of a {cat!r} prompt must differ in colour and in shape, "
                    f"got {a.color} {a.shape} and {b.color} {b.shape}"
                )


# ----------------------------------------------------------------------------------- captions


def _noun_phrase(o: ObjectSpec) -> str:
    if o.count == 1:
        article = "an" if o.color[0] in "aeiou" else "a"
        return f"{article} {o.color} {o.shape}"
    return f"{NUMBER_WORDS[o.count]} {o.color} {_PLURAL[o.shape]}"


def caption(spec: PromptSpec) -> str:
    """Canonical English caption, e.g. ``"a red circle left of a blue square"``."""
    if not isinstance(spec, PromptSpec):
        raise ValueError(f"caption expects a PromptSpec, got {type(spec).__name__}")
    if spec.category in ("shape", "counting"):
        return _noun_phrase(spec.objects[0])
    a, b = spec.objects
    link = "and" if spec.category == "color_binding" else spec.relation
    return f"{_noun_phrase(a)} {link} {_noun_phrase(b)}"


def vocabulary() -> list[str]:
    """Every word :func:`caption` can emit, sorted."""
    words = set(COLORS) | set(SHAPES) | set(_PLURAL.values()) | {"a", "an", "and"}
    words |= {NUMBER_WORDS[c] for c in COUNTING_COUNTS}
    for r in RELATIONS:
        words |= set(r.split())
    return sorted(words)


def _parse_error(word: str, position: int, expected: Sequence[str], prompt: str) -> ValueError:
    return ValueError(
        f"cannot parse prompt {quote(prompt)}: unexpected word {quote(word, 30)} at position {position}; "
        f"expected one of {sorted(set(expected))}"
    )


def parse(prompt: str) -> PromptSpec:
    """Inverse of :func:`caption`; tolerant of case, extra spaces and a trailing period.

    Raises ValueError naming the offending word and the words valid at that point.
    """
    if not isinstance(prompt, str):
        raise ValueError(f"parse expects a string prompt, got {type(prompt).__name__}")
    text = prompt.strip().lower()
    text = re.sub(r"[.!]+$", "", text).strip()
    words = text.split()
    if not words:
        raise ValueError(f"cannot parse empty prompt {quote(prompt)}; write e.g. 'a red circle'")
    pos = 0

    def take(expected: Sequence[str]) -> str:
        nonlocal pos
        if pos >= len(words):
            raise ValueError(
                f"cannot parse prompt {quote(prompt)}: it ends too early; expected one of {sorted(set(expected))} next"
            )
        w = words[pos]
        if w not in expected:
            raise _parse_error(w, pos, expected, prompt)
        pos += 1
        return w

    def noun_phrase() -> ObjectSpec:
        count = _WORD_TO_COUNT[take(list(_WORD_TO_COUNT))]
        color = take(list(COLORS))
        nouns = list(SHAPES) if count == 1 else list(_PLURAL.values())
        noun = take(nouns)
        return ObjectSpec(color, _SINGULAR.get(noun, noun), count)

    first = noun_phrase()
    if pos == len(words):
        category = "shape" if first.count == 1 else "counting"
        return PromptSpec(category, (first,))
    if first.count != 1:
        raise _parse_error(words[pos], pos, ["<end of prompt>"], prompt)
    links = ["and", "left", "right", "above", "below"]
    link = take(links)
    relation: str | None = None
    if link in ("left", "right"):
        take(["of"])
        relation = f"{link} of"
    elif link in ("above", "below"):
        relation = link
    second = noun_phrase()
    if second.count != 1:
        raise ValueError(
            f"cannot parse prompt {quote(prompt)}: the second object must be single ('a ...'), not a count"
        )
    if pos != len(words):
        raise _parse_error(words[pos], pos, ["<end of prompt>"], prompt)
    category = "color_binding" if relation is None else "spatial"
    return PromptSpec(category, (first, second), relation)


# ------------------------------------------------------------------------------ the split


def is_heldout(spec: PromptSpec) -> bool:
    """True if any object of ``spec`` is a (colour, shape) pair reserved for evaluation."""
    return any((o.color, o.shape) in HELDOUT_PAIRS for o in spec.objects)


def _all_pairs() -> list[tuple[str, str]]:
    return [(c, s) for c in COLORS for s in SHAPES]


@cache
def _all_specs(category: str) -> tuple[PromptSpec, ...]:
    """Every spec of one category, in a fixed order."""
    pairs = _all_pairs()
    if category == "shape":
        return tuple(PromptSpec("shape", (ObjectSpec(c, s),)) for c, s in pairs)
    if category == "counting":
        return tuple(PromptSpec("counting", (ObjectSpec(c, s, n),)) for c, s in pairs for n in COUNTING_COUNTS)
    two = [(a, b) for a, b in itertools.product(pairs, pairs) if a[0] != b[0] and a[1] != b[1]]
    if category == "color_binding":
        return tuple(PromptSpec("color_binding", (ObjectSpec(*a), ObjectSpec(*b))) for a, b in two)
    return tuple(PromptSpec("spatial", (ObjectSpec(*a), ObjectSpec(*b)), r) for a, b in two for r in RELATIONS)


@cache
def _specs_for(category: str, split: str) -> tuple[PromptSpec, ...]:
    specs = _all_specs(category)
    if split == "train":
        return tuple(s for s in specs if not is_heldout(s))
    if split == "heldout":
        return tuple(s for s in specs if is_heldout(s))
    return specs


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {list(SPLITS)}")


def sample_spec(rng: np.random.Generator, split: str = "train") -> PromptSpec:
    """A random spec: category uniform over CATEGORIES, then uniform over that category's specs."""
    _check_split(split)
    category = CATEGORIES[int(rng.integers(len(CATEGORIES)))]
    specs = _specs_for(category, split)
    return specs[int(rng.integers(len(specs)))]


def heldout_prompts() -> list[tuple[str, str]]:
    """Fixed list of (category, prompt) for evaluation: 210 unique held-out prompts.

    shape 6, counting 12 (all there are), color_binding 96 (all ordered pairs), spatial 96.
    """
    out: list[tuple[str, str]] = []
    for cat in ("shape", "counting", "color_binding"):
        out += [(cat, caption(s)) for s in _specs_for(cat, "heldout")]

    def key(o: ObjectSpec) -> tuple[str, str]:
        return (o.color, o.shape)

    # spatial: for each unordered held-out pair {P, Q}, "P r1 Q" and "Q r2 P" with r1, r2 on
    # different axes (so the two are never paraphrases), cycling through the relations.
    pairs = {tuple(sorted(s.objects, key=key)) for s in _specs_for("color_binding", "heldout")}
    unordered = sorted(pairs, key=lambda ab: (key(ab[0]), key(ab[1])))
    for i, (p, q) in enumerate(unordered):
        r1, r2 = RELATIONS[i % 4], RELATIONS[(i + 2) % 4]
        out.append(("spatial", caption(PromptSpec("spatial", (p, q), r1))))
        out.append(("spatial", caption(PromptSpec("spatial", (q, p), r2))))
    return out


def train_prompts(per_category: int = 128, seed: int = 0) -> list[tuple[str, str]]:
    """A fixed sample of (category, prompt) from the training split: ``per_category`` distinct
    prompts of each category (all of them where a category has fewer), for learning priors such as
    NPNet without touching the held-out combinations."""
    rng = np.random.default_rng(seed)
    out: list[tuple[str, str]] = []
    for cat in CATEGORIES:
        specs = _specs_for(cat, "train")
        pick = rng.permutation(len(specs))[: min(per_category, len(specs))]
        out += [(cat, caption(specs[int(i)])) for i in sorted(pick)]
    return out


# ------------------------------------------------------------------------ scenes for specs


def _gap_ok(a: Obj, b: Obj) -> bool:
    ax0, ay0, ax1, ay1 = a.bbox
    bx0, by0, bx1, by1 = b.bbox
    return ax1 + MIN_GAP <= bx0 or bx1 + MIN_GAP <= ax0 or ay1 + MIN_GAP <= by0 or by1 + MIN_GAP <= ay0


def _relation_value(relation: str, a: tuple[float, float], b: tuple[float, float]) -> float:
    """How far the relation holds: positive when a <relation> b, in image fractions."""
    axis, sign = RELATION_AXES[relation]
    return sign * (b[axis] - a[axis])


def layout_satisfies(objects: Sequence[tuple[str, str, float, float]], spec: PromptSpec) -> bool:
    """Whether objects given as (colour, shape, centroid x, centroid y) match ``spec`` exactly.

    The multiset of (colour, shape) must equal the mentioned one (with counts; nothing else), and a
    spatial relation must hold on centroids by more than RELATION_MARGIN. Shared by
    :func:`satisfies_spec` and the pixel evaluator.
    """
    found = Counter((c, s) for c, s, _, _ in objects)
    wanted = Counter({(o.color, o.shape): o.count for o in spec.objects})
    if found != wanted:
        return False
    if spec.category == "spatial":
        a, b = spec.objects
        pa = next((x, y) for c, s, x, y in objects if (c, s) == (a.color, a.shape))
        pb = next((x, y) for c, s, x, y in objects if (c, s) == (b.color, b.shape))
        assert spec.relation is not None
        return _relation_value(spec.relation, pa, pb) > RELATION_MARGIN
    return True


def satisfies_spec(scene: Scene, spec: PromptSpec) -> bool:
    """Symbolic check: does ``scene`` contain exactly what ``spec`` says, in the said relation?"""
    return layout_satisfies([(o.color, o.shape, *o.centroid) for o in scene.objects], spec)


def place_objects(
    kinds: Sequence[tuple[str, str]],
    rng: np.random.Generator,
    existing: Sequence[Obj] = (),
    max_tries: int = 200,
) -> list[Obj]:
    """Place objects of the given (colour, shape) kinds at random, clear of ``existing`` and of each
    other (MIN_GAP between bounding boxes, BORDER from the edges). Returns only the new objects."""
    lo, hi = SIZE_RANGE
    for _ in range(max_tries):
        placed: list[Obj] = []
        ok = True
        for color, shape in kinds:
            for _ in range(100):
                size = float(rng.uniform(lo, hi))
                half = size / 2 + BORDER
                x, y = (float(v) for v in rng.uniform(half, 1 - half, size=2))
                cand = Obj(color, shape, x, y, size)
                if all(_gap_ok(cand, o) for o in (*existing, *placed)):
                    placed.append(cand)
                    break
            else:
                ok = False
                break
        if ok:
            return placed
    raise RuntimeError(f"could not place {len(kinds)} objects next to {len(existing)} others; scene too crowded")


def sample_scene(spec: PromptSpec, rng: np.random.Generator) -> Scene:
    """A random scene that satisfies ``spec`` exactly (no distractors); positions and sizes random.

    Spatial pairs have centroids at least SPATIAL_SAMPLE_MARGIN apart along the relation's axis.
    """
    if not isinstance(spec, PromptSpec):
        raise ValueError(f"sample_scene expects a PromptSpec, got {type(spec).__name__}")
    kinds = [(o.color, o.shape) for o in spec.objects for _ in range(o.count)]
    for _ in range(1000):
        objs = place_objects(kinds, rng)
        if spec.category != "spatial":
            break
        assert spec.relation is not None
        if _relation_value(spec.relation, objs[0].centroid, objs[1].centroid) >= SPATIAL_SAMPLE_MARGIN:
            break
    else:  # pragma: no cover - acceptance is ~30% per try
        raise RuntimeError(f"could not sample a scene for {caption(spec)!r}")
    # shuffle drawing order so that order carries no information about the caption
    order = rng.permutation(len(objs))
    return Scene(tuple(objs[i] for i in order))


def sample_pair(rng: np.random.Generator, split: str = "train") -> tuple[Scene, str]:
    """A random (scene, caption) pair from ``split``."""
    spec = sample_spec(rng, split)
    return sample_scene(spec, rng), caption(spec)


def _with(scene: Scene, i: int, obj: Obj) -> Scene:
    """``scene`` with object ``i`` replaced by ``obj``."""
    return Scene(tuple(obj if j == i else o for j, o in enumerate(scene.objects)))


def hard_negatives(scene: Scene, spec: PromptSpec, rng: np.random.Generator) -> list[tuple[str, Scene]]:
    """Near-miss scenes for ``spec`` built from a positive ``scene``: (kind, scene) pairs.

    Kinds: ``change_color`` and ``change_shape`` (one object), ``swap_colors`` (two-object prompts:
    the two objects trade colours), ``swap_objects`` (spatial: the objects trade colour and shape,
    which reverses the relation), ``count_minus`` / ``count_plus`` (counting: one object fewer or
    more), ``extra_object`` (a distractor of another type) and ``missing_object`` (two-object
    prompts). Every returned scene fails :func:`satisfies_spec`; a kind that cannot be built (too
    crowded) or happens to still satisfy the spec is left out. Useful for evaluating evaluators and
    for contrastive training of verifiers.
    """
    if not satisfies_spec(scene, spec):
        raise ValueError(f"hard_negatives needs a scene that satisfies {caption(spec)!r}; use sample_scene(spec, rng)")
    colors, shapes = list(COLORS), list(SHAPES)
    objs = scene.objects
    idx = int(rng.integers(len(objs)))
    o = objs[idx]
    out: list[tuple[str, Scene]] = []
    new_color = str(rng.choice([c for c in colors if c != o.color]))
    new_shape = str(rng.choice([s for s in shapes if s != o.shape]))
    out.append(("change_color", _with(scene, idx, replace(o, color=new_color))))
    out.append(("change_shape", _with(scene, idx, replace(o, shape=new_shape))))
    mentioned = {(m.color, m.shape) for m in spec.objects}
    if len(spec.objects) == 2:
        a, b = objs
        out.append(("swap_colors", Scene((replace(a, color=b.color), replace(b, color=a.color)))))
        out.append(("missing_object", Scene((objs[idx],))))
        if spec.category == "spatial":
            pa = replace(a, color=b.color, shape=b.shape)
            pb = replace(b, color=a.color, shape=a.shape)
            out.append(("swap_objects", Scene((pa, pb))))
    if spec.category == "counting":
        out.append(("count_minus", Scene(tuple(x for i, x in enumerate(objs) if i != idx))))
        try:
            more = place_objects([(o.color, o.shape)], rng, objs, max_tries=20)
            out.append(("count_plus", Scene(objs + tuple(more))))
        except RuntimeError:
            pass
    others = [(c, s) for c in colors for s in shapes if (c, s) not in mentioned]
    kind = others[int(rng.integers(len(others)))]
    try:
        out.append(("extra_object", Scene(objs + tuple(place_objects([kind], rng, objs, max_tries=20)))))
    except RuntimeError:
        pass
    return [(k, s) for k, s in out if not satisfies_spec(s, spec)]


#: how many held-out prompts each category has (the grammar allows only so many shape and counting prompts)
HELDOUT_MIX: dict[str, int] = {"shape": 6, "counting": 12, "color_binding": 96, "spatial": 96}


def heldout_subset(per_category: dict[str, int] | int) -> list[tuple[str, str]]:
    """(category, prompt) pairs of the held-out set: at most ``per_category`` prompts of each category
    (an int for all, or a count per category name), evenly spaced within it so that every object pair
    and relation is represented; categories in sorted order. Deterministic (the benchmarks' subsets)."""
    by_cat: dict[str, list[tuple[str, str]]] = {}
    for c, p in heldout_prompts():
        by_cat.setdefault(c, []).append((c, p))
    want = {c: per_category if isinstance(per_category, int) else per_category.get(c, 0) for c in by_cat}
    return [
        by_cat[c][int(i * len(by_cat[c]) / min(want[c], len(by_cat[c])))]
        for c in sorted(by_cat)
        for i in range(min(want[c], len(by_cat[c])))
    ]


def training_subset(n: int) -> list[tuple[str, str]]:
    """About ``n`` training-split prompts in the held-out category mix (:data:`HELDOUT_MIX`), evenly
    spaced within each category: where hyperparameters may be tuned without touching held-out prompts."""
    by_cat: dict[str, list[str]] = {}
    for c, p in train_prompts():
        by_cat.setdefault(c, []).append(p)
    total = sum(HELDOUT_MIX.values())
    want = {c: max(1, round(n * k / total)) for c, k in HELDOUT_MIX.items()}
    out = []
    for c in sorted(want):
        items = by_cat[c]
        k = min(want[c], len(items))
        out += [(c, items[int(i * len(items) / k)]) for i in range(k)]
    return out
