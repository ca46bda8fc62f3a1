"""Hand labels of a DeepLabCut project: CollectedData tables (h5/csv), single- and multi-animal,
and the labelled frames they point to."""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from posed.engines.project.config import SINGLE, Project
from posed.engines.project.labeltables import gather, read_label_table, xy_columns

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
    table = read_label_table(path, multianimal=False)
    where = xy_columns(table, path)
    file_bps = [bp for _, bp in where]
    if bodyparts is None:
        out_bps = tuple(file_bps)
    else:
        out_bps = tuple(bodyparts)
        unknown = [bp for bp in file_bps if bp not in out_bps]
        if unknown:
            listed = ", ".join(f"'{bp}'" for bp in unknown)
            noun = "body part" if len(unknown) == 1 else "body parts"
            raise DataError(
                f"{path}: labels for unknown {noun} {listed} "
                f"(config.yaml bodyparts: {', '.join(out_bps)})"
            )
    keypoints = gather(table, where, [(None, bp) for bp in out_bps])
    return LabeledData(images=table.images, keypoints=keypoints, bodyparts=out_bps)


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
    table = read_label_table(path, multianimal=True)
    want_inds = None if individuals is None else tuple(individuals)
    want_multi = None if multianimalbodyparts is None else tuple(multianimalbodyparts)
    want_unique = None if uniquebodyparts is None else tuple(uniquebodyparts)
    where = xy_columns(table, path)
    file_inds, file_multi, file_unique = _file_names(
        path, list(where), want_inds, want_multi, want_unique
    )
    out_inds = want_inds if want_inds is not None else tuple(file_inds)
    out_multi = want_multi if want_multi is not None else tuple(file_multi)
    out_unique = want_unique if want_unique is not None else tuple(file_unique)
    points = [(ind, bp) for ind in out_inds for bp in out_multi]
    keypoints = gather(table, where, points).reshape(
        len(table.images), len(out_inds), len(out_multi), 2
    )
    return MultiAnimalLabels(
        images=table.images,
        keypoints=keypoints,
        individuals=out_inds,
        bodyparts=out_multi,
        unique=gather(table, where, [(SINGLE, bp) for bp in out_unique]),
        uniquebodyparts=out_unique,
    )


def _file_names(
    path: Path,
    points: Sequence[tuple[str, str]],
    want_inds: tuple[str, ...] | None,
    want_multi: tuple[str, ...] | None,
    want_unique: tuple[str, ...] | None,
) -> tuple[list[str], list[str], list[str]]:
    """The individuals, multi-animal and unique body parts of a multi-animal file's labelled
    (individual, body part) points, each in file order.

    Raises:
        DataError: A point's individual or body part is not among the wanted ones (None:
            any), or a body part is filed under the wrong kind of individual.
    """
    file_inds: list[str] = []
    file_multi: list[str] = []
    file_unique: list[str] = []
    for ind, bp in points:
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
    return file_inds, file_multi, file_unique


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
    images, parts = _read_label_files(
        project, lambda path: read_label_file(path, project.bodyparts), check_images
    )
    keypoints = np.concatenate([data.keypoints for data in parts], axis=0)
    return LabeledData(images=images, keypoints=keypoints, bodyparts=project.bodyparts)


def _read_label_files(
    project: Project, read: Callable[[Path], Any], check_images: bool
) -> tuple[list[str], list[Any]]:
    """All images of the project's label files, and what ``read`` returns for each file."""
    source: dict[str, Path] = {}
    parts = []
    for label_file in _label_files(project):
        data = read(label_file)
        _check_images(project, label_file, data.images, source, check_images)
        parts.append(data)
    return [image for data in parts for image in data.images], parts


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
    images, parts = _read_label_files(
        project,
        lambda path: read_multianimal_label_file(
            path, project.individuals, project.multianimalbodyparts, project.uniquebodyparts
        ),
        check_images,
    )
    return MultiAnimalLabels(
        images=images,
        keypoints=np.concatenate([data.keypoints for data in parts], axis=0),
        individuals=project.individuals,
        bodyparts=project.multianimalbodyparts,
        unique=np.concatenate([data.unique for data in parts], axis=0),
        uniquebodyparts=project.uniquebodyparts,
    )


def image_size(project_root: Path, relpath: str) -> tuple[int, int]:
    """(width, height) of a project image; a PNG's are read from its header, other images are
    decoded.

    Raises:
        DataError: The image is missing or cannot be decoded.
    """
    path = Path(project_root) / relpath
    try:
        with open(path, "rb") as fh:
            head = fh.read(24)
    except FileNotFoundError as exc:
        raise DataError(f"{path}: image missing") from exc
    except OSError as exc:
        raise DataError(f"{path}: cannot read image ({exc.strerror or exc})") from exc
    if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
        width, height = struct.unpack(">II", head[16:24])
        return int(width), int(height)
    image = load_image(project_root, relpath)
    return image.shape[1], image.shape[0]


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
