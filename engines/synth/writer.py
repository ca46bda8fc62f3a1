"""What the single- and multi-animal project generators share: argument checks, the project
folder, ``config.yaml``, the label tables, the video and the loop that writes them all."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from posed.engines.synth.render import CATALOGUE, FPS, MIN_SIZE, VIDEO_NAME, skeleton_for

from posed.errors import ConfigError

DATE = "Jan1"  # fixed, so that a given seed always writes the same project
DEFAULT_BODYPARTS = ("snout", "leftear", "rightear", "tailbase")
"""The body parts of a generated project unless others are asked for."""


def check_args(frames, size, bodyparts, seed, video_frames, task, scorer, missing_rate):
    """Checks the common arguments of the generators; returns the body part names.

    Raises:
        ConfigError: One is invalid.
    """
    def is_int(v):
        return isinstance(v, int | np.integer) and not isinstance(v, bool)

    if not is_int(frames) or frames < 1:
        raise ConfigError(f"synth: frames must be an integer >= 1, got {frames!r}")
    if not is_int(video_frames) or video_frames < 0:
        raise ConfigError(f"synth: video_frames must be an integer >= 0, got {video_frames!r}")
    if (
        not isinstance(size, Sequence)
        or len(size) != 2
        or not all(is_int(v) and v >= MIN_SIZE for v in size)
    ):
        raise ConfigError(
            f"synth: size must be (width, height) integers >= {MIN_SIZE}, got {size!r}"
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
    return _check_bodyparts(bodyparts)


def _check_bodyparts(bodyparts) -> tuple[str, ...]:
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


def check_animals(animals) -> int:
    """The number of animals of a multi-animal project, checked."""
    if not isinstance(animals, int | np.integer) or isinstance(animals, bool) or animals < 1:
        raise ConfigError(f"synth: animals must be an integer >= 1, got {animals!r}")
    return int(animals)


def project_root(out: str | Path) -> Path:
    """The resolved project folder; it must not exist or be empty."""
    root = Path(out).expanduser().resolve()
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise ConfigError(f"{root}: exists and is not an empty folder")
    return root


# --------------------------------------------------------------------------------------------
# config.yaml
# --------------------------------------------------------------------------------------------


def _animal_keys(bodyparts, individuals: Sequence[str] | None) -> tuple[dict, list, dict]:
    """The body part keys, skeleton and training keys of a single- or (with ``individuals``)
    multi-animal config."""
    if not individuals:
        skeleton = [["snout", "tailbase"]] if {"snout", "tailbase"} <= set(bodyparts) else []
        return {"bodyparts": list(bodyparts)}, skeleton, {"default_augmenter": "default"}
    # DeepLabCut's multi-animal keys; 'bodyparts' then only says "see the lists above".
    parts = {
        "individuals": list(individuals),
        "uniquebodyparts": [],
        "multianimalbodyparts": list(bodyparts),
        "bodyparts": "MULTI!",
    }
    skeleton = [list(edge) for edge in skeleton_for(bodyparts)]
    training = {"default_augmenter": "multi-animal-imgaug", "default_track_method": "ellipse"}
    return parts, skeleton, training


def config_text(root: Path, video: Path | None, size, bodyparts, task: str, scorer: str,
                individuals: Sequence[str] | None = None) -> str:
    """DeepLabCut's ``config.yaml`` of a generated project, section by section."""
    import yaml

    w, h = size
    parts, skeleton, training = _animal_keys(bodyparts, individuals)
    video_sets = {str(video): {"crop": f"0, {w}, 0, {h}"}} if video else {}
    sections = [
        ("Project definitions (do not edit)", {
            "Task": task, "scorer": scorer, "date": DATE,
            "multianimalproject": bool(individuals),
            "identity": False if individuals else None,
        }),
        ("Project path (change when moving around)", {"project_path": str(root)}),
        ("Default DeepLabCut engine to use for shuffle creation", {"engine": "pytorch"}),
        ("Annotation data set configuration (and individual video cropping parameters)",
         {"video_sets": video_sets, **parts}),
        ("Fraction of video to start/stop when extracting frames for labeling/refinement",
         {"start": 0, "stop": 1, "numframes2pick": 20}),
        ("Plotting configuration", {
            "skeleton": skeleton, "skeleton_color": "black", "pcutoff": 0.6, "dotsize": 4,
            "alphavalue": 0.7, "colormap": "rainbow",
        }),
        ("Training, evaluation and analysis configuration", {
            "TrainingFraction": [0.8], "iteration": 0, "default_net_type": "mobilenet_v2_0.35",
            **training, "snapshotindex": -1, "batch_size": 8,
        }),
        ("Cropping parameters (for analysis and outlier frame detection)",
         {"cropping": False, "x1": 0, "x2": w, "y1": 0, "y2": h}),
        ("Refinement configuration", {"corner2move2": [50, 50], "move2corner": True}),
    ]
    return "".join(
        f"# {comment}\n{yaml.safe_dump(mapping, sort_keys=False, default_flow_style=False)}\n"
        for comment, mapping in sections
    )


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def write_labels(folder: Path, video: str, images: list[str], keypoints: np.ndarray,
                 bodyparts: tuple[str, ...], scorer: str,
                 individuals: tuple[str, ...] | None = None) -> None:
    """``CollectedData_<scorer>.h5`` and ``.csv`` of N×K×2 keypoints, or with ``individuals``
    N×I×K×2 (columns ``scorer/individuals/bodyparts/coords``)."""
    import pandas as pd

    inds = [] if individuals is None else [list(individuals)]
    columns = pd.MultiIndex.from_product(
        [[scorer], *inds, list(bodyparts), ["x", "y"]],
        names=["scorer", *(["individuals"] if inds else []), "bodyparts", "coords"],
    )
    index = pd.MultiIndex.from_tuples([("labeled-data", video, name) for name in images])
    df = pd.DataFrame(
        keypoints.reshape(len(images), -1).astype(np.float64), index=index, columns=columns
    )
    # Fixed format, as DeepLabCut 2.2+ writes it: PyTables 'table' format cannot store a
    # row MultiIndex together with MultiIndex columns.
    df.to_hdf(folder / f"CollectedData_{scorer}.h5", key="df_with_missing", mode="w")
    df.to_csv(folder / f"CollectedData_{scorer}.csv")


def write_video(path: Path, frames: list[np.ndarray]) -> None:
    """An H.264 (yuv420p, :data:`FPS` fps) video of RGB frames."""
    import av

    h, w = frames[0].shape[:2]
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=FPS)
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


def write_project(root: Path, size: tuple[int, int], names: tuple[str, ...], task: str,
                  scorer: str, *, labelled: Iterable[tuple[np.ndarray, np.ndarray]],
                  frames: int, video: Iterable[tuple[np.ndarray, list[str]]],
                  video_frames: int, truth_header: str,
                  individuals: tuple[str, ...] | None = None, progress: bool = False) -> Path:
    """Writes a generated project and returns its ``config.yaml``.

    Args:
        root: The project folder (see :func:`project_root`).
        size: (width, height) of frames and video.
        names: The body part names.
        task: Config ``Task``.
        scorer: Config ``scorer``.
        labelled: The labelled frames: (RGB image, keypoints) pairs: keypoints CATALOGUE×2, or
            I×CATALOGUE×2 with ``individuals``, NaN where not labelled.
        frames: Number of labelled frames.
        video: The video: (RGB frame, its lines of the truth file) pairs; not read when
            ``video_frames`` is 0.
        video_frames: Number of video frames.
        truth_header: First line of ``videos/<video>_truth.csv``.
        individuals: The individuals of a multi-animal project.
        progress: Show a progress bar on stderr.
    """
    import cv2
    from tqdm import tqdm

    labeled = root / "labeled-data" / VIDEO_NAME
    labeled.mkdir(parents=True, exist_ok=True)
    k = len(names)
    bar = tqdm(total=frames + video_frames, disable=not progress, desc="synth", unit="frame")
    with bar:
        images: list[str] = []
        keypoints = []
        for i, (image, kp) in enumerate(labelled):
            name = f"img{i:04d}.png"
            if not cv2.imwrite(str(labeled / name), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
                raise OSError(f"{labeled / name}: cannot write image")
            images.append(name)
            keypoints.append(np.asarray(kp, dtype=np.float64)[..., :k, :])
            bar.update()
        write_labels(labeled, VIDEO_NAME, images, np.stack(keypoints), names, scorer,
                     individuals)
        video_path = None
        if video_frames:
            videos = root / "videos"
            videos.mkdir(exist_ok=True)
            video_path = videos / f"{VIDEO_NAME}.mp4"
            rendered, rows = [], []
            for image, lines in video:
                rendered.append(image)
                rows += lines
                bar.update()
            write_video(video_path, rendered)
            (videos / f"{VIDEO_NAME}_truth.csv").write_text(
                "\n".join([truth_header, *rows]) + "\n", encoding="utf-8"
            )
    config_path = root / "config.yaml"
    config_path.write_text(
        config_text(root, video_path, size, names, task, scorer, individuals), encoding="utf-8"
    )
    return config_path
