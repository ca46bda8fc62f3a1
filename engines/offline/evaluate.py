"""Evaluation of a trained model on its project's train and test images.

Reported per body part and overall (``all``), for the train and the test set, in this
column order:

- ``error_px``: mean Euclidean distance between prediction and label, in pixels;
- ``median_px``: the median of the same distances (one bad image does not move it);
- ``error_px_pcutoff``: the mean over predictions whose likelihood ≥ pcutoff;
- ``pck``: fraction of labelled parts predicted within ``pck_px`` pixels;
- ``pck@T``: the same within T pixels, one column per threshold of ``pck_thresholds``
  (default :data:`PCK_THRESHOLDS`: ``pck@2``, ``pck@5``, ``pck@10``), in increasing order;
- ``above_pcutoff``: fraction of labelled parts predicted with likelihood ≥ pcutoff;
- ``found`` (multi-animal only): fraction of labelled parts predicted;
- ``n``: labelled parts counted (parts without a label are left out of every column).

Results go to ``<model folder>/evaluation/snapshot-NNN/`` as ``errors.csv`` plus the
predictions as a DeepLabCut-shaped table (row index = image path).

Multi-animal projects (:func:`evaluate_multianimal`) report the same per-body-part table after
matching each labelled animal to a predicted one (Hungarian algorithm on the mean keypoint
distance), plus ``map.csv``: a COCO-style keypoint-similarity mAP with one κ for every body
part (default 0.1, DeepLabCut's) and the labelled parts' bounding-box area as the object
scale (see :func:`keypoint_similarity`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from posed.engines.offline.analyze import predict_image_files
from posed.engines.base import PoseRunner
from posed.engines.project.posetables import poses_to_frame, write_pose_table
from posed.engines.io import atomic_path
from posed.engines.project import Project, load_labels, load_split
from posed.engines.tracking.geometry import BIG_COST, mean_distances

PCK_THRESHOLDS: tuple[float, ...] = (2.0, 5.0, 10.0)
"""Default PCK thresholds in pixels, each reported as a ``pck@T`` column. Pixels rather than
a fraction of the animal's size: a project config carries no size to scale by."""


@dataclass
class Evaluation:
    """Evaluation results: the summary table and where it was written."""

    table: pd.DataFrame
    folder: Path
    pcutoff: float
    pck_px: float
    pck_thresholds: tuple[float, ...] = PCK_THRESHOLDS

    def format(self) -> str:
        """The summary as a fixed-width text table."""
        return self.table.to_string(float_format=lambda v: f"{v:8.3f}")


def pck_thresholds_of(values: Sequence[float]) -> tuple[float, ...]:
    """``values`` as sorted, distinct positive floats (the order of the ``pck@T`` columns)."""
    out = tuple(sorted({float(v) for v in values}))
    if any(not np.isfinite(v) or v <= 0 for v in out):
        raise ValueError(f"PCK thresholds must be positive pixel distances, got {list(values)}")
    return out


def pck_column(threshold: float) -> str:
    """The column name of the PCK at ``threshold`` pixels: ``pck@5``, ``pck@2.5``."""
    # Every digit kept: a rounded name could give two thresholds the same column.
    return f"pck@{np.format_float_positional(threshold, trim='-')}"


def summarise(pred: np.ndarray, truth: np.ndarray, bodyparts: list[str], pcutoff: float,
              pck_px: float, pck_thresholds: Sequence[float] = PCK_THRESHOLDS) -> pd.DataFrame:
    """Per body part and overall metrics for predictions N×K×3 against labels N×K×2."""
    return _metrics(pred, truth, bodyparts, pcutoff, pck_px, matched=False,
                    pck_thresholds=pck_thresholds)


def _metrics(pred: np.ndarray, truth: np.ndarray, bodyparts: list[str], pcutoff: float,
             pck_px: float, matched: bool,
             pck_thresholds: Sequence[float] = PCK_THRESHOLDS) -> pd.DataFrame:
    """The table of :func:`summarise`; with ``matched`` (predictions of matched animals, NaN
    where a part was not predicted) errors leave unpredicted parts out, the PCKs count them
    as failures and a ``found`` column gives the fraction of labelled parts predicted."""
    thresholds = pck_thresholds_of(pck_thresholds)
    dist = np.linalg.norm(pred[..., :2] - truth, axis=-1)  # N×K, NaN where unlabelled
    labelled = np.isfinite(truth).all(axis=-1)
    confident = pred[..., 2] >= pcutoff
    rows = {}
    for k, name in enumerate([*bodyparts, "all"]):
        sel = slice(None) if name == "all" else slice(k, k + 1)
        d, lab, conf = dist[:, sel], labelled[:, sel], confident[:, sel]
        n = int(lab.sum())
        dl = d[lab]
        seen = dl[np.isfinite(dl)] if matched else dl
        dc = d[lab & conf & np.isfinite(d)] if matched else d[lab & conf]
        reach = np.nan_to_num(dl, nan=np.inf)  # a part not predicted is within no threshold
        row = {
            "error_px": float(seen.mean()) if seen.size else np.nan,
            "median_px": float(np.median(seen)) if seen.size else np.nan,
            "error_px_pcutoff": float(dc.mean()) if dc.size else np.nan,
            "pck": float((reach <= pck_px).mean()) if n else np.nan,
            **{pck_column(t): float((reach <= t).mean()) if n else np.nan for t in thresholds},
            "above_pcutoff": float(conf[lab].mean()) if n else np.nan,
        }
        if matched:
            row["found"] = float(np.isfinite(dl).mean()) if n else np.nan
        rows[name] = {**row, "n": n}
    return pd.DataFrame.from_dict(rows, orient="index")


def _labelled_sets(split: Any, index: dict[str, int]) -> Iterator[tuple[str, list[str]]]:
    """("train" or "test", its labelled images) of a split; sets without any left out."""
    for set_name, images in (("train", list(split.train)), ("test", list(split.test))):
        images = [img for img in images if img in index]
        if images:
            yield set_name, images


def _output_folder(runner: Any, model_folder: Path) -> Path:
    """``<model folder>/evaluation/snapshot-NNN`` (or the bundle's snapshot name), with
    ``-flip`` for a flip-tested runner (its results never overwrite the plain ones)."""
    snapshot = runner.bundle.source.get("snapshot", "model")
    name = f"snapshot-{int(snapshot):03d}" if isinstance(snapshot, int) else str(snapshot)
    return model_folder / "evaluation" / (
        name + "-flip" if runner.bundle.source.get("flip_test") else name)


def _write_results(folder: Path, table: pd.DataFrame, pcutoff: float, pck_px: float,
                   predictions: pd.DataFrame, scorer: str,
                   more: dict[str, pd.DataFrame] | None = None) -> None:
    """``errors.csv``, the ``more`` tables by file name, and the predictions as a pose table."""
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / "errors.csv") as tmp:
        table.assign(pcutoff=pcutoff, pck_px=pck_px).to_csv(tmp)
    for name, extra in (more or {}).items():
        with atomic_path(folder / name) as tmp:
            extra.to_csv(tmp)
    write_pose_table(predictions, folder / f"predictions{scorer}.h5", csv=True)


def evaluate(project: Project, shuffle: int, runner: PoseRunner, model_folder: Path, *,
             pcutoff: float | None = None, pck_px: float = 5.0, write: bool = True,
             plots: bool = False, sigma: float | None = None,
             pck_thresholds: Sequence[float] = PCK_THRESHOLDS) -> Evaluation:
    """Evaluate ``runner`` on the shuffle's train and test images and write the results.

    ``pck_thresholds``: pixel distances of the ``pck@T`` columns. ``plots`` also writes
    error-per-bodypart.png and predicted-vs-labelled test images (see
    :func:`posed.engines.offline.plotting.plot_evaluation`). Multi-animal projects go to
    :func:`evaluate_multianimal` (``sigma``: κ of its keypoint similarity).
    """
    if getattr(project, "multianimal", False):
        if plots:
            from posed.errors import CapabilityError

            raise CapabilityError("evaluation plots are not available for multi-animal projects")
        return evaluate_multianimal(project, shuffle, runner, model_folder, pcutoff=pcutoff,
                                    pck_px=pck_px, write=write,
                                    sigma=OKS_SIGMA if sigma is None else sigma,
                                    pck_thresholds=pck_thresholds)
    if plots:
        from posed.engines.offline.plotting import require_matplotlib

        require_matplotlib()  # before the work, not after it
    pcutoff = project.pcutoff if pcutoff is None else pcutoff
    thresholds = pck_thresholds_of(pck_thresholds)  # a bad value fails before predicting
    split = load_split(project, shuffle)
    labels = load_labels(project)
    index = {img: i for i, img in enumerate(labels.images)}
    parts: dict[str, pd.DataFrame] = {}
    all_images: list[str] = []
    all_pred: list[np.ndarray] = []
    for set_name, images in _labelled_sets(split, index):
        _, pred = predict_image_files(runner, [project.root / img for img in images])
        truth = labels.keypoints[[index[i] for i in images]]
        parts[set_name] = summarise(pred, truth, list(project.bodyparts), pcutoff, pck_px,
                                    thresholds)
        shown = (images, pred, truth)  # the test set when there is one (it comes last)
        all_images += images
        all_pred.append(pred)
    table = pd.concat(parts, names=["set", "bodypart"])
    folder = _output_folder(runner, model_folder)
    if write:
        df = poses_to_frame(np.concatenate(all_pred), runner.bundle.bodyparts, runner.bundle.scorer,
                            index=all_images)
        _write_results(folder, table, pcutoff, pck_px, df, runner.bundle.scorer)
        if plots:
            from posed.engines.offline.plotting import plot_evaluation

            plot_evaluation(folder, table, project.root, *shown, list(project.bodyparts), pcutoff)
    return Evaluation(table=table, folder=folder, pcutoff=pcutoff, pck_px=pck_px,
                      pck_thresholds=thresholds)


# ----------------------------------------------------------------------------- multi-animal

OKS_SIGMA = 0.1
"""Per-keypoint constant κ of the keypoint similarity, the same for every body part
(DeepLabCut's ``oks_sigma`` default; COCO's per-part constants are for people). The
similarity is relative to the animal's size: at κ = 0.1 a part scores 0.5 when it is about
12% of the scale sqrt(area) off, i.e. 1.2 px for a 15×7 px animal, so small animals need
a larger κ for the mAP to say anything."""
OKS_THRESHOLDS = np.round(np.arange(0.50, 0.951, 0.05), 2)
"""OKS thresholds the mAP averages over (COCO's 0.50:0.05:0.95)."""


def match_animals(pred: np.ndarray, truth: np.ndarray) -> list[tuple[int, int]]:
    """Pairs (true animal, predicted animal) minimising the total mean keypoint distance.

    Args:
        pred: A×K×2+ predicted animals (NaN = part not found).
        truth: G×K×2 labelled animals (NaN = not labelled).

    Returns:
        One-to-one (g, a) pairs (Hungarian algorithm on the mean distance over the parts
        both have); pairs sharing no part are never matched.
    """
    from scipy.optimize import linear_sum_assignment

    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(truth, dtype=np.float64)
    if not pred.size or not gt.size:
        return []
    mean, shared = mean_distances(gt, pred[..., :2])  # G×A
    cost = np.where(shared, mean, BIG_COST)
    rows, cols = linear_sum_assignment(cost)
    return [(int(g), int(a)) for g, a in zip(rows, cols) if cost[g, a] < BIG_COST]


def keypoint_similarity(pred: np.ndarray, truth: np.ndarray,
                        sigma: float = OKS_SIGMA) -> np.ndarray:
    """Object keypoint similarity (OKS) of every predicted animal with every labelled one.

    ``OKS = mean over labelled parts of exp(-d² / (2 s² κ²))`` with d the distance between
    the predicted and labelled part (a part not predicted counts 0), κ = ``sigma`` and s² the
    area of the bounding box of the labelled parts (at least 1 px²).

    Args:
        pred: A×K×2+ predicted animals.
        truth: G×K×2 labelled animals.

    Returns:
        G×A similarities in [0, 1] (0 for an animal without labelled parts).
    """
    pred = np.asarray(pred, dtype=np.float64)[..., :2]
    gt = np.asarray(truth, dtype=np.float64)
    out = np.zeros((len(gt), len(pred)))
    for g, animal in enumerate(gt):
        lab = np.isfinite(animal).all(-1)
        if not lab.any() or not len(pred):
            continue
        span = animal[lab].max(0) - animal[lab].min(0)
        area = max(float(span[0] * span[1]), 1.0)
        d2 = ((pred[:, lab] - animal[lab]) ** 2).sum(-1)  # A×L, NaN where not predicted
        sim = np.where(np.isfinite(d2), np.exp(-d2 / (2.0 * area * sigma**2)), 0.0)
        out[g] = sim.mean(-1)
    return out


def average_precision(images: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
                      sigma: float = OKS_SIGMA,
                      thresholds: np.ndarray = OKS_THRESHOLDS) -> dict[str, float]:
    """COCO-style keypoint mAP and mAR over images.

    Per OKS threshold, predictions of all images are taken best score first; each is a true
    positive when an unmatched labelled animal of its image has OKS at least the threshold
    with it (the most similar one is taken), else a false positive. AP is the area under
    the interpolated precision-recall curve sampled at 101 recall points; AR is the final
    recall. Both are averaged over the thresholds.

    Args:
        images: Per image (predicted A×K×3 animals, their A scores, labelled G×K×2 animals).
        sigma: κ of :func:`keypoint_similarity`.
        thresholds: OKS thresholds.

    Returns:
        ``mAP``, ``AP50``, ``AP75``, ``mAR`` (NaN when nothing is labelled), ``sigma``.
    """
    n_truth = sum(int(np.isfinite(gt).all(-1).any(-1).sum()) for _, _, gt in images)
    aps, ars = [], []
    for t in thresholds:
        hits: list[tuple[float, bool]] = []
        for pred, scores, gt in images:
            oks = keypoint_similarity(pred, gt, sigma)  # G×A
            labelled = np.isfinite(gt).all(-1).any(-1)
            taken = np.zeros(len(gt), dtype=bool)
            for a in np.argsort(-np.asarray(scores), kind="stable"):
                cand = np.where(taken | ~labelled, -1.0, oks[:, a]) if len(gt) else np.zeros(0)
                g = int(np.argmax(cand)) if len(cand) else -1
                ok = g >= 0 and cand[g] >= t
                if ok:
                    taken[g] = True
                hits.append((float(scores[a]), ok))
        hits.sort(key=lambda h: -h[0])
        tp = np.cumsum([h[1] for h in hits]) if hits else np.zeros(0)
        fp = np.cumsum([not h[1] for h in hits]) if hits else np.zeros(0)
        if n_truth == 0:
            aps.append(np.nan)
            ars.append(np.nan)
            continue
        recall = tp / n_truth
        precision = tp / np.maximum(tp + fp, 1)
        # Interpolated precision: the best precision at any recall at least this high.
        envelope = np.maximum.accumulate(precision[::-1])[::-1] if len(precision) else precision
        samples = [float(envelope[np.searchsorted(recall, r, side="left")])
                   if len(recall) and recall[-1] >= r else 0.0 for r in np.linspace(0, 1, 101)]
        aps.append(float(np.mean(samples)))
        ars.append(float(recall[-1]) if len(recall) else 0.0)
    thresholds = list(np.round(thresholds, 2))
    pick = {0.5: "AP50", 0.75: "AP75"}
    out = {"mAP": float(np.mean(aps)), "mAR": float(np.mean(ars)), "sigma": float(sigma)}
    for value, name in pick.items():
        out[name] = aps[thresholds.index(value)] if value in thresholds else float("nan")
    return out


def summarise_matched(pred: list[np.ndarray], truth: np.ndarray, bodyparts: list[str],
                      pcutoff: float, pck_px: float,
                      pck_thresholds: Sequence[float] = PCK_THRESHOLDS) -> pd.DataFrame:
    """:func:`summarise` for several animals per image.

    Each labelled animal is compared with the predicted animal it is matched to
    (:func:`match_animals`). A labelled part without a matched prediction (no animal
    matched, or the matched animal lacks that part) has no distance: ``error_px`` and
    ``median_px`` cover the parts that were predicted, ``found`` is the fraction of labelled
    parts predicted, and ``pck``, ``pck@T`` and ``above_pcutoff`` count unpredicted parts as
    failures.

    Args:
        pred: Per image, the A×K×3 predicted animals.
        truth: N×G×K×2 labels.
    """
    n, g, k = truth.shape[:3]
    paired = np.full((n, g, k, 3), np.nan)
    paired[..., 2] = 0.0
    for i, animals in enumerate(pred):
        for gi, a in match_animals(animals, truth[i]):
            paired[i, gi] = animals[a]
    return _metrics(paired.reshape(n * g, k, 3), truth.reshape(n * g, k, 2), bodyparts, pcutoff,
                    pck_px, matched=True, pck_thresholds=pck_thresholds)


@dataclass
class MultiAnimalEvaluation(Evaluation):
    """:class:`Evaluation` of a multi-animal model; ``ap`` holds the keypoint-similarity
    mAP table (one row per set)."""

    ap: pd.DataFrame | None = None

    def format(self) -> str:
        """Both tables as fixed-width text."""
        text = super().format()
        if self.ap is not None:
            text += "\n\n" + self.ap.to_string(float_format=lambda v: f"{v:8.3f}")
        return text


def evaluate_multianimal(project: Project, shuffle: int, runner: Any, model_folder: Path, *,
                         pcutoff: float | None = None, pck_px: float = 5.0, write: bool = True,
                         sigma: float = OKS_SIGMA,
                         pck_thresholds: Sequence[float] = PCK_THRESHOLDS
                         ) -> MultiAnimalEvaluation:
    """Evaluate a bottom-up model on the shuffle's train and test images.

    Writes ``errors.csv`` (per body part as single-animal, after matching predicted animals
    to labelled ones), ``map.csv`` (keypoint-similarity mAP, AP50, AP75, mAR per set, with
    σ) and the predictions as a multi-animal table, into
    ``<model folder>/evaluation/snapshot-NNN/``. Unique parts are compared directly.
    """
    from posed.engines.project.posetables import multianimal_poses_to_frame
    from posed.engines.project import load_image, load_multianimal_labels

    pcutoff = project.pcutoff if pcutoff is None else pcutoff
    thresholds = pck_thresholds_of(pck_thresholds)
    split = load_split(project, shuffle)
    labels = load_multianimal_labels(project)
    index = {img: i for i, img in enumerate(labels.images)}
    tables: dict[str, pd.DataFrame] = {}
    ap_rows: dict[str, dict[str, float]] = {}
    all_images: list[str] = []
    all_animals: list[np.ndarray] = []
    all_unique: list[np.ndarray] = []
    for set_name, images in _labelled_sets(split, index):
        rows = [index[i] for i in images]
        found_animals, found_unique, per_image = [], [], []
        for img, gt in zip(images, labels.keypoints[rows]):
            out = runner.predict_animals(load_image(project.root, img))
            present = out.found(0)
            found_animals.append(out.animals[0])
            found_unique.append(out.unique[0])
            per_image.append((present, out.scores[0][: len(present)], gt))
        tables[set_name] = _matched_table(labels, rows, per_image, found_unique, pcutoff, pck_px,
                                          thresholds)
        ap_rows[set_name] = {**average_precision(per_image, sigma), "images": len(images)}
        all_images += images
        all_animals += found_animals
        all_unique += found_unique
    table = pd.concat(tables, names=["set", "bodypart"])
    ap = pd.DataFrame.from_dict(ap_rows, orient="index").rename_axis("set")
    folder = _output_folder(runner, model_folder)
    if write:
        df = multianimal_poses_to_frame(
            np.stack(all_animals), runner.individuals, runner.animal_bodyparts,
            runner.bundle.scorer, index=all_images,
            unique=np.stack(all_unique) if runner.unique_bodyparts else None,
            uniquebodyparts=runner.unique_bodyparts)
        _write_results(folder, table, pcutoff, pck_px, df, runner.bundle.scorer, {"map.csv": ap})
    return MultiAnimalEvaluation(table=table, folder=folder, pcutoff=pcutoff, pck_px=pck_px,
                                 pck_thresholds=thresholds, ap=ap)


def _matched_table(labels: Any, rows: list[int], per_image: list, found_unique: list[np.ndarray],
                   pcutoff: float, pck_px: float,
                   pck_thresholds: Sequence[float] = PCK_THRESHOLDS) -> pd.DataFrame:
    """One set's errors table: the multi-animal parts after matching animals, then the unique
    parts compared directly, then ``all`` (of the multi-animal parts)."""
    table = summarise_matched([p for p, _, _ in per_image], labels.keypoints[rows],
                              list(labels.bodyparts), pcutoff, pck_px, pck_thresholds)
    if labels.uniquebodyparts:
        uniq = summarise(np.stack(found_unique), labels.unique[rows],
                         list(labels.uniquebodyparts), pcutoff, pck_px,
                         pck_thresholds).drop(index="all")
        table = pd.concat([table.drop(index="all"), uniq, table.loc[["all"]]])
    return table
