"""What the engine backends share, with no framework in it.

The training prologue (settings, folder, seeding), the epoch loop around a backend's own
training step (resuming, ``learning_stats.csv``, snapshots, the progress bar), writing a
snapshot, and choosing a runner by bundle format. Each backend supplies only what needs its
framework, as callables.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np

from posed.engines.io import atomic_path, atomic_write_text
from posed.engines.project.folders import get_train_folder, list_snapshots
from posed.engines.training.loop import (RESUME_FILE, LearningStats, resolve_train_config,
                                         resume_epoch, snapshot_name, write_resolved_config)
from posed.engines.training.settings import budget_epochs
from posed.errors import ConfigError

if TYPE_CHECKING:
    from posed.engines.base import PoseRunner
    from posed.engines.bundle import ModelBundle
    from posed.engines.project import Project
    from posed.engines.training.settings import TrainConfig

log = logging.getLogger(__name__)

# The budget's pace and choice (beside learning_stats.csv), read back on --resume.
BUDGET_FILE = "budget.json"
# The budget is fitted after the first epoch, then again after this many on the pace of those
# after the first: the first epoch's steps run slower than the rest (19.5 against about 17 s
# an epoch on an AVX2 EPYC), which left 7-11 % of a 60-minute budget unused.
REFIT_AFTER = 5


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
               train_epoch: Callable[[int, "TrainConfig", "StepClock"],
                                     tuple[np.ndarray, float]],
               test_error: Callable[[], float], save_snapshot: Callable[[int], None],
               extra_losses: tuple[str, ...] = ()) -> Path:
    """The epoch loop of every backend; returns the training folder.

    Args:
        existing: Snapshots already in ``folder``, oldest first.
        restore: Loads a snapshot's weights into the model (when resuming).
        load_state: Restores ``resume-state.safetensors`` and returns its epoch.
        train_epoch: (epoch, settings, clock) -> (mean losses: total, heatmap, locref,
            *extra; last learning rate). The settings are ``cfg`` with ``epochs`` as the
            budget left them (the learning-rate schedule follows them); ``clock.tick()`` is
            called after each optimisation step (:class:`StepClock`).
        test_error: Mean test error in pixels, run before each snapshot.
        save_snapshot: Writes the snapshot after an epoch (given its number, from 1).
        extra_losses: Names of the extra losses (extra ``learning_stats.csv`` columns).
    """
    from tqdm.auto import tqdm

    start_epoch = 0
    if resume and existing:
        restore(existing[-1])
        start_epoch = resume_epoch(folder, existing, load_state)
        if cfg.budget_minutes is not None:
            record = _read_budget(folder)
            if record is None:
                log.info("budget_minutes: not applied, since the first epoch ran without it")
            else:
                cfg = _fit_recorded(cfg, record)  # the interrupted run's choice again
        if start_epoch >= cfg.epochs:
            log.info("already trained to epoch %d (epochs=%d)", start_epoch, cfg.epochs)
            return folder
    if start_epoch == 0:
        (folder / BUDGET_FILE).unlink(missing_ok=True)  # an earlier run's, never this one's
    stats = LearningStats(folder, cfg, start_epoch, extra_losses)
    bar = tqdm(desc=f"train {project.name} shuffle {shuffle}", unit="epoch",
               disable=not progress, initial=start_epoch, total=cfg.epochs)
    epoch = start_epoch
    budget: dict[str, Any] = {}  # this run's budget.json, once the first epoch has run
    paces: list[float] = []  # the pace of each epoch after the first, for the refit
    elapsed = 0.0
    try:
        while epoch < cfg.epochs:
            t0 = time.perf_counter()
            clock = StepClock()
            totals, lr = train_epoch(epoch, cfg, clock)
            seconds = time.perf_counter() - t0
            elapsed += seconds
            if epoch == 0 and cfg.budget_minutes is not None:
                pace, asked = clock.epoch_seconds(seconds), cfg.epochs
                cfg = _fit_budget(cfg, pace)
                budget = {"budget_minutes": cfg.budget_minutes, "epoch_seconds": pace,
                          "epochs_asked": asked, "epochs_kept": cfg.epochs}
                _write_budget(folder, budget)
                if cfg.epochs != asked:
                    write_resolved_config(folder / "train_config.yaml", cfg)
                    bar.total = cfg.epochs
            elif budget:
                paces.append(clock.epoch_seconds(seconds))
            done = epoch = epoch + 1
            if budget and done == REFIT_AFTER and done < cfg.epochs:
                cfg = _refit_budget(folder, cfg, budget, done, elapsed, float(np.median(paces)))
                bar.total = cfg.epochs
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


class StepClock:
    """Times the optimisation steps of one epoch, for the budget.

    The first step of a run also builds the graph or picks the kernels (TensorFlow traces
    for seconds), so an epoch's pace is taken from the steps after it.
    """

    def __init__(self, timer: Callable[[], float] | None = None) -> None:
        self._timer = timer or time.perf_counter
        self._ticks: list[float] = []

    def tick(self) -> None:
        """One optimisation step has ended."""
        self._ticks.append(self._timer())

    def epoch_seconds(self, measured: float) -> float:
        """Seconds an epoch of these steps takes without the first one's start-up:
        ``measured`` (the epoch's wall time) when fewer than three steps were timed."""
        n = len(self._ticks)
        if n < 3:
            return measured
        return (self._ticks[-1] - self._ticks[0]) / (n - 1) * n


def _read_budget(folder: Path) -> dict[str, Any] | None:
    """``budget.json``: the budget, the first epoch's pace, the epochs asked and kept and the
    refit, if one was made; None without the file."""
    path = folder / BUDGET_FILE
    try:
        record = json.loads(path.read_text())
        float(record["epoch_seconds"])
        if "refit" in record:
            for key in ("after_epoch", "elapsed_seconds", "epoch_seconds"):
                float(record["refit"][key])
        return record
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: unreadable ({exc}); start again with --overwrite") from None


def _write_budget(folder: Path, budget: dict[str, Any]) -> None:
    """``budget.json`` (read back by :func:`_read_budget` on ``--resume``)."""
    atomic_write_text(folder / BUDGET_FILE, json.dumps(budget, indent=1) + "\n")


def _fit_recorded(cfg: "TrainConfig", record: dict[str, Any]) -> "TrainConfig":
    """``cfg`` with the epochs an interrupted run chose, from its ``budget.json``."""
    refit = record.get("refit")
    if refit is None:
        return _fit_budget(cfg, float(record["epoch_seconds"]))
    asked = dataclasses.replace(cfg, epochs=int(record.get("epochs_asked", cfg.epochs)))
    epochs = budget_epochs(asked, float(refit["epoch_seconds"]), int(refit["after_epoch"]),
                           float(refit["elapsed_seconds"]))
    return dataclasses.replace(cfg, epochs=epochs)


def _refit_budget(folder: Path, cfg: "TrainConfig", budget: dict[str, Any], done: int,
                  elapsed: float, epoch_seconds: float) -> "TrainConfig":
    """``cfg`` with the epochs that fit the rest of the budget after ``done`` epochs took
    ``elapsed`` seconds, at ``epoch_seconds`` an epoch (at most the epochs asked; logged and
    added to ``budget.json``). The epochs already run followed the first choice's learning-rate
    schedule; at the epochs a budget usually keeps that differs little from the new one's
    (0.02 % at epoch 5 of 184 or of 200)."""
    asked = dataclasses.replace(cfg, epochs=budget["epochs_asked"])
    epochs = budget_epochs(asked, epoch_seconds, done, elapsed)
    budget["refit"] = {"after_epoch": done, "elapsed_seconds": elapsed,
                       "epoch_seconds": epoch_seconds, "epochs_kept": epochs}
    _write_budget(folder, budget)
    if epochs == cfg.epochs:
        return cfg
    log.info("training budget %.4g min: after %d epochs (%.1f min) an epoch takes %.1f s, so "
             "%d of %d epochs instead of %d", cfg.budget_minutes, done, elapsed / 60.0,
             epoch_seconds, epochs, budget["epochs_asked"], cfg.epochs)
    cfg = dataclasses.replace(cfg, epochs=epochs)
    write_resolved_config(folder / "train_config.yaml", cfg)
    return cfg


def _fit_budget(cfg: "TrainConfig", epoch_seconds: float) -> "TrainConfig":
    """``cfg`` with the epochs that fit its budget at ``epoch_seconds`` an epoch (logged)."""
    epochs = budget_epochs(cfg, epoch_seconds)
    if epochs == cfg.epochs:
        log.info("training budget %.4g min: %d epochs of %.1f s fit", cfg.budget_minutes,
                 cfg.epochs, epoch_seconds)
        return cfg
    log.info("training budget %.4g min: an epoch takes %.1f s, so %d of %d epochs "
             "(all of them would take %.1f min)", cfg.budget_minutes, epoch_seconds, epochs,
             cfg.epochs, cfg.epochs * epoch_seconds / 60.0)
    return dataclasses.replace(cfg, epochs=epochs)


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
