"""What every exporter shares, with no framework in it: tolerances, parity checks, bundles, ONNX.

Each exporter runs the original model and the exported one on the same frames, compares them
here and records the result in the new bundle's ``posed.yaml`` (``export.parity``); an export
that disagrees beyond its tolerance is an :class:`~posed.errors.ExportMismatchError` and
nothing is written. Importing this module imports neither torch nor TensorFlow, so the
TensorFlow exporter can use it where torch is not installed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import shutil
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from posed.engines.bundle import ModelBundle
from posed.engines.decoding import decode
from posed.engines.parity import CONFIDENT, compare_poses, peak_ties  # noqa: F401 (exporters' API)
from posed.errors import ConfigError, ExportError, ExportMismatchError, ModelLoadError

DEFAULT_OPSET = 17
# Largest keypoint (px) and likelihood differences an export may show against the native
# model. FP32 graphs differ only by operator order; FP16 and INT8 trade accuracy for speed,
# so their bounds are wider and the measured values are recorded for the user to judge.
# INT8 likelihoods measured 0.06-0.10 from FP32 on the synthetic test model (MinMax,
# Percentile and Entropy calibration alike), hence 0.15; keypoints moved at most 1.8 px.
TOLERANCE = {"fp32": (0.1, 1e-3), "fp16": (2.0, 2e-2), "int8": (8.0, 0.15)}
# Exports that approximate the model itself (frozen normalisation statistics,
# :mod:`posed.engines.pytorch.normfreeze`) are judged as the CPU-latency work judges any
# approximation: the median distance of visible keypoints, and the likelihood bound of INT8.
# A borderline keypoint can flip to another peak, so the largest distance is recorded only.
APPROXIMATE = (0.5, 0.15)
PRECISIONS = ("fp32", "fp16", "int8", "int8-dynamic")

# (scores N×K×h×w, locref N×2K×h×w), then PAFs N×2E×h×w for bottom-up multi-animal models
Maps = tuple[np.ndarray, ...]


def export_as(engine: str, writers: Mapping[str, Callable[..., Path]], bundle: ModelBundle,
              fmt: str, out: Path, options: dict[str, Any]) -> Path:
    """Run the writer of ``fmt`` (an engine's ``export`` capability); an unknown format is a
    :class:`ConfigError` listing the engine's formats."""
    writer = writers.get(fmt)
    if writer is None:
        raise ConfigError(f"format '{fmt}': the {engine} engine exports {', '.join(writers)}")
    return writer(bundle, out, **options)


def check_frames(frames: np.ndarray | None, size: tuple[int, int]) -> np.ndarray:
    """Frames to trace and compare with: the given ones, else deterministic noise."""
    if frames is None:
        rng = np.random.default_rng(0)
        return rng.integers(0, 256, (2, size[0], size[1], 3), dtype=np.uint8)
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.dtype != np.uint8:
        raise ExportError(f"check frames must be uint8 N×H×W×3, got {frames.dtype} {frames.shape}")
    return frames


def model_frames(bundle: ModelBundle, frames: np.ndarray | None) -> np.ndarray | None:
    """Frames as the network receives them: padded where the bundle pads
    (:mod:`posed.engines.padding`, HRNet models), unchanged otherwise."""
    spec = bundle.architecture.get("pad")
    if frames is None or not spec:
        return frames
    from posed.engines.padding import pad_frames

    return pad_frames(np.asarray(frames), spec)[0]


def as_maps(outputs: Sequence[Any]) -> Maps:
    """(scores, locref[, paf]) as float32 numpy arrays, from any framework's tensors."""
    arrays = [o.numpy() if hasattr(o, "numpy") else np.asarray(o) for o in outputs]
    return tuple(np.asarray(a, np.float32) for a in arrays)


def verify(kind: str, reference: Maps, exported: Maps, bundle: ModelBundle, out: Path,
           approximate: bool = False) -> dict[str, float]:
    """Measure how far an export is from the native model and refuse it beyond tolerance.

    FP32 exports are judged on the raw maps (score difference, and locref difference in
    pixels), which bounds the keypoint difference without being fooled by argmax ties on
    near-flat maps; FP16/INT8 exports are judged on the decoded keypoints. The part-affinity
    fields of multi-animal models (unit-vector components, on the scale of a likelihood) are
    held to the likelihood tolerance as their mean absolute difference on the limb cells (where
    the native field is stronger than 0.1), since assembly integrates them along each limb.
    An ``approximate`` export (frozen normalisation, or a ``precision: auto`` candidate) is
    judged by :data:`APPROXIMATE`.
    """
    if len(reference) != len(exported):
        raise ExportMismatchError(f"{out}: the export has {len(exported)} outputs, the native "
                                  f"model {len(reference)}")
    window = bundle.body_window
    ref_poses = decode(reference[0], reference[1], bundle.stride, bundle.locref_stdev, window)
    got_poses = decode(exported[0], exported[1], bundle.stride, bundle.locref_stdev, window)
    max_px, max_p = APPROXIMATE if approximate else TOLERANCE[kind]
    # FP16/INT8: a keypoint that jumped to a place the native model scores within the
    # likelihood tolerance of its own peak is a near-tie flip, not an error of the export:
    # counted and recorded (max_px_confident keeps it), but held to no distance bound.
    held = kind != "fp32" and not approximate
    ties = peak_ties(reference[0], exported[0], bundle.stride, window, max_p) if held else None
    parity = compare_poses(ref_poses, got_poses, ties, max_px)
    parity["max_score_diff"] = float(np.abs(reference[0] - exported[0]).max())
    parity["max_locref_px"] = float(np.abs(reference[1] - exported[1]).max() * bundle.locref_stdev)
    parity.update(tolerance_px=max_px, tolerance_likelihood=max_p)
    if approximate:
        parity["criterion"] = "median_px_confident"
        kind = f"{kind} (approximate)"
    paf_bad = False
    if len(reference) > 2:
        diff = np.abs(reference[2] - exported[2])
        limb = np.abs(reference[2]) > 0.1
        parity["max_paf_diff"] = float(diff.max()) if diff.size else 0.0
        parity["mean_paf_diff_on_limbs"] = float(diff[limb].mean()) if limb.any() else 0.0
        paf_bad = (parity["max_paf_diff"] if kind == "fp32" else parity["mean_paf_diff_on_limbs"]) > max_p
    if kind == "fp32":
        bad = parity["max_locref_px"] > max_px or parity["max_score_diff"] > max_p
    elif approximate:
        bad = parity["median_px_confident"] > max_px or parity["max_likelihood"] > max_p
    else:
        bad = parity["max_px_confident_held"] > max_px or parity["max_likelihood"] > max_p
    if bad or paf_bad:
        paf = f", PAF {parity['max_paf_diff']:.3g}" if len(reference) > 2 else ""
        flips = parity.get("tie_flips", 0)
        beside = (f" ({parity['max_px_confident_held']:.3g} px beside {flips} near-tie "
                  f"flip{'s' * (flips > 1)})" if flips else "")
        raise ExportMismatchError(
            f"{out}: {kind} export disagrees with the native model (visible keypoints up to "
            f"{parity['max_px_confident']:.3g} px{beside}, median "
            f"{parity['median_px_confident']:.3g} px, likelihood "
            f"{parity['max_likelihood']:.3g}, locref "
            f"{parity['max_locref_px']:.3g} px{paf}; tolerance {max_px} px, {max_p})")
    return parity


def write_bundle(bundle: ModelBundle, staging: Path, out: Path, weights: Sequence[str], *,
                 engine: str, fmt: str, input_size: list[int] | None, export: dict[str, Any],
                 overwrite: bool) -> Path:
    """Save posed.yaml into ``staging`` (hashing ``weights``) and move the folder to ``out``.

    ``weights`` are paths relative to ``staging``; the first is the one runners open.
    """
    new = dataclasses.replace(bundle, engine=engine, format=fmt, input_size=input_size,
                              export=export, weights=[])
    new.source = {**bundle.source, "exported_from": bundle.weights[0]}
    new.save(staging, list(weights))
    if out.exists():
        if not overwrite:
            raise ExportError(f"{out}: already exists (pass --overwrite to replace it)")
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(staging), str(out))
    new.path = out
    return out


def staging_parent(out: Path) -> Path | None:
    """Where to stage an export: beside ``out`` when possible, so the final move is a rename."""
    return out.parent if out.parent.exists() else None


# ----------------------------------------------------------------------------- ONNX

def run_onnx(path: Path, frames: np.ndarray) -> Maps:
    """Run an exported graph on the CPU: uint8 frames in, (scores, locref) out."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return as_maps(session.run(None, {session.get_inputs()[0].name: frames}))


def simplify_onnx(path: Path) -> None:
    """Constant folding and redundant-node removal, keeping the graph portable."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    # Basic level only: higher levels fuse nodes into onnxruntime-specific, hardware-specific ops.
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    optimized = path.with_suffix(".opt.onnx")
    opts.optimized_model_filepath = str(optimized)
    ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    optimized.replace(path)


def onnx_to_fp16(src: Path, dst: Path) -> None:
    """Half-precision weights and activations; uint8 input and float32 outputs kept."""
    try:
        from onnxconverter_common import float16
    except ImportError:
        raise ExportError("fp16 export needs onnxconverter-common: pip install 'posed[export]'") from None
    import onnx

    model = onnx.load(str(src))
    # Casts (the uint8 -> float one at the input, shape arithmetic) must keep producing the
    # types their consumers expect: the converter would otherwise retype their outputs.
    casts = [n.name for n in model.graph.node if n.op_type == "Cast"]
    model = float16.convert_float_to_float16(model, keep_io_types=True, node_block_list=casts)
    onnx.save(model, str(dst))


class _FramesReader:
    """Feeds calibration frames to onnxruntime's static quantiser one at a time."""

    def __init__(self, frames: np.ndarray, name: str) -> None:
        self._it = iter([{name: f[None]} for f in frames])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)


def quantize_static_onnx(src: Path, dst: Path, calibration: np.ndarray) -> None:
    """Static INT8 (QDQ) quantisation calibrated on ``calibration`` frames; the first
    convolution and the output heads stay float."""
    import onnx
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = src.with_suffix(".pre.onnx")
    quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
    model = onnx.load(str(prepared))
    # The last layers produce the heatmaps and offsets that decoding reads; keeping them in
    # float costs little and avoids quantising the very values keypoints are read from.
    heads = [n.name for n in model.graph.node if n.op_type == "ConvTranspose"]
    # The first convolution stays float too: with it quantised, the DeepLabCut ResNet-50
    # (GroupNorm) moved a visible keypoint by 79 px; kept float, at most 0.3 px, and the
    # INT8 graph still ran 1.4x faster than FP32 (benchmarks/RESULTS.md).
    first = [n.name for n in model.graph.node if n.op_type == "Conv"][:1]
    # 7-bit weights (reduce_range): CPUs without VNNI (AVX2-only x86) multiply u8 by s8 with
    # vpmaddubsw, whose 16-bit pair sums saturate with 8-bit weights. On an AVX2 EPYC the
    # synthetic test model's likelihoods then moved 0.21 (refused); with 7-bit weights 0.09,
    # and the median keypoint 0.31 px instead of 0.62. A bundle may be exported on one CPU and
    # served on another, so every export takes the portable form.
    with _quiet_quantizer():
        quantize_static(str(prepared), str(dst),
                        _FramesReader(calibration, model.graph.input[0].name),
                        quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, per_channel=True, reduce_range=True,
                        calibrate_method=CalibrationMethod.MinMax,
                        nodes_to_exclude=heads + first)


@contextlib.contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """Drop the quantiser's per-tensor notes, which it logs on the root logger: one line per
    GroupNorm constant ("Axis 1 is out-of-range ..."), hundreds for a ResNet-50, about a
    per-channel scale that does not apply to a scalar. The parity check judges the result."""
    root = logging.getLogger()

    def keep(record: logging.LogRecord) -> bool:
        parts = Path(record.pathname).parts
        return not ("onnxruntime" in parts and "quantization" in parts)

    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


def check_precision(precision: str, calibration: np.ndarray | None) -> None:
    """Refuse an unknown ONNX precision, and static INT8 without calibration frames."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision '{precision}' is not one of {', '.join(PRECISIONS)}")
    if precision == "int8" and calibration is None:
        raise ConfigError("int8 export needs calibration frames (export from a project, pass "
                          "--calibration VIDEO_OR_FOLDER, or use --int8 dynamic)")


def calibration_record(calibration: np.ndarray | None,
                       info: dict[str, Any] | None) -> dict[str, Any] | None:
    """What ``export.calibration`` in posed.yaml says about the static INT8 calibration frames."""
    if calibration is None:
        return None
    return dict(info) if info else {"kind": "frames given to the exporter",
                                    "frames": len(calibration)}


def finish_onnx(fp32_path: Path, final: Path, precision: str, calibration: np.ndarray | None,
                simplify: bool) -> list[str]:
    """Simplify and convert a float32 graph to ``precision`` at ``final``; returns the steps."""
    steps = []
    if simplify:
        simplify_onnx(fp32_path)
        steps.append("onnxruntime basic graph optimisation")
    if precision == "fp32":
        shutil.copy2(fp32_path, final)
    elif precision == "fp16":
        onnx_to_fp16(fp32_path, final)
        steps.append("float16 conversion (uint8 input, float32 outputs kept)")
    elif precision == "int8-dynamic":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(str(fp32_path), str(final), weight_type=QuantType.QInt8)
        steps.append("onnxruntime dynamic INT8 quantisation")
    else:
        assert calibration is not None
        quantize_static_onnx(fp32_path, final, calibration)
        steps.append(f"onnxruntime static INT8 quantisation (QDQ, 7-bit weights, "
                     f"{len(calibration)} calibration frames)")
    return steps


def unsupported(path: Path, what: str) -> ModelLoadError:
    """A DeepLabCut model posed cannot run yet: one line naming what, pointing to the table
    of DeepLabCut 3 families posed runs."""
    return ModelLoadError(f"{path}: not supported yet: {what} (the DeepLabCut 3 families posed "
                          "runs: README, 'DeepLabCut 3 models')")


def rename_dlc_state(pose: Mapping[str, Any], path: Path, backbone_prefix: str,
                     head_prefix: str, outputs: Mapping[str, str],
                     keep: tuple[str, ...] = ()) -> dict[str, Any]:
    """DeepLabCut ``PoseModel`` tensor names -> posed's: ``backbone_prefix`` + k becomes
    ``backbone.`` + k; ``head_prefix`` + an ``outputs`` key + k becomes its value + k;
    ``head_prefix`` + k, k starting with one of ``keep``, becomes k. Anything else is one line
    naming the tensor."""
    state: dict[str, Any] = {}
    for key, tensor in pose.items():
        if key.startswith(backbone_prefix):
            state["backbone." + key[len(backbone_prefix):]] = tensor
            continue
        rest = key[len(head_prefix):] if key.startswith(head_prefix) else None
        target = None if rest is None else next(
            (new + rest[len(old):] for old, new in outputs.items() if rest.startswith(old)),
            rest if keep and rest.startswith(keep) else None)
        if target is None:
            raise ModelLoadError(f"{path}: unexpected tensor '{key}' in 'pose'")
        state[target] = tensor
    return state
