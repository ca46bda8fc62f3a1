"""Per-pose processing between inference and publishing: a user hook and a Kalman predictor.

A **hook** is the closed-loop entry point: ``package.module:callable`` (or the name of an
entry point in the ``posed.processors`` group). A class is instantiated with ``hook_args``
(a function gets them as keyword arguments on every call); the object is then called as
``hook(pose, bodyparts)`` and may return a dict, which is published in the message's
``extra`` field (e.g. ``{"laser": True}``). It runs on the daemon's processing thread, so
it should be quick; its duration is measured (``posed_processor_seconds``) and an exception
is logged and counted, never fatal.

The **Kalman predictor** runs a constant-velocity filter per camera and body part, updated
at each frame's capture time, and publishes the position extrapolated to the moment of
publishing plus ``lead_ms``, which cancels the pipeline's own latency for closed-loop use.
The measured keypoints stay available in ``extra["measured"]``.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import logging
import time
from importlib import metadata
from typing import Any, Callable, Sequence

import numpy as np

from posed.daemon.types import Pose
from posed.errors import ConfigError

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "posed.processors"


def load_hook(spec: str, args: dict[str, Any] | None = None) -> Callable[[Pose, Sequence[str]], Any]:
    """Resolve a hook spec to a callable ``(pose, bodyparts) -> dict | None``.

    Raises:
        ConfigError: the module, attribute or entry point does not exist, or is not callable.
    """
    args = dict(args or {})
    if ":" in spec:
        module_name, _, attr = spec.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ConfigError(f"processors.hook: cannot import '{module_name}' ({exc})") from None
        obj: Any = module
        for part in attr.split("."):
            if not hasattr(obj, part):
                raise ConfigError(f"processors.hook: '{module_name}' has no attribute '{attr}'")
            obj = getattr(obj, part)
    else:
        found = [ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP) if ep.name == spec]
        if not found:
            raise ConfigError(f"processors.hook: '{spec}' is neither 'module:callable' nor an "
                              f"entry point in group '{ENTRY_POINT_GROUP}'")
        obj = found[0].load()
    if inspect.isclass(obj):
        try:
            obj = obj(**args)
        except TypeError as exc:
            raise ConfigError(f"processors.hook_args: {spec}: {exc}") from None
        if not callable(obj):
            obj = getattr(obj, "process", None)
    elif args:
        obj = functools.partial(obj, **args)
    if not callable(obj):
        raise ConfigError(f"processors.hook: '{spec}' is not callable")
    return obj


class KalmanPredictor:
    """Constant-velocity Kalman filter per (camera, body part), predicting ahead in time.

    Args:
        process_noise: Acceleration noise (px/s²) — larger follows fast moves sooner.
        measurement_noise: Keypoint noise (px).
        lead_s: Extra look-ahead beyond the publish time.
        min_likelihood: Measurements below it are not used (prediction coasts).
    """

    def __init__(self, process_noise: float = 500.0, measurement_noise: float = 2.0,
                 lead_s: float = 0.0, min_likelihood: float = 0.1) -> None:
        self.q = float(process_noise) ** 2
        self.r = float(measurement_noise) ** 2
        self.lead = float(lead_s)
        self.min_likelihood = min_likelihood
        # camera -> (state K×2×2 [pos, vel] per axis, cov K×2×2×2, last time)
        self._state: dict[str, tuple[np.ndarray, np.ndarray, float]] = {}

    def _predict(self, x: np.ndarray, p: np.ndarray, dt: float) -> tuple[np.ndarray, np.ndarray]:
        f = np.array([[1.0, dt], [0.0, 1.0]])
        # Discrete white-noise acceleration model.
        q = self.q * np.array([[dt**4 / 4, dt**3 / 2], [dt**3 / 2, dt**2]])
        x = x @ f.T
        p = f @ p @ f.T + q
        return x, p

    def update(self, camera: str, keypoints: np.ndarray, t: float) -> None:
        """Fold in a measurement (K×3 x, y, likelihood) taken at monotonic time ``t``."""
        k = keypoints.shape[0]
        if camera not in self._state or self._state[camera][0].shape[0] != k:
            x = np.zeros((k, 2, 2))
            x[:, :, 0] = np.nan_to_num(keypoints[:, :2])
            p = np.tile(np.diag([self.r, 1e6]), (k, 2, 1, 1))
            self._state[camera] = (x, p, t)
            return
        x, p, t0 = self._state[camera]
        x, p = self._predict(x, p, max(t - t0, 0.0))
        ok = np.isfinite(keypoints[:, :2]).all(axis=1) & (keypoints[:, 2] >= self.min_likelihood)
        for axis in range(2):
            z = keypoints[:, axis]
            s = p[:, axis, 0, 0] + self.r
            gain = p[:, axis, :, 0] / s[:, None]  # K×2
            innov = np.where(ok, z - x[:, axis, 0], 0.0)
            x[:, axis] += gain * innov[:, None]
            upd = p[:, axis] - gain[:, :, None] * p[:, axis, 0, :][:, None, :]
            p[:, axis] = np.where(ok[:, None, None], upd, p[:, axis])
        self._state[camera] = (x, p, t)

    def predict(self, camera: str, t: float) -> np.ndarray | None:
        """Positions K×2 extrapolated to monotonic time ``t + lead``, or None if unseen."""
        if camera not in self._state:
            return None
        x, _, t0 = self._state[camera]
        dt = max(t + self.lead - t0, 0.0)
        return x[:, :, 0] + x[:, :, 1] * dt


class Processors:
    """Applies the configured processors to each pose, measuring and containing failures."""

    def __init__(self, bodyparts: Sequence[str], *, hook: Callable | None = None,
                 kalman: KalmanPredictor | None = None, metrics: Any = None) -> None:
        self.bodyparts = list(bodyparts)
        self.hook = hook
        self.kalman = kalman
        self.metrics = metrics
        self.failures = 0

    def __call__(self, pose: Pose) -> Pose:
        """Process one pose in place and return it."""
        if self.kalman is not None:
            self._timed("kalman", self._kalman, pose)
        if self.hook is not None:
            result = self._timed("hook", self.hook, pose, self.bodyparts)
            if isinstance(result, dict):
                pose.extra.update(result)
        return pose

    def _kalman(self, pose: Pose) -> None:
        if self.kalman is None:
            return
        self.kalman.update(pose.camera, pose.keypoints, pose.capture_mono)
        ahead = self.kalman.predict(pose.camera, time.monotonic())
        if ahead is not None:
            pose.extra["measured"] = pose.keypoints[:, :2].round(3).tolist()
            pose.keypoints = pose.keypoints.copy()
            pose.keypoints[:, :2] = ahead

    def _timed(self, name: str, fn: Callable, *args: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*args)
        except Exception as exc:  # a user hook must never take the daemon down
            self.failures += 1
            log.error("processor %s failed on %s seq %d: %s", name, args[0].camera, args[0].seq, exc)
            if self.metrics is not None:
                self.metrics.errors.labels(stage="processor").inc()
            return None
        finally:
            if self.metrics is not None:
                self.metrics.processor_seconds.labels(processor=name).observe(
                    time.perf_counter() - t0)
