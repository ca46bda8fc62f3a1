"""Where a project keeps one shuffle's model: folders and snapshots, per engine."""

from __future__ import annotations

from pathlib import Path

from posed.engines.project.config import Project
from posed.engines.registry import Engine, resolve_engine
from posed.errors import ModelLoadError


def get_model_folder(project: "Project", shuffle: int, engine: "str | Engine | None" = None,
                     train_fraction: float | None = None) -> Path:
    """The folder of one shuffle's model, DeepLabCut style but under ``posed-models-<engine>``."""
    eng = resolve_engine(engine, project)
    frac = project.training_fraction[0] if train_fraction is None else train_fraction
    name = f"{project.name}-trainset{int(round(frac * 100))}shuffle{shuffle}"
    return project.root / f"posed-models-{eng.value}" / f"iteration-{project.iteration}" / name


def get_train_folder(project: "Project", shuffle: int, engine: "str | Engine | None" = None) -> Path:
    """Folder where training writes snapshots (and which is itself a model bundle)."""
    return get_model_folder(project, shuffle, engine) / "train"


def list_snapshots(train_folder: Path) -> list[Path]:
    """Snapshot weights in ``train_folder``, oldest first."""
    return sorted(Path(train_folder).glob("snapshot-*.safetensors"))


def get_snapshot(project: "Project", shuffle: int, engine: "str | Engine | None" = None,
                 snapshot: int | str | None = None) -> Path:
    """Path of a snapshot: ``None``/``"last"`` = newest, an int = that epoch.

    Raises:
        ModelLoadError: no snapshot (not trained yet) or the requested one is absent.
    """
    folder = get_train_folder(project, shuffle, engine)
    snaps = list_snapshots(folder)
    if not snaps:
        raise ModelLoadError(f"{folder}: no snapshots (train shuffle {shuffle} first: posed train)")
    if snapshot is None or snapshot == "last":
        return snaps[-1]
    wanted = folder / f"snapshot-{int(snapshot):03d}.safetensors"
    if wanted not in snaps:
        have = ", ".join(p.stem.split("-")[1] for p in snaps)
        raise ModelLoadError(f"{wanted}: no such snapshot (have: {have})")
    return wanted
