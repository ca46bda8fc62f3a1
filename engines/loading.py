"""Loading a model: a bundle folder, a bundle object or a project's trained shuffle -> a runner.

:mod:`posed.engines.compat` re-exports these; offline jobs (:mod:`posed.engines.offline.scale`)
import them from here, so they never import the facade that imports them.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from posed.engines.bundle import ModelBundle, is_bundle, load_bundle, sha256_file
from posed.engines.project.folders import get_snapshot
from posed.engines.registry import Engine, capability, resolve_engine
from posed.errors import CapabilityError, ModelLoadError

if TYPE_CHECKING:
    from posed.engines.base import PoseRunner

__all__ = ["MULTIANIMAL_ENGINES", "load_model", "resolve_bundle"]

MULTIANIMAL_ENGINES = (Engine.PYTORCH, Engine.ONNX)
"""Engines with a multi-animal runner (PyTorch trains and exports the models; ONNX runs them)."""


def resolve_bundle(source: "str | Path | ModelBundle", engine: "str | Engine | None" = None, *,
                   shuffle: int = 1, snapshot: int | str | None = None) -> ModelBundle:
    """The bundle behind a bundle folder, a bundle object, or a project's trained shuffle."""
    if isinstance(source, ModelBundle):
        return source
    if is_bundle(source):
        bundle = load_bundle(source)
        return _with_snapshot(bundle, snapshot) if snapshot is not None else bundle
    from posed.engines.project import load_project

    project = load_project(source)
    eng = resolve_engine(engine, project)
    snap = get_snapshot(project, shuffle, eng, snapshot)
    return _with_snapshot(load_bundle(snap.parent, verify=False), snap.stem.split("-")[1])


def load_model(source: "str | Path | ModelBundle", engine: "str | Engine | None" = None,
               *, shuffle: int = 1, snapshot: int | str | None = None,
               **options: Any) -> "PoseRunner":
    """Load a runner from a bundle directory, a bundle object or a project (+ shuffle/snapshot).

    The engine comes from ``engine``, else from the bundle itself. ``options`` go to the
    engine's runner (``device``, ``threads``, ``provider``, ...).
    """
    bundle = resolve_bundle(source, engine, shuffle=shuffle, snapshot=snapshot)
    eng = Engine.parse(engine) if engine is not None else Engine.parse(bundle.engine)
    if "individuals" in bundle.architecture and eng not in MULTIANIMAL_ENGINES:
        # Bottom-up multi-animal bundles return a MultiAnimalRunner (engines/base.py); the
        # TensorFlow engine has none.
        raise CapabilityError(f"{bundle.path}: multi-animal models are not supported by engine "
                              f"'{eng.value}' (engines that can: "
                              f"{', '.join(e.value for e in MULTIANIMAL_ENGINES)})")
    return capability(eng, "load_runner")(bundle, **options)


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
