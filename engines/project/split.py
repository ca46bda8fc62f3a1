"""The reproducible train/test split of a project's labelled frames (one per shuffle)."""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from posed.engines.project.config import Project, is_int, is_number, type_name
from posed.engines.project.labels import load_labels, load_multianimal_labels

from posed.errors import ConfigError, DataError

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
    if not is_int(shuffle) or shuffle < 0:
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

    A shuffle that DeepLabCut already split keeps DeepLabCut's split (see :func:`load_split`).

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
    if not is_number(fraction) or not 0.0 < float(fraction) < 1.0:
        raise ConfigError(f"train_fraction: must be a number between 0 and 1, got {fraction!r}")
    fraction = float(fraction)
    seed = shuffle if seed is None else seed
    if not is_int(seed) or seed < 0:
        raise ConfigError(f"seed: must be an integer >= 0, got {seed!r}")

    dlc = _dlc_split(project, shuffle)
    if dlc is not None:
        return dlc  # DeepLabCut's split of this shuffle is the split
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
    save_split(project, split)
    return split


def _dlc_split(project: Project, shuffle: int) -> Split | None:
    """DeepLabCut's own split of the shuffle, when the project has one
    (:mod:`posed.engines.dlc.split`)."""
    from posed.engines.dlc.split import dlc_split_path, read_dlc_split

    if project.multianimal or not dlc_split_path(project, shuffle,
                                                 project.training_fraction[0]).is_file():
        return None
    own = split_path(project, shuffle)
    if own.is_file() and (yaml.safe_load(own.read_text(encoding="utf-8")) or {}).get(
            "written_to_deeplabcut") is True:
        return None  # DeepLabCut's files were written from posed's split: posed's is the source
    found = read_dlc_split(project, shuffle, list(load_labels(project, check_images=False).images))
    if found is None:
        return None
    return Split(shuffle=shuffle, seed=-1, train_fraction=project.training_fraction[0],
                 train=tuple(found[0]), test=tuple(found[1]))


def save_split(project: Project, split: Split, written_to_deeplabcut: bool = False) -> Path:
    """Write ``split`` to :func:`split_path` atomically (replacing any saved one).

    ``written_to_deeplabcut``: posed also wrote DeepLabCut's files of this split (which leave
    out images without labels), so posed's file stays the split.
    """
    overlap = set(split.train) & set(split.test)
    if overlap:
        raise DataError(f"image '{sorted(overlap)[0]}' is in both train and test")
    doc = {
        "format": "posed-split-1",
        "shuffle": split.shuffle,
        "seed": split.seed,
        "train_fraction": split.train_fraction,
        "train": list(split.train),
        "test": list(split.test),
    }
    if written_to_deeplabcut:
        doc["written_to_deeplabcut"] = True
    header = (
        f"# Train/test split of {project.name}, shuffle {split.shuffle}; written by posed.\n"
        "# Image paths are relative to the project folder.\n"
    )
    path = split_path(project, split.shuffle)
    _write_atomic(path, header + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    return path


def load_split(project: Project, shuffle: int) -> Split:
    """Loads the train/test split of ``shuffle``: DeepLabCut's when the project has one for
    it (read from its ``.mat`` training set, :mod:`posed.engines.dlc.split`), else posed's.

    Args:
        project: The project.
        shuffle: DeepLabCut shuffle number.

    Returns:
        The split as saved (it is not compared with the current labels).

    Raises:
        DataError: There is no saved split, or the file is invalid.
    """
    shuffle = _check_shuffle(shuffle)
    dlc = _dlc_split(project, shuffle)
    if dlc is not None:
        return dlc
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
        raise DataError(f"{path}: expected a mapping, got {type_name(doc)}")

    for key in ("shuffle", "seed", "train_fraction", "train", "test"):
        if key not in doc:
            raise DataError(f"{path}: missing key '{key}'")
    if not is_int(doc["shuffle"]) or doc["shuffle"] != shuffle:
        raise DataError(f"{path}: 'shuffle' is {doc['shuffle']!r}, expected {shuffle}")
    if not is_int(doc["seed"]):
        raise DataError(f"{path}: 'seed' must be an integer, got {doc['seed']!r}")
    if not is_number(doc["train_fraction"]):
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
