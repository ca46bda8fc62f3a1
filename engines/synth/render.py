"""The synthetic animal: its state, geometry, appearance, backgrounds and sub-pixel drawing."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

#: Landmark slots of the synthetic animal, in order. The i-th body part name of a generated
#: project labels the i-th slot.
CATALOGUE: tuple[str, ...] = (
    "snout",  # tip of the pointed snout (centre of the nose dot)
    "leftear",  # centre of the left ear disc (the darker ear)
    "rightear",  # centre of the right ear disc (the lighter ear)
    "tailbase",  # where the tail leaves the body outline
    "neck",  # body midline point the head pivots on
    "spine",  # body centre
    "tailmid",  # half way along the tail
    "tailend",  # tail tip
    "leftside",  # widest point of the body, left flank
    "rightside",  # widest point of the body, right flank
)
_EAR_SLOTS = (1, 2)

VIDEO_NAME = "synth1"
"""Name of the generated video and of its labelled-data folder."""
FPS = 30
"""Frame rate of the generated videos."""
SUB = 16
"""cv2 fixed-point factor: drawing coordinates (and so the ground truth) are rounded to
1/16 px."""
SHIFT = 4  # log2(SUB)
MIN_SIZE = 32
"""Smallest image side."""


@dataclass(frozen=True)
class AnimalState:
    """Pose of the synthetic animal in one frame.

    Attributes:
        x: Body centre x in pixels.
        y: Body centre y in pixels.
        heading: Direction the body faces, radians (0 = +x, pi/2 = +y, i.e. down).
        length: Body length in pixels (the body ellipse; head and tail come on top).
        width_ratio: Body width / length.
        bend: Body curvature; positive bends both ends towards the animal's left.
        head_turn: Head angle relative to the front of the body, radians.
        tail_curl: Total turn of the tail from base to tip, radians.
        tail_wave: Amplitude of an S-shaped tail wave, radians.
        tail_ratio: Tail length / body length.
        left_ear_visible: Whether the left ear is drawn (its keypoint is NaN otherwise).
        right_ear_visible: Whether the right ear is drawn.
    """

    x: float
    y: float
    heading: float
    length: float
    width_ratio: float = 0.5
    bend: float = 0.0
    head_turn: float = 0.0
    tail_curl: float = 0.0
    tail_wave: float = 0.0
    tail_ratio: float = 0.75
    left_ear_visible: bool = True
    right_ear_visible: bool = True


@dataclass(frozen=True)
class Appearance:
    """Colours (RGB, 0-255) of the synthetic animal's parts."""

    body: tuple[float, float, float]
    head: tuple[float, float, float]
    tail: tuple[float, float, float]
    left_ear: tuple[float, float, float]
    right_ear: tuple[float, float, float]
    nose: tuple[float, float, float]
    eyes: tuple[float, float, float]


# --------------------------------------------------------------------------------------------
# Geometry
# --------------------------------------------------------------------------------------------


def _circle(centre: np.ndarray, radius: float, n: int = 20) -> np.ndarray:
    t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    return centre + radius * np.stack([np.cos(t), np.sin(t)], axis=1)


def _ellipse(centre: np.ndarray, direction: np.ndarray, a: float, b: float, n: int = 40):
    t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    normal = np.array([-direction[1], direction[0]])
    return centre + np.outer(a * np.cos(t), direction) + np.outer(b * np.sin(t), normal)


class _Midline:
    """The bent midline of a pose's body, and the world coordinates around it."""

    def __init__(self, state: AnimalState) -> None:
        self.c = np.array([state.x, state.y])
        self.forward = np.array([math.cos(state.heading), math.sin(state.heading)])
        # The animal's left in a top view with y pointing down: forward rotated by -90 degrees.
        self.left = np.array([self.forward[1], -self.forward[0]])
        self.half = state.length / 2.0
        self.half_w = self.half * state.width_ratio
        self.k = state.bend

    def world(self, a, b):
        """World position of ``a`` pixels forward and ``b`` to the left of the centre."""
        return self.c + np.multiply.outer(a, self.forward) + np.multiply.outer(b, self.left)

    def at(self, s):
        """Midline point at ``s`` (-1 = tail end, 1 = front): a parabola through the centre,
        so bending keeps the centre fixed."""
        return self.world(self.half * s, self.k * self.half * np.square(s))

    def tangent(self, s):
        t = self.world(self.half, 2.0 * self.k * self.half * s) - self.c  # derivative direction
        return t / np.linalg.norm(t, axis=-1, keepdims=True)

    def normal(self, s):
        """Unit normal towards the animal's left."""
        t = self.tangent(s)
        return np.stack([t[..., 1], -t[..., 0]], axis=-1)


def _head(state: AnimalState, mid: _Midline) -> tuple[dict[str, list[np.ndarray]], list]:
    """Head ellipse and snout triangle turned about the neck point, ears, eyes and nose; and
    the points snout tip, left ear, right ear and neck."""
    neck = mid.at(0.85)
    front = mid.tangent(1.0)
    ang = math.atan2(front[1], front[0]) + state.head_turn
    dh = np.array([math.cos(ang), math.sin(ang)])
    ph = np.array([dh[1], -dh[0]])  # head's left
    ha = 0.24 * state.length
    hb = 0.17 * state.length
    hc = neck + dh * (0.55 * ha)
    head = _ellipse(hc, dh, ha, hb)
    tip = hc + dh * (1.45 * ha)
    base = hc + dh * (0.2 * ha)
    snout = np.stack([base + ph * (0.9 * hb), tip, base - ph * (0.9 * hb)])
    ear_r = max(1.5, 0.42 * hb)
    left_ear_c = hc - dh * (0.3 * ha) + ph * (0.95 * hb)
    right_ear_c = hc - dh * (0.3 * ha) - ph * (0.95 * hb)
    eye_r = max(0.8, 0.14 * hb)
    eyes = [
        _circle(hc + dh * (0.35 * ha) + ph * (0.5 * hb), eye_r, 12),
        _circle(hc + dh * (0.35 * ha) - ph * (0.5 * hb), eye_r, 12),
    ]
    nose_r = max(1.2, 0.12 * ha)
    shapes = {
        "head": [head, snout],
        "left_ear": [_circle(left_ear_c, ear_r)] if state.left_ear_visible else [],
        "right_ear": [_circle(right_ear_c, ear_r)] if state.right_ear_visible else [],
        "eyes": eyes,
        "nose": [_circle(tip, nose_r, 12)],
    }
    return shapes, [tip, left_ear_c, right_ear_c, neck]


def _tail(state: AnimalState, mid: _Midline) -> tuple[np.ndarray, list]:
    """The tail, a tapering ribbon from inside the body out through the tail base; and the
    points tail base, tail middle and tail end."""
    tail_base = mid.at(-1.0)
    back = -mid.tangent(-1.0)
    back_ang = math.atan2(back[1], back[0])
    n_seg = 16
    u = np.linspace(0.0, 1.0, n_seg + 1)
    angles = back_ang + state.tail_curl * u + state.tail_wave * np.sin(2.0 * np.pi * u)
    seg = state.tail_ratio * state.length / n_seg
    steps = np.stack([np.cos(angles[:-1]), np.sin(angles[:-1])], axis=1) * seg
    spine_pts = np.concatenate([tail_base[None], tail_base + np.cumsum(steps, axis=0)])
    inner = mid.at(-0.8)
    pts = np.concatenate([inner[None], spine_pts])
    w0 = max(1.6, 0.35 * mid.half_w)
    widths = np.concatenate([[w0], w0 + (1.0 - w0) * u])[:-1] / 2.0
    d = np.gradient(pts, axis=0)
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    nrm = np.stack([d[:, 1], -d[:, 0]], axis=1)
    offset = nrm[:-1] * widths[:, None]
    # Both edges of the ribbon, meeting in a point at the tail tip.
    tail = np.concatenate([pts[:-1] + offset, pts[-1:], (pts[:-1] - offset)[::-1]])
    return tail, [tail_base, spine_pts[n_seg // 2], spine_pts[-1]]


def animal_geometry(state: AnimalState) -> tuple[dict[str, list[np.ndarray]], np.ndarray]:
    """The drawn polygons of a pose by part (tail, body, head, ears, eyes, nose) and its
    :data:`CATALOGUE` keypoints (float pixels; NaN for a hidden ear)."""
    mid = _Midline(state)
    # Body outline: an ellipse wrapped around the bent midline.
    t = np.linspace(0.0, np.pi, 48)
    s = np.cos(t)
    hw = (mid.half_w * np.sin(t))[:, None]
    body = np.concatenate([mid.at(s) + mid.normal(s) * hw, (mid.at(s) - mid.normal(s) * hw)[::-1]])
    head_shapes, (tip, left_ear_c, right_ear_c, neck) = _head(state, mid)
    tail, (tail_base, tail_mid, tail_end) = _tail(state, mid)
    centre = mid.at(0.0)
    side = mid.normal(0.0) * mid.half_w
    keypoints = np.stack(
        [tip, left_ear_c, right_ear_c, tail_base, neck, centre, tail_mid, tail_end,
         centre + side, centre - side]
    )
    if not state.left_ear_visible:
        keypoints[1] = np.nan
    if not state.right_ear_visible:
        keypoints[2] = np.nan
    return {"tail": [tail], "body": [body], **head_shapes}, keypoints


def drawn_extent(state: AnimalState) -> np.ndarray:
    """All drawn points of a pose relative to its body centre."""
    shapes, _ = animal_geometry(replace(state, x=0.0, y=0.0))
    return np.concatenate([p for polys in shapes.values() for p in polys])


# Each CATALOGUE slot's neighbour towards the body centre ('spine'), so any subset of slots
# can be joined into a tree skeleton (see skeleton_for).
_PARENT = {
    "snout": "neck",
    "leftear": "snout",
    "rightear": "snout",
    "neck": "spine",
    "spine": None,
    "tailbase": "spine",
    "tailmid": "tailbase",
    "tailend": "tailmid",
    "leftside": "spine",
    "rightside": "spine",
}


def skeleton_for(bodyparts: Sequence[str]) -> list[tuple[str, str]]:
    """A tree skeleton over the given body parts of the synthetic animal.

    The i-th name stands for the i-th :data:`CATALOGUE` slot. Every part is joined to its
    nearest chosen ancestor on the animal's anatomy (snout - neck - spine - tailbase - tail,
    ears on the snout, flanks on the spine); parts without one join the chosen part closest to
    the body centre. The result connects all parts, as DeepLabCut requires of
    ``multianimalbodyparts`` for part-affinity fields.

    Args:
        bodyparts: Body part names (at most ``len(CATALOGUE)``).

    Returns:
        ``len(bodyparts) - 1`` (parent, child) name pairs.
    """
    names = list(bodyparts)
    slot_of = {CATALOGUE[i]: name for i, name in enumerate(names)}

    def ancestors(slot: str) -> list[str]:
        out = []
        parent = _PARENT[slot]
        while parent is not None:
            out.append(parent)
            parent = _PARENT[parent]
        return out

    chosen = list(slot_of)
    root = min(chosen, key=lambda slot: (len(ancestors(slot)), CATALOGUE.index(slot)))
    edges = []
    for slot in chosen:
        if slot == root:
            continue
        parent = next((a for a in ancestors(slot) if a in slot_of), root)
        edges.append((slot_of[parent], slot_of[slot]))
    return edges


# --------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------


def make_background(size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Draws a textured arena floor.

    Args:
        size: (width, height) in pixels.
        rng: Random generator.

    Returns:
        uint8 HxWx3 RGB image: low-frequency shading, soft blobs, a lighting gradient and
        fine grain around a random brightness and tint.
    """
    import cv2

    w, h = size
    level = rng.uniform(40.0, 215.0)
    field = np.full((h, w), level, dtype=np.float32)
    coarse = rng.normal(0.0, 1.0, size=(5, 5)).astype(np.float32)
    field += cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC) * rng.uniform(5.0, 12.0)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    dim = min(w, h)
    for _ in range(int(rng.integers(3, 8))):
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        sigma = rng.uniform(0.05, 0.2) * dim
        field += rng.uniform(-20.0, 20.0) * np.exp(
            -((xx - cx) ** 2 + (yy - cy) ** 2) / (2.0 * sigma**2)
        )
    ang = rng.uniform(0.0, 2.0 * np.pi)
    ramp = (xx - w / 2) * math.cos(ang) + (yy - h / 2) * math.sin(ang)
    field += ramp / (dim / 2) * rng.uniform(0.0, 10.0)
    grain = rng.normal(0.0, rng.uniform(2.0, 5.0), size=(h, w)).astype(np.float32)
    field += cv2.GaussianBlur(grain, (3, 3), 0)
    tint = rng.uniform(0.85, 1.15, size=3).astype(np.float32)
    return np.clip(field[..., None] * tint + 0.5, 0, 255).astype(np.uint8)


def _rgb(level: float, tint: np.ndarray) -> tuple[float, float, float]:
    r, g, b = np.clip(level * tint, 0.0, 255.0)
    return (float(r), float(g), float(b))


_NOSE_COLOURS = (
    (235.0, 150.0, 170.0),  # pink
    (70.0, 20.0, 35.0),  # dark red
    (225.0, 45.0, 60.0),  # red
    (10.0, 10.0, 10.0),  # black
    (245.0, 245.0, 245.0),  # white
)


def random_appearance(background: np.ndarray, rng: np.random.Generator) -> Appearance:
    """Picks animal colours that stand out from a background.

    The body luminance is at least 80 grey levels from the mean background luminance; the
    ears differ from the head by 45 levels or more and the left ear is always the darker one,
    so the two ears can be told apart by appearance as well as by position.

    Args:
        background: The uint8 RGB background the animal is drawn on.
        rng: Random generator.

    Returns:
        The colours.
    """
    bg = float(background.mean())
    low = (10.0, bg - 80.0)
    high = (bg + 80.0, 245.0)
    spans = [max(0.0, low[1] - low[0]), max(0.0, high[1] - high[0])]
    pick = rng.uniform(0.0, spans[0] + spans[1])
    body_level = low[0] + pick if pick < spans[0] else high[0] + (pick - spans[0])
    tint = rng.uniform(0.85, 1.15, size=3)
    # The head is a shade further from the background than the body, so its outline shows.
    away = -1.0 if body_level < bg else 1.0
    head_level = float(np.clip(body_level + away * rng.uniform(10.0, 25.0), 5.0, 250.0))
    if head_level < 128.0:
        left_level, right_level = head_level + 45.0, head_level + 90.0
        eyes = (230.0, 230.0, 235.0)
    else:
        left_level, right_level = head_level - 90.0, head_level - 45.0
        eyes = (15.0, 15.0, 20.0)
    head = _rgb(head_level, tint)
    # The nose dot marks the snout tip, so it must stand out from the head and the floor.
    bg_rgb = background.reshape(-1, 3).mean(axis=0)
    nose = max(
        _NOSE_COLOURS,
        key=lambda c: min(np.linalg.norm(np.subtract(c, head)), np.linalg.norm(c - bg_rgb)),
    )
    ear_tint = np.array([1.1, 0.92, 0.97])  # a little pinker than the fur
    return Appearance(
        body=_rgb(body_level, tint),
        head=head,
        tail=_rgb(body_level * 0.5 + head_level * 0.5, tint * ear_tint),
        left_ear=_rgb(left_level, ear_tint),
        right_ear=_rgb(right_level, ear_tint),
        nose=nose,
        eyes=eyes,
    )


def _fit(state: AnimalState, size: tuple[int, int], margin: float) -> AnimalState:
    """Shrinks a pose until its bounding box fits inside the image with a margin."""
    w, h = size
    for _ in range(50):
        pts = drawn_extent(state)
        span = pts.max(axis=0) - pts.min(axis=0)
        room = np.array([w - 1 - 2 * margin, h - 1 - 2 * margin])
        if np.all(span <= room):
            return state
        state = replace(state, length=state.length * 0.95 * float(np.min(room / span)))
    return state


def random_state(
    size: tuple[int, int],
    rng: np.random.Generator,
    missing_rate: float = 0.0,
    length: float | None = None,
) -> AnimalState:
    """Samples a random pose that lies fully inside the image.

    Args:
        size: (width, height) in pixels.
        rng: Random generator.
        missing_rate: Probability that each ear is hidden.
        length: Body length in pixels; default 25-40% of the smaller image side.

    Returns:
        The pose.
    """
    w, h = size
    dim = min(w, h)
    margin = max(2.0, 0.04 * dim)
    state = AnimalState(
        x=0.0,
        y=0.0,
        heading=rng.uniform(-np.pi, np.pi),
        length=length if length is not None else rng.uniform(0.25, 0.40) * dim,
        width_ratio=rng.uniform(0.42, 0.55),
        bend=rng.uniform(-0.3, 0.3),
        head_turn=rng.uniform(-0.45, 0.45),
        tail_curl=rng.uniform(-1.4, 1.4),
        tail_wave=rng.uniform(-0.5, 0.5),
        tail_ratio=rng.uniform(0.6, 0.85),
        left_ear_visible=bool(rng.random() >= missing_rate),
        right_ear_visible=bool(rng.random() >= missing_rate),
    )
    state = _fit(state, size, margin)
    pts = drawn_extent(state)
    lo = margin - pts.min(axis=0)
    hi = np.array([w - 1, h - 1]) - margin - pts.max(axis=0)
    x = rng.uniform(lo[0], max(lo[0], hi[0]))
    y = rng.uniform(lo[1], max(lo[1], hi[1]))
    return replace(state, x=float(x), y=float(y))


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


def fixed_point(points: np.ndarray) -> np.ndarray:
    """Drawing coordinates for cv2 (``shift=SHIFT``): pixels times :data:`SUB`, rounded."""
    return np.round(points * SUB).astype(np.int32)


def render_animal(
    size: tuple[int, int],
    state: AnimalState,
    rng: np.random.Generator,
    *,
    appearance: Appearance | None = None,
    background: np.ndarray | None = None,
    gain: float | None = None,
    noise: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Draws the animal in one pose.

    Args:
        size: (width, height) in pixels.
        state: The pose.
        rng: Random generator for whatever is not given, and for sensor noise.
        appearance: Animal colours; random (contrasting with the background) when None.
        background: uint8 HxWx3 RGB background; a random one when None.
        gain: Global brightness factor (lighting); random in [0.85, 1.15] when None.
        noise: Standard deviation of per-pixel sensor noise; random in [1.5, 4] when None.

    Returns:
        The uint8 HxWx3 RGB image and float64 keypoints len(CATALOGUE)x2 (x, y) on the
        1/16-pixel grid the shapes are drawn on; NaN for a hidden ear.
    """
    import cv2

    w, h = size
    if background is None:
        background = make_background(size, rng)
    if background.shape != (h, w, 3) or background.dtype != np.uint8:
        raise ValueError(
            f"background must be uint8 {h}x{w}x3, got {background.dtype} {background.shape}"
        )
    if appearance is None:
        appearance = random_appearance(background, rng)
    if gain is None:
        gain = rng.uniform(0.85, 1.15)
    if noise is None:
        noise = rng.uniform(1.5, 4.0)

    shapes, keypoints = animal_geometry(state)
    image = background.copy()
    colours = {
        "tail": appearance.tail,
        "body": appearance.body,
        "head": appearance.head,
        "left_ear": appearance.left_ear,
        "right_ear": appearance.right_ear,
        "eyes": appearance.eyes,
        "nose": appearance.nose,
    }
    # Painter's order: later parts cover earlier ones (ears on top of the head so that the
    # whole ear disc, and so its centre, is visible).
    for part in ("tail", "body", "head", "left_ear", "right_ear", "eyes", "nose"):
        for poly in shapes[part]:
            cv2.fillPoly(image, [fixed_point(poly)], colours[part], cv2.LINE_AA, SHIFT)

    out = image.astype(np.float32) * np.float32(gain)
    out += rng.normal(0.0, noise, size=out.shape).astype(np.float32)
    image = np.clip(out + 0.5, 0, 255).astype(np.uint8)
    # Ground truth on the same 1/16 px grid as the drawing, so it is exact to the drawing.
    keypoints = np.round(keypoints * SUB) / SUB
    return image, keypoints
