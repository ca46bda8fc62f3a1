"""TorchScript and ONNX exports of top-down bundles (detector + pose model on crops).

The new bundle keeps the architecture and holds two files, the pose model first:

- TorchScript: ``pose.pt`` (traced at the crop size: uint8 N×H×W×3 crops in, score maps and
  locref out; for RTMPose float N×3×H×W in, SimCC logits out) and ``detector.pt``
  (torchvision's detector, scripted: a list of normalised CHW frames in, ``(losses,
  detections)`` out);
- ONNX: ``pose.onnx`` (uint8 N×H×W×3 crops in, batch dynamic; score maps and locref, or
  RTMPose's ``simcc_x``/``simcc_y`` logits, out) and ``detector.onnx`` (one uint8 1×H×W×3
  frame of any size in, DeepLabCut's normalisation folded in; ``boxes`` (n×4 x, y, w, h frame
  pixels, best first) and ``scores`` out).

Cropping, decoding and mapping back stay in the shared numpy code
(:mod:`posed.engines.topdown`), so every engine crops alike. Each part is checked against the
original: the detector's boxes on the check frames, the pose model on the crops of the
original's boxes and of each whole frame. The largest differences go to ``export.parity``;
beyond the fp32 tolerance the export is an :class:`~posed.errors.ExportMismatchError` and
nothing is written.
"""

from __future__ import annotations

import tempfile
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from posed.engines.bundle import ModelBundle
from posed.errors import ExportError, ExportMismatchError
from posed.exporters.common import DEFAULT_OPSET, TOLERANCE, staging_parent, write_bundle
from posed.exporters.common import check_frames as _check_frames

__all__ = ["FrameToBoxes", "export_topdown"]

PARTS = {"torchscript": ("pose.pt", "detector.pt"), "onnx": ("pose.onnx", "detector.onnx")}


class FrameToBoxes(nn.Module):
    """A torchvision detector taking one uint8 1×H×W×3 frame, normalised as DeepLabCut does
    (``(x - mean·255) · (1 / (std·255))`` in float32, then torchvision's own normalisation),
    returning its boxes as x, y, w, h and their scores."""

    def __init__(self, detector: nn.Module, bundle: ModelBundle) -> None:
        from posed.engines.topdown import detector_normalisation

        super().__init__()
        self.detector = detector
        mean, inv_std = detector_normalisation(bundle)
        self.register_buffer("mean", torch.from_numpy(mean))
        self.register_buffer("inv_std", torch.from_numpy(inv_std))

    def forward(self, frame: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = ((frame[0].float() - self.mean) * self.inv_std).permute(2, 0, 1)
        found = self.detector([x])[0]
        boxes = found["boxes"]
        return torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1), found["scores"]


class FramesToSimCC(nn.Module):
    """An RTMPose network taking uint8 N×H×W×3 crops."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, crops: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model(crops.permute(0, 3, 1, 2).float())


def _pose_module(bundle: ModelBundle, crop: dict[str, int], fmt: str,
                 wrapper: Callable[[nn.Module], nn.Module]) -> tuple[nn.Module, torch.Tensor]:
    """The pose model, weights loaded, as the export takes it, and an example input."""
    from posed.engines.pytorch.model import load_state_dict
    from posed.engines.topdown import pose_bundle

    pose_part = pose_bundle(bundle)
    example = torch.zeros(1, crop["height"], crop["width"], 3, dtype=torch.uint8)
    if pose_part.architecture.get("head") == "rtmcc":
        from posed.engines.pytorch.rtmpose import build_model

        net = build_model(pose_part)
        net.load_state_dict(load_state_dict(bundle.weights_path))
        if fmt == "torchscript":  # SimCCRunner hands it float NCHW crops
            return net.eval(), example.permute(0, 3, 1, 2).float()
        return FramesToSimCC(net).eval(), example
    from posed.engines.pytorch.backend import build_model

    model = wrapper(build_model(pose_part))
    model.model.load_state_dict(load_state_dict(bundle.weights_path))
    return model.eval(), example


def _detector_module(bundle: ModelBundle) -> nn.Module:
    from posed.engines.pytorch.model import load_state_dict
    from posed.engines.pytorch.topdown import build_detector

    detector = build_detector(bundle.architecture["topdown"])
    detector.load_state_dict(load_state_dict(bundle.path / bundle.weights[1]["name"]))
    return detector.eval()


def _write_torchscript(bundle: ModelBundle, crop: dict[str, int], staging: Path,
                       wrapper: Callable[[nn.Module], nn.Module], opset: int) -> str:
    pose, example = _pose_module(bundle, crop, "torchscript", wrapper)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings, TorchScript deprecation notices
        traced = torch.jit.freeze(torch.jit.trace(pose, example, check_trace=False))
        traced.save(str(staging / "pose.pt"))
        torch.jit.script(_detector_module(bundle)).save(str(staging / "detector.pt"))
    return f"torch.jit.trace + torch.jit.script (torch {torch.__version__})"


def _write_onnx(bundle: ModelBundle, crop: dict[str, int], staging: Path,
                wrapper: Callable[[nn.Module], nn.Module], opset: int) -> str:
    import onnx

    pose, example = _pose_module(bundle, crop, "onnx", wrapper)
    outputs = ["simcc_x", "simcc_y"] if isinstance(pose, FramesToSimCC) else ["scores", "locref"]
    detector = FrameToBoxes(_detector_module(bundle), bundle).eval()
    frame = torch.zeros(1, 240, 320, 3, dtype=torch.uint8)
    graphs = [(pose, example, "pose.onnx", ["crops"], outputs,
               {"crops": {0: "batch"}, **{name: {0: "batch"} for name in outputs}}),
              (detector, frame, "detector.onnx", ["frame"], ["boxes", "scores"],
               {"frame": {1: "height", 2: "width"}, "boxes": {0: "boxes"},
                "scores": {0: "boxes"}})]
    for module, x, name, inputs, outs, dynamic in graphs:
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # exporter notices; parity is checked instead
                torch.onnx.export(module, (x,), str(staging / name), input_names=inputs,
                                  output_names=outs, dynamic_axes=dynamic, opset_version=opset,
                                  dynamo=False, do_constant_folding=True)
        except Exception as exc:  # the exporter raises many internal error types
            raise ExportError(f"{bundle.path}: ONNX export of the {name.split('.')[0]} failed "
                              f"({str(exc).splitlines()[0]})") from exc
        onnx.checker.check_model(str(staging / name))
    return f"torch.onnx.export (TorchScript-based, torch {torch.__version__}), opset {opset}"


SCORE_TIE = 1e-4  # scores this close are the same score in another runtime's arithmetic


def _matched_box_px(w_boxes: np.ndarray, w_scores: np.ndarray, g_boxes: np.ndarray,
                    g_scores: np.ndarray) -> float:
    """The largest distance from a native box to the nearest exported box of the same score.
    Boxes with tied scores (common in untrained detectors) come in either order, so slot
    order is not compared; a native box with no exported box of its score is infinitely far."""
    worst = 0.0
    for box, score in zip(w_boxes, w_scores):
        same = np.abs(g_scores - score) <= SCORE_TIE
        if not same.any():
            return float("inf")
        worst = max(worst, float(np.abs(g_boxes[same] - box).max(axis=1).min()))
    return worst


def _score_cut(detector: nn.Module) -> tuple[float, int]:
    """A torchvision detector's score threshold and most boxes per image."""
    heads = getattr(detector, "roi_heads", detector)  # Faster R-CNN keeps them in roi_heads
    return float(heads.score_thresh), int(heads.detections_per_img)


def _decided(want: tuple[np.ndarray, np.ndarray], got: tuple[np.ndarray, np.ndarray],
             cut: tuple[float, int]) -> tuple[tuple[np.ndarray, np.ndarray],
                                               tuple[np.ndarray, np.ndarray], int]:
    """Both runtimes' boxes of one frame without those at a cut, and how many were dropped.
    A box scoring within :data:`SCORE_TIE` of the score threshold, or of the lowest score
    kept when a runtime returned its most boxes, is kept by one runtime and not the other by
    float rounding alone (common in SSDLite, whose threshold is 0.001): no export error."""
    thresh, most = cut
    floor = thresh + SCORE_TIE
    if most in (len(want[1]), len(got[1])):
        floor = max(floor, min(want[1].min(initial=1.0), got[1].min(initial=1.0)) + SCORE_TIE)
    keep_w, keep_g = want[1] > floor, got[1] > floor
    dropped = int((~keep_w).sum() + (~keep_g).sum())
    return (want[0][keep_w], want[1][keep_w]), (got[0][keep_g], got[1][keep_g]), dropped


def _parity(native: Any, exported: Any, frames: np.ndarray, out: Path, fmt: str
            ) -> dict[str, Any]:
    """Each part of the two runners on the same input: the detector's boxes on ``frames``
    (all it returns but those at a cut, see :func:`_decided`), the pose model on the crops of
    the native kept boxes and of every whole frame."""
    from posed.engines.topdown import crop_box

    # every box the detector returns, not only those kept for the animal slots: a tie in
    # score at the slot cut would otherwise keep different boxes
    cut = _score_cut(native.detector)
    decided = [_decided(w, g, cut) for w, g in zip(native._detect(frames),
                                                    exported._detect(frames))]
    want, got = [d[0] for d in decided], [d[1] for d in decided]
    same_boxes = [len(w[0]) for w in want] == [len(g[0]) for g in got]
    box_px = box_score = 0.0
    crops = []
    slots = len(native.individuals)
    for frame, (w_boxes, w_scores), (g_boxes, g_scores) in zip(frames, want, got):
        if same_boxes and len(w_boxes):
            box_px = max(box_px, _matched_box_px(w_boxes, w_scores, g_boxes, g_scores))
            box_score = max(box_score, float(np.abs(w_scores - g_scores).max()))
        whole = np.array([0, 0, frame.shape[1], frame.shape[0]], np.float32)
        crops += [crop_box(frame, box, native.crop["width"], native.crop["height"],
                           native.crop["margin"])[0] for box in [whole, *w_boxes[:slots]]]
    crops = np.stack(crops)
    want_kp, got_kp = native.pose_crops(crops), exported.pose_crops(crops)
    same_missing = np.array_equal(np.isnan(want_kp[..., 0]), np.isnan(got_kp[..., 0]))
    result = {"check_frames": list(frames.shape), "boxes": sum(len(w[0]) for w in want),
              "boxes_at_cut": sum(d[2] for d in decided),
              "max_box_px": box_px, "max_box_score_diff": box_score, "crops": len(crops),
              "max_keypoint_px": float(np.nan_to_num(
                  np.abs(want_kp[..., :2] - got_kp[..., :2])).max(initial=0.0)),
              "max_score_diff": float(np.abs(want_kp[..., 2] - got_kp[..., 2]).max(initial=0.0))}
    px, score = TOLERANCE["fp32"]
    if not (same_boxes and same_missing) or max(box_px, result["max_keypoint_px"]) > px \
            or max(box_score, result["max_score_diff"]) > score:
        raise ExportMismatchError(f"{out}: the {fmt} export disagrees with the model "
                                  f"({result}; same boxes found: {same_boxes}, same keypoints "
                                  f"missing: {same_missing})")
    return result


def export_topdown(bundle: ModelBundle, fmt: str, out: Path, *,
                   wrapper: Callable[[nn.Module], nn.Module],
                   check_frames: np.ndarray | None = None, overwrite: bool = False,
                   opset: int = DEFAULT_OPSET, **options: Any) -> Path:
    """Export a top-down bundle to ``torchscript`` or ``onnx`` (fp32) in a new bundle folder
    ``out`` (see module). ``wrapper`` is the PyTorch exporter's frames-to-maps wrapper of a
    heatmap pose model (:class:`posed.exporters.torch.FramesToPoseMaps`, passed in: that module
    calls this one); ``opset`` applies to ONNX."""
    from posed.engines.bundle import load_bundle
    from posed.engines.onnx.backend import OnnxTopDownRunner
    from posed.engines.pytorch.backend import load_runner
    from posed.engines.topdown import crop_settings

    if fmt not in PARTS:
        raise ExportError(f"{bundle.path}: top-down models export to torchscript or onnx, "
                          f"not {fmt}")
    used = {k: v for k, v in options.items()
            if v not in (None, False) and (k, v) not in (("precision", "fp32"), ("simplify", True))}
    if used:
        raise ExportError(f"{bundle.path}: option '{next(iter(used))}' does not apply to "
                          "top-down exports (fp32 only, any frame size)")
    out = Path(out)
    frames = _check_frames(check_frames, (240, 320))
    crop = crop_settings(bundle.architecture, bundle.path)
    write, engine = (_write_onnx, "onnx") if fmt == "onnx" else (_write_torchscript, "pytorch")
    with tempfile.TemporaryDirectory(dir=staging_parent(out)) as tmp:
        staging = Path(tmp) / "bundle"
        staging.mkdir()
        tool = write(bundle, crop, staging, wrapper, opset)
        replace(bundle, engine=engine, format=fmt, weights=[]).save(staging, list(PARTS[fmt]))
        native = load_runner(bundle, device="cpu")
        exported = (OnnxTopDownRunner.load(load_bundle(staging), device="cpu") if fmt == "onnx"
                    else load_runner(load_bundle(staging), device="cpu"))
        export = {"tool": tool, "precision": "fp32",
                  "input": "uint8 NHWC RGB frames (the runner crops)",
                  "parity": _parity(native, exported, frames, out, fmt)}
        if fmt == "onnx":
            export["opset"] = opset
        return write_bundle(bundle, staging, out, list(PARTS[fmt]),
                            engine=engine, fmt=fmt,
                            input_size=None, export=export, overwrite=overwrite)
