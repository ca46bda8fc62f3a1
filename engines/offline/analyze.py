"""Offline analysis of videos and still images with any engine's runner.

Outputs follow DeepLabCut: ``<video stem><scorer>.h5`` (key ``df_with_missing``, columns
``scorer/bodyparts/coords``, row index = frame number), an optional ``.csv``, and a JSON
metadata file ``<video stem><scorer>_meta.json``. Every file is written atomically.

Row i is always frame i of the video (:class:`~posed.engines.video.FrameIndexer`): a frame that
failed to decode is a row of NaN with likelihood 0, and so are the frames a truncated file lost
when its header gives their exact count. Both are counted, logged once per video (one warning
naming the file) and recorded in the metadata (``frames_failed``, ``truncated``).
"""

from __future__ import annotations

import glob
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

import posed
from posed.engines.base import PoseRunner
from posed.engines.dlc.meta import is_dlc_model, video_metadata, write_meta_pickle
from posed.engines.project.posetables import output_stem, poses_to_frame, write_metadata, write_pose_table
from posed.errors import DataError, PosedError
from posed.engines.offline.reading import (BarFactory, VideoRead, for_each_batch,  # noqa: F401
                                        terminal_bar, truncation_warning)

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".mpg", ".mpeg", ".webm", ".h264")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


@dataclass
class AnalysisReport:
    """What an analysis run did.

    Attributes:
        outputs: Written h5 files, one per video (or image folder).
        failed: ``(path, reason)`` for every input that could not be analysed.
        skipped: Videos whose complete output already existed for the same model and settings.
        frames: Frames (or images) analysed in total.
        seconds: Wall time.
        truncated: ``(path, warning)`` for every video shorter than its header promises (its
            table is written all the same).
        allow_truncated: Whether truncated videos still count as a success (:attr:`ok`).
    """

    outputs: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    frames: int = 0
    seconds: float = 0.0
    where: str = ""  # how it ran when not in this process, e.g. "2 worker processes"
    truncated: list[tuple[Path, str]] = field(default_factory=list)
    allow_truncated: bool = False

    @property
    def ok(self) -> bool:
        """No video failed, and none was truncated unless that is allowed."""
        return not self.failed and (self.allow_truncated or not self.truncated)

    def add(self, outcome: "VideoOutcome") -> None:
        """Count one video's outcome; a failure is logged as it arrives."""
        if outcome.error is not None:
            log.error("%s", outcome.error)
            self.failed.append((outcome.video, outcome.error))
            return
        assert outcome.h5 is not None
        self.outputs.append(outcome.h5)
        if outcome.truncated:
            self.truncated.append((outcome.video, outcome.truncated))
        if outcome.frames is None:
            self.skipped.append(outcome.video)
        else:
            self.frames += outcome.frames


@dataclass
class VideoOutcome:
    """What happened to one video: its h5, the frames analysed (None: skipped as already
    done) or, when it failed, why (one line naming the video); ``truncated``: the warning when
    the video is shorter than its header promises."""

    video: Path
    h5: Path | None = None
    frames: int | None = None
    error: str | None = None
    truncated: str | None = None


class OverallBar:
    """The run's bar (the top line): videos done out of all, and the frames analysed so far."""

    def __init__(self, videos: int, enabled: bool) -> None:
        from tqdm.auto import tqdm

        self._bar = tqdm(total=videos, desc="videos", unit="video", disable=not enabled,
                         position=0)
        self._frames = 0

    def done(self, outcome: VideoOutcome) -> None:
        """Advance by one finished (analysed, skipped or failed) video."""
        self._frames += outcome.frames or 0
        self._bar.set_description(f"videos ({self._frames} frames)", refresh=False)
        self._bar.update(1)

    def close(self) -> None:
        """Take the bar off the terminal."""
        self._bar.close()


def expand_inputs(paths: Iterable[str | Path], suffixes: Sequence[str]) -> list[Path]:
    """Expand files, folders (their direct children) and glob patterns into a sorted file list.

    A path that matches nothing is returned unchanged, so the caller reports it as missing.
    """
    out: list[Path] = []
    for raw in paths:
        text = str(raw)
        if any(ch in text for ch in "*?["):
            matches = sorted(Path(m) for m in glob.glob(text, recursive=True))
            out.extend(m for m in matches if m.suffix.lower() in suffixes)
            if not matches:
                out.append(Path(text))
        elif Path(text).is_dir():
            out.extend(sorted(p for p in Path(text).iterdir() if p.suffix.lower() in suffixes
                              and not p.name.startswith(".")))
        else:
            out.append(Path(text))
    seen: set[Path] = set()
    return [p for p in out if not (p in seen or seen.add(p))]


def _metadata(runner: PoseRunner, **extra: object) -> dict:
    bundle = runner.bundle
    return {
        "posed_version": posed.__version__,
        "engine": runner.engine,
        "scorer": bundle.scorer,
        "bodyparts": list(bundle.bodyparts),
        "model": {"path": str(bundle.path) if bundle.path else None,
                  "weights": bundle.weights, "architecture": bundle.architecture},
        **extra,
    }


def run_signature(runner: PoseRunner, video: Path, csv: bool) -> dict:
    """What an output depends on: model weights, engine, the video file and the settings.

    A rerun skips a video whose metadata holds the same signature; the video is identified by
    size and modification time (hashing hours of video on every run would cost more than
    analysing a short one).
    """
    stat = video.stat()
    return {"weights": [w.get("sha256") for w in runner.bundle.weights], "engine": runner.engine,
            "format": runner.bundle.format, "video_size": stat.st_size,
            "video_mtime_ns": stat.st_mtime_ns, "csv": csv}


def _already_done(h5: Path, signature: dict, csv: bool) -> dict | None:
    """The metadata of a complete earlier output with this signature, else None."""
    import json

    meta = h5.with_name(h5.stem + "_meta.json")
    if not (h5.is_file() and meta.is_file()) or (csv and not h5.with_suffix(".csv").is_file()):
        return None
    try:
        data = json.loads(meta.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("signature") == signature else None


def _skipped(video: Path, h5: Path, meta: dict) -> tuple[Path, None, str | None]:
    """A video whose output exists: (h5, None, the truncation warning its run recorded)."""
    log.info("%s: output exists for this model and settings; skipped", video)
    message = truncation_warning(video, meta.get("truncated"))
    if message:
        log.warning("%s", message)
    return h5, None, message


def analyze_video(runner: PoseRunner, video: Path, *, dest: Path | None = None, csv: bool = False,
                  batch_size: int = 8, progress: bool = True, overwrite: bool = True,
                  bar_factory: BarFactory | None = None, tracking: dict | None = None,
                  crop: Sequence[int] | None = None) -> tuple[Path, int | None, str | None]:
    """Analyse one video; returns (h5 path, frames, truncation warning), frames None when
    skipped (the warning then comes from the earlier run's metadata).

    Without ``overwrite``, a video whose outputs exist with the same :func:`run_signature` is
    skipped. The metadata file is written last, so an interrupted run leaves outputs that a
    rerun recognises as incomplete and redoes. ``bar_factory`` replaces the terminal progress
    bar (worker processes report progress to the process that draws the bars). ``crop``
    ``(x1, x2, y1, y2)`` analyses that part of every frame, as DeepLabCut's ``cropping``:
    keypoints are in the cropped frame's pixels, and the crop is recorded in the metadata.

    Raises:
        VideoError: the video cannot be opened.
        ConfigError: a crop outside the frame or empty.
    """
    if crop is not None and getattr(runner, "multianimal", False):
        from posed.errors import CapabilityError

        raise CapabilityError(f"{video}: cropping is not supported for multi-animal models")
    if getattr(runner, "multianimal", False):
        return analyze_multianimal_video(runner, video, dest=dest, csv=csv, batch_size=batch_size,
                                         progress=progress, overwrite=overwrite,
                                         bar_factory=bar_factory, tracking=tracking)
    folder = dest if dest is not None else video.parent
    folder.mkdir(parents=True, exist_ok=True)
    h5 = folder / f"{output_stem(video, runner.bundle.scorer)}.h5"
    signature = run_signature(runner, video, csv)
    if crop is not None:
        signature["crop"] = [int(c) for c in crop]
    done = None if overwrite else _already_done(h5, signature, csv)
    if done is not None:
        return _skipped(video, h5, done)
    started = time.time()
    t0 = time.perf_counter()
    chunks: list[np.ndarray] = []
    box: list[int] = []

    def predict(frames: np.ndarray) -> None:
        if crop is not None:
            if not box:
                box.extend(crop_box(crop, frames.shape[2], frames.shape[1], video))
            frames = frames[:, box[2]:box[3], box[0]:box[1]]
        chunks.append(runner.predict(frames))

    read = for_each_batch(video, predict, batch_size=batch_size, progress=progress,
                          bar_factory=bar_factory)
    poses = np.concatenate(chunks)
    elapsed = time.perf_counter() - t0
    df = poses_to_frame(read.spread(poses), runner.bundle.bodyparts, runner.bundle.scorer)
    write_pose_table(df, h5, csv=csv)
    info = read.info
    write_metadata(h5.with_name(h5.stem + "_meta.json"), _metadata(
        runner, video=str(video), fps=info.fps, nframes=read.rows,
        frame_dimensions=[info.height, info.width], batch_size=batch_size,
        **read.meta(), start=started, run_duration_s=round(elapsed, 3), signature=signature,
        frames_per_second=round(len(poses) / elapsed, 2) if elapsed > 0 else None,
        cropping=box or None))
    if is_dlc_model(runner.bundle):
        write_meta_pickle(h5.with_name(h5.stem + "_meta.pickle"), video_metadata(
            runner.bundle, start=started, stop=time.time(), fps=info.fps or 0.0,
            batch_size=batch_size, width=info.width, height=info.height, nframes=read.rows,
            crop=box or None))
    return h5, len(poses), read.report(video)


def analyze_videos(runner: PoseRunner, videos: Iterable[str | Path], *, dest: str | Path | None = None,
                   csv: bool = False, batch_size: int = 8, progress: bool = True,
                   overwrite: bool = False, tracking: dict | None = None,
                   allow_truncated: bool = False,
                   crop: Sequence[int] | None = None) -> AnalysisReport:
    """Analyse videos, folders of videos or globs; a failing video is reported and skipped.

    Resumable: a video whose complete output exists for the same model and settings is
    skipped unless ``overwrite``. ``tracking`` holds the identity settings of multi-animal
    models (:data:`TRACKING_DEFAULTS`, :func:`analyze_multianimal_video`). A video shorter
    than its header promises is analysed and listed in ``report.truncated``; unless
    ``allow_truncated``, the report is then not :attr:`~AnalysisReport.ok`.
    """
    report = AnalysisReport(allow_truncated=allow_truncated)
    t0 = time.perf_counter()
    dest_dir = Path(dest) if dest is not None else None
    found = expand_inputs(videos, VIDEO_SUFFIXES)
    overall = OverallBar(len(found), progress and len(found) > 1)
    for video in found:
        outcome = analyze_one(runner, video, dest=dest_dir, csv=csv, batch_size=batch_size,
                              progress=progress, overwrite=overwrite, tracking=tracking,
                              crop=crop)
        report.add(outcome)
        overall.done(outcome)
    overall.close()
    report.seconds = time.perf_counter() - t0
    return report


def analyze_one(runner: PoseRunner, video: Path, *, dest: Path | None = None, csv: bool = False,
                batch_size: int = 8, progress: bool = True, overwrite: bool = False,
                bar_factory: BarFactory | None = None, tracking: dict | None = None,
                crop: Sequence[int] | None = None) -> VideoOutcome:
    """Analyse one video of a batch: a :class:`PosedError` becomes a failed outcome, so one
    broken video never stops the others. Used in-process and by every worker of
    :mod:`posed.engines.offline.scale`."""
    try:
        if not video.is_file():
            raise DataError(f"{video}: no such file")
        h5, n, truncated = analyze_video(runner, video, dest=dest, csv=csv,
                                         batch_size=batch_size, progress=progress,
                                         overwrite=overwrite, bar_factory=bar_factory,
                                         tracking=tracking, crop=crop)
    except PosedError as exc:
        return VideoOutcome(video, error=str(exc))
    return VideoOutcome(video, h5=h5, frames=n, truncated=truncated)


def crop_box(crop: Sequence[int], width: int, height: int, where: Any) -> list[int]:
    """DeepLabCut's crop ``[x1, x2, y1, y2]`` within a ``width``×``height`` frame (ends past
    the frame are clamped to it, as DeepLabCut does)."""
    from posed.errors import ConfigError

    try:
        x1, x2, y1, y2 = (int(c) for c in crop)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: cropping must be four integers x1, x2, y1, y2, got "
                          f"{crop!r}") from None
    x2, y2 = min(x2, width), min(y2, height)
    if not (0 <= x1 < x2 and 0 <= y1 < y2):
        raise ConfigError(f"{where}: cropping {list(crop)} leaves nothing of the {width}x{height} "
                          "frame (x1 < x2 and y1 < y2 inside it)")
    return [x1, x2, y1, y2]


def predict_image_files(runner: PoseRunner, images: Sequence[Path], *, batch_size: int = 8,
                        on_error: "Callable[[Path, PosedError], None] | None" = None,
                        progress: bool = False, desc: str = "images") -> tuple[list[Path], np.ndarray]:
    """Predict poses for image files, batching consecutive images of equal size.

    Returns the images that were read and their N×K×3 poses. An unreadable image raises
    unless ``on_error`` is given, which is then called with the path and the error.
    """
    from tqdm.auto import tqdm

    from posed.engines.project import load_image

    done: list[Path] = []
    out: list[np.ndarray] = []
    batch: list[np.ndarray] = []

    def flush() -> None:
        if batch:
            out.append(runner.predict(np.stack(batch)))
            batch.clear()

    for path in tqdm(images, desc=desc, unit="image", disable=not progress, leave=False):
        try:
            img = load_image(Path(path).parent, Path(path).name)
        except PosedError as exc:
            if on_error is None:
                raise
            on_error(Path(path), exc)
            continue
        if batch and (img.shape != batch[0].shape or len(batch) == batch_size):
            flush()
        batch.append(img)
        done.append(Path(path))
    flush()
    poses = np.concatenate(out) if out else np.zeros((0, len(runner.bodyparts), 3), np.float32)
    return done, poses


def analyze_images(runner: PoseRunner, paths: Iterable[str | Path], *, dest: str | Path | None = None,
                   csv: bool = False, batch_size: int = 8, progress: bool = True) -> AnalysisReport:
    """Poses for still images: one table per folder, row index = image path as given."""
    report = AnalysisReport()
    t0 = time.perf_counter()
    groups: dict[Path, list[Path]] = {}
    for img in expand_inputs(paths, IMAGE_SUFFIXES):
        groups.setdefault(img.parent, []).append(img)

    def failed(path: Path, exc: PosedError) -> None:
        log.error("%s", exc)
        report.failed.append((path, str(exc)))

    for folder, images in groups.items():
        done, poses = predict_image_files(runner, images, batch_size=batch_size, on_error=failed,
                                          progress=progress, desc=str(folder))
        if not done:
            continue
        out_dir = Path(dest) if dest is not None else folder
        out_dir.mkdir(parents=True, exist_ok=True)
        h5 = out_dir / f"{folder.resolve().name}{runner.bundle.scorer}.h5"
        df = poses_to_frame(poses, runner.bundle.bodyparts, runner.bundle.scorer,
                            index=[str(p) for p in done])
        write_pose_table(df, h5, csv=csv)
        write_metadata(h5.with_name(h5.stem + "_meta.json"),
                       _metadata(runner, images=len(done), folder=str(folder)))
        report.outputs.append(h5)
        report.frames += len(done)
    report.seconds = time.perf_counter() - t0
    return report


# ----------------------------------------------------------------------------- multi-animal

TRACKING_DEFAULTS: dict[str, Any] = {"identities": "stitch", "tracker": "ellipse", "reid": "auto"}
"""Identity settings of multi-animal analysis.

- ``identities``: ``stitch`` (frame-to-frame tracklets, then stitched into exactly
  ``len(individuals)`` identities over the whole video) or ``online`` (the daemon's live
  :class:`~posed.engines.tracking.OnlineTracker`, frame by frame: the identities a live stream
  of the same file carries).
- ``tracker``: ``ellipse`` or ``box`` (:mod:`posed.engines.tracking`).
- ``reid``: a ReID model folder whose appearance features help stitching, ``auto`` (the
  bundle's ``reid/`` folder when it has one) or None.
"""


def tracking_settings(tracking: dict | None) -> dict[str, Any]:
    """:data:`TRACKING_DEFAULTS` updated with ``tracking``; a bad key or value is a
    :class:`ConfigError`."""
    from posed.errors import ConfigError

    settings = {**TRACKING_DEFAULTS, **dict(tracking or {})}
    unknown = sorted(set(settings) - set(TRACKING_DEFAULTS))
    if unknown:
        raise ConfigError(f"tracking setting '{unknown[0]}' is not known "
                          f"(known: {', '.join(TRACKING_DEFAULTS)})")
    if settings["identities"] not in ("stitch", "online"):
        raise ConfigError(f"tracking identities '{settings['identities']}' is not stitch or online")
    if settings["tracker"] not in ("ellipse", "box"):
        raise ConfigError(f"tracking tracker '{settings['tracker']}' is not ellipse or box")
    return settings


def _reid_model(runner: PoseRunner, reid: Any) -> Any:
    """The ReID model ``reid`` names (``auto``: the bundle's ``reid/`` folder, if any)."""
    if reid is None or reid is False:
        return None
    if reid == "auto":
        folder = runner.bundle.path / "reid" if runner.bundle.path is not None else None
        if folder is None or not (folder / "reid.yaml").is_file():
            return None
        reid = folder
    from posed.engines.registry import Engine, capability

    return capability(Engine.PYTORCH, "load_reid")(reid)


def assemble_video(runner: Any, video: Path, *, batch_size: int = 8, progress: bool = True,
                   bar_factory: BarFactory | None = None,
                   crops: tuple[int, int] | None = None) -> tuple[Any, Any, VideoRead,
                                                                  list[np.ndarray]]:
    """Every animal in every frame of a video, by a multi-animal runner.

    Args:
        crops: ``(window, size)`` to also cut a crop of each found animal
            (:func:`posed.engines.tracking.animal_crops`).

    Returns:
        (:class:`~posed.engines.base.AnimalPoses` of all frames (row i is frame i; a frame
        that failed to decode has no animals), video info, what reading lost
        (:class:`VideoRead`), per frame the A×size×size×3 crops of its found animals (empty
        without ``crops`` or for a failed frame)).

    Raises:
        VideoError: the video cannot be opened. DataError: no frame could be decoded.
    """
    from posed.engines.base import AnimalPoses
    from posed.engines.tracking import animal_crops

    chunks = []
    cut: list[np.ndarray] = []

    def assemble(frames: np.ndarray) -> None:
        found = runner.predict_animals(frames)
        chunks.append(found)
        if crops is not None:
            cut.extend(animal_crops(frames[i], found.found(i), *crops) for i in range(len(found)))

    read = for_each_batch(video, assemble, batch_size=batch_size, progress=progress,
                          bar_factory=bar_factory)
    animals = AnimalPoses(read.spread(np.concatenate([c.animals for c in chunks])),
                          read.spread(np.concatenate([c.scores for c in chunks]), fill=0.0),
                          read.spread(np.concatenate([c.unique for c in chunks])))
    if cut:
        empty = np.zeros((0, *cut[0].shape[1:]), cut[0].dtype)
        placed = [empty] * read.rows
        for i, crop in zip(read.indices, cut):
            placed[i] = crop
        cut = placed
    return animals, read.info, read, cut


def _detection_slot(animals: np.ndarray, pose: np.ndarray) -> int:
    """Index of ``pose`` among a frame's found animals (trackers keep copies)."""
    for a, candidate in enumerate(animals):
        if np.array_equal(candidate, pose, equal_nan=True):
            return a
    raise ValueError("tracklet pose not found among the frame's animals")


def track_identities(animals: Any, n_individuals: int, *, identities: str = "stitch",
                     tracker: str = "ellipse", crops: list[np.ndarray] | None = None,
                     reid: Any = None) -> tuple[np.ndarray, list[Any], dict[int, int]]:
    """Identities for the animals of a video.

    Args:
        animals: :class:`~posed.engines.base.AnimalPoses` of every frame.
        n_individuals: Number of identities.
        identities: ``stitch`` or ``online`` (see :data:`TRACKING_DEFAULTS`).
        tracker: ``ellipse`` or ``box``.
        crops: Per frame the crops of its found animals (for ``reid``).
        reid: A :class:`~posed.engines.pytorch.multianimal.ReIDModel`: stitching then
            compares the tracklets' mean appearance embeddings.

    Returns:
        (N×I×K×3 poses by identity, the frame-to-frame tracklets, tracklet index ->
        identity).
    """
    from posed.engines.tracking import OnlineTracker, make_tracklets, stitch_tracklets

    n = len(animals)
    k = animals.animals.shape[2]
    per_frame = [animals.found(f) for f in range(n)]
    if identities == "online":
        live = OnlineTracker(n_individuals, tracker)
        poses = np.full((n, n_individuals, k, 3), np.nan, dtype=np.float32)
        poses[..., 2] = 0.0
        for f, found in enumerate(per_frame):
            for ident, pose in live.update(found):
                poses[f, ident] = pose
        tracklets = live.tracker.tracklets()
        # A live track may change identity; each tracklet is filed under its most frequent one.
        owner: dict[int, int] = {}
        for m, t in enumerate(tracklets):
            votes = [i for f, pose in zip(t.frames, t.poses)
                     for i in range(n_individuals)
                     if np.array_equal(poses[f, i], pose, equal_nan=True)]
            if votes:
                owner[m] = max(set(votes), key=lambda v: (votes.count(v), -v))
        return poses, tracklets, owner
    tracklets = make_tracklets(per_frame, tracker)
    features = None
    if reid is not None and crops is not None and tracklets:
        features = []
        for t in tracklets:
            # Up to 20 detections spread over the tracklet are enough for its mean look.
            picks = np.linspace(0, len(t) - 1, min(len(t), 20)).round().astype(int)
            batch = np.stack([
                crops[t.frames[i]][_detection_slot(per_frame[t.frames[i]], t.poses[i])]
                for i in picks])
            mean = reid.embed(batch).mean(axis=0)
            features.append(mean / max(float(np.linalg.norm(mean)), 1e-12))
    stitched = stitch_tracklets(tracklets, n_individuals, features=features)
    owner = {m: ident for ident, members in enumerate(stitched.tracks) for m in members}
    return stitched.poses(n, k), stitched.tracklets, owner


def analyze_multianimal_video(runner: Any, video: Path, *, dest: Path | None = None,
                              csv: bool = False, batch_size: int = 8, progress: bool = True,
                              overwrite: bool = True, bar_factory: BarFactory | None = None,
                              tracking: dict | None = None) -> tuple[Path, int | None, str | None]:
    """Analyse one video with a bottom-up multi-animal runner.

    Animals are assembled per frame, tracked and given exactly ``len(individuals)``
    identities (:func:`track_identities`). Writes ``<stem><scorer>.h5`` (+ ``.csv``): the
    DeepLabCut multi-animal table (``scorer/individuals/bodyparts/coords``, unique parts
    under ``single``), ``<stem><scorer>_tracklets.h5`` (key ``tracklets``,
    :func:`posed.engines.tracking.tracklets_table`; PyTables, no pickle) and the metadata
    file last. Resumable like :func:`analyze_video`.
    """
    from posed.engines.project.posetables import multianimal_poses_to_frame
    from posed.engines.io import atomic_path, cleanup_stale_temps

    settings = tracking_settings(tracking)
    reid = _reid_model(runner, settings["reid"]) if settings["identities"] == "stitch" else None
    folder = dest if dest is not None else video.parent
    folder.mkdir(parents=True, exist_ok=True)
    h5 = folder / f"{output_stem(video, runner.bundle.scorer)}.h5"
    signature = {**run_signature(runner, video, csv),
                 "tracking": {**settings, "reid": str(reid.folder) if reid is not None else None}}
    done = None if overwrite else _already_done(h5, signature, csv)
    if done is not None:
        return _skipped(video, h5, done)
    started = time.time()
    t0 = time.perf_counter()
    crops = (reid.window, reid.crop_size) if reid is not None else None
    animals, info, read, cut = assemble_video(
        runner, video, batch_size=batch_size, progress=progress, bar_factory=bar_factory,
        crops=crops)
    poses, tracklets, owner = track_identities(
        animals, len(runner.individuals), identities=settings["identities"],
        tracker=settings["tracker"], crops=cut, reid=reid)
    elapsed = time.perf_counter() - t0
    unique = animals.unique if runner.unique_bodyparts else None
    df = multianimal_poses_to_frame(poses, runner.individuals, runner.animal_bodyparts,
                                    runner.bundle.scorer, unique=unique,
                                    uniquebodyparts=runner.unique_bodyparts)
    write_pose_table(df, h5, csv=csv)
    from posed.engines.tracking import tracklets_table

    table = tracklets_table(tracklets, owner, runner.animal_bodyparts)
    target = h5.with_name(h5.stem + "_tracklets.h5")
    cleanup_stale_temps(target.parent, target.name)
    with atomic_path(target) as tmp:
        table.to_hdf(tmp, key="tracklets", format="table", mode="w")
    write_metadata(h5.with_name(h5.stem + "_meta.json"), _metadata(
        runner, video=str(video), fps=info.fps, nframes=int(len(poses)),
        frame_dimensions=[info.height, info.width], batch_size=batch_size,
        **read.meta(), start=started, run_duration_s=round(elapsed, 3),
        signature=signature, individuals=list(runner.individuals),
        tracklets=len(tracklets), tracking=signature["tracking"],
        frames_per_second=round(len(read.indices) / elapsed, 2) if elapsed > 0 else None))
    return h5, len(read.indices), read.report(video)
