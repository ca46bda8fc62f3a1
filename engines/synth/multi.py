"""Multi-animal synthetic DeepLabCut projects: animals that cross and cover one another,
with identities and per-part visibility in the ground truth."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from posed.engines.synth.render import (
    FPS,
    SHIFT,
    SUB,
    AnimalState,
    Appearance,
    animal_geometry,
    drawn_extent,
    fixed_point,
    make_background,
    random_appearance,
    random_state,
    render_animal,
)
from posed.engines.synth.walk import random_gait, random_loop, walk_states
from posed.engines.synth.writer import (
    DEFAULT_BODYPARTS,
    check_animals,
    check_args,
    project_root,
    write_project,
)

from posed.errors import DataError

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
    shapes, _ = animal_geometry(state)
    mask = np.zeros((h, w), dtype=np.uint8)
    for polys in shapes.values():
        for poly in polys:
            cv2.fillPoly(mask, [fixed_point(poly)], 1, cv2.LINE_8, SHIFT)
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
    t = np.arange(n + 1) / float(FPS)
    base_length = _multi_length(size, animals)
    out: list[list[AnimalState]] = []
    for a in range(animals):
        loop = random_loop(rng, 5.0, direction=1.0 if a % 2 == 0 else -1.0)
        offset = rng.uniform(-0.08, 0.08, size=2) * dim
        unit = loop.unit(t)
        # Clockwise and anticlockwise loops both face the direction of motion.
        heading, turn = loop.heading(t)
        length = base_length * rng.uniform(0.9, 1.1)
        states = walk_states(t, heading, turn, length, random_gait(rng), n)
        # Keep every drawn point inside the frame: the loop's reach plus the animal's radius.
        radius = max(float(np.linalg.norm(drawn_extent(s), axis=1).max()) for s in states)
        centre = np.array([(w - 1) / 2.0, (h - 1) / 2.0]) + offset
        room = np.minimum(centre, np.array([w - 1, h - 1]) - centre) - margin - radius
        scale = max(0.0, float(np.min(room / np.array([1.08, loop.ratio + 0.08]))))
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
    bodyparts: Sequence[str] = DEFAULT_BODYPARTS,
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
    animals = check_animals(animals)
    names = check_args(1, size, bodyparts, seed, video_frames, "synth", "synth", 0.0)
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
        kp = np.stack([np.round(animal_geometry(s)[1] * SUB) / SUB for s in frame_states])
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


def generate_multianimal_project(out: str | Path, *, animals: int = 3, frames: int = 20,
                                 size: tuple[int, int] = (160, 160),
                                 bodyparts: Sequence[str] = DEFAULT_BODYPARTS, seed: int = 0,
                                 video_frames: int = 90, task: str = "synth",
                                 scorer: str = "synth", progress: bool = False,
                                 missing_rate: float = 0.05) -> Path:
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
        missing_rate: Probability that an ear is hidden in a labelled frame.

    The other arguments, the result and the errors are those of :func:`generate_project`.
    """
    animals = check_animals(animals)
    names = check_args(frames, size, bodyparts, seed, video_frames, task, scorer, missing_rate)
    size = (int(size[0]), int(size[1]))
    root = project_root(out)
    ss_scene, ss_labels, ss_video, ss_noise = _multi_streams(seed)
    scene_rng = np.random.default_rng(ss_scene)
    background = make_background(size, scene_rng)
    appearances = [random_appearance(background, scene_rng) for _ in range(animals)]
    individuals = tuple(f"individual{i + 1}" for i in range(animals))

    def labelled() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        rng = np.random.default_rng(ss_labels)
        length = _multi_length(size, animals)
        for _ in range(frames):
            states = _apart_states(size, animals, rng, missing_rate, length)
            kp = _labels(size, states)
            gain, noise = rng.uniform(0.85, 1.15), rng.uniform(1.5, 4.0)
            yield _draw(size, background, appearances, states, rng, gain, noise), kp

    def video() -> Iterator[tuple[np.ndarray, list[str]]]:
        all_states = _multi_video_states(
            size, video_frames, animals, np.random.default_rng(ss_video)
        )
        truth = _truth(size, all_states, names)
        noise_rng = np.random.default_rng(ss_noise)
        for f, states in enumerate(all_states):
            image = _draw(size, background, appearances, states, noise_rng, 1.0, 2.0)
            yield image, _truth_lines(truth, f)

    header = ",".join(["frame", "individual", "identity"]
                      + [f"{bp}_{c}" for bp in names for c in ("x", "y", "visible")])
    return write_project(root, size, names, task, scorer, labelled=labelled(), frames=frames,
                         video=video(), video_frames=video_frames, truth_header=header,
                         individuals=individuals, progress=progress)


def _labels(size: tuple[int, int], states: Sequence[AnimalState]) -> np.ndarray:
    """I×CATALOGUE×2 keypoints of the animals of a labelled frame, on the drawing grid; NaN
    where a part is hidden or covered."""
    kp = np.stack([animal_geometry(s)[1] for s in states])
    kp = np.round(kp * SUB) / SUB
    kp[~_visible(size, states, kp)] = np.nan
    return kp


def _truth_lines(truth: MultiAnimalTruth, f: int) -> list[str]:
    """Frame ``f``'s lines of the truth file, one per individual."""
    rows = []
    for a, name in enumerate(truth.individuals):
        cells = [str(f), name, str(a)]
        for j in range(len(truth.bodyparts)):
            x, y = truth.keypoints[f, a, j]
            cells += [f"{x:.4f}", f"{y:.4f}", str(int(truth.visible[f, a, j]))]
        rows.append(",".join(cells))
    return rows


def _apart_states(size: tuple[int, int], animals: int, rng: np.random.Generator,
                  missing_rate: float, length: float) -> list[AnimalState]:
    """Random poses of the animals of a labelled frame, resampled a few times so that
    animals overlap only partly."""
    states: list[AnimalState] = []
    for _ in range(animals):
        for _try in range(30):
            state = random_state(
                size, rng, missing_rate=missing_rate, length=length * rng.uniform(0.9, 1.1)
            )
            if all(math.hypot(state.x - o.x, state.y - o.y) >= 0.6 * o.length for o in states):
                break
        states.append(state)
    return states


def _draw(size: tuple[int, int], background: np.ndarray, appearances: Sequence[Appearance],
          states: Sequence[AnimalState], rng: np.random.Generator, gain: float,
          noise: float) -> np.ndarray:
    """The animals drawn in index order on ``background``; gain and sensor noise once, over
    the finished picture."""
    image = background
    for a, state in enumerate(states):
        last = a == len(states) - 1
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
