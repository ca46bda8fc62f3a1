"""DeepLabCut's own train/test split of a shuffle, read without unpickling anything.

DeepLabCut keeps a shuffle's indices only in ``Documentation_data-<Task>_<PP>shuffle<K>.pickle``,
which posed never unpickles (it did not write it). The same shuffle's MATLAB file
``training-datasets/iteration-<i>/UnaugmentedDataSet_<Task><date>/<Task>_<scorer><PP>shuffle<K>.mat``
(single-animal projects; DeepLabCut's PyTorch loader requires it too) lists its training images,
and is read with ``scipy.io.loadmat``, which builds arrays only. The test set is every other
labelled image of the project, as in DeepLabCut's default split (train + test = all images).
A split made with explicit ``trainIndices``/``testIndices`` that left images out of both
sets is the one case this reading cannot tell apart; its left-out images count as test images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from posed.engines.project.config import Project
from posed.errors import DataError

__all__ = ["dlc_split_path", "read_dlc_split"]


def dlc_split_path(project: Project, shuffle: int, fraction: float) -> Path:
    """The shuffle's ``.mat`` training-set file (DeepLabCut's naming; it may not exist)."""
    pp = int(fraction * 100)
    return (project.root / "training-datasets" / f"iteration-{project.iteration}"
            / f"UnaugmentedDataSet_{project.name}" / f"{project.task}_{project.scorer}{pp}shuffle{shuffle}.mat")


def read_dlc_split(project: Project, shuffle: int,
                   labelled: list[str]) -> tuple[list[str], list[str]] | None:
    """DeepLabCut's split of ``shuffle`` (first TrainingFraction) as sorted ``(train, test)``
    image lists, or None if it has none.

    ``labelled``: the project's labelled images (paths relative to the project, ``/``).

    Raises:
        DataError: the ``.mat`` exists but cannot be read, or names images the project does
            not have.
    """
    if project.multianimal or not project.training_fraction:
        return None  # multi-animal shuffles keep their training set in a pickle only
    fraction = project.training_fraction[0]
    path = dlc_split_path(project, shuffle, fraction)
    if not path.is_file():
        return None
    train = _training_images(path)
    known = set(labelled)
    missing = sorted(train - known)
    if missing:
        raise DataError(f"{path}: training image '{missing[0]}' is not a labelled image of "
                        f"{project.config_path}")
    test = sorted(known - train)
    return sorted(train), test


def _training_images(path: Path) -> set[str]:
    from scipy.io import loadmat

    try:
        mat = loadmat(str(path))
    except Exception as exc:  # scipy reports damage with many types  # noqa: BLE001
        raise DataError(f"{path}: cannot read DeepLabCut's training set "
                        f"({type(exc).__name__})") from None
    dataset = mat.get("dataset")
    if not isinstance(dataset, np.ndarray) or dataset.dtype.names is None \
            or "image" not in dataset.dtype.names:
        raise DataError(f"{path}: no 'dataset' with an 'image' field")
    images = set()
    for record in dataset.ravel():
        parts = [p.strip() for p in _flatten([record["image"]]) if p.strip()]
        if not parts:
            raise DataError(f"{path}: a training record has no image path")
        images.add("/".join(parts))
    return images


def _flatten(values: list) -> list[str]:
    """MATLAB cell arrays nest: ``[['labeled-data'], ['m4s1'], ['img0.png']]``."""
    out: list[str] = []
    for v in values:
        if isinstance(v, np.ndarray):
            out += _flatten(list(v.ravel()))
        else:
            out.append(str(v))
    return out
