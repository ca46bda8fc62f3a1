"""Framework-free heatmap targets and decoding shared by every engine.

A DeepLabCut-style model predicts, for each of K body parts, a score map on a grid of
``stride`` pixels and a location-refinement ("locref") field of (dx, dy) offsets. Cell
``(i, j)`` of the grid stands for the input pixel ``((j + 0.5) * stride, (i + 0.5) * stride)``
(DeepLabCut's convention, kept so imported DeepLabCut models decode identically), and
the locref field stores the offset from that centre to the body part in units of
``locref_stdev`` pixels.

Layouts follow the PyTorch heads: score maps ``N×K×h×w`` and locref ``N×2K×h×w`` with the
channels interleaved (x0, y0, x1, y1, ...). Engines with channel-last outputs transpose
before calling these functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

TARGET_KINDS = ("gaussian", "plateau")


@dataclass(frozen=True)
class TargetSpec:
    """How training targets are drawn.

    Attributes:
        kind: ``gaussian`` (exp(-d²/2σ²)) or ``plateau`` (1 within ``radius``, DeepLabCut TF style).
        sigma: Gaussian width in input pixels.
        radius: Plateau radius and the radius within which locref targets are set, in pixels.
        locref_stdev: Scale of the locref offsets (DeepLabCut uses 7.2801).
    """

    kind: str = "gaussian"
    sigma: float = 4.0
    radius: float = 8.0
    locref_stdev: float = 7.2801

    def __post_init__(self) -> None:
        if self.kind not in TARGET_KINDS:
            raise ValueError(f"target kind {self.kind!r} is not one of {', '.join(TARGET_KINDS)}")


def grid_centres(size: int, stride: float) -> np.ndarray:
    """Input-pixel coordinate of each grid cell centre along one axis."""
    return (np.arange(size, dtype=np.float32) + 0.5) * stride


def make_targets(
    keypoints: np.ndarray, grid_hw: tuple[int, int], stride: float, spec: TargetSpec
) -> dict[str, np.ndarray]:
    """Build heatmap and locref targets for one image.

    Args:
        keypoints: K×2 (x, y) in input pixels; NaN marks a missing body part.
        grid_hw: Height and width of the output grid.
        stride: Input pixels per grid cell.
        spec: Target settings.

    Returns:
        ``heatmap`` K×h×w in [0, 1], ``heatmap_weight`` K×1×1 (0 for missing body parts),
        ``locref`` 2K×h×w and ``locref_weight`` 2K×h×w (1 only near visible body parts).
    """
    kpts = np.asarray(keypoints, dtype=np.float32)
    k = kpts.shape[0]
    h, w = grid_hw
    ys = grid_centres(h, stride)[None, :, None]  # 1×h×1
    xs = grid_centres(w, stride)[None, None, :]  # 1×1×w
    visible = np.isfinite(kpts).all(axis=1)
    kx = np.where(visible, kpts[:, 0], -1e6)[:, None, None]
    ky = np.where(visible, kpts[:, 1], -1e6)[:, None, None]
    dx = kx - xs  # K×1×w
    dy = ky - ys  # K×h×1
    dist2 = dx * dx + dy * dy  # K×h×w
    if spec.kind == "gaussian":
        heatmap = np.exp(-dist2 / (2.0 * spec.sigma**2))
    else:
        heatmap = (dist2 <= spec.radius**2).astype(np.float32)
    near = (dist2 <= spec.radius**2) & visible[:, None, None]
    heatmap = np.where(visible[:, None, None], heatmap, 0.0).astype(np.float32)

    locref = np.empty((2 * k, h, w), dtype=np.float32)
    locref[0::2] = np.broadcast_to(dx, (k, h, w)) / spec.locref_stdev
    locref[1::2] = np.broadcast_to(dy, (k, h, w)) / spec.locref_stdev
    locref_weight = np.repeat(near, 2, axis=0).astype(np.float32)
    locref *= locref_weight  # keep far-away cells at 0 (no huge numbers from the sentinel)
    return {
        "heatmap": heatmap,
        "heatmap_weight": visible.astype(np.float32)[:, None, None],
        "locref": locref,
        "locref_weight": locref_weight,
    }


BODY_WINDOW_MARGIN = 1.25
"""The body window's half-size over the largest labelled distance of a part from its sample's
centre (openfield: 1.0-1.5 all move a left ear found 395 px from the mouse back onto it, 2.0
does not; ``benchmarks/RESULTS.md``)."""


def body_window_px(keypoints: Sequence[np.ndarray]) -> float | None:
    """Half-size in pixels of the square :func:`decode` looks in for one animal's parts.

    ``keypoints``: the training labels, K×2 per sample (NaN where not labelled). The window is
    :data:`BODY_WINDOW_MARGIN` times the largest distance of a labelled part from the mean of
    its sample's labelled parts; None (no window) without a sample with two labelled parts.
    """
    reach = 0.0
    for kp in keypoints:
        kp = np.asarray(kp, dtype=np.float64)
        kp = kp[np.isfinite(kp).all(axis=1)]
        if len(kp) >= 2:
            reach = max(reach, float(np.linalg.norm(kp - kp.mean(axis=0), axis=1).max()))
    return round(BODY_WINDOW_MARGIN * reach, 2) if reach > 0 else None


def window_cells(window_px: float, stride: float) -> int:
    """The body window's half-size in grid cells (at least one)."""
    return max(int(np.ceil(window_px / stride)), 1)


def window_blocks(radius: int) -> int:
    """Cells per side of the blocks the body centre is searched on: the search runs on a grid
    coarsened to about 8 blocks per window radius (in torch on a CPU, a 61-cell max pool took
    over 200 ms per 640x480 frame; on the coarse grid the whole window adds 1-2 ms)."""
    return max(radius // 8, 1)


def window_from_centre(cy: np.ndarray, cx: np.ndarray, radius: int, block: int,
                       h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows N×h and columns N×w inside the window around block centres (cy, cx); the window
    grows by half a block, for where in its block the centre is."""
    half = block // 2
    fy, fx = cy * block + half, cx * block + half
    rows = np.abs(np.arange(h)[None, :] - fy[:, None]) <= radius + half
    cols = np.abs(np.arange(w)[None, :] - fx[:, None]) <= radius + half
    return rows, cols


def body_window(scores: np.ndarray, radius: int) -> np.ndarray:
    """N×1×h×w: True inside the square of ``radius`` cells around each frame's body centre.

    The centre is the block (:func:`window_blocks`) whose surrounding square holds the highest
    sum over parts of each part's best score in it: where most parts are found together. A
    single part's confident peak far from the rest cannot pull it away, and the parts are
    then read inside it.
    """
    from scipy.ndimage import maximum_filter

    n, k, h, w = scores.shape
    b = window_blocks(radius)
    hb, wb = -(-h // b), -(-w // b)
    clean = np.full((n, k, hb * b, wb * b), -np.inf, dtype=np.float32)
    clean[:, :, :h, :w] = np.nan_to_num(scores, nan=0.0, posinf=0.0, neginf=0.0)
    blocks = clean.reshape(n, k, hb, b, wb, b).max(axis=(3, 5))
    rb = radius // b
    reach = maximum_filter(blocks, size=(1, 1, 2 * rb + 1, 2 * rb + 1), mode="nearest")
    cy, cx = np.divmod(reach.sum(axis=1).reshape(n, hb * wb).argmax(axis=1), wb)
    rows, cols = window_from_centre(cy, cx, radius, b, h, w)
    return (rows[:, :, None] & cols[:, None, :])[:, None]


def candidate_scores(scores: np.ndarray, stride: float, window: float | None = None
                     ) -> np.ndarray:
    """N×K×(h·w) scores of the cells :func:`decode` chooses among: non-finite values and,
    with a ``window``, cells outside the body window are -inf."""
    scores = np.asarray(scores, dtype=np.float32)
    n, k, h, w = scores.shape
    flat = scores.reshape(n, k, h * w)
    flat = np.where(np.isfinite(flat), flat, -np.inf)
    if window and k > 1:
        inside = body_window(scores, window_cells(window, stride)).reshape(n, 1, h * w)
        flat = np.where(inside, flat, -np.inf)
    return flat


def decode(
    scores: np.ndarray,
    locref: np.ndarray | None,
    stride: float,
    locref_stdev: float,
    window: float | None = None,
) -> np.ndarray:
    """Turn score maps (and locref fields) into keypoints by argmax + refinement.

    Args:
        scores: N×K×h×w scores (sigmoid probabilities, or raw maps of models trained
            with MSE; the likelihood read at the argmax is clipped to [0, 1]).
        locref: N×2K×h×w offsets (interleaved x, y), or None to use cell centres only.
        stride: Input pixels per grid cell.
        locref_stdev: Scale the offsets were trained with.
        window: One animal's body window half-size in pixels (a bundle's ``body_window``,
            fitted by posed's training): each part is the best peak inside the
            :func:`body_window`, not anywhere in the frame. None: plain argmax (DeepLabCut's
            decoding, used for every imported model).

    Returns:
        N×K×3 float32 (x, y, likelihood) in input pixels. Non-finite score maps give NaN
        coordinates with likelihood 0.
    """
    scores = np.asarray(scores, dtype=np.float32)
    n, k, h, w = scores.shape
    finite = np.isfinite(scores.reshape(n, k, h * w)).all(axis=2)
    flat = candidate_scores(scores, stride, window)
    idx = flat.argmax(axis=2)  # N×K
    row, col = np.divmod(idx, w)
    # Clipped: models trained with MSE (DeepLabCut 3) can overshoot 1 or undershoot 0.
    likelihood = np.clip(np.take_along_axis(flat, idx[..., None], axis=2)[..., 0], 0.0, 1.0)
    x = (col.astype(np.float32) + 0.5) * stride
    y = (row.astype(np.float32) + 0.5) * stride
    if locref is not None:
        off = np.asarray(locref, dtype=np.float32).reshape(n, k, 2, h * w)
        picked = np.take_along_axis(off, idx[:, :, None, None].repeat(2, axis=2), axis=3)[..., 0]
        x = x + picked[:, :, 0] * locref_stdev
        y = y + picked[:, :, 1] * locref_stdev
    out = np.stack([x, y, likelihood], axis=-1).astype(np.float32)
    out[~finite] = (np.nan, np.nan, 0.0)
    return out


def decode_simcc(logits_x: np.ndarray, logits_y: np.ndarray, split: float,
                 scale: tuple[float, float]) -> np.ndarray:
    """SimCC coordinate classification (RTMPose) -> N×K×3 (x, y, score) float32.

    Each keypoint has ``W·split`` x bins and ``H·split`` y bins; the logits, multiplied by
    ``scale`` (DeepLabCut: sigma × decode_beta per axis), go through a softmax per axis; the
    keypoint is at the most likely bin of each axis divided by ``split`` (bin ``i`` is pixel
    ``i / split``, no half-bin shift, as DeepLabCut/MMPose decode), its score the smaller of
    the two maxima. Where that score is no better than uniform (<= 1 / number of x bins) the
    keypoint is missing: x, y NaN, score 0.
    """
    def softmax(logits: np.ndarray, factor: float) -> np.ndarray:
        z = logits.astype(np.float32) * np.float32(factor)
        z = z - z.max(axis=-1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=-1, keepdims=True)

    px, py = softmax(logits_x, scale[0]), softmax(logits_y, scale[1])
    out = np.empty((*px.shape[:2], 3), dtype=np.float32)
    out[..., 0] = px.argmax(axis=-1).astype(np.float32) / np.float32(split)
    out[..., 1] = py.argmax(axis=-1).astype(np.float32) / np.float32(split)
    out[..., 2] = np.minimum(px.max(axis=-1), py.max(axis=-1))
    missing = out[..., 2] <= 1.0 / px.shape[-1]
    out[missing] = (np.nan, np.nan, 0.0)
    return out


def decode_rtmpose(logits_x: np.ndarray, logits_y: np.ndarray, spec: dict) -> np.ndarray:
    """:func:`decode_simcc` with the settings of a bundle's ``architecture.rtmpose``."""
    beta = float(spec["decode_beta"])
    return decode_simcc(logits_x, logits_y, split=float(spec["simcc_split_ratio"]),
                        scale=(float(spec["sigma"][0]) * beta, float(spec["sigma"][1]) * beta))
