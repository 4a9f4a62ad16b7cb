"""Toyworld scenes: flat-coloured circles, squares and up-pointing triangles on a plain background.

A :class:`Scene` is a tuple of :class:`Obj`; :func:`render` rasterises it to a float image
``[3, size, size]`` in [0, 1], antialiased by supersampling. Coordinates are fractions of the image:
``x`` grows to the right, ``y`` grows downwards, ``(0, 0)`` is the top-left corner. An object's
``(x, y)`` is the centre of its square bounding box of side ``size``; its area centroid
(:attr:`Obj.centroid`) is the same point except for triangles, whose centroid sits ``size / 6``
lower. Spatial relations are judged on centroids (see ``grammar.RELATION_MARGIN``).

The palette was chosen so that every colour is far from the background and from every other colour
*along the line that joins it to the background* (antialiased and blurred edges are mixtures of an
object colour and the background), which is what the pixel evaluator relies on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: default render size in pixels (square images)
IMAGE_SIZE: int = 32

#: the six object colours, RGB in [0, 1]; saturated and mutually well separated
COLORS: dict[str, tuple[float, float, float]] = {
    "red": (0.86, 0.08, 0.08),
    "green": (0.08, 0.62, 0.16),
    "blue": (0.10, 0.22, 0.92),
    "yellow": (0.96, 0.88, 0.06),
    "purple": (0.56, 0.10, 0.76),
    "orange": (1.00, 0.50, 0.00),
}

#: the three shapes; triangles are isosceles, base = height = ``size``, apex up
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")

#: the one plain background colour (light gray)
BACKGROUND: tuple[float, float, float] = (0.85, 0.85, 0.85)

#: range of object sizes (side / diameter as a fraction of the image width) used by the samplers
SIZE_RANGE: tuple[float, float] = (0.22, 0.34)
#: minimum gap between the bounding boxes of two sampled objects (fraction of the image)
MIN_GAP: float = 0.06
#: minimum distance between a sampled object's bounding box and the image border
BORDER: float = 0.02


@dataclass(frozen=True)
class Obj:
    """One flat-coloured object. Coordinates are fractions of the image (x right, y down)."""

    color: str  # a key of COLORS
    shape: str  # one of SHAPES
    x: float  # bounding-box centre, horizontal, in [0, 1]
    y: float  # bounding-box centre, vertical (down), in [0, 1]
    size: float  # side / diameter / triangle base and height, fraction of the image width

    def __post_init__(self) -> None:
        if self.color not in COLORS:
            raise ValueError(f"unknown colour {self.color!r}; use one of {sorted(COLORS)}")
        if self.shape not in SHAPES:
            raise ValueError(f"unknown shape {self.shape!r}; use one of {list(SHAPES)}")
        if not 0.0 < self.size <= 1.0:
            raise ValueError(f"object size {self.size} is out of range; use a size in (0, 1]")
        h = self.size / 2
        eps = 1e-9
        if not (self.x - h >= -eps and self.x + h <= 1 + eps and self.y - h >= -eps and self.y + h <= 1 + eps):
            raise ValueError(
                f"{self.color} {self.shape} at ({self.x:.3f}, {self.y:.3f}) with size {self.size:.3f} "
                "sticks out of the image; keep x and y within [size/2, 1 - size/2]"
            )

    @property
    def centroid(self) -> tuple[float, float]:
        """Area centroid (x, y); a triangle's lies size/6 below its bounding-box centre."""
        if self.shape == "triangle":
            return (self.x, self.y + self.size / 6)
        return (self.x, self.y)

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        """Bounding box (x0, y0, x1, y1)."""
        h = self.size / 2
        return (self.x - h, self.y - h, self.x + h, self.y + h)


@dataclass(frozen=True)
class Scene:
    """A set of objects on the background; later objects are drawn on top of earlier ones."""

    objects: tuple[Obj, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.objects, tuple) or not all(isinstance(o, Obj) for o in self.objects):
            raise ValueError("Scene.objects must be a tuple of Obj; wrap a list with tuple(...)")


def shape_mask(shape: str, cx: float, cy: float, size: float, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Boolean coverage of sample points by one shape; any units, as long as they agree.

    ``(cx, cy)`` is the bounding-box centre, ``xs`` [1, N] and ``ys`` [M, 1] the sample coordinates.
    """
    h = size / 2
    if shape == "circle":
        return (xs - cx) ** 2 + (ys - cy) ** 2 <= h * h
    if shape == "square":
        return (np.abs(xs - cx) <= h) & (np.abs(ys - cy) <= h)
    # triangle, apex at (cx, cy - h), base from (cx - h, cy + h) to (cx + h, cy + h):
    # at depth d below the apex the half-width is d / 2.
    depth = ys - (cy - h)
    return (depth >= 0) & (depth <= size) & (np.abs(xs - cx) <= depth / 2)


def render(scene: Scene, size: int = IMAGE_SIZE, supersample: int = 4) -> np.ndarray:
    """Rasterise ``scene`` to a float32 image ``[3, size, size]`` in [0, 1].

    Each pixel is the mean of ``supersample**2`` point samples on a regular sub-grid, so edges are
    antialiased (a mixture of the object colour and the background). Deterministic.
    """
    if not isinstance(scene, Scene):
        raise ValueError(f"render expects a Scene, got {type(scene).__name__}")
    if int(size) != size or size < 1:
        raise ValueError(f"size must be a positive integer number of pixels, got {size!r}")
    if int(supersample) != supersample or supersample < 1:
        raise ValueError(f"supersample must be a positive integer, got {supersample!r}")
    n = int(size) * int(supersample)
    coords = (np.arange(n, dtype=np.float64) + 0.5) / n
    xs, ys = coords[None, :], coords[:, None]
    hi = np.empty((3, n, n), dtype=np.float64)
    hi[:] = np.asarray(BACKGROUND, dtype=np.float64)[:, None, None]
    for obj in scene.objects:
        # only touch the object's bounding box, padded by one sample
        x0, y0, x1, y1 = obj.bbox
        c0, c1 = max(int(np.floor(x0 * n)) - 1, 0), min(int(np.ceil(x1 * n)) + 1, n)
        r0, r1 = max(int(np.floor(y0 * n)) - 1, 0), min(int(np.ceil(y1 * n)) + 1, n)
        mask = shape_mask(obj.shape, obj.x, obj.y, obj.size, xs[:, c0:c1], ys[r0:r1, :])
        region = hi[:, r0:r1, c0:c1]
        for ch, value in enumerate(COLORS[obj.color]):
            region[ch][mask] = value
    s = int(supersample)
    img = hi.reshape(3, int(size), s, int(size), s).mean(axis=(2, 4))
    return np.clip(img, 0.0, 1.0).astype(np.float32)
