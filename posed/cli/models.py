"""Model commands: export, import-dlc and engines."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from posed.cli.common import (add_model_args, add_out_bundle, add_overwrite, add_source, command,
                              size)
from posed.errors import ConfigError


def _export_options(args: argparse.Namespace) -> dict[str, Any]:
    """``export_model``'s format options from the command line."""
    options: dict[str, Any] = {"overwrite": args.overwrite}
    if args.format == "onnx":
        options.update(opset=args.opset, simplify=not args.no_simplify,
                       precision=args.precision or ("fp16" if args.fp16 else
                       {"static": "int8", "dynamic": "int8-dynamic"}.get(args.int8 or "", "fp32")))
        if args.fixed_size:
            options["fixed_size"] = (args.fixed_size[1], args.fixed_size[0])
    elif args.fp16 or args.int8 or args.fixed_size or args.precision:
        raise ConfigError("--precision/--fp16/--int8/--fixed-size apply to --format onnx, not "
                          f"{args.format}")
    if args.freeze_norm:
        options["freeze_norm"] = True
    if args.calibration is not None or args.calibration_frames is not None:
        options.update(calibration_from=args.calibration,
                       calibration_frames=args.calibration_frames)
    return options


def cmd_export(args: argparse.Namespace) -> int:
    """export a trained model to TorchScript, ONNX or a SavedModel

    Export a project's trained shuffle (or a bundle) into a new model bundle folder. Exported
    graphs take uint8 N×H×W×3 RGB frames. Every export is checked against the native model (on
    the shuffle's test images when exporting from a project) and refused beyond tolerance; the
    measured difference is recorded in the bundle's posed.yaml. Static INT8 is calibrated on the
    project's training images, or on --calibration (a video or a folder of images) for any
    source; without a project the check then runs on other frames of it than those calibrated on.
    --precision auto exports every variant (fp32, static INT8, each with frozen GroupNorm
    statistics where the model has GroupNorm), times each under every runtime installed
    (ONNX Runtime; OpenVINO fp32, and bf16 where the CPU has it) on the check frames, and keeps
    the fastest within 0.5 px median of the native model; the table goes to posed.yaml
    (export.auto) and runners follow the choice unless an engine is named.
    """

    from posed.engines import api
    from posed.engines.bundle import load_bundle

    out = api.export_model(args.source, args.format, args.out, args.engine,
                              shuffle=args.shuffle, snapshot=args.snapshot, **_export_options(args))
    export = load_bundle(out).export
    if "auto" in export:
        from posed.engines.autoprecision import summary

        print(summary(export["auto"]), file=sys.stderr)
    parity = export.get("parity", {})
    if "max_box_px" in parity:  # top-down: each part on its own (exporters/torch_topdown.py)
        print(f"parity with the native model: detector within {parity['max_box_px']:.2g} px "
              f"on {parity['boxes']} boxes, pose model within {parity['max_keypoint_px']:.2g} "
              f"px on {parity['crops']} crops, likelihood within "
              f"{parity['max_score_diff']:.2g}", file=sys.stderr)
        parity = {}
    elif "max_px" not in parity:  # torchscript records one entry per checked input size
        parity = max(parity.values(), key=lambda p: p["max_px"], default={})
    if parity:
        median = (f"median {parity['median_px_confident']:.2g} px, "
                  if "median_px_confident" in parity else "")
        flips = (f"; {parity['tie_flips']} near-tie flips, the rest within "
                 f"{parity['max_px_confident_held']:.2g} px" if parity.get("tie_flips") else "")
        print(f"parity with the native model on {parity['confident_keypoints']} visible "
              f"keypoints: {median}within {parity['max_px_confident']:.2g} px{flips} (all "
              f"keypoints: {parity['max_px']:.2g} px), likelihood within "
              f"{parity['max_likelihood']:.2g}", file=sys.stderr)
    print(out)
    return 0


def add_export(sub: Any) -> None:
    with command(sub, "export", cmd_export) as p:
        add_source(p)
        p.add_argument("--format", required=True, choices=("onnx", "torchscript", "savedmodel"),
                       help="export format: onnx (any engine's model), torchscript (pytorch), "
                       "savedmodel (tensorflow)")
        add_out_bundle(p)
        add_model_args(p)
        p.add_argument("--opset", type=int, default=17, help="ONNX opset")
        p.add_argument("--fixed-size", type=size, help="fix the input size WIDTHxHEIGHT (ONNX; "
                       "default: dynamic height and width)")
        prec = p.add_mutually_exclusive_group()
        prec.add_argument("--precision", choices=("fp32", "fp16", "int8", "int8-dynamic", "auto"),
                          help="ONNX precision (default fp32); auto: the fastest runtime and "
                          "precision on this CPU within 0.5 px median, measured here")
        prec.add_argument("--fp16", action="store_true", help="half precision (for GPUs)")
        prec.add_argument("--int8", nargs="?", const="static", choices=("static", "dynamic"),
                          help="INT8 quantisation for CPUs: static (calibrated on the project's "
                          "training images or on --calibration; the default) or dynamic")
        p.add_argument("--calibration", type=Path, metavar="VIDEO_OR_FOLDER",
                       help="static INT8: calibrate on evenly spaced frames of this video (or "
                       "images of this folder, .png/.jpg) instead of the project's training "
                       "images; needed to export static INT8 from a bundle")
        p.add_argument("--calibration-frames", type=int, metavar="N",
                       help="static INT8: at most N calibration frames (default 32)")
        p.add_argument("--freeze-norm", action="store_true",
                       help="PyTorch GroupNorm models (DeepLabCut 3's resnet_50): fix the "
                       "normalisation statistics, measured on the calibration frames (the "
                       "project's training images or --calibration): faster on CPUs and local, "
                       "so dynamic cropping keeps full-frame keypoints; checked on held-out "
                       "frames by the median distance of visible keypoints (<= 0.5 px)")
        p.add_argument("--no-simplify", action="store_true", help="skip graph simplification")
        add_overwrite(p)


def cmd_import_dlc(args: argparse.Namespace) -> int:
    """convert a DeepLabCut export (3.x .pt or 2.x folder) into a posed bundle

    Convert the .pt written by DeepLabCut 3's export_model (single-animal ResNet heatmap models)
    into a posed bundle folder. The file is read with torch.load(weights_only=True): anything
    that is not plain weights and settings is refused. The bundle predicts DeepLabCut's own
    keypoints and can be exported to ONNX/TorchScript like any other. Given a folder instead, a
    DeepLabCut 2.x TensorFlow export (pose_cfg.yaml + frozen graph .pb) becomes a bundle that
    the tensorflow engine runs.
    """

    from posed.engines import api

    # A folder is a DeepLabCut 2.x TensorFlow export, a file a DeepLabCut 3 .pt; compat
    # names the framework to install when it is missing.
    print(api.import_dlc(args.file, args.out, overwrite=args.overwrite))
    return 0


def add_import_dlc(sub: Any) -> None:
    with command(sub, "import-dlc", cmd_import_dlc) as p:
        p.add_argument("file", type=Path, help="DLC_<task>_<net>_iteration-I_shuffle-K_"
                       "snapshot-N.pt, or a DeepLabCut 2.x exported-models folder")
        add_out_bundle(p)
        add_overwrite(p)


def cmd_engines(args: argparse.Namespace) -> int:
    """list engines and whether they are installed"""

    from posed.engines import api

    for name in api.list_engines():
        state = "available" if api.engine_available(name) else "not installed"
        print(f"{name:12s} {state}")
    return 0


def add_engines(sub: Any) -> None:
    with command(sub, "engines", cmd_engines, formatted=False):
        pass
