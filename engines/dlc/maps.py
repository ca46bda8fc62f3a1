"""Drawing DeepLabCut-style network maps over an image: score maps, location refinement, PAFs.

The figures are matplotlib ``Figure`` objects without a window (Agg canvas), so they work
headless; ``fig.savefig`` writes them. Maps may be smaller than the image (one cell per
stride pixels); they are stretched over it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from posed.engines.offline.plotting import _figure

__all__ = ["show_locrefs", "show_paf", "show_scoremap"]


def _base(image: Any) -> tuple[Any, Any, np.ndarray]:
    img = np.asarray(image)
    fig = _figure(6.4, 6.4 * img.shape[0] / max(img.shape[1], 1))
    ax = fig.add_subplot()
    ax.imshow(img)
    ax.set_axis_off()
    return fig, ax, img


def _extent(img: np.ndarray) -> tuple[float, float, float, float]:
    return (-0.5, img.shape[1] - 0.5, img.shape[0] - 0.5, -0.5)


def show_scoremap(image: Any, scmap: Any) -> tuple[Any, Any]:
    """``scmap`` (H'×W', or H'×W'×K summed over parts) over ``image``."""
    fig, ax, img = _base(image)
    maps = np.asarray(scmap, dtype=float)
    if maps.ndim == 3:
        maps = maps.sum(axis=2)
    ax.imshow(maps, alpha=0.5, cmap="jet", extent=_extent(img), interpolation="bilinear")
    return fig, ax


def show_locrefs(image: Any, scmap: Any, locref_x: Any, locref_y: Any, step: int = 5,
                 zoom_width: int = 0) -> tuple[Any, Any]:
    """Score map plus every ``step``-th location-refinement vector (in map cells);
    ``zoom_width`` > 0 zooms on a square of that many pixels around the score peak."""
    fig, ax = show_scoremap(image, scmap)
    img = np.asarray(image)
    maps = np.asarray(scmap, dtype=float)
    maps = maps.sum(axis=2) if maps.ndim == 3 else maps
    lx, ly = np.asarray(locref_x, dtype=float), np.asarray(locref_y, dtype=float)
    h, w = maps.shape
    sy, sx = img.shape[0] / h, img.shape[1] / w
    ys, xs = np.mgrid[0:h:step, 0:w:step]
    ax.quiver((xs + 0.5) * sx, (ys + 0.5) * sy, lx[ys, xs], ly[ys, xs], color="r",
              angles="xy", scale_units="xy", scale=1)
    if zoom_width > 0:
        py, px = np.unravel_index(np.argmax(maps), maps.shape)
        cx, cy = (px + 0.5) * sx, (py + 0.5) * sy
        ax.set_xlim(cx - zoom_width / 2, cx + zoom_width / 2)
        ax.set_ylim(cy + zoom_width / 2, cy - zoom_width / 2)
    return fig, ax


def show_paf(image: Any, paf: Any, step: int = 5, colors: Any = None) -> tuple[Any, Any]:
    """Part-affinity fields (H'×W'×2L: x and y of each limb in turn) as arrows, one colour
    per limb."""
    fig, ax, img = _base(image)
    fields = np.asarray(paf, dtype=float)
    h, w = fields.shape[:2]
    sy, sx = img.shape[0] / h, img.shape[1] / w
    ys, xs = np.mgrid[0:h:step, 0:w:step]
    limbs = fields.shape[2] // 2
    palette = colors if colors is not None else [f"C{i % 10}" for i in range(limbs)]
    for i in range(limbs):
        u, v = fields[ys, xs, 2 * i], fields[ys, xs, 2 * i + 1]
        keep = np.hypot(u, v) > 1e-3
        ax.quiver(((xs + 0.5) * sx)[keep], ((ys + 0.5) * sy)[keep], u[keep], v[keep],
                  color=palette[i % len(palette)], angles="xy")
    return fig, ax
