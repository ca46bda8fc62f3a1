"""Export analysed poses to NWB with the ndx-pose extension (the ``nwb`` extra).

One ``PoseEstimation`` container in the ``behavior`` processing module holds one
``PoseEstimationSeries`` per body part: x/y in pixels (origin at the top-left corner of the
frame) and the likelihood as confidence, timed by frame index / frame rate. A ``Skeleton``
names the body parts (and their edges when given). The file is written atomically.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path
from typing import Any, Sequence

import numpy as np

import posed
from posed.engines.project.posetables import metadata_path, read_pose_table
from posed.engines.io import atomic_path
from posed.errors import ConfigError, DataError

NWB_HINT = "pip install 'posed[nwb]'"
REFERENCE_FRAME = ("(0,0) is the top-left corner of the video frame; x to the right, y down, "
                   "in pixels")


def _import_nwb() -> tuple[Any, Any]:
    try:
        import ndx_pose
        import pynwb
    except ImportError as exc:
        raise ConfigError(f"NWB export needs pynwb and ndx-pose ({exc.name} is missing): "
                          f"{NWB_HINT}") from None
    return pynwb, ndx_pose


def _accepts(cls: Any, name: str) -> bool:
    """Whether an hdmf/pynwb class's constructor takes argument ``name``."""
    args = getattr(cls.__init__, "__docval__", {}).get("args", [])
    return any(arg["name"] == name for arg in args)


def _video_facts(table: Path, video: Path | None,
                 fps: float | None) -> tuple[float, list[int] | None, int | None]:
    """Frame rate, [width, height] and frame count: from the video, else the table's _meta.json."""
    size = nframes = None
    if video is not None:
        from posed.engines.video import probe_video

        info = probe_video(video)
        fps = fps or info.fps
        size = [int(info.width), int(info.height)]
        nframes = int(info.nframes) if info.nframes else None
    else:
        meta = metadata_path(table)
        if meta.is_file():
            try:
                facts = json.loads(meta.read_text())
            except (OSError, ValueError) as exc:
                raise DataError(f"{meta}: unreadable ({exc})") from None
            fps = fps or facts.get("fps")
            if facts.get("frame_dimensions"):
                height, width = facts["frame_dimensions"]
                size = [int(width), int(height)]
    if not fps or fps <= 0:
        raise ConfigError(f"{table}: frame rate unknown (pass --video or --fps)")
    return float(fps), size, nframes


def export_nwb(table: str | Path, out: str | Path, *, video: str | Path | None = None,
               fps: float | None = None, session_description: str | None = None,
               session_start: dt.datetime | None = None, identifier: str | None = None,
               subject_id: str | None = None,
               edges: Sequence[tuple[str, str]] = ()) -> Path:
    """Write one analysed single-animal table to an NWB file with ndx-pose.

    Args:
        table: The analysed .h5/.csv (row index = frame number).
        out: The .nwb file to write (replaced atomically if it exists).
        video: The analysed video: frame rate, size and the file named in the NWB file.
        fps: Frame rate; default the video's, else the one recorded in ``<table>_meta.json``.
        session_start: Start of the recording; default the video file's modification time
            (else now), since a video does not reliably record when it started.
        edges: Skeleton edges as pairs of body part names.

    Raises:
        DataError: the table or video cannot be read.
        ConfigError: no frame rate, unknown body part in ``edges``, or the extra is missing.
    """
    pynwb, ndx_pose = _import_nwb()
    table, out = Path(table), Path(out)
    video = Path(video) if video is not None else None
    df = read_pose_table(table)
    try:
        frames = np.asarray(df.index, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{table}: row index is not frame numbers (a video's table is "
                        "needed)") from None
    rate, size, nframes = _video_facts(table, video, fps)
    scorer = str(df.columns.get_level_values("scorer")[0])
    bodyparts = list(dict.fromkeys(df.columns.get_level_values("bodyparts")))
    for a, b in edges:
        for name in (a, b):
            if name not in bodyparts:
                raise ConfigError(f"skeleton edge {a}-{b}: no body part '{name}' in {table}")

    nwbfile = pynwb.NWBFile(
        session_description=session_description or f"poses of {(video or table).name}",
        identifier=identifier or str(uuid.uuid4()),
        session_start_time=_session_start(session_start, video),
        subject=pynwb.file.Subject(subject_id=subject_id) if subject_id else None)
    camera = nwbfile.create_device(name="camera", description=(
        f"camera that recorded {video.name}" if video else "camera of the analysed video"))
    # The video stays outside the file, referenced by an ImageSeries as NWB recommends.
    source = None
    if video is not None:
        count = {"num_samples": nframes} \
            if nframes and _accepts(pynwb.image.ImageSeries, "num_samples") else {}
        source = pynwb.image.ImageSeries(
            name="video", description="the analysed video", external_file=[str(video)],
            format="external", starting_frame=[0], rate=rate, unit="n/a", device=camera,
            dimension=size, **count)
        nwbfile.add_acquisition(source)
    skeleton = ndx_pose.Skeleton(
        name="skeleton", nodes=bodyparts,
        edges=np.array([[bodyparts.index(a), bodyparts.index(b)] for a, b in edges],
                       dtype=np.uint8).reshape(-1, 2))
    series = _pose_series(ndx_pose, df, scorer, bodyparts, frames / rate)
    # ndx-pose 0.2 names the video and camera directly; later versions link an ImageSeries.
    if _accepts(ndx_pose.PoseEstimation, "source_video"):
        where: dict[str, Any] = {"source_video": source, "device": camera}
    else:
        where = {"original_videos": [str(video)] if video else None, "devices": [camera],
                 "dimensions": np.array([size], dtype=np.uint16) if size else None}
    pose = ndx_pose.PoseEstimation(
        name="PoseEstimation", pose_estimation_series=series,
        description=f"{len(bodyparts)} body parts estimated by posed ({scorer}) at {rate:g} fps",
        scorer=scorer, source_software="posed", source_software_version=posed.__version__,
        skeleton=skeleton, **{k: v for k, v in where.items() if v is not None})
    behavior = nwbfile.create_processing_module(name="behavior",
                                                description="processed behavioral data")
    behavior.add(ndx_pose.Skeletons(skeletons=[skeleton]))
    behavior.add(pose)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        with pynwb.NWBHDF5IO(str(tmp), "w") as io:
            io.write(nwbfile)
    return out


def _session_start(session_start: dt.datetime | None, video: Path | None) -> dt.datetime:
    """The session start, with a time zone (NWB requires one): by default the video file's
    modification time, else now."""
    if session_start is None:
        stamp = video.stat().st_mtime if video is not None else dt.datetime.now().timestamp()
        return dt.datetime.fromtimestamp(stamp).astimezone()
    if session_start.tzinfo is None:
        return session_start.astimezone()
    return session_start


def _pose_series(ndx_pose: Any, df: Any, scorer: str, bodyparts: list[str],
                 timestamps: np.ndarray) -> list[Any]:
    """One ``PoseEstimationSeries`` per body part of the table."""
    series: list[Any] = []
    for bp in bodyparts:
        part = df[scorer][bp]
        series.append(ndx_pose.PoseEstimationSeries(
            name=bp, description=f"position of {bp} estimated by {scorer}",
            data=part[["x", "y"]].to_numpy(np.float64), unit="pixels",
            reference_frame=REFERENCE_FRAME,
            # Every series shares the first one's timestamps instead of storing a copy.
            timestamps=series[0] if series else timestamps,
            confidence=part["likelihood"].to_numpy(np.float64),
            confidence_definition="likelihood of the predicted position, 0 to 1"))
    return series
