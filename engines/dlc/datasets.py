"""DeepLabCut's ``create_training_dataset`` on posed's splits: shuffle numbers, indices, settings.

DeepLabCut numbers the labelled images of a project in the order of its merged label table:
sorted by (``labeled-data``, folder, image name). ``trainIndices``/``testIndices`` are positions
in that order, and so are the indices :func:`create_shuffles` returns. The ``net_type`` and
``engine`` a shuffle was created with are kept beside its split
(``training-datasets/iteration-<i>/posed/shuffle<K>-settings.yaml``) for ``train_network``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from posed.engines.project import (Project, Split, create_split, load_labels,
                                   load_multianimal_labels, save_split, split_path)
from posed.engines.registry import Engine
from posed.errors import CapabilityError, ConfigError

__all__ = ["create_shuffles", "dlc_image_order", "shuffle_settings"]


def dlc_image_order(project: Project) -> list[str]:
    """The project's labelled images in DeepLabCut's order (its merged table's rows)."""
    labels = (load_multianimal_labels(project, check_images=False) if project.multianimal
              else load_labels(project, check_images=False))
    return sorted(labels.images, key=lambda p: tuple(Path(p).parts))


def create_shuffles(project: Project, num_shuffles: int = 1, shuffles: Any = None,
                    train_indices: Any = None, test_indices: Any = None, *,
                    net_type: str | None = None, engine: Engine | None = None) -> list:
    """Create (or reuse) the splits of ``shuffles`` (default: ``num_shuffles`` new numbers
    after the highest existing one); returns DeepLabCut's ``[(fraction, shuffle, (train,
    test)), ...]`` with indices in :func:`dlc_image_order`."""
    if len(project.training_fraction) != 1:
        raise CapabilityError(f"{project.config_path}: TrainingFraction has "
                              f"{len(project.training_fraction)} values; posed keeps one split "
                              "per shuffle (list one fraction)")
    numbers = _shuffle_numbers(project, num_shuffles, shuffles)
    if (train_indices is None) != (test_indices is None):
        raise ConfigError("trainIndices and testIndices: give both or neither")
    if train_indices is not None and len(train_indices) != len(numbers):
        raise ConfigError(f"trainIndices: {len(train_indices)} lists for {len(numbers)} shuffles")
    order = dlc_image_order(project)
    position = {img: i for i, img in enumerate(order)}
    result = []
    for k, shuffle in enumerate(numbers):
        if train_indices is not None:
            split = _explicit_split(project, shuffle, order, train_indices[k], test_indices[k])
        else:
            split = create_split(project, shuffle)
        _save_settings(project, shuffle, net_type, engine)
        _deeplabcut_layout(project, split, net_type, engine)
        result.append((split.train_fraction, shuffle,
                       ([position[i] for i in split.train if i in position],
                        [position[i] for i in split.test if i in position])))
    return result


def _deeplabcut_layout(project: Project, split: Split, net_type: str | None,
                       engine: Engine | None) -> None:
    """DeepLabCut's dataset files and model configs for a new shuffle whose net posed trains in
    DeepLabCut's architecture (never over a shuffle DeepLabCut made)."""
    from posed.engines.dlc.layout import find_shuffle
    from posed.engines.dlc.pose_config import DLC_NETS
    from posed.engines.dlc.roundtrip import write_dataset
    from posed.engines.dlc.split import dlc_split_path

    net = net_type or project.default_net_type or "resnet_50"
    eng = engine or Engine.parse(project.engine or "pytorch")
    if (project.multianimal or eng is not Engine.PYTORCH or net not in DLC_NETS
            or find_shuffle(project, split.shuffle) is not None
            or dlc_split_path(project, split.shuffle, project.training_fraction[0]).exists()):
        return
    # DeepLabCut's own defaults for the settings only DeepLabCut's trainer reads.
    write_dataset(project, split, net, locref_std=7.2801, epochs=200, save_epochs=25,
                  batch_size=8, lr=5e-4)


def shuffle_settings(project: Project, shuffle: int) -> dict[str, Any]:
    """``{"net_type": ..., "engine": ...}`` remembered for ``shuffle`` (empty if none)."""
    path = _settings_path(project, shuffle)
    if not path.is_file():
        return {}
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: not a mapping")
    return data


def _shuffle_numbers(project: Project, num_shuffles: int, shuffles: Any) -> list[int]:
    if shuffles is not None:
        numbers = [shuffles] if isinstance(shuffles, int) else list(shuffles)
        if not numbers or not all(isinstance(n, int) and n >= 0 for n in numbers):
            raise ConfigError(f"Shuffles: a list of shuffle numbers >= 0, got {shuffles!r}")
        return numbers
    folder = split_path(project, 1).parent
    have = [int(p.stem.removeprefix("split-shuffle")) for p in folder.glob("split-shuffle*.yaml")
            if p.stem.removeprefix("split-shuffle").isdigit()]
    first = max(have, default=0) + 1
    return list(range(first, first + int(num_shuffles)))


def _explicit_split(project: Project, shuffle: int, order: list[str], train: Any,
                    test: Any) -> Split:
    def images(indices: Any, name: str) -> tuple[str, ...]:
        picked = [int(i) for i in indices if int(i) != -1]  # DeepLabCut pads with -1
        bad = [i for i in picked if not 0 <= i < len(order)]
        if bad:
            raise ConfigError(f"{name}: index {bad[0]} is out of range ({len(order)} labelled "
                              "images)")
        return tuple(sorted(order[i] for i in picked))

    train_set, test_set = images(train, "trainIndices"), images(test, "testIndices")
    n = len(train_set) + len(test_set)
    split = Split(shuffle=shuffle, seed=-1, train=train_set, test=test_set,
                  train_fraction=round(len(train_set) / n, 2) if n else 0.0)
    save_split(project, split)
    return split


def _settings_path(project: Project, shuffle: int) -> Path:
    return split_path(project, shuffle).parent / f"shuffle{shuffle}-settings.yaml"


def _save_settings(project: Project, shuffle: int, net_type: str | None,
                   engine: Engine | None) -> None:
    data = {k: v for k, v in (("net_type", net_type), ("engine", engine and engine.value)) if v}
    path = _settings_path(project, shuffle)
    if data:
        path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    else:
        path.unlink(missing_ok=True)
