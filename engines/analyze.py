"""Offline analysis of videos and still images with any engine's runner.

Outputs follow DeepLabCut: ``<video stem><scorer>.h5`` (key ``df_with_missing``, columns
``scorer/bodyparts/coords``, row index = frame number), an optional ``.csv``, and a JSON
metadata file ``<video stem><scorer>_meta.json``. Every file is written atomically.
"""

from __future__ import annotations

import glob
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

import posed
from posed.engines.base import PoseRunner
from posed.engines.dataformats import output_stem, poses_to_frame, write_metadata, write_pose_table
from posed.errors import DataError, PosedError

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
    """

    outputs: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    frames: int = 0
    seconds: float = 0.0


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


def _already_done(h5: Path, signature: dict, csv: bool) -> bool:
    import json

    meta = h5.with_name(h5.stem + "_meta.json")
    if not (h5.is_file() and meta.is_file()) or (csv and not h5.with_suffix(".csv").is_file()):
        return False
    try:
        return json.loads(meta.read_text()).get("signature") == signature
    except (OSError, ValueError):
        return False


def analyze_video(runner: PoseRunner, video: Path, *, dest: Path | None = None, csv: bool = False,
                  batch_size: int = 8, progress: bool = True,
                  overwrite: bool = True) -> tuple[Path, int | None]:
    """Analyse one video; returns (h5 path, frames), frames None when skipped.

    Without ``overwrite``, a video whose outputs exist with the same :func:`run_signature` is
    skipped. The metadata file is written last, so an interrupted run leaves outputs that a
    rerun recognises as incomplete and redoes.

    Raises:
        VideoError: the video cannot be opened.
    """
    from tqdm.auto import tqdm

    from posed.engines.video import VideoReader, prefetch

    folder = dest if dest is not None else video.parent
    folder.mkdir(parents=True, exist_ok=True)
    h5 = folder / f"{output_stem(video, runner.bundle.scorer)}.h5"
    signature = run_signature(runner, video, csv)
    if not overwrite and _already_done(h5, signature, csv):
        log.info("%s: output exists for this model and settings; skipped", video)
        return h5, None
    started = time.time()
    t0 = time.perf_counter()
    chunks: list[np.ndarray] = []
    with VideoReader(video) as reader:
        info = reader.info
        bar = tqdm(total=info.nframes or None, desc=video.name, unit="frame", disable=not progress,
                   leave=False)
        # Decoding runs in a background thread so it overlaps inference.
        for _idx, frames in prefetch(reader.batches(batch_size), depth=4):
            chunks.append(runner.predict(frames))
            bar.update(len(frames))
        bar.close()
        decode_errors = reader.decode_errors
    if not chunks:
        raise DataError(f"{video}: no frames could be decoded")
    poses = np.concatenate(chunks)
    elapsed = time.perf_counter() - t0
    df = poses_to_frame(poses, runner.bundle.bodyparts, runner.bundle.scorer)
    write_pose_table(df, h5, csv=csv)
    write_metadata(h5.with_name(h5.stem + "_meta.json"), _metadata(
        runner, video=str(video), fps=info.fps, nframes=int(len(poses)),
        frame_dimensions=[info.height, info.width], batch_size=batch_size,
        decode_errors=decode_errors, start=started, run_duration_s=round(elapsed, 3),
        signature=signature,
        frames_per_second=round(len(poses) / elapsed, 2) if elapsed > 0 else None))
    if decode_errors:
        log.warning("%s: %d frame(s) failed to decode and were skipped", video, decode_errors)
    return h5, len(poses)


def analyze_videos(runner: PoseRunner, videos: Iterable[str | Path], *, dest: str | Path | None = None,
                   csv: bool = False, batch_size: int = 8, progress: bool = True,
                   overwrite: bool = False) -> AnalysisReport:
    """Analyse videos, folders of videos or globs; a failing video is reported and skipped.

    Resumable: a video whose complete output exists for the same model and settings is
    skipped unless ``overwrite``.
    """
    report = AnalysisReport()
    t0 = time.perf_counter()
    dest_dir = Path(dest) if dest is not None else None
    for video in expand_inputs(videos, VIDEO_SUFFIXES):
        try:
            if not video.is_file():
                raise DataError(f"{video}: no such file")
            h5, n = analyze_video(runner, video, dest=dest_dir, csv=csv, batch_size=batch_size,
                                  progress=progress, overwrite=overwrite)
        except PosedError as exc:
            log.error("%s", exc)
            report.failed.append((video, str(exc)))
            continue
        report.outputs.append(h5)
        if n is None:
            report.skipped.append(video)
        else:
            report.frames += n
    report.seconds = time.perf_counter() - t0
    return report


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
