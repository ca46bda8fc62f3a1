"""Loading a model: a bundle folder, a bundle object or a project's trained shuffle -> a runner.

:mod:`posed.engines.api` re-exports these; offline jobs (:mod:`posed.engines.offline.scale`)
import them from here, so they never import the facade that imports them.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from posed.engines.bundle import ModelBundle, is_bundle, load_bundle, sha256_file
from posed.engines.project.folders import get_snapshot
from posed.engines.registry import Engine, capability, resolve_engine
from posed.errors import CapabilityError, ConfigError, ModelLoadError

if TYPE_CHECKING:
    from posed.engines.base import PoseRunner

__all__ = ["MULTIANIMAL_ENGINES", "TOPDOWN_ENGINES", "load_model", "load_served_model",
           "resolve_bundle"]

MULTIANIMAL_ENGINES = (Engine.PYTORCH, Engine.ONNX, Engine.OPENVINO)
"""Engines with a multi-animal runner (PyTorch trains and exports the models; ONNX Runtime and
OpenVINO run the exports)."""
TOPDOWN_ENGINES = (Engine.PYTORCH, Engine.ONNX)
"""Engines with a top-down runner (PyTorch eager and TorchScript, ONNX Runtime)."""


def resolve_bundle(source: "str | Path | ModelBundle", engine: "str | Engine | None" = None, *,
                   shuffle: int = 1, snapshot: int | str | None = None,
                   layout: str | None = None, **dlc: Any) -> ModelBundle:
    """The bundle behind a bundle folder, a bundle object, or a project's trained shuffle.

    A project's shuffle is posed's (``posed-models-<engine>/``) or DeepLabCut's
    (``dlc-models-pytorch/``, served in place: :mod:`posed.engines.dlc.shuffle`); ``layout``
    (``"posed"``, ``"deeplabcut"``) chooses, and without it the one that exists is used (both
    existing is an error that asks to choose). ``snapshot`` is an epoch in either layout;
    ``dlc`` takes DeepLabCut's ``snapshot_index``, ``trainingsetindex`` and ``modelprefix``.
    """
    if isinstance(source, ModelBundle):
        return source
    if is_bundle(source):
        bundle = load_bundle(source)
        return _with_snapshot(bundle, snapshot) if snapshot is not None else bundle
    from posed.engines.dlc.layout import shuffle_from_folder
    from posed.engines.project import load_project

    found = shuffle_from_folder(source)  # a DeepLabCut shuffle folder named directly
    project = None
    if found is None:
        project = load_project(source)
        found = _dlc_shuffle(project, shuffle, layout, engine, **dlc)
    if found is not None:
        from posed.engines.dlc.shuffle import shuffle_bundle

        detector = dlc.get("detector_snapshot_index")
        return shuffle_bundle(found, _dlc_snapshot(found, snapshot, dlc.get("snapshot_index")),
                              found.detector_snapshot(detector) if detector is not None else None)
    eng = resolve_engine(engine, project)
    snap = get_snapshot(project, shuffle, eng, snapshot)
    return _with_snapshot(load_bundle(snap.parent, verify=False), snap.stem.split("-")[1])


LAYOUTS = ("posed", "deeplabcut")


def load_served_model(path: "str | Path") -> ModelBundle:
    """The model a daemon serves: a bundle folder (every weights file's hash checked) or a
    DeepLabCut shuffle folder (``dlc-models-pytorch/.../<shuffle>[/train]``, served in place
    with the project's ``snapshotindex``).

    Raises:
        ModelLoadError: neither, or a damaged bundle or snapshot.
    """
    from posed.engines.dlc.layout import shuffle_from_folder

    if is_bundle(path):
        return load_bundle(path)
    found = shuffle_from_folder(path)
    if found is None:
        raise ModelLoadError(f"{path}: not a model bundle (no posed.yaml) nor a DeepLabCut "
                             "shuffle folder (dlc-models-pytorch/iteration-N/<shuffle>/train)")
    from posed.engines.dlc.shuffle import shuffle_bundle

    return shuffle_bundle(found, found.snapshot())


def _dlc_shuffle(project: Any, shuffle: int, layout: str | None, engine: Any,
                 trainingsetindex: int = 0, modelprefix: str = "",
                 snapshot_index: Any = None, detector_snapshot_index: Any = None) -> Any:
    """The DeepLabCut shuffle to serve, or None for posed's own layout (the snapshot indices
    are applied by the caller)."""
    from posed.engines.dlc.layout import find_shuffle
    from posed.engines.project.folders import get_train_folder, list_snapshots

    if layout not in (None, *LAYOUTS):
        raise ConfigError(f"layout: must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    if layout == "posed":
        return None
    found = find_shuffle(project, shuffle, trainingsetindex, modelprefix)
    if layout == "deeplabcut" and found is None:
        raise ModelLoadError(f"{project.root}: no DeepLabCut shuffle {shuffle} "
                             f"(dlc-models-pytorch/ or dlc-models/ with a train/ config)")
    if layout is None and found is not None:
        own = get_train_folder(project, shuffle, resolve_engine(engine, project))
        if list_snapshots(own) and not _published(own, found.train_dir):
            raise ConfigError(f"{project.root}: shuffle {shuffle} is trained both by posed "
                              f"({own}) and by DeepLabCut ({found.train_dir}); choose one "
                              "with layout (--layout posed|deeplabcut)")
    return found


def _published(own: Path, dlc_train: Path) -> bool:
    """Whether posed's training folder is the one published as this DeepLabCut shuffle (the
    same model in both layouts: DeepLabCut's is served)."""
    try:
        target = load_bundle(own, verify=False).source.get("published_to")
    except ModelLoadError:
        return False
    return target is not None and Path(target).resolve() == dlc_train.resolve()


def _dlc_snapshot(found: Any, epoch: int | str | None, index: Any) -> Any:
    """A snapshot by epoch (posed's ``snapshot``), else by DeepLabCut's index rule."""
    if epoch is None or epoch == "last":
        return found.snapshot(index)
    if str(epoch).lower() == "best":
        return found.snapshot("best")
    match = [s for s in found.snapshots() if s.epoch == int(epoch)]
    if not match:
        have = ", ".join(s.path.name for s in found.snapshots()) or "none"
        raise ModelLoadError(f"{found.train_dir}: no snapshot of epoch {epoch} (have: {have})")
    return match[0]  # the plain snapshot before the best copy of the same epoch


def load_model(source: "str | Path | ModelBundle", engine: "str | Engine | None" = None,
               *, shuffle: int = 1, snapshot: int | str | None = None,
               layout: str | None = None, dlc: dict | None = None,
               **options: Any) -> "PoseRunner":
    """Load a runner from a bundle directory, a bundle object or a project (+ shuffle/snapshot).

    The engine comes from ``engine``, else from the bundle's ``precision: auto`` choice
    (:func:`~posed.engines.autoprecision.auto_runtime`), else from the bundle itself.
    ``options`` go to the engine's runner (``device``, ``threads``, ``provider``, ...);
    ``layout`` and ``dlc`` choose a project's shuffle as :func:`resolve_bundle` says.
    ``flip_test=True`` wraps the runner in a :class:`~posed.engines.fliptest.FlipTestRunner`
    whose left/right pairs are ``flip_pairs`` (name pairs), else those of the project the
    model was trained in, else those found in the part names.
    """
    from posed.engines.autoprecision import auto_runtime

    flip_test, flip_pairs = options.pop("flip_test", False), options.pop("flip_pairs", None)
    bundle = resolve_bundle(source, engine, shuffle=shuffle, snapshot=snapshot, layout=layout,
                            **(dlc or {}))
    engine, options = auto_runtime(bundle, engine, options)
    eng = Engine.parse(engine) if engine is not None else Engine.parse(bundle.engine)
    if "individuals" in bundle.architecture and eng not in MULTIANIMAL_ENGINES:
        # Bottom-up multi-animal bundles return a MultiAnimalRunner (engines/base.py); the
        # TensorFlow engine has none.
        raise CapabilityError(f"{bundle.path}: multi-animal models are not supported by engine "
                              f"'{eng.value}' (engines that can: "
                              f"{', '.join(e.value for e in MULTIANIMAL_ENGINES)})")
    if "topdown" in bundle.architecture and eng not in TOPDOWN_ENGINES:
        raise CapabilityError(f"{bundle.path}: top-down models (detector + pose model) run on "
                              f"engines {', '.join(e.value for e in TOPDOWN_ENGINES)}, not "
                              f"'{eng.value}'")
    runner = capability(eng, "load_runner")(bundle, **options)
    if not flip_test:
        return runner
    from posed.engines.fliptest import FlipTestRunner, project_pairs

    try:
        return FlipTestRunner(runner, project_pairs(bundle) if flip_pairs is None
                              else flip_pairs)
    except Exception:
        runner.close()
        raise


def _with_snapshot(bundle: ModelBundle, snapshot: int | str) -> ModelBundle:
    """The same bundle pointing at another snapshot of its training folder."""
    if bundle.path is None:
        raise ModelLoadError("cannot select a snapshot of a bundle that has no folder")
    name = f"snapshot-{int(snapshot):03d}.safetensors"
    wfile = bundle.path / name
    if not wfile.is_file():
        raise ModelLoadError(f"{wfile}: no such snapshot")
    source = dict(bundle.source)
    source["snapshot"] = int(snapshot)
    if "scorer" in source:
        source["scorer"] = str(source["scorer"]).rsplit("_snapshot_", 1)[0] + f"_snapshot_{int(snapshot)}"
    return dataclasses.replace(bundle, weights=[{"name": name, "sha256": sha256_file(wfile)}],
                               source=source)
