"""DeepLabCut's ``<video><scorer>_meta.pickle`` beside a pose table, for DeepLabCut's tools.

DeepLabCut's ``create_labeled_video`` and ``extract_outlier_frames`` read it
(``load_video_metadata``) for the cropping settings and frame size. DeepLabCut 3 writes
``{"data": {...}}`` with the keys of :func:`video_metadata`. posed writes it only of built-in
types (dict, list, tuple, str, int, float, bool, None), so reading it needs no DeepLabCut and
runs no code; posed itself never reads a pickle back.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from posed.engines.bundle import ModelBundle
from posed.engines.io import atomic_path

__all__ = ["is_dlc_model", "video_metadata", "write_image_predictions", "write_meta_pickle"]

_PLAIN = (str, int, float, bool, type(None))


def is_dlc_model(bundle: ModelBundle) -> bool:
    """Whether a bundle serves a DeepLabCut shuffle in place (its outputs get DeepLabCut's
    metadata pickle)."""
    return bundle.source.get("layout") == "deeplabcut"


def video_metadata(bundle: ModelBundle, *, start: float, stop: float, fps: float,
                   batch_size: int, width: int, height: int, nframes: int,
                   crop: list[int] | None = None) -> dict[str, Any]:
    """DeepLabCut's ``_meta.pickle`` content for one analysed video (``crop``: the
    ``[x1, x2, y1, y2]`` analysed, else the whole frame), as DeepLabCut's engine of the
    shuffle writes it: PyTorch keeps the ``pytorch-config``, frame dimensions as (width,
    height) and the individuals and body parts; TensorFlow the ``DLC-model-config file`` and
    (height, width)."""
    tensorflow = bundle.source.get("dlc_engine") == "tensorflow"
    config = _shuffle_config(bundle)
    if tensorflow:
        config = {**config, "batch_size": int(batch_size),
                  "init_weights": str(bundle.source.get("snapshot_path", ""))}
    data = {
        "start": float(start),
        "stop": float(stop),
        "run_duration": float(stop - start),
        "Scorer": bundle.scorer,
        "DLC-model-config file" if tensorflow else "pytorch-config": config,
        "fps": float(fps),
        "batch_size": int(batch_size),
        "frame_dimensions": (int(height), int(width)) if tensorflow else (int(width), int(height)),
        "nframes": int(nframes),
        "iteration (active-learning)": int(_project_iteration(bundle)),
        "training set fraction": float(bundle.source.get("train_fraction", 0.0)),
        "cropping": crop is not None,
        "cropping_parameters": list(crop) if crop else [0, int(width), 0, int(height)],
    }
    if not tensorflow:
        meta = config.get("metadata") or {}
        data.update({"individuals": list(meta.get("individuals") or []),
                     "bodyparts": list(meta.get("bodyparts") or bundle.bodyparts),
                     "unique_bodyparts": list(meta.get("unique_bodyparts") or [])})
    return {"data": data}


def write_meta_pickle(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as a pickle (protocol 4), atomically, after checking it is plain data."""
    _check_plain(data, "data")
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        pickle.dump(data, fh, protocol=4)


def _check_plain(value: Any, where: str) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, _PLAIN):
                raise TypeError(f"{where}: key {key!r} is not a built-in value")
            _check_plain(item, f"{where}.{key}")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
    elif not isinstance(value, _PLAIN):
        raise TypeError(f"{where}: {type(value).__name__} is not a built-in type")


def _shuffle_config(bundle: ModelBundle) -> dict[str, Any]:
    """The shuffle's model config as plain data (YAML's safe types only): PyTorch's
    ``train/pytorch_config.yaml``; TensorFlow's ``test/pose_cfg.yaml`` over DeepLabCut's
    defaults, as its analysis loads it."""
    from posed.engines.bundle import read_yaml_mapping

    folder = Path(str(bundle.source.get("shuffle_folder")))
    if bundle.source.get("dlc_engine") == "tensorflow":
        from posed.engines.dlc.layout import TF_DEFAULTS

        test = folder / "test" / "pose_cfg.yaml"
        return {**TF_DEFAULTS, **read_yaml_mapping(test if test.is_file()
                                                   else folder / "train" / "pose_cfg.yaml")}
    return read_yaml_mapping(folder / "train" / "pytorch_config.yaml")


def _project_iteration(bundle: ModelBundle) -> int:
    folder = Path(str(bundle.source.get("shuffle_folder", "")))
    name = folder.parent.name  # iteration-<i>
    return int(name.split("-", 1)[1]) if name.startswith("iteration-") else 0


def write_image_predictions(bundle: ModelBundle, poses: dict[str, Any], folder: Path, *,
                            csv: bool = False) -> Path:
    """DeepLabCut 3's ``analyze_images`` table: ``image_predictions_<scorer>.h5`` (key
    ``predictions``; columns ``scorer/individuals/bodyparts/coords``, rows the image paths)."""
    import numpy as np
    import pandas as pd

    individuals = list((_shuffle_config(bundle).get("metadata") or {}).get("individuals")
                       or ["individual_1"])[:1]
    columns = pd.MultiIndex.from_tuples(
        [(bundle.scorer, individuals[0], bp, c) for bp in bundle.bodyparts
         for c in ("x", "y", "likelihood")],
        names=["scorer", "individuals", "bodyparts", "coords"])
    rows = np.stack([np.asarray(p["bodyparts"]).reshape(-1) for p in poses.values()])
    df = pd.DataFrame(rows, index=list(poses), columns=columns)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"image_predictions_{bundle.scorer}.h5"
    with atomic_path(path) as tmp:
        df.to_hdf(tmp, key="predictions", mode="w")
    if csv:
        with atomic_path(path.with_suffix(".csv")) as tmp:
            df.to_csv(tmp)
    return path
