"""Reading DeepLabCut projects: config.yaml, labelled frames, and the train/test split.

A DeepLabCut project is a folder with a ``config.yaml`` and ``labeled-data/<video>/`` folders
that each hold PNG frames plus ``CollectedData_<scorer>.h5`` (and usually a ``.csv`` copy) with
the hand labels. This module reads those files without DeepLabCut installed, checks them, and
keeps the split of labelled frames into training and test sets in
``training-datasets/iteration-<n>/posed/split-shuffle<k>.yaml``.
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
    "load_image",
    "split_path",
    "create_split",
    "load_split",
]

_DEFAULT_PCUTOFF = 0.6
_DEFAULT_BATCH_SIZE = 8
_DEFAULT_TRAINING_FRACTION = (0.95,)
# DeepLabCut's own key for label tables; other keys are accepted only when there is one.


# --------------------------------------------------------------------------------------------
# Project config
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Project:
    """A single-animal DeepLabCut project, as described by its ``config.yaml``.

    Attributes:
        root: Absolute project folder (the folder holding ``config.yaml``; the ``project_path``
            key inside the file is ignored because projects are often moved).
        config_path: Absolute path of ``config.yaml``.
        task: Config ``Task``.
        scorer: Config ``scorer``; label files are ``CollectedData_<scorer>.h5``.
        date: Config ``date`` (e.g. ``'Oct30'``).
        bodyparts: Config ``bodyparts``, in order.
        training_fraction: Config ``TrainingFraction``.
        iteration: Config ``iteration`` (0 when absent).
        pcutoff: Config ``pcutoff`` (0.6 when absent).
        engine: Config ``engine`` (e.g. ``'pytorch'``) or None when absent.
        default_net_type: Config ``default_net_type`` or None when absent.
        skeleton: Config ``skeleton`` as pairs of body part names.
        batch_size: Config ``batch_size`` (8 when absent).
        raw: The whole parsed config.
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

    @property
    def name(self) -> str:
        """DeepLabCut's short project name, ``f"{task}{date}"`` (e.g. ``'openfieldOct30'``)."""
        return f"{self.task}{self.date}"


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


def _parse_bodyparts(cfg: dict, path: Path) -> tuple[str, ...]:
    if "bodyparts" not in cfg:
        raise ConfigError(f"{path}: missing key 'bodyparts'")
    value = cfg["bodyparts"]
    if value == "MULTI!" or cfg.get("multianimalproject") is True:
        raise ConfigError(
            f"{path}: multi-animal projects (multianimalproject / bodyparts: MULTI!) "
            "are not supported yet"
        )
    if not isinstance(value, list) or not value:
        raise ConfigError(
            f"{path}: 'bodyparts' must be a non-empty list of names, got {_type_name(value)} "
            f"{value!r}"
        )
    for item in value:
        if not isinstance(item, str) or not item.strip():
            raise ConfigError(
                f"{path}: 'bodyparts' entries must be non-empty strings, got {_type_name(item)} "
                f"{item!r}"
            )
    seen: set[str] = set()
    dupes = [bp for bp in value if bp in seen or seen.add(bp)]
    if dupes:
        raise ConfigError(f"{path}: 'bodyparts' lists {', '.join(sorted(set(dupes)))} twice")
    return tuple(value)


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
    cfg: dict, bodyparts: tuple[str, ...], path: Path
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
                f"(bodyparts: {', '.join(bodyparts)})"
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
            (``Task``, ``scorer``, ``date``, ``bodyparts``), has a value of the wrong type,
            or describes a multi-animal project.
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
    bodyparts = _parse_bodyparts(cfg, config_path)
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
        skeleton=_parse_skeleton(cfg, bodyparts, config_path),
        batch_size=_parse_int(cfg, "batch_size", _DEFAULT_BATCH_SIZE, 1, config_path),
        raw=cfg,
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
    if "individuals" in names or columns.nlevels > 3:
        raise DataError(f"{path}: multi-animal label files are not supported yet")
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
            raise DataError(
                f"{path}: non-numeric {col_bps[c]} {coord} value {series.iloc[row]!r} for image "
                f"'{images[row]}'"
            )
        values[:, c] = column
    return _RawTable(images, col_bps, col_coords, values)


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
    if rows[1] and rows[1][0].strip() == "individuals":
        raise DataError(f"{path}: multi-animal label files are not supported yet")

    # Pandas writes the level name ('scorer') in the first cell and one empty cell per further
    # row-index level, so the first non-empty cell after it starts the value columns.
    first = rows[0]
    n_index = next((i for i, cell in enumerate(first[1:], start=1) if cell.strip()), None)
    if n_index is None:
        raise DataError(f"{path}: not a DeepLabCut label csv (first row names no scorer)")
    width = len(first)
    for line, row in enumerate(rows[1:3], start=2):
        if len(row) != width:
            raise DataError(
                f"{path}: header line {line} has {len(row)} columns, line 1 has {width}"
            )
    col_bps = [cell.strip() for cell in rows[1][n_index:]]
    col_coords = [cell.strip() for cell in rows[2][n_index:]]

    body = [
        (line, row) for line, row in enumerate(rows[3:], start=4) if any(c.strip() for c in row)
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
                    f"{path}: line {line}: non-numeric {col_bps[c]} {col_coords[c]} value {cell!r}"
                )
            values[r, c] = value
    return _RawTable(images, col_bps, col_coords, values)


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
            twice, lacks x or y for a body part, or labels a body part not in ``bodyparts``.
    """
    path = Path(path)
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
            or (with ``check_images``) a listed image is missing.
    """
    labeled = project.root / "labeled-data"
    folders = (
        sorted(p for p in labeled.iterdir() if p.is_dir() and not p.name.startswith("."))
        if labeled.is_dir()
        else []
    )
    files = [f for f in (_label_file_for(folder, project.scorer) for folder in folders) if f]
    if not files:
        raise DataError(f"{labeled}: no CollectedData_{project.scorer}.h5 or .csv")

    images: list[str] = []
    arrays: list[np.ndarray] = []
    source: dict[str, Path] = {}
    for label_file in files:
        data = read_label_file(label_file, project.bodyparts)
        for image in data.images:
            if image in source:
                raise DataError(
                    f"{label_file}: image '{image}' is also labelled in {source[image]}"
                )
            source[image] = label_file
            if check_images and not (project.root / image).is_file():
                raise DataError(f"{project.root / image}: image missing (listed in {label_file})")
        images.extend(data.images)
        arrays.append(data.keypoints)
    keypoints = np.concatenate(arrays, axis=0)
    return LabeledData(images=images, keypoints=keypoints, bodyparts=project.bodyparts)


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

    images = sorted(load_labels(project, check_images=False).images)
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
