"""Synthetic DeepLabCut projects with exact ground truth, for tests and demos.

:func:`generate_project` writes a complete single-animal DeepLabCut project: ``config.yaml``,
labelled PNG frames with ``CollectedData_<scorer>.h5``/``.csv``, a short H.264 video and the
video's ground-truth keypoints. The animal is a top view of a mouse-like shape (bent body,
head with a pointed snout and a nose, two ears, eyes, a tapering tail) drawn with anti-aliased
sub-pixel polygons on a textured background, so every landmark is a visible image feature
whose position is known to 1/16 pixel. :func:`generate_multianimal_project` writes the
multi-animal counterpart: several such animals that cross and cover one another, with every
individual's identity and per-part visibility in the video's ground truth.

Coordinates follow DeepLabCut labels: (0, 0) is the centre of the top-left pixel, x to the
right, y down.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from posed.errors import ConfigError, DataError

__all__ = [
    "CATALOGUE",
    "AnimalState",
    "Appearance",
    "make_background",
    "random_appearance",
    "random_state",
    "render_animal",
    "generate_project",
    "generate_multianimal_project",
    "multianimal_video_truth",
    "read_multianimal_truth",
    "skeleton_for",
    "MultiAnimalTruth",
]

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
_FPS = 30
_DATE = "Jan1"  # fixed, so that a given seed always writes the same project
_SUB = 16  # cv2 fixed-point factor: drawing coordinates are rounded to 1/16 px
_SHIFT = 4  # log2(_SUB)
_MIN_SIZE = 32


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


def _geometry(state: AnimalState) -> tuple[dict[str, list[np.ndarray]], np.ndarray]:
    """Computes the drawn polygons and the CATALOGUE keypoints of a pose (float pixels)."""
    c = np.array([state.x, state.y])
    forward = np.array([math.cos(state.heading), math.sin(state.heading)])
    # The animal's left in a top view with y pointing down: forward rotated by -90 degrees.
    left = np.array([forward[1], -forward[0]])

    def world(a, b):
        return c + np.multiply.outer(a, forward) + np.multiply.outer(b, left)

    half = state.length / 2.0
    half_w = half * state.width_ratio
    k = state.bend

    # Body midline: a parabola through the centre, so bending keeps the centre fixed.
    def midline(s):
        return world(half * s, k * half * np.square(s))

    def tangent(s):
        t = world(half, 2.0 * k * half * s) - c  # derivative direction in world coordinates
        return t / np.linalg.norm(t, axis=-1, keepdims=True)

    def normal(s):  # towards the animal's left
        t = tangent(s)
        return np.stack([t[..., 1], -t[..., 0]], axis=-1)

    # Body outline: an ellipse wrapped around the bent midline.
    t = np.linspace(0.0, np.pi, 48)
    s = np.cos(t)
    hw = (half_w * np.sin(t))[:, None]
    body = np.concatenate([midline(s) + normal(s) * hw, (midline(s) - normal(s) * hw)[::-1]])

    # Head: ellipse + snout triangle, turned about the neck point.
    neck_s = 0.85
    neck = midline(neck_s)
    front = tangent(1.0)
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

    # Tail: a tapering ribbon from inside the body out through the tail base.
    tail_base = midline(-1.0)
    back = -tangent(-1.0)
    back_ang = math.atan2(back[1], back[0])
    n_seg = 16
    u = np.linspace(0.0, 1.0, n_seg + 1)
    angles = back_ang + state.tail_curl * u + state.tail_wave * np.sin(2.0 * np.pi * u)
    seg = state.tail_ratio * state.length / n_seg
    steps = np.stack([np.cos(angles[:-1]), np.sin(angles[:-1])], axis=1) * seg
    spine_pts = np.concatenate([tail_base[None], tail_base + np.cumsum(steps, axis=0)])
    inner = midline(-0.8)
    pts = np.concatenate([inner[None], spine_pts])
    w0 = max(1.6, 0.35 * half_w)
    widths = np.concatenate([[w0], w0 + (1.0 - w0) * u])[:-1] / 2.0
    d = np.gradient(pts, axis=0)
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    nrm = np.stack([d[:, 1], -d[:, 0]], axis=1)
    offset = nrm[:-1] * widths[:, None]
    # Both edges of the ribbon, meeting in a point at the tail tip.
    tail = np.concatenate([pts[:-1] + offset, pts[-1:], (pts[:-1] - offset)[::-1]])

    keypoints = np.stack(
        [
            tip,
            left_ear_c,
            right_ear_c,
            tail_base,
            neck,
            midline(0.0),
            spine_pts[n_seg // 2],
            spine_pts[-1],
            midline(0.0) + normal(0.0) * half_w,
            midline(0.0) - normal(0.0) * half_w,
        ]
    )
    shapes = {
        "tail": [tail],
        "body": [body],
        "head": [head, snout],
        "left_ear": [_circle(left_ear_c, ear_r)] if state.left_ear_visible else [],
        "right_ear": [_circle(right_ear_c, ear_r)] if state.right_ear_visible else [],
        "eyes": eyes,
        "nose": [_circle(tip, nose_r, 12)],
    }
    if not state.left_ear_visible:
        keypoints[1] = np.nan
    if not state.right_ear_visible:
        keypoints[2] = np.nan
    return shapes, keypoints


def _extent(state: AnimalState) -> np.ndarray:
    """All drawn points of a pose relative to its body centre."""
    shapes, _ = _geometry(replace(state, x=0.0, y=0.0))
    return np.concatenate([p for polys in shapes.values() for p in polys])


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
        pts = _extent(state)
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
    pts = _extent(state)
    lo = margin - pts.min(axis=0)
    hi = np.array([w - 1, h - 1]) - margin - pts.max(axis=0)
    x = rng.uniform(lo[0], max(lo[0], hi[0]))
    y = rng.uniform(lo[1], max(lo[1], hi[1]))
    return replace(state, x=float(x), y=float(y))


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


def _fixed(points: np.ndarray) -> np.ndarray:
    return np.round(points * _SUB).astype(np.int32)


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

    shapes, keypoints = _geometry(state)
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
            cv2.fillPoly(image, [_fixed(poly)], colours[part], cv2.LINE_AA, _SHIFT)

    out = image.astype(np.float32) * np.float32(gain)
    out += rng.normal(0.0, noise, size=out.shape).astype(np.float32)
    image = np.clip(out + 0.5, 0, 255).astype(np.uint8)
    # Ground truth on the same 1/16 px grid as the drawing, so it is exact to the drawing.
    keypoints = np.round(keypoints * _SUB) / _SUB
    return image, keypoints


# --------------------------------------------------------------------------------------------
# Video trajectory
# --------------------------------------------------------------------------------------------


def _video_states(size: tuple[int, int], n: int, rng: np.random.Generator) -> list[AnimalState]:
    """A smooth walk along a wobbly loop: heading follows the direction of motion and the
    body bends into turns."""
    w, h = size
    dim = min(w, h)
    margin = max(2.0, 0.04 * dim)
    fps = float(_FPS)
    t = np.arange(n + 1) / fps  # one extra sample for the last finite difference
    period = rng.uniform(3.0, 6.0)
    omega = 2.0 * np.pi / period * rng.choice([-1.0, 1.0])
    phase0 = rng.uniform(0.0, 2.0 * np.pi)
    wob_f = rng.uniform(2.0, 3.0) * abs(omega)
    wob_p = rng.uniform(0.0, 2.0 * np.pi, size=2)
    ratio = rng.uniform(0.6, 1.0)  # y radius / x radius of the loop

    def unit_path(tt):
        phi = phase0 + omega * tt
        wob = 0.08 * np.stack([np.sin(wob_f * tt + wob_p[0]), np.cos(wob_f * tt + wob_p[1])])
        return np.stack([np.cos(phi), ratio * np.sin(phi)]) + wob

    unit = unit_path(t)
    vel = unit_path(t + 1e-3) - unit
    heading = np.unwrap(np.arctan2(vel[1], vel[0]))
    turn = np.gradient(heading) * fps  # rad/s; positive turns towards the animal's right

    shape = dict(
        width_ratio=rng.uniform(0.45, 0.52),
        tail_ratio=rng.uniform(0.65, 0.8),
    )
    curl0 = rng.uniform(-0.6, 0.6)
    tail_f = rng.uniform(1.5, 3.0)
    head_f = rng.uniform(0.8, 1.6)
    length = rng.uniform(0.28, 0.34) * dim

    def states_for(length_px: float) -> list[AnimalState]:
        out = []
        for i in range(n):
            out.append(
                AnimalState(
                    x=0.0,
                    y=0.0,
                    heading=float(heading[i]),
                    length=length_px,
                    bend=float(np.clip(-0.25 * turn[i], -0.3, 0.3)),
                    head_turn=float(
                        np.clip(0.2 * turn[i], -0.4, 0.4)
                        + 0.2 * math.sin(head_f * 2 * np.pi * t[i])
                    ),
                    tail_curl=float(curl0 + 0.5 * math.sin(tail_f * 2 * np.pi * t[i])),
                    tail_wave=float(0.3 * math.sin(tail_f * np.pi * t[i] + 1.0)),
                    **shape,
                )
            )
        return out

    # The animal may point anywhere along the loop, so keep the centre one radius (the
    # farthest drawn point over the whole clip) away from the edges.
    for _ in range(60):
        states = states_for(length)
        radius = max(float(np.linalg.norm(_extent(s), axis=1).max()) for s in states)
        span = np.array([w - 1, h - 1]) - 2.0 * (margin + radius)
        if np.all(span >= 0.2 * dim):
            break
        length *= 0.93
    span = np.maximum(span, 0.0)
    centre = np.array([(w - 1) / 2.0, (h - 1) / 2.0])
    # unit path stays within +-(1.08, ratio + 0.08) of the origin.
    scale = np.array([span[0] / 2.0 / 1.08, span[1] / 2.0 / (ratio + 0.08)])
    scale[:] = scale.min()  # the same scale on both axes keeps heading == direction of motion
    return [
        replace(
            s,
            x=float(centre[0] + scale[0] * unit[0, i]),
            y=float(centre[1] + scale[1] * unit[1, i]),
        )
        for i, s in enumerate(states)
    ]


# --------------------------------------------------------------------------------------------
# Project writer
# --------------------------------------------------------------------------------------------


def _check_args(frames, size, bodyparts, seed, video_frames, task, scorer, missing_rate):
    def is_int(v):
        return isinstance(v, int | np.integer) and not isinstance(v, bool)

    if not is_int(frames) or frames < 1:
        raise ConfigError(f"synth: frames must be an integer >= 1, got {frames!r}")
    if not is_int(video_frames) or video_frames < 0:
        raise ConfigError(f"synth: video_frames must be an integer >= 0, got {video_frames!r}")
    if (
        not isinstance(size, Sequence)
        or len(size) != 2
        or not all(is_int(v) and v >= _MIN_SIZE for v in size)
    ):
        raise ConfigError(
            f"synth: size must be (width, height) integers >= {_MIN_SIZE}, got {size!r}"
        )
    if video_frames and (size[0] % 2 or size[1] % 2):
        raise ConfigError(
            f"synth: size {size[0]}x{size[1]} must have even sides for the H.264 yuv420p video "
            "(or pass video_frames=0)"
        )
    if not is_int(seed) or seed < 0:
        raise ConfigError(f"synth: seed must be an integer >= 0, got {seed!r}")
    for key, value in (("task", task), ("scorer", scorer)):
        if not isinstance(value, str) or not value.strip() or any(c in value for c in "/\\:"):
            raise ConfigError(
                f"synth: {key} must be a non-empty name without / \\ or :, got {value!r}"
            )
    if not isinstance(missing_rate, int | float) or not 0.0 <= missing_rate <= 1.0:
        raise ConfigError(f"synth: missing_rate must be between 0 and 1, got {missing_rate!r}")
    if isinstance(bodyparts, str) or not isinstance(bodyparts, Sequence) or not bodyparts:
        raise ConfigError(f"synth: bodyparts must be a non-empty list of names, got {bodyparts!r}")
    names = list(bodyparts)
    if len(names) > len(CATALOGUE):
        raise ConfigError(
            f"synth: {len(names)} bodyparts requested, at most {len(CATALOGUE)} "
            f"({', '.join(CATALOGUE)})"
        )
    for name in names:
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"synth: bodyparts entries must be non-empty strings, got {name!r}")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"synth: bodyparts lists {', '.join(dupes)} more than once")
    return tuple(names)


def _config_text(
    root: Path,
    video: Path | None,
    size,
    bodyparts,
    task: str,
    scorer: str,
    individuals: Sequence[str] | None = None,
) -> str:
    import yaml

    w, h = size
    skeleton = [["snout", "tailbase"]] if {"snout", "tailbase"} <= set(bodyparts) else []
    parts: dict = {"bodyparts": list(bodyparts)}
    training: dict = {"default_augmenter": "default"}
    if individuals:
        # DeepLabCut's multi-animal keys; 'bodyparts' then only says "see the lists above".
        parts = {
            "individuals": list(individuals),
            "uniquebodyparts": [],
            "multianimalbodyparts": list(bodyparts),
            "bodyparts": "MULTI!",
        }
        skeleton = [list(edge) for edge in skeleton_for(bodyparts)]
        training = {"default_augmenter": "multi-animal-imgaug", "default_track_method": "ellipse"}

    def block(comment: str, mapping: dict) -> str:
        text = yaml.safe_dump(mapping, sort_keys=False, default_flow_style=False)
        return f"# {comment}\n{text}\n"

    return "".join(
        [
            block(
                "Project definitions (do not edit)",
                {
                    "Task": task,
                    "scorer": scorer,
                    "date": _DATE,
                    "multianimalproject": bool(individuals),
                    "identity": False if individuals else None,
                },
            ),
            block("Project path (change when moving around)", {"project_path": str(root)}),
            block("Default DeepLabCut engine to use for shuffle creation", {"engine": "pytorch"}),
            block(
                "Annotation data set configuration (and individual video cropping parameters)",
                {
                    "video_sets": {str(video): {"crop": f"0, {w}, 0, {h}"}} if video else {},
                    **parts,
                },
            ),
            block(
                "Fraction of video to start/stop when extracting frames for labeling/refinement",
                {"start": 0, "stop": 1, "numframes2pick": 20},
            ),
            block(
                "Plotting configuration",
                {
                    "skeleton": skeleton,
                    "skeleton_color": "black",
                    "pcutoff": 0.6,
                    "dotsize": 4,
                    "alphavalue": 0.7,
                    "colormap": "rainbow",
                },
            ),
            block(
                "Training, evaluation and analysis configuration",
                {
                    "TrainingFraction": [0.8],
                    "iteration": 0,
                    "default_net_type": "mobilenet_v2_0.35",
                    **training,
                    "snapshotindex": -1,
                    "batch_size": 8,
                },
            ),
            block(
                "Cropping parameters (for analysis and outlier frame detection)",
                {"cropping": False, "x1": 0, "x2": w, "y1": 0, "y2": h},
            ),
            block(
                "Refinement configuration",
                {"corner2move2": [50, 50], "move2corner": True},
            ),
        ]
    )


def _write_labels(
    folder: Path,
    video: str,
    images: list[str],
    keypoints: np.ndarray,
    bodyparts: tuple[str, ...],
    scorer: str,
) -> None:
    import pandas as pd

    columns = pd.MultiIndex.from_product(
        [[scorer], list(bodyparts), ["x", "y"]], names=["scorer", "bodyparts", "coords"]
    )
    index = pd.MultiIndex.from_tuples([("labeled-data", video, name) for name in images])
    df = pd.DataFrame(
        keypoints.reshape(len(images), -1).astype(np.float64), index=index, columns=columns
    )
    # Fixed format, as DeepLabCut 2.2+ writes it: PyTables 'table' format cannot store a
    # row MultiIndex together with MultiIndex columns.
    df.to_hdf(folder / f"CollectedData_{scorer}.h5", key="df_with_missing", mode="w")
    df.to_csv(folder / f"CollectedData_{scorer}.csv")


def _write_video(path: Path, frames: list[np.ndarray]) -> None:
    import av

    h, w = frames[0].shape[:2]
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=_FPS)
        stream.width = w
        stream.height = h
        stream.pix_fmt = "yuv420p"
        # Near-lossless and single-threaded: small clips, reproducible output.
        stream.options = {"crf": "12", "preset": "medium", "threads": "1"}
        for image in frames:
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def generate_project(
    out: str | Path,
    *,
    frames: int = 60,
    size: tuple[int, int] = (128, 128),
    bodyparts: Sequence[str] = ("snout", "leftear", "rightear", "tailbase"),
    seed: int = 0,
    video_frames: int = 60,
    task: str = "synth",
    scorer: str = "synth",
    progress: bool = False,
    missing_rate: float = 0.05,
) -> Path:
    """Writes a synthetic single-animal DeepLabCut project.

    The project holds ``config.yaml``; ``labeled-data/synth1/img0000.png``... with
    ``CollectedData_<scorer>.h5`` (key ``df_with_missing``, DLC 2.2+ three-level row index)
    and the same table as ``.csv``; ``videos/synth1.mp4`` (H.264, yuv420p, 30 fps; the animal
    walking smoothly over the same floor); and ``videos/synth1_truth.csv`` with the video's
    true keypoints (``frame,<bp>_x,<bp>_y,...``). Output is identical for the same arguments
    and seed (apart from the absolute paths in ``config.yaml``).

    Args:
        out: Project folder to create; it must not exist or be empty.
        frames: Number of labelled frames.
        size: (width, height) of frames and video.
        bodyparts: Body part names; the i-th name labels the i-th :data:`CATALOGUE` landmark.
        seed: Random seed.
        video_frames: Number of video frames; 0 writes no video.
        task: Config ``Task``.
        scorer: Config ``scorer``.
        progress: Show a progress bar on stderr.
        missing_rate: Probability that an ear is hidden (and unlabelled) in a labelled frame.

    Returns:
        Path of the written ``config.yaml``.

    Raises:
        ConfigError: An argument is invalid, or ``out`` exists and is not an empty folder.
    """
    import cv2
    from tqdm import tqdm

    names = _check_args(frames, size, bodyparts, seed, video_frames, task, scorer, missing_rate)
    size = (int(size[0]), int(size[1]))
    root = Path(out).expanduser().resolve()
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise ConfigError(f"{root}: exists and is not an empty folder")

    # Independent streams, so that e.g. changing video_frames leaves the labelled frames alone.
    ss_scene, ss_labels, ss_video = np.random.SeedSequence(seed).spawn(3)
    scene_rng = np.random.default_rng(ss_scene)
    background = make_background(size, scene_rng)
    appearance = random_appearance(background, scene_rng)

    labeled = root / "labeled-data" / VIDEO_NAME
    labeled.mkdir(parents=True, exist_ok=True)
    k = len(names)
    bar = tqdm(total=frames + video_frames, disable=not progress, desc="synth", unit="frame")
    with bar:
        rng = np.random.default_rng(ss_labels)
        images: list[str] = []
        keypoints = np.empty((frames, k, 2), dtype=np.float64)
        for i in range(frames):
            state = random_state(size, rng, missing_rate=missing_rate)
            image, kp = render_animal(
                size, state, rng, appearance=appearance, background=background
            )
            name = f"img{i:04d}.png"
            if not cv2.imwrite(str(labeled / name), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
                raise OSError(f"{labeled / name}: cannot write image")
            images.append(name)
            keypoints[i] = kp[:k]
            bar.update()
        _write_labels(labeled, VIDEO_NAME, images, keypoints, names, scorer)

        video_path = None
        if video_frames:
            videos = root / "videos"
            videos.mkdir(exist_ok=True)
            video_path = videos / f"{VIDEO_NAME}.mp4"
            rng = np.random.default_rng(ss_video)
            rendered = []
            truth_rows = []
            for i, state in enumerate(_video_states(size, video_frames, rng)):
                image, kp = render_animal(
                    size, state, rng, appearance=appearance, background=background, gain=1.0
                )
                rendered.append(image)
                truth_rows.append(",".join([str(i)] + [f"{v:.4f}" for v in kp[:k].reshape(-1)]))
                bar.update()
            _write_video(video_path, rendered)
            header = ",".join(["frame"] + [f"{bp}_{c}" for bp in names for c in ("x", "y")])
            (videos / f"{VIDEO_NAME}_truth.csv").write_text(
                "\n".join([header, *truth_rows]) + "\n", encoding="utf-8"
            )

    config_path = root / "config.yaml"
    config_path.write_text(
        _config_text(root, video_path, size, names, task, scorer), encoding="utf-8"
    )
    return config_path


# --------------------------------------------------------------------------------------------
# Several animals
# --------------------------------------------------------------------------------------------

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


def _multi_length(size: tuple[int, int], animals: int) -> float:
    # Smaller animals when there are more of them, so that they still have room to move.
    return min(size) * min(0.25, 0.12 * math.sqrt(3.0 / animals))


def _silhouette(size: tuple[int, int], state: AnimalState) -> np.ndarray:
    """Boolean HxW mask of the pixels the animal covers."""
    import cv2

    w, h = size
    shapes, _ = _geometry(state)
    mask = np.zeros((h, w), dtype=np.uint8)
    for polys in shapes.values():
        for poly in polys:
            cv2.fillPoly(mask, [_fixed(poly)], 1, cv2.LINE_8, _SHIFT)
    return mask.astype(bool)


def _visible(size: tuple[int, int], states: Sequence[AnimalState], keypoints: np.ndarray):
    """Which keypoints (IxK) are not covered by an animal drawn later (animals are drawn in
    index order) and are not hidden parts (NaN)."""
    w, h = size
    visible = np.isfinite(keypoints).all(axis=-1)
    cover = np.zeros((h, w), dtype=bool)
    for i in range(len(states) - 1, -1, -1):
        pts = keypoints[i]
        ok = visible[i]
        col = np.clip(np.round(np.nan_to_num(pts[:, 0])).astype(int), 0, w - 1)
        row = np.clip(np.round(np.nan_to_num(pts[:, 1])).astype(int), 0, h - 1)
        visible[i] = ok & ~cover[row, col]
        if i:
            cover |= _silhouette(size, states[i])
    return visible


def _multi_video_states(
    size: tuple[int, int], n: int, animals: int, rng: np.random.Generator
) -> list[list[AnimalState]]:
    """Per animal, a smooth walk along its own wobbly loop. The loops share the middle of the
    arena and neighbouring animals go round in opposite directions, so paths cross and
    animals pass over one another."""
    w, h = size
    dim = min(w, h)
    margin = max(2.0, 0.04 * dim)
    fps = float(_FPS)
    t = np.arange(n + 1) / fps
    base_length = _multi_length(size, animals)
    out: list[list[AnimalState]] = []
    for a in range(animals):
        period = rng.uniform(3.0, 5.0)
        omega = 2.0 * np.pi / period * (1.0 if a % 2 == 0 else -1.0)
        phase0 = rng.uniform(0.0, 2.0 * np.pi)
        wob_f = rng.uniform(2.0, 3.0) * abs(omega)
        wob_p = rng.uniform(0.0, 2.0 * np.pi, size=2)
        ratio = rng.uniform(0.6, 1.0)
        offset = rng.uniform(-0.08, 0.08, size=2) * dim

        def unit_path(tt, phase0=phase0, omega=omega, wob_f=wob_f, wob_p=wob_p, ratio=ratio):
            phi = phase0 + omega * tt
            wob = 0.08 * np.stack(
                [np.sin(wob_f * tt + wob_p[0]), np.cos(wob_f * tt + wob_p[1])]
            )
            return np.stack([np.cos(phi), ratio * np.sin(phi)]) + wob

        unit = unit_path(t)
        vel = unit_path(t + 1e-3) - unit
        # Clockwise and anticlockwise loops both face the direction of motion.
        heading = np.unwrap(np.arctan2(vel[1], vel[0]))
        turn = np.gradient(heading) * fps
        length = base_length * rng.uniform(0.9, 1.1)
        width_ratio = rng.uniform(0.45, 0.52)
        tail_ratio = rng.uniform(0.65, 0.8)
        curl0 = rng.uniform(-0.6, 0.6)
        tail_f = rng.uniform(1.5, 3.0)
        head_f = rng.uniform(0.8, 1.6)
        states = [
            AnimalState(
                x=0.0,
                y=0.0,
                heading=float(heading[i]),
                length=length,
                width_ratio=width_ratio,
                bend=float(np.clip(-0.25 * turn[i], -0.3, 0.3)),
                head_turn=float(
                    np.clip(0.2 * turn[i], -0.4, 0.4) + 0.2 * math.sin(head_f * 2 * np.pi * t[i])
                ),
                tail_curl=float(curl0 + 0.5 * math.sin(tail_f * 2 * np.pi * t[i])),
                tail_wave=float(0.3 * math.sin(tail_f * np.pi * t[i] + 1.0)),
                tail_ratio=tail_ratio,
            )
            for i in range(n)
        ]
        # Keep every drawn point inside the frame: the loop's reach plus the animal's radius.
        radius = max(float(np.linalg.norm(_extent(s), axis=1).max()) for s in states)
        centre = np.array([(w - 1) / 2.0, (h - 1) / 2.0]) + offset
        room = np.minimum(centre, np.array([w - 1, h - 1]) - centre) - margin - radius
        scale = max(0.0, float(np.min(room / np.array([1.08, ratio + 0.08]))))
        out.append(
            [
                replace(
                    s,
                    x=float(centre[0] + scale * unit[0, i]),
                    y=float(centre[1] + scale * unit[1, i]),
                )
                for i, s in enumerate(states)
            ]
        )
    return [[out[a][i] for a in range(animals)] for i in range(n)]


def _multi_streams(seed: int) -> list[np.random.SeedSequence]:
    # scene, labelled frames, video trajectories, video sensor noise
    return np.random.SeedSequence(seed).spawn(4)


def _check_animals(animals) -> int:
    if not isinstance(animals, int | np.integer) or isinstance(animals, bool) or animals < 1:
        raise ConfigError(f"synth: animals must be an integer >= 1, got {animals!r}")
    return int(animals)


@dataclass(frozen=True)
class MultiAnimalTruth:
    """Ground truth of a synthetic multi-animal video.

    Attributes:
        keypoints: float64 NxIxKx2 true (x, y) of every individual's body parts, whether
            visible or not (NaN only for parts that are not drawn).
        visible: bool NxIxK: the part is drawn and not covered by another animal.
        individuals: The I identities (``individual1`` ...), index i is identity i.
        bodyparts: The K body part names.
    """

    keypoints: np.ndarray
    visible: np.ndarray
    individuals: tuple[str, ...]
    bodyparts: tuple[str, ...]


def multianimal_video_truth(
    size: tuple[int, int],
    video_frames: int,
    animals: int,
    seed: int = 0,
    bodyparts: Sequence[str] = ("snout", "leftear", "rightear", "tailbase"),
) -> MultiAnimalTruth:
    """The ground truth :func:`generate_multianimal_project` writes for its video, computed
    without rendering (for tracking tests and benchmarks).

    Args:
        size: (width, height) in pixels.
        video_frames: Number of frames.
        animals: Number of animals.
        seed: Random seed, as for :func:`generate_multianimal_project`.
        bodyparts: Body part names (i-th name = i-th :data:`CATALOGUE` slot).

    Returns:
        The truth; equal to what the project's ``videos/synth1_truth.csv`` holds (which
        rounds to 1/10000 px).

    Raises:
        ConfigError: An argument is invalid.
    """
    animals = _check_animals(animals)
    names = _check_args(1, size, bodyparts, seed, video_frames, "synth", "synth", 0.0)
    size = (int(size[0]), int(size[1]))
    rng = np.random.default_rng(_multi_streams(seed)[2])
    return _truth(size, _multi_video_states(size, video_frames, animals, rng), names)


def _truth(
    size: tuple[int, int], states: list[list[AnimalState]], names: tuple[str, ...]
) -> MultiAnimalTruth:
    animals = len(states[0]) if states else 0
    k = len(names)
    keypoints = np.empty((len(states), animals, k, 2), dtype=np.float64)
    visible = np.empty((len(states), animals, k), dtype=bool)
    for f, frame_states in enumerate(states):
        # Rounded to the drawing grid, as render_animal returns them.
        kp = np.stack([np.round(_geometry(s)[1] * _SUB) / _SUB for s in frame_states])
        keypoints[f] = kp[:, :k]
        visible[f] = _visible(size, frame_states, kp)[:, :k]
    individuals = tuple(f"individual{i + 1}" for i in range(animals))
    return MultiAnimalTruth(keypoints, visible, individuals, names)


def read_multianimal_truth(path: str | Path) -> MultiAnimalTruth:
    """Reads a ``<video>_truth.csv`` written by :func:`generate_multianimal_project`.

    Args:
        path: The truth file.

    Returns:
        The truth (keypoints rounded to 1/10000 px as written).

    Raises:
        DataError: The file is missing or not a multi-animal truth file.
    """
    import csv

    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
    except OSError as exc:
        raise DataError(f"{path}: cannot read truth file ({exc.strerror or exc})") from exc
    if not rows or rows[0][:3] != ["frame", "individual", "identity"] or (len(rows[0]) - 3) % 3:
        raise DataError(
            f"{path}: not a multi-animal truth file (header frame,individual,identity,...)"
        )
    header = rows[0]
    bodyparts = tuple(name[: -len("_x")] for name in header[3::3])
    try:
        frames = np.array([int(r[0]) for r in rows[1:]])
        ids = np.array([int(r[2]) for r in rows[1:]])
        values = np.array([[float(v) for v in r[3:]] for r in rows[1:]], dtype=np.float64)
    except (ValueError, IndexError) as exc:
        raise DataError(f"{path}: malformed truth row ({exc})") from exc
    n_frames = int(frames.max()) + 1 if len(frames) else 0
    n_ids = int(ids.max()) + 1 if len(ids) else 0
    names = [""] * n_ids
    for r, i in zip(rows[1:], ids, strict=True):
        names[i] = r[1]
    k = len(bodyparts)
    keypoints = np.full((n_frames, n_ids, k, 2), np.nan)
    visible = np.zeros((n_frames, n_ids, k), dtype=bool)
    triples = values.reshape(len(values), k, 3)
    keypoints[frames, ids] = triples[..., :2]
    visible[frames, ids] = triples[..., 2] > 0.5
    return MultiAnimalTruth(keypoints, visible, tuple(names), bodyparts)


def _write_multianimal_labels(
    folder: Path,
    video: str,
    images: list[str],
    keypoints: np.ndarray,
    individuals: tuple[str, ...],
    bodyparts: tuple[str, ...],
    scorer: str,
) -> None:
    import pandas as pd

    columns = pd.MultiIndex.from_product(
        [[scorer], list(individuals), list(bodyparts), ["x", "y"]],
        names=["scorer", "individuals", "bodyparts", "coords"],
    )
    index = pd.MultiIndex.from_tuples([("labeled-data", video, name) for name in images])
    df = pd.DataFrame(
        keypoints.reshape(len(images), -1).astype(np.float64), index=index, columns=columns
    )
    # Fixed format, as for single-animal labels (see _write_labels).
    df.to_hdf(folder / f"CollectedData_{scorer}.h5", key="df_with_missing", mode="w")
    df.to_csv(folder / f"CollectedData_{scorer}.csv")


def generate_multianimal_project(
    out: str | Path,
    *,
    animals: int = 3,
    frames: int = 20,
    size: tuple[int, int] = (160, 160),
    bodyparts: Sequence[str] = ("snout", "leftear", "rightear", "tailbase"),
    seed: int = 0,
    video_frames: int = 90,
    task: str = "synth",
    scorer: str = "synth",
    progress: bool = False,
    missing_rate: float = 0.05,
) -> Path:
    """Writes a synthetic multi-animal DeepLabCut project.

    Like :func:`generate_project`, with ``animals`` animals per image, each with its own
    colours, drawn in index order (a later animal covers an earlier one). ``config.yaml``
    has ``multianimalproject: true``, ``individuals`` ``individual1`` ... ``individualN``,
    ``multianimalbodyparts`` and a tree ``skeleton`` (:func:`skeleton_for`). The labels
    (``CollectedData_<scorer>.h5``/``.csv``, columns ``scorer/individuals/bodyparts/coords``)
    leave out parts that another animal covers or that are hidden. In the video the animals
    walk loops through the middle of the arena in alternating directions, so they cross and
    occlude one another; ``videos/synth1_truth.csv`` has one row per frame and individual:
    ``frame,individual,identity,<bp>_x,<bp>_y,<bp>_visible,...`` with every part's true
    position (also when covered) and whether it is visible (1) or covered (0). Output is
    identical for the same arguments and seed.

    Args:
        out: Project folder to create; it must not exist or be empty.
        animals: Number of animals (individuals).
        frames: Number of labelled frames.
        size: (width, height) of frames and video.
        bodyparts: Body part names; the i-th name labels the i-th :data:`CATALOGUE` landmark.
        seed: Random seed.
        video_frames: Number of video frames; 0 writes no video.
        task: Config ``Task``.
        scorer: Config ``scorer``.
        progress: Show a progress bar on stderr.
        missing_rate: Probability that an ear is hidden in a labelled frame.

    Returns:
        Path of the written ``config.yaml``.

    Raises:
        ConfigError: An argument is invalid, or ``out`` exists and is not an empty folder.
    """
    import cv2
    from tqdm import tqdm

    animals = _check_animals(animals)
    names = _check_args(frames, size, bodyparts, seed, video_frames, task, scorer, missing_rate)
    size = (int(size[0]), int(size[1]))
    root = Path(out).expanduser().resolve()
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise ConfigError(f"{root}: exists and is not an empty folder")

    ss_scene, ss_labels, _, ss_noise = _multi_streams(seed)
    scene_rng = np.random.default_rng(ss_scene)
    background = make_background(size, scene_rng)
    appearances = [random_appearance(background, scene_rng) for _ in range(animals)]
    individuals = tuple(f"individual{i + 1}" for i in range(animals))

    def draw(states: Sequence[AnimalState], rng: np.random.Generator, gain, noise):
        image = background
        for a, state in enumerate(states):
            last = a == len(states) - 1
            # Gain and sensor noise once, over the finished picture.
            image, _ = render_animal(
                size,
                state,
                rng,
                appearance=appearances[a],
                background=image,
                gain=gain if last else 1.0,
                noise=noise if last else 0.0,
            )
        return image

    labeled = root / "labeled-data" / VIDEO_NAME
    labeled.mkdir(parents=True, exist_ok=True)
    k = len(names)
    length = _multi_length(size, animals)
    bar = tqdm(total=frames + video_frames, disable=not progress, desc="synth", unit="frame")
    with bar:
        rng = np.random.default_rng(ss_labels)
        images: list[str] = []
        keypoints = np.empty((frames, animals, k, 2), dtype=np.float64)
        for i in range(frames):
            states: list[AnimalState] = []
            for _ in range(animals):
                # Resample a few times so that animals overlap only partly.
                for _try in range(30):
                    state = random_state(
                        size, rng, missing_rate=missing_rate, length=length * rng.uniform(0.9, 1.1)
                    )
                    if all(
                        math.hypot(state.x - o.x, state.y - o.y) >= 0.6 * o.length for o in states
                    ):
                        break
                states.append(state)
            kp = np.stack([_geometry(s)[1] for s in states])
            kp = np.round(kp * _SUB) / _SUB
            vis = _visible(size, states, kp)
            kp[~vis] = np.nan
            image = draw(states, rng, rng.uniform(0.85, 1.15), rng.uniform(1.5, 4.0))
            name = f"img{i:04d}.png"
            if not cv2.imwrite(str(labeled / name), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
                raise OSError(f"{labeled / name}: cannot write image")
            images.append(name)
            keypoints[i] = kp[:, :k]
            bar.update()
        _write_multianimal_labels(
            labeled, VIDEO_NAME, images, keypoints, individuals, names, scorer
        )

        video_path = None
        if video_frames:
            videos = root / "videos"
            videos.mkdir(exist_ok=True)
            video_path = videos / f"{VIDEO_NAME}.mp4"
            rng = np.random.default_rng(_multi_streams(seed)[2])
            all_states = _multi_video_states(size, video_frames, animals, rng)
            truth = _truth(size, all_states, names)
            noise_rng = np.random.default_rng(ss_noise)
            rendered = []
            rows = []
            for f, states in enumerate(all_states):
                rendered.append(draw(states, noise_rng, 1.0, 2.0))
                for a in range(animals):
                    cells = [str(f), individuals[a], str(a)]
                    for j in range(k):
                        x, y = truth.keypoints[f, a, j]
                        cells += [f"{x:.4f}", f"{y:.4f}", str(int(truth.visible[f, a, j]))]
                    rows.append(",".join(cells))
                bar.update()
            _write_video(video_path, rendered)
            header = ",".join(
                ["frame", "individual", "identity"]
                + [f"{bp}_{c}" for bp in names for c in ("x", "y", "visible")]
            )
            (videos / f"{VIDEO_NAME}_truth.csv").write_text(
                "\n".join([header, *rows]) + "\n", encoding="utf-8"
            )

    config_path = root / "config.yaml"
    config_path.write_text(
        _config_text(root, video_path, size, names, task, scorer, individuals), encoding="utf-8"
    )
    return config_path
