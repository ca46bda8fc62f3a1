"""The raw table of a DeepLabCut label file (CollectedData h5/csv), single- or multi-animal:
image names and the x/y value columns with their (individual,) body part and coordinate."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from posed.errors import DataError

Point = tuple[str | None, str]
"""An (individual, body part) pair; the individual is None in single-animal files."""


@dataclass
class LabelTable:
    """A label file as read, with one entry per value column (``col_*``) and one row per image."""

    images: list[str]
    col_bps: list[str]
    col_coords: list[str]
    values: np.ndarray  # float64 NxC; only the x/y columns are filled in
    col_inds: list[str] | None = None  # the individuals level of multi-animal files

    def column(self, c: int) -> str:
        """How errors name column ``c``: ``'snout'`` or ``'mouse1 snout'``."""
        return self.col_bps[c] if self.col_inds is None else f"{self.col_inds[c]} {self.col_bps[c]}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _check_unique_images(images: list[str], path: Path) -> None:
    seen: set[str] = set()
    for image in images:
        if image in seen:
            raise DataError(f"{path}: image '{image}' is listed more than once")
        seen.add(image)


def _read_h5(path: Path) -> LabelTable:
    import pandas as pd  # pandas is heavy; import only when labels are read
    from posed.engines.project.posetables import read_h5_table

    try:
        df = read_h5_table(path)
    except DataError:
        raise
    except Exception as exc:  # PyTables raises many unrelated types for bad files
        raise DataError(f"{path}: cannot read HDF5 label file ({_first_line(exc)})") from exc
    if not isinstance(df, pd.DataFrame):
        raise DataError(f"{path}: key holds a {type(df).__name__}, not a label table")

    if isinstance(df.index, pd.MultiIndex):
        # DLC 2.2+: ('labeled-data', '<video>', '<image>').
        images = ["/".join(str(part) for part in key) for key in df.index]
    else:
        images = [str(key) for key in df.index]
    images = [image.replace("\\", "/") for image in images]

    columns = df.columns
    if not isinstance(columns, pd.MultiIndex) or columns.nlevels < 2:
        raise DataError(
            f"{path}: expected DeepLabCut column levels scorer/bodyparts/coords, got flat columns"
        )
    names = list(columns.names)
    col_inds = None
    if "individuals" in names or columns.nlevels == 4:
        ind_level = names.index("individuals") if "individuals" in names else 1
        col_inds = [str(v) for v in columns.get_level_values(ind_level)]
    elif columns.nlevels > 3:
        raise DataError(
            f"{path}: expected column levels scorer/bodyparts/coords or "
            f"scorer/individuals/bodyparts/coords, got {columns.nlevels} levels"
        )
    bp_level = names.index("bodyparts") if "bodyparts" in names else columns.nlevels - 2
    coord_level = names.index("coords") if "coords" in names else columns.nlevels - 1
    col_bps = [str(v) for v in columns.get_level_values(bp_level)]
    col_coords = [str(v) for v in columns.get_level_values(coord_level)]

    values = np.full((len(images), len(col_bps)), np.nan, dtype=np.float64)
    table = LabelTable(images, col_bps, col_coords, values, col_inds)
    for c, coord in enumerate(col_coords):
        if coord not in ("x", "y"):
            continue
        series = df.iloc[:, c]
        column = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        # A value that is present but does not parse is a user error, unlike an empty cell.
        bad = (np.isnan(column) & series.notna().to_numpy()) | np.isinf(column)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"{path}: non-numeric {table.column(c)} {coord} value {series.iloc[row]!r} for "
                f"image '{images[row]}'"
            )
        values[:, c] = column
    return table


def _read_csv(path: Path) -> LabelTable:
    # Parsed by hand rather than with pandas.read_csv: after a multi-row header pandas takes a
    # first data row whose cells are all empty (a frame without labels) for a row of index
    # names and silently drops it.
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot read csv label file ({_first_line(exc)})") from exc
    if len(rows) < 3:
        raise DataError(
            f"{path}: not a DeepLabCut label csv (needs header rows scorer/bodyparts/coords)"
        )
    # Multi-animal files have a fourth header row, 'individuals', after 'scorer'. It is
    # recognised by its level name or, when pandas wrote no level names, by the fourth row
    # holding only coordinate names.
    coord_names = {"x", "y", "likelihood"}
    multi = bool(rows[1]) and rows[1][0].strip() == "individuals"
    if not multi and len(rows) >= 4:
        cells = [cell.strip() for cell in rows[3][1:]]
        multi = any(cells) and all(cell in coord_names for cell in cells if cell)
    n_header = 4 if multi else 3
    if len(rows) < n_header:
        raise DataError(
            f"{path}: not a DeepLabCut label csv (needs header rows "
            "scorer/individuals/bodyparts/coords)"
        )

    # Pandas writes the level name ('scorer') in the first cell and one empty cell per further
    # row-index level, so the first non-empty cell after it starts the value columns.
    first = rows[0]
    n_index = next((i for i, cell in enumerate(first[1:], start=1) if cell.strip()), None)
    if n_index is None:
        raise DataError(f"{path}: not a DeepLabCut label csv (first row names no scorer)")
    width = len(first)
    for line, row in enumerate(rows[1:n_header], start=2):
        if len(row) != width:
            raise DataError(
                f"{path}: header line {line} has {len(row)} columns, line 1 has {width}"
            )
    col_inds = [cell.strip() for cell in rows[1][n_index:]] if multi else None
    col_bps = [cell.strip() for cell in rows[n_header - 2][n_index:]]
    col_coords = [cell.strip() for cell in rows[n_header - 1][n_index:]]

    body = [
        (line, row)
        for line, row in enumerate(rows[n_header:], start=n_header + 1)
        if any(c.strip() for c in row)
    ]
    if body:
        line, row = body[0]
        names = [c.strip() for c in row[:n_index]]
        # A row of index names (written when the index is named) has empty value cells and no
        # file name with an extension, which every image row has.
        if not any(c.strip() for c in row[n_index:]) and "." not in names[-1]:
            body = body[1:]

    images: list[str] = []
    values = np.full((len(body), len(col_bps)), np.nan, dtype=np.float64)
    xy_columns = [c for c, coord in enumerate(col_coords) if coord in ("x", "y")]
    table = LabelTable(images, col_bps, col_coords, values, col_inds)
    for r, (line, row) in enumerate(body):
        if len(row) != width:
            raise DataError(f"{path}: line {line} has {len(row)} columns, expected {width}")
        images.append("/".join(cell.strip() for cell in row[:n_index]).replace("\\", "/"))
        for c in xy_columns:
            cell = row[n_index + c].strip()
            if not cell:
                continue
            try:
                value = float(cell)
            except ValueError:
                value = math.inf  # reported below together with infinities
            if math.isinf(value):
                raise DataError(
                    f"{path}: line {line}: non-numeric {table.column(c)} {col_coords[c]} "
                    f"value {cell!r}"
                )
            values[r, c] = value
    return table


def read_label_table(path: Path, multianimal: bool) -> LabelTable:
    """The label table of ``path``, which must be a multi-animal file or a single-animal one
    as ``multianimal`` says."""
    if not path.is_file():
        raise DataError(f"{path}: label file not found")
    suffix = path.suffix.lower()
    if suffix in (".h5", ".hdf5", ".hdf"):
        table = _read_h5(path)
    elif suffix == ".csv":
        table = _read_csv(path)
    else:
        raise DataError(f"{path}: unknown label file type '{path.suffix}' (expected .h5 or .csv)")
    _check_unique_images(table.images, path)
    found = table.col_inds is not None
    if found != multianimal:
        kind = {True: "multi-animal", False: "single-animal"}
        levels = {True: "scorer/individuals/bodyparts/coords", False: "scorer/bodyparts/coords"}
        raise DataError(
            f"{path}: {kind[found]} label file (columns {levels[found]}) where a "
            f"{kind[multianimal]} one ({levels[multianimal]}) is expected"
        )
    return table


def _who(ind: str | None, bp: str) -> str:
    """How errors name a labelled point: ``body part 'snout'`` (with its individual first in
    multi-animal files)."""
    return f"body part '{bp}'" if ind is None else f"individual '{ind}' body part '{bp}'"


def xy_columns(table: LabelTable, path: Path) -> dict[Point, dict[str, int]]:
    """Column of x and of y of each (individual, body part), in file order of first
    appearance; the individual is None in single-animal files.

    Raises:
        DataError: A point has two x (or y) columns, or lacks one.
    """
    inds = table.col_inds if table.col_inds is not None else [None] * len(table.col_bps)
    where: dict[Point, dict[str, int]] = {}
    for c, (ind, bp, coord) in enumerate(
        zip(inds, table.col_bps, table.col_coords, strict=True)
    ):
        if coord not in ("x", "y"):
            continue
        slots = where.setdefault((ind, bp), {})
        if coord in slots:
            raise DataError(f"{path}: {_who(ind, bp)} has more than one '{coord}' column")
        slots[coord] = c
    for (ind, bp), slots in where.items():
        for coord in ("x", "y"):
            if coord not in slots:
                raise DataError(f"{path}: {_who(ind, bp)} has no '{coord}' column")
    return where


def gather(
    table: LabelTable, where: dict[Point, dict[str, int]], points: Sequence[Point]
) -> np.ndarray:
    """float64 N×len(points)×2 (x, y) of the given (individual, body part) points; NaN for
    points the file does not have."""
    out = np.full((len(table.images), len(points), 2), np.nan, dtype=np.float64)
    for k, point in enumerate(points):
        slots = where.get(point)
        if slots is not None:
            out[:, k, 0] = table.values[:, slots["x"]]
            out[:, k, 1] = table.values[:, slots["y"]]
    return out
