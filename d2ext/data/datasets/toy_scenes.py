"""Synthetic toy scenes: the label maps are drawn first, the image is rendered from them.

A scene is two textured stuff regions (grass, water) split by a wavy boundary,
and 0..8 things (discs, blocks, thin bars) pasted on top, later ones occluding
earlier ones. Things get random colors, so only their shape tells their class.
Because the image is rendered from the final label maps, every label is exact.

Shapes: label maps (H, W); images (H, W, 3) uint8; H = W = ``IMAGE_SIZE``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import List, Tuple

import numpy as np

__all__ = [
    "TOY_CATEGORIES",
    "THING_CLASSES",
    "STUFF_CLASSES",
    "IMAGE_SIZE",
    "ToyScene",
    "make_scene",
]

IMAGE_SIZE = 256
# Dataset ids: things first (1..T), then stuff, as in COCO.
TOY_CATEGORIES = [
    {"id": 1, "name": "disc", "isthing": 1, "color": [220, 20, 60]},
    {"id": 2, "name": "block", "isthing": 1, "color": [0, 0, 142]},
    {"id": 3, "name": "bar", "isthing": 1, "color": [250, 170, 30]},
    {"id": 4, "name": "grass", "isthing": 0, "color": [107, 142, 35]},
    {"id": 5, "name": "water", "isthing": 0, "color": [70, 130, 180]},
]
THING_CLASSES = tuple(c["name"] for c in TOY_CATEGORIES if c["isthing"])
STUFF_CLASSES = tuple(c["name"] for c in TOY_CATEGORIES if not c["isthing"])
DISC, BLOCK, BAR = range(3)
GRASS, WATER = range(2)

MAX_INSTANCES = 8
MIN_VISIBLE_AREA = 20  # px; a thing occluded below this is dropped (and not drawn)
THING_EXTENT = (10.0, 120.0)  # px, diameter / side of discs and blocks (log-uniform)
BAR_LENGTH = (40.0, 180.0)  # px
BAR_WIDTH = (3.0, 7.0)  # px
SINGLE_STUFF_PROB = 0.1  # scenes whose background is a single stuff class
NOISE_STD = 6.0


@dataclass
class ToyScene:
    image: np.ndarray  # (H, W, 3) uint8
    stuff: np.ndarray  # (H, W) uint8: stuff index 0..S-1 of the background everywhere
    instances: np.ndarray  # (H, W) int32: 0 = no thing, k = k-th visible thing (1-based)
    instance_classes: np.ndarray  # (K,) int64: thing index 0..T-1 of thing k+1

    @property
    def num_instances(self) -> int:
        return len(self.instance_classes)

    def semantic(self) -> np.ndarray:
        """(H, W) uint8 contiguous ids over all classes: things 0..T-1, stuff T..T+S-1."""
        lut = np.concatenate([[0], self.instance_classes]).astype(np.int64)
        stuff = len(THING_CLASSES) + self.stuff.astype(np.int64)
        return np.where(self.instances > 0, lut[self.instances], stuff).astype(np.uint8)

    def stuff_separated(self) -> np.ndarray:
        """(H, W) uint8 Panoptic FPN labels: 0 = any thing, 1..S = stuff."""
        return np.where(self.instances > 0, 0, 1 + self.stuff.astype(np.int64)).astype(np.uint8)


@functools.lru_cache(maxsize=4)
def _grid(size: int) -> Tuple[np.ndarray, np.ndarray]:
    """(H, W) float32 y and x of pixel centers."""
    c = np.arange(size, dtype=np.float32) + 0.5
    yy, xx = np.meshgrid(c, c, indexing="ij")
    yy.flags.writeable = xx.flags.writeable = False
    return yy, xx


def _stuff_layout(rng: np.random.Generator, size: int) -> np.ndarray:
    """(H, W) uint8 stuff index: one class, or two split by a wavy line."""
    if rng.random() < SINGLE_STUFF_PROB:
        return np.full((size, size), rng.integers(2), dtype=np.uint8)
    yy, xx = _grid(size)
    theta = rng.uniform(0, 2 * np.pi)
    nx, ny = np.cos(theta), np.sin(theta)
    half = size / 2
    across = (xx - half) * nx + (yy - half) * ny  # signed distance along the normal
    along = -(xx - half) * ny + (yy - half) * nx
    boundary = rng.uniform(-0.4, 0.4) * size
    for k in range(1, 4):
        amplitude = rng.uniform(0, 14) / k
        boundary = boundary + amplitude * np.sin(
            2 * np.pi * k * rng.uniform(0.5, 1.5) * along / size + rng.uniform(0, 2 * np.pi)
        )
    return (across > boundary).astype(np.uint8)


def _stuff_appearance(
    rng: np.random.Generator, size: int
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per stuff class: base color (S, 3), tint (S, 3) and texture field (S, H, W).

    grass: noise stretched vertically into blades, each column shifted on its own;
    water: horizontal ripples bent by a slow sine. Pixel = base + texture * tint.
    """
    yy, xx = _grid(size)
    blade = int(rng.integers(5, 11))
    streaks = rng.standard_normal((size // blade + 2, size), dtype=np.float32)
    rows = (np.arange(size)[:, None] + rng.integers(0, blade, size)[None, :]) // blade
    blades = streaks[rows, np.arange(size)[None, :]]
    wavelength, bend = rng.uniform(7, 14), rng.uniform(30, 80)
    p0, p1 = rng.uniform(0, 2 * np.pi, 2)
    ripples = np.sin(2 * np.pi * (yy / wavelength + 0.25 * np.sin(2 * np.pi * xx / bend + p0)) + p1)
    base = np.array(
        [
            [rng.uniform(40, 110), rng.uniform(110, 190), rng.uniform(20, 80)],  # grass
            [rng.uniform(10, 70), rng.uniform(70, 150), rng.uniform(150, 230)],  # water
        ],
        dtype=np.float32,
    )
    tint = np.array([[20, 28, 14], [15, 24, 30]], dtype=np.float32)
    return base, tint, np.stack([blades, ripples.astype(np.float32)])


def _sample_thing(rng: np.random.Generator, size: int) -> Tuple[int, np.ndarray]:
    """(thing index, (H, W) bool mask) of one randomly placed, rotated shape."""
    yy, xx = _grid(size)
    cls = int(rng.integers(3))
    cx, cy = rng.uniform(0, size, 2)
    angle = rng.uniform(0, np.pi)
    c, s = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    u = (xx - cx) * c + (yy - cy) * s  # along the shape's main axis
    v = (yy - cy) * c - (xx - cx) * s
    if cls == BAR:
        half_len, half_wid = rng.uniform(*BAR_LENGTH) / 2, rng.uniform(*BAR_WIDTH) / 2
        return cls, (np.abs(u) <= half_len) & (np.abs(v) <= half_wid)
    extent = float(np.exp(rng.uniform(*np.log(THING_EXTENT))))
    aspect = 1.0 if rng.random() < 0.35 else rng.uniform(0.45, 1.0)  # circles / squares too
    if cls == DISC:
        a, b = extent / 2, extent * aspect / 2
        return cls, (u / a) ** 2 + (v / b) ** 2 <= 1.0
    return cls, (np.abs(u) <= extent / 2) & (np.abs(v) <= extent * aspect / 2)


def _composite(
    masks: List[np.ndarray], classes: List[int], size: int
) -> Tuple[np.ndarray, np.ndarray]:
    """Pastes masks in order; drops things whose visible area < MIN_VISIBLE_AREA.

    Dropping a thing only uncovers what lies under it, so the others' visible
    areas can only grow: one recomposition suffices (the loop is a safeguard).
    """
    keep = list(range(len(masks)))
    while True:
        instances = np.zeros((size, size), np.int32)
        for k, i in enumerate(keep, start=1):
            instances[masks[i]] = k
        area = np.bincount(instances.ravel(), minlength=len(keep) + 1)[1:]
        if np.all(area >= MIN_VISIBLE_AREA):
            return instances, np.asarray([classes[i] for i in keep], dtype=np.int64)
        keep = [i for i, a in zip(keep, area) if a >= MIN_VISIBLE_AREA]


def make_scene(rng: np.random.Generator, empty: bool = False, size: int = IMAGE_SIZE) -> ToyScene:
    """One scene; ``empty`` scenes have no things. Deterministic given ``rng``'s state."""
    stuff = _stuff_layout(rng, size)
    stuff_base, stuff_tint, stuff_texture = _stuff_appearance(rng, size)
    num = 0 if empty else int(rng.integers(1, MAX_INSTANCES + 1))
    sampled = [_sample_thing(rng, size) for _ in range(num)]
    instances, classes = _composite([m for _, m in sampled], [c for c, _ in sampled], size)

    # Region r: 0..S-1 = stuff, S + k - 1 = thing k. Pixel = base[r] + field * tint[r] + noise,
    # where the field is the stuff texture, or a linear shading ramp on things.
    yy, xx = _grid(size)
    k, num_stuff = len(classes), len(STUFF_CLASSES)
    base = np.concatenate([stuff_base, rng.uniform(0, 255, (k, 3)).astype(np.float32)])
    tint = np.concatenate([stuff_tint, np.full((k, 3), 40.0, np.float32)])
    slopes = np.concatenate([np.zeros((1, 2)), rng.uniform(-1.2, 1.2, (k, 2))]).astype(np.float32)
    thing = instances > 0
    region = np.where(thing, instances + (num_stuff - 1), stuff)
    ramp = (slopes[instances, 0] * (xx - size / 2) + slopes[instances, 1] * (yy - size / 2)) / size
    texture = np.where(stuff[None] == np.arange(num_stuff)[:, None, None], stuff_texture, 0).sum(0)
    field = np.where(thing, ramp, texture)
    image = base[region] + field[..., None] * tint[region]
    image += NOISE_STD * rng.standard_normal(image.shape, dtype=np.float32)
    image = np.clip(image + 0.5, 0, 255).astype(np.uint8)
    return ToyScene(image=image, stuff=stuff, instances=instances, instance_classes=classes)
