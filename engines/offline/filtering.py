"""Temporal filtering of analysed poses: median, Savitzky–Golay and a Kalman (RTS) smoother.

Works on DeepLabCut tables (ours or DeepLabCut's). Keypoints whose likelihood is below
``p_bound`` are treated as missing: the smoothers bridge them from their neighbours, and the
filtered likelihood keeps the original value so users can still see where the model was
unsure. Output: ``<stem>_filtered.h5`` (and ``.csv``) beside the input, as DeepLabCut names it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from posed.engines.project.posetables import read_pose_table, write_pose_table
from posed.errors import ConfigError

METHODS = ("median", "savgol", "kalman")


def _interpolate(series: np.ndarray) -> np.ndarray:
    """Linear interpolation over NaN gaps (edges held constant); all-NaN stays NaN."""
    ok = np.isfinite(series)
    if ok.sum() == 0:
        return series.copy()
    idx = np.arange(len(series))
    return np.interp(idx, idx[ok], series[ok])


def median_filter(series: np.ndarray, window: int) -> np.ndarray:
    """Running median over an odd ``window``, edges padded by repetition."""
    half = window // 2
    padded = np.pad(_interpolate(series), half, mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, window)
    return np.median(windows, axis=1)


def savgol_coefficients(window: int, order: int) -> np.ndarray:
    """Least-squares polynomial smoothing weights for the centre of an odd window."""
    half = window // 2
    x = np.arange(-half, half + 1, dtype=np.float64)
    vander = np.vander(x, order + 1, increasing=True)
    # Row 0 of the pseudo-inverse gives the fitted polynomial's value at x = 0.
    return np.linalg.pinv(vander)[0]


def savgol_filter(series: np.ndarray, window: int, order: int = 3) -> np.ndarray:
    """Savitzky–Golay smoothing (polynomial of ``order`` over ``window`` samples)."""
    coeffs = savgol_coefficients(window, order)
    half = window // 2
    padded = np.pad(_interpolate(series), half, mode="edge")
    return np.convolve(padded, coeffs[::-1], mode="valid")


def kalman_smoother(series: np.ndarray, fps: float = 30.0, process_noise: float = 500.0,
                    measurement_noise: float = 2.0) -> np.ndarray:
    """Constant-velocity Kalman filter forward, Rauch–Tung–Striebel smoother backward.

    NaN samples are prediction-only steps, so gaps are bridged by the motion model.
    """
    n = len(series)
    if n == 0 or not np.isfinite(series).any():
        return series.copy()
    dt = 1.0 / fps
    f = np.array([[1.0, dt], [0.0, 1.0]])
    q = process_noise**2 * np.array([[dt**4 / 4, dt**3 / 2], [dt**3 / 2, dt**2]])
    r = measurement_noise**2
    first = series[np.isfinite(series)][0]
    x = np.array([first, 0.0])
    p = np.diag([r, 1e4])
    xs_pred = np.zeros((n, 2))
    ps_pred = np.zeros((n, 2, 2))
    xs = np.zeros((n, 2))
    ps = np.zeros((n, 2, 2))
    for t in range(n):
        if t > 0:
            x = f @ x
            p = f @ p @ f.T + q
        xs_pred[t], ps_pred[t] = x, p
        z = series[t]
        if np.isfinite(z):
            s = p[0, 0] + r
            k = p[:, 0] / s
            x = x + k * (z - x[0])
            p = p - np.outer(k, p[0, :])
        xs[t], ps[t] = x, p
    for t in range(n - 2, -1, -1):
        gain = ps[t] @ f.T @ np.linalg.inv(ps_pred[t + 1])
        xs[t] = xs[t] + gain @ (xs[t + 1] - xs_pred[t + 1])
        ps[t] = ps[t] + gain @ (ps[t + 1] - ps_pred[t + 1]) @ gain.T
    return xs[:, 0]


def filter_table(df: pd.DataFrame, method: str = "median", *, window: int = 5, order: int = 3,
                 p_bound: float = 0.01, fps: float = 30.0) -> pd.DataFrame:
    """Filter every body part's x and y in a DeepLabCut table; likelihoods are kept."""
    if method not in METHODS:
        raise ConfigError(f"filter method '{method}' is not one of {', '.join(METHODS)}")
    if method in ("median", "savgol") and (window < 3 or window % 2 == 0):
        raise ConfigError(f"filter window must be an odd number ≥ 3, got {window}")
    if method == "savgol" and not 0 <= order < window:
        raise ConfigError(f"savgol order must be in 0..{window - 1}, got {order}")
    fn: Callable[[np.ndarray], np.ndarray] = {
        "median": lambda s: median_filter(s, window),
        "savgol": lambda s: savgol_filter(s, window, order),
        "kalman": lambda s: kalman_smoother(s, fps),
    }[method]
    out = df.copy()
    scorer_level = df.columns.get_level_values(0)[0]
    for bp in df.columns.get_level_values("bodyparts").unique():
        like = df[(scorer_level, bp, "likelihood")].to_numpy(dtype=np.float64)
        for coord in ("x", "y"):
            values = df[(scorer_level, bp, coord)].to_numpy(dtype=np.float64).copy()
            values[~(like >= p_bound)] = np.nan
            out[(scorer_level, bp, coord)] = fn(values).astype(df[(scorer_level, bp, coord)].dtype)
    return out


def filter_file(path: str | Path, method: str = "median", *, csv: bool = False,
                **options: float) -> Path:
    """Filter one analysed h5/csv; writes ``<stem>_filtered.h5`` (+ ``.csv``) atomically."""
    path = Path(path)
    df = read_pose_table(path)
    out = path.with_name(f"{path.stem}_filtered.h5")
    write_pose_table(filter_table(df, method, **options), out, csv=csv)  # type: ignore[arg-type]
    return out
