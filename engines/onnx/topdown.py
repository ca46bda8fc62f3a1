"""Top-down bundles on ONNX Runtime: ``detector.onnx`` finds the animals in each frame,
``pose.onnx`` runs on their crops (see :mod:`posed.exporters.torch_topdown`); cropping,
decoding and mapping back are the shared :class:`~posed.engines.topdown.TopDownRunner` code.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import onnxruntime as ort

from posed.engines.base import PoseRunner
from posed.engines.bundle import ModelBundle
from posed.engines.decoding import decode_rtmpose
from posed.engines.onnx.backend import ENGINE, OnnxRunner, _Session, open_session
from posed.engines.topdown import TopDownRunner
from posed.errors import ConfigError, ModelLoadError

__all__ = ["OnnxSimCCRunner", "OnnxTopDownRunner", "load_runner"]


class OnnxSimCCRunner(OnnxRunner):
    """An RTMPose pose model (``simcc_x``, ``simcc_y`` logits out) on crops of its input size."""

    OUTPUTS = ("simcc_x", "simcc_y")

    def _forward(self, frames: np.ndarray) -> np.ndarray:
        logits_x, logits_y = self._run(frames)
        return decode_rtmpose(logits_x, logits_y, self.bundle.architecture["rtmpose"])


class _Detector(_Session):
    """``detector.onnx``: one uint8 1×H×W×3 frame in; boxes (x, y, w, h) and scores out."""

    OUTPUTS = ("boxes", "scores")

    def __init__(self, bundle: ModelBundle, session: ort.InferenceSession, provider: str) -> None:
        self.bundle = bundle
        self._attach(session, provider)

    def __call__(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        boxes, scores = self._run(np.ascontiguousarray(frame[None]))
        return (np.asarray(boxes, np.float32).reshape(-1, 4),
                np.asarray(scores, np.float32).reshape(-1))


class OnnxTopDownRunner(TopDownRunner):
    """A top-down ``onnx`` bundle. Options: those of
    :func:`~posed.engines.onnx.backend.open_session` (both graphs), ``crop_batch`` and
    ``detect_every`` (see :class:`~posed.engines.topdown.TopDownRunner`)."""

    engine = ENGINE

    def __init__(self, bundle: ModelBundle, detector: _Detector, pose: PoseRunner,
                 crop_batch: int = 8, detect_every: int = 1) -> None:
        super().__init__(bundle, crop_batch=crop_batch, detect_every=detect_every)
        self.detector = detector
        self.pose = pose
        self.provider = detector.provider

    @classmethod
    def load(cls, bundle: ModelBundle, provider: str = "auto", threads: int | None = None,
             optimization: str = "all", device: str | None = None, crop_batch: int = 8,
             detect_every: int = 1, **options: Any) -> "OnnxTopDownRunner":
        """Open both graphs (the pose model's first, the detector's second in ``weights``)."""
        if options:
            raise ConfigError(f"onnx engine: unknown option '{next(iter(options))}'")
        if len(bundle.weights) != 2:
            raise ModelLoadError(f"{bundle.path}: a top-down bundle holds two weights files "
                                 "(pose model, detector)")
        arch = {k: v for k, v in bundle.architecture.items()
                if k not in ("topdown", "individuals", "crop")}
        pose_bundle = replace(bundle, architecture=arch, weights=bundle.weights[:1])
        pose_cls = OnnxSimCCRunner if arch.get("head") == "rtmcc" else OnnxRunner
        pose = pose_cls.load(pose_bundle, provider, threads, optimization, device)
        detector_bundle = replace(bundle, weights=bundle.weights[1:])
        detector = _Detector(detector_bundle, *open_session(detector_bundle, provider, threads,
                                                            optimization, device))
        return cls(bundle, detector, pose, crop_batch, detect_every)

    def _detect(self, frames: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        # one frame at a time, as DeepLabCut runs its detector
        return [self.detector(frame) for frame in frames]

    def _pose_crops(self, crops: np.ndarray) -> np.ndarray:
        return self.pose.predict(crops)


def load_runner(bundle: ModelBundle, **options: Any) -> OnnxTopDownRunner:
    """Engine entry for top-down ``onnx`` bundles (``architecture.topdown``)."""
    return OnnxTopDownRunner.load(bundle, **options)
