"""DeepLabCut's own layout of a project's models: shuffle folders, snapshots, scorer names.

DeepLabCut 3 keeps a shuffle in ``[modelprefix/]dlc-models-pytorch/iteration-<i>/
<Task><date>-trainset<PP>shuffle<K>/{train,test}/`` (TensorFlow: ``dlc-models/``), where
``PP = int(100 * TrainingFraction[trainingsetindex])`` (truncated, as DeepLabCut does).
PyTorch snapshots are ``snapshot-<NNN>.pt`` and ``snapshot-best-<NNN>.pt`` (epochs, at least
three digits); DeepLabCut sorts them by epoch with the best one last, and ``snapshotindex``
(config.yaml, or an argument) is an index into that list: ``-1`` the last, ``"best"`` the best,
``"all"`` every one (the last for naming a scorer). The scorer of a PyTorch shuffle is
``DLC_<CamelNet>_<Task><date>shuffle<K>_snapshot_<uid>``, ``uid`` the epoch or ``best-<epoch>``.
TensorFlow snapshots are checkpoints ``snapshot-<iterations>.index`` (+ ``.data-*``), sorted by
iterations, and their scorer is ``DLC_<net>_<Task><date>shuffle<K>_<iterations>``, ``net`` the
net type without underscores (``resnet50``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from posed.engines.project.config import Project, is_int
from posed.engines.project.posetables import camel_net
from posed.engines.registry import Engine
from posed.errors import ConfigError, ModelLoadError

__all__ = ["TF_DEFAULTS", "DlcShuffle", "DlcSnapshot", "find_shuffle", "list_snapshots", "model_folder",
           "select_snapshot", "shuffle_from_folder", "snapshot_index_setting", "train_fraction"]

# DeepLabCut's TensorFlow defaults for the keys posed reads (its default_config.py): a
# TensorFlow shuffle's pose_cfg.yaml is read merged over them, as DeepLabCut's load_config does.
TF_DEFAULTS = {"stride": 8.0, "mean_pixel": [123.68, 116.779, 103.939],
               "location_refinement": False, "locref_stdev": 7.2801}
_SNAPSHOT_RE = re.compile(r"^snapshot(?P<best>-best)?-(?P<epoch>\d+)\.pt$")
# A top-down shuffle's detector snapshots, listed and indexed alike (detector_snapshotindex).
_DETECTOR_RE = re.compile(r"^snapshot-detector(?P<best>-best)?-(?P<epoch>\d+)\.pt$")
_TF_SNAPSHOT_RE = re.compile(r"^snapshot-(?P<epoch>\d+)\.index$")
_FOLDER_RE = re.compile(r"^(?P<name>.+)-trainset(?P<pp>\d+)shuffle(?P<shuffle>\d+)$")


@dataclass(frozen=True)
class DlcSnapshot:
    """One snapshot of a DeepLabCut shuffle: a PyTorch ``.pt`` file, or a TensorFlow
    checkpoint (``path`` is its prefix ``train/snapshot-N``, ``epoch`` its iterations)."""

    path: Path
    epoch: int
    best: bool

    def files(self) -> list[Path]:
        """The files that hold it (a checkpoint's ``.index`` and ``.data-*``)."""
        if self.path.suffix == ".pt":
            return [self.path]
        folder, name = self.path.parent, self.path.name
        return [folder / f"{name}.index", *sorted(folder.glob(f"{name}.data-*"))]

    @property
    def uid(self) -> str:
        """DeepLabCut's snapshot id in scorer names: the epoch, or ``best-<epoch>``."""
        return f"best-{self.epoch}" if self.best else str(self.epoch)


@dataclass(frozen=True)
class DlcShuffle:
    """A shuffle in DeepLabCut's layout (its ``train/`` folder holds the model config)."""

    project: Project
    shuffle: int
    train_fraction: float
    engine: Engine
    folder: Path  # the shuffle's model folder (holds train/ and test/)

    @property
    def train_dir(self) -> Path:
        return self.folder / "train"

    @property
    def test_dir(self) -> Path:
        return self.folder / "test"

    @property
    def pose_cfg(self) -> Path:
        """``train/pytorch_config.yaml`` (PyTorch) or ``train/pose_cfg.yaml`` (TensorFlow)."""
        return self.train_dir / self.engine.pose_cfg_name

    def model_config(self) -> dict[str, Any]:
        """The shuffle's model config, read as plain YAML."""
        from posed.engines.bundle import read_yaml_mapping

        return read_yaml_mapping(self.pose_cfg)

    def snapshots(self) -> list[DlcSnapshot]:
        return list_snapshots(self.train_dir, self.engine)

    def snapshot(self, index: int | str | None = None) -> DlcSnapshot:
        """The snapshot ``index`` selects (None: the project's ``snapshotindex``)."""
        if index is None:
            index = snapshot_index_setting(self.project)
        return select_snapshot(self.snapshots(), index, self.train_dir)

    @property
    def top_down(self) -> bool:
        """Whether the model is top-down (``method: td``: a detector, then the pose model)."""
        return (self.engine is Engine.PYTORCH
                and str(self.model_config().get("method", "")).lower() == "td")

    def detector_snapshot(self, index: int | str | None = None) -> DlcSnapshot:
        """The detector snapshot ``index`` selects (None: the project's
        ``detector_snapshotindex``), by the same rule as :meth:`snapshot`."""
        if index is None:
            index = snapshot_index_setting(self.project, "detector_snapshotindex")
        found = list_snapshots(self.train_dir, self.engine, _DETECTOR_RE)
        if not found:
            raise ModelLoadError(f"{self.train_dir}: no detector snapshots "
                                 "(snapshot-detector-*.pt) for this top-down model")
        return select_snapshot(found, index, self.train_dir)

    def scorer(self, snapshot: DlcSnapshot, detector: DlcSnapshot | None = None) -> str:
        """DeepLabCut's scorer for this shuffle's predictions with ``snapshot`` (and a
        top-down model's ``detector`` snapshot)."""
        net_type = str(self.model_config().get("net_type") or "")
        if not camel_net(net_type):
            raise ModelLoadError(f"{self.pose_cfg}: no 'net_type'")
        if self.engine is Engine.TENSORFLOW:
            return (f"DLC_{tf_net_name(net_type, self.pose_cfg)}_{self.project.name}"
                    f"shuffle{self.shuffle}_{snapshot.epoch}")
        # DeepLabCut capitalises each part (str.capitalize lower-cases the rest).
        name = "".join(p.capitalize() for p in net_type.split("_"))
        detected = f"_detector_{detector.uid}" if detector is not None else ""
        return (f"DLC_{name}_{self.project.name}shuffle{self.shuffle}{detected}"
                f"_snapshot_{snapshot.uid}")


def tf_net_name(net_type: str, where: Path) -> str:
    """DeepLabCut's short name of a TensorFlow net in scorers (``resnet50``, ``mobnet_35``,
    ``effnet_b0``)."""
    if "resnet" in net_type:
        return net_type.replace("_", "")
    if "mobilenet" in net_type:
        return f"mobnet_{int(float(net_type.split('_')[-1]) * 100)}"
    if "efficientnet" in net_type and "-" in net_type:
        return f"effnet_{net_type.split('-')[1]}"
    raise ModelLoadError(f"{where}: net_type {net_type!r} has no DeepLabCut scorer name")


def train_fraction(project: Project, trainingsetindex: int = 0) -> float:
    """``TrainingFraction[trainingsetindex]`` of the project's config."""
    fractions = project.training_fraction
    if not is_int(trainingsetindex) or not 0 <= trainingsetindex < len(fractions):
        raise ConfigError(f"{project.config_path}: trainingsetindex {trainingsetindex!r} is out "
                          f"of range (TrainingFraction has {len(fractions)} values)")
    return fractions[trainingsetindex]


def model_folder(project: Project, shuffle: int, fraction: float,
                 engine: Engine = Engine.PYTORCH, modelprefix: str = "") -> Path:
    """The shuffle's model folder in DeepLabCut's layout (it may not exist)."""
    name = f"{project.name}-trainset{int(fraction * 100)}shuffle{shuffle}"
    return (project.root / modelprefix / engine.model_folder_name
            / f"iteration-{project.iteration}" / name)


def find_shuffle(project: Project, shuffle: int, trainingsetindex: int = 0, modelprefix: str = "",
                 engine: "Engine | None" = None) -> DlcShuffle | None:
    """The DeepLabCut shuffle of the project, if its ``train/`` folder has a model config.

    Without ``engine`` the PyTorch layout is looked at first, then TensorFlow's.
    """
    fraction = train_fraction(project, trainingsetindex)
    for eng in ((engine,) if engine is not None else (Engine.PYTORCH, Engine.TENSORFLOW)):
        folder = model_folder(project, shuffle, fraction, eng, modelprefix)
        if (folder / "train" / eng.pose_cfg_name).is_file():
            return DlcShuffle(project, shuffle, fraction, eng, folder)
    return None


def shuffle_from_folder(path: str | Path) -> DlcShuffle | None:
    """The shuffle whose model folder (or its ``train/``) ``path`` is; None if it is not one.

    The project is the folder above ``dlc-models-pytorch`` (or ``dlc-models``, under an
    optional model prefix) that holds ``config.yaml``.

    Raises:
        ConfigError: it is a shuffle folder, but its project's config is missing or invalid,
            or names another project.
    """
    from posed.engines.project import load_project

    folder = Path(path).expanduser().resolve()
    if folder.name in ("train", "test"):
        folder = folder.parent
    found = _FOLDER_RE.match(folder.name)
    if found is None or not folder.parent.name.startswith("iteration-"):
        return None
    engines = {e.model_folder_name: e for e in (Engine.PYTORCH, Engine.TENSORFLOW)}
    models = folder.parent.parent
    if models.name not in engines or not (folder / "train" / engines[models.name].pose_cfg_name).is_file():
        return None
    engine = engines[models.name]
    roots = [models.parent, models.parent.parent]  # without and with a model prefix
    root = next((r for r in roots if (r / "config.yaml").is_file()), None)
    if root is None:
        raise ConfigError(f"{folder}: a DeepLabCut shuffle folder, but no config.yaml in "
                          f"{models.parent} or {models.parent.parent}")
    project = load_project(root)
    fractions = [f for f in project.training_fraction if int(f * 100) == int(found["pp"])]
    if found["name"] != project.name or not fractions:
        raise ConfigError(f"{folder}: not a shuffle of {project.config_path} (Task+date "
                          f"{project.name}, TrainingFraction {list(project.training_fraction)})")
    return DlcShuffle(project, int(found["shuffle"]), fractions[0], engine, folder)


def list_snapshots(train_dir: Path, engine: Engine = Engine.PYTORCH,
                   pattern: re.Pattern | None = None) -> list[DlcSnapshot]:
    """Snapshots in DeepLabCut's order: by epoch (iterations), the best one last."""
    found = []
    if pattern is None:
        pattern = _TF_SNAPSHOT_RE if engine is Engine.TENSORFLOW else _SNAPSHOT_RE
    if train_dir.is_dir():
        for path in train_dir.iterdir():
            m = pattern.match(path.name)
            if m and engine is Engine.TENSORFLOW:
                found.append(DlcSnapshot(path.with_suffix(""), int(m["epoch"]), False))
            elif m:
                found.append(DlcSnapshot(path, int(m["epoch"]), m["best"] is not None))
    return sorted(found, key=lambda s: (s.best, s.epoch))


def select_snapshot(snapshots: list[DlcSnapshot], index: int | str,
                    where: Path) -> DlcSnapshot:
    """DeepLabCut's ``snapshotindex`` rule; ``"all"`` names the last (as for scorers)."""
    if not snapshots:
        raise ModelLoadError(f"{where}: no snapshots (snapshot-*.pt, or snapshot-*.index for "
                             "TensorFlow)")
    key = index.lower() if isinstance(index, str) else index
    if key == "all":
        return snapshots[-1]
    if key == "best":
        best = [s for s in snapshots if s.best]
        if not best:
            raise ModelLoadError(f"{where}: no best snapshot (snapshot-best-*.pt)")
        return best[-1]
    if not is_int(key) or not -len(snapshots) <= key < len(snapshots):
        names = ", ".join(s.path.name for s in snapshots)
        raise ModelLoadError(f"{where}: snapshotindex {index!r} does not select one of "
                             f"{len(snapshots)} snapshots ({names})")
    return snapshots[key]


def snapshot_index_setting(project: Project, key: str = "snapshotindex") -> int | str:
    """config.yaml's ``snapshotindex`` (or ``detector_snapshotindex``; DeepLabCut's default
    -1: the last snapshot)."""
    value = project.raw.get(key, -1)
    if value is None:
        value = -1
    if is_int(value) or (isinstance(value, str) and value.lower() in ("all", "best")):
        return value
    raise ConfigError(f"{project.config_path}: {key} must be an integer, 'all' or "
                      f"'best', got {value!r}")
