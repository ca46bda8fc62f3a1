"""The ONNX Runtime engine: runs exported ``onnx`` bundles; imports neither torch nor TF.

The exported graph takes uint8 N×H×W×3 RGB frames (conversion and normalisation are folded
into it) and returns score maps and locref fields (plus part-affinity fields for bottom-up
multi-animal bundles); decoding and assembly are the shared numpy code.

Execution providers are chosen by :func:`choose_providers`, a pure function of the request
and of what the installed onnxruntime offers. onnxruntime-gpu lists CUDA and TensorRT even
on machines without a usable GPU and then silently runs on the CPU, so after creating the
session the runner reads ``session.get_providers()`` and reports the provider really used.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from posed.engines.base import MultiAnimalRunner, PoseRunner
from posed.engines.bundle import ModelBundle
from posed.engines.decoding import decode, decode_rtmpose
from posed.engines.topdown import TopDownRunner, pose_bundle
from posed.errors import ConfigError, InferenceError, ModelLoadError

log = logging.getLogger(__name__)

ENGINE = "onnx"
PROVIDERS = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
AUTO_ORDER = ("tensorrt", "cuda", "cpu")
OPT_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


def choose_providers(requested: str, available: list[str]) -> tuple[list[str], str]:
    """Pick the execution providers for a request.

    Args:
        requested: ``auto``, ``tensorrt``, ``cuda`` or ``cpu``.
        available: ``onnxruntime.get_available_providers()``.

    Returns:
        The provider list to pass to the session (CPU always last, as the fallback) and a
        human-readable reason for the log.

    Raises:
        ConfigError: unknown provider name.
    """
    want = (requested or "auto").lower()
    if want != "auto" and want not in PROVIDERS:
        raise ConfigError(f"provider '{requested}' is not one of auto, {', '.join(PROVIDERS)}")
    order = AUTO_ORDER if want == "auto" else AUTO_ORDER[AUTO_ORDER.index(want):]
    chosen = [PROVIDERS[p] for p in order if PROVIDERS[p] in available]
    if PROVIDERS["cpu"] not in chosen:
        chosen.append(PROVIDERS["cpu"])
    first = chosen[0]
    if want == "auto":
        reason = f"auto: {first} is the fastest provider this onnxruntime offers"
    elif first == PROVIDERS[want]:
        reason = f"{first} as requested"
    else:
        reason = (f"{PROVIDERS[want]} requested but this onnxruntime does not offer it "
                  f"(available: {', '.join(available)}); falling back to {first}")
    if want == "tensorrt" and PROVIDERS["cuda"] not in chosen and first == PROVIDERS["tensorrt"]:
        reason += "; no CUDA provider for nodes TensorRT cannot run"
    return chosen, reason


def _provider_options(providers: list[str], cache_dir: Path | None) -> list[dict[str, Any]]:
    options: list[dict[str, Any]] = []
    for name in providers:
        if name == PROVIDERS["tensorrt"] and cache_dir is not None:
            # Keep built engines on disk: building one takes minutes, a restart should not.
            cache_dir.mkdir(parents=True, exist_ok=True)
            options.append({"trt_engine_cache_enable": "True",
                            "trt_engine_cache_path": str(cache_dir)})
        else:
            options.append({})
    return options


def open_session(bundle: ModelBundle, provider: str = "auto", threads: int | None = None,
                 optimization: str = "all", device: str | None = None, spin: bool = True
                 ) -> tuple[ort.InferenceSession, str]:
    """Create the onnxruntime session of an ``onnx`` bundle.

    Args:
        bundle: An ``onnx`` bundle.
        provider: ``auto``, ``tensorrt``, ``cuda`` or ``cpu``.
        threads: Intra-op threads (default: onnxruntime's choice).
        optimization: Graph optimisation level: disable, basic, extended, all.
        device: Accepted for symmetry with other engines: ``cpu`` means provider ``cpu``,
            ``cuda``/``cuda:N`` means provider ``cuda`` on that device.
        spin: Whether the intra-op threads spin after a run waiting for the next (onnxruntime's
            default). Sessions run in turn (a top-down detector and pose model) must not spin:
            the idle session's spinning threads take the cores from the working one.

    Returns:
        The session and the provider it really uses (logged, with the reason).
    """
    if bundle.format != "onnx":
        raise ModelLoadError(f"{bundle.path}: onnx engine cannot run format '{bundle.format}'")
    if optimization not in OPT_LEVELS:
        raise ConfigError(f"optimization '{optimization}' is not one of {', '.join(OPT_LEVELS)}")
    device_id = 0
    if device and device != "auto":
        if device == "cpu":
            provider = "cpu"
        elif device.startswith("cuda"):
            provider = "cuda" if provider == "auto" else provider
            device_id = int(device.split(":")[1]) if ":" in device else 0
        else:
            raise ConfigError(f"device '{device}' is not one of auto, cpu, cuda, cuda:N")
    chosen, reason = choose_providers(provider, ort.get_available_providers())
    opts = ort.SessionOptions()
    opts.graph_optimization_level = OPT_LEVELS[optimization]
    if threads:
        opts.intra_op_num_threads = int(threads)
    if not spin:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3  # the provider actually used is reported below instead
    provider_options = _provider_options(chosen, bundle.path / "trt-cache" if bundle.path else None)
    for name, popt in zip(chosen, provider_options):
        if name in (PROVIDERS["cuda"], PROVIDERS["tensorrt"]):
            popt["device_id"] = str(device_id)
    try:
        session = ort.InferenceSession(str(bundle.weights_path), sess_options=opts,
                                       providers=chosen, provider_options=provider_options)
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types
        raise ModelLoadError(f"{bundle.weights_path}: onnxruntime cannot load it "
                             f"({str(exc).splitlines()[0]})") from exc
    used = session.get_providers()[0]
    if used != chosen[0]:
        log.warning("onnx engine: %s could not be used (no usable device or libraries); "
                    "running on %s", chosen[0], used)
    else:
        log.info("onnx engine: %s (%s)", used, reason)
    return session, used


class _Session:
    """What both ONNX runners share: the session, IO binding on GPUs, checked inputs and outputs."""

    bundle: ModelBundle
    OUTPUTS: tuple[str, ...] = ("scores", "locref")

    def _attach(self, session: ort.InferenceSession, provider: str) -> None:
        self.session = session
        self.provider = provider
        self._input = session.get_inputs()[0].name
        self._outputs = [o.name for o in session.get_outputs()]
        # On a GPU provider, IO binding lets onnxruntime copy the frames in once and keep its
        # output buffers on the device between runs instead of allocating them per call.
        self._binding = None
        if provider in (PROVIDERS["cuda"], PROVIDERS["tensorrt"]):
            self._binding = session.io_binding()
            self._device_id = int(session.get_provider_options().get(provider, {})
                                  .get("device_id", 0))
        self._check_io()

    def _check_io(self) -> None:
        inputs = self.session.get_inputs()
        where = self.bundle.weights_path
        if len(inputs) != 1:
            raise ModelLoadError(f"{where}: expected one input (uint8 frames), found {len(inputs)}")
        if inputs[0].type != "tensor(uint8)" or len(inputs[0].shape) != 4:
            raise ModelLoadError(f"{where}: input '{inputs[0].name}' is {inputs[0].type} with "
                                 f"rank {len(inputs[0].shape)}; expected uint8 N×H×W×3")
        if len(self._outputs) != len(self.OUTPUTS):
            raise ModelLoadError(f"{where}: expected outputs ({', '.join(self.OUTPUTS)}), found "
                                 f"{', '.join(self._outputs)}")

    def _run_bound(self, frames: np.ndarray) -> list[np.ndarray]:
        binding = self._binding
        binding.bind_cpu_input(self._input, frames)
        for name in self._outputs:
            binding.bind_output(name, "cuda", self._device_id)
        self.session.run_with_iobinding(binding)
        outputs = binding.copy_outputs_to_cpu()
        binding.clear_binding_inputs()
        return outputs

    def _run(self, frames: np.ndarray) -> list[np.ndarray]:
        try:
            if self._binding is not None:
                return list(self._run_bound(frames))
            return list(self.session.run(self._outputs, {self._input: frames}))
        except Exception as exc:  # onnxruntime's errors are not a public hierarchy
            raise InferenceError(f"onnxruntime run failed: {str(exc).splitlines()[0]}") from exc


class OnnxRunner(_Session, PoseRunner):
    """ONNX Runtime inference of a single-animal ``onnx`` bundle."""

    engine = ENGINE

    def __init__(self, bundle: ModelBundle, session: ort.InferenceSession, provider: str) -> None:
        super().__init__(bundle)
        self._attach(session, provider)

    @classmethod
    def load(cls, bundle: ModelBundle, provider: str = "auto", threads: int | None = None,
             optimization: str = "all", device: str | None = None, spin: bool = True,
             **options: Any) -> "OnnxRunner":
        """Create the runner; the options are those of :func:`open_session`."""
        if options:
            raise ConfigError(f"onnx engine: unknown option '{next(iter(options))}'")
        return cls(bundle, *open_session(bundle, provider, threads, optimization, device, spin))

    def _forward(self, frames: np.ndarray) -> np.ndarray:
        scores, locref = self._run(frames)
        return decode(scores, locref, self.bundle.stride, self.bundle.locref_stdev,
                      self.bundle.body_window)


class OnnxMultiAnimalRunner(_Session, MultiAnimalRunner):
    """ONNX Runtime inference of a bottom-up multi-animal ``onnx`` bundle; assembly is the
    shared :class:`~posed.engines.base.MultiAnimalRunner` code."""

    engine = ENGINE
    OUTPUTS = ("scores", "locref", "paf")

    def __init__(self, bundle: ModelBundle, session: ort.InferenceSession, provider: str,
                 assembly: dict[str, Any] | None = None) -> None:
        super().__init__(bundle, assembly)
        self._attach(session, provider)

    @classmethod
    def load(cls, bundle: ModelBundle, provider: str = "auto", threads: int | None = None,
             optimization: str = "all", device: str | None = None,
             assembly: dict[str, Any] | None = None, **options: Any) -> "OnnxMultiAnimalRunner":
        """Create the runner; ``assembly`` overrides assembly settings, the other options are
        those of :func:`open_session`."""
        if options:
            raise ConfigError(f"onnx engine: unknown option '{next(iter(options))}'")
        session, used = open_session(bundle, provider, threads, optimization, device)
        return cls(bundle, session, used, assembly)

    def _maps(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        scores, locref, paf = self._run(frames)
        return (np.asarray(scores, np.float32), np.asarray(locref, np.float32),
                np.asarray(paf, np.float32))


# ----------------------------------------------------------------------------- top-down

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
        pose_part = pose_bundle(bundle)
        pose_cls = OnnxSimCCRunner if pose_part.architecture.get("head") == "rtmcc" else OnnxRunner
        # the two sessions run in turn: neither may spin (see open_session)
        pose = pose_cls.load(pose_part, provider, threads, optimization, device, spin=False)
        detector_bundle = replace(bundle, weights=bundle.weights[1:])
        detector = _Detector(detector_bundle, *open_session(detector_bundle, provider, threads,
                                                            optimization, device, spin=False))
        return cls(bundle, detector, pose, crop_batch, detect_every)

    def _detect(self, frames: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        # one frame at a time, as DeepLabCut runs its detector
        return [self.detector(frame) for frame in frames]

    def _pose_crops(self, crops: np.ndarray) -> np.ndarray:
        return self.pose.predict(crops)


def load_runner(bundle: ModelBundle, **options: Any) -> PoseRunner:
    """Engine entry point used by :func:`posed.engines.api.load_model`; bottom-up
    multi-animal bundles get an :class:`OnnxMultiAnimalRunner`, top-down ones an
    :class:`OnnxTopDownRunner`."""
    if "topdown" in bundle.architecture:
        return OnnxTopDownRunner.load(bundle, **options)
    if "individuals" in bundle.architecture:
        return OnnxMultiAnimalRunner.load(bundle, **options)
    return OnnxRunner.load(bundle, **options)
