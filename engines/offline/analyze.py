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

from posed.engines.base import PoseRunner
from posed.engines.dynamic import (ALIGN, DynamicCropper, DynamicSettings,
                                   predict_dynamic)
from posed.engines.dlc.meta import is_dlc_model, video_metadata, write_meta_pickle
from posed.engines.offline.outputs import already_done, output_metadata, run_signature, skipped
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


def analyze_video(runner: PoseRunner, video: Path, *, dest: Path | None = None, csv: bool = False,
                  batch_size: int = 8, progress: bool = True, overwrite: bool = True,
                  bar_factory: BarFactory | None = None, tracking: dict | None = None,
                  crop: Sequence[int] | None = None,
                  dynamic: DynamicSettings | None = None) -> tuple[Path, int | None, str | None]:
    """Analyse one video; returns (h5 path, frames, truncation warning), frames None when
    skipped (the warning then comes from the earlier run's metadata).

    Without ``overwrite``, a video whose outputs exist with the same :func:`run_signature` is
    skipped. The metadata file is written last, so an interrupted run leaves outputs that a
    rerun recognises as incomplete and redoes. ``bar_factory`` replaces the terminal progress
    bar (worker processes report progress to the process that draws the bars). ``crop``
    ``(x1, x2, y1, y2)`` analyses that part of every frame, as DeepLabCut's ``cropping``:
    keypoints are in the cropped frame's pixels, and the crop is recorded in the metadata.
    ``dynamic`` infers each frame on a window around the previous frame's confident parts
    (:mod:`posed.engines.dynamic`), one frame at a time; how many were cropped is recorded.

    Raises:
        VideoError: the video cannot be opened.
        ConfigError: a crop outside the frame or empty.
    """
    if (crop is not None or dynamic is not None) and getattr(runner, "multianimal", False):
        from posed.errors import CapabilityError

        raise CapabilityError(f"{video}: cropping is not supported for multi-animal models")
    if getattr(runner, "multianimal", False):
        from posed.engines.offline.multianimal import analyze_multianimal_video

        return analyze_multianimal_video(runner, video, dest=dest, csv=csv, batch_size=batch_size,
                                         progress=progress, overwrite=overwrite,
                                         bar_factory=bar_factory, tracking=tracking)
    folder = dest if dest is not None else video.parent
    folder.mkdir(parents=True, exist_ok=True)
    h5 = folder / f"{output_stem(video, runner.bundle.scorer)}.h5"
    signature = run_signature(runner, video, csv)
    if crop is not None:
        signature["crop"] = [int(c) for c in crop]
    if dynamic is not None:
        signature["dynamic"] = [dynamic.pcutoff, dynamic.margin, ALIGN]
    done = None if overwrite else already_done(h5, signature, csv)
    if done is not None:
        return skipped(video, h5, done)
    started = time.time()
    t0 = time.perf_counter()
    chunks: list[np.ndarray] = []
    box: list[int] = []
    cropper: list[DynamicCropper] = []

    def predict(frames: np.ndarray) -> None:
        if crop is not None:
            if not box:
                box.extend(crop_box(crop, frames.shape[2], frames.shape[1], video))
            frames = frames[:, box[2]:box[3], box[0]:box[1]]
        if dynamic is None:
            chunks.append(runner.predict(frames))
            return
        if not cropper:
            cropper.append(DynamicCropper(dynamic, (0, 0, frames.shape[2], frames.shape[1])))
        chunks.append(predict_dynamic(runner, frames, cropper[0]))

    read = for_each_batch(video, predict, batch_size=batch_size, progress=progress,
                          bar_factory=bar_factory)
    poses = np.concatenate(chunks)
    elapsed = time.perf_counter() - t0
    df = poses_to_frame(read.spread(poses), runner.bundle.bodyparts, runner.bundle.scorer)
    write_pose_table(df, h5, csv=csv)
    info = read.info
    write_metadata(h5.with_name(h5.stem + "_meta.json"), output_metadata(
        runner, video=str(video), fps=info.fps, nframes=read.rows,
        frame_dimensions=[info.height, info.width], batch_size=batch_size,
        **read.meta(), start=started, run_duration_s=round(elapsed, 3), signature=signature,
        frames_per_second=round(len(poses) / elapsed, 2) if elapsed > 0 else None,
        cropping=box or None, dynamic=None if dynamic is None else {
            "pcutoff": dynamic.pcutoff, "margin": dynamic.margin, "align": ALIGN,
            "cropped_frames": cropper[0].cropped if cropper else 0}))
    if is_dlc_model(runner.bundle):
        write_meta_pickle(h5.with_name(h5.stem + "_meta.pickle"), video_metadata(
            runner.bundle, start=started, stop=time.time(), fps=info.fps or 0.0,
            batch_size=batch_size, width=info.width, height=info.height, nframes=read.rows,
            crop=box or None))
    return h5, len(poses), read.report(video)


def analyze_videos(runner: PoseRunner, videos: Iterable[str | Path], *, dest: str | Path | None = None,
                   csv: bool = False, batch_size: int = 8, progress: bool = True,
                   overwrite: bool = False, tracking: dict | None = None,
                   allow_truncated: bool = False, crop: Sequence[int] | None = None,
                   dynamic: Any = None) -> AnalysisReport:
    """Analyse videos, folders of videos or globs; a failing video is reported and skipped.

    Resumable: a video whose complete output exists for the same model and settings is
    skipped unless ``overwrite``. ``tracking`` holds the identity settings of multi-animal
    models (:mod:`posed.engines.offline.multianimal`). A video shorter
    than its header promises is analysed and listed in ``report.truncated``; unless
    ``allow_truncated``, the report is then not :attr:`~AnalysisReport.ok`. ``dynamic`` is
    DeepLabCut-Live's ``(enabled, pcutoff, margin)`` (:class:`~posed.engines.dynamic.DynamicSettings`).
    """
    dynamic = DynamicSettings.parse(dynamic)
    report = AnalysisReport(allow_truncated=allow_truncated)
    t0 = time.perf_counter()
    dest_dir = Path(dest) if dest is not None else None
    found = expand_inputs(videos, VIDEO_SUFFIXES)
    overall = OverallBar(len(found), progress and len(found) > 1)
    for video in found:
        outcome = analyze_one(runner, video, dest=dest_dir, csv=csv, batch_size=batch_size,
                              progress=progress, overwrite=overwrite, tracking=tracking,
                              crop=crop, dynamic=dynamic)
        report.add(outcome)
        overall.done(outcome)
    overall.close()
    report.seconds = time.perf_counter() - t0
    return report


def analyze_one(runner: PoseRunner, video: Path, *, dest: Path | None = None, csv: bool = False,
                batch_size: int = 8, progress: bool = True, overwrite: bool = False,
                bar_factory: BarFactory | None = None, tracking: dict | None = None,
                crop: Sequence[int] | None = None, dynamic: Any = None) -> VideoOutcome:
    """Analyse one video of a batch: a :class:`PosedError` becomes a failed outcome, so one
    broken video never stops the others. Used in-process and by every worker of
    :mod:`posed.engines.offline.scale`."""
    try:
        if not video.is_file():
            raise DataError(f"{video}: no such file")
        h5, n, truncated = analyze_video(runner, video, dest=dest, csv=csv,
                                         batch_size=batch_size, progress=progress,
                                         overwrite=overwrite, bar_factory=bar_factory,
                                         tracking=tracking, crop=crop,
                                         dynamic=DynamicSettings.parse(dynamic))
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
                       output_metadata(runner, images=len(done), folder=str(folder)))
        report.outputs.append(h5)
        report.frames += len(done)
    report.seconds = time.perf_counter() - t0
    return report
