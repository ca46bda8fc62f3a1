"""Evaluation of a trained model on its project's train and test images.

Reported per body part and overall, for the train and the test set:

- ``error_px``: mean Euclidean distance between prediction and label, in pixels;
- ``error_px_pcutoff``: the same over predictions whose likelihood ≥ pcutoff;
- ``pck``: fraction of labelled parts predicted within ``pck_px`` pixels;
- ``above_pcutoff``: fraction of labelled parts predicted with likelihood ≥ pcutoff;
- ``n``: labelled parts counted.

Results go to ``<model folder>/evaluation/snapshot-NNN/`` as ``errors.csv`` plus the
predictions as a DeepLabCut-shaped table (row index = image path).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from posed.engines.analyze import predict_image_files
from posed.engines.base import PoseRunner
from posed.engines.dataformats import poses_to_frame, write_pose_table
from posed.engines.io import atomic_path
from posed.engines.project import Project, load_labels, load_split


@dataclass
class Evaluation:
    """Evaluation results: the summary table and where it was written."""

    table: pd.DataFrame
    folder: Path
    pcutoff: float
    pck_px: float

    def format(self) -> str:
        """The summary as a fixed-width text table."""
        return self.table.to_string(float_format=lambda v: f"{v:8.3f}")


def summarise(pred: np.ndarray, truth: np.ndarray, bodyparts: list[str], pcutoff: float,
              pck_px: float) -> pd.DataFrame:
    """Per body part and overall metrics for predictions N×K×3 against labels N×K×2."""
    dist = np.linalg.norm(pred[..., :2] - truth, axis=-1)  # N×K, NaN where unlabelled
    labelled = np.isfinite(truth).all(axis=-1)
    confident = pred[..., 2] >= pcutoff
    rows = {}
    for k, name in enumerate([*bodyparts, "all"]):
        sel = slice(None) if name == "all" else slice(k, k + 1)
        d, lab, conf = dist[:, sel], labelled[:, sel], confident[:, sel]
        n = int(lab.sum())
        dl = d[lab]
        dc = d[lab & conf]
        rows[name] = {
            "error_px": float(dl.mean()) if n else np.nan,
            "error_px_pcutoff": float(dc.mean()) if dc.size else np.nan,
            "pck": float((dl <= pck_px).mean()) if n else np.nan,
            "above_pcutoff": float(conf[lab].mean()) if n else np.nan,
            "n": n,
        }
    return pd.DataFrame.from_dict(rows, orient="index")


def evaluate(project: Project, shuffle: int, runner: PoseRunner, model_folder: Path, *,
             pcutoff: float | None = None, pck_px: float = 5.0, write: bool = True) -> Evaluation:
    """Evaluate ``runner`` on the shuffle's train and test images and write the results."""
    pcutoff = project.pcutoff if pcutoff is None else pcutoff
    split = load_split(project, shuffle)
    labels = load_labels(project)
    index = {img: i for i, img in enumerate(labels.images)}
    parts: dict[str, pd.DataFrame] = {}
    all_images: list[str] = []
    all_pred: list[np.ndarray] = []
    for set_name, images in (("train", list(split.train)), ("test", list(split.test))):
        images = [img for img in images if img in index]
        if not images:
            continue
        _, pred = predict_image_files(runner, [project.root / img for img in images])
        truth = labels.keypoints[[index[i] for i in images]]
        parts[set_name] = summarise(pred, truth, list(project.bodyparts), pcutoff, pck_px)
        all_images += images
        all_pred.append(pred)
    table = pd.concat(parts, names=["set", "bodypart"])
    snapshot = runner.bundle.source.get("snapshot", "model")
    folder = model_folder / "evaluation" / (
        f"snapshot-{int(snapshot):03d}" if isinstance(snapshot, int) else str(snapshot))
    if write:
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(folder / "errors.csv") as tmp:
            table.assign(pcutoff=pcutoff, pck_px=pck_px).to_csv(tmp)
        df = poses_to_frame(np.concatenate(all_pred), runner.bundle.bodyparts, runner.bundle.scorer,
                            index=all_images)
        write_pose_table(df, folder / f"predictions{runner.bundle.scorer}.h5", csv=True)
    return Evaluation(table=table, folder=folder, pcutoff=pcutoff, pck_px=pck_px)
