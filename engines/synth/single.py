"""Single-animal synthetic DeepLabCut projects (labels, video and ground truth)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
from posed.engines.synth.render import (
    FPS,
    AnimalState,
    drawn_extent,
    make_background,
    random_appearance,
    random_state,
    render_animal,
)
from posed.engines.synth.walk import random_gait, random_loop, walk_states
from posed.engines.synth.writer import (
    DEFAULT_BODYPARTS,
    check_args,
    project_root,
    write_project,
)


def _video_states(size: tuple[int, int], n: int, rng: np.random.Generator) -> list[AnimalState]:
    """A smooth walk along a wobbly loop that fills the frame."""
    w, h = size
    dim = min(w, h)
    margin = max(2.0, 0.04 * dim)
    t = np.arange(n + 1) / float(FPS)  # one extra sample for the last finite difference
    loop = random_loop(rng, 6.0)
    unit = loop.unit(t)
    heading, turn = loop.heading(t)
    gait = random_gait(rng)
    length = rng.uniform(0.28, 0.34) * dim
    # The animal may point anywhere along the loop, so keep the centre one radius (the
    # farthest drawn point over the whole clip) away from the edges.
    for _ in range(60):
        states = walk_states(t, heading, turn, length, gait, n)
        radius = max(float(np.linalg.norm(drawn_extent(s), axis=1).max()) for s in states)
        span = np.array([w - 1, h - 1]) - 2.0 * (margin + radius)
        if np.all(span >= 0.2 * dim):
            break
        length *= 0.93
    span = np.maximum(span, 0.0)
    centre = np.array([(w - 1) / 2.0, (h - 1) / 2.0])
    scale = np.array([span[0] / 2.0 / 1.08, span[1] / 2.0 / (loop.ratio + 0.08)])
    scale[:] = scale.min()  # the same scale on both axes keeps heading == direction of motion
    return [
        replace(
            s,
            x=float(centre[0] + scale[0] * unit[0, i]),
            y=float(centre[1] + scale[1] * unit[1, i]),
        )
        for i, s in enumerate(states)
    ]


def generate_project(out: str | Path, *, frames: int = 60, size: tuple[int, int] = (128, 128),
                     bodyparts: Sequence[str] = DEFAULT_BODYPARTS, seed: int = 0,
                     video_frames: int = 60, task: str = "synth", scorer: str = "synth",
                     progress: bool = False, missing_rate: float = 0.05) -> Path:
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
    names = check_args(frames, size, bodyparts, seed, video_frames, task, scorer, missing_rate)
    size = (int(size[0]), int(size[1]))
    root = project_root(out)
    # Independent streams, so that e.g. changing video_frames leaves the labelled frames alone.
    ss_scene, ss_labels, ss_video = np.random.SeedSequence(seed).spawn(3)
    scene_rng = np.random.default_rng(ss_scene)
    background = make_background(size, scene_rng)
    appearance = random_appearance(background, scene_rng)

    def labelled() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        rng = np.random.default_rng(ss_labels)
        for _ in range(frames):
            state = random_state(size, rng, missing_rate=missing_rate)
            yield render_animal(size, state, rng, appearance=appearance, background=background)

    def video() -> Iterator[tuple[np.ndarray, list[str]]]:
        rng = np.random.default_rng(ss_video)
        for i, state in enumerate(_video_states(size, video_frames, rng)):
            image, kp = render_animal(
                size, state, rng, appearance=appearance, background=background, gain=1.0
            )
            yield image, [",".join([str(i)] + [f"{v:.4f}" for v in kp[: len(names)].reshape(-1)])]

    header = ",".join(["frame"] + [f"{bp}_{c}" for bp in names for c in ("x", "y")])
    return write_project(root, size, names, task, scorer, labelled=labelled(), frames=frames,
                         video=video(), video_frames=video_frames, truth_header=header,
                         progress=progress)
