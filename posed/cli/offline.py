"""Offline commands: synth, train, evaluate, analyze, analyze-images, create-tracking-dataset,
filter, label-video, plot and export-nwb."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from posed.cli.common import (add_batching, add_csv, add_model_args, add_overwrite, add_source,
                              add_tables, analysed_tables, command, each_file, positive, size)
from posed.errors import ConfigError

# ----------------------------------------------------------------------------- project and model


def cmd_synth(args: argparse.Namespace) -> int:
    """write a synthetic DeepLabCut project with known keypoints

    Render animal-like shapes with exact keypoints into a complete DeepLabCut project
    (config.yaml, labelled PNG frames, CollectedData h5+csv, a short H.264 video and its ground
    truth).
    """

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


def add_synth(sub: Any) -> None:
    with command(sub, "synth", cmd_synth) as p:
        p.add_argument("out", type=Path, help="project folder to create (must not exist or be empty)")
        p.add_argument("--frames", type=positive, default=60, help="labelled frames")
        p.add_argument("--video-frames", type=positive, default=60, help="frames in the video")
        p.add_argument("--size", type=size, default=(128, 128), help="frame size WIDTHxHEIGHT")
        p.add_argument("--bodyparts", default="snout,leftear,rightear,tailbase",
                       help="comma-separated body part names")
        p.add_argument("--seed", type=int, default=0, help="random seed")
        p.add_argument("--animals", type=positive, metavar="N",
                       help="write a multi-animal project with N animals that cross and occlude "
                       "one another (individuals individual1..N; truth CSV with identities)")


def cmd_train(args: argparse.Namespace) -> int:
    """train a pose model

    Train a model on a DeepLabCut project. Creates the train/test split of the shuffle if
    missing, writes snapshots and learning_stats.csv to
    posed-models-<engine>/iteration-N/<task><date>-trainsetPPshuffleK/train/, which is itself a
    model bundle. Settings: defaults < the recipe < project config.yaml <
    <model folder>/train_config.yaml < these options. The recipe (auto: scratch without
    pretrained weights, finetune with them) is logged in one line.
    """

    from posed.engines import api
    from posed.engines.project import load_project

    project = load_project(args.project)
    overrides = {
        "net": args.net, "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
        "output_stride": args.output_stride, "save_every": args.save_every, "seed": args.seed,
        "crop": list(args.crop) if args.crop else None, "crop_sampling": args.crop_sampling,
        "num_workers": args.workers, "budget_minutes": args.budget,
        "pretrained": args.pretrained, "recipe": args.recipe,
    }
    if args.pretrained in ("true", "imagenet"):
        overrides["pretrained"] = True
    if args.pseudo_labels is not None:
        pseudo = {"enabled": True, "videos": args.pseudo_labels or None,
                  "frames": args.pseudo_frames}
        overrides["pseudo_labels"] = {k: v for k, v in pseudo.items() if v is not None}
    api.create_training_dataset(project, args.shuffle, train_fraction=args.train_fraction)
    folder = api.train_network(project, args.shuffle, args.engine, overrides,
                                  progress=not args.quiet, resume=args.resume,
                                  overwrite=args.overwrite)
    print(folder)
    return 0


def add_train(sub: Any) -> None:
    with command(sub, "train", cmd_train) as p:
        p.add_argument("project", help="project folder or its config.yaml")
        add_model_args(p)
        p.add_argument("--net", help="backbone: resnet_50, resnet_18, mobilenet_v2_1.0, "
                       "mobilenet_v2_0.35, efficientnet_b0, dlc_resnet_50 (DeepLabCut 3's "
                       "GroupNorm ResNet-50) (default: project default_net_type)")
        p.add_argument("--epochs", type=positive, help="training epochs (default: the "
                       "recipe's: 1200-2800 steps from scratch by input size, within 30..300; "
                       "50 to fine-tune)")
        p.add_argument("--budget", type=float, metavar="MINUTES",
                       help="fit training in this many minutes: after the first epoch, "
                       "fewer epochs if all would take longer (logged; default: no limit)")
        p.add_argument("--batch-size", type=positive,
                       help="batch size (default: project batch_size)")
        p.add_argument("--lr", type=float, help="peak learning rate (default: 3e-3 from "
                       "scratch, 1e-3 to fine-tune)")
        p.add_argument("--output-stride", type=int, choices=(8, 16, 32),
                       help="backbone stride (default: 8 from scratch, 16 to fine-tune)")
        p.add_argument("--recipe", choices=("auto", "scratch", "finetune"),
                       help="default settings: scratch (random init), finetune (pretrained "
                       "weights) or auto, which picks by --pretrained (default auto)")
        p.add_argument("--crop", type=size,
                       help="train on random WIDTHxHEIGHT crops (where: --crop-sampling; "
                       "default from scratch: 320x320 for frames larger than that)")
        p.add_argument("--crop-sampling", choices=("centred", "uniform", "hybrid"),
                       help="where --crop cuts: centred on the animal, anywhere, or either "
                       "(default hybrid)")
        p.add_argument("--save-every", type=positive,
                       help="snapshot interval in epochs (default 10)")
        p.add_argument("--seed", type=int, help="random seed (default 0)")
        p.add_argument("--workers", type=int, help="data-loading worker processes (default 0)")
        p.add_argument("--train-fraction", type=float, help="fraction of images for training "
                       "(default: project TrainingFraction)")
        p.add_argument("--pretrained", help="'imagenet' for timm ImageNet weights (needs "
                       "internet) or a local backbone weights file")
        p.add_argument("--resume", action="store_true", help="continue from the newest snapshot")
        p.add_argument("--overwrite", action="store_true",
                       help="delete this shuffle's snapshots first")
        p.add_argument("--pseudo-labels", nargs="*", metavar="VIDEO",
                       help="semi-supervised: from half-way, also learn from frames of these "
                       "videos (default: the project's) that the model labels confidently")
        p.add_argument("--pseudo-frames", type=positive, metavar="N",
                       help="unlabelled frames to label (default 200)")


def cmd_evaluate(args: argparse.Namespace) -> int:
    """pixel error, PCK and likelihood statistics on train and test images

    Evaluate a trained shuffle on its train and test images: mean and median pixel error per
    body part (all, and above pcutoff), PCK at --pck and at --pck-thresholds, and the
    fraction above pcutoff. Writes
    evaluation/snapshot-NNN/errors.csv and predictions.
    """

    from posed.engines import api
    from posed.engines.offline.evaluate import pck_thresholds_of
    from posed.engines.project import load_project

    try:
        pck_thresholds_of(args.pck_thresholds)
    except ValueError as exc:
        raise ConfigError(f"--pck-thresholds: {exc}") from None
    project = load_project(args.project)
    runner_options = {"flip_test": True} if args.flip_test else None
    result = api.evaluate_network(project, args.shuffle, args.engine, snapshot=args.snapshot,
                                  layout=args.layout, runner_options=runner_options,
                                  pcutoff=args.pcutoff, pck_px=args.pck,
                                  pck_thresholds=args.pck_thresholds, plots=args.plots)
    print(f"evaluation of {project.name} shuffle {args.shuffle} "
          f"(pcutoff {result.pcutoff}, PCK within {result.pck_px} px)")
    print(result.format())
    print(f"written to {result.folder}")
    _note_mirrored(project)
    return 0


def _note_mirrored(project: Any) -> None:
    """A note on stderr for each labelled sample whose left/right pair looks swapped: the
    errors above count it against the model."""
    from posed.engines.project.labelcheck import check_project

    for issue in check_project(project):
        print(f"note: {issue.format()} (its error counts against the model; "
              "posed check-labels)", file=sys.stderr)


def cmd_check_labels(args: argparse.Namespace) -> int:
    """labelled samples whose left/right pairs look swapped

    Seen from above, an animal is never its own mirror image: a sample where a left/right
    pair (from the config's flip_pairs or the names) turns against the body's midline parts
    the other way from nearly all other samples is printed, one line each. Exit status 1 when
    any sample is flagged. The project's files are not changed.
    """
    from posed.engines.project import load_project
    from posed.engines.project.labelcheck import check_project
    from posed.engines.training.settings import project_flip_pairs

    project = load_project(args.project)
    issues = check_project(project)
    for issue in issues:
        print(issue.format())
    pairs = len(project_flip_pairs(project))
    print(f"{project.name}: {len(issues)} sample(s) with a left/right pair in the mirror order "
          f"({pairs} pair(s) checked)", file=sys.stderr)
    return 1 if issues else 0


def add_check_labels(sub: Any) -> None:
    with command(sub, "check-labels", cmd_check_labels) as p:
        p.add_argument("project", help="project folder or its config.yaml")


def add_flip_test(p: argparse.ArgumentParser) -> None:
    """``--flip-test``: infer each frame and its mirror image, fuse the two poses."""
    p.add_argument("--flip-test", action="store_true",
                   help="also infer each image mirrored left to right (left/right parts "
                   "swapped: the project's flip_pairs, else pairs found in the names) and fuse "
                   "the two poses; twice the inference time (single-animal models)")


def add_evaluate(sub: Any) -> None:
    with command(sub, "evaluate", cmd_evaluate) as p:
        p.add_argument("project", help="project folder or its config.yaml")
        add_model_args(p)
        p.add_argument("--pcutoff", type=float, help="likelihood cutoff (default: project pcutoff)")
        p.add_argument("--pck", type=float, default=5.0, help="PCK distance threshold in pixels")
        p.add_argument("--pck-thresholds", type=float, nargs="+", default=[2.0, 5.0, 10.0],
                       metavar="PX", help="thresholds of the pck@PX columns (default 2 5 10)")
        p.add_argument("--plots", action="store_true", help="also write error-per-bodypart.png "
                       "and test-images/ (labels and predictions drawn on each test image); "
                       "needs the 'plots' extra")
        add_flip_test(p)


# ----------------------------------------------------------------------------- analysis

def _report(report: Any, kind: str) -> int:
    for path in report.outputs:
        print(path)
    for path, why in report.failed:
        print(f"error: {why}" if str(path) in why else f"error: {path}: {why}", file=sys.stderr)
    fps = report.frames / report.seconds if report.seconds else 0.0
    skipped = len(getattr(report, "skipped", []))
    where = getattr(report, "where", "")
    truncated = len(getattr(report, "truncated", []))
    print(f"{len(report.outputs) - skipped} {kind} analysed, {report.frames} frames, "
          f"{fps:.1f} frames/s, {skipped} already done, {len(report.failed)} failed"
          + (f", {truncated} truncated" if truncated else "")
          + (f" ({where})" if where else ""), file=sys.stderr)
    if not report.outputs and not report.failed:
        raise ConfigError("no input files found")
    if truncated and not report.ok:
        print(f"error: {truncated} truncated {kind} (their tables are written; "
              "--allow-truncated accepts them)", file=sys.stderr)
    return 0 if getattr(report, "ok", not report.failed) else 1


def _scale_options(args: argparse.Namespace) -> dict[str, Any]:
    """``analyze_videos``'s worker-process or Ray options from the command line."""
    if args.cluster is not None:
        if args.workers > 1:
            raise ConfigError("--workers and --cluster exclude each other (Ray places the tasks)")
        scale: dict[str, Any] = {"cluster": args.cluster, "task_gpus": args.task_gpus}
        if args.task_cpus is not None:
            scale["task_cpus"] = args.task_cpus
        return scale
    if args.task_cpus is not None or args.task_gpus is not None:
        raise ConfigError("--task-cpus/--task-gpus apply to --cluster")
    return {"workers": args.workers} if args.workers > 1 else {}


def cmd_analyze(args: argparse.Namespace) -> int:
    """poses for videos into DeepLabCut-compatible h5/csv

    Analyse videos (files, folders or globs) with a project's trained model or a model bundle;
    writes <video><scorer>.h5 (+ .csv) and <video><scorer>_meta.json beside each video (or in
    --dest). A video that cannot be read is reported and skipped; the exit status is 1 if any
    failed. Row i is frame i: frames that fail to decode are NaN rows (likelihood 0), counted
    in a warning and in _meta.json. A video shorter than its header promises is analysed,
    warned about and recorded, and makes the exit status 1 unless --allow-truncated.
    --dynamic infers each frame on a window around the previous frame's confident body parts,
    as DeepLabCut-Live's dynamic cropping (single-animal models).
    """

    from posed.engines import api

    scale = _scale_options(args)
    report = api.analyze_videos(args.source, args.videos, args.engine, shuffle=args.shuffle,
                                snapshot=args.snapshot, layout=args.layout, dest=args.dest,
                                csv=args.csv,
                                   batch_size=args.batch_size, progress=not args.quiet,
                                   overwrite=args.overwrite, runner_options=_runner_options(args),
                                   allow_truncated=args.allow_truncated,
                                   dynamic=_dynamic(args.dynamic), **scale)
    return _report(report, "videos")


def _runner_options(args: argparse.Namespace) -> dict:
    """The runner options of ``analyze``: the device, and the precision only when asked (an
    engine without precisions refuses the option)."""
    options: dict[str, Any] = {"device": args.device}
    if args.precision is not None:
        options["precision"] = args.precision
    if args.flip_test:
        options["flip_test"] = True
    return options


def _dynamic(text: str | None) -> tuple[bool, float, float] | None:
    """``--dynamic PCUTOFF,MARGIN`` as DeepLabCut's (enabled, pcutoff, margin)."""
    if text is None:
        return None
    try:
        pcutoff, margin = (float(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"--dynamic: expected PCUTOFF,MARGIN (e.g. 0.5,20), got '{text}'") from None
    return True, pcutoff, margin


def cmd_analyze_images(args: argparse.Namespace) -> int:
    """poses for images into DeepLabCut-compatible h5/csv

    Poses for still images (files, folders or globs): one <folder><scorer>.h5 per folder, row
    index = image path as given.
    """

    from posed.engines import api

    report = api.analyze_images(args.source, args.images, args.engine, shuffle=args.shuffle,
                                snapshot=args.snapshot, layout=args.layout, dest=args.dest,
                                csv=args.csv,
                                   progress=not args.quiet)
    return _report(report, "image folders")


def add_analyze(sub: Any) -> None:
    with command(sub, "analyze", cmd_analyze) as p:
        _analysis_inputs(p, "videos")
        add_batching(p)
        p.add_argument("--overwrite", action="store_true",
                       help="redo videos whose output exists for the same model and settings "
                       "(by default they are skipped, so an interrupted run can be resumed)")
        p.add_argument("--allow-truncated", action="store_true",
                       help="exit 0 even when a video holds fewer frames than its header "
                       "promises (it is analysed and warned about either way)")
        p.add_argument("--precision", choices=("auto", "fp32", "fp16", "bf16"),
                       help="compute precision of the pytorch and openvino engines: fp16 on "
                       "CUDA; bf16 on CPUs with AMX or AVX512-BF16 (refused elsewhere); "
                       "recorded in _meta.json (default auto: fp32 on the CPU)")
        p.add_argument("--dynamic", nargs="?", const="0.5,10", metavar="PCUTOFF,MARGIN",
                       help="dynamic cropping: infer each frame on the box around the previous "
                       "frame's body parts with likelihood >= PCUTOFF, grown by MARGIN pixels; "
                       "the whole frame when none (default 0.5,10, as DeepLabCut-Live)")
        add_flip_test(p)
        p.add_argument("--workers", type=positive, default=1,
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


def add_analyze_images(sub: Any) -> None:
    with command(sub, "analyze-images", cmd_analyze_images) as p:
        _analysis_inputs(p, "images")


def _analysis_inputs(p: argparse.ArgumentParser, kind: str) -> None:
    """The inputs and outputs ``analyze`` and ``analyze-images`` share."""
    add_source(p)
    p.add_argument(kind, nargs="+", help=f"{kind}, folders or glob patterns")
    add_model_args(p)
    p.add_argument("--dest", type=Path, help="write outputs here instead of beside the inputs")
    add_csv(p)


def cmd_create_tracking_dataset(args: argparse.Namespace) -> int:
    """animal crops from tracklets for re-identification (multi-animal models)

    Assemble and track the animals of the videos with a multi-animal model, and write every
    tracked detection as a crop labelled with its tracklet, stitched identity, frame and video
    to one .npz (default <bundle>/reid/tracking_dataset.npz; no pickle). With --train-reid, also
    train the re-identification model (triplet loss) into <bundle>/reid/, which `posed analyze`
    then uses when stitching tracklets.
    """

    from posed.engines import api

    result = api.create_tracking_dataset(
        args.source, args.videos, args.engine, shuffle=args.shuffle, snapshot=args.snapshot,
        out=args.out, size=args.crop_size, window=args.window, batch_size=args.batch_size,
        train_reid=args.train_reid, reid_options={"epochs": args.epochs} if args.epochs else None,
        progress=not args.quiet, runner_options={"device": args.device})
    for path in result.values():
        print(path)
    return 0


def add_create_tracking_dataset(sub: Any) -> None:
    with command(sub, "create-tracking-dataset", cmd_create_tracking_dataset) as p:
        add_source(p)
        p.add_argument("videos", nargs="+", help="videos, folders or glob patterns")
        add_model_args(p)
        p.add_argument("--out", type=Path, help="the .npz to write")
        p.add_argument("--crop-size", type=positive, default=32,
                       help="crop side in the dataset, px")
        p.add_argument("--window", type=positive, help="crop side in the video, px (default: "
                       "twice the animals' median extent)")
        add_batching(p)
        p.add_argument("--train-reid", action="store_true", help="train the ReID model on it")
        p.add_argument("--epochs", type=positive, help="ReID training epochs (default 10)")


# ----------------------------------------------------------------------------- pose tables

def cmd_filter(args: argparse.Namespace) -> int:
    """smooth analysed poses over time (median, savgol, kalman)

    Filter analysed pose tables (files, folders or globs) over time and write <stem>_filtered.h5
    (+ .csv) beside each, as DeepLabCut names them. Keypoints below --p-bound are treated as
    missing and bridged.
    """

    from posed.engines.offline.filtering import filter_file

    files = analysed_tables(args.files, include_filtered=False)
    if not files:
        raise ConfigError("no analysed .h5/.csv files found")
    return each_file(files, lambda path: print(filter_file(
        path, args.method, csv=args.csv, window=args.window, order=args.order,
        p_bound=args.p_bound, fps=args.fps)))


def add_filter(sub: Any) -> None:
    with command(sub, "filter", cmd_filter) as p:
        add_tables(p, "files")
        p.add_argument("--method", choices=("median", "savgol", "kalman"), default="median")
        p.add_argument("--window", type=int, default=5, help="odd window length (median, savgol)")
        p.add_argument("--order", type=int, default=3, help="polynomial order (savgol)")
        p.add_argument("--p-bound", type=float, default=0.01, help="likelihood below which a "
                       "keypoint counts as missing")
        p.add_argument("--fps", type=float, default=30.0, help="frame rate (kalman)")
        add_csv(p)


def _table_for(video: Path, filtered: bool) -> Path:
    tables = sorted(p for p in video.parent.glob(f"{video.stem}*.h5")
                    if p.stem.endswith("_filtered") == filtered)
    if len(tables) != 1:
        what = "no" if not tables else f"{len(tables)}"
        raise ConfigError(f"{video}: {what} {'filtered ' if filtered else ''}pose tables beside it "
                          "(analyse it first, or pass --table)")
    return tables[0]


def _skeleton(args: argparse.Namespace) -> tuple[list[tuple[str, str]], float | None]:
    """The edges to draw and the likelihood cutoff: the project's, then ``--skeleton``."""
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
    return skeleton, pcutoff


def cmd_label_video(args: argparse.Namespace) -> int:
    """draw analysed keypoints onto videos

    Write <table stem>_labeled.mp4 (H.264) beside each video's pose table: keypoints above the
    likelihood cutoff, and a skeleton.
    """

    from posed.engines.offline.labelvideo import label_video

    skeleton, pcutoff = _skeleton(args)
    for video in args.videos:
        table = args.table or _table_for(video, args.filtered)
        print(label_video(video, table, pcutoff=0.6 if pcutoff is None else pcutoff,
                          skeleton=skeleton))
    return 0


def add_label_video(sub: Any) -> None:
    with command(sub, "label-video", cmd_label_video) as p:
        p.add_argument("videos", nargs="+", type=Path, help="analysed videos")
        p.add_argument("--table", type=Path, help="pose table (default: the one beside the video)")
        p.add_argument("--filtered", action="store_true", help="use the _filtered table")
        p.add_argument("--project", help="take skeleton and pcutoff from this project's config.yaml")
        p.add_argument("--skeleton", help="extra edges, e.g. snout-leftear,snout-rightear")
        p.add_argument("--pcutoff", type=float,
                       help="likelihood cutoff (default: project's, else 0.6)")


def cmd_plot(args: argparse.Namespace) -> int:
    """trajectory, likelihood and histogram plots of analysed poses

    Write trajectories.png, likelihood.png and histograms.png (per body part: frame-to-frame x/y
    displacement and likelihood) for each analysed table, into plot-poses/<table stem>/ beside
    it, or --out (--out DIR/<table stem>/ when several tables). Needs the 'plots' extra.
    """

    from posed.engines.offline.plotting import plot_poses, require_matplotlib

    require_matplotlib()
    tables = analysed_tables(args.tables)
    bodyparts = [b.strip() for b in (args.bodyparts or "").split(",") if b.strip()]

    def plot(table: Path) -> None:
        out = args.out if args.out is None or len(tables) == 1 else args.out / table.stem
        for png in plot_poses(table, out, pcutoff=args.pcutoff, bodyparts=bodyparts or None):
            print(png)

    return each_file(tables, plot)


def add_plot(sub: Any) -> None:
    with command(sub, "plot", cmd_plot) as p:
        add_tables(p, "tables")
        p.add_argument("--out", type=Path, help="folder for the PNG files")
        p.add_argument("--pcutoff", type=float, default=0.6, help="positions below this "
                       "likelihood are left out of trajectories and displacements")
        p.add_argument("--bodyparts", help="comma-separated body parts to plot (default: all)")


def cmd_export_nwb(args: argparse.Namespace) -> int:
    """export analysed poses to NWB (ndx-pose)

    Write an analysed single-animal table to an NWB file: one ndx-pose PoseEstimationSeries per
    body part (x, y in pixels, likelihood as confidence) in processing/behavior/PoseEstimation,
    timed by frame / fps; the video is referenced, not copied. Needs the 'nwb' extra.
    """

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


def add_export_nwb(sub: Any) -> None:
    with command(sub, "export-nwb", cmd_export_nwb) as p:
        p.add_argument("table", type=Path, help="analysed .h5/.csv of one video")
        p.add_argument("--video", type=Path,
                       help="the analysed video (frame rate, size, reference)")
        p.add_argument("--out", type=Path, required=True, help="the .nwb file to write")
        p.add_argument("--fps", type=float, help="frame rate (default: the video's, else the one "
                       "recorded in the table's _meta.json)")
        p.add_argument("--session-description", help="NWB session description")
        p.add_argument("--session-start", help="recording start, ISO 8601 (default: the video "
                       "file's modification time)")
        p.add_argument("--subject-id", help="NWB subject id")
        add_overwrite(p)
