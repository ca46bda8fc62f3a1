"""``deeplabcut.export_model`` for DeepLabCut shuffles: the ``.pt`` DeepLabCut-Live loads.

Written where DeepLabCut writes it: ``<project>/exported-models-pytorch/DLC_<Task>_<net_type>_
iteration-<i>_shuffle-<k>/DLC_<Task>_<net_type>_iteration-<i>_shuffle-<k>_snapshot-<uid>.pt``
(DeepLabCut 3.0.2 itself prints the net type as ``NetType.RESNET_50`` there; posed writes the
name ``resnet_50``, which is what ``posed import-dlc`` and DeepLabCut's docs expect).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from posed.engines.dlc.layout import find_shuffle
from posed.engines.project import Project
from posed.engines.registry import Engine, capability
from posed.errors import CapabilityError

__all__ = ["export_dlc_live"]

log = logging.getLogger(__name__)


def export_dlc_live(project: Project, shuffle: int, trainingsetindex: int = 0,
                    snapshotindex: Any = None, iteration: int | None = None,
                    overwrite: bool = False, wipepaths: bool = False, modelprefix: str = "",
                    engine: Engine | None = None, without_detector: bool = False) -> Path:
    """Export a DeepLabCut shuffle's snapshot for DeepLabCut-Live; returns the file.

    An existing file is kept unless ``overwrite`` (DeepLabCut's rule). A top-down shuffle's
    export holds its detector too (the snapshot ``detector_snapshotindex`` selects; its id in
    the file name, ``..._snapshot-detector<uid>_snapshot-<uid>.pt``, as DeepLabCut names it),
    unless ``without_detector``.

    Raises:
        CapabilityError: the shuffle is not in DeepLabCut's PyTorch layout.
    """
    if iteration is not None and iteration != project.iteration:
        project = _at_iteration(project, iteration)
    found = find_shuffle(project, shuffle, trainingsetindex, modelprefix, engine)
    if found is not None and found.engine is Engine.TENSORFLOW:
        raise CapabilityError(
            f"{found.train_dir}: a TensorFlow shuffle; posed exports DeepLabCut-Live models of "
            "PyTorch shuffles only (export this one with DeepLabCut's own export_model)")
    if found is None:
        raise CapabilityError(
            f"{project.root}: shuffle {shuffle} has no DeepLabCut PyTorch model folder; "
            "DeepLabCut-Live exports are made from DeepLabCut 3 shuffles (for posed's own "
            "models use `posed export`)")
    snap = found.snapshot(snapshotindex)
    detector = found.detector_snapshot() if found.top_down and not without_detector else None
    net_type = str(found.model_config().get("net_type"))
    name = f"DLC_{project.task}_{net_type}_iteration-{project.iteration}_shuffle-{shuffle}"
    with_detector = f"_snapshot-detector{detector.uid}" if detector else ""
    out = (project.root / "exported-models-pytorch" / name
           / f"{name}{with_detector}_snapshot-{snap.uid}.pt")
    if out.exists() and not overwrite:
        log.info("%s exists; not overwritten (pass overwrite=True)", out)
        return out
    extra = {"detector": detector.path} if detector else {}
    return Path(capability(Engine.PYTORCH, "export_dlc_live")(found.pose_cfg, snap.path, out,
                                                               wipepaths=wipepaths, **extra))


def _at_iteration(project: Project, iteration: int) -> Project:
    import dataclasses

    return dataclasses.replace(project, iteration=int(iteration))
