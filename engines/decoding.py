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


def decode(
    scores: np.ndarray,
    locref: np.ndarray | None,
    stride: float,
    locref_stdev: float,
) -> np.ndarray:
    """Turn score maps (and locref fields) into keypoints by argmax + refinement.

    Args:
        scores: N×K×h×w scores (sigmoid probabilities, or raw maps of models trained
            with MSE; the likelihood read at the argmax is clipped to [0, 1]).
        locref: N×2K×h×w offsets (interleaved x, y), or None to use cell centres only.
        stride: Input pixels per grid cell.
        locref_stdev: Scale the offsets were trained with.

    Returns:
        N×K×3 float32 (x, y, likelihood) in input pixels. Non-finite score maps give NaN
        coordinates with likelihood 0.
    """
    scores = np.asarray(scores, dtype=np.float32)
    n, k, h, w = scores.shape
    flat = scores.reshape(n, k, h * w)
    finite = np.isfinite(flat).all(axis=2)
    flat = np.where(np.isfinite(flat), flat, -np.inf)
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
