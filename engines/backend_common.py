"""What the engine backends share, with no framework in it.

The training prologue (settings, folder, seeding), the epoch loop around a backend's own
training step (resuming, ``learning_stats.csv``, snapshots, the progress bar), writing a
snapshot, and choosing a runner by bundle format. Each backend supplies only what needs its
framework, as callables.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np

from posed.engines.io import atomic_path
from posed.engines.project.folders import get_train_folder, list_snapshots
from posed.engines.training.loop import (RESUME_FILE, STATS_COLUMNS, STATS_FILE, LearningStats,
                                         resolve_train_config, resume_epoch, snapshot_name,
                                         stats_up_to, write_resolved_config)
from posed.engines.training.settings import budget_epochs
from posed.errors import ConfigError

if TYPE_CHECKING:
    from posed.engines.base import PoseRunner
    from posed.engines.bundle import ModelBundle
    from posed.engines.project import Project
    from posed.engines.training.settings import TrainConfig

log = logging.getLogger(__name__)


def prepare_training(project: "Project", shuffle: int, overrides: Any, engine: str, resume: bool,
                     *, seed: Callable[[int], None],
                     check: Callable[["TrainConfig"], None] | None = None,
                     ) -> tuple["TrainConfig", Path, list[Path]]:
    """Resolved settings, the training folder (created) and its existing snapshots.

    ``check`` vets the settings for the engine before anything is written; ``seed`` seeds the
    framework's RNGs with the settings' seed. Raises :class:`ConfigError` when snapshots
    exist and ``resume`` is not set.
    """
    cfg = resolve_train_config(project, shuffle, overrides, engine, resume)
    if check is not None:
        check(cfg)
    folder = get_train_folder(project, shuffle, engine)
    existing = list_snapshots(folder)
    if existing and not resume:
        raise ConfigError(f"{folder}: already has snapshots; pass --resume to continue or "
                          "--overwrite to start again")
    folder.mkdir(parents=True, exist_ok=True)
    seed(cfg.seed)
    return cfg, folder, existing


def run_epochs(project: "Project", shuffle: int, cfg: "TrainConfig", folder: Path,
               existing: list[Path], *, resume: bool, progress: bool,
               restore: Callable[[Path], None], load_state: Callable[[Path], int],
               train_epoch: Callable[[int, "TrainConfig"], tuple[np.ndarray, float]],
               test_error: Callable[[], float], save_snapshot: Callable[[int], None],
               extra_losses: tuple[str, ...] = ()) -> Path:
    """The epoch loop of every backend; returns the training folder.

    Args:
        existing: Snapshots already in ``folder``, oldest first.
        restore: Loads a snapshot's weights into the model (when resuming).
        load_state: Restores ``resume-state.safetensors`` and returns its epoch.
        train_epoch: (epoch, settings) -> (mean losses: total, heatmap, locref, *extra; last
            learning rate). The settings are ``cfg`` with ``epochs`` as the budget left them
            (the learning-rate schedule follows them).
        test_error: Mean test error in pixels, run before each snapshot.
        save_snapshot: Writes the snapshot after an epoch (given its number, from 1).
        extra_losses: Names of the extra losses (extra ``learning_stats.csv`` columns).
    """
    from tqdm.auto import tqdm

    start_epoch = 0
    if resume and existing:
        restore(existing[-1])
        start_epoch = resume_epoch(folder, existing, load_state)
        first = stats_up_to(folder / STATS_FILE, 1)
        if cfg.budget_minutes is not None and first:
            # The same choice as the interrupted run made, from its first epoch's pace.
            cfg = _fit_budget(cfg, float(first[0][STATS_COLUMNS.index("seconds")]), folder)
        if start_epoch >= cfg.epochs:
            log.info("already trained to epoch %d (epochs=%d)", start_epoch, cfg.epochs)
            return folder
    stats = LearningStats(folder, cfg, start_epoch, extra_losses)
    bar = tqdm(desc=f"train {project.name} shuffle {shuffle}", unit="epoch",
               disable=not progress, initial=start_epoch, total=cfg.epochs)
    epoch = start_epoch
    try:
        while epoch < cfg.epochs:
            t0 = time.perf_counter()
            totals, lr = train_epoch(epoch, cfg)
            seconds = time.perf_counter() - t0
            if epoch == 0 and cfg.budget_minutes is not None:
                cfg = _fit_budget(cfg, seconds, folder)
                bar.total = cfg.epochs
            done = epoch = epoch + 1
            test_err = float("nan")
            snapshot_due = done % cfg.save_every == 0 or done == cfg.epochs
            if snapshot_due:
                test_err = test_error()
            stats.row(done, lr, totals, seconds, test_err)
            if snapshot_due:
                save_snapshot(done)
            bar.update()
            bar.set_postfix(loss=f"{totals[0]:.4f}",
                            **({} if np.isnan(test_err) else {"test_px": f"{test_err:.2f}"}))
    finally:
        stats.close()
        bar.close()
    return folder


def _fit_budget(cfg: "TrainConfig", epoch_seconds: float, folder: Path) -> "TrainConfig":
    """``cfg`` with the epochs that fit its budget at the first epoch's pace (logged), written
    to the resolved settings."""
    epochs = budget_epochs(cfg, epoch_seconds)
    if epochs == cfg.epochs:
        log.info("training budget %.4g min: %d epochs of %.1f s fit", cfg.budget_minutes,
                 cfg.epochs, epoch_seconds)
        return cfg
    log.info("training budget %.4g min: an epoch takes %.1f s, so %d of %d epochs "
             "(all of them would take %.1f min)", cfg.budget_minutes, epoch_seconds, epochs,
             cfg.epochs, cfg.epochs * epoch_seconds / 60.0)
    cfg = dataclasses.replace(cfg, epochs=epochs)
    write_resolved_config(folder / "train_config.yaml", cfg)
    return cfg


def write_snapshot(folder: Path, epoch: int, bundle: "ModelBundle",
                   write_weights: Callable[[Path], None],
                   write_resume_state: Callable[[Path], None]) -> None:
    """Write ``snapshot-NNN.safetensors``, the resume state, then ``posed.yaml``.

    ``posed.yaml`` is written last, so it never names a file that is not complete.
    """
    name = snapshot_name(epoch)
    with atomic_path(folder / name) as tmp:
        write_weights(Path(tmp))
    write_resume_state(folder / RESUME_FILE)
    bundle.save(folder, [name])


def load_by_format(bundle: "ModelBundle", options: dict[str, Any],
                   loaders: Mapping[str, Callable[..., "PoseRunner"]],
                   default: Callable[..., "PoseRunner"]) -> "PoseRunner":
    """The runner of a bundle: the loader of its format, else ``default``."""
    return loaders.get(bundle.format, default)(bundle, **options)
