"""Hand labels of a DeepLabCut project: CollectedData tables (h5/csv), single- and multi-animal,
and the labelled frames they point to."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from posed.engines.project.config import SINGLE, Project

from posed.errors import DataError

# --------------------------------------------------------------------------------------------
# Label files
# --------------------------------------------------------------------------------------------


@dataclass
class LabeledData:
    """Hand labels of a set of images.

    Attributes:
        images: Image paths relative to the project root, with ``/`` separators
            (e.g. ``'labeled-data/m4s1/img0000.png'``).
        keypoints: float64 array NxKx2 of (x, y) pixel coordinates; NaN where not labelled.
        bodyparts: The K body part names, in column order.
    """

    images: list[str]
    keypoints: np.ndarray
    bodyparts: tuple[str, ...]


# A label table as both readers return it: one entry per value column.
@dataclass
class _RawTable:
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


def _read_h5(path: Path) -> _RawTable:
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
    for c, coord in enumerate(col_coords):
        if coord not in ("x", "y"):
            continue
        series = df.iloc[:, c]
        column = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        # A value that is present but does not parse is a user error, unlike an empty cell.
        bad = (np.isnan(column) & series.notna().to_numpy()) | np.isinf(column)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            who = col_bps[c] if col_inds is None else f"{col_inds[c]} {col_bps[c]}"
            raise DataError(
                f"{path}: non-numeric {who} {coord} value {series.iloc[row]!r} for image "
                f"'{images[row]}'"
            )
        values[:, c] = column
    return _RawTable(images, col_bps, col_coords, values, col_inds)


def _read_csv(path: Path) -> _RawTable:
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
    table = _RawTable(images, col_bps, col_coords, values, col_inds)
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


def read_label_file(path: str | Path, bodyparts: Sequence[str] | None = None) -> LabeledData:
    """Reads one DeepLabCut label file (``CollectedData_<scorer>.h5`` or ``.csv``).

    Both row layouts are accepted: a single string index of image paths, and the DLC 2.2+
    three-level index (``'labeled-data'``, video, image), which is joined with ``/``.
    Backslashes in paths become ``/``. Coordinates other than x and y (e.g. likelihood) are
    ignored.

    Args:
        path: The ``.h5`` or ``.csv`` label file.
        bodyparts: Body parts to return, in this order. Parts absent from the file come back
            as NaN; parts in the file but not in this list are an error. None returns the
            file's body parts in file order.

    Returns:
        The labels of every row of the file, in file order.

    Raises:
        DataError: The file is missing or unreadable, has non-numeric values, lists an image
            twice, lacks x or y for a body part, labels a body part not in ``bodyparts``, or
            is a multi-animal file (see :func:`read_multianimal_label_file`).
    """
    path = Path(path)
    table = _read_table(path)
    if table.col_inds is not None:
        raise DataError(
            f"{path}: multi-animal label file (columns scorer/individuals/bodyparts/coords) "
            "where a single-animal one (scorer/bodyparts/coords) is expected"
        )

    # Column of x / y of each body part, body parts in file order of first appearance.
    where: dict[str, dict[str, int]] = {}
    for c, (bp, coord) in enumerate(zip(table.col_bps, table.col_coords, strict=True)):
        if coord not in ("x", "y"):
            continue
        slots = where.setdefault(bp, {})
        if coord in slots:
            raise DataError(f"{path}: body part '{bp}' has more than one '{coord}' column")
        slots[coord] = c
    for bp, slots in where.items():
        for coord in ("x", "y"):
            if coord not in slots:
                raise DataError(f"{path}: body part '{bp}' has no '{coord}' column")

    if bodyparts is None:
        out_bps = tuple(where)
    else:
        out_bps = tuple(bodyparts)
        unknown = [bp for bp in where if bp not in out_bps]
        if unknown:
            listed = ", ".join(f"'{bp}'" for bp in unknown)
            noun = "body part" if len(unknown) == 1 else "body parts"
            raise DataError(
                f"{path}: labels for unknown {noun} {listed} "
                f"(config.yaml bodyparts: {', '.join(out_bps)})"
            )

    keypoints = np.full((len(table.images), len(out_bps), 2), np.nan, dtype=np.float64)
    for k, bp in enumerate(out_bps):
        if bp in where:
            keypoints[:, k, 0] = table.values[:, where[bp]["x"]]
            keypoints[:, k, 1] = table.values[:, where[bp]["y"]]
    return LabeledData(images=table.images, keypoints=keypoints, bodyparts=out_bps)


def _read_table(path: Path) -> _RawTable:
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
    return table


@dataclass
class MultiAnimalLabels:
    """Hand labels of a set of images of several animals.

    Attributes:
        images: Image paths relative to the project root, with ``/`` separators.
        keypoints: float64 array NxIxKx2 of (x, y) pixel coordinates of each individual's
            multi-animal body parts; NaN where not labelled.
        individuals: The I individual names.
        bodyparts: The K multi-animal body part names.
        unique: float64 array NxUx2 of the unique body parts (filed under ``single``); NaN
            where not labelled. U may be 0.
        uniquebodyparts: The U unique body part names.
    """

    images: list[str]
    keypoints: np.ndarray
    individuals: tuple[str, ...]
    bodyparts: tuple[str, ...]
    unique: np.ndarray
    uniquebodyparts: tuple[str, ...]


def _names(names: Sequence[str]) -> str:
    return ", ".join(names) if names else "none"


def read_multianimal_label_file(
    path: str | Path,
    individuals: Sequence[str] | None = None,
    multianimalbodyparts: Sequence[str] | None = None,
    uniquebodyparts: Sequence[str] | None = None,
) -> MultiAnimalLabels:
    """Reads one multi-animal DeepLabCut label file (h5 or csv).

    Columns are ``scorer/individuals/bodyparts/coords``; unique body parts are under the
    individual ``single``. Rows are read as by :func:`read_label_file` (both row layouts).

    Args:
        path: The ``.h5`` or ``.csv`` label file.
        individuals: Individuals to return, in this order (absent ones come back NaN);
            None returns the file's individuals in file order.
        multianimalbodyparts: Multi-animal body parts to return, in this order; None: the
            file's.
        uniquebodyparts: Unique body parts to return, in this order; None: those the file
            has under ``single``.

    Returns:
        The labels of every row of the file, in file order.

    Raises:
        DataError: The file is missing, unreadable or single-animal, has non-numeric values,
            lists an image twice, lacks x or y for a column, or names an individual or body
            part that the given lists do not have (or files a body part under the wrong kind
            of individual).
    """
    path = Path(path)
    table = _read_table(path)
    if table.col_inds is None:
        raise DataError(
            f"{path}: single-animal label file (columns scorer/bodyparts/coords) where a "
            "multi-animal one (scorer/individuals/bodyparts/coords) is expected"
        )
    want_inds = None if individuals is None else tuple(individuals)
    want_multi = None if multianimalbodyparts is None else tuple(multianimalbodyparts)
    want_unique = None if uniquebodyparts is None else tuple(uniquebodyparts)

    # Column of x / y of each (individual, body part), in file order of first appearance.
    where: dict[tuple[str, str], dict[str, int]] = {}
    for c, (ind, bp, coord) in enumerate(
        zip(table.col_inds, table.col_bps, table.col_coords, strict=True)
    ):
        if coord not in ("x", "y"):
            continue
        slots = where.setdefault((ind, bp), {})
        if coord in slots:
            raise DataError(
                f"{path}: individual '{ind}' body part '{bp}' has more than one '{coord}' column"
            )
        slots[coord] = c
    for (ind, bp), slots in where.items():
        for coord in ("x", "y"):
            if coord not in slots:
                raise DataError(
                    f"{path}: individual '{ind}' body part '{bp}' has no '{coord}' column"
                )

    file_inds: list[str] = []
    file_multi: list[str] = []
    file_unique: list[str] = []
    for ind, bp in where:
        if ind == SINGLE:
            if want_unique is not None and bp not in want_unique:
                hint = (
                    " (it is a multi-animal body part: label it per individual)"
                    if want_multi is not None and bp in want_multi
                    else ""
                )
                raise DataError(
                    f"{path}: body part '{bp}' of individual '{SINGLE}' is not in "
                    f"config.yaml uniquebodyparts ({_names(want_unique)}){hint}"
                )
            if bp not in file_unique:
                file_unique.append(bp)
            continue
        if want_inds is not None and ind not in want_inds:
            raise DataError(
                f"{path}: labels for unknown individual '{ind}' "
                f"(config.yaml individuals: {_names(want_inds)})"
            )
        if want_multi is not None and bp not in want_multi:
            if want_unique is not None and bp in want_unique:
                raise DataError(
                    f"{path}: unique body part '{bp}' is labelled under individual '{ind}' "
                    f"(unique body parts belong to '{SINGLE}')"
                )
            raise DataError(
                f"{path}: labels for unknown body part '{bp}' of individual '{ind}' "
                f"(config.yaml multianimalbodyparts: {_names(want_multi)})"
            )
        if ind not in file_inds:
            file_inds.append(ind)
        if bp not in file_multi:
            file_multi.append(bp)

    out_inds = want_inds if want_inds is not None else tuple(file_inds)
    out_multi = want_multi if want_multi is not None else tuple(file_multi)
    out_unique = want_unique if want_unique is not None else tuple(file_unique)
    n = len(table.images)
    keypoints = np.full((n, len(out_inds), len(out_multi), 2), np.nan, dtype=np.float64)
    for i, ind in enumerate(out_inds):
        for k, bp in enumerate(out_multi):
            slots = where.get((ind, bp))
            if slots is not None:
                keypoints[:, i, k, 0] = table.values[:, slots["x"]]
                keypoints[:, i, k, 1] = table.values[:, slots["y"]]
    unique = np.full((n, len(out_unique), 2), np.nan, dtype=np.float64)
    for u, bp in enumerate(out_unique):
        slots = where.get((SINGLE, bp))
        if slots is not None:
            unique[:, u, 0] = table.values[:, slots["x"]]
            unique[:, u, 1] = table.values[:, slots["y"]]
    return MultiAnimalLabels(
        images=table.images,
        keypoints=keypoints,
        individuals=out_inds,
        bodyparts=out_multi,
        unique=unique,
        uniquebodyparts=out_unique,
    )


def _label_file_for(folder: Path, scorer: str) -> Path | None:
    h5 = folder / f"CollectedData_{scorer}.h5"
    if h5.is_file():
        return h5
    csv_path = folder / f"CollectedData_{scorer}.csv"
    return csv_path if csv_path.is_file() else None


def load_labels(project: Project, check_images: bool = True) -> LabeledData:
    """Reads all hand labels of a project.

    Reads ``labeled-data/*/CollectedData_<scorer>.h5`` (the ``.csv`` when a folder has no
    ``.h5``), folders in sorted order, rows in file order. Rows without any label are kept:
    they are frames without the animal.

    Args:
        project: The project.
        check_images: Whether to check that every listed image exists.

    Returns:
        The labels, with columns in ``project.bodyparts`` order.

    Raises:
        DataError: No label file is found, a label file is invalid, an image is listed twice,
            (with ``check_images``) a listed image is missing, or the project is multi-animal
            (see :func:`load_multianimal_labels`).
    """
    if project.multianimal:
        # Training, evaluation and analysis read labels through here and are single-animal.
        raise DataError(
            f"{project.config_path}: multi-animal project (multianimalproject: true): "
            "training and evaluation of multi-animal models are not supported yet"
        )
    source: dict[str, Path] = {}
    parts = []
    for label_file in _label_files(project):
        data = read_label_file(label_file, project.bodyparts)
        _check_images(project, label_file, data.images, source, check_images)
        parts.append(data)
    return LabeledData(
        images=[image for data in parts for image in data.images],
        keypoints=np.concatenate([data.keypoints for data in parts], axis=0),
        bodyparts=project.bodyparts,
    )


def _label_files(project: Project) -> list[Path]:
    labeled = project.root / "labeled-data"
    folders = (
        sorted(p for p in labeled.iterdir() if p.is_dir() and not p.name.startswith("."))
        if labeled.is_dir()
        else []
    )
    files = [f for f in (_label_file_for(folder, project.scorer) for folder in folders) if f]
    if not files:
        raise DataError(f"{labeled}: no CollectedData_{project.scorer}.h5 or .csv")
    return files


def _check_images(
    project: Project,
    label_file: Path,
    images: list[str],
    source: dict[str, Path],
    check_images: bool,
) -> None:
    """No image may be labelled in two files; with ``check_images`` every image must exist.
    ``source`` maps the images seen so far to their label file and is updated."""
    for image in images:
        if image in source:
            raise DataError(f"{label_file}: image '{image}' is also labelled in {source[image]}")
        source[image] = label_file
        if check_images and not (project.root / image).is_file():
            raise DataError(f"{project.root / image}: image missing (listed in {label_file})")


def load_multianimal_labels(project: Project, check_images: bool = True) -> MultiAnimalLabels:
    """Reads all hand labels of a multi-animal project.

    Files and rows are read as by :func:`load_labels`; every label file must agree with the
    config's ``individuals``, ``multianimalbodyparts`` and ``uniquebodyparts``.

    Args:
        project: A multi-animal project.
        check_images: Whether to check that every listed image exists.

    Returns:
        The labels, individuals and body parts in config order.

    Raises:
        DataError: The project is single-animal, no label file is found, a label file is
            invalid or disagrees with the config, an image is listed twice, or (with
            ``check_images``) a listed image is missing.
    """
    if not project.multianimal:
        raise DataError(
            f"{project.config_path}: not a multi-animal project (multianimalproject is not true)"
        )
    source: dict[str, Path] = {}
    parts = []
    for label_file in _label_files(project):
        data = read_multianimal_label_file(
            label_file, project.individuals, project.multianimalbodyparts, project.uniquebodyparts
        )
        _check_images(project, label_file, data.images, source, check_images)
        parts.append(data)
    return MultiAnimalLabels(
        images=[image for data in parts for image in data.images],
        keypoints=np.concatenate([data.keypoints for data in parts], axis=0),
        individuals=project.individuals,
        bodyparts=project.multianimalbodyparts,
        unique=np.concatenate([data.unique for data in parts], axis=0),
        uniquebodyparts=project.uniquebodyparts,
    )


def load_image(project_root: Path, relpath: str) -> np.ndarray:
    """Loads a project image as RGB.

    Args:
        project_root: The project folder.
        relpath: Image path relative to the project folder.

    Returns:
        uint8 array HxWx3 in RGB order (grayscale images are expanded to 3 channels).

    Raises:
        DataError: The image is missing or cannot be decoded.
    """
    import cv2

    path = Path(project_root) / relpath
    try:
        # fromfile + imdecode instead of imread: imread cannot open non-ASCII paths on Windows
        # and returns None without saying why.
        buffer = np.fromfile(path, dtype=np.uint8)
    except FileNotFoundError as exc:
        raise DataError(f"{path}: image missing") from exc
    except OSError as exc:
        raise DataError(f"{path}: cannot read image ({exc.strerror or exc})") from exc
    image = cv2.imdecode(buffer, cv2.IMREAD_COLOR) if buffer.size else None
    if image is None:
        raise DataError(f"{path}: cannot decode image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
