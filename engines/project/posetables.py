"""DeepLabCut-compatible pose tables.

DeepLabCut (2.x and 3.x, single animal) stores the poses it predicts for a video in
``<video stem><scorer>.h5``: a pandas HDF5 file, key ``df_with_missing``, PyTables ``table``
format, one row per frame and one float32 column per (scorer, body part, coordinate), with the
column MultiIndex levels named ``scorer``, ``bodyparts``, ``coords`` and coordinates ``x``, ``y``,
``likelihood``. The row index holds frame numbers (int64) for videos and image paths for
analysed image folders. Optionally the same table is written as CSV with three header rows.
This module writes that layout and reads it back (ours or DeepLabCut's own files).

Multi-animal tables have a fourth column level, ``individuals``, between ``scorer`` and
``bodyparts`` (names ``scorer/individuals/bodyparts/coords``): every individual has the same
multi-animal body parts, and body parts that exist once per image (DeepLabCut's unique body
parts) follow under the pseudo-individual ``single``. :func:`multianimal_poses_to_frame`,
:func:`read_multianimal_pose_table` and :func:`multianimal_frame_to_poses` handle that layout;
:func:`write_pose_table` writes both.
"""

from __future__ import annotations

import datetime as _dt
import enum
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import tables

from posed.engines.io import atomic_path, cleanup_stale_temps
from posed.errors import DataError

__all__ = [
    "COLUMN_NAMES",
    "COORDS",
    "camel_net",
    "H5_KEY",
    "MA_COLUMN_NAMES",
    "MultiAnimalPoses",
    "multianimal_frame_to_poses",
    "multianimal_poses_to_frame",
    "read_multianimal_pose_table",
    "metadata_path",
    "output_stem",
    "poses_to_frame",
    "read_pose_table",
    "scorer_name",
    "write_metadata",
    "write_pose_table",
]

H5_KEY = "df_with_missing"
"""The HDF5 key DeepLabCut stores pose tables under."""
COLUMN_NAMES = ("scorer", "bodyparts", "coords")
"""Names of the three column MultiIndex levels."""
COORDS = ("x", "y", "likelihood")
"""The coordinates stored per body part, in column order."""
MA_COLUMN_NAMES = ("scorer", "individuals", "bodyparts", "coords")
"""Names of the four column MultiIndex levels of multi-animal tables."""
SINGLE = "single"
"""The pseudo-individual that holds the unique body parts of multi-animal tables."""
POSE_DTYPE = np.float32
"""Value dtype of DeepLabCut's pose tables (checked on a DeepLabCut 3.0.2 output file)."""
# pandas <= 3.0 wrote this storage-schema marker on every table; pandas >= 3.1 stopped
# (pandas-dev/pandas GH-62792), and without it pandas 2.x (what DeepLabCut 3 runs on) takes
# the file for a pre-0.10.1 one and fails to read it. DeepLabCut's own files carry "0.15.2".
_PANDAS_SCHEMA_VERSION = "0.15.2"


def _one_line(exc: BaseException) -> str:
    """Squash an exception message to one line for a one-line user error."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def camel_net(net: str) -> str:
    """The network part of a scorer name (see :func:`scorer_name`): ``resnet_50`` ->
    ``Resnet50``; empty when ``net`` has no letters or digits."""
    parts = [p.replace(".", "") for p in net.split("_")]
    return "".join(p[:1].upper() + p[1:] for p in parts if p)


def scorer_name(net: str, project_name: str, shuffle: int, snapshot: int | str) -> str:
    """Build the scorer name that labels a model's predictions.

    DeepLabCut 3 names its scorer like ``DLC_Resnet50_openfieldOct30shuffle1_snapshot_1``; posed
    uses the same pattern with the prefix ``posed``:
    ``posed_{CamelNet}_{project_name}shuffle{shuffle}_snapshot_{snapshot}``.

    ``CamelNet`` is the network name split at ``_``, with every ``.`` dropped and the first
    letter of each part upper-cased, then joined: ``resnet_50`` -> ``Resnet50``,
    ``mobilenet_v2_0.35`` -> ``MobilenetV2035``, ``hrnet_w32`` -> ``HrnetW32``.

    Args:
        net: Network name as in DeepLabCut configs, e.g. ``"resnet_50"``.
        project_name: DeepLabCut's ``Task`` + ``date``, e.g. ``"openfieldOct30"``.
        shuffle: Shuffle number.
        snapshot: Snapshot number (or DeepLabCut 3 snapshot id such as ``"best-200"``).

    Returns:
        The scorer name.

    Raises:
        ValueError: ``net`` has no letters or digits.
    """
    camel = camel_net(net)
    if not camel:
        raise ValueError(f"network name {net!r} is empty")
    return f"posed_{camel}_{project_name}shuffle{shuffle}_snapshot_{snapshot}"


def output_stem(video: str | Path, scorer: str) -> str:
    """Return the stem DeepLabCut gives a video's output files: video stem + scorer.

    Args:
        video: The analysed video.
        scorer: The scorer name (see :func:`scorer_name`).

    Returns:
        E.g. ``"m3v1mp4DLC_Resnet50_openfieldOct30shuffle1_snapshot_1"``; add ``.h5``,
        ``.csv`` or ``_meta.json``.
    """
    return f"{Path(video).stem}{scorer}"


def metadata_path(h5_path: str | Path) -> Path:
    """Return the metadata file beside a pose table: ``<h5 stem>_meta.json``.

    Args:
        h5_path: The pose table's ``.h5`` path.

    Returns:
        The metadata path in the same folder.
    """
    h5_path = Path(h5_path)
    return h5_path.with_name(f"{h5_path.stem}_meta.json")


def poses_to_frame(
    poses: np.ndarray,
    bodyparts: Sequence[str],
    scorer: str,
    index: Sequence[Any] | pd.Index | None = None,
) -> pd.DataFrame:
    """Turn an array of poses into a DeepLabCut pose table.

    Args:
        poses: N×K×3 array: for each of N frames and K body parts, x, y (pixels) and likelihood.
        bodyparts: The K body part names, in the order of ``poses``' second axis.
        scorer: The scorer name (top column level).
        index: Row labels, N of them (e.g. image paths; ``Path`` objects become ``str``). By
            default the frame numbers 0..N-1.

    Returns:
        A float32 DataFrame with column MultiIndex (scorer, bodyparts, coords).

    Raises:
        ValueError: Shapes do not match, body parts repeat, or the values are not numeric.
    """
    arr = _pose_array(poses, "poses")
    names = [str(b) for b in bodyparts]
    if arr.ndim != 3 or arr.shape[2] != len(COORDS) or arr.shape[1] != len(names):
        raise ValueError(
            f"poses shape {arr.shape} does not match (frames, {len(names)} bodyparts, 3)"
        )
    if len(set(names)) != len(names):
        raise ValueError(f"body part names repeat: {names}")
    n = arr.shape[0]
    columns = pd.MultiIndex.from_product([[scorer], names, list(COORDS)], names=COLUMN_NAMES)
    return pd.DataFrame(
        arr.reshape(n, len(names) * len(COORDS)), index=_row_index(index, n), columns=columns
    )


def _pose_array(poses: Any, what: str) -> np.ndarray:
    try:
        return np.asarray(poses, dtype=POSE_DTYPE)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} must be numeric: {_one_line(exc)}") from exc


def _row_index(index: Sequence[Any] | pd.Index | None, n: int) -> pd.Index:
    """The row index of a table of ``n`` frames: ``index``, by default 0..n-1."""
    if index is None:
        return pd.RangeIndex(n)
    if isinstance(index, pd.Index):
        row_index = index
    else:
        # HDF5 tables cannot store Path objects; DeepLabCut keeps image paths as str.
        row_index = pd.Index([str(i) if isinstance(i, Path) else i for i in index])
    if len(row_index) != n:
        raise ValueError(f"index has {len(row_index)} labels for {n} frames of poses")
    return row_index


def _hdf5_reason(exc: BaseException) -> str:
    """The innermost problem of a PyTables error, which carries HDF5's whole C call stack."""
    text = str(exc)
    if "HDF5 error back trace" not in text:
        return _one_line(exc)
    stack = text.split("End of HDF5 error back trace")[0]
    problems = [line.strip() for line in stack.splitlines()
                if line.strip() and not line.strip().startswith(("File ", "HDF5 error"))]
    inner = " ".join(problems[-1].split()) if problems else "HDF5 error"
    if inner.startswith("truncated file"):
        # HDF5 does not report a failed write (ENOSPC, EFBIG) when pandas closes the file;
        # reopening it is where the damage shows.
        return "the HDF5 file came out truncated: disk full or over quota?"
    return f"HDF5: {inner}"


def _write_error(path: Path, exc: BaseException) -> DataError:
    return DataError(f"{path}: cannot write ({_hdf5_reason(exc)})")


def _mark_schema_version(h5_file: Path) -> None:
    """Give the table the ``pandas_version`` attribute older pandas need to read it."""
    with tables.open_file(h5_file, mode="a") as handle:
        attrs = handle.get_node(f"/{H5_KEY}")._v_attrs
        if "pandas_version" not in attrs:
            attrs.pandas_version = _PANDAS_SCHEMA_VERSION


def write_pose_table(df: pd.DataFrame, h5_path: str | Path, csv: bool = False) -> list[Path]:
    """Write a pose table as DeepLabCut does, atomically.

    The HDF5 file uses key ``df_with_missing`` and the PyTables ``table`` format (pandas'
    ``fixed`` format for a table with two row levels, which ``table`` cannot hold); with ``csv``
    the same table is also written beside it (same stem, ``.csv``) with the three header rows
    ``scorer``, ``bodyparts``, ``coords``. Each file is written under a temporary name and moved
    into place only when complete, so readers never see a partial file. Missing folders are
    created, and temporaries left by crashed earlier runs are removed.

    Args:
        df: A table from :func:`poses_to_frame` (or of the same layout).
        h5_path: Destination ``.h5`` path.
        csv: Also write the ``.csv``.

    Returns:
        The paths written: the ``.h5``, then the ``.csv`` if asked for.

    Raises:
        DataError: A file cannot be written (permissions, disk full, ...).
    """
    h5_path = Path(h5_path)
    written: list[Path] = []
    targets = [h5_path] + ([h5_path.with_suffix(".csv")] if csv else [])
    try:
        h5_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _write_error(h5_path.parent, exc) from exc
    for target in targets:
        cleanup_stale_temps(target.parent, target.name)
        try:
            with atomic_path(target) as tmp:
                if target is h5_path:
                    # PyTables tables cannot hold a row MultiIndex beside the column one (a
                    # looped stream's (loop, frame) rows): those use pandas' fixed format.
                    fmt = "table" if df.index.nlevels == 1 else "fixed"
                    df.to_hdf(tmp, key=H5_KEY, format=fmt, mode="w")
                    _mark_schema_version(tmp)
                else:
                    # An index name would add a fourth header row that DeepLabCut's readers
                    # (header=[0, 1, 2]) would take for data.
                    df.rename_axis(index=[None] * df.index.nlevels).to_csv(tmp)
        except (OSError, RuntimeError) as exc:
            # RuntimeError covers tables.HDF5ExtError (e.g. disk full inside HDF5).
            raise _write_error(target, exc) from exc
        written.append(target)
    return written


def _to_jsonable(value: Any, where: str) -> Any:
    """Convert ``value`` to plain JSON types; ``where`` names the key path for errors."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, enum.Enum):
        return _to_jsonable(value.value, where)
    if isinstance(value, np.generic):
        return _to_jsonable(value.item(), where)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        # JSON has no NaN/Infinity; strict readers (browsers, jq) reject them.
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.ndarray):
        return _to_jsonable(value.tolist(), where)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (_dt.datetime, _dt.date, _dt.time)):
        return value.isoformat()
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            skey = str(_to_jsonable(key, where)) if not isinstance(key, str) else key
            if skey in out:
                raise ValueError(f"metadata {where or 'root'}: two keys become {skey!r}")
            out[skey] = _to_jsonable(item, f"{where}.{skey}" if where else skey)
        return out
    if isinstance(value, (set, frozenset)):
        items = [_to_jsonable(v, where) for v in value]
        try:
            return sorted(items)
        except TypeError:
            return items
    if isinstance(value, (list, tuple)):
        return [_to_jsonable(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise TypeError(f"metadata {where or 'root'}: cannot store {type(value).__name__} in JSON")


def write_metadata(path: str | Path, meta: Mapping[str, Any]) -> Path:
    """Write analysis metadata as JSON (never pickle), atomically, keys sorted.

    numpy scalars and arrays become numbers and lists, paths and dates strings, tuples and sets
    lists, and non-finite floats ``null``. For a pose table the file is
    ``<h5 stem>_meta.json`` (see :func:`metadata_path`).

    Args:
        path: Destination file.
        meta: The metadata.

    Returns:
        ``path`` as a Path.

    Raises:
        TypeError: A value has no JSON form.
        DataError: The file cannot be written.
    """
    path = Path(path)
    text = json.dumps(_to_jsonable(meta, ""), indent=2, sort_keys=True, allow_nan=False) + "\n"
    cleanup_stale_temps(path.parent, path.name)
    try:
        with atomic_path(path) as tmp:
            tmp.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise _write_error(path, exc) from exc
    return path


def read_h5_table(path: Path) -> pd.DataFrame:
    """The DataFrame at key ``df_with_missing`` (or the file's only key) of a pandas HDF5 file.

    Shared by pose tables and DeepLabCut label files. PyTables' own errors pass through; the
    callers wrap them with their file name.
    """
    with pd.HDFStore(path, mode="r") as store:
        keys = [k.lstrip("/") for k in store.keys()]
        if H5_KEY in keys:
            key = H5_KEY
        elif len(keys) == 1:
            # DeepLabCut's labelled-data files use another key ('keypoints'); accept any
            # single table.
            key = keys[0]
        else:
            raise DataError(f"{path}: no '{H5_KEY}' table (keys: {', '.join(keys) or 'none'})")
        df = store.get(key)
    if not isinstance(df, pd.DataFrame):
        raise DataError(f"{path}: '{key}' is not a table")
    return df


def read_pose_table(path: str | Path) -> pd.DataFrame:
    """Read a pose table written by posed or DeepLabCut.

    ``.h5``/``.hdf5``/``.hdf`` files are read at key ``df_with_missing`` (or their only key);
    other files as DeepLabCut CSV (three header rows, index in the first column). Values are
    returned as float32, as DeepLabCut writes them, so an h5 file and its CSV read equal.

    Args:
        path: The file.

    Returns:
        The table, columns MultiIndex (scorer, bodyparts, coords).

    Raises:
        DataError: The file is missing, unreadable or not a single-animal pose table.
    """
    return _read_pose_file(path, COLUMN_NAMES, "pose table")


def _read_pose_file(path: str | Path, levels: Sequence[str], what: str) -> pd.DataFrame:
    """A pose table with the column ``levels`` (CSV: one header row per level), float32."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        if path.suffix.lower() in (".h5", ".hdf5", ".hdf"):
            df = read_h5_table(path)
        else:
            df = pd.read_csv(path, header=list(range(len(levels))), index_col=0)
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - pandas/PyTables raise many types on bad files
        raise DataError(f"{path}: cannot read pose table ({_one_line(exc)})") from exc
    cols = df.columns
    if not isinstance(cols, pd.MultiIndex) or cols.nlevels != len(levels):
        raise DataError(
            f"{path}: not a {what} (expected {len(levels)} column levels "
            f"{'/'.join(levels)}, got {cols.nlevels})"
        )
    coords = set(cols.get_level_values(-1))
    if not coords <= set(COORDS) or not {"x", "y"} <= coords:
        raise DataError(f"{path}: not a pose table (coords {sorted(map(str, coords))})")
    if list(cols.names) != list(levels):
        df.columns = cols.set_names(list(levels))
    try:
        df = df.astype(POSE_DTYPE)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{path}: pose table has non-numeric values ({_one_line(exc)})") from exc
    return df


# --------------------------------------------------------------------------------------------
# Multi-animal tables
# --------------------------------------------------------------------------------------------


def multianimal_poses_to_frame(
    poses: np.ndarray,
    individuals: Sequence[str],
    bodyparts: Sequence[str],
    scorer: str,
    index: Sequence[Any] | pd.Index | None = None,
    unique: np.ndarray | None = None,
    uniquebodyparts: Sequence[str] = (),
) -> pd.DataFrame:
    """Turn per-individual poses into a DeepLabCut multi-animal pose table.

    Args:
        poses: N×I×K×3 array: for each frame, individual and multi-animal body part, x, y
            (pixels) and likelihood; NaN where an individual or part was not found.
        individuals: The I individual names (``single`` is reserved).
        bodyparts: The K multi-animal body part names.
        scorer: The scorer name (top column level).
        index: Row labels, N of them; by default the frame numbers 0..N-1.
        unique: N×U×3 poses of the unique body parts, filed under individual ``single``.
        uniquebodyparts: The U unique body part names.

    Returns:
        A float32 DataFrame with column MultiIndex (scorer, individuals, bodyparts, coords),
        individuals in the given order, then ``single``.

    Raises:
        ValueError: Shapes do not match, names repeat or the values are not numeric.
    """
    arr = _pose_array(poses, "poses")
    inds = [str(i) for i in individuals]
    names = [str(b) for b in bodyparts]
    unames = [str(b) for b in uniquebodyparts]
    if arr.ndim != 4 or arr.shape[1:] != (len(inds), len(names), len(COORDS)):
        raise ValueError(
            f"poses shape {arr.shape} does not match (frames, {len(inds)} individuals, "
            f"{len(names)} bodyparts, 3)"
        )
    for label, values in (("individual", inds), ("body part", names + unames)):
        if len(set(values)) != len(values):
            raise ValueError(f"{label} names repeat: {values}")
    if SINGLE in inds:
        raise ValueError(f"individual name '{SINGLE}' is reserved for unique body parts")
    n = arr.shape[0]
    values = [arr.reshape(n, -1)]
    tuples = [(scorer, i, b, c) for i in inds for b in names for c in COORDS]
    if unames:
        if unique is None:
            raise ValueError(f"{len(unames)} unique body parts but no unique poses")
        uarr = _pose_array(unique, "unique")
        if uarr.shape != (n, len(unames), len(COORDS)):
            raise ValueError(
                f"unique shape {uarr.shape} does not match ({n} frames, {len(unames)} "
                "unique bodyparts, 3)"
            )
        values.append(uarr.reshape(n, -1))
        tuples += [(scorer, SINGLE, b, c) for b in unames for c in COORDS]
    elif unique is not None and np.asarray(unique).size:
        raise ValueError("unique poses given without uniquebodyparts")
    columns = pd.MultiIndex.from_tuples(tuples, names=MA_COLUMN_NAMES)
    return pd.DataFrame(np.concatenate(values, axis=1), index=_row_index(index, n), columns=columns)


def read_multianimal_pose_table(path: str | Path) -> pd.DataFrame:
    """Read a multi-animal pose table written by posed or DeepLabCut.

    Like :func:`read_pose_table`, for tables with the four column levels
    ``scorer/individuals/bodyparts/coords`` (CSV: four header rows).

    Args:
        path: The ``.h5`` or ``.csv`` file.

    Returns:
        The table, float32, column level names set to :data:`MA_COLUMN_NAMES`.

    Raises:
        DataError: The file is missing, unreadable or not a multi-animal pose table.
    """
    return _read_pose_file(path, MA_COLUMN_NAMES, "multi-animal pose table")


@dataclass(frozen=True)
class MultiAnimalPoses:
    """The arrays of a multi-animal pose table.

    Attributes:
        poses: float32 N×I×K×3 (x, y, likelihood); NaN where the table has no value (a
            likelihood column that is absent reads as NaN).
        individuals: The I individuals, in column order (``single`` excluded).
        bodyparts: The K multi-animal body parts, in column order.
        unique: float32 N×U×3 of the unique body parts (individual ``single``).
        uniquebodyparts: The U unique body parts.
        index: The table's row index.
    """

    poses: np.ndarray
    individuals: tuple[str, ...]
    bodyparts: tuple[str, ...]
    unique: np.ndarray
    uniquebodyparts: tuple[str, ...]
    index: pd.Index


def multianimal_frame_to_poses(df: pd.DataFrame) -> MultiAnimalPoses:
    """Split a multi-animal pose table (see :func:`multianimal_poses_to_frame`) into arrays.

    Args:
        df: A table with four column levels; only the first scorer is read.

    Returns:
        The arrays and names.

    Raises:
        ValueError: The table does not have four column levels.
    """
    cols = df.columns
    if not isinstance(cols, pd.MultiIndex) or cols.nlevels != 4:
        raise ValueError("expected a table with columns scorer/individuals/bodyparts/coords")
    scorer = cols.get_level_values(0)[0]
    sub = df.loc[:, cols.get_level_values(0) == scorer]
    position: dict[tuple[str, str, str], int] = {}
    inds: list[str] = []
    parts: list[str] = []
    uparts: list[str] = []
    for c, (_, ind, bp, coord) in enumerate(sub.columns):
        ind, bp, coord = str(ind), str(bp), str(coord)
        position[(ind, bp, coord)] = c
        if ind == SINGLE:
            if bp not in uparts:
                uparts.append(bp)
        else:
            if ind not in inds:
                inds.append(ind)
            if bp not in parts:
                parts.append(bp)
    values = sub.to_numpy(dtype=POSE_DTYPE, na_value=np.nan)
    n = len(sub)

    def gather(ind: str, names: list[str]) -> np.ndarray:
        out = np.full((n, len(names), len(COORDS)), np.nan, dtype=POSE_DTYPE)
        for k, bp in enumerate(names):
            for j, coord in enumerate(COORDS):
                c = position.get((ind, bp, coord))
                if c is not None:
                    out[:, k, j] = values[:, c]
        return out

    poses = np.stack([gather(ind, parts) for ind in inds], axis=1) if inds else np.full(
        (n, 0, len(parts), len(COORDS)), np.nan, dtype=POSE_DTYPE
    )
    return MultiAnimalPoses(
        poses=poses,
        individuals=tuple(inds),
        bodyparts=tuple(parts),
        unique=gather(SINGLE, uparts),
        uniquebodyparts=tuple(uparts),
        index=df.index,
    )
