"""posed's own API over every engine: splits, training, evaluation, analysis, export, loading.

The operations with posed's signatures (bundles, engines, workers, clusters, reports);
:mod:`posed.engines.compat` puts DeepLabCut's signatures over the same functions. The engine
comes from the argument, else the project's ``engine`` key, else :data:`DEFAULT_ENGINE`;
:mod:`posed.engines.registry` knows where each engine's code lives, so importing this module
never imports a framework.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from posed.engines.loading import MULTIANIMAL_ENGINES, load_model, resolve_bundle
from posed.engines.project.folders import (get_model_folder, get_snapshot, get_train_folder,
                                           list_snapshots)
from posed.engines.registry import (DEFAULT_ENGINE, BackendSpec, Engine, capability,
                                    engine_available, get_backend, list_engines,
                                    register_engine, resolve_engine)
from posed.errors import CapabilityError, ConfigError

if TYPE_CHECKING:
    from posed.engines.bundle import ModelBundle
    from posed.engines.project import Project, Split

__all__ = [
    "DEFAULT_ENGINE", "BackendSpec", "Engine", "capability", "engine_available", "get_backend",
    "list_engines", "register_engine", "resolve_engine", "get_model_folder", "get_snapshot",
    "get_train_folder", "list_snapshots", "create_training_dataset", "train_network",
    "resolve_bundle", "load_model", "evaluate_network", "analyze_videos", "analyze_images",
    "create_tracking_dataset", "export_model", "import_dlc", "MULTIANIMAL_ENGINES",
]


# ----------------------------------------------------------------------------- operations

def create_training_dataset(project: "Project", shuffle: int = 1,
                            train_fraction: float | None = None, seed: int | None = None,
                            overwrite: bool = False) -> "Split":
    """Create (or reuse) the reproducible train/test split of ``shuffle``."""
    from posed.engines.project import create_split

    return create_split(project, shuffle, train_fraction=train_fraction, seed=seed,
                        overwrite=overwrite)


def train_network(project: "Project", shuffle: int = 1, engine: "str | Engine | None" = None,
                  config: Any = None, *, progress: bool = True, resume: bool = False,
                  overwrite: bool = False) -> Path:
    """Train ``shuffle`` with the chosen engine; returns the train folder (a model bundle).

    The split is created first if the shuffle has none. ``resume`` continues from the newest
    snapshot; ``overwrite`` deletes earlier snapshots of this shuffle and starts again.
    """
    eng = resolve_engine(engine, project)
    if project.multianimal and eng is not Engine.PYTORCH:
        raise CapabilityError(f"multi-animal (bottom-up) models are not supported by engine "
                              f"'{eng.value}' (engines that can: pytorch)")
    create_training_dataset(project, shuffle)
    fn = capability(eng, "train")
    if overwrite:
        folder = get_train_folder(project, shuffle, eng)
        for old in [*list_snapshots(folder), folder / "posed.yaml", folder / "resume-state.safetensors",
                    folder / "learning_stats.csv", folder / "pseudo-labels.csv"]:
            old.unlink(missing_ok=True)
    return fn(project, shuffle, config, progress=progress, resume=resume)


def evaluate_network(project: "Project | str | Path", shuffle: int = 1,
                     engine: "str | Engine | None" = None, snapshot: int | str | None = None, *,
                     layout: str | None = None, dlc: dict | None = None,
                     runner_options: dict | None = None, **options: Any) -> Any:
    """Evaluate a trained shuffle on its train and test images (see :mod:`posed.engines.offline.evaluate`).

    A DeepLabCut shuffle (``layout``, ``dlc``: :func:`~posed.engines.loading.resolve_bundle`)
    is evaluated on DeepLabCut's split, with results under DeepLabCut's
    ``evaluation-results-pytorch/`` (TensorFlow: ``evaluation-results/``) folder of the
    shuffle, DeepLabCut's own result files
    included (:mod:`posed.engines.dlc.evaluation`).
    """
    from posed.engines.offline.evaluate import evaluate
    from posed.engines.project import load_project

    if not hasattr(project, "root"):
        project = load_project(project)
    bundle = resolve_bundle(project.root, engine, shuffle=shuffle, snapshot=snapshot,
                            layout=layout, **(dlc or {}))
    folder = _evaluation_folder(project, shuffle, bundle, engine)
    runner = load_model(bundle, engine, **(runner_options or {}))
    with runner:
        result = evaluate(project, shuffle, runner, folder, **options)
    if bundle.source.get("layout") == "deeplabcut" and not project.multianimal \
            and options.get("write", True):
        from posed.engines.dlc.evaluation import write_results

        write_results(project, shuffle, bundle, result, folder)
    return result


def _evaluation_folder(project: "Project", shuffle: int, bundle: "ModelBundle", engine: Any) -> Path:
    """posed's model folder, or DeepLabCut's evaluation folder for a DeepLabCut shuffle."""
    if bundle.source.get("layout") != "deeplabcut":
        return get_model_folder(project, shuffle, resolve_engine(engine, project))
    shuffle_folder = Path(bundle.source["shuffle_folder"])
    models = shuffle_folder.parent.parent  # <prefix>/dlc-models-pytorch (or dlc-models)
    dlc_engine = Engine.parse(bundle.source.get("dlc_engine", "pytorch"))
    return models.parent / dlc_engine.results_folder_name / shuffle_folder.parent.name \
        / shuffle_folder.name


def analyze_videos(source: "str | Path", videos: Sequence["str | Path"],
                   engine: "str | Engine | None" = None, *, shuffle: int = 1,
                   snapshot: int | str | None = None, runner_options: dict | None = None,
                   workers: int = 1, cluster: str | None = None, layout: str | None = None,
                   **options: Any) -> Any:
    """Analyse videos with a project's trained model or a bundle (see :mod:`posed.engines.offline.analyze`).

    ``workers`` > 1 or a Ray ``cluster`` hand the videos to :mod:`posed.engines.offline.scale`;
    otherwise they are analysed one after another in this process. ``layout`` chooses a
    project's shuffle (:func:`~posed.engines.loading.resolve_bundle`).
    """
    if layout is not None:
        source = resolve_bundle(source, engine, shuffle=shuffle, snapshot=snapshot, layout=layout)
        snapshot = None
    if workers > 1 or cluster is not None:
        from posed.engines.offline.scale import analyze_distributed

        if options.get("crop") is not None:
            raise CapabilityError("cropping is not supported with workers or a cluster yet")

        return analyze_distributed(getattr(source, "path", None) or source, videos, engine.value if isinstance(engine, Engine)
                                   else engine, shuffle=shuffle, snapshot=snapshot,
                                   runner_options=runner_options, workers=workers,
                                   cluster=cluster, **options)
    from posed.engines.offline.analyze import analyze_videos as _analyze

    runner = load_model(source, engine, shuffle=shuffle, snapshot=snapshot, **(runner_options or {}))
    with runner:
        return _analyze(runner, videos, **options)


def analyze_images(source: "str | Path", paths: Sequence["str | Path"],
                   engine: "str | Engine | None" = None, *, shuffle: int = 1,
                   snapshot: int | str | None = None, runner_options: dict | None = None,
                   layout: str | None = None, **options: Any) -> Any:
    """Poses for still images, one DeepLabCut-shaped table per folder."""
    if layout is not None:
        source = resolve_bundle(source, engine, shuffle=shuffle, snapshot=snapshot, layout=layout)
        snapshot = None
    from posed.engines.offline.analyze import analyze_images as _analyze

    runner = load_model(source, engine, shuffle=shuffle, snapshot=snapshot, **(runner_options or {}))
    with runner:
        return _analyze(runner, paths, **options)


def create_tracking_dataset(source: "str | Path", videos: Sequence["str | Path"],
                            engine: "str | Engine | None" = None, *, shuffle: int = 1,
                            snapshot: int | str | None = None, out: "str | Path | None" = None,
                            size: int = 32, window: int | None = None, tracker: str = "ellipse",
                            batch_size: int = 8, train_reid: bool = False,
                            reid_options: dict | None = None, progress: bool = True,
                            runner_options: dict | None = None) -> dict[str, Path]:
    """Appearance samples of the animals in ``videos`` for re-identification, from tracklets.

    A multi-animal model (project shuffle or bundle) assembles the animals of every frame;
    tracklets are made and stitched (:mod:`posed.engines.tracking`); every detection in a
    tracklet becomes one sample: a ``size``×``size`` crop of a ``window``-pixel square around
    the animal (default :func:`~posed.engines.tracking.crop_window` of the animals found),
    labelled with its tracklet, stitched identity, frame and video. The samples go to one
    ``.npz`` (format: :func:`posed.engines.tracking.write_tracking_dataset`), by default
    ``<bundle>/reid/tracking_dataset.npz``. With ``train_reid`` a ReID model is trained on it
    into ``<bundle>/reid/`` (or beside ``out``), which analysis then uses when stitching.

    Returns:
        ``{"dataset": npz path}``, plus ``"reid"``: the model folder when trained.

    Raises:
        CapabilityError: the model is not a multi-animal model.
        DataError: no video could be read, or no animal was tracked.
    """
    import numpy as np

    from posed.engines.tracking import crop_window, write_tracking_dataset
    from posed.errors import DataError

    runner = load_model(source, engine, shuffle=shuffle, snapshot=snapshot,
                        **(runner_options or {}))
    with runner:
        if not getattr(runner, "multianimal", False):
            raise CapabilityError(f"{runner.bundle.path}: not a multi-animal model; tracking "
                                  "datasets need one")
        tracked = _track_videos(runner, videos, tracker, batch_size, progress)
        bundle_dir = runner.bundle.path
    if not tracked:
        raise DataError("no videos to make a tracking dataset from")
    if window is None:
        window = crop_window([a for _, frames, _ in tracked for found in frames[::5]
                              for a in found])
    samples = _tracklet_samples(tracked, window, size, batch_size)
    if not samples["crops"]:
        raise DataError(f"{', '.join(str(v) for v, _, _ in tracked)}: no animal was tracked")
    reid_dir = Path(out).parent if out is not None else bundle_dir / "reid"
    path = Path(out) if out is not None else reid_dir / "tracking_dataset.npz"
    write_tracking_dataset(path, {k: np.stack(v) for k, v in samples.items()},
                           [str(v) for v, _, _ in tracked], window)
    result = {"dataset": path}
    if train_reid:
        # ReID models are PyTorch's (posed.engines.pytorch.reid), whatever engine tracked.
        result["reid"] = capability(Engine.PYTORCH, "train_reid")(path, reid_dir,
                                                                   **(reid_options or {}))
    return result


def _track_videos(runner: Any, videos: Sequence["str | Path"], tracker: str, batch_size: int,
                  progress: bool) -> list[tuple[Path, list, Any]]:
    """Per video: (path, the animals found in each frame, the stitched tracklets)."""
    from posed.engines.offline.analyze import VIDEO_SUFFIXES, expand_inputs
    from posed.engines.offline.multianimal import assemble_video
    from posed.engines.tracking import make_tracklets, stitch_tracklets
    from posed.errors import DataError

    tracked = []
    for video in expand_inputs(videos, VIDEO_SUFFIXES):
        if not video.is_file():
            raise DataError(f"{video}: no such file")
        animals, _, _, _ = assemble_video(runner, video, batch_size=batch_size, progress=progress)
        per_frame = [animals.found(f) for f in range(len(animals))]
        stitched = stitch_tracklets(make_tracklets(per_frame, tracker), len(runner.individuals))
        tracked.append((video, per_frame, stitched))
    return tracked


def _tracklet_samples(tracked: list[tuple[Path, list, Any]], window: int, size: int,
                      batch_size: int) -> dict[str, list]:
    """One sample per detection in a tracklet: its crop, tracklet, stitched identity (-1:
    none), frame, video index and centre; the videos are read again for the crops."""
    import numpy as np

    from posed.engines.tracking import animal_crops
    from posed.engines.video import VideoReader

    samples: dict[str, list] = {k: [] for k in ("crops", "tracklet", "track", "frame", "video",
                                                "centre")}
    for v, (video, _, stitched) in enumerate(tracked):
        identity = {m: i for i, members in enumerate(stitched.tracks) for m in members}
        wanted: dict[int, list[tuple[int, np.ndarray]]] = {}
        for m, t in enumerate(stitched.tracklets):
            for frame, pose in zip(t.frames, t.poses):
                wanted.setdefault(frame, []).append((m, pose))
        with VideoReader(video) as reader:
            for rows, frames in reader.batches(batch_size):
                for row, image in zip(rows.tolist(), frames):  # true indices, as the tracklets
                    for m, pose in wanted.get(row, []):
                        samples["crops"].append(animal_crops(image, pose[None], window, size)[0])
                        samples["tracklet"].append(stitched.tracklets[m].id)
                        samples["track"].append(identity.get(m, -1))
                        samples["frame"].append(row)
                        samples["video"].append(v)
                        xy = pose[:, :2][np.isfinite(pose[:, :2]).all(axis=1)]
                        samples["centre"].append(xy.mean(axis=0))
    return samples


def import_dlc(source: "str | Path", out: "str | Path", *, overwrite: bool = False) -> Path:
    """A DeepLabCut export as a posed bundle in ``out``; returns ``out``.

    A folder is a DeepLabCut 2.x TensorFlow export (``pose_cfg.yaml`` and a frozen graph; the
    bundle runs on the TensorFlow engine, :mod:`posed.exporters.dlc2`); a file is a
    DeepLabCut 3 ``.pt`` export (PyTorch engine, :mod:`posed.exporters.dlc`). A framework
    that is not installed is an :class:`~posed.errors.EngineUnavailableError` with the line
    that installs it.
    """
    eng = Engine.TENSORFLOW if Path(source).is_dir() else Engine.PYTORCH
    return Path(capability(eng, "import_dlc")(source, out, overwrite=overwrite))


def export_model(source: "str | Path | ModelBundle", fmt: str, out: "str | Path",
                 engine: "str | Engine | None" = None, *, shuffle: int = 1,
                 snapshot: int | str | None = None, calibration_from: str | Path | None = None,
                 calibration_frames: int | None = None, **options: Any) -> Path:
    """Export a trained model (bundle, bundle folder or project shuffle) to ``fmt`` in ``out``.

    The engine that produced the model exports it. From a project, the parity check runs on
    the shuffle's test images and INT8 calibration uses (up to 32 of) its training images.
    ``calibration_from`` (a video or a folder of images; static INT8 only) calibrates on up
    to ``calibration_frames`` (default 32) evenly spaced frames of it instead, for any source;
    without a project the parity check then runs on other frames of it, held out of
    calibration. Where the calibration frames came from is recorded in ``export.calibration``.
    ``freeze_norm=True`` (PyTorch models with GroupNorm) fixes the normalisation statistics,
    measured on the same calibration frames (:mod:`posed.engines.pytorch.normfreeze`).
    ``precision="auto"`` (ONNX) measures every variant under every runtime on this CPU and
    keeps the fastest within 0.5 px median (:mod:`posed.engines.autoprecision`); it needs
    frames of the camera: a project's images or ``calibration_from``.
    """
    auto = options.get("precision") == "auto"
    if auto and (fmt != "onnx" or options.get("freeze_norm")):
        raise ConfigError("precision auto exports to --format onnx and tries frozen "
                          "normalisation itself (drop --freeze-norm)" if fmt == "onnx" else
                          f"precision auto exports to --format onnx, not {fmt}")
    calibrated = auto or options.get("precision") == "int8" or bool(options.get("freeze_norm"))
    if (calibration_from is not None or calibration_frames is not None) and not calibrated:
        raise ConfigError("--calibration/--calibration-frames apply to static INT8 "
                          "(--format onnx --int8), --freeze-norm and --precision auto, not to "
                          f"{options.get('precision') or 'fp32'} exports")
    if calibration_frames is not None and calibration_frames < 1:
        raise ConfigError(f"--calibration-frames must be at least 1, not {calibration_frames}")
    bundle = resolve_bundle(source, engine, shuffle=shuffle, snapshot=snapshot)
    options = _export_frames(source, shuffle, calibration_from, calibration_frames, calibrated,
                             options)
    eng = Engine.parse(bundle.engine)
    if auto:
        from posed.engines.autoprecision import export_auto

        if "check_frames" not in options:
            raise ConfigError("precision auto measures on frames of the camera: export from a "
                              "project, or pass --calibration VIDEO_OR_FOLDER")
        options.pop("precision")
        return export_auto(bundle, Path(out), **options)
    if options.get("freeze_norm") and eng is not Engine.PYTORCH:
        raise ConfigError(f"--freeze-norm applies to PyTorch models (this one is {eng.value})")
    if not options.get("freeze_norm"):
        options.pop("freeze_norm", None)
    return capability(eng, "export")(bundle, fmt, Path(out), **options)


def _export_frames(source: Any, shuffle: int, calibration_from: "str | Path | None",
                   calibration_frames: int | None, calibrated: bool,
                   options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with the frames an export needs: ``check_frames`` (the project's test
    images, else frames of ``calibration_from`` held out of calibration) and, when
    ``calibrated``, ``calibration`` frames with ``calibration_info``."""
    from posed.engines.calibration import CALIBRATION_FRAMES, CHECK_FRAMES, read_calibration

    options = dict(options)
    limit = calibration_frames or CALIBRATION_FRAMES
    size = options.get("fixed_size")
    project = None
    if not hasattr(source, "bodyparts") and not _is_bundle_path(source):
        from posed.engines.project import load_project

        project = load_project(source)
    if calibration_from is not None:
        calib = read_calibration(calibration_from, limit=limit, size=size,
                                 holdout=0 if project is not None else CHECK_FRAMES)
        options.setdefault("calibration", calib.frames)
        options.setdefault("calibration_info", calib.info)
        if project is None and calib.check is not None:
            options.setdefault("check_frames", calib.check)
    if project is not None:
        options.setdefault("check_frames", _project_frames(project, shuffle, "test", 8, size))
        if calibrated and "calibration" not in options:
            frames = _project_frames(project, shuffle, "train", limit, size)
            options["calibration"] = frames
            options.setdefault("calibration_info", {
                "kind": "project training images", "path": str(project.root),
                "shuffle": shuffle, "frames": len(frames)})
    return options


def _is_bundle_path(source: Any) -> bool:
    from posed.engines.bundle import is_bundle

    return isinstance(source, (str, Path)) and is_bundle(source)


def _project_frames(project: "Project", shuffle: int, which: str, limit: int,
                    size: "tuple[int, int] | None") -> Any:
    """Up to ``limit`` labelled images of one split set as a uint8 batch of one size.

    Images are resized to ``size`` (height, width) when given, else only those of the most
    common size are used.
    """
    import collections

    import cv2
    import numpy as np

    from posed.engines.project import load_image, load_split

    split = load_split(project, shuffle)
    names = list(split.test if which == "test" else split.train) or list(split.train)
    images = [load_image(project.root, n) for n in names[: limit * 2]]
    if size is not None:
        images = [cv2.resize(im, (size[1], size[0]), interpolation=cv2.INTER_AREA) for im in images]
    common = collections.Counter(im.shape for im in images).most_common(1)[0][0]
    return np.stack([im for im in images if im.shape == common][:limit])
