"""PNG plots of analysed poses and of evaluations (matplotlib, the ``plots`` extra).

Figures are drawn with matplotlib's object API on an Agg canvas: no pyplot, no GUI backend
and no global state, so plotting works headless, in worker processes and in tests. Every file
is written atomically.

- :func:`plot_poses`: ``trajectories.png`` (x against y per body part), ``likelihood.png``
  (likelihood over frames) and ``histograms.png`` (per body part: frame-to-frame x and y
  displacement, and likelihood) for one analysed table.
- :func:`plot_evaluation`: ``error-per-bodypart.png`` and one predicted-vs-labelled image per
  test image, for ``posed evaluate --plots``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from posed.engines.project.posetables import read_pose_table
from posed.engines.io import atomic_path
from posed.errors import ConfigError, DataError

if TYPE_CHECKING:
    import pandas as pd

PLOTS_HINT = "pip install 'posed[plots]'"
DPI = 100


def require_matplotlib() -> None:
    """Raise a one-line :class:`ConfigError` naming the extra when matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ConfigError(f"plots need matplotlib: {PLOTS_HINT}") from None


def _figure(width: float, height: float) -> Any:
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def _colors(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "viridis"]
    return [cmap(i if n <= 10 else i / max(n - 1, 1)) for i in range(n)]


def _pose_arrays(df: "pd.DataFrame", path: Path,
                 bodyparts: Sequence[str] | None) -> tuple[list[str], np.ndarray]:
    """Body parts and their N×K×3 (x, y, likelihood) values from a single-animal table."""
    names = list(dict.fromkeys(df.columns.get_level_values("bodyparts")))
    if bodyparts:
        unknown = [b for b in bodyparts if b not in names]
        if unknown:
            raise ConfigError(f"{path}: no body part '{unknown[0]}' (has: {', '.join(names)})")
        names = list(bodyparts)
    scorer = df.columns.get_level_values("scorer")[0]
    try:
        values = np.stack([df[scorer][bp][["x", "y", "likelihood"]].to_numpy(np.float64)
                           for bp in names], axis=1)
    except KeyError as exc:
        raise DataError(f"{path}: column {exc.args[0]!r} missing (need x, y, likelihood)") from None
    if len(values) == 0:
        raise DataError(f"{path}: the table has no rows")
    return names, values


def plot_poses(table: str | Path, out: str | Path | None = None, *, pcutoff: float = 0.6,
               bodyparts: Sequence[str] | None = None) -> list[Path]:
    """Write trajectories.png, likelihood.png and histograms.png for one analysed table.

    Positions below ``pcutoff`` are left out of trajectories and displacements, as DeepLabCut
    does. ``out`` defaults to ``plot-poses/<table stem>/`` beside the table.

    Raises:
        DataError: the table cannot be read or is not a single-animal pose table.
        ConfigError: an unknown body part was asked for, or matplotlib is missing.
    """
    path = Path(table)
    require_matplotlib()
    if not 0.0 <= pcutoff <= 1.0:
        raise ConfigError(f"pcutoff must be between 0 and 1, got {pcutoff}")
    names, values = _pose_arrays(read_pose_table(path), path, bodyparts)
    folder = Path(out) if out is not None else path.parent / "plot-poses" / path.stem
    frames = np.arange(len(values))
    colors = _colors(len(names))
    x, y, p = values[..., 0], values[..., 1], values[..., 2]
    confident = p >= pcutoff
    written: list[Path] = []

    fig = _figure(7, 6)
    ax = fig.add_subplot()
    for k, name in enumerate(names):
        sel = confident[:, k]
        ax.plot(x[sel, k], y[sel, k], ".-", ms=3, lw=0.5, alpha=0.7, color=colors[k], label=name)
    ax.invert_yaxis()  # image coordinates: y grows downwards
    ax.set_aspect("equal", adjustable="datalim")
    ax.set(xlabel="x (pixels)", ylabel="y (pixels)",
           title=f"{path.stem}\ntrajectories (likelihood ≥ {pcutoff:g})")
    ax.legend(loc="best", fontsize="small", markerscale=2)
    written.append(_save(fig, folder / "trajectories.png"))

    fig = _figure(9, 4)
    ax = fig.add_subplot()
    for k, name in enumerate(names):
        ax.plot(frames, p[:, k], lw=0.8, color=colors[k], label=name)
    ax.axhline(pcutoff, color="0.3", ls="--", lw=0.8, label=f"pcutoff {pcutoff:g}")
    ax.set(xlabel="frame", ylabel="likelihood", ylim=(-0.02, 1.02), title=path.stem)
    ax.legend(loc="lower left", fontsize="small", ncol=min(len(names) + 1, 5))
    written.append(_save(fig, folder / "likelihood.png"))

    fig = _figure(10, 1.0 + 2.0 * len(names))
    axes = fig.subplots(len(names), 3, squeeze=False)
    for k, name in enumerate(names):
        # Displacement between consecutive frames where both positions are confident.
        both = confident[1:, k] & confident[:-1, k]
        for col, (coord, label) in enumerate(((x, "Δx"), (y, "Δy"))):
            diff = np.diff(coord[:, k])[both]
            diff = diff[np.isfinite(diff)]
            axes[k, col].hist(diff, bins=int(np.clip(len(diff) // 4, 10, 50)), color=colors[k])
            axes[k, col].set(xlabel=f"{label} (pixels/frame)", ylabel=name if col == 0 else None)
        lik = p[:, k][np.isfinite(p[:, k])]
        axes[k, 2].hist(lik, bins=50, range=(0.0, 1.0), color=colors[k])
        axes[k, 2].axvline(pcutoff, color="0.3", ls="--", lw=0.8)
        axes[k, 2].set(xlabel="likelihood")
    fig.suptitle(f"{path.stem}: frame-to-frame displacement and likelihood")
    written.append(_save(fig, folder / "histograms.png"))
    return written


def _image_file_name(image: str) -> str:
    """``labeled-data/video/img001.jpg`` -> ``video_img001.png``: one flat folder of PNGs."""
    parts = Path(image).with_suffix(".png").parts
    return "_".join(parts[-2:]) if len(parts) >= 2 else parts[-1]


def plot_evaluation(folder: Path, summary: "pd.DataFrame", project_root: Path,
                    test_images: Sequence[str], pred: np.ndarray, truth: np.ndarray,
                    bodyparts: Sequence[str], pcutoff: float) -> list[Path]:
    """Evaluation plots in ``folder``: ``error-per-bodypart.png`` and, in ``test-images/``,
    each test image with its labels (circles) and predictions (crosses, faint below pcutoff).

    Args:
        summary: The evaluation table, index (set, bodypart), column ``error_px``.
        test_images: Test image paths relative to ``project_root``.
        pred: N×K×3 predictions for ``test_images``.
        truth: N×K×2 labels (NaN where unlabelled).
    """
    from posed.engines.project import load_image

    require_matplotlib()
    from matplotlib.lines import Line2D

    names = list(bodyparts)
    colors = _colors(len(names))
    written: list[Path] = []

    sets = list(dict.fromkeys(summary.index.get_level_values(0)))
    fig = _figure(max(5.0, 1.2 * len(names) + 2), 4)
    ax = fig.add_subplot()
    width = 0.8 / max(len(sets), 1)
    for i, set_name in enumerate(sets):
        errors = [summary.loc[(set_name, bp), "error_px"] for bp in names]
        overall = summary.loc[(set_name, "all"), "error_px"]
        bars = ax.bar(np.arange(len(names)) + (i - (len(sets) - 1) / 2) * width, errors, width,
                      label=f"{set_name} (all: {overall:.2f} px)")
        ax.bar_label(bars, fmt="%.1f", fontsize="x-small")
    ax.set_xticks(np.arange(len(names)), names, rotation=30, ha="right")
    ax.set(ylabel="mean error (pixels)", title="error per body part")
    ax.legend(fontsize="small")
    written.append(_save(fig, folder / "error-per-bodypart.png"))

    for image, pp, tt in zip(test_images, pred, truth):
        img = load_image(project_root, image)
        h, w = img.shape[:2]
        fig = _figure(max(3.0, w / DPI * 1.5), max(3.0, h / DPI * 1.5) + 0.4)
        ax = fig.add_subplot()
        ax.imshow(img)
        for k, name in enumerate(names):
            if np.isfinite(tt[k]).all():
                ax.plot(*tt[k], "o", ms=8, mfc="none", mec=colors[k], mew=1.5)
            ax.plot(pp[k, 0], pp[k, 1], "x", ms=7, mew=2, color=colors[k],
                    alpha=1.0 if pp[k, 2] >= pcutoff else 0.35)
        ax.set_axis_off()
        ax.set_title(f"{image}\n○ labelled  × predicted (faint: below {pcutoff:g})",
                     fontsize="small")
        ax.legend(handles=[Line2D([], [], ls="", marker="s", color=c, label=n)
                           for n, c in zip(names, colors)],
                  loc="upper right", fontsize="x-small", markerscale=0.8)
        written.append(_save(fig, folder / "test-images" / _image_file_name(image)))
    return written
