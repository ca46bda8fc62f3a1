"""Reading DeepLabCut projects: config.yaml, labelled frames, and the train/test split.

A DeepLabCut project is a folder with a ``config.yaml`` and ``labeled-data/<video>/`` folders
that each hold PNG frames plus ``CollectedData_<scorer>.h5`` (and usually a ``.csv`` copy) with
the hand labels. This module reads those files without DeepLabCut installed, checks them, and
keeps the split of labelled frames into training and test sets in
``training-datasets/iteration-<n>/posed/split-shuffle<k>.yaml``.

Multi-animal projects (``multianimalproject: true``) list ``individuals``,
``multianimalbodyparts`` (labelled once per individual) and ``uniquebodyparts`` (labelled
once per image, under the pseudo-individual ``single``); their label files have the column
levels ``scorer/individuals/bodyparts/coords``. :func:`load_multianimal_labels` reads them;
:func:`load_labels` (what training and evaluation use) stays single-animal.
"""

from __future__ import annotations

import csv
import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date as _date
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from posed.errors import ConfigError, DataError

__all__ = [
    "Project",
    "LabeledData",
    "Split",
    "load_project",
    "read_label_file",
    "load_labels",
    "MultiAnimalLabels",
    "read_multianimal_label_file",
    "load_multianimal_labels",
    "SINGLE",
    "load_image",
    "split_path",
    "create_split",
    "load_split",
]

_DEFAULT_PCUTOFF = 0.6
_DEFAULT_BATCH_SIZE = 8
_DEFAULT_TRAINING_FRACTION = (0.95,)
SINGLE = "single"
"""The pseudo-individual DeepLabCut files the unique body parts of a multi-animal project under."""
# DeepLabCut's own key for label tables; other keys are accepted only when there is one.


# --------------------------------------------------------------------------------------------
# Project config
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Project:
    """A DeepLabCut project, as described by its ``config.yaml``.

    Attributes:
        root: Absolute project folder (the folder holding ``config.yaml``; the ``project_path``
            key inside the file is ignored because projects are often moved).
        config_path: Absolute path of ``config.yaml``.
        task: Config ``Task``.
        scorer: Config ``scorer``; label files are ``CollectedData_<scorer>.h5``.
        date: Config ``date`` (e.g. ``'Oct30'``).
        bodyparts: Config ``bodyparts``, in order. For a multi-animal project (whose config
            says ``bodyparts: MULTI!``) ``multianimalbodyparts + uniquebodyparts``, the order
            DeepLabCut stacks them in.
        training_fraction: Config ``TrainingFraction``.
        iteration: Config ``iteration`` (0 when absent).
        pcutoff: Config ``pcutoff`` (0.6 when absent).
        engine: Config ``engine`` (e.g. ``'pytorch'``) or None when absent.
        default_net_type: Config ``default_net_type`` or None when absent.
        skeleton: Config ``skeleton`` as pairs of body part names.
        batch_size: Config ``batch_size`` (8 when absent).
        raw: The whole parsed config.
        multianimal: Config ``multianimalproject`` (False when absent).
        individuals: Config ``individuals`` (multi-animal projects; empty otherwise).
        multianimalbodyparts: Config ``multianimalbodyparts`` (multi-animal projects).
        uniquebodyparts: Config ``uniquebodyparts`` (multi-animal projects; may be empty).
    """

    root: Path
    config_path: Path
    task: str
    scorer: str
    date: str
    bodyparts: tuple[str, ...]
    training_fraction: tuple[float, ...]
    iteration: int
    pcutoff: float
    engine: str | None
    default_net_type: str | None
    skeleton: tuple[tuple[str, str], ...]
    batch_size: int
    raw: dict
    multianimal: bool = False
    individuals: tuple[str, ...] = ()
    multianimalbodyparts: tuple[str, ...] = ()
    uniquebodyparts: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """DeepLabCut's short project name, ``f"{task}{date}"`` (e.g. ``'openfieldOct30'``)."""
        return f"{self.task}{self.date}"

    @property
    def label_individuals(self) -> tuple[str, ...]:
        """The individuals of the label files: ``individuals`` plus ``single`` when there are
        unique body parts (empty for single-animal projects)."""
        if not self.multianimal:
            return ()
        return self.individuals + ((SINGLE,) if self.uniquebodyparts else ())


def _is_int(value: Any) -> bool:
    # bool is an int subclass, but `batch_size: true` is a user mistake, not 1.
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _require_str(cfg: dict, key: str, path: Path) -> str:
    if key not in cfg:
        raise ConfigError(f"{path}: missing key '{key}'")
    value = cfg[key]
    if key == "date" and isinstance(value, _date):
        # YAML turns an unquoted 2024-01-31 into a date; DeepLabCut only uses it as text.
        return value.isoformat()
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(
            f"{path}: '{key}' must be a non-empty string, got {_type_name(value)} {value!r}"
        )
    return value


def _optional_str(cfg: dict, key: str, path: Path) -> str | None:
    value = cfg.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{path}: '{key}' must be a string, got {_type_name(value)} {value!r}")
    return value


def _name_list(value: Any, key: str, path: Path, allow_empty: bool = False) -> tuple[str, ...]:
    """Checks a config list of distinct, non-empty names (``bodyparts`` and friends)."""
    if value is None and allow_empty:
        return ()
    if not isinstance(value, list) or (not value and not allow_empty):
        what = "a list of names" if allow_empty else "a non-empty list of names"
        raise ConfigError(f"{path}: '{key}' must be {what}, got {_type_name(value)} {value!r}")
    for item in value:
        if not isinstance(item, str) or not item.strip():
            raise ConfigError(
                f"{path}: '{key}' entries must be non-empty strings, got {_type_name(item)} "
                f"{item!r}"
            )
    seen: set[str] = set()
    dupes = [name for name in value if name in seen or seen.add(name)]
    if dupes:
        raise ConfigError(f"{path}: '{key}' lists {', '.join(sorted(set(dupes)))} twice")
    return tuple(value)


def _parse_bodyparts(cfg: dict, path: Path) -> tuple[str, ...]:
    if "bodyparts" not in cfg:
        raise ConfigError(f"{path}: missing key 'bodyparts'")
    value = cfg["bodyparts"]
    if value == "MULTI!":
        raise ConfigError(
            f"{path}: 'bodyparts: MULTI!' marks a multi-animal project, but "
            "'multianimalproject' is not true"
        )
    return _name_list(value, "bodyparts", path)


def _parse_multianimal_flag(cfg: dict, path: Path) -> bool:
    value = cfg.get("multianimalproject")
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ConfigError(
            f"{path}: 'multianimalproject' must be true or false, got {_type_name(value)} "
            f"{value!r}"
        )
    return value


def _parse_multianimal(
    cfg: dict, path: Path
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """The individuals, multi-animal and unique body parts of a multi-animal config."""
    for key in ("individuals", "multianimalbodyparts"):
        if key not in cfg:
            raise ConfigError(
                f"{path}: multi-animal project (multianimalproject: true) lacks key '{key}'"
            )
    individuals = _name_list(cfg["individuals"], "individuals", path)
    if SINGLE in individuals:
        raise ConfigError(
            f"{path}: 'individuals' must not list '{SINGLE}' (DeepLabCut reserves it for the "
            "unique body parts)"
        )
    multi = _name_list(cfg["multianimalbodyparts"], "multianimalbodyparts", path)
    unique = _name_list(cfg.get("uniquebodyparts"), "uniquebodyparts", path, allow_empty=True)
    both = [name for name in unique if name in multi]
    if both:
        raise ConfigError(
            f"{path}: 'uniquebodyparts' and 'multianimalbodyparts' both list "
            f"{', '.join(repr(name) for name in both)}"
        )
    return individuals, multi, unique


def _parse_training_fraction(cfg: dict, path: Path) -> tuple[float, ...]:
    value = cfg.get("TrainingFraction")
    if value is None:
        return _DEFAULT_TRAINING_FRACTION
    items = value if isinstance(value, list) else [value]
    if not items:
        raise ConfigError(f"{path}: 'TrainingFraction' is an empty list")
    out = []
    for item in items:
        if not _is_number(item) or not 0.0 < float(item) < 1.0:
            raise ConfigError(
                f"{path}: 'TrainingFraction' entries must be numbers between 0 and 1 "
                f"(exclusive), got {item!r}"
            )
        out.append(float(item))
    return tuple(out)


def _parse_int(cfg: dict, key: str, default: int, minimum: int, path: Path) -> int:
    value = cfg.get(key)
    if value is None:
        return default
    if not _is_int(value) or value < minimum:
        raise ConfigError(
            f"{path}: '{key}' must be an integer >= {minimum}, got {_type_name(value)} {value!r}"
        )
    return value


def _parse_pcutoff(cfg: dict, path: Path) -> float:
    value = cfg.get("pcutoff")
    if value is None:
        return _DEFAULT_PCUTOFF
    if not _is_number(value) or not 0.0 <= float(value) <= 1.0:
        raise ConfigError(f"{path}: 'pcutoff' must be a number between 0 and 1, got {value!r}")
    return float(value)


def _parse_skeleton(
    cfg: dict, bodyparts: tuple[str, ...], path: Path, listed_in: str = "bodyparts"
) -> tuple[tuple[str, str], ...]:
    value = cfg.get("skeleton")
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ConfigError(
            f"{path}: 'skeleton' must be a list of [bodypart, bodypart] pairs, got "
            f"{_type_name(value)} {value!r}"
        )
    pairs = []
    for item in value:
        if (
            not isinstance(item, list | tuple)
            or len(item) != 2
            or not all(isinstance(name, str) for name in item)
        ):
            raise ConfigError(
                f"{path}: 'skeleton' entries must be [bodypart, bodypart] pairs, got {item!r}"
            )
        unknown = [name for name in item if name not in bodyparts]
        if unknown:
            raise ConfigError(
                f"{path}: 'skeleton' names unknown body part '{unknown[0]}' "
                f"({listed_in}: {', '.join(bodyparts)})"
            )
        pairs.append((item[0], item[1]))
    return tuple(pairs)


def load_project(path: str | Path) -> Project:
    """Reads and checks a DeepLabCut project config.

    Args:
        path: The project folder or its ``config.yaml``.

    Returns:
        The parsed project.

    Raises:
        ConfigError: The config is missing, is not valid YAML, lacks a required key
            (``Task``, ``scorer``, ``date``, ``bodyparts``; for multi-animal projects
            ``individuals`` and ``multianimalbodyparts`` instead of ``bodyparts``), has a
            value of the wrong type, or lists a body part both as multi-animal and unique.
    """
    path = Path(path).expanduser()
    config_path = path / "config.yaml" if path.is_dir() else path
    config_path = config_path.resolve()
    if not config_path.is_file():
        raise ConfigError(f"{config_path}: project config not found")
    try:
        text = config_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{config_path}: cannot read config ({exc})") from exc
    try:
        cfg = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}" if mark is not None else "unknown line"
        problem = exc.problem or exc.context or "syntax error"
        raise ConfigError(f"{config_path}: YAML error at {where}: {problem}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{config_path}: YAML error: {exc}".replace("\n", " ")) from exc
    if not isinstance(cfg, dict):
        raise ConfigError(
            f"{config_path}: expected a mapping of config keys, got {_type_name(cfg)}"
        )

    task = _require_str(cfg, "Task", config_path)
    scorer = _require_str(cfg, "scorer", config_path)
    date = _require_str(cfg, "date", config_path)
    multianimal = _parse_multianimal_flag(cfg, config_path)
    individuals: tuple[str, ...] = ()
    multi: tuple[str, ...] = ()
    unique: tuple[str, ...] = ()
    if multianimal:
        # DeepLabCut ignores 'bodyparts' (normally "MULTI!") in multi-animal projects.
        individuals, multi, unique = _parse_multianimal(cfg, config_path)
        bodyparts = multi + unique
        listed_in = "multianimalbodyparts + uniquebodyparts"
    else:
        bodyparts = _parse_bodyparts(cfg, config_path)
        listed_in = "bodyparts"
    return Project(
        root=config_path.parent,
        config_path=config_path,
        task=task,
        scorer=scorer,
        date=date,
        bodyparts=bodyparts,
        training_fraction=_parse_training_fraction(cfg, config_path),
        iteration=_parse_int(cfg, "iteration", 0, 0, config_path),
        pcutoff=_parse_pcutoff(cfg, config_path),
        engine=_optional_str(cfg, "engine", config_path),
        default_net_type=_optional_str(cfg, "default_net_type", config_path),
        skeleton=_parse_skeleton(cfg, bodyparts, config_path, listed_in),
        batch_size=_parse_int(cfg, "batch_size", _DEFAULT_BATCH_SIZE, 1, config_path),
        raw=cfg,
        multianimal=multianimal,
        individuals=individuals,
        multianimalbodyparts=multi,
        uniquebodyparts=unique,
    )


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

    from posed.engines.dataformats import read_h5_table

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


# --------------------------------------------------------------------------------------------
# Train/test split
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Split:
    """A train/test split of a project's labelled images.

    Attributes:
        shuffle: DeepLabCut shuffle number.
        seed: Seed of the permutation.
        train_fraction: Requested fraction of images used for training.
        train: Training image paths (relative to the project, sorted).
        test: Test image paths (relative to the project, sorted).
    """

    shuffle: int
    seed: int
    train_fraction: float
    train: tuple[str, ...]
    test: tuple[str, ...]


def split_path(project: Project, shuffle: int) -> Path:
    """Returns where the split of ``shuffle`` is stored."""
    return (
        project.root
        / "training-datasets"
        / f"iteration-{project.iteration}"
        / "posed"
        / f"split-shuffle{shuffle}.yaml"
    )


def _check_shuffle(shuffle: Any) -> int:
    if not _is_int(shuffle) or shuffle < 0:
        raise ConfigError(f"shuffle: must be an integer >= 0, got {shuffle!r}")
    return shuffle


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Same folder as the target so os.replace is a rename on one file system: readers see the
    # old file or the new one, never half of it.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def create_split(
    project: Project,
    shuffle: int = 1,
    train_fraction: float | None = None,
    seed: int | None = None,
    overwrite: bool = False,
) -> Split:
    """Creates (or returns the saved) train/test split of a project's labelled images.

    The split is a ``numpy.random.default_rng(seed)`` permutation of the sorted image list;
    the first ``round(train_fraction * N)`` images (at least 1 and, with two or more images,
    at most N-1) are for training.

    Args:
        project: The project.
        shuffle: DeepLabCut shuffle number; names the split file.
        train_fraction: Fraction for training; defaults to the config's first TrainingFraction.
        seed: Permutation seed; defaults to ``shuffle`` so each shuffle is reproducible.
        overwrite: Replace a saved split with different settings.

    Returns:
        The split, which is saved to :func:`split_path`.

    Raises:
        ConfigError: Bad fraction or seed, or a split with other settings exists and
            ``overwrite`` is False.
        DataError: The project has no labelled images or its labels are invalid.
    """
    shuffle = _check_shuffle(shuffle)
    fraction = project.training_fraction[0] if train_fraction is None else train_fraction
    if not _is_number(fraction) or not 0.0 < float(fraction) < 1.0:
        raise ConfigError(f"train_fraction: must be a number between 0 and 1, got {fraction!r}")
    fraction = float(fraction)
    seed = shuffle if seed is None else seed
    if not _is_int(seed) or seed < 0:
        raise ConfigError(f"seed: must be an integer >= 0, got {seed!r}")

    path = split_path(project, shuffle)
    if path.exists() and not overwrite:
        existing = load_split(project, shuffle)
        if existing.seed == seed and math.isclose(
            existing.train_fraction, fraction, rel_tol=0, abs_tol=1e-12
        ):
            return existing
        raise ConfigError(
            f"{path}: a split for shuffle {shuffle} exists with train_fraction="
            f"{existing.train_fraction}, seed={existing.seed} (requested train_fraction="
            f"{fraction}, seed={seed}); pass overwrite to replace it"
        )

    if project.multianimal:
        labelled = load_multianimal_labels(project, check_images=False).images
    else:
        labelled = load_labels(project, check_images=False).images
    images = sorted(labelled)
    n = len(images)
    if n == 0:
        raise DataError(f"{project.root / 'labeled-data'}: no labelled images to split")
    n_train = round(fraction * n)
    n_train = min(max(n_train, 1), n - 1) if n >= 2 else n
    order = np.random.default_rng(seed).permutation(n)
    train = tuple(sorted(images[i] for i in order[:n_train]))
    test = tuple(sorted(images[i] for i in order[n_train:]))
    split = Split(shuffle=shuffle, seed=seed, train_fraction=fraction, train=train, test=test)

    doc = {
        "format": "posed-split-1",
        "shuffle": split.shuffle,
        "seed": split.seed,
        "train_fraction": split.train_fraction,
        "train": list(split.train),
        "test": list(split.test),
    }
    header = (
        f"# Train/test split of {project.name}, shuffle {shuffle}; written by posed.\n"
        "# Image paths are relative to the project folder.\n"
    )
    _write_atomic(path, header + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    return split


def load_split(project: Project, shuffle: int) -> Split:
    """Loads the saved train/test split of ``shuffle``.

    Args:
        project: The project.
        shuffle: DeepLabCut shuffle number.

    Returns:
        The split as saved (it is not compared with the current labels).

    Raises:
        DataError: There is no saved split, or the file is invalid.
    """
    shuffle = _check_shuffle(shuffle)
    path = split_path(project, shuffle)
    if not path.is_file():
        raise DataError(
            f"{path}: no train/test split for shuffle {shuffle}; run `posed train` (creates it)"
        )
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{path}: cannot read split ({message})") from exc
    if not isinstance(doc, dict):
        raise DataError(f"{path}: expected a mapping, got {_type_name(doc)}")

    for key in ("shuffle", "seed", "train_fraction", "train", "test"):
        if key not in doc:
            raise DataError(f"{path}: missing key '{key}'")
    if not _is_int(doc["shuffle"]) or doc["shuffle"] != shuffle:
        raise DataError(f"{path}: 'shuffle' is {doc['shuffle']!r}, expected {shuffle}")
    if not _is_int(doc["seed"]):
        raise DataError(f"{path}: 'seed' must be an integer, got {doc['seed']!r}")
    if not _is_number(doc["train_fraction"]):
        raise DataError(f"{path}: 'train_fraction' must be a number, got {doc['train_fraction']!r}")
    lists = {}
    for key in ("train", "test"):
        value = doc[key] if doc[key] is not None else []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise DataError(f"{path}: '{key}' must be a list of image paths")
        lists[key] = tuple(value)
    overlap = set(lists["train"]) & set(lists["test"])
    if overlap:
        raise DataError(f"{path}: image '{sorted(overlap)[0]}' is in both train and test")
    return Split(
        shuffle=shuffle,
        seed=doc["seed"],
        train_fraction=float(doc["train_fraction"]),
        train=lists["train"],
        test=lists["test"],
    )
