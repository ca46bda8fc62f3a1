"""DeepLabCut 3's part-affinity-field predictor, framework-free: maps to candidates and costs.

What DeepLabCut's ``PartAffinityFieldPredictor`` computes from a bottom-up model's outputs
before its assembler runs, reproduced in float32 numpy so that every engine posed runs a
DeepLabCut model in (PyTorch, TorchScript, ONNX) gives DeepLabCut's candidates:

1. Scores (sigmoid of the logits when ``apply_sigmoid``) are smoothed per part with a
   normalised Gaussian of ``sigma`` over a (2·nms_radius+1)² window, zero padded.
2. Peaks: cells equal to the maximum of their ``nms_radius``-wide window (max pooling, stride
   1) and at least 0.01, in part, row, column order.
3. A peak's pixel is ``stride·(col, row) + stride // 2 + locref·locref_stdev`` (locref channel
   2k is x, 2k+1 is y); its confidence is the smoothed score.
4. For each kept edge (s, t) and every pair of peaks of s and t, the affinity is the norm of
   the trapezoidal integral of the edge's field at 10 points sampled (truncated to whole
   cells) on the segment between the two peak cells, divided by the segment's length in cells;
   affinities and lengths are rounded to 3 decimals, as DeepLabCut rounds them.

:mod:`posed.engines.dlc.assembler` then groups the candidates into animals.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Candidates", "candidates", "gaussian_kernel", "smooth"]

_PEAK_THRESHOLD = np.float32(0.01)
_N_POINTS = 10


@dataclass
class Candidates:
    """One frame's candidates: per part, xy pixels (n×2) and confidences (n); per kept edge
    index (in ``graph``), affinities (n_s×n_t) and lengths in cells (n_s×n_t)."""

    xy: list[np.ndarray]
    confidence: list[np.ndarray]
    costs: dict[int, tuple[np.ndarray, np.ndarray]]


def gaussian_kernel(sigma: float, radius: int) -> np.ndarray:
    """The 1-D smoothing kernel (2·radius+1 taps, sums to 1), float32."""
    k = np.arange(-radius, radius + 1, dtype=np.float32) ** 2
    e = np.exp(-k / np.float32(2 * sigma * sigma) - np.max(-k / np.float32(2 * sigma * sigma)))
    return (e / e.sum()).astype(np.float32)


def smooth(scores: np.ndarray, sigma: float, radius: int) -> np.ndarray:
    """K×h×w scores convolved per part with the separable Gaussian (zero padding)."""
    kernel = gaussian_kernel(sigma, radius)
    k, h, w = scores.shape
    padded = np.zeros((k, h + 2 * radius, w + 2 * radius), dtype=np.float32)
    padded[:, radius:radius + h, radius:radius + w] = scores
    rows = np.zeros((k, h + 2 * radius, w), dtype=np.float32)
    for i, c in enumerate(kernel):
        rows += c * padded[:, :, i:i + w]
    out = np.zeros((k, h, w), dtype=np.float32)
    for i, c in enumerate(kernel):
        out += c * rows[:, i:i + h, :]
    return out


def _peaks(maps: np.ndarray, radius: int) -> np.ndarray:
    """(n, 3) int (part, row, col) of the cells that equal their window's maximum."""
    k, h, w = maps.shape
    pad = radius // 2
    padded = np.full((k, h + 2 * pad, w + 2 * pad), -np.inf, dtype=np.float32)
    padded[:, pad:pad + h, pad:pad + w] = maps
    pooled = np.full((k, h, w), -np.inf, dtype=np.float32)
    # A radius-wide window anchored so that it covers [i - pad, i - pad + radius).
    for dy in range(radius):
        for dx in range(radius):
            np.maximum(pooled, padded[:, dy:dy + h, dx:dx + w], out=pooled)
    maxima = maps * (maps == pooled)
    return np.argwhere(maxima >= _PEAK_THRESHOLD)


def _edge_costs(pafs: np.ndarray, peaks: np.ndarray, graph: list[tuple[int, int]],
                keep: list[int]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    h, w = pafs.shape[-2:]
    fields = pafs.reshape(-1, 2, h, w)
    t = np.linspace(0, 1, _N_POINTS, dtype=np.float32)[None, :, None]
    eps = np.spacing(np.float32(1))
    costs = {}
    for index in keep:
        s, d = graph[index]
        src, dst = np.flatnonzero(peaks[:, 0] == s), np.flatnonzero(peaks[:, 0] == d)
        if not (len(src) and len(dst)):
            continue
        a = np.repeat(peaks[src, 1:], len(dst), axis=0).astype(np.float32)  # (row, col)
        b = np.tile(peaks[dst, 1:], (len(src), 1)).astype(np.float32)
        lengths = np.sqrt(((b - a) ** 2).sum(axis=1, dtype=np.float32)) + eps
        cells = (a[:, None] + t * (b - a)[:, None]).astype(np.int32)
        rows = np.clip(cells[..., 0], 0, h - 1)
        cols = np.clip(cells[..., 1], 0, w - 1)
        y = fields[index][:, rows, cols]  # (2, n, points): x and y components
        x = np.stack((cols, rows)).astype(np.float32)  # integrate x over cols, y over rows
        integral = np.zeros((2, len(a)), dtype=np.float32)
        for p in range(_N_POINTS - 1):  # sequential, as torch sums the trapezoids
            integral += (x[:, :, p + 1] - x[:, :, p]) * (y[:, :, p + 1] + y[:, :, p])
        integral /= np.float32(2)
        aff = np.sqrt((integral ** 2).sum(axis=0, dtype=np.float32)) / lengths
        aff = np.round(aff * np.float32(1000)) / np.float32(1000)
        lengths = np.round(lengths * np.float32(1000)) / np.float32(1000)
        shape = (len(src), len(dst))
        costs[index] = (aff.astype(np.float32).reshape(shape),
                        lengths.astype(np.float32).reshape(shape))
    return costs


def candidates(scores: np.ndarray, locref: np.ndarray, pafs: np.ndarray, *, stride: float,
               graph: list[tuple[int, int]], keep: list[int], locref_stdev: float,
               nms_radius: int, sigma: float) -> Candidates | None:
    """One frame's DeepLabCut candidates from scores K×h×w (already sigmoid where the model
    applies it), locref 2K×h×w and fields 2E×h×w; None where DeepLabCut finds none."""
    k, h, w = scores.shape
    smoothed = smooth(scores.astype(np.float32), sigma, nms_radius)
    peaks = _peaks(smoothed, nms_radius)
    if not peaks.any():  # DeepLabCut's "no peak" test: no index differs from zero
        return None
    part, row, col = peaks.T
    offsets = locref.astype(np.float32).reshape(k, 2, h, w)[part, :, row, col]
    offsets = offsets * np.float32(locref_stdev)
    step = np.float32(stride)
    xy = step * np.stack((col, row), axis=1).astype(np.float32) + np.floor(step / 2) + offsets
    conf = smoothed[part, row, col]
    order = [np.flatnonzero(part == j) for j in range(k)]
    return Candidates(xy=[xy[i] for i in order], confidence=[conf[i] for i in order],
                      costs=_edge_costs(pafs, peaks, graph, keep))
