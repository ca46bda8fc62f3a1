"""posed's shuffles in DeepLabCut 3's layout and format, so DeepLabCut's own tools run on them.

For a net DeepLabCut also has (:data:`~posed.engines.dlc.pose_config.DLC_NETS`: ``resnet_50``,
trained by posed as ``dlc_resnet_50``, DeepLabCut's GroupNorm ResNet-50 and unpadded heads):

- :func:`write_dataset` writes DeepLabCut's training dataset of a posed split
  (``training-datasets/iteration-<i>/UnaugmentedDataSet_<Task><date>/``: the merged
  ``CollectedData_<scorer>.h5``, the ``.mat`` training set, ``Documentation_data-*.pickle``
  of built-in types, ``metadata.yaml``) and the shuffle's ``pytorch_config.yaml`` and
  ``test/pose_cfg.yaml``;
- :func:`publish` copies every snapshot posed trained into the shuffle's ``train/`` as
  ``snapshot-NNN.pt`` with DeepLabCut's state-dict keys, and ``learning_stats.csv`` with
  DeepLabCut's columns. posed's own training folder records where it published, so the two
  copies of one model are not taken for two models.
"""

from __future__ import annotations

import csv
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from posed.engines.bundle import load_bundle
from posed.engines.dlc.layout import DlcShuffle, model_folder
from posed.engines.dlc.pose_config import DLC_NETS, write_shuffle_configs
from posed.engines.dlc.split import dlc_split_path
from posed.engines.io import atomic_path
from posed.engines.project import Project, Split, load_image, load_labels, save_split
from posed.engines.project.posetables import write_pose_table
from posed.engines.registry import Engine, capability

__all__ = ["posed_net", "publish", "write_dataset"]


def posed_net(found: DlcShuffle) -> str | None:
    """posed's net for a DeepLabCut shuffle's model config, if posed trains that model."""
    cfg = found.model_config()
    spec = DLC_NETS.get(str(cfg.get("net_type")))
    backbone = ((cfg.get("model") or {}).get("backbone") or {})
    heads = (cfg.get("model") or {}).get("heads") or {}
    if (spec is None or cfg.get("method") != "bu" or backbone.get("model_name") != spec["model_name"]
            or set(heads) != {"bodypart"}):
        return None
    return spec["net"]


def write_dataset(project: Project, split: Split, net_type: str, **settings: Any) -> DlcShuffle:
    """DeepLabCut's training-dataset files of ``split`` and the shuffle's model configs."""
    folder = _dataset_folder(project)
    folder.mkdir(parents=True, exist_ok=True)
    save_split(project, split, written_to_deeplabcut=True)
    labels = load_labels(project, check_images=False)
    order = sorted(range(len(labels.images)), key=lambda i: Path(labels.images[i]).parts)
    images = [labels.images[i] for i in order]
    _write_collected(folder / f"CollectedData_{project.scorer}.h5", images,
                     labels.keypoints[order], project)
    position = {img: i for i, img in enumerate(images)}
    train = [position[i] for i in split.train if i in position]
    test = [position[i] for i in split.test if i in position]
    records = _training_records(project, [images[i] for i in train],
                                labels.keypoints[[order[i] for i in train]])
    fraction = project.training_fraction[0]
    mat = dlc_split_path(project, split.shuffle, fraction)
    _write_mat(mat, records)
    doc = mat.with_name(f"Documentation_data-{project.task}_{int(fraction * 100)}"
                        f"shuffle{split.shuffle}.pickle")
    with atomic_path(doc) as tmp, open(tmp, "wb") as fh:  # built-in types only
        pickle.dump([records, train, test, float(fraction)], fh, protocol=4)
    target = model_folder(project, split.shuffle, fraction, Engine.PYTORCH)
    _write_metadata(folder / "metadata.yaml", target.name, fraction, split.shuffle, train, test)
    write_shuffle_configs(project, target, net_type, **settings)
    return DlcShuffle(project, split.shuffle, fraction, Engine.PYTORCH, target)


def publish(found: DlcShuffle, posed_train: Path) -> list[Path]:
    """Every snapshot of posed's training folder as DeepLabCut snapshots in the shuffle's
    ``train/``, plus ``learning_stats.csv``; returns the snapshot files written."""
    written = []
    for snap in sorted(posed_train.glob("snapshot-*.safetensors")):
        epoch = int(snap.stem.split("-")[1])
        out = found.train_dir / f"snapshot-{epoch:03d}.pt"
        written.append(Path(capability(Engine.PYTORCH, "publish_dlc_snapshot")(snap, out, epoch)))
    _write_stats(posed_train / "learning_stats.csv", found.train_dir / "learning_stats.csv")
    bundle = load_bundle(posed_train, verify=False)
    _set_decoding(found.pose_cfg, bundle.locref_stdev)
    bundle.source["published_to"] = str(found.train_dir)
    bundle.save(posed_train, [w["name"] for w in bundle.weights])
    return written


def _set_decoding(pose_cfg: Path, locref_std: float) -> None:
    """The trained model's decoding in the shuffle's config: sigmoid scores (posed's heatmaps
    are logits) and its location-refinement scale."""
    text = pose_cfg.read_text(encoding="utf-8")
    header = "".join(line + "\n" for line in text.splitlines() if line.startswith("#"))
    cfg = yaml.safe_load(text)
    head = cfg["model"]["heads"]["bodypart"]
    head["predictor"].update(apply_sigmoid=True, clip_scores=False, locref_std=float(locref_std))
    head.get("target_generator", {})["locref_std"] = float(locref_std)
    with atomic_path(pose_cfg) as tmp:
        tmp.write_text(header + yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")


def _dataset_folder(project: Project) -> Path:
    return (project.root / "training-datasets" / f"iteration-{project.iteration}"
            / f"UnaugmentedDataSet_{project.name}")


def _write_collected(path: Path, images: list[str], keypoints: np.ndarray, project: Project) -> None:
    """DeepLabCut's merged label table: a 3-level row index, columns scorer/bodyparts/coords."""
    columns = pd.MultiIndex.from_product([[project.scorer], list(project.bodyparts), ["x", "y"]],
                                         names=["scorer", "bodyparts", "coords"])
    index = pd.MultiIndex.from_tuples([tuple(Path(i).parts) for i in images])
    df = pd.DataFrame(keypoints.reshape(len(images), -1), index=index, columns=columns)
    write_pose_table(df, path, csv=True)


def _training_records(project: Project, images: list[str], keypoints: np.ndarray) -> list[dict]:
    """DeepLabCut's training records: image path parts, (channels, height, width) and the
    labelled joints inside the image as ``[id, x, y]`` integers; images without one are
    left out, as DeepLabCut does."""
    records = []
    for img, kps in zip(images, keypoints):
        h, w = load_image(project.root, img).shape[:2]
        joints = [[j, int(x), int(y)] for j, (x, y) in enumerate(kps)
                  if np.isfinite(x) and np.isfinite(y) and 0 < x < w and 0 < y < h]
        if joints:
            records.append({"image": tuple(Path(img).parts), "size": [3, h, w], "joints": joints})
    return records


def _write_mat(path: Path, records: list[dict]) -> None:
    from scipy.io import savemat

    def cell(joints: list) -> np.ndarray:  # a 1x1 MATLAB cell holding the joints, as DeepLabCut
        out = np.empty((1, 1), dtype=object)
        out[0, 0] = np.array(joints, dtype=np.int64)
        return out

    dtype = [("image", "O"), ("size", "O"), ("joints", "O")]
    data = np.array([(np.array([r["image"]], dtype="U"), np.array([r["size"]]), cell(r["joints"]))
                     for r in records], dtype=dtype)
    with atomic_path(path) as tmp:
        savemat(str(tmp), {"dataset": data}, appendmat=False)


def _write_metadata(path: Path, name: str, fraction: float, shuffle: int, train: list[int],
                    test: list[int]) -> None:
    """``metadata.yaml``: DeepLabCut's index of shuffles (a split id per distinct split)."""
    data = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None
    shuffles = dict((data or {}).get("shuffles") or {})
    shuffles[name] = {"train_fraction": float(fraction), "index": int(shuffle),
                      "split": int(shuffle), "engine": "pytorch"}
    header = ("# This file is automatically generated - DO NOT EDIT\n"
              "# It contains the information about the shuffles created for the dataset\n---\n")
    with atomic_path(path) as tmp:
        tmp.write_text(header + yaml.safe_dump({"shuffles": shuffles}, sort_keys=False),
                       encoding="utf-8")


def _write_stats(src: Path, dst: Path) -> None:
    """posed's per-epoch log in DeepLabCut's columns (``step`` is the epoch)."""
    if not src.is_file():
        return
    with open(src, newline="") as fh:
        rows = list(csv.DictReader(fh))
    with atomic_path(dst) as tmp, open(tmp, "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["step", "losses/train.bodypart_heatmap", "losses/train.bodypart_locref",
                      "losses/train.total_loss", "metrics/test.rmse"])
        for r in rows:
            out.writerow([r.get("epoch"), r.get("heatmap_loss"), r.get("locref_loss"),
                          r.get("loss"), r.get("test_error_px")])
