"""Offline analysis of videos with a bottom-up multi-animal runner: assembly, tracking and
identities, written as DeepLabCut's multi-animal tables (see :mod:`posed.engines.offline.analyze`
for the single-animal path and the rules every output follows)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from posed.engines.base import PoseRunner
from posed.engines.dlc.detections import write_detection_pickles
from posed.engines.dlc.meta import is_dlc_model, video_metadata, write_meta_pickle
from posed.engines.offline.outputs import already_done, output_metadata, run_signature, skipped
from posed.engines.offline.reading import BarFactory, VideoRead, for_each_batch  # noqa: F401
from posed.engines.project.posetables import output_stem, write_metadata, write_pose_table

log = logging.getLogger(__name__)


TRACKING_DEFAULTS: dict[str, Any] = {"identities": "stitch", "tracker": "ellipse", "reid": "auto"}
"""Identity settings of multi-animal analysis.

- ``identities``: ``stitch`` (frame-to-frame tracklets, then stitched into exactly
  ``len(individuals)`` identities over the whole video) or ``online`` (the daemon's live
  :class:`~posed.engines.tracking.OnlineTracker`, frame by frame: the identities a live stream
  of the same file carries) or ``none`` (no tracking: slot j of a frame is the frame's j-th
  assembled animal, best first; DeepLabCut's ``auto_track=False``).
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
    if settings["identities"] not in ("stitch", "online", "none"):
        raise ConfigError(f"tracking identities '{settings['identities']}' is not stitch, "
                          "online or none")
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
        # top-down runners: the video is one stream (for their detect_every)
        found = (runner.predict_animals(frames, streams=[str(video)] * len(frames))
                 if getattr(runner, "top_down", False) else runner.predict_animals(frames))
        chunks.append(found)
        if crops is not None:
            cut.extend(animal_crops(frames[i], found.found(i), *crops) for i in range(len(found)))

    read = for_each_batch(video, assemble, batch_size=batch_size, progress=progress,
                          bar_factory=bar_factory)
    boxes = None
    if chunks and chunks[0].boxes is not None:  # top-down: each slot's detector box
        boxes = read.spread(np.concatenate([c.boxes for c in chunks]))
    animals = AnimalPoses(read.spread(np.concatenate([c.animals for c in chunks])),
                          read.spread(np.concatenate([c.scores for c in chunks]), fill=0.0),
                          read.spread(np.concatenate([c.unique for c in chunks])), boxes)
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
        identities: ``stitch``, ``online`` or ``none`` (see :data:`TRACKING_DEFAULTS`).
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
    if identities == "none":  # the assembler's order, frame by frame
        return animals.animals[:, :n_individuals].copy(), [], {}
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
    :func:`posed.engines.tracking.tracklets_table`; PyTables, no pickle), for a DeepLabCut
    shuffle in place DeepLabCut's detection pickles of the untracked animals
    (:mod:`posed.engines.dlc.detections`) and ``_meta.pickle``, and the metadata file last.
    Resumable like :func:`analyze_video`.
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
    done = None if overwrite else already_done(h5, signature, csv)
    if done is not None:
        return skipped(video, h5, done)
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
    if settings["identities"] != "none":  # untracked: there are no tracklets to write
        from posed.engines.tracking import tracklets_table

        table = tracklets_table(tracklets, owner, runner.animal_bodyparts)
        target = h5.with_name(h5.stem + "_tracklets.h5")
        cleanup_stale_temps(target.parent, target.name)
        with atomic_path(target) as tmp:
            table.to_hdf(tmp, key="tracklets", format="table", mode="w")
    if is_dlc_model(runner.bundle):  # DeepLabCut's detection pickles, for its own tools
        write_detection_pickles(h5, animals, runner.animal_bodyparts, runner.unique_bodyparts)
    write_metadata(h5.with_name(h5.stem + "_meta.json"), output_metadata(
        runner, video=str(video), fps=info.fps, nframes=int(len(poses)),
        frame_dimensions=[info.height, info.width], batch_size=batch_size,
        **read.meta(), start=started, run_duration_s=round(elapsed, 3),
        signature=signature, individuals=list(runner.individuals),
        tracklets=len(tracklets), tracking=signature["tracking"],
        frames_per_second=round(len(read.indices) / elapsed, 2) if elapsed > 0 else None))
    if is_dlc_model(runner.bundle):
        write_meta_pickle(h5.with_name(h5.stem + "_meta.pickle"), video_metadata(
            runner.bundle, start=started, stop=time.time(), fps=info.fps or 0.0,
            batch_size=batch_size, width=info.width, height=info.height, nframes=len(poses)))
    return h5, len(read.indices), read.report(video)
