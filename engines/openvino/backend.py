"""The OpenVINO engine: runs exported ``onnx`` bundles with OpenVINO on the CPU.

The same graph as the ONNX engine (uint8 N×H×W×3 frames in; score maps, locref and, for
bottom-up bundles, part-affinity fields out), compiled by OpenVINO for this CPU; decoding
and assembly are the shared numpy code. Any ONNX bundle works, whichever framework trained
it.

Precision: ``fp32`` unless asked. OpenVINO would pick bf16 by itself on CPUs with AMX or
AVX512-BF16, which moves keypoints; posed asks for f32 explicitly and runs bf16 only when
``precision: bf16`` is given and the CPU reports BF16 among its optimisation capabilities.
A static INT8 (QDQ) bundle runs its quantised convolutions in u8/i8 whatever that hint (the
hint governs only the layers left in float); :func:`convolution_precisions` shows it.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
import openvino as ov

from posed.engines.base import MultiAnimalRunner, PoseRunner
from posed.engines.bundle import ModelBundle
from posed.engines.cpu import native_bf16
from posed.engines.decoding import decode
from posed.errors import ConfigError, InferenceError, ModelLoadError

log = logging.getLogger(__name__)

ENGINE = "openvino"
PRECISIONS = {"auto": "f32", "fp32": "f32", "bf16": "bf16"}


def cpu_capabilities(core: ov.Core | None = None) -> list[str]:
    """What OpenVINO's CPU plugin reports it can compute natively (e.g. FP32, BF16, INT8)."""
    core = core or ov.Core()
    return [str(c) for c in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")]


def compile_bundle(bundle: ModelBundle, precision: str = "auto", threads: int | None = None,
                   device: str | None = None) -> tuple[Any, str]:
    """Compile an ``onnx`` bundle for the CPU; returns the compiled model and its precision.

    Raises:
        ModelLoadError: not an ONNX bundle, or OpenVINO cannot read or compile it.
        ConfigError: an unknown option value, a device other than the CPU, or bf16 on a CPU
            without native bf16.
    """
    if bundle.format != "onnx":
        raise ModelLoadError(f"{bundle.path}: openvino engine runs onnx bundles, not "
                             f"'{bundle.format}' (export one: posed export --format onnx)")
    if precision not in PRECISIONS:
        raise ConfigError(f"precision '{precision}' is not one of {', '.join(PRECISIONS)}")
    if device not in (None, "auto", "cpu"):
        raise ConfigError(f"openvino engine: device '{device}' is not supported (cpu)")
    core = ov.Core()
    hint = PRECISIONS[precision]
    if hint == "bf16" and "BF16" not in cpu_capabilities(core):
        raise ConfigError("precision 'bf16': this CPU has no native bf16 (OpenVINO reports "
                          f"{', '.join(cpu_capabilities(core))})")
    if hint == "bf16" and native_bf16() is None:  # e.g. under a oneDNN ISA limit below bf16
        raise ConfigError("precision 'bf16': this CPU has no native bf16 within this "
                          f"process's limits (ONEDNN_MAX_CPU_ISA="
                          f"{os.environ.get('ONEDNN_MAX_CPU_ISA', 'unset')})")
    config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    try:
        compiled = core.compile_model(core.read_model(str(bundle.weights_path)), "CPU", config)
    except Exception as exc:  # OpenVINO raises RuntimeError subclasses with long texts
        raise ModelLoadError(f"{bundle.weights_path}: OpenVINO cannot compile it "
                             f"({str(exc).strip().splitlines()[0][:200]})") from None
    log.info("openvino engine: CPU, %s (threads: %s)", hint,
             compiled.get_property("INFERENCE_NUM_THREADS"))
    if str(bundle.export.get("precision", "")).startswith("int8"):
        log.info("openvino engine: convolutions by runtime precision %s",
                 convolution_precisions(compiled))
    return compiled, hint


def convolution_precisions(compiled: Any) -> dict[str, int]:
    """How many convolutions of a compiled model OpenVINO runs in each precision.

    Read from the runtime (execution) graph, i.e. what the CPU plugin really executes after
    its low-precision transformations: a static INT8 (QDQ) bundle shows ``u8``/``i8``
    convolutions there, an fp32 one only ``f32``.
    """
    counts: dict[str, int] = {}
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        if str(info["layerType"].astype(str)) == "Convolution":
            precision = str(info["runtimePrecision"].astype(str)).lower()
            counts[precision] = counts.get(precision, 0) + 1
    return counts


class _Compiled:
    """What both OpenVINO runners share: the compiled model, one infer request, checked IO."""

    bundle: ModelBundle
    OUTPUTS: tuple[str, ...] = ("scores", "locref")

    def _attach(self, compiled: Any, precision: str) -> None:
        self.compiled = compiled
        self.precision = precision
        self.request = compiled.create_infer_request()
        inputs, outputs = compiled.inputs, compiled.outputs
        where = self.bundle.weights_path
        if len(inputs) != 1 or inputs[0].get_element_type() != ov.Type.u8:
            raise ModelLoadError(f"{where}: expected one uint8 input (N×H×W×3 frames)")
        if len(outputs) != len(self.OUTPUTS):
            raise ModelLoadError(f"{where}: expected outputs ({', '.join(self.OUTPUTS)}), found "
                                 f"{len(outputs)}")

    def _run(self, frames: np.ndarray) -> list[np.ndarray]:
        try:
            result = self.request.infer({0: np.ascontiguousarray(frames)})
        except Exception as exc:  # OpenVINO's errors are RuntimeErrors with its own text
            raise InferenceError(f"openvino run failed: {str(exc).strip().splitlines()[0]}") \
                from exc
        return [np.asarray(result[out], np.float32) for out in self.compiled.outputs]


class OpenVinoRunner(_Compiled, PoseRunner):
    """OpenVINO inference of a single-animal ``onnx`` bundle."""

    engine = ENGINE

    def __init__(self, bundle: ModelBundle, compiled: Any, precision: str) -> None:
        super().__init__(bundle)
        self._attach(compiled, precision)

    @classmethod
    def load(cls, bundle: ModelBundle, precision: str = "auto", threads: int | None = None,
             device: str | None = None, **options: Any) -> "OpenVinoRunner":
        """Create the runner; the options are those of :func:`compile_bundle`."""
        if options:
            raise ConfigError(f"openvino engine: unknown option '{next(iter(options))}'")
        return cls(bundle, *compile_bundle(bundle, precision, threads, device))

    def _forward(self, frames: np.ndarray) -> np.ndarray:
        scores, locref = self._run(frames)
        return decode(scores, locref, self.bundle.stride, self.bundle.locref_stdev,
                      self.bundle.body_window)


class OpenVinoMultiAnimalRunner(_Compiled, MultiAnimalRunner):
    """OpenVINO inference of a bottom-up multi-animal ``onnx`` bundle; assembly is the shared
    :class:`~posed.engines.base.MultiAnimalRunner` code."""

    engine = ENGINE
    OUTPUTS = ("scores", "locref", "paf")

    def __init__(self, bundle: ModelBundle, compiled: Any, precision: str,
                 assembly: dict[str, Any] | None = None) -> None:
        super().__init__(bundle, assembly)
        self._attach(compiled, precision)

    @classmethod
    def load(cls, bundle: ModelBundle, precision: str = "auto", threads: int | None = None,
             device: str | None = None, assembly: dict[str, Any] | None = None,
             **options: Any) -> "OpenVinoMultiAnimalRunner":
        if options:
            raise ConfigError(f"openvino engine: unknown option '{next(iter(options))}'")
        compiled, hint = compile_bundle(bundle, precision, threads, device)
        return cls(bundle, compiled, hint, assembly)

    def _maps(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        scores, locref, paf = self._run(frames)
        return scores, locref, paf


def load_runner(bundle: ModelBundle, **options: Any) -> PoseRunner:
    """Engine entry point used by :func:`posed.engines.api.load_model`."""
    if "individuals" in bundle.architecture:
        return OpenVinoMultiAnimalRunner.load(bundle, **options)
    return OpenVinoRunner.load(bundle, **options)
