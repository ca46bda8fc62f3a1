"""TorchScript export of top-down bundles (detector + pose model on crops).

The bundle keeps its architecture and gets two TorchScript files: ``pose.pt`` (the pose model,
traced at the crop size: uint8 N×H×W×3 crops in, score maps and locref out; for RTMPose float
N×3×H×W in, SimCC logits out) and ``detector.pt`` (torchvision's detector, scripted: a list
of normalised CHW frames in, ``(losses, detections)`` out). Cropping, decoding and mapping
back stay in the shared numpy code (:mod:`posed.engines.topdown`), so both bundles crop alike.
The export runs the original and the exported runner on the same frames and records the
largest keypoint and box-score differences (``export.parity``); beyond the fp32 tolerance it
is an :class:`~posed.errors.ExportMismatchError` and nothing is written.

ONNX is not built yet and is refused in one line (torchvision's detectors do export to ONNX:
a first try on the fixture's seeded Faster R-CNN gave its boxes within 3e-5 px; an ONNX
top-down runner and its parity checks are the next step).
"""

from __future__ import annotations

import tempfile
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from posed.engines.bundle import ModelBundle
from posed.errors import ExportError, ExportMismatchError
from posed.exporters.common import TOLERANCE, staging_parent, write_bundle
from posed.exporters.common import check_frames as _check_frames

__all__ = ["export_topdown", "export_topdown_torchscript"]


def _trace_pose(bundle: ModelBundle, crop: dict[str, int], path: Path,
                wrapper: Callable[[torch.nn.Module], torch.nn.Module]) -> None:
    from posed.engines.pytorch.model import load_state_dict

    arch = {k: v for k, v in bundle.architecture.items()
            if k not in ("topdown", "individuals", "crop")}
    pose_bundle = replace(bundle, architecture=arch, weights=bundle.weights[:1])
    if arch.get("head") == "rtmcc":
        from posed.engines.pytorch.rtmpose import build_model

        model, example = build_model(pose_bundle), torch.zeros(1, 3, crop["height"],
                                                               crop["width"])
    else:
        from posed.engines.pytorch.backend import build_model

        model = wrapper(build_model(pose_bundle))
        example = torch.zeros(1, crop["height"], crop["width"], 3, dtype=torch.uint8)
    target = model.model if hasattr(model, "model") else model
    target.load_state_dict(load_state_dict(bundle.weights_path))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings, TorchScript deprecation notices
        traced = torch.jit.freeze(torch.jit.trace(model.eval(), example, check_trace=False))
        traced.save(str(path))


def _script_detector(bundle: ModelBundle, path: Path) -> None:
    from posed.engines.pytorch.model import load_state_dict
    from posed.engines.pytorch.topdown import build_detector

    detector = build_detector(bundle.architecture["topdown"])
    detector.load_state_dict(load_state_dict(bundle.path / bundle.weights[1]["name"]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(detector.eval()).save(str(path))


def _parity(native: Any, exported: Any, frames: np.ndarray, out: Path) -> dict[str, float]:
    """Largest keypoint (px) and box-score differences of the two runners on ``frames``."""
    want, got = native.predict_animals(frames), exported.predict_animals(frames)
    same_missing = np.array_equal(np.isnan(want.animals[..., 0]), np.isnan(got.animals[..., 0]))
    xy = np.nan_to_num(np.abs(want.animals[..., :2] - got.animals[..., :2]))
    result = {"max_keypoint_px": float(xy.max(initial=0.0)),
              "max_score_diff": float(np.abs(want.animals[..., 2] - got.animals[..., 2]).max(
                  initial=0.0)),
              "max_box_score_diff": float(np.abs(want.scores - got.scores).max(initial=0.0))}
    px, score = TOLERANCE["fp32"]
    if not same_missing or result["max_keypoint_px"] > px or result["max_score_diff"] > score \
            or result["max_box_score_diff"] > score:
        raise ExportMismatchError(f"{out}: the TorchScript export disagrees with the model "
                                  f"({result}, same animals found: {same_missing})")
    return result


def export_topdown_torchscript(bundle: ModelBundle, out: str | Path, *,
                               wrapper: Callable[[torch.nn.Module], torch.nn.Module],
                               check_frames: np.ndarray | None = None,
                               overwrite: bool = False, **options: Any) -> Path:
    """Export a top-down bundle to TorchScript in a new bundle folder ``out`` (see module).
    ``wrapper`` is the PyTorch exporter's frames-to-maps wrapper of a heatmap pose model
    (:class:`posed.exporters.torch.FramesToPoseMaps`, passed in: that module calls this one)."""
    from posed.engines.bundle import load_bundle
    from posed.engines.pytorch.backend import load_runner
    from posed.engines.topdown import crop_settings

    used = {k: v for k, v in options.items()
            if v not in (None, False) and (k, v) != ("precision", "fp32")}
    if used:
        raise ExportError(f"{bundle.path}: option '{next(iter(used))}' does not apply to "
                          "top-down exports (fp32 TorchScript only)")
    out = Path(out)
    frames = _check_frames(check_frames, (240, 320))
    crop = crop_settings(bundle.architecture, bundle.path)
    with tempfile.TemporaryDirectory(dir=staging_parent(out)) as tmp:
        staging = Path(tmp) / "bundle"
        staging.mkdir()
        _trace_pose(bundle, crop, staging / "pose.pt", wrapper)
        _script_detector(bundle, staging / "detector.pt")
        draft = replace(bundle, format="torchscript", weights=[])
        draft.save(staging, ["pose.pt", "detector.pt"])
        native = load_runner(bundle, device="cpu")
        exported = load_runner(load_bundle(staging), device="cpu")
        parity = _parity(native, exported, frames, out)
        export = {"tool": f"torch.jit.trace + torch.jit.script (torch {torch.__version__})",
                  "precision": "fp32", "input": "uint8 NHWC RGB frames (the runner crops)",
                  "parity": {"check_frames": list(frames.shape), **parity}}
        return write_bundle(bundle, staging, out, ["pose.pt", "detector.pt"], engine="pytorch",
                            fmt="torchscript", input_size=None, export=export,
                            overwrite=overwrite)


def export_topdown(bundle: ModelBundle, fmt: str, out: Path, **options: Any) -> Path:
    """The PyTorch engine's export of a top-down bundle: ``torchscript`` only (``options``
    as :func:`export_topdown_torchscript`)."""
    if fmt != "torchscript":
        raise ExportError(f"{bundle.path}: top-down models export to TorchScript only; ONNX "
                          "is not supported yet (not built)")
    return export_topdown_torchscript(bundle, out, **options)
