"""Synthetic toy scenes of a profile: label maps drawn first, the image rendered from them.

A scene is one or two textured stuff regions (two split by a wavy boundary)
and things pasted on top, later ones occluding earlier ones. Things get random
colours, so only their shape (and, with an outline, their rim) tells them apart.
Because the image is rendered from the final label maps, every label is exact.
What varies between datasets is the profile (``toy_profiles``); the default is
today's toy data, whose random draws and arithmetic this module must keep
exactly as they are (its files are pinned by sha256 in the tests).

Shapes: label maps (H, W); images (H, W, 3) uint8; H = W = ``profile.image_size``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from .toy_profiles import TOY, ThingClass, ToyProfile

__all__ = [
    "TOY_CATEGORIES",
    "THING_CLASSES",
    "STUFF_CLASSES",
    "IMAGE_SIZE",
    "ToyScene",
    "make_scene",
]

# Today's toy profile under the names this module always exported.
TOY_CATEGORIES = TOY.categories
THING_CLASSES = TOY.thing_classes
STUFF_CLASSES = TOY.stuff_classes
IMAGE_SIZE = TOY.image_size
MIN_VISIBLE_AREA = TOY.min_visible_area
DISC, BLOCK, BAR = range(3)
GRASS, WATER = range(2)

# texture -> (base RGB ranges, tint RGB): pixel = base + field * tint
_TEXTURE_COLORS = {
    "grass": (((40, 110), (110, 190), (20, 80)), (20, 28, 14)),
    "water": (((10, 70), (70, 150), (150, 230)), (15, 24, 30)),
    "cloud": (((95, 135), (95, 135), (100, 145)), (14, 14, 14)),
}
THING_TINT = 40.0  # amplitude of the linear shading ramp across a thing


@dataclass
class ToyScene:
    image: np.ndarray  # (H, W, 3) uint8
    stuff: np.ndarray  # (H, W) uint8: stuff index 0..S-1 of the background everywhere
    instances: np.ndarray  # (H, W) int32: 0 = no thing, k = k-th visible thing (1-based)
    instance_classes: np.ndarray  # (K,) int64: thing index 0..T-1 of thing k+1
    num_thing_classes: int  # T
    num_stuff_classes: int  # S
    num_sampled: int  # things drawn before the occluded ones were dropped (>= K)

    @property
    def num_instances(self) -> int:
        return len(self.instance_classes)

    def semantic(self) -> np.ndarray:
        """(H, W) uint8 contiguous ids over all classes: things 0..T-1, stuff T..T+S-1."""
        lut = np.concatenate([[0], self.instance_classes]).astype(np.int64)
        stuff = self.num_thing_classes + self.stuff.astype(np.int64)
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


def gaussian_blur(a: np.ndarray, sigma: float) -> np.ndarray:
    """``a`` (H, W, ...) float32 blurred along H and W, borders reflected.

    Separable: one shifted slice per kernel tap, never a loop over pixels.
    """
    radius = max(1, int(np.ceil(3 * sigma)))
    taps = np.arange(-radius, radius + 1, dtype=np.float32)
    kernel = np.exp(-0.5 * (taps / np.float32(sigma)) ** 2)
    kernel /= kernel.sum()
    for axis in (0, 1):
        n = a.shape[axis]
        pad = [(0, 0)] * a.ndim
        pad[axis] = (radius, radius)
        padded = np.pad(a, pad, mode="reflect")
        out = np.zeros_like(a)
        window = [slice(None)] * a.ndim
        for t, w in enumerate(kernel):
            window[axis] = slice(t, t + n)
            out += w * padded[tuple(window)]
        a = out
    return a


# ---------------------------------------------------------------------------- stuff
def _stuff_layout(
    rng: np.random.Generator, size: int, num_stuff: int, single_stuff_prob: float
) -> np.ndarray:
    """(H, W) uint8 stuff index: one class, or two split by a wavy line."""
    if num_stuff == 1:
        return np.zeros((size, size), dtype=np.uint8)
    if rng.random() < single_stuff_prob:
        return np.full((size, size), rng.integers(num_stuff), dtype=np.uint8)
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


def _texture_field(rng: np.random.Generator, texture: str, size: int) -> np.ndarray:
    """(H, W) float32 texture field of one stuff class, roughly in [-2, 2].

    grass: noise stretched vertically into blades, each column shifted on its own;
    water: horizontal ripples bent by a slow sine; cloud: smooth blurred noise.
    """
    if texture == "grass":
        blade = int(rng.integers(5, 11))
        streaks = rng.standard_normal((size // blade + 2, size), dtype=np.float32)
        rows = (np.arange(size)[:, None] + rng.integers(0, blade, size)[None, :]) // blade
        return streaks[rows, np.arange(size)[None, :]]
    if texture == "water":
        yy, xx = _grid(size)
        wavelength, bend = rng.uniform(7, 14), rng.uniform(30, 80)
        p0, p1 = rng.uniform(0, 2 * np.pi, 2)
        ripples = np.sin(
            2 * np.pi * (yy / wavelength + 0.25 * np.sin(2 * np.pi * xx / bend + p0)) + p1
        )
        return ripples.astype(np.float32)
    cloud = gaussian_blur(rng.standard_normal((size, size), dtype=np.float32), size / 16)
    return cloud / max(float(cloud.std()), 1e-6)


def _stuff_appearance(
    rng: np.random.Generator, textures: Sequence[str], size: int
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per stuff class: base color (S, 3), tint (S, 3) and texture field (S, H, W).

    Every field is drawn before any base colour: the order today's toy data was made in.
    """
    fields = [_texture_field(rng, t, size) for t in textures]
    base = np.array(
        [[rng.uniform(lo, hi) for lo, hi in _TEXTURE_COLORS[t][0]] for t in textures],
        dtype=np.float32,
    )
    tint = np.array([_TEXTURE_COLORS[t][1] for t in textures], dtype=np.float32)
    return base, tint, np.stack(fields)


# ---------------------------------------------------------------------------- things
class Capsule(NamedTuple):
    cx: float
    cy: float
    angle: float  # of the main axis, radians
    core: float  # half length of the segment the rod is drawn around, px
    radius: float  # px


def _sample_capsule(
    rng: np.random.Generator, thing: ThingClass, size: int, previous: List[Capsule], p: float
) -> Capsule:
    """A capsule placed anywhere, or (with probability ``p``) lying along an earlier one.

    A neighbour is nearly parallel and touches its side or overlaps it by a little:
    side-by-side rods with almost the same box, the crowded case of real cell images.
    """
    if previous and rng.random() < p:
        other = previous[int(rng.integers(len(previous)))]
        angle = other.angle + rng.normal(0.0, 0.15)
        half_len, radius = rng.uniform(*thing.size) / 2, rng.uniform(*thing.width) / 2
        side = 1.0 if rng.random() < 0.5 else -1.0
        gap = side * (other.radius + radius) * rng.uniform(0.9, 1.05)
        shift = rng.uniform(-0.7, 0.7) * other.core
        c, s = np.cos(other.angle), np.sin(other.angle)
        cx, cy = other.cx + shift * c - gap * s, other.cy + shift * s + gap * c
    else:
        cx, cy = rng.uniform(0, size, 2)
        angle = rng.uniform(0, np.pi)
        half_len, radius = rng.uniform(*thing.size) / 2, rng.uniform(*thing.width) / 2
    return Capsule(float(cx), float(cy), float(angle), max(half_len - radius, 0.0), radius)


def _rasterize_capsule(cap: Capsule, size: int) -> Tuple[np.ndarray, np.ndarray]:
    """(H, W) bool mask and (H, W) float32 depth (px inside the rim; -inf away) of a capsule.

    Computed on the capsule's bounding box only: a rod covers a few % of the image.
    """
    c, s = np.cos(cap.angle), np.sin(cap.angle)
    ex, ey = abs(c) * cap.core + cap.radius, abs(s) * cap.core + cap.radius
    x0, x1 = max(0, int(np.floor(cap.cx - ex))), min(size, int(np.ceil(cap.cx + ex)) + 1)
    y0, y1 = max(0, int(np.floor(cap.cy - ey))), min(size, int(np.ceil(cap.cy + ey)) + 1)
    depth = np.full((size, size), -np.inf, np.float32)
    if x0 < x1 and y0 < y1:
        yy, xx = _grid(size)
        dx = xx[y0:y1, x0:x1] - np.float32(cap.cx)
        dy = yy[y0:y1, x0:x1] - np.float32(cap.cy)
        u = dx * np.float32(c) + dy * np.float32(s)
        v = dy * np.float32(c) - dx * np.float32(s)
        du = np.maximum(np.abs(u) - np.float32(cap.core), 0)
        depth[y0:y1, x0:x1] = np.float32(cap.radius) - np.sqrt(du * du + v * v)
    return depth >= 0, depth


def _sample_thing(
    rng: np.random.Generator, profile: ToyProfile, size: int, capsules: List[Capsule]
) -> Tuple[int, np.ndarray, Optional[np.ndarray]]:
    """(thing index, (H, W) bool mask, (H, W) depth or None) of one randomly placed shape.

    ``capsules``: those placed so far in the scene; a new capsule is appended.
    """
    cls = int(rng.integers(len(profile.things)))
    thing = profile.things[cls]
    if thing.shape == "capsule":
        capsules.append(_sample_capsule(rng, thing, size, capsules, profile.neighbor_prob))
        return (cls, *_rasterize_capsule(capsules[-1], size))
    cx, cy = rng.uniform(0, size, 2)
    angle = rng.uniform(0, np.pi)
    yy, xx = _grid(size)
    c, s = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    u = (xx - cx) * c + (yy - cy) * s  # along the shape's main axis
    v = (yy - cy) * c - (xx - cx) * s
    if thing.shape == "bar":
        half_len, half_wid = rng.uniform(*thing.size) / 2, rng.uniform(*thing.width) / 2
        return cls, (np.abs(u) <= half_len) & (np.abs(v) <= half_wid), None
    extent = float(np.exp(rng.uniform(*np.log(thing.size))))
    aspect = 1.0 if rng.random() < 0.35 else rng.uniform(0.45, 1.0)  # circles / squares too
    if thing.shape == "disc":
        a, b = extent / 2, extent * aspect / 2
        return cls, (u / a) ** 2 + (v / b) ** 2 <= 1.0, None
    return cls, (np.abs(u) <= extent / 2) & (np.abs(v) <= extent * aspect / 2), None


def _composite(
    masks: List[np.ndarray], classes: List[int], size: int, min_area: int
) -> Tuple[np.ndarray, np.ndarray, List[int]]:
    """Pastes masks in order; drops things whose visible area < ``min_area``.

    Dropping a thing only uncovers what lies under it, so the others' visible
    areas can only grow: one recomposition suffices (the loop is a safeguard).
    Returns the instance map, the kept things' classes and their sample indices.
    """
    keep = list(range(len(masks)))
    while True:
        instances = np.zeros((size, size), np.int32)
        for k, i in enumerate(keep, start=1):
            instances[masks[i]] = k
        area = np.bincount(instances.ravel(), minlength=len(keep) + 1)[1:]
        if np.all(area >= min_area):
            return instances, np.asarray([classes[i] for i in keep], dtype=np.int64), keep
        keep = [i for i, a in zip(keep, area) if a >= min_area]


def make_scene(
    rng: np.random.Generator,
    empty: bool = False,
    size: Optional[int] = None,
    profile: ToyProfile = TOY,
) -> ToyScene:
    """One scene of ``profile``; ``empty`` scenes have no things. Deterministic given ``rng``.

    ``size`` overrides the profile's image size (shape sizes stay in pixels).
    Rendering: stuff texture / thing shading, then the dark rims, the blur, the noise.
    """
    size = profile.image_size if size is None else size
    num_stuff = len(profile.stuff)
    stuff = _stuff_layout(rng, size, num_stuff, profile.single_stuff_prob)
    stuff_base, stuff_tint, stuff_texture = _stuff_appearance(
        rng, [s.texture for s in profile.stuff], size
    )
    lo, hi = profile.num_things
    num = 0 if empty else int(rng.integers(lo, hi + 1))
    capsules: List[Capsule] = []
    sampled = [_sample_thing(rng, profile, size, capsules) for _ in range(num)]
    instances, classes, kept = _composite(
        [m for _, m, _ in sampled], [c for c, _, _ in sampled], size, profile.min_visible_area
    )

    # Region r: 0..S-1 = stuff, S + k - 1 = thing k. Pixel = base[r] + field * tint[r] + noise,
    # where the field is the stuff texture, or a linear shading ramp on things.
    yy, xx = _grid(size)
    k = len(classes)
    thing_base = rng.uniform(*profile.thing_color, (k, 3)).astype(np.float32)
    base = np.concatenate([stuff_base, thing_base])
    tint = np.concatenate([stuff_tint, np.full((k, 3), THING_TINT, np.float32)])
    slopes = np.concatenate([np.zeros((1, 2)), rng.uniform(-1.2, 1.2, (k, 2))]).astype(np.float32)
    thing = instances > 0
    region = np.where(thing, instances + (num_stuff - 1), stuff)
    # np.take: the same gather as fancy indexing, several times faster.
    slope_x, slope_y = np.take(slopes[:, 0], instances), np.take(slopes[:, 1], instances)
    ramp = (slope_x * (xx - size / 2) + slope_y * (yy - size / 2)) / size
    texture = np.where(stuff[None] == np.arange(num_stuff)[:, None, None], stuff_texture, 0).sum(0)
    field = np.where(thing, ramp, texture)
    image = np.take(base, region, axis=0) + field[..., None] * np.take(tint, region, axis=0)
    if profile.outline_width > 0:
        # The rim of the visible thing: its own depth, so a rod in front keeps its whole rim
        # and the one behind loses the part it hides (as in a real occlusion).
        depth = np.full((size, size), np.inf, np.float32)
        for i in kept:
            depth[sampled[i][1]] = sampled[i][2][sampled[i][1]]
        image[thing & (depth < profile.outline_width)] = rng.uniform(*profile.outline_gray)
    if profile.blur_sigma > 0:
        image = gaussian_blur(image, profile.blur_sigma)
    image += profile.noise_std * rng.standard_normal(image.shape, dtype=np.float32)
    image = np.clip(image + 0.5, 0, 255).astype(np.uint8)
    return ToyScene(
        image=image,
        stuff=stuff,
        instances=instances,
        instance_classes=classes,
        num_thing_classes=len(profile.things),
        num_stuff_classes=num_stuff,
        num_sampled=num,
    )
