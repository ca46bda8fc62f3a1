"""What every engine's training loop shares: file names, resolved settings, resuming,
learning statistics and the loaded training data."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import yaml
from posed.engines.training.settings import (TrainConfig, axis_concentration, make_train_config,
                                             project_flip_pairs, read_train_config_file,
                                             recipe_settings)

from posed.errors import ConfigError, PosedError

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------- shared by backends

STATS_FILE = "learning_stats.csv"
RESUME_FILE = "resume-state.safetensors"
STATS_COLUMNS = ["epoch", "lr", "loss", "heatmap_loss", "locref_loss", "seconds", "test_error_px"]


def snapshot_name(epoch: int) -> str:
    """File name of the weights snapshot written after ``epoch``."""
    return f"snapshot-{epoch:03d}.safetensors"


def resolve_train_config(project: Any, shuffle: int, overrides: "Mapping[str, Any] | TrainConfig | None",
                         engine: str, resume: bool = False) -> TrainConfig:
    """Defaults ← project config (``batch_size``, ``default_net_type``, flip pairs) ← shuffle's
    ``train_config.yaml`` ← overrides.

    The user's settings file is ``<model folder>/train_config.yaml``; when resuming, the
    settings the interrupted run resolved (``train/train_config.yaml``) are used instead.
    """
    from posed.engines.project.folders import get_model_folder

    if isinstance(overrides, TrainConfig):
        return overrides
    folder = get_model_folder(project, shuffle, engine)
    cfg_file = folder / "train_config.yaml"
    if resume and (folder / "train" / "train_config.yaml").is_file():
        cfg_file = folder / "train" / "train_config.yaml"
    base: dict[str, Any] = {"batch_size": project.batch_size,
                            "augment": {"flip_pairs": project_flip_pairs(project)}}
    if project.default_net_type:
        base["net"] = project.default_net_type
    layers = [(str(project.config_path), base),
              (str(cfg_file), read_train_config_file(cfg_file)),
              ("command line", overrides or {})]
    first = make_train_config(layers)
    # The recipe sits below every layer, so whatever the project or the user set wins.
    count, size, axis = _train_images(project, shuffle)
    name, recipe, why = recipe_settings(first, count, size, axis)
    cfg = make_train_config([(f"recipe '{name}'", recipe), *layers])
    if not resume:
        crop = "%dx%d crops" % cfg.crop if cfg.crop else "whole images"
        budget = "" if cfg.budget_minutes is None else (
            " (fewer if they take over %g min)" % cfg.budget_minutes)
        log.info("training recipe: %s (%s): lr %g, output stride %d, %d epochs%s, batch %d, "
                 "%s, rotation up to %g degrees; any of them can be set (--lr, "
                 "--output-stride, --epochs, --budget, --crop, augment.rotation, recipe:)",
                 name, why, cfg.lr, cfg.output_stride, cfg.epochs, budget, cfg.batch_size, crop,
                 cfg.augment.rotation)
    return cfg


def _train_images(project: Any, shuffle: int) -> tuple[int, tuple[int, int] | None,
                                                      float | None]:
    """How many images the shuffle trains on, the largest width and height among them and
    the :func:`axis_concentration` of their labels; (0, None, None) when it has no split yet,
    and no size when an image cannot be read (training says why)."""
    from posed.engines.project import image_size, load_split

    try:
        train = load_split(project, shuffle).train
    except (PosedError, OSError):
        return 0, None, None
    axis = _train_axis(project, train)
    try:
        sizes = [image_size(project.root, name) for name in train]
    except (PosedError, OSError):
        return len(train), None, axis
    return (len(train), (max(w for w, _ in sizes), max(h for _, h in sizes)) if sizes else None,
            axis)


def _train_axis(project: Any, train: Sequence[str]) -> float | None:
    """:func:`axis_concentration` of the training images' labels (each animal of a
    multi-animal project a pose of its own); None when they cannot be read."""
    from posed.engines.project import load_labels, load_multianimal_labels

    wanted = set(train)
    try:
        if getattr(project, "multianimal", False):
            labels = load_multianimal_labels(project, check_images=False)
            rows = [i for i, name in enumerate(labels.images) if name in wanted]
            kp = labels.keypoints[rows]
            kp = kp.reshape(-1, *kp.shape[2:])
        else:
            labels = load_labels(project, check_images=False)
            kp = labels.keypoints[[i for i, name in enumerate(labels.images) if name in wanted]]
    except (PosedError, OSError):
        return None
    return axis_concentration(kp)


def write_resolved_config(path: Path, cfg: TrainConfig) -> None:
    """Record the settings a run actually used (read back on resume)."""
    from posed.engines.io import atomic_write_text

    atomic_write_text(path, "# resolved training settings of this run (written by posed)\n"
                      + yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def resume_epoch(folder: Path, snapshots: list[Path], load_state: Any) -> int:
    """Epoch to continue from: the optimiser state's, else (weights only) the newest snapshot's.

    Args:
        folder: Training folder.
        snapshots: Its snapshots, oldest first (non-empty).
        load_state: Engine function that restores ``resume-state.safetensors`` and returns its epoch.
    """
    resume_file = folder / RESUME_FILE
    if resume_file.is_file():
        return int(load_state(resume_file))
    log.warning("%s missing: resuming weights only", resume_file)
    return int(snapshots[-1].stem.split("-")[1])


class LearningStats:
    """``learning_stats.csv`` of a run: earlier rows kept up to the resumed epoch, one row per epoch.

    Also writes the run's resolved settings (``train_config.yaml``) beside it, since both
    describe the same run and both are read back on resume.
    """

    def __init__(self, folder: Path, cfg: TrainConfig, start_epoch: int,
                 extra_losses: Sequence[str] = ()) -> None:
        import csv

        write_resolved_config(folder / "train_config.yaml", cfg)
        path = folder / STATS_FILE
        kept = stats_up_to(path, start_epoch)
        self._fh = open(path, "w", newline="")
        self._writer = csv.writer(self._fh)
        # Extra loss columns (e.g. the multi-animal ``paf_loss``) go last, so the shared
        # columns keep their positions.
        self._writer.writerow(STATS_COLUMNS + list(extra_losses))
        self._writer.writerows(kept)
        self._fh.flush()

    def row(self, epoch: int, lr: float, losses: np.ndarray, seconds: float, test_error: float) -> None:
        """Append one epoch: (total, heatmap, locref, *extra) losses, its training seconds
        (the snapshot's evaluation not counted); NaN test error is left empty."""
        self._writer.writerow([epoch, f"{lr:.6g}", f"{losses[0]:.6f}", f"{losses[1]:.6f}",
                               f"{losses[2]:.6f}", f"{seconds:.2f}",
                               "" if np.isnan(test_error) else f"{test_error:.3f}",
                               *[f"{v:.6f}" for v in losses[3:]]])
        self._fh.flush()

    def close(self) -> None:
        """Close the file."""
        self._fh.close()


def stats_up_to(path: Path, epoch: int) -> list[list[str]]:
    """Rows of an earlier run's stats up to ``epoch``: a resumed run redoes the later epochs."""
    import csv

    if epoch == 0 or not path.is_file():
        return []
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))[1:]
    return [r for r in rows if r and r[0].isdigit() and int(r[0]) <= epoch]


@dataclass
class TrainingData:
    """The labelled images of one shuffle, loaded for training."""

    cfg: TrainConfig
    images: list[np.ndarray]
    keypoints: list[np.ndarray]
    test_images: list[np.ndarray]
    test_keypoints: list[np.ndarray]
    labelled: tuple[str, ...] = ()  # every labelled image of the project (train and test)

    @property
    def body_window(self) -> float | None:
        """The decoding window fitted to the training labels (a bundle's ``body_window``)."""
        from posed.engines.decoding import body_window_px

        return body_window_px(self.keypoints)


def split_rows(project: Any, shuffle: int, labelled: Sequence[str],
                where: Path) -> tuple[list[int], list[int]]:
    """Label-table rows of the shuffle's training and test images (``labelled``: the table's
    image names); test images without labels are left out.

    Raises:
        ConfigError: the split names a training image that has no labels (``where`` names
            the folder).
    """
    from posed.engines.project import load_split

    split = load_split(project, shuffle)
    index = {img: i for i, img in enumerate(labelled)}
    missing = [img for img in split.train if img not in index]
    if missing:
        raise ConfigError(f"{where}: split lists '{missing[0]}', which has no labels")
    return [index[img] for img in split.train], [index[img] for img in split.test if img in index]


def common_crop(cfg: TrainConfig, images: list[np.ndarray]) -> TrainConfig:
    """``cfg`` with a crop all training images fit (multiples of 32) when their sizes differ
    and no crop is set."""
    if cfg.crop is not None or len({im.shape for im in images}) <= 1:
        return cfg
    w = min(im.shape[1] for im in images) // 32 * 32
    h = min(im.shape[0] for im in images) // 32 * 32
    log.info("training images differ in size; training on %dx%d crops", w, h)
    return dataclasses.replace(cfg, crop=(w, h))


def load_training_data(project: Any, shuffle: int, cfg: TrainConfig, where: Path) -> TrainingData:
    """Images and labels of the shuffle's split; picks a common crop when sizes differ.

    Raises:
        ConfigError: the split names an image that has no labels (``where`` names the folder).
    """
    from posed.engines.project import load_image, load_labels

    labels = load_labels(project)
    train, test = split_rows(project, shuffle, labels.images, where)
    images = [load_image(project.root, labels.images[i]) for i in train]
    return TrainingData(common_crop(cfg, images), images, [labels.keypoints[i] for i in train],
                        [load_image(project.root, labels.images[i]) for i in test],
                        [labels.keypoints[i] for i in test], tuple(labels.images))


def bundle_source(project: Any, shuffle: int, cfg: TrainConfig, epoch: int) -> dict[str, Any]:
    """The ``source`` section of a trained snapshot's bundle (same for every engine)."""
    from posed.engines.project.posetables import scorer_name
    from posed.engines.project import load_split

    return {"project": str(project.root), "task": project.task, "shuffle": shuffle,
            "snapshot": epoch, "train_fraction": load_split(project, shuffle).train_fraction,
            "scorer": scorer_name(cfg.net, project.name, shuffle, epoch),
            "pcutoff": project.pcutoff}
