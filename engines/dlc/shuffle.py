"""A DeepLabCut shuffle served in place: its snapshot as a posed bundle, cached by content.

The shuffle folder is only read. The bundle (the same conversion and checks as ``posed
import-dlc``) goes to ``<cache>/dlc-shuffles/<hash>/``, the hash being that of the model config
and the snapshot, so an edited config or a retrained snapshot is converted again and an
unchanged one is converted once. ``<cache>`` is ``$POSED_CACHE_DIR``, else
``$XDG_CACHE_HOME/posed``, else ``~/.cache/posed``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from posed.engines.bundle import ModelBundle, is_bundle, load_bundle, sha256_file
from posed.engines.dlc.layout import DlcShuffle, DlcSnapshot
from posed.engines.registry import capability
from posed.errors import ModelLoadError

__all__ = ["cache_dir", "shuffle_bundle"]


def cache_dir() -> Path:
    """Where posed keeps what it derives from files it only reads."""
    if os.environ.get("POSED_CACHE_DIR"):
        return Path(os.environ["POSED_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "posed"


def shuffle_bundle(shuffle: DlcShuffle, snapshot: DlcSnapshot,
                   detector: DlcSnapshot | None = None) -> ModelBundle:
    """The posed bundle of one snapshot of a DeepLabCut shuffle (converted on first use).

    Its scorer is DeepLabCut's (:meth:`DlcShuffle.scorer`), so outputs carry DeepLabCut's
    names; ``source`` records the project, shuffle, snapshot and layout.

    A PyTorch shuffle runs on the PyTorch engine; a TensorFlow one (a ResNet checkpoint,
    frozen into DeepLabCut's export graph) on the TensorFlow engine.

    A top-down shuffle also needs its ``detector`` snapshot (None: the one the project's
    ``detector_snapshotindex`` selects).

    Raises:
        ModelLoadError: the snapshot or config is unreadable, or a model posed does not run.
    """
    if detector is None and shuffle.top_down:
        detector = shuffle.detector_snapshot()
    digest = hashlib.sha256(shuffle.pose_cfg.read_bytes())
    for path in snapshot.files() + (detector.files() if detector else []):
        if not path.is_file():
            raise ModelLoadError(f"{path}: missing (snapshot {snapshot.path.name} is incomplete)")
        digest.update(sha256_file(path).encode())
    folder = cache_dir() / "dlc-shuffles" / digest.hexdigest()[:32]
    if not is_bundle(folder):
        source = {"layout": "deeplabcut", "project": str(shuffle.project.root),
                  "shuffle": shuffle.shuffle, "train_fraction": shuffle.train_fraction,
                  "snapshot": snapshot.uid, "shuffle_folder": str(shuffle.folder),
                  "dlc_engine": shuffle.engine.value, "snapshot_path": str(snapshot.path),
                  "scorer": shuffle.scorer(snapshot, detector),
                  "pcutoff": shuffle.project.pcutoff}
        if detector is not None:
            source["detector_snapshot"] = detector.uid
        _convert(shuffle, snapshot, folder, source, detector)
    return load_bundle(folder)


def _convert(shuffle: DlcShuffle, snapshot: DlcSnapshot, folder: Path, source: dict,
             detector: DlcSnapshot | None = None) -> None:
    """Write the bundle beside ``folder`` and rename it into place (two processes converting
    the same snapshot at once both succeed; one rename wins)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        extra = {"detector": detector.path} if detector is not None else {}
        capability(shuffle.engine, "import_dlc_snapshot")(shuffle.pose_cfg, snapshot.path, tmp,
                                                           source=source, **extra)
        try:
            os.rename(tmp, folder)
        except OSError:
            if not is_bundle(folder):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
