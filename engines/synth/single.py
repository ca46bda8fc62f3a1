"""Single-animal synthetic DeepLabCut projects (labels, video and ground truth)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
from posed.engines.synth.render import (
    _DATE,
    _FPS,
    _MIN_SIZE,
    CATALOGUE,
    VIDEO_NAME,
    AnimalState,
    _extent,
    make_background,
    random_appearance,
    random_state,
    render_animal,
)

from posed.errors import ConfigError

# --------------------------------------------------------------------------------------------
# Video trajectory
# --------------------------------------------------------------------------------------------


def _video_states(size: tuple[int, int], n: int, rng: np.random.Generator) -> list[AnimalState]:
    """A smooth walk along a wobbly loop: heading follows the direction of motion and the
    body bends into turns."""
    w, h = size
    dim = min(w, h)
    margin = max(2.0, 0.04 * dim)
    fps = float(_FPS)
    t = np.arange(n + 1) / fps  # one extra sample for the last finite difference
    period = rng.uniform(3.0, 6.0)
    omega = 2.0 * np.pi / period * rng.choice([-1.0, 1.0])
    phase0 = rng.uniform(0.0, 2.0 * np.pi)
    wob_f = rng.uniform(2.0, 3.0) * abs(omega)
    wob_p = rng.uniform(0.0, 2.0 * np.pi, size=2)
    ratio = rng.uniform(0.6, 1.0)  # y radius / x radius of the loop

    def unit_path(tt):
        phi = phase0 + omega * tt
        wob = 0.08 * np.stack([np.sin(wob_f * tt + wob_p[0]), np.cos(wob_f * tt + wob_p[1])])
        return np.stack([np.cos(phi), ratio * np.sin(phi)]) + wob

    unit = unit_path(t)
    vel = unit_path(t + 1e-3) - unit
    heading = np.unwrap(np.arctan2(vel[1], vel[0]))
    turn = np.gradient(heading) * fps  # rad/s; positive turns towards the animal's right

    shape = dict(
        width_ratio=rng.uniform(0.45, 0.52),
        tail_ratio=rng.uniform(0.65, 0.8),
    )
    curl0 = rng.uniform(-0.6, 0.6)
    tail_f = rng.uniform(1.5, 3.0)
    head_f = rng.uniform(0.8, 1.6)
    length = rng.uniform(0.28, 0.34) * dim

    def states_for(length_px: float) -> list[AnimalState]:
        out = []
        for i in range(n):
            out.append(
                AnimalState(
                    x=0.0,
                    y=0.0,
                    heading=float(heading[i]),
                    length=length_px,
                    bend=float(np.clip(-0.25 * turn[i], -0.3, 0.3)),
                    head_turn=float(
                        np.clip(0.2 * turn[i], -0.4, 0.4)
                        + 0.2 * math.sin(head_f * 2 * np.pi * t[i])
                    ),
                    tail_curl=float(curl0 + 0.5 * math.sin(tail_f * 2 * np.pi * t[i])),
                    tail_wave=float(0.3 * math.sin(tail_f * np.pi * t[i] + 1.0)),
                    **shape,
                )
            )
        return out

    # The animal may point anywhere along the loop, so keep the centre one radius (the
    # farthest drawn point over the whole clip) away from the edges.
    for _ in range(60):
        states = states_for(length)
        radius = max(float(np.linalg.norm(_extent(s), axis=1).max()) for s in states)
        span = np.array([w - 1, h - 1]) - 2.0 * (margin + radius)
        if np.all(span >= 0.2 * dim):
            break
        length *= 0.93
    span = np.maximum(span, 0.0)
    centre = np.array([(w - 1) / 2.0, (h - 1) / 2.0])
    # unit path stays within +-(1.08, ratio + 0.08) of the origin.
    scale = np.array([span[0] / 2.0 / 1.08, span[1] / 2.0 / (ratio + 0.08)])
    scale[:] = scale.min()  # the same scale on both axes keeps heading == direction of motion
    return [
        replace(
            s,
            x=float(centre[0] + scale[0] * unit[0, i]),
            y=float(centre[1] + scale[1] * unit[1, i]),
        )
        for i, s in enumerate(states)
    ]


# --------------------------------------------------------------------------------------------
# Project writer
# --------------------------------------------------------------------------------------------


def _check_args(frames, size, bodyparts, seed, video_frames, task, scorer, missing_rate):
    def is_int(v):
        return isinstance(v, int | np.integer) and not isinstance(v, bool)

    if not is_int(frames) or frames < 1:
        raise ConfigError(f"synth: frames must be an integer >= 1, got {frames!r}")
    if not is_int(video_frames) or video_frames < 0:
        raise ConfigError(f"synth: video_frames must be an integer >= 0, got {video_frames!r}")
    if (
        not isinstance(size, Sequence)
        or len(size) != 2
        or not all(is_int(v) and v >= _MIN_SIZE for v in size)
    ):
        raise ConfigError(
            f"synth: size must be (width, height) integers >= {_MIN_SIZE}, got {size!r}"
        )
    if video_frames and (size[0] % 2 or size[1] % 2):
        raise ConfigError(
            f"synth: size {size[0]}x{size[1]} must have even sides for the H.264 yuv420p video "
            "(or pass video_frames=0)"
        )
    if not is_int(seed) or seed < 0:
        raise ConfigError(f"synth: seed must be an integer >= 0, got {seed!r}")
    for key, value in (("task", task), ("scorer", scorer)):
        if not isinstance(value, str) or not value.strip() or any(c in value for c in "/\\:"):
            raise ConfigError(
                f"synth: {key} must be a non-empty name without / \\ or :, got {value!r}"
            )
    if not isinstance(missing_rate, int | float) or not 0.0 <= missing_rate <= 1.0:
        raise ConfigError(f"synth: missing_rate must be between 0 and 1, got {missing_rate!r}")
    if isinstance(bodyparts, str) or not isinstance(bodyparts, Sequence) or not bodyparts:
        raise ConfigError(f"synth: bodyparts must be a non-empty list of names, got {bodyparts!r}")
    names = list(bodyparts)
    if len(names) > len(CATALOGUE):
        raise ConfigError(
            f"synth: {len(names)} bodyparts requested, at most {len(CATALOGUE)} "
            f"({', '.join(CATALOGUE)})"
        )
    for name in names:
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"synth: bodyparts entries must be non-empty strings, got {name!r}")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"synth: bodyparts lists {', '.join(dupes)} more than once")
    return tuple(names)


def _config_text(
    root: Path,
    video: Path | None,
    size,
    bodyparts,
    task: str,
    scorer: str,
    individuals: Sequence[str] | None = None,
) -> str:
    import yaml

    w, h = size
    skeleton = [["snout", "tailbase"]] if {"snout", "tailbase"} <= set(bodyparts) else []
    parts: dict = {"bodyparts": list(bodyparts)}
    training: dict = {"default_augmenter": "default"}
    if individuals:
        # DeepLabCut's multi-animal keys; 'bodyparts' then only says "see the lists above".
        parts = {
            "individuals": list(individuals),
            "uniquebodyparts": [],
            "multianimalbodyparts": list(bodyparts),
            "bodyparts": "MULTI!",
        }
        skeleton = [list(edge) for edge in skeleton_for(bodyparts)]
        training = {"default_augmenter": "multi-animal-imgaug", "default_track_method": "ellipse"}

    def block(comment: str, mapping: dict) -> str:
        text = yaml.safe_dump(mapping, sort_keys=False, default_flow_style=False)
        return f"# {comment}\n{text}\n"

    return "".join(
        [
            block(
                "Project definitions (do not edit)",
                {
                    "Task": task,
                    "scorer": scorer,
                    "date": _DATE,
                    "multianimalproject": bool(individuals),
                    "identity": False if individuals else None,
                },
            ),
            block("Project path (change when moving around)", {"project_path": str(root)}),
            block("Default DeepLabCut engine to use for shuffle creation", {"engine": "pytorch"}),
            block(
                "Annotation data set configuration (and individual video cropping parameters)",
                {
                    "video_sets": {str(video): {"crop": f"0, {w}, 0, {h}"}} if video else {},
                    **parts,
                },
            ),
            block(
                "Fraction of video to start/stop when extracting frames for labeling/refinement",
                {"start": 0, "stop": 1, "numframes2pick": 20},
            ),
            block(
                "Plotting configuration",
                {
                    "skeleton": skeleton,
                    "skeleton_color": "black",
                    "pcutoff": 0.6,
                    "dotsize": 4,
                    "alphavalue": 0.7,
                    "colormap": "rainbow",
                },
            ),
            block(
                "Training, evaluation and analysis configuration",
                {
                    "TrainingFraction": [0.8],
                    "iteration": 0,
                    "default_net_type": "mobilenet_v2_0.35",
                    **training,
                    "snapshotindex": -1,
                    "batch_size": 8,
                },
            ),
            block(
                "Cropping parameters (for analysis and outlier frame detection)",
                {"cropping": False, "x1": 0, "x2": w, "y1": 0, "y2": h},
            ),
            block(
                "Refinement configuration",
                {"corner2move2": [50, 50], "move2corner": True},
            ),
        ]
    )


def _write_labels(
    folder: Path,
    video: str,
    images: list[str],
    keypoints: np.ndarray,
    bodyparts: tuple[str, ...],
    scorer: str,
) -> None:
    import pandas as pd

    columns = pd.MultiIndex.from_product(
        [[scorer], list(bodyparts), ["x", "y"]], names=["scorer", "bodyparts", "coords"]
    )
    index = pd.MultiIndex.from_tuples([("labeled-data", video, name) for name in images])
    df = pd.DataFrame(
        keypoints.reshape(len(images), -1).astype(np.float64), index=index, columns=columns
    )
    # Fixed format, as DeepLabCut 2.2+ writes it: PyTables 'table' format cannot store a
    # row MultiIndex together with MultiIndex columns.
    df.to_hdf(folder / f"CollectedData_{scorer}.h5", key="df_with_missing", mode="w")
    df.to_csv(folder / f"CollectedData_{scorer}.csv")


def _write_video(path: Path, frames: list[np.ndarray]) -> None:
    import av

    h, w = frames[0].shape[:2]
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=_FPS)
        stream.width = w
        stream.height = h
        stream.pix_fmt = "yuv420p"
        # Near-lossless and single-threaded: small clips, reproducible output.
        stream.options = {"crf": "12", "preset": "medium", "threads": "1"}
        for image in frames:
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def generate_project(
    out: str | Path,
    *,
    frames: int = 60,
    size: tuple[int, int] = (128, 128),
    bodyparts: Sequence[str] = ("snout", "leftear", "rightear", "tailbase"),
    seed: int = 0,
    video_frames: int = 60,
    task: str = "synth",
    scorer: str = "synth",
    progress: bool = False,
    missing_rate: float = 0.05,
) -> Path:
    """Writes a synthetic single-animal DeepLabCut project.

    The project holds ``config.yaml``; ``labeled-data/synth1/img0000.png``... with
    ``CollectedData_<scorer>.h5`` (key ``df_with_missing``, DLC 2.2+ three-level row index)
    and the same table as ``.csv``; ``videos/synth1.mp4`` (H.264, yuv420p, 30 fps; the animal
    walking smoothly over the same floor); and ``videos/synth1_truth.csv`` with the video's
    true keypoints (``frame,<bp>_x,<bp>_y,...``). Output is identical for the same arguments
    and seed (apart from the absolute paths in ``config.yaml``).

    Args:
        out: Project folder to create; it must not exist or be empty.
        frames: Number of labelled frames.
        size: (width, height) of frames and video.
        bodyparts: Body part names; the i-th name labels the i-th :data:`CATALOGUE` landmark.
        seed: Random seed.
        video_frames: Number of video frames; 0 writes no video.
        task: Config ``Task``.
        scorer: Config ``scorer``.
        progress: Show a progress bar on stderr.
        missing_rate: Probability that an ear is hidden (and unlabelled) in a labelled frame.

    Returns:
        Path of the written ``config.yaml``.

    Raises:
        ConfigError: An argument is invalid, or ``out`` exists and is not an empty folder.
    """
    import cv2
    from tqdm import tqdm

    names = _check_args(frames, size, bodyparts, seed, video_frames, task, scorer, missing_rate)
    size = (int(size[0]), int(size[1]))
    root = Path(out).expanduser().resolve()
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise ConfigError(f"{root}: exists and is not an empty folder")

    # Independent streams, so that e.g. changing video_frames leaves the labelled frames alone.
    ss_scene, ss_labels, ss_video = np.random.SeedSequence(seed).spawn(3)
    scene_rng = np.random.default_rng(ss_scene)
    background = make_background(size, scene_rng)
    appearance = random_appearance(background, scene_rng)

    labeled = root / "labeled-data" / VIDEO_NAME
    labeled.mkdir(parents=True, exist_ok=True)
    k = len(names)
    bar = tqdm(total=frames + video_frames, disable=not progress, desc="synth", unit="frame")
    with bar:
        rng = np.random.default_rng(ss_labels)
        images: list[str] = []
        keypoints = np.empty((frames, k, 2), dtype=np.float64)
        for i in range(frames):
            state = random_state(size, rng, missing_rate=missing_rate)
            image, kp = render_animal(
                size, state, rng, appearance=appearance, background=background
            )
            name = f"img{i:04d}.png"
            if not cv2.imwrite(str(labeled / name), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
                raise OSError(f"{labeled / name}: cannot write image")
            images.append(name)
            keypoints[i] = kp[:k]
            bar.update()
        _write_labels(labeled, VIDEO_NAME, images, keypoints, names, scorer)

        video_path = None
        if video_frames:
            videos = root / "videos"
            videos.mkdir(exist_ok=True)
            video_path = videos / f"{VIDEO_NAME}.mp4"
            rng = np.random.default_rng(ss_video)
            rendered = []
            truth_rows = []
            for i, state in enumerate(_video_states(size, video_frames, rng)):
                image, kp = render_animal(
                    size, state, rng, appearance=appearance, background=background, gain=1.0
                )
                rendered.append(image)
                truth_rows.append(",".join([str(i)] + [f"{v:.4f}" for v in kp[:k].reshape(-1)]))
                bar.update()
            _write_video(video_path, rendered)
            header = ",".join(["frame"] + [f"{bp}_{c}" for bp in names for c in ("x", "y")])
            (videos / f"{VIDEO_NAME}_truth.csv").write_text(
                "\n".join([header, *truth_rows]) + "\n", encoding="utf-8"
            )

    config_path = root / "config.yaml"
    config_path.write_text(
        _config_text(root, video_path, size, names, task, scorer), encoding="utf-8"
    )
    return config_path


# Each CATALOGUE slot's neighbour towards the body centre ('spine'), so any subset of slots
# can be joined into a tree skeleton (see skeleton_for).
_PARENT = {
    "snout": "neck",
    "leftear": "snout",
    "rightear": "snout",
    "neck": "spine",
    "spine": None,
    "tailbase": "spine",
    "tailmid": "tailbase",
    "tailend": "tailmid",
    "leftside": "spine",
    "rightside": "spine",
}


def skeleton_for(bodyparts: Sequence[str]) -> list[tuple[str, str]]:
    """A tree skeleton over the given body parts of the synthetic animal.

    The i-th name stands for the i-th :data:`CATALOGUE` slot. Every part is joined to its
    nearest chosen ancestor on the animal's anatomy (snout - neck - spine - tailbase - tail,
    ears on the snout, flanks on the spine); parts without one join the chosen part closest to
    the body centre. The result connects all parts, as DeepLabCut requires of
    ``multianimalbodyparts`` for part-affinity fields.

    Args:
        bodyparts: Body part names (at most ``len(CATALOGUE)``).

    Returns:
        ``len(bodyparts) - 1`` (parent, child) name pairs.
    """
    names = list(bodyparts)
    slot_of = {CATALOGUE[i]: name for i, name in enumerate(names)}

    def ancestors(slot: str) -> list[str]:
        out = []
        parent = _PARENT[slot]
        while parent is not None:
            out.append(parent)
            parent = _PARENT[parent]
        return out

    chosen = list(slot_of)
    root = min(chosen, key=lambda slot: (len(ancestors(slot)), CATALOGUE.index(slot)))
    edges = []
    for slot in chosen:
        if slot == root:
            continue
        parent = next((a for a in ancestors(slot) if a in slot_of), root)
        edges.append((slot_of[parent], slot_of[slot]))
    return edges
