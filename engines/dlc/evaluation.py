"""DeepLabCut's evaluation files for a DeepLabCut shuffle, beside posed's own.

DeepLabCut 3 writes, in ``evaluation-results-pytorch/iteration-<i>/<shuffle folder name>/``:
``<scorer>-results.csv`` (one row: ``%Training dataset, Shuffle number, Training epochs,
Detector epochs (TD only), pcutoff``, then ``train/test rmse, rmse_pcutoff, mAP, mAR``, rounded
to 2 decimals), ``<scorer>.h5`` (the predictions of every labelled image: columns
``scorer/individuals/bodyparts/coords``, rows DeepLabCut's image index), and the iteration's
``CombinedEvaluation-results.csv``. posed writes the same files; its ``rmse`` is its mean pixel
error (DeepLabCut's rmse is the same mean Euclidean distance), and ``mAP``/``mAR`` are left
empty: posed does not compute DeepLabCut's keypoint-similarity AP for single-animal models.

For a TensorFlow shuffle, DeepLabCut's TensorFlow engine's files, in ``evaluation-results/``:
``<scorer>-results.csv`` (columns ``Training iterations:, %Training dataset`` (percent),
``Shuffle number, " Train error(px)", " Test error(px)", p-cutoff used, Train/Test error with
p-cutoff``), ``<scorer>-snapshot-<iterations>.h5`` (3 column levels ``scorer/bodyparts/coords``)
and ``CombinedEvaluation-results.csv`` with the same columns.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from posed.engines.bundle import ModelBundle
from posed.engines.io import atomic_path
from posed.engines.project import Project
from posed.engines.project.posetables import read_pose_table, write_pose_table

__all__ = ["write_results"]

INDEX = ["%Training dataset", "Shuffle number", "Training epochs", "Detector epochs (TD only)",
         "pcutoff"]
VALUES = ["train rmse", "train rmse_pcutoff", "train mAP", "train mAR", "test rmse",
          "test rmse_pcutoff", "test mAP", "test mAR"]
TF_COLUMNS = ["Training iterations:", "%Training dataset", "Shuffle number", " Train error(px)",
              " Test error(px)", "p-cutoff used", "Train error with p-cutoff",
              "Test error with p-cutoff"]


def write_results(project: Project, shuffle: int, bundle: ModelBundle, evaluation: Any,
                  folder: Path) -> Path:
    """Write DeepLabCut's evaluation files of ``evaluation`` into ``folder`` (the shuffle's
    DeepLabCut evaluation folder); returns the ``-results.csv``."""
    scorer = bundle.scorer
    snapshot = str(bundle.source.get("snapshot", ""))
    epochs = int(snapshot.rsplit("-", 1)[-1]) if snapshot.rsplit("-", 1)[-1].isdigit() else -1
    if bundle.source.get("dlc_engine") == "tensorflow":
        return _write_tf_results(project, shuffle, bundle, evaluation, folder, epochs)
    row = {"%Training dataset": float(bundle.source.get("train_fraction", 0.0)),
           "Shuffle number": shuffle, "Training epochs": epochs,
           "Detector epochs (TD only)": -1, "pcutoff": evaluation.pcutoff}
    errors = _errors(evaluation.table)
    for set_name in ("train", "test"):
        row[f"{set_name} rmse"], row[f"{set_name} rmse_pcutoff"] = errors[set_name]
        row[f"{set_name} mAP"] = row[f"{set_name} mAR"] = np.nan
    results = pd.DataFrame([row]).set_index(INDEX)[VALUES]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{scorer}-results.csv"
    with atomic_path(path) as tmp:
        results.to_csv(tmp)
    _combine(folder.parent / "CombinedEvaluation-results.csv", results)
    predictions = evaluation.folder / f"predictions{scorer}.h5"
    if predictions.is_file():
        _predictions(project, bundle, read_pose_table(predictions), folder / f"{scorer}.h5")
    return path


def _write_tf_results(project: Project, shuffle: int, bundle: ModelBundle, evaluation: Any,
                      folder: Path, iterations: int) -> Path:
    """DeepLabCut's TensorFlow engine's evaluation files (see the module's docstring)."""
    errors = _errors(evaluation.table)
    fraction = int(round(100 * float(bundle.source.get("train_fraction", 0.0))))
    results = pd.DataFrame([[iterations, fraction, shuffle, errors["train"][0],
                             errors["test"][0], evaluation.pcutoff, errors["train"][1],
                             errors["test"][1]]], columns=TF_COLUMNS)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{bundle.scorer}-results.csv"
    with atomic_path(path) as tmp:
        results.to_csv(tmp)
    combined = folder.parent / "CombinedEvaluation-results.csv"
    if combined.is_file():
        old = pd.read_csv(combined, index_col=0)
        key = TF_COLUMNS[:3]
        same = (old[key] == results[key].iloc[0]).all(axis=1)
        results = pd.concat([old[~same], results], ignore_index=True).sort_values(key)
    with atomic_path(combined) as tmp:
        results.reset_index(drop=True).to_csv(tmp)
    predictions = evaluation.folder / f"predictions{bundle.scorer}.h5"
    if predictions.is_file():
        _predictions(project, bundle, read_pose_table(predictions),
                     folder / f"{bundle.scorer}-snapshot-{iterations}.h5", individual=None)
    return path


def _errors(table: pd.DataFrame) -> dict[str, tuple[float, float]]:
    """Mean pixel error and the same above pcutoff, per set, rounded as DeepLabCut does."""
    out = {}
    for set_name in ("train", "test"):
        if set_name in table.index.get_level_values(0):
            overall = table.loc[(set_name, "all")]
            out[set_name] = (_round(overall["error_px"]), _round(overall["error_px_pcutoff"]))
        else:
            out[set_name] = (np.nan, np.nan)
    return out


def _round(value: Any) -> float:
    return round(float(value), 2) if np.isfinite(value) else np.nan


def _combine(path: Path, results: pd.DataFrame) -> None:
    """Add this row to the iteration's combined table (a row of the same key is replaced)."""
    if path.is_file():
        old = pd.read_csv(path, index_col=list(range(len(INDEX))))
        results = pd.concat([old[~old.index.isin(results.index)], results]).sort_index()
    with atomic_path(path) as tmp:
        results.to_csv(tmp)


def _predictions(project: Project, bundle: ModelBundle, df: pd.DataFrame, path: Path,
                 individual: str | None = "individual_1") -> None:
    """posed's prediction table in DeepLabCut's evaluation layout (4 column levels, 3 without
    ``individual``; every labelled image in DeepLabCut's order, NaN rows for images not
    evaluated)."""
    from posed.engines.dlc.datasets import dlc_image_order

    ind = () if individual is None else (individual,)
    columns = pd.MultiIndex.from_tuples(
        [(bundle.scorer, *ind, bp, c) for bp in bundle.bodyparts
         for c in ("x", "y", "likelihood")],
        names=["scorer", *(("individuals",) if ind else ()), "bodyparts", "coords"])
    out = pd.DataFrame(df.to_numpy(), index=[str(i) for i in df.index], columns=columns)
    order = dlc_image_order(project)
    out = out.reindex(order)
    out.index = pd.MultiIndex.from_tuples([tuple(Path(i).parts) for i in order])
    write_pose_table(out, path)
