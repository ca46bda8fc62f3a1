"""Top-down models on the PyTorch engine: torchvision's detectors as DeepLabCut 3 builds them,
and a :class:`~posed.engines.pytorch.backend.TorchRunner` for the pose model on crops.

DeepLabCut 3's detectors (``detector.model`` of a top-down ``pytorch_config.yaml``):

- ``fasterrcnn_mobilenet_v3_large_fpn``: built by DeepLabCut with torchvision's default
  ImageNet backbone, which makes every backbone norm a ``FrozenBatchNorm2d`` (eps 1e-5); posed
  builds it without any download and freezes the norms the same way, so the state dicts and
  the arithmetic are the same;
- ``fasterrcnn_resnet50_fpn_v2``: plain ``BatchNorm2d`` (no ImageNet backbone by default);
- ``ssdlite``: ``ssdlite320_mobilenet_v3_large``; DeepLabCut's ``box_score_thresh`` does not
  reach it (torchvision's own 0.001 applies), so posed does not pass it either.

The Faster R-CNNs get DeepLabCut's two-class box predictor and its ``box_score_thresh``. Frames
reach the detector ImageNet-normalised, and torchvision normalises them again inside the
model: that is what DeepLabCut trains and runs, so posed does the same.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from posed.engines.bundle import ModelBundle
from posed.engines.pytorch.accel import OpenMPHandoff, select_device
from posed.engines.topdown import TopDownRunner, detector_normalisation, pose_bundle
from posed.errors import ConfigError, InferenceError, ModelLoadError

__all__ = ["DETECTORS", "TorchTopDownRunner", "build_detector", "load_runner"]

log = logging.getLogger(__name__)

DETECTORS = ("fasterrcnn_mobilenet_v3_large_fpn", "fasterrcnn_resnet50_fpn_v2", "ssdlite")


def _freeze_norms(module: nn.Module) -> None:
    """Replace every ``BatchNorm2d`` below ``module`` by a ``FrozenBatchNorm2d`` (eps 1e-5,
    torchvision's default), as torchvision does for a pretrained backbone."""
    from torchvision.ops.misc import FrozenBatchNorm2d

    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            setattr(module, name, FrozenBatchNorm2d(child.num_features))
        else:
            _freeze_norms(child)


def build_detector(spec: dict[str, Any]) -> nn.Module:
    """The torchvision detector ``spec`` (``variant``, ``box_score_thresh``) names, random
    weights, DeepLabCut's two classes (background, animal)."""
    from torchvision.models import detection
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor

    variant = spec.get("variant")
    if variant not in DETECTORS:
        raise ModelLoadError(f"detector '{variant}' is not one of {', '.join(DETECTORS)}")
    if variant == "ssdlite":
        return detection.ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None,
                                                       num_classes=2)
    model = getattr(detection, variant)(weights=None, weights_backbone=None,
                                        box_score_thresh=float(spec.get("box_score_thresh", 0.01)))
    if variant == "fasterrcnn_mobilenet_v3_large_fpn":
        _freeze_norms(model.backbone)
    predictor = model.roi_heads.box_predictor
    model.roi_heads.box_predictor = FastRCNNPredictor(predictor.cls_score.in_features, 2)
    return model


class TorchTopDownRunner(OpenMPHandoff, TopDownRunner):
    """A top-down bundle on the PyTorch engine (eager). Options: those of
    :class:`~posed.engines.pytorch.backend.TorchRunner` (they apply to the pose model; the
    detector runs in float32), ``crop_batch`` (crops per pose-model batch, default 8:
    DeepLabCut's project ``batch_size``) and ``detect_every`` (see
    :class:`~posed.engines.topdown.TopDownRunner`)."""

    engine = "pytorch"

    def __init__(self, bundle: ModelBundle, detector: nn.Module, pose: Any,
                 device: torch.device, crop_batch: int = 8, detect_every: int = 1) -> None:
        super().__init__(bundle, crop_batch=crop_batch, detect_every=detect_every)
        self.detector = detector
        self.pose = pose
        self.device = device
        self.precision = getattr(pose, "precision", "fp32")
        mean, inv_std = detector_normalisation(bundle)
        self._mean = torch.from_numpy(mean).to(device)
        self._inv_std = torch.from_numpy(inv_std).to(device)

    @classmethod
    def load(cls, bundle: ModelBundle, load_pose: Callable[..., Any], device: str = "auto",
             threads: int | None = None, crop_batch: int = 8, detect_every: int = 1,
             **options: Any) -> "TorchTopDownRunner":
        """``load_pose(bundle, device=, threads=, **options)`` loads the pose model's runner
        (the engine's single-animal runner, passed in: this module sits below it)."""
        from dataclasses import replace

        from posed.engines.pytorch.model import load_state_dict

        if len(bundle.weights) != 2 or bundle.path is None:
            raise ModelLoadError(f"{bundle.path}: a top-down bundle holds two weights files "
                                 "(pose model, detector)")
        detector_spec = dict(bundle.architecture["topdown"])
        pose = load_pose(pose_bundle(bundle), device=device, threads=threads, **options)
        device_t = select_device(device)
        path = bundle.path / bundle.weights[1]["name"]
        if bundle.format == "torchscript":
            from posed.engines.pytorch.accel import load_torchscript

            detector, _ = load_torchscript(replace(bundle, weights=bundle.weights[1:]), device)
            return cls(bundle, detector, pose, device_t, crop_batch, detect_every)
        detector = build_detector(detector_spec)
        try:
            detector.load_state_dict(load_state_dict(path))
        except RuntimeError as exc:
            raise ModelLoadError(f"{path}: weights do not fit detector "
                                 f"'{detector_spec.get('variant')}' "
                                 f"({' '.join(str(exc).split())[:300]})") from None
        return cls(bundle, detector.eval().to(device_t), pose, device_t, crop_batch,
                   detect_every)

    @torch.inference_mode()
    def _detect(self, frames: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        found = []
        for frame in frames:  # one at a time, as DeepLabCut (detector batch size 1)
            x = torch.from_numpy(frame).to(self.device).to(torch.float32)
            x = ((x - self._mean) * self._inv_std).permute(2, 0, 1)
            try:
                out = self.detector([x])
                # a scripted torchvision detector returns (losses, detections)
                out = (out[1] if isinstance(out, tuple) else out)[0]
            except RuntimeError as exc:
                raise InferenceError(f"detector forward failed: "
                                     f"{str(exc).splitlines()[0]}") from exc
            boxes = out["boxes"].float().cpu().numpy().reshape(-1, 4)
            boxes[:, 2:] -= boxes[:, :2]  # x1, y1, x2, y2 -> x, y, w, h
            found.append((boxes, out["scores"].float().cpu().numpy().reshape(-1)))
        return found

    def _pose_crops(self, crops: np.ndarray) -> np.ndarray:
        return self.pose.predict(crops)


def load_runner(bundle: ModelBundle, load_pose: Callable[..., Any], **options: Any
                ) -> TorchTopDownRunner:
    """Engine entry for top-down bundles (``architecture.topdown``); see
    :meth:`TorchTopDownRunner.load`."""
    if bundle.format not in ("safetensors", "torchscript"):
        raise ConfigError(f"{bundle.path}: top-down bundles run from safetensors or TorchScript "
                          f"weights (this one is {bundle.format})")
    return TorchTopDownRunner.load(bundle, load_pose, **options)
