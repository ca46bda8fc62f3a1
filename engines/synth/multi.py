"""Multi-animal synthetic DeepLabCut projects: animals that cross and cover one another,
with identities and per-part visibility in the ground truth."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from posed.engines.synth.render import (
    _FPS,
    _SHIFT,
    _SUB,
    VIDEO_NAME,
    AnimalState,
    _extent,
    _fixed,
    _geometry,
    make_background,
    random_appearance,
    random_state,
    render_animal,
)
from posed.engines.synth.single import _check_args, _config_text, _write_video

from posed.errors import ConfigError, DataError

# --------------------------------------------------------------------------------------------
# Several animals
# --------------------------------------------------------------------------------------------

def _multi_length(size: tuple[int, int], animals: int) -> float:
    # Smaller animals when there are more of them, so that they still have room to move.
    return min(size) * min(0.25, 0.12 * math.sqrt(3.0 / animals))


def _silhouette(size: tuple[int, int], state: AnimalState) -> np.ndarray:
    """Boolean HxW mask of the pixels the animal covers."""
    import cv2

    w, h = size
    shapes, _ = _geometry(state)
    mask = np.zeros((h, w), dtype=np.uint8)
    for polys in shapes.values():
        for poly in polys:
            cv2.fillPoly(mask, [_fixed(poly)], 1, cv2.LINE_8, _SHIFT)
    return mask.astype(bool)


def _visible(size: tuple[int, int], states: Sequence[AnimalState], keypoints: np.ndarray):
    """Which keypoints (IxK) are not covered by an animal drawn later (animals are drawn in
    index order) and are not hidden parts (NaN)."""
    w, h = size
    visible = np.isfinite(keypoints).all(axis=-1)
    cover = np.zeros((h, w), dtype=bool)
    for i in range(len(states) - 1, -1, -1):
        pts = keypoints[i]
        ok = visible[i]
        col = np.clip(np.round(np.nan_to_num(pts[:, 0])).astype(int), 0, w - 1)
        row = np.clip(np.round(np.nan_to_num(pts[:, 1])).astype(int), 0, h - 1)
        visible[i] = ok & ~cover[row, col]
        if i:
            cover |= _silhouette(size, states[i])
    return visible


def _multi_video_states(
    size: tuple[int, int], n: int, animals: int, rng: np.random.Generator
) -> list[list[AnimalState]]:
    """Per animal, a smooth walk along its own wobbly loop. The loops share the middle of the
    arena and neighbouring animals go round in opposite directions, so paths cross and
    animals pass over one another."""
    w, h = size
    dim = min(w, h)
    margin = max(2.0, 0.04 * dim)
    fps = float(_FPS)
    t = np.arange(n + 1) / fps
    base_length = _multi_length(size, animals)
    out: list[list[AnimalState]] = []
    for a in range(animals):
        period = rng.uniform(3.0, 5.0)
        omega = 2.0 * np.pi / period * (1.0 if a % 2 == 0 else -1.0)
        phase0 = rng.uniform(0.0, 2.0 * np.pi)
        wob_f = rng.uniform(2.0, 3.0) * abs(omega)
        wob_p = rng.uniform(0.0, 2.0 * np.pi, size=2)
        ratio = rng.uniform(0.6, 1.0)
        offset = rng.uniform(-0.08, 0.08, size=2) * dim

        def unit_path(tt, phase0=phase0, omega=omega, wob_f=wob_f, wob_p=wob_p, ratio=ratio):
            phi = phase0 + omega * tt
            wob = 0.08 * np.stack(
                [np.sin(wob_f * tt + wob_p[0]), np.cos(wob_f * tt + wob_p[1])]
            )
            return np.stack([np.cos(phi), ratio * np.sin(phi)]) + wob

        unit = unit_path(t)
        vel = unit_path(t + 1e-3) - unit
        # Clockwise and anticlockwise loops both face the direction of motion.
        heading = np.unwrap(np.arctan2(vel[1], vel[0]))
        turn = np.gradient(heading) * fps
        length = base_length * rng.uniform(0.9, 1.1)
        width_ratio = rng.uniform(0.45, 0.52)
        tail_ratio = rng.uniform(0.65, 0.8)
        curl0 = rng.uniform(-0.6, 0.6)
        tail_f = rng.uniform(1.5, 3.0)
        head_f = rng.uniform(0.8, 1.6)
        states = [
            AnimalState(
                x=0.0,
                y=0.0,
                heading=float(heading[i]),
                length=length,
                width_ratio=width_ratio,
                bend=float(np.clip(-0.25 * turn[i], -0.3, 0.3)),
                head_turn=float(
                    np.clip(0.2 * turn[i], -0.4, 0.4) + 0.2 * math.sin(head_f * 2 * np.pi * t[i])
                ),
                tail_curl=float(curl0 + 0.5 * math.sin(tail_f * 2 * np.pi * t[i])),
                tail_wave=float(0.3 * math.sin(tail_f * np.pi * t[i] + 1.0)),
                tail_ratio=tail_ratio,
            )
            for i in range(n)
        ]
        # Keep every drawn point inside the frame: the loop's reach plus the animal's radius.
        radius = max(float(np.linalg.norm(_extent(s), axis=1).max()) for s in states)
        centre = np.array([(w - 1) / 2.0, (h - 1) / 2.0]) + offset
        room = np.minimum(centre, np.array([w - 1, h - 1]) - centre) - margin - radius
        scale = max(0.0, float(np.min(room / np.array([1.08, ratio + 0.08]))))
        out.append(
            [
                replace(
                    s,
                    x=float(centre[0] + scale * unit[0, i]),
                    y=float(centre[1] + scale * unit[1, i]),
                )
                for i, s in enumerate(states)
            ]
        )
    return [[out[a][i] for a in range(animals)] for i in range(n)]


def _multi_streams(seed: int) -> list[np.random.SeedSequence]:
    # scene, labelled frames, video trajectories, video sensor noise
    return np.random.SeedSequence(seed).spawn(4)


def _check_animals(animals) -> int:
    if not isinstance(animals, int | np.integer) or isinstance(animals, bool) or animals < 1:
        raise ConfigError(f"synth: animals must be an integer >= 1, got {animals!r}")
    return int(animals)


@dataclass(frozen=True)
class MultiAnimalTruth:
    """Ground truth of a synthetic multi-animal video.

    Attributes:
        keypoints: float64 NxIxKx2 true (x, y) of every individual's body parts, whether
            visible or not (NaN only for parts that are not drawn).
        visible: bool NxIxK: the part is drawn and not covered by another animal.
        individuals: The I identities (``individual1`` ...), index i is identity i.
        bodyparts: The K body part names.
    """

    keypoints: np.ndarray
    visible: np.ndarray
    individuals: tuple[str, ...]
    bodyparts: tuple[str, ...]


def multianimal_video_truth(
    size: tuple[int, int],
    video_frames: int,
    animals: int,
    seed: int = 0,
    bodyparts: Sequence[str] = ("snout", "leftear", "rightear", "tailbase"),
) -> MultiAnimalTruth:
    """The ground truth :func:`generate_multianimal_project` writes for its video, computed
    without rendering (for tracking tests and benchmarks).

    Args:
        size: (width, height) in pixels.
        video_frames: Number of frames.
        animals: Number of animals.
        seed: Random seed, as for :func:`generate_multianimal_project`.
        bodyparts: Body part names (i-th name = i-th :data:`CATALOGUE` slot).

    Returns:
        The truth; equal to what the project's ``videos/synth1_truth.csv`` holds (which
        rounds to 1/10000 px).

    Raises:
        ConfigError: An argument is invalid.
    """
    animals = _check_animals(animals)
    names = _check_args(1, size, bodyparts, seed, video_frames, "synth", "synth", 0.0)
    size = (int(size[0]), int(size[1]))
    rng = np.random.default_rng(_multi_streams(seed)[2])
    return _truth(size, _multi_video_states(size, video_frames, animals, rng), names)


def _truth(
    size: tuple[int, int], states: list[list[AnimalState]], names: tuple[str, ...]
) -> MultiAnimalTruth:
    animals = len(states[0]) if states else 0
    k = len(names)
    keypoints = np.empty((len(states), animals, k, 2), dtype=np.float64)
    visible = np.empty((len(states), animals, k), dtype=bool)
    for f, frame_states in enumerate(states):
        # Rounded to the drawing grid, as render_animal returns them.
        kp = np.stack([np.round(_geometry(s)[1] * _SUB) / _SUB for s in frame_states])
        keypoints[f] = kp[:, :k]
        visible[f] = _visible(size, frame_states, kp)[:, :k]
    individuals = tuple(f"individual{i + 1}" for i in range(animals))
    return MultiAnimalTruth(keypoints, visible, individuals, names)


def read_multianimal_truth(path: str | Path) -> MultiAnimalTruth:
    """Reads a ``<video>_truth.csv`` written by :func:`generate_multianimal_project`.

    Args:
        path: The truth file.

    Returns:
        The truth (keypoints rounded to 1/10000 px as written).

    Raises:
        DataError: The file is missing or not a multi-animal truth file.
    """
    import csv

    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
    except OSError as exc:
        raise DataError(f"{path}: cannot read truth file ({exc.strerror or exc})") from exc
    if not rows or rows[0][:3] != ["frame", "individual", "identity"] or (len(rows[0]) - 3) % 3:
        raise DataError(
            f"{path}: not a multi-animal truth file (header frame,individual,identity,...)"
        )
    header = rows[0]
    bodyparts = tuple(name[: -len("_x")] for name in header[3::3])
    try:
        frames = np.array([int(r[0]) for r in rows[1:]])
        ids = np.array([int(r[2]) for r in rows[1:]])
        values = np.array([[float(v) for v in r[3:]] for r in rows[1:]], dtype=np.float64)
    except (ValueError, IndexError) as exc:
        raise DataError(f"{path}: malformed truth row ({exc})") from exc
    n_frames = int(frames.max()) + 1 if len(frames) else 0
    n_ids = int(ids.max()) + 1 if len(ids) else 0
    names = [""] * n_ids
    for r, i in zip(rows[1:], ids, strict=True):
        names[i] = r[1]
    k = len(bodyparts)
    keypoints = np.full((n_frames, n_ids, k, 2), np.nan)
    visible = np.zeros((n_frames, n_ids, k), dtype=bool)
    triples = values.reshape(len(values), k, 3)
    keypoints[frames, ids] = triples[..., :2]
    visible[frames, ids] = triples[..., 2] > 0.5
    return MultiAnimalTruth(keypoints, visible, tuple(names), bodyparts)


def _write_multianimal_labels(
    folder: Path,
    video: str,
    images: list[str],
    keypoints: np.ndarray,
    individuals: tuple[str, ...],
    bodyparts: tuple[str, ...],
    scorer: str,
) -> None:
    import pandas as pd

    columns = pd.MultiIndex.from_product(
        [[scorer], list(individuals), list(bodyparts), ["x", "y"]],
        names=["scorer", "individuals", "bodyparts", "coords"],
    )
    index = pd.MultiIndex.from_tuples([("labeled-data", video, name) for name in images])
    df = pd.DataFrame(
        keypoints.reshape(len(images), -1).astype(np.float64), index=index, columns=columns
    )
    # Fixed format, as for single-animal labels (see _write_labels).
    df.to_hdf(folder / f"CollectedData_{scorer}.h5", key="df_with_missing", mode="w")
    df.to_csv(folder / f"CollectedData_{scorer}.csv")


def generate_multianimal_project(
    out: str | Path,
    *,
    animals: int = 3,
    frames: int = 20,
    size: tuple[int, int] = (160, 160),
    bodyparts: Sequence[str] = ("snout", "leftear", "rightear", "tailbase"),
    seed: int = 0,
    video_frames: int = 90,
    task: str = "synth",
    scorer: str = "synth",
    progress: bool = False,
    missing_rate: float = 0.05,
) -> Path:
    """Writes a synthetic multi-animal DeepLabCut project.

    Like :func:`generate_project`, with ``animals`` animals per image, each with its own
    colours, drawn in index order (a later animal covers an earlier one). ``config.yaml``
    has ``multianimalproject: true``, ``individuals`` ``individual1`` ... ``individualN``,
    ``multianimalbodyparts`` and a tree ``skeleton`` (:func:`skeleton_for`). The labels
    (``CollectedData_<scorer>.h5``/``.csv``, columns ``scorer/individuals/bodyparts/coords``)
    leave out parts that another animal covers or that are hidden. In the video the animals
    walk loops through the middle of the arena in alternating directions, so they cross and
    occlude one another; ``videos/synth1_truth.csv`` has one row per frame and individual:
    ``frame,individual,identity,<bp>_x,<bp>_y,<bp>_visible,...`` with every part's true
    position (also when covered) and whether it is visible (1) or covered (0). Output is
    identical for the same arguments and seed.

    Args:
        out: Project folder to create; it must not exist or be empty.
        animals: Number of animals (individuals).
        frames: Number of labelled frames.
        size: (width, height) of frames and video.
        bodyparts: Body part names; the i-th name labels the i-th :data:`CATALOGUE` landmark.
        seed: Random seed.
        video_frames: Number of video frames; 0 writes no video.
        task: Config ``Task``.
        scorer: Config ``scorer``.
        progress: Show a progress bar on stderr.
        missing_rate: Probability that an ear is hidden in a labelled frame.

    Returns:
        Path of the written ``config.yaml``.

    Raises:
        ConfigError: An argument is invalid, or ``out`` exists and is not an empty folder.
    """
    import cv2
    from tqdm import tqdm

    animals = _check_animals(animals)
    names = _check_args(frames, size, bodyparts, seed, video_frames, task, scorer, missing_rate)
    size = (int(size[0]), int(size[1]))
    root = Path(out).expanduser().resolve()
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise ConfigError(f"{root}: exists and is not an empty folder")

    ss_scene, ss_labels, _, ss_noise = _multi_streams(seed)
    scene_rng = np.random.default_rng(ss_scene)
    background = make_background(size, scene_rng)
    appearances = [random_appearance(background, scene_rng) for _ in range(animals)]
    individuals = tuple(f"individual{i + 1}" for i in range(animals))

    def draw(states: Sequence[AnimalState], rng: np.random.Generator, gain, noise):
        image = background
        for a, state in enumerate(states):
            last = a == len(states) - 1
            # Gain and sensor noise once, over the finished picture.
            image, _ = render_animal(
                size,
                state,
                rng,
                appearance=appearances[a],
                background=image,
                gain=gain if last else 1.0,
                noise=noise if last else 0.0,
            )
        return image

    labeled = root / "labeled-data" / VIDEO_NAME
    labeled.mkdir(parents=True, exist_ok=True)
    k = len(names)
    length = _multi_length(size, animals)
    bar = tqdm(total=frames + video_frames, disable=not progress, desc="synth", unit="frame")
    with bar:
        rng = np.random.default_rng(ss_labels)
        images: list[str] = []
        keypoints = np.empty((frames, animals, k, 2), dtype=np.float64)
        for i in range(frames):
            states: list[AnimalState] = []
            for _ in range(animals):
                # Resample a few times so that animals overlap only partly.
                for _try in range(30):
                    state = random_state(
                        size, rng, missing_rate=missing_rate, length=length * rng.uniform(0.9, 1.1)
                    )
                    if all(
                        math.hypot(state.x - o.x, state.y - o.y) >= 0.6 * o.length for o in states
                    ):
                        break
                states.append(state)
            kp = np.stack([_geometry(s)[1] for s in states])
            kp = np.round(kp * _SUB) / _SUB
            vis = _visible(size, states, kp)
            kp[~vis] = np.nan
            image = draw(states, rng, rng.uniform(0.85, 1.15), rng.uniform(1.5, 4.0))
            name = f"img{i:04d}.png"
            if not cv2.imwrite(str(labeled / name), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
                raise OSError(f"{labeled / name}: cannot write image")
            images.append(name)
            keypoints[i] = kp[:, :k]
            bar.update()
        _write_multianimal_labels(
            labeled, VIDEO_NAME, images, keypoints, individuals, names, scorer
        )

        video_path = None
        if video_frames:
            videos = root / "videos"
            videos.mkdir(exist_ok=True)
            video_path = videos / f"{VIDEO_NAME}.mp4"
            rng = np.random.default_rng(_multi_streams(seed)[2])
            all_states = _multi_video_states(size, video_frames, animals, rng)
            truth = _truth(size, all_states, names)
            noise_rng = np.random.default_rng(ss_noise)
            rendered = []
            rows = []
            for f, states in enumerate(all_states):
                rendered.append(draw(states, noise_rng, 1.0, 2.0))
                for a in range(animals):
                    cells = [str(f), individuals[a], str(a)]
                    for j in range(k):
                        x, y = truth.keypoints[f, a, j]
                        cells += [f"{x:.4f}", f"{y:.4f}", str(int(truth.visible[f, a, j]))]
                    rows.append(",".join(cells))
                bar.update()
            _write_video(video_path, rendered)
            header = ",".join(
                ["frame", "individual", "identity"]
                + [f"{bp}_{c}" for bp in names for c in ("x", "y", "visible")]
            )
            (videos / f"{VIDEO_NAME}_truth.csv").write_text(
                "\n".join([header, *rows]) + "\n", encoding="utf-8"
            )

    config_path = root / "config.yaml"
    config_path.write_text(
        _config_text(root, video_path, size, names, task, scorer, individuals), encoding="utf-8"
    )
    return config_path
