"""Export PyTorch bundles to TorchScript and ONNX, and check the export against the original.

Both exports take uint8 N×H×W×3 RGB frames: the layout change, the cast and the
normalisation are folded into the graph, so a runtime hands decoded frames straight in.
They return score maps (sigmoid applied in the graph for BCE-trained models) and locref fields,
plus the part-affinity fields for bottom-up multi-animal models; decoding and assembly stay in
the shared numpy code. Every export runs the original model and the
exported one on the same frames and records the largest keypoint difference in the new
bundle's ``posed.yaml`` (``export.parity``); an export that disagrees beyond its tolerance
is an :class:`~posed.errors.ExportMismatchError` and nothing is written.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from posed.engines.bundle import ModelBundle
from posed.errors import ConfigError, ExportError
from posed.exporters.common import (DEFAULT_OPSET, TOLERANCE, as_maps, calibration_record,
                                    check_precision, export_as, finish_onnx, run_onnx,
                                    staging_parent, verify, write_bundle)
from posed.exporters.common import check_frames as _check_frames
from posed.exporters.common import model_frames

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_OPSET", "FORMATS", "TOLERANCE", "FramesToPoseMaps", "export", "export_onnx",
           "export_torchscript"]


class FramesToPoseMaps(nn.Module):
    """Wraps a :class:`PoseNet` (or a :class:`BottomUpNet`) so that it takes uint8 NHWC frames
    and returns probabilities, locref and, for a bottom-up model, the part-affinity fields."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = frames.permute(0, 3, 1, 2).float()
        heat, locref, *paf = self.model(x)
        return (self.model.probabilities(heat), locref, *paf)


def _native(bundle: ModelBundle) -> FramesToPoseMaps:
    from posed.engines.pytorch.model import load_state_dict

    if bundle.engine != "pytorch" or bundle.format != "safetensors":
        raise ExportError(f"{bundle.path}: only PyTorch safetensors bundles can be exported here "
                          f"(this one is {bundle.engine}/{bundle.format})")
    if "individuals" in bundle.architecture:
        from posed.engines.pytorch.multianimal import build_model
    else:
        from posed.engines.pytorch.backend import build_model
    model = build_model(bundle)
    model.load_state_dict(load_state_dict(bundle.weights_path))
    return FramesToPoseMaps(model.eval()).eval()


def _freeze(wrapper: FramesToPoseMaps, freeze_norm: bool,
            calibration: np.ndarray | None) -> dict[str, Any] | None:
    """With ``freeze_norm``, make the wrapped model's GroupNorm statistics fixed, measured on
    ``calibration`` (:mod:`posed.engines.pytorch.normfreeze`); what was done, else None."""
    if not freeze_norm:
        return None
    if calibration is None:
        raise ConfigError("--freeze-norm needs frames of the camera to measure the statistics "
                          "on (export from a project, or pass --calibration VIDEO_OR_FOLDER)")
    from posed.engines.pytorch.normfreeze import freeze_group_norm

    return freeze_group_norm(wrapper.model, calibration, wrapper)


def _output_names(bundle: ModelBundle) -> list[str]:
    """The graph's outputs: the PAFs follow scores and locref in multi-animal bundles."""
    return ["scores", "locref"] + (["paf"] if "individuals" in bundle.architecture else [])


def export_torchscript(bundle: ModelBundle, out: str | Path, *, check_frames: np.ndarray | None = None,
                       overwrite: bool = False, freeze_norm: bool = False,
                       calibration: np.ndarray | None = None,
                       calibration_info: dict[str, Any] | None = None) -> Path:
    """Trace the model to TorchScript (``model.pt``) in a new bundle folder ``out``.

    The trace is checked on a second input size, since a trace that baked a size in would
    silently mis-predict on other frames. ``freeze_norm`` fixes GroupNorm statistics measured
    on ``calibration`` frames first (see :func:`export_onnx`).
    """
    out = Path(out)
    native = _native(bundle)
    wrapper = _native(bundle) if freeze_norm else native
    calibration = model_frames(bundle, calibration)
    frozen = _freeze(wrapper, freeze_norm, calibration)
    frames = model_frames(bundle, _check_frames(check_frames, (96, 128)))
    with tempfile.TemporaryDirectory(dir=staging_parent(out)) as tmp:
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
        other = np.ascontiguousarray(np.pad(frames, ((0, 0), (32, 0), (0, 32), (0, 0))))
        parity = {}
        with torch.inference_mode():
            for name, batch in (("same_size", frames), ("other_size", other)):
                ref = as_maps(native(torch.from_numpy(batch)))
                got = as_maps(loaded(torch.from_numpy(batch)))
                parity[name] = verify("fp32", ref, got, bundle, out, approximate=bool(frozen))
        export = {"tool": f"torch.jit.trace (torch {torch.__version__})", "precision": "fp32",
                  "input": "uint8 NHWC RGB", "parity": parity}
        if frozen:
            export["freeze_norm"] = {**frozen,
                                     "calibration": calibration_record(calibration,
                                                                       calibration_info)}
        return write_bundle(bundle, staging, out, ["model.pt"], engine="pytorch",
                            fmt="torchscript", input_size=None, export=export,
                            overwrite=overwrite)


def export_onnx(bundle: ModelBundle, out: str | Path, *, opset: int = DEFAULT_OPSET,
                fixed_size: tuple[int, int] | None = None, precision: str = "fp32",
                calibration: np.ndarray | None = None, simplify: bool = True,
                check_frames: np.ndarray | None = None, overwrite: bool = False,
                calibration_info: dict[str, Any] | None = None,
                freeze_norm: bool = False, approximate: bool = False) -> Path:
    """Export to ONNX (``model.onnx``) in a new bundle folder ``out``.

    Args:
        bundle: A PyTorch safetensors bundle (single-animal or bottom-up multi-animal).
        out: Folder to create.
        opset: ONNX opset.
        fixed_size: ``(height, width)`` to fix the input size (lets TensorRT and some CPU
            kernels specialise); ``None`` keeps height and width dynamic. Batch is always dynamic.
        precision: ``fp32``; ``fp16`` (GPU: weights and activations in half precision, uint8
            input and float32 outputs kept); ``int8`` (static quantisation for CPU, needs
            ``calibration``) or ``int8-dynamic`` (weights only, no calibration).
        calibration: uint8 N×H×W×3 frames for static INT8 calibration (the project's
            training images, or ``--calibration`` frames).
        calibration_info: Where those frames came from, recorded as ``export.calibration``.
        simplify: Fold constants and remove redundant nodes (onnxruntime basic optimisation,
            saved as a portable graph).
        check_frames: Frames for the parity check (default: deterministic noise).
        overwrite: Replace ``out`` if it exists.
        freeze_norm: Replace GroupNorm by BatchNorm holding the statistics measured on the
            ``calibration`` frames (:mod:`posed.engines.pytorch.normfreeze`): a local, cheaper
            network, judged against the original by the median distance of visible keypoints.
        approximate: Judge any precision by that median criterion
            (:data:`~posed.exporters.common.APPROXIMATE`), as ``precision: auto`` judges its
            candidates.
    """
    import onnx

    out = Path(out)
    check_precision(precision, calibration)
    wrapper = _native(bundle)
    size = fixed_size or (96, 128)
    if fixed_size is not None and model_frames(bundle, np.zeros((1, *size, 3), np.uint8)).shape[
            1:3] != tuple(size):
        raise ExportError(f"{out}: this model pads frames to multiples of its size divisor "
                          f"({bundle.architecture['pad']}); choose a fixed size that needs no "
                          "padding")
    frames = model_frames(bundle, _check_frames(check_frames, size))
    calibration = model_frames(bundle, calibration)
    if fixed_size is not None and frames.shape[1:3] != tuple(fixed_size):
        raise ExportError(f"check frames are {frames.shape[1:3]}, the fixed size is {fixed_size}")
    with torch.inference_mode():
        reference = as_maps(wrapper(torch.from_numpy(frames)))
    frozen = _freeze(wrapper, freeze_norm, calibration)
    outputs = _output_names(bundle)
    dynamic = {"frames": {0: "batch"}, **{name: {0: "batch"} for name in outputs}}
    if fixed_size is None:
        dynamic["frames"].update({1: "height", 2: "width"})
        for name in outputs:
            dynamic[name].update({2: "grid_h", 3: "grid_w"})
    with tempfile.TemporaryDirectory(dir=staging_parent(out)) as tmp:
        staging = Path(tmp) / "bundle"
        staging.mkdir()
        fp32_path = Path(tmp) / "fp32.onnx"
        try:
            with torch.no_grad(), warnings.catch_warnings():
                # The exporter warns about its own deprecation and tracing details that
                # concern torch developers, not users; parity is checked below instead.
                warnings.simplefilter("ignore")
                torch.onnx.export(wrapper, (torch.from_numpy(frames[:1]),), str(fp32_path),
                                  input_names=["frames"], output_names=outputs,
                                  dynamic_axes=dynamic, opset_version=opset, dynamo=False,
                                  do_constant_folding=True)
        except Exception as exc:  # the exporter raises many internal error types
            raise ExportError(f"{out}: ONNX export failed ({str(exc).splitlines()[0]})") from exc
        onnx.checker.check_model(str(fp32_path))
        steps = ["torch.onnx.export (TorchScript-based)"]
        final = staging / "model.onnx"
        steps += finish_onnx(fp32_path, final, precision, calibration, simplify)
        got = run_onnx(final, frames)
        kind = "fp32" if precision == "fp32" else precision.split("-")[0]
        parity = verify(kind, reference, got, bundle, out, approximate=bool(frozen) or approximate)
        if frozen:
            steps.insert(0, f"GroupNorm statistics frozen on {frozen['frames']} frames")
        export = {"tool": steps, "opset": opset, "precision": precision, "input": "uint8 NHWC RGB",
                  "dynamic_axes": {name: [axes[i] for i in sorted(axes)] for name, axes in dynamic.items()},
                  "parity": parity}
        if precision == "int8":
            export["calibration"] = calibration_record(calibration, calibration_info)
        if frozen:
            export["freeze_norm"] = {**frozen,
                                     "calibration": calibration_record(calibration,
                                                                       calibration_info)}
        return write_bundle(bundle, staging, out, ["model.onnx"], engine="onnx", fmt="onnx",
                            input_size=list(fixed_size) if fixed_size else None, export=export,
                            overwrite=overwrite)


FORMATS = {"torchscript": export_torchscript, "onnx": export_onnx}


def export(bundle: ModelBundle, fmt: str, out: Path, **options: Any) -> Path:
    """The PyTorch engine's ``export`` capability: a bundle to ``torchscript`` or ``onnx``
    (top-down bundles: :mod:`posed.exporters.torch_topdown`)."""
    if "topdown" in bundle.architecture:
        from posed.exporters.torch_topdown import export_topdown

        return export_topdown(bundle, fmt, Path(out), wrapper=FramesToPoseMaps, **options)
    return export_as("pytorch", FORMATS, bundle, fmt, Path(out), options)
