"""The ``posed`` command line.

Each sub-command is thin: parse arguments, build settings, call the library. Any
:class:`~posed.errors.PosedError` is printed as one ``error: ...`` line on stderr and turned
into a non-zero exit status (2 for configuration errors, 1 otherwise); ``--debug`` or
``POSED_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Callable, Sequence

import posed
from posed.errors import ConfigError, PosedError

log = logging.getLogger("posed")

EPILOG = "Docs: README.md. Errors print one line; add --debug for a traceback."


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got '{text}'") from None
    if w < 16 or h < 16:
        raise argparse.ArgumentTypeError(f"size {text} is too small (minimum 16x16)")
    return w, h


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got '{text}'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _snapshot(text: str) -> int | str:
    return text if text == "last" else _positive(text)


# ----------------------------------------------------------------------------- commands

def cmd_synth(args: argparse.Namespace) -> int:
    from posed.engines.synth import generate_project

    bodyparts = [b.strip() for b in args.bodyparts.split(",") if b.strip()]
    if args.animals is not None:
        from posed.engines.synth import generate_multianimal_project

        cfg = generate_multianimal_project(
            args.out, animals=args.animals, frames=args.frames, size=args.size,
            bodyparts=bodyparts, seed=args.seed, video_frames=args.video_frames,
            progress=not args.quiet)
        print(cfg)
        return 0
    cfg = generate_project(args.out, frames=args.frames, size=args.size, bodyparts=bodyparts,
                           seed=args.seed, video_frames=args.video_frames, progress=not args.quiet)
    print(cfg)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from posed.engines import compat
    from posed.engines.project import load_project

    project = load_project(args.project)
    overrides = {
        "net": args.net, "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
        "output_stride": args.output_stride, "save_every": args.save_every, "seed": args.seed,
        "crop": list(args.crop) if args.crop else None, "num_workers": args.workers,
        "pretrained": args.pretrained,
    }
    if args.pretrained in ("true", "imagenet"):
        overrides["pretrained"] = True
    compat.create_training_dataset(project, args.shuffle, train_fraction=args.train_fraction)
    folder = compat.train_network(project, args.shuffle, args.engine, overrides,
                                  progress=not args.quiet, resume=args.resume,
                                  overwrite=args.overwrite)
    print(folder)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from posed.engines import compat
    from posed.engines.project import load_project

    project = load_project(args.project)
    result = compat.evaluate_network(project, args.shuffle, args.engine, snapshot=args.snapshot,
                                     pcutoff=args.pcutoff, pck_px=args.pck, plots=args.plots)
    print(f"evaluation of {project.name} shuffle {args.shuffle} "
          f"(pcutoff {result.pcutoff}, PCK within {result.pck_px} px)")
    print(result.format())
    print(f"written to {result.folder}")
    return 0


def _report(report: object, kind: str) -> int:
    for path in report.outputs:  # type: ignore[attr-defined]
        print(path)
    for path, why in report.failed:  # type: ignore[attr-defined]
        print(f"error: {why}" if str(path) in why else f"error: {path}: {why}", file=sys.stderr)
    fps = report.frames / report.seconds if report.seconds else 0.0  # type: ignore[attr-defined]
    skipped = len(getattr(report, "skipped", []))
    where = getattr(report, "where", "")
    print(f"{len(report.outputs) - skipped} {kind} analysed, {report.frames} frames, "  # type: ignore[attr-defined]
          f"{fps:.1f} frames/s, {skipped} already done, {len(report.failed)} failed"  # type: ignore[attr-defined]
          + (f" ({where})" if where else ""), file=sys.stderr)
    if not report.outputs and not report.failed:  # type: ignore[attr-defined]
        raise ConfigError("no input files found")
    return 1 if report.failed else 0  # type: ignore[attr-defined]


def cmd_analyze(args: argparse.Namespace) -> int:
    from posed.engines import compat

    scale: dict = {}
    if args.cluster is not None:
        if args.workers > 1:
            raise ConfigError("--workers and --cluster exclude each other (Ray places the tasks)")
        scale = {"cluster": args.cluster, "task_gpus": args.task_gpus}
        if args.task_cpus is not None:
            scale["task_cpus"] = args.task_cpus
    elif args.task_cpus is not None or args.task_gpus is not None:
        raise ConfigError("--task-cpus/--task-gpus apply to --cluster")
    elif args.workers > 1:
        scale = {"workers": args.workers}
    report = compat.analyze_videos(args.source, args.videos, args.engine, shuffle=args.shuffle,
                                   snapshot=args.snapshot, dest=args.dest, csv=args.csv,
                                   batch_size=args.batch_size, progress=not args.quiet,
                                   overwrite=args.overwrite, runner_options={"device": args.device},
                                   **scale)
    return _report(report, "videos")


def cmd_create_tracking_dataset(args: argparse.Namespace) -> int:
    from posed.engines import compat

    result = compat.create_tracking_dataset(
        args.source, args.videos, args.engine, shuffle=args.shuffle, snapshot=args.snapshot,
        out=args.out, size=args.crop_size, window=args.window, batch_size=args.batch_size,
        train_reid=args.train_reid, reid_options={"epochs": args.epochs} if args.epochs else None,
        progress=not args.quiet, runner_options={"device": args.device})
    for path in result.values():
        print(path)
    return 0


def cmd_analyze_images(args: argparse.Namespace) -> int:
    from posed.engines import compat

    report = compat.analyze_images(args.source, args.images, args.engine, shuffle=args.shuffle,
                                   snapshot=args.snapshot, dest=args.dest, csv=args.csv,
                                   progress=not args.quiet)
    return _report(report, "image folders")


def cmd_export(args: argparse.Namespace) -> int:
    from posed.engines import compat

    options: dict = {"overwrite": args.overwrite}
    if args.format == "onnx":
        options.update(opset=args.opset, simplify=not args.no_simplify,
                       precision="fp16" if args.fp16 else
                       {"static": "int8", "dynamic": "int8-dynamic"}.get(args.int8 or "", "fp32"))
        if args.fixed_size:
            options["fixed_size"] = (args.fixed_size[1], args.fixed_size[0])
    elif args.fp16 or args.int8 or args.fixed_size:
        raise ConfigError(f"--fp16/--int8/--fixed-size apply to --format onnx, not {args.format}")
    out = compat.export_model(args.source, args.format, args.out, args.engine,
                              shuffle=args.shuffle, snapshot=args.snapshot, **options)
    from posed.engines.bundle import load_bundle

    parity = load_bundle(out).export.get("parity", {})
    if "max_px" not in parity:  # torchscript records one entry per checked input size
        parity = max(parity.values(), key=lambda p: p["max_px"], default={})
    if parity:
        print(f"parity with the native model on {parity['confident_keypoints']} visible "
              f"keypoints: within {parity['max_px_confident']:.2g} px (all keypoints: "
              f"{parity['max_px']:.2g} px), likelihood within {parity['max_likelihood']:.2g}",
              file=sys.stderr)
    print(out)
    return 0


def cmd_import_dlc(args: argparse.Namespace) -> int:
    from posed.engines.compat import get_backend

    if args.file.is_dir():  # a DeepLabCut 2.x TensorFlow export folder
        get_backend("tensorflow")  # a clear install hint when TensorFlow is missing
        from posed.engines.tensorflow.dlc2 import import_dlc_tensorflow

        print(import_dlc_tensorflow(args.file, args.out, overwrite=args.overwrite))
        return 0
    get_backend("pytorch")  # a clear install hint when torch is missing
    from posed.exporters.dlc import import_dlc_pytorch

    print(import_dlc_pytorch(args.file, args.out, overwrite=args.overwrite))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from posed.daemon.config import load_config
    from posed.daemon.service import serve

    cfg = load_config(args.config)
    if not args.debug:
        logging.getLogger().setLevel(cfg.log_level.upper())
    return serve(cfg)


def cmd_config_check(args: argparse.Namespace) -> int:
    from posed.daemon.service import check_config

    print(check_config(args.file))
    return 0


def _curve_client(args: argparse.Namespace) -> object | None:
    if not (args.client_key or args.server_key):
        return None
    if not (args.client_key and args.server_key):
        raise ConfigError("CurveZMQ needs both --client-key and --server-key")
    from posed.daemon.keys import CurveClient

    return CurveClient(args.client_key, args.server_key)


def cmd_listen(args: argparse.Namespace) -> int:
    from posed.daemon.client import listen

    n = listen(args.endpoint, csv=args.csv, h5=args.h5, count=args.count, timeout_s=args.timeout,
               cameras=args.camera or None, curve=_curve_client(args))
    print(f"{n} poses received", file=sys.stderr)
    return 0 if n or args.timeout is None else 1


def cmd_keys_generate(args: argparse.Namespace) -> int:
    from posed.daemon.keys import generate_keys

    public, secret = generate_keys(args.dir, args.name)
    print(f"public key: {public}\nsecret key: {secret} (keep it private)")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from posed import bench

    if args.list:
        for name, what in bench.list_cases():
            print(f"{name:10s} {what}")
        return 0
    opts = bench.BenchOptions(seconds=args.seconds, size=args.size, nets=tuple(args.net or ()),
                              batches=tuple(args.batch or (1, 8)),
                              **({"model": args.model} if args.model else {}))
    known = dict(bench.list_cases())
    unknown = [c for c in args.case or [] if c not in known]
    if unknown:
        raise ConfigError(f"unknown bench case '{unknown[0]}' (cases: {', '.join(known)})")
    record = bench.run(args.case, opts)
    table = bench.to_markdown(record)
    if args.out:
        import json

        from posed.engines.io import atomic_write_text

        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out, json.dumps(record, indent=2) + "\n")
        atomic_write_text(args.out.with_suffix(".md"), table)
    print(table, end="")
    return 0


def cmd_filter(args: argparse.Namespace) -> int:
    from posed.engines.offline.analyze import expand_inputs
    from posed.engines.offline.filtering import filter_file

    found = [p for p in expand_inputs(args.files, (".h5", ".csv"))
             if not p.stem.endswith(("_filtered", "_meta"))]
    # A table analysed with --csv exists twice; filter the h5 once.
    files = [p for p in found if p.suffix != ".csv" or p.with_suffix(".h5") not in found]
    if not files:
        raise ConfigError("no analysed .h5/.csv files found")
    failed = 0
    for path in files:
        try:
            print(filter_file(path, args.method, csv=args.csv, window=args.window,
                              order=args.order, p_bound=args.p_bound, fps=args.fps))
        except PosedError as exc:
            if isinstance(exc, ConfigError):
                raise
            print(f"error: {exc}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


def _table_for(video: Path, filtered: bool) -> Path:
    tables = sorted(p for p in video.parent.glob(f"{video.stem}*.h5")
                    if p.stem.endswith("_filtered") == filtered)
    if len(tables) != 1:
        what = "no" if not tables else f"{len(tables)}"
        raise ConfigError(f"{video}: {what} {'filtered ' if filtered else ''}pose tables beside it "
                          "(analyse it first, or pass --table)")
    return tables[0]


def cmd_label_video(args: argparse.Namespace) -> int:
    from posed.engines.offline.labelvideo import label_video

    skeleton: list[tuple[str, str]] = []
    pcutoff = args.pcutoff
    if args.project:
        from posed.engines.project import load_project

        project = load_project(args.project)
        skeleton = list(project.skeleton)
        pcutoff = project.pcutoff if pcutoff is None else pcutoff
    for pair in (args.skeleton or "").split(","):
        if pair.strip():
            a, sep, b = pair.partition("-")
            if not sep:
                raise ConfigError(f"--skeleton: '{pair}' is not PART-PART")
            skeleton.append((a.strip(), b.strip()))
    for video in args.videos:
        table = args.table or _table_for(video, args.filtered)
        print(label_video(video, table, pcutoff=0.6 if pcutoff is None else pcutoff,
                          skeleton=skeleton))
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from posed.engines.offline.analyze import expand_inputs
    from posed.engines.offline.plotting import plot_poses, require_matplotlib

    require_matplotlib()
    found = [p for p in expand_inputs(args.tables, (".h5", ".csv")) if not p.stem.endswith("_meta")]
    tables = [p for p in found if p.suffix != ".csv" or p.with_suffix(".h5") not in found]
    bodyparts = [b.strip() for b in (args.bodyparts or "").split(",") if b.strip()]
    failed = 0
    for table in tables:
        out = args.out if args.out is None or len(tables) == 1 else args.out / table.stem
        try:
            for png in plot_poses(table, out, pcutoff=args.pcutoff, bodyparts=bodyparts or None):
                print(png)
        except PosedError as exc:
            if isinstance(exc, ConfigError):
                raise
            print(f"error: {exc}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


def cmd_export_nwb(args: argparse.Namespace) -> int:
    import datetime as dt

    from posed.engines.offline.nwb import export_nwb

    start = None
    if args.session_start:
        try:
            start = dt.datetime.fromisoformat(args.session_start)
        except ValueError:
            raise ConfigError(f"--session-start: '{args.session_start}' is not an ISO 8601 "
                              "date/time") from None
    if args.out.exists() and not args.overwrite:
        raise ConfigError(f"{args.out}: exists (add --overwrite to replace it)")
    print(export_nwb(args.table, args.out, video=args.video, fps=args.fps,
                     session_description=args.session_description, session_start=start,
                     subject_id=args.subject_id))
    return 0


def cmd_engines(args: argparse.Namespace) -> int:
    from posed.engines import compat

    for name in compat.list_engines():
        state = "available" if compat.engine_available(name) else "not installed"
        print(f"{name:12s} {state}")
    return 0


# ----------------------------------------------------------------------------- parser

def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars, fewer logs")


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--engine", help="engine: pytorch|torch, tensorflow|tf, onnx "
                   "(default: the bundle's, else the project's 'engine', else pytorch)")
    p.add_argument("--shuffle", type=_positive, default=1, help="shuffle number (default 1)")
    p.add_argument("--snapshot", type=_snapshot, default=None,
                   help="snapshot epoch to use, or 'last' (default)")


def build_parser() -> argparse.ArgumentParser:
    """The ``posed`` argument parser with every sub-command."""
    parser = argparse.ArgumentParser(
        prog="posed", description="Pose estimation for animal behaviour labs: train and analyse "
        "DeepLabCut projects offline; stream poses live.", epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"posed {posed.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    fmt = argparse.ArgumentDefaultsHelpFormatter

    p = sub.add_parser("synth", formatter_class=fmt, epilog=EPILOG,
                       help="write a synthetic DeepLabCut project with known keypoints",
                       description="Render animal-like shapes with exact keypoints into a complete "
                       "DeepLabCut project (config.yaml, labelled PNG frames, CollectedData "
                       "h5+csv, a short H.264 video and its ground truth).")
    p.add_argument("out", type=Path, help="project folder to create (must not exist or be empty)")
    p.add_argument("--frames", type=_positive, default=60, help="labelled frames")
    p.add_argument("--video-frames", type=_positive, default=60, help="frames in the video")
    p.add_argument("--size", type=_size, default=(128, 128), help="frame size WIDTHxHEIGHT")
    p.add_argument("--bodyparts", default="snout,leftear,rightear,tailbase",
                   help="comma-separated body part names")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--animals", type=_positive, metavar="N",
                   help="write a multi-animal project with N animals that cross and occlude "
                   "one another (individuals individual1..N; truth CSV with identities)")
    _common(p)
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("train", formatter_class=fmt, epilog=EPILOG, help="train a pose model",
                       description="Train a model on a DeepLabCut project. Creates the train/test "
                       "split of the shuffle if missing, writes snapshots and learning_stats.csv to "
                       "posed-models-<engine>/iteration-N/<task><date>-trainsetPPshuffleK/train/, "
                       "which is itself a model bundle. Settings: defaults < <model folder>/"
                       "train_config.yaml < these options.")
    p.add_argument("project", help="project folder or its config.yaml")
    _model_args(p)
    p.add_argument("--net", help="backbone: resnet_50, resnet_18, mobilenet_v2_1.0, "
                   "mobilenet_v2_0.35, efficientnet_b0 (default: project default_net_type)")
    p.add_argument("--epochs", type=_positive, help="training epochs (default 50)")
    p.add_argument("--batch-size", type=_positive, help="batch size (default: project batch_size)")
    p.add_argument("--lr", type=float, help="peak learning rate (default 1e-3)")
    p.add_argument("--output-stride", type=int, choices=(8, 16, 32), help="backbone stride (default 16)")
    p.add_argument("--crop", type=_size, help="train on random WIDTHxHEIGHT crops around the animal")
    p.add_argument("--save-every", type=_positive, help="snapshot interval in epochs (default 10)")
    p.add_argument("--seed", type=int, help="random seed (default 0)")
    p.add_argument("--workers", type=int, help="data-loading worker processes (default 0)")
    p.add_argument("--train-fraction", type=float, help="fraction of images for training "
                   "(default: project TrainingFraction)")
    p.add_argument("--pretrained", help="'imagenet' for timm ImageNet weights (needs internet) "
                   "or a local backbone weights file")
    p.add_argument("--resume", action="store_true", help="continue from the newest snapshot")
    p.add_argument("--overwrite", action="store_true", help="delete this shuffle's snapshots first")
    _common(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", formatter_class=fmt, epilog=EPILOG,
                       help="pixel error, PCK and likelihood statistics on train and test images",
                       description="Evaluate a trained shuffle on its train and test images: mean "
                       "pixel error per body part (all, and above pcutoff), PCK and the fraction "
                       "above pcutoff. Writes evaluation/snapshot-NNN/errors.csv and predictions.")
    p.add_argument("project", help="project folder or its config.yaml")
    _model_args(p)
    p.add_argument("--pcutoff", type=float, help="likelihood cutoff (default: project pcutoff)")
    p.add_argument("--pck", type=float, default=5.0, help="PCK distance threshold in pixels")
    p.add_argument("--plots", action="store_true", help="also write error-per-bodypart.png and "
                   "test-images/ (labels and predictions drawn on each test image); needs the "
                   "'plots' extra")
    _common(p)
    p.set_defaults(func=cmd_evaluate)

    for name, kind in (("analyze", "videos"), ("analyze-images", "images")):
        p = sub.add_parser(
            name, formatter_class=fmt, epilog=EPILOG,
            help=f"poses for {kind} into DeepLabCut-compatible h5/csv",
            description=(
                "Analyse videos (files, folders or globs) with a project's trained model or a "
                "model bundle; writes <video><scorer>.h5 (+ .csv) and <video><scorer>_meta.json "
                "beside each video (or in --dest). A video that cannot be read is reported and "
                "skipped; the exit status is 1 if any failed." if kind == "videos" else
                "Poses for still images (files, folders or globs): one <folder><scorer>.h5 per "
                "folder, row index = image path as given."))
        p.add_argument("source", help="project folder/config.yaml, or a model bundle folder")
        p.add_argument(kind, nargs="+", help=f"{kind}, folders or glob patterns")
        _model_args(p)
        p.add_argument("--dest", type=Path, help="write outputs here instead of beside the inputs")
        p.add_argument("--csv", action="store_true", help="also write a .csv")
        if kind == "videos":
            p.add_argument("--batch-size", type=_positive, default=8, help="frames per batch")
            p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
            p.add_argument("--overwrite", action="store_true",
                           help="redo videos whose output exists for the same model and settings "
                           "(by default they are skipped, so an interrupted run can be resumed)")
            p.add_argument("--workers", type=_positive, default=1,
                           help="analyse this many videos at once in worker processes, each "
                           "with cores/N inference threads (1: in this process)")
            p.add_argument("--cluster", metavar="ADDRESS",
                           help="run one Ray task per video: 'auto' (the running cluster: "
                           "RAY_ADDRESS or 'ray start'), 'local' (a new Ray instance here), or "
                           "host:port / ray://host:port; videos, model and --dest must be at "
                           "the same paths on every node (needs the 'cluster' extra)")
            p.add_argument("--task-cpus", type=float, help="CPUs each Ray task asks for "
                           "(default 1; also its inference threads)")
            p.add_argument("--task-gpus", type=float, help="GPUs each Ray task asks for "
                           "(default 1 with --device cuda*, else 0; 0.5 packs two per GPU)")
        _common(p)
        p.set_defaults(func=cmd_analyze if kind == "videos" else cmd_analyze_images)

    p = sub.add_parser(
        "create-tracking-dataset", formatter_class=fmt, epilog=EPILOG,
        help="animal crops from tracklets for re-identification (multi-animal models)",
        description="Assemble and track the animals of the videos with a multi-animal model, "
        "and write every tracked detection as a crop labelled with its tracklet, stitched "
        "identity, frame and video to one .npz (default <bundle>/reid/tracking_dataset.npz; "
        "no pickle). With --train-reid, also train the re-identification model (triplet loss) "
        "into <bundle>/reid/, which `posed analyze` then uses when stitching tracklets.")
    p.add_argument("source", help="project folder/config.yaml, or a model bundle folder")
    p.add_argument("videos", nargs="+", help="videos, folders or glob patterns")
    _model_args(p)
    p.add_argument("--out", type=Path, help="the .npz to write")
    p.add_argument("--crop-size", type=_positive, default=32, help="crop side in the dataset, px")
    p.add_argument("--window", type=_positive, help="crop side in the video, px (default: twice "
                   "the animals' median extent)")
    p.add_argument("--batch-size", type=_positive, default=8, help="frames per batch")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--train-reid", action="store_true", help="train the ReID model on it")
    p.add_argument("--epochs", type=_positive, help="ReID training epochs (default 10)")
    _common(p)
    p.set_defaults(func=cmd_create_tracking_dataset)

    p = sub.add_parser("export", formatter_class=fmt, epilog=EPILOG,
                       help="export a trained model to TorchScript, ONNX or a SavedModel",
                       description="Export a project's trained shuffle (or a bundle) into a new "
                       "model bundle folder. Exported graphs take uint8 N×H×W×3 RGB frames. Every "
                       "export is checked against the native model (on the shuffle's test images "
                       "when exporting from a project) and refused beyond tolerance; the measured "
                       "difference is recorded in the bundle's posed.yaml.")
    p.add_argument("source", help="project folder/config.yaml, or a model bundle folder")
    p.add_argument("--format", required=True, choices=("onnx", "torchscript", "savedmodel"),
                   help="export format: onnx (any engine's model), torchscript (pytorch), "
                   "savedmodel (tensorflow)")
    p.add_argument("--out", type=Path, required=True, help="bundle folder to create")
    _model_args(p)
    p.add_argument("--opset", type=int, default=17, help="ONNX opset")
    p.add_argument("--fixed-size", type=_size, help="fix the input size WIDTHxHEIGHT (ONNX; "
                   "default: dynamic height and width)")
    prec = p.add_mutually_exclusive_group()
    prec.add_argument("--fp16", action="store_true", help="half precision (for GPUs)")
    prec.add_argument("--int8", nargs="?", const="static", choices=("static", "dynamic"),
                      help="INT8 quantisation for CPUs: static (calibrated on the project's "
                      "training images; the default) or dynamic")
    p.add_argument("--no-simplify", action="store_true", help="skip graph simplification")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    _common(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("import-dlc", formatter_class=fmt, epilog=EPILOG,
                       help="convert a DeepLabCut export (3.x .pt or 2.x folder) into a posed bundle",
                       description="Convert the .pt written by DeepLabCut 3's export_model "
                       "(single-animal ResNet heatmap models) into a posed bundle folder. The file "
                       "is read with torch.load(weights_only=True): anything that is not plain "
                       "weights and settings is refused. The bundle predicts DeepLabCut's own "
                       "keypoints and can be exported to ONNX/TorchScript like any other. Given a "
                       "folder instead, a DeepLabCut 2.x TensorFlow export (pose_cfg.yaml + frozen "
                       "graph .pb) becomes a bundle that the tensorflow engine runs.")
    p.add_argument("file", type=Path, help="DLC_<task>_<net>_iteration-I_shuffle-K_snapshot-N.pt, "
                   "or a DeepLabCut 2.x exported-models folder")
    p.add_argument("--out", type=Path, required=True, help="bundle folder to create")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    _common(p)
    p.set_defaults(func=cmd_import_dlc)

    p = sub.add_parser("serve", formatter_class=fmt, epilog=EPILOG,
                       help="run the streaming daemon (capture -> inference -> ZeroMQ)",
                       description="Serve poses from cameras or files over ZeroMQ with Prometheus "
                       "metrics, as configured in FILE (see configs/). Sends sd_notify READY/WATCHDOG/"
                       "STATUS under systemd. SIGTERM/SIGINT stop it cleanly.")
    p.add_argument("--config", required=True, type=Path, help="daemon config YAML")
    _common(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("config", help="validate daemon configs")
    config_sub = p.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    c = config_sub.add_parser("check", formatter_class=fmt, epilog=EPILOG,
                              help="validate a daemon config without starting",
                              description="Validate FILE (unknown keys and wrong types are errors "
                              "naming the key), load its model bundle (hashes checked) and hook, and "
                              "print a summary.")
    c.add_argument("file", type=Path)
    _common(c)
    c.set_defaults(func=cmd_config_check)

    p = sub.add_parser("listen", formatter_class=fmt, epilog=EPILOG,
                       help="subscribe to a daemon's poses: print them or record csv/h5",
                       description="Subscribe to a posed daemon. Prints one line per pose, or records "
                       "DeepLabCut-format tables with --csv/--h5 (one file per camera when several).")
    p.add_argument("--endpoint", default="tcp://127.0.0.1:5555", help="daemon's ZeroMQ endpoint")
    rec = p.add_mutually_exclusive_group()
    rec.add_argument("--csv", type=Path, help="record to this CSV file")
    rec.add_argument("--h5", type=Path, help="record to this h5 file")
    p.add_argument("--camera", action="append", help="only this camera (repeatable)")
    p.add_argument("--count", type=_positive, help="stop after N poses")
    p.add_argument("--timeout", type=float, help="stop after S seconds")
    p.add_argument("--client-key", type=Path, help="CurveZMQ client secret key file")
    p.add_argument("--server-key", type=Path, help="CurveZMQ server public key file")
    _common(p)
    p.set_defaults(func=cmd_listen)

    p = sub.add_parser("keys", help="CurveZMQ key pairs")
    keys_sub = p.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    k = keys_sub.add_parser("generate", formatter_class=fmt, epilog=EPILOG,
                            help="write a CurveZMQ key pair",
                            description="Write NAME.key (public) and NAME.key_secret (private, mode "
                            "0600) into DIR. Give the server's public key to clients; put clients' "
                            "public keys in the daemon's publisher.curve.allowed_clients folder.")
    k.add_argument("dir", type=Path)
    k.add_argument("--name", default="server", help="key pair name")
    _common(k)
    k.set_defaults(func=cmd_keys_generate)

    p = sub.add_parser("bench", formatter_class=fmt, epilog=EPILOG,
                       help="run the performance suite (engine, decode, pipeline, ...)",
                       description="Run named benchmark cases (all by default) and print a "
                       "Markdown table; with --out also write the full record (machine, versions, "
                       "config, every figure) as JSON and the table beside it as .md.")
    p.add_argument("--case", action="append", metavar="NAME", help="run this case (repeatable)")
    p.add_argument("--list", action="store_true", help="list the cases and exit")
    p.add_argument("--out", type=Path, help="write the JSON record here (+ a .md beside it)")
    p.add_argument("--model", type=Path, help="model bundle (default: the demo model); engine, "
                   "resources and matmul need a PyTorch bundle, pipeline runs any")
    p.add_argument("--size", type=_size, default=(320, 240), help="input size WIDTHxHEIGHT")
    p.add_argument("--seconds", type=float, default=3.0, help="measuring time per measurement")
    p.add_argument("--net", action="append", metavar="NET",
                   help="engine/gpu: also time this architecture, randomly initialised (repeatable; "
                   "e.g. mobilenet_v2_1.0, resnet_50)")
    p.add_argument("--batch", action="append", type=_positive, metavar="N",
                   help="engine: batch size (repeatable; default 1 and 8)")
    _common(p)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("filter", formatter_class=fmt, epilog=EPILOG,
                       help="smooth analysed poses over time (median, savgol, kalman)",
                       description="Filter analysed pose tables (files, folders or globs) over time "
                       "and write <stem>_filtered.h5 (+ .csv) beside each, as DeepLabCut names them. "
                       "Keypoints below --p-bound are treated as missing and bridged.")
    p.add_argument("files", nargs="+", help="analysed .h5/.csv files, folders or globs")
    p.add_argument("--method", choices=("median", "savgol", "kalman"), default="median")
    p.add_argument("--window", type=int, default=5, help="odd window length (median, savgol)")
    p.add_argument("--order", type=int, default=3, help="polynomial order (savgol)")
    p.add_argument("--p-bound", type=float, default=0.01, help="likelihood below which a "
                   "keypoint counts as missing")
    p.add_argument("--fps", type=float, default=30.0, help="frame rate (kalman)")
    p.add_argument("--csv", action="store_true", help="also write a .csv")
    _common(p)
    p.set_defaults(func=cmd_filter)

    p = sub.add_parser("label-video", formatter_class=fmt, epilog=EPILOG,
                       help="draw analysed keypoints onto videos",
                       description="Write <table stem>_labeled.mp4 (H.264) beside each video's pose "
                       "table: keypoints above the likelihood cutoff, and a skeleton.")
    p.add_argument("videos", nargs="+", type=Path, help="analysed videos")
    p.add_argument("--table", type=Path, help="pose table (default: the one beside the video)")
    p.add_argument("--filtered", action="store_true", help="use the _filtered table")
    p.add_argument("--project", help="take skeleton and pcutoff from this project's config.yaml")
    p.add_argument("--skeleton", help="extra edges, e.g. snout-leftear,snout-rightear")
    p.add_argument("--pcutoff", type=float, help="likelihood cutoff (default: project's, else 0.6)")
    _common(p)
    p.set_defaults(func=cmd_label_video)

    p = sub.add_parser("plot", formatter_class=fmt, epilog=EPILOG,
                       help="trajectory, likelihood and histogram plots of analysed poses",
                       description="Write trajectories.png, likelihood.png and histograms.png "
                       "(per body part: frame-to-frame x/y displacement and likelihood) for each "
                       "analysed table, into plot-poses/<table stem>/ beside it, or --out "
                       "(--out DIR/<table stem>/ when several tables). Needs the 'plots' extra.")
    p.add_argument("tables", nargs="+", help="analysed .h5/.csv files, folders or globs")
    p.add_argument("--out", type=Path, help="folder for the PNG files")
    p.add_argument("--pcutoff", type=float, default=0.6, help="positions below this likelihood "
                   "are left out of trajectories and displacements")
    p.add_argument("--bodyparts", help="comma-separated body parts to plot (default: all)")
    _common(p)
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("export-nwb", formatter_class=fmt, epilog=EPILOG,
                       help="export analysed poses to NWB (ndx-pose)",
                       description="Write an analysed single-animal table to an NWB file: one "
                       "ndx-pose PoseEstimationSeries per body part (x, y in pixels, likelihood "
                       "as confidence) in processing/behavior/PoseEstimation, timed by frame / "
                       "fps; the video is referenced, not copied. Needs the 'nwb' extra.")
    p.add_argument("table", type=Path, help="analysed .h5/.csv of one video")
    p.add_argument("--video", type=Path, help="the analysed video (frame rate, size, reference)")
    p.add_argument("--out", type=Path, required=True, help="the .nwb file to write")
    p.add_argument("--fps", type=float, help="frame rate (default: the video's, else the one "
                   "recorded in the table's _meta.json)")
    p.add_argument("--session-description", help="NWB session description")
    p.add_argument("--session-start", help="recording start, ISO 8601 (default: the video "
                   "file's modification time)")
    p.add_argument("--subject-id", help="NWB subject id")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    _common(p)
    p.set_defaults(func=cmd_export_nwb)

    p = sub.add_parser("engines", help="list engines and whether they are installed")
    _common(p)
    p.set_defaults(func=cmd_engines)
    return parser


def _setup_logging(debug: bool, quiet: bool) -> None:
    level = logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s: %(message)s", stream=sys.stderr)
    if not debug:
        for noisy in ("timm", "PIL", "matplotlib", "numexpr", "numexpr.utils"):
            logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``posed`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = args.debug or os.environ.get("POSED_DEBUG", "") not in ("", "0")
    _setup_logging(debug, args.quiet)
    from posed.engines.memory import keep_freed_memory

    keep_freed_memory()  # every command runs models or trains: reuse big buffers (see module)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except PosedError as exc:
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
