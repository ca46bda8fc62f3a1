"""DeepLabCut 3's model config of a shuffle (``train/pytorch_config.yaml``, ``test/pose_cfg.yaml``).

posed writes them for the nets it trains in DeepLabCut's architecture (:data:`DLC_NETS`), in
the structure DeepLabCut 3.0.2's ``create_training_dataset`` writes for single-animal bottom-up
models: the same keys in the same order. The values that decide inference are posed's: the
predictor applies a sigmoid (posed's heatmaps are logits trained with a sigmoid loss) and uses
posed's location-refinement scale, so DeepLabCut decodes posed's weights to posed's pixels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from posed.engines.io import atomic_path
from posed.engines.project.config import Project

__all__ = ["DLC_NETS", "pose_config", "test_pose_config", "write_shuffle_configs"]

DLC_NETS = {"resnet_50": {"net": "dlc_resnet_50", "model_name": "resnet50_gn", "channels": 2048}}
"""DeepLabCut net_type -> posed's net of DeepLabCut's architecture (GroupNorm ResNet-50,
unpadded deconvolution head) and DeepLabCut's backbone settings."""

_HEADER = "# Config schema version. Do not edit manually.\n"


def _deconv(channels: int, out: int) -> dict[str, Any]:
    return {"channels": [channels, out], "kernel_size": [3], "strides": [2]}


def _transforms(train: bool) -> dict[str, Any]:
    keys = ("resize", "longest_max_size", "hflip", "affine", "random_bbox_transform",
            "crop_sampling", "hist_eq", "motion_blur", "covering", "elastic_transform",
            "grayscale", "gaussian_noise", "auto_padding", "normalize_images",
            "scale_to_unit_range", "top_down_crop", "collate")
    out: dict[str, Any] = dict.fromkeys(keys)
    out.update(hist_eq=False, motion_blur=False, normalize_images=True, scale_to_unit_range=False)
    if train:
        out.update(affine={"p": 0.5, "rotation": 30, "scaling": [0.5, 1.25], "translation": 0},
                   crop_sampling={"width": 448, "height": 448, "max_shift": 0.1,
                                  "method": "hybrid"}, motion_blur=True, gaussian_noise=12.75)
    return out


def pose_config(project: Project, pose_cfg_path: Path, net_type: str, *, locref_std: float,
                epochs: int, save_epochs: int, batch_size: int, lr: float) -> dict[str, Any]:
    """``pytorch_config.yaml`` content for a single-animal ``net_type`` shuffle."""
    net = DLC_NETS[net_type]
    k, ch = len(project.bodyparts), net["channels"]
    head = {
        "type": "HeatmapHead", "weight_init": "normal",
        "predictor": {"type": "HeatmapPredictor", "apply_sigmoid": True, "clip_scores": False,
                      "location_refinement": True, "locref_std": float(locref_std)},
        "target_generator": {"type": "HeatmapGaussianGenerator", "num_heatmaps": k,
                             "pos_dist_thresh": 17, "heatmap_mode": "KEYPOINT",
                             "gradient_masking": False, "generate_locref": True,
                             "locref_std": float(locref_std)},
        "criterion": {"heatmap": {"type": "WeightedMSECriterion", "weight": 1.0},
                      "locref": {"type": "WeightedHuberCriterion", "weight": 0.05}},
        "heatmap_config": _deconv(ch, k), "locref_config": _deconv(ch, 2 * k),
    }
    return {
        "config_version": 0,
        "model": {"backbone": {"type": "ResNet", "model_name": net["model_name"],
                               "output_stride": 16, "freeze_bn_stats": False,
                               "freeze_bn_weights": False, "pretrained": False},
                  "heads": {"bodypart": head}, "backbone_output_channels": ch, "neck": None,
                  "pose_model": None},
        "net_type": net_type, "method": "bu", "device": "auto",
        "metadata": {"project_path": str(project.root), "pose_config_path": str(pose_cfg_path),
                     "bodyparts": list(project.bodyparts), "unique_bodyparts": [],
                     "individuals": ["individual_1"], "with_identity": None},
        "data": {"bbox_margin": 20, "colormode": "RGB", "gen_sampling": None,
                 "inference": _transforms(False), "train": _transforms(True), "loader": None},
        "runner": {"type": "PoseTrainingRunner", "gpus": None, "device": "auto",
                   "key_metric": "test.mAP", "key_metric_asc": True, "eval_interval": 10,
                   "optimizer": {"type": "AdamW", "params": {"lr": float(lr)}},
                   "scheduler": {"type": "LRListScheduler",
                                 "params": {"lr_list": [[1e-4], [1e-5]], "milestones": [90, 120]}},
                   "snapshots": {"max_snapshots": 5, "save_epochs": int(save_epochs),
                                 "save_optimizer_state": False},
                   "snapshot_prefix": None, "load_weights_only": None},
        "train_settings": {"batch_size": int(batch_size), "dataloader_workers": 0,
                           "dataloader_pin_memory": False, "display_iters": 500,
                           "epochs": int(epochs), "seed": 42, "weight_init": None},
        "inference": {"multithreading": {"enabled": True, "queue_length": 4, "timeout": 30.0},
                      "compile": {"enabled": False, "backend": "inductor"},
                      "autocast": {"enabled": False}, "conditions": None, "snapshot": None,
                      "eval": {"mode": "all", "pcutoff": float(project.pcutoff),
                               "comparison_bodyparts": "all", "per_keypoint_evaluation": False,
                               "force_multi_animal": False}, "output_dir": None},
        "logger": None, "with_center_keypoints": False, "detector": None,
        "resume_training_from": None,
    }


def test_pose_config(project: Project, net_type: str) -> dict[str, Any]:
    """``test/pose_cfg.yaml``: what DeepLabCut's evaluation reads of the body parts."""
    k = len(project.bodyparts)
    return {"dataset": str(project.root), "num_joints": k, "all_joints": [[i] for i in range(k)],
            "all_joints_names": list(project.bodyparts), "net_type": net_type,
            "dataset_type": "multi-animal-imgaug", "global_scale": 1.0, "scoremap_dir": "test"}


def write_shuffle_configs(project: Project, folder: Path, net_type: str, **settings: Any) -> Path:
    """Write ``train/pytorch_config.yaml`` and ``test/pose_cfg.yaml`` of a shuffle's model
    ``folder`` (atomically); returns the train config's path."""
    train = folder / "train" / "pytorch_config.yaml"
    test = folder / "test" / "pose_cfg.yaml"
    for path, data, header in ((train, pose_config(project, train, net_type, **settings), _HEADER),
                               (test, test_pose_config(project, net_type), "")):
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            tmp.write_text(header + yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return train
