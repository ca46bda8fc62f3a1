"""Export PyTorch bundles to TorchScript and ONNX, and check the export against the original.

Both exports take uint8 N×H×W×3 RGB frames: the layout change, the cast and the
normalisation are folded into the graph, so a runtime hands decoded frames straight in.
They return score maps (sigmoid applied in the graph for BCE-trained models) and locref fields;
decoding stays in the shared numpy code. Every export runs the original model and the
exported one on the same frames and records the largest keypoint difference in the new
bundle's ``posed.yaml`` (``export.parity``); an export that disagrees beyond its tolerance
is an :class:`~posed.errors.ExportMismatchError` and nothing is written.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from posed.engines.bundle import ModelBundle
from posed.engines.decoding import decode
from posed.errors import ConfigError, ExportError, ExportMismatchError

log = logging.getLogger(__name__)

DEFAULT_OPSET = 17
# Largest keypoint (px) and likelihood differences an export may show against the native
# model. FP32 graphs differ only by operator order; FP16 and INT8 trade accuracy for speed,
# so their bounds are wider and the measured values are recorded for the user to judge.
# INT8 likelihoods measured 0.06-0.10 from FP32 on the synthetic test model (MinMax,
# Percentile and Entropy calibration alike), hence 0.15; keypoints moved at most 1.8 px.
TOLERANCE = {"fp32": (0.1, 1e-3), "fp16": (2.0, 2e-2), "int8": (8.0, 0.15)}


class FramesToPoseMaps(nn.Module):
    """Wraps a :class:`PoseNet` so that it takes uint8 NHWC frames and returns probabilities."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = frames.permute(0, 3, 1, 2).float()
        heat, locref = self.model(x)
        return self.model.probabilities(heat), locref


def _native(bundle: ModelBundle) -> nn.Module:
    from posed.engines.pytorch.backend import build_model
    from posed.engines.pytorch.model import load_state_dict

    if bundle.engine != "pytorch" or bundle.format != "safetensors":
        raise ExportError(f"{bundle.path}: only PyTorch safetensors bundles can be exported here "
                          f"(this one is {bundle.engine}/{bundle.format})")
    if "individuals" in bundle.architecture:
        # The graph itself would export, but no exported-format runner assembles animals yet:
        # an exported multi-animal bundle could not be served.
        raise ExportError(f"{bundle.path}: multi-animal models cannot be exported yet; serve "
                          "or analyse with the safetensors bundle itself")
    model = build_model(bundle)
    model.load_state_dict(load_state_dict(bundle.weights_path))
    return FramesToPoseMaps(model.eval()).eval()


def _check_frames(frames: np.ndarray | None, size: tuple[int, int]) -> np.ndarray:
    """Frames to trace and compare with: the given ones, else deterministic noise."""
    if frames is None:
        rng = np.random.default_rng(0)
        return rng.integers(0, 256, (2, size[0], size[1], 3), dtype=np.uint8)
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.dtype != np.uint8:
        raise ExportError(f"check frames must be uint8 N×H×W×3, got {frames.dtype} {frames.shape}")
    return frames


Maps = tuple[np.ndarray, np.ndarray]  # (scores N×K×h×w, locref N×2K×h×w)


def _maps(outputs: Sequence[Any]) -> Maps:
    arrays = [o.numpy() if isinstance(o, torch.Tensor) else np.asarray(o) for o in outputs]
    return np.asarray(arrays[0], np.float32), np.asarray(arrays[1], np.float32)


CONFIDENT = 0.5  # native likelihood above which a keypoint counts as seen


def compare_poses(reference: np.ndarray, other: np.ndarray) -> dict[str, float]:
    """Keypoint distance (px) and likelihood difference between two N×K×3 arrays.

    ``max_px_confident`` only counts keypoints the reference sees (likelihood ≥ 0.5): where
    a body part is not visible the score map is flat and its argmax may jump anywhere.
    """
    dist = np.linalg.norm(reference[..., :2] - other[..., :2], axis=-1)
    seen = reference[..., 2] >= CONFIDENT
    return {"max_px": float(np.nanmax(dist)), "mean_px": float(np.nanmean(dist)),
            "max_px_confident": float(np.nanmax(dist[seen])) if seen.any() else 0.0,
            "confident_keypoints": int(seen.sum()),
            "max_likelihood": float(np.nanmax(np.abs(reference[..., 2] - other[..., 2])))}


def _verify(kind: str, reference: Maps, exported: Maps, bundle: ModelBundle, out: Path) -> dict[str, float]:
    """Measure how far an export is from the native model and refuse it beyond tolerance.

    FP32 exports are judged on the raw maps (score difference, and locref difference in
    pixels), which bounds the keypoint difference without being fooled by argmax ties on
    near-flat maps; FP16/INT8 exports are judged on the decoded keypoints.
    """
    ref_poses = decode(*reference, bundle.stride, bundle.locref_stdev)
    got_poses = decode(*exported, bundle.stride, bundle.locref_stdev)
    parity = compare_poses(ref_poses, got_poses)
    parity["max_score_diff"] = float(np.abs(reference[0] - exported[0]).max())
    parity["max_locref_px"] = float(np.abs(reference[1] - exported[1]).max() * bundle.locref_stdev)
    max_px, max_p = TOLERANCE[kind]
    parity.update(tolerance_px=max_px, tolerance_likelihood=max_p)
    if kind == "fp32":
        bad = parity["max_locref_px"] > max_px or parity["max_score_diff"] > max_p
    else:
        bad = parity["max_px_confident"] > max_px or parity["max_likelihood"] > max_p
    if bad:
        raise ExportMismatchError(
            f"{out}: {kind} export disagrees with the native model (visible keypoints up to "
            f"{parity['max_px_confident']:.3g} px, likelihood {parity['max_likelihood']:.3g}, locref "
            f"{parity['max_locref_px']:.3g} px; tolerance {max_px} px, {max_p})")
    return parity


def _write_bundle(bundle: ModelBundle, staging: Path, out: Path, weights: str, *, engine: str,
                  fmt: str, input_size: list[int] | None, export: dict[str, Any],
                  overwrite: bool) -> Path:
    """Save posed.yaml into ``staging`` and move the finished folder to ``out``."""
    new = dataclasses.replace(bundle, engine=engine, format=fmt, input_size=input_size,
                              export=export, weights=[])
    new.source = {**bundle.source, "exported_from": bundle.weights[0]}
    new.save(staging, [weights])
    if out.exists():
        if not overwrite:
            raise ExportError(f"{out}: already exists (pass --overwrite to replace it)")
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(staging), str(out))
    new.path = out
    return out


def export_torchscript(bundle: ModelBundle, out: str | Path, *, check_frames: np.ndarray | None = None,
                       overwrite: bool = False) -> Path:
    """Trace the model to TorchScript (``model.pt``) in a new bundle folder ``out``.

    The trace is checked on a second input size, since a trace that baked a size in would
    silently mis-predict on other frames.
    """
    out = Path(out)
    wrapper = _native(bundle)
    frames = _check_frames(check_frames, (96, 128))
    with tempfile.TemporaryDirectory(dir=out.parent if out.parent.exists() else None) as tmp:
        staging = Path(tmp) / "bundle"
        staging.mkdir()
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TracerWarnings; the parity check below is the test
            traced = torch.jit.trace(wrapper, torch.from_numpy(frames[:1]), check_trace=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # TorchScript deprecation notices
            traced = torch.jit.freeze(traced.eval())
            traced.save(str(staging / "model.pt"))
            loaded = torch.jit.load(str(staging / "model.pt"), map_location="cpu")
        # A second size: a trace that baked the first size in would mis-predict on others.
        other = np.ascontiguousarray(np.pad(frames, ((0, 0), (16, 0), (0, 32), (0, 0))))
        parity = {}
        with torch.inference_mode():
            for name, batch in (("same_size", frames), ("other_size", other)):
                ref = _maps(wrapper(torch.from_numpy(batch)))
                got = _maps(loaded(torch.from_numpy(batch)))
                parity[name] = _verify("fp32", ref, got, bundle, out)
        export = {"tool": f"torch.jit.trace (torch {torch.__version__})", "precision": "fp32",
                  "input": "uint8 NHWC RGB", "parity": parity}
        return _write_bundle(bundle, staging, out, "model.pt", engine="pytorch",
                             fmt="torchscript", input_size=None, export=export,
                             overwrite=overwrite)


def export_onnx(bundle: ModelBundle, out: str | Path, *, opset: int = DEFAULT_OPSET,
                fixed_size: tuple[int, int] | None = None, precision: str = "fp32",
                calibration: np.ndarray | None = None, simplify: bool = True,
                check_frames: np.ndarray | None = None, overwrite: bool = False) -> Path:
    """Export to ONNX (``model.onnx``) in a new bundle folder ``out``.

    Args:
        bundle: A PyTorch safetensors bundle.
        out: Folder to create.
        opset: ONNX opset.
        fixed_size: ``(height, width)`` to fix the input size (lets TensorRT and some CPU
            kernels specialise); ``None`` keeps height and width dynamic. Batch is always dynamic.
        precision: ``fp32``; ``fp16`` (GPU: weights and activations in half precision, uint8
            input and float32 outputs kept); ``int8`` (static quantisation for CPU, needs
            ``calibration``) or ``int8-dynamic`` (weights only, no calibration).
        calibration: uint8 N×H×W×3 frames from the project for static INT8 calibration.
        simplify: Fold constants and remove redundant nodes (onnxruntime basic optimisation,
            saved as a portable graph).
        check_frames: Frames for the parity check (default: deterministic noise).
        overwrite: Replace ``out`` if it exists.
    """
    import onnx

    out = Path(out)
    if precision not in ("fp32", "fp16", "int8", "int8-dynamic"):
        raise ConfigError(f"precision '{precision}' is not one of fp32, fp16, int8, int8-dynamic")
    if precision == "int8" and calibration is None:
        raise ConfigError("int8 export needs calibration frames (export from a project, or use int8-dynamic)")
    wrapper = _native(bundle)
    size = fixed_size or (96, 128)
    frames = _check_frames(check_frames, size)
    if fixed_size is not None and frames.shape[1:3] != tuple(fixed_size):
        raise ExportError(f"check frames are {frames.shape[1:3]}, the fixed size is {fixed_size}")
    with torch.inference_mode():
        reference = _maps(wrapper(torch.from_numpy(frames)))
    dynamic = {"frames": {0: "batch"}, "scores": {0: "batch"}, "locref": {0: "batch"}}
    if fixed_size is None:
        dynamic["frames"].update({1: "height", 2: "width"})
        dynamic["scores"].update({2: "grid_h", 3: "grid_w"})
        dynamic["locref"].update({2: "grid_h", 3: "grid_w"})
    with tempfile.TemporaryDirectory(dir=out.parent if out.parent.exists() else None) as tmp:
        staging = Path(tmp) / "bundle"
        staging.mkdir()
        fp32_path = Path(tmp) / "fp32.onnx"
        try:
            with torch.no_grad(), warnings.catch_warnings():
                # The exporter warns about its own deprecation and tracing details that
                # concern torch developers, not users; parity is checked below instead.
                warnings.simplefilter("ignore")
                torch.onnx.export(wrapper, (torch.from_numpy(frames[:1]),), str(fp32_path),
                                  input_names=["frames"], output_names=["scores", "locref"],
                                  dynamic_axes=dynamic, opset_version=opset, dynamo=False,
                                  do_constant_folding=True)
        except Exception as exc:  # the exporter raises many internal error types
            raise ExportError(f"{out}: ONNX export failed ({str(exc).splitlines()[0]})") from exc
        onnx.checker.check_model(str(fp32_path))
        steps = ["torch.onnx.export (TorchScript-based)"]
        if simplify:
            _simplify(fp32_path)
            steps.append("onnxruntime basic graph optimisation")
        final = staging / "model.onnx"
        if precision == "fp32":
            shutil.copy2(fp32_path, final)
        elif precision == "fp16":
            _to_fp16(fp32_path, final)
            steps.append("float16 conversion (uint8 input, float32 outputs kept)")
        elif precision == "int8-dynamic":
            from onnxruntime.quantization import QuantType, quantize_dynamic

            quantize_dynamic(str(fp32_path), str(final), weight_type=QuantType.QInt8)
            steps.append("onnxruntime dynamic INT8 quantisation")
        else:
            _quantize_static(fp32_path, final, calibration)
            steps.append(f"onnxruntime static INT8 quantisation (QDQ, {len(calibration)} calibration frames)")
        got = _run_onnx(final, frames)
        kind = "fp32" if precision == "fp32" else precision.split("-")[0]
        parity = _verify(kind, reference, got, bundle, out)
        export = {"tool": steps, "opset": opset, "precision": precision, "input": "uint8 NHWC RGB",
                  "dynamic_axes": {name: [axes[i] for i in sorted(axes)] for name, axes in dynamic.items()},
                  "parity": parity}
        return _write_bundle(bundle, staging, out, "model.onnx", engine="onnx", fmt="onnx",
                             input_size=list(fixed_size) if fixed_size else None, export=export,
                             overwrite=overwrite)


def _run_onnx(path: Path, frames: np.ndarray) -> Maps:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return _maps(session.run(None, {"frames": frames}))


def _simplify(path: Path) -> None:
    """Constant folding and redundant-node removal, keeping the graph portable."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    # Basic level only: higher levels fuse nodes into onnxruntime-specific, hardware-specific ops.
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    optimized = path.with_suffix(".opt.onnx")
    opts.optimized_model_filepath = str(optimized)
    ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    optimized.replace(path)


def _to_fp16(src: Path, dst: Path) -> None:
    try:
        from onnxconverter_common import float16
    except ImportError:
        raise ExportError("fp16 export needs onnxconverter-common: pip install 'posed[export]'") from None
    import onnx

    model = onnx.load(str(src))
    # The uint8 -> float Cast at the input must keep producing float32: the converter would
    # otherwise retype its output and leave the graph inconsistent.
    casts = [n.name for n in model.graph.node if n.op_type == "Cast"]
    model = float16.convert_float_to_float16(model, keep_io_types=True, node_block_list=casts)
    onnx.save(model, str(dst))


class _FramesReader:
    """Feeds calibration frames to onnxruntime's static quantiser one at a time."""

    def __init__(self, frames: np.ndarray) -> None:
        self._it = iter([{"frames": f[None]} for f in frames])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)


def _quantize_static(src: Path, dst: Path, calibration: np.ndarray) -> None:
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = src.with_suffix(".pre.onnx")
    quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
    # The last layers produce the heatmaps and offsets that decoding reads; keeping them in
    # float costs little and avoids quantising the very values keypoints are read from.
    import onnx

    model = onnx.load(str(prepared))
    heads = [n.name for n in model.graph.node if n.op_type == "ConvTranspose"]
    quantize_static(str(prepared), str(dst), _FramesReader(calibration),
                    quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, per_channel=True,
                    calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=heads)
