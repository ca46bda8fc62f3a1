"""Semi-supervised training on unlabelled video frames, with confident pseudo-labels.

A lab labels a hundred frames of videos that hold thousands. From ``pseudo_labels.start`` of
the epochs on, the model being trained labels frames of those videos itself, and the rest of
training draws from them beside the hand labels (:class:`MixedSamples`). A part is kept only
where the model is consistent under a change of scale: the frame and the frame scaled by
:data:`VIEW_SCALE` both place it with likelihood >= ``pcutoff``, within ``agree_px`` of each
other. Other parts are left unlabelled, which the loss ignores (heatmap weight 0), so an
uncertain guess teaches nothing rather than something wrong.

The labels are written to ``<train folder>/pseudo-labels.csv`` (video, frame, x and y per
part; empty where not kept), for the user to inspect and for ``--resume`` to reuse. Labelled
frames (training and test) are never pseudo-labelled. Framework-neutral: a backend passes a
``predict(images) -> N×K×3`` callable.
"""

from __future__ import annotations

import csv
import logging
import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from posed.engines.io import atomic_write_text
from posed.engines.training.samples import SampleMaker
from posed.engines.training.settings import PseudoLabelConfig, TrainConfig
from posed.errors import ConfigError

log = logging.getLogger(__name__)

PSEUDO_FILE = "pseudo-labels.csv"
# The second view: a scale change inside the training augmentation's range, at which a
# well-localised part moves by a sub-cell amount on the score map grid.
VIEW_SCALE = 0.875
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".mpg", ".mpeg", ".wmv")

Predict = Callable[[list[np.ndarray]], np.ndarray]


def project_videos(project: Any) -> list[Path]:
    """The project's videos: files in ``videos/`` named like a ``labeled-data`` folder, else
    every video there."""
    folder = project.root / "videos"
    videos = sorted(p for p in folder.glob("*") if p.suffix.lower() in VIDEO_SUFFIXES) \
        if folder.is_dir() else []
    labelled = {p.name for p in (project.root / "labeled-data").glob("*") if p.is_dir()}
    named = [v for v in videos if v.stem in labelled]
    return named or videos


def resolve_videos(project: Any, cfg: PseudoLabelConfig) -> list[Path]:
    """The videos ``cfg`` names (relative to the project folder, or absolute), or the
    project's; each must exist."""
    if not cfg.videos:
        videos = project_videos(project)
        if not videos:
            raise ConfigError(f"key 'pseudo_labels.videos': {project.root / 'videos'} holds no "
                              f"video; name the videos to learn from")
        return videos
    out = []
    for name in cfg.videos:
        path = Path(name).expanduser()
        path = path if path.is_absolute() else project.root / path
        if not path.is_file():
            raise ConfigError(f"key 'pseudo_labels.videos': {path}: no such file")
        out.append(path)
    return out


def labelled_frames(images: Sequence[str]) -> dict[str, set[int]]:
    """Frame indices of labelled images per video stem: ``labeled-data/<stem>/img0042.png``."""
    out: dict[str, set[int]] = {}
    for name in images:
        parts = Path(name).parts
        digits = re.findall(r"\d+", Path(name).stem)
        if len(parts) >= 2 and digits:
            out.setdefault(parts[-2], set()).add(int(digits[-1]))
    return out


def pick_frames(lengths: Sequence[tuple[Path, int]], n: int,
                exclude: dict[str, set[int]]) -> list[tuple[Path, int]]:
    """About ``n`` frames evenly spaced over the videos (shares by length), none of them in
    ``exclude`` (video stem -> frame indices)."""
    free = [(v, [i for i in range(count) if i not in exclude.get(v.stem, set())])
            for v, count in lengths]
    total = sum(len(f) for _, f in free)
    picks: list[tuple[Path, int]] = []
    for video, frames in free:
        share = min(len(frames), round(n * len(frames) / total)) if total else 0
        if share:
            at = np.linspace(0, len(frames) - 1, share).round().astype(int)
            picks.extend((video, frames[i]) for i in sorted(set(at.tolist())))
    return picks


def read_frames(picks: Sequence[tuple[Path, int]]) -> list[tuple[Path, int, np.ndarray]]:
    """Decode the picked frames (one pass per video); a frame that fails to decode is left
    out and counted in the log."""
    from posed.engines.video import frames_at

    out = []
    by_video: dict[Path, list[int]] = {}
    for video, index in picks:
        by_video.setdefault(video, []).append(index)
    for video, wanted in by_video.items():
        out.extend((video, i, rgb) for i, rgb in sorted(frames_at(video, wanted).items()))
    if len(out) < len(picks):
        log.warning("pseudo-labels: %d of %d picked frames could not be decoded; left out",
                    len(picks) - len(out), len(picks))
    return out


def consistent_parts(first: np.ndarray, second: np.ndarray,
                     cfg: PseudoLabelConfig) -> np.ndarray:
    """N×K×2 positions (mean of the two views) where both views reach ``pcutoff`` and agree
    within ``agree_px``; NaN elsewhere. ``first``/``second``: N×K×3 in the same pixels."""
    sure = (first[..., 2] >= cfg.pcutoff) & (second[..., 2] >= cfg.pcutoff)
    near = np.linalg.norm(first[..., :2] - second[..., :2], axis=-1) <= cfg.agree_px
    keep = sure & near
    return np.where(keep[..., None], (first[..., :2] + second[..., :2]) / 2.0, np.nan)


def label_frames(predict: Predict, images: list[np.ndarray], cfg: PseudoLabelConfig,
                 batch: int = 8) -> np.ndarray:
    """Pseudo-labels (N×K×2, NaN = not kept) of ``images`` from two views of each."""
    def run(views: list[np.ndarray]) -> np.ndarray:
        return np.concatenate([predict(views[i:i + batch]) for i in range(0, len(views), batch)])

    first = run(images)
    small = [cv2.resize(im, (max(1, round(im.shape[1] * VIEW_SCALE)),
                             max(1, round(im.shape[0] * VIEW_SCALE))),
                        interpolation=cv2.INTER_AREA) for im in images]
    second = run(small)
    # Back to the frame's pixels (centres of pixels: x_full + 0.5 = (x_small + 0.5) / s).
    sx = np.array([im.shape[1] / s.shape[1] for im, s in zip(images, small)])[:, None]
    sy = np.array([im.shape[0] / s.shape[0] for im, s in zip(images, small)])[:, None]
    second = second.astype(np.float64)  # a copy: the views' arrays stay as predicted
    second[..., 0] = (second[..., 0] + 0.5) * sx - 0.5
    second[..., 1] = (second[..., 1] + 0.5) * sy - 0.5
    return consistent_parts(first.astype(np.float64), second, cfg)


class MixedSamples:
    """The hand-labelled samples, each replaced by a pseudo-labelled frame with probability
    ``mix`` once those exist; the length (steps per epoch) is the hand-labelled one.

    Until :meth:`add` is called it draws nothing extra from the sample RNG, so training
    without pseudo-labels sees exactly the samples it always did.
    """

    def __init__(self, labelled: SampleMaker, mix: float) -> None:
        self.labelled = labelled
        self.mix = mix
        self.pseudo: SampleMaker | None = None

    def __len__(self) -> int:
        return len(self.labelled)

    def add(self, images: list[np.ndarray], keypoints: list[np.ndarray]) -> None:
        m = self.labelled
        self.pseudo = SampleMaker(images, keypoints, m.cfg, m.grid_fn, m.stride, m.target_fn,
                                  m.crop_centre) if images else None

    def sample(self, index: int, rng: np.random.Generator,
               augment: bool = True) -> dict[str, np.ndarray]:
        if self.pseudo is not None and rng.random() < self.mix:
            return self.pseudo.sample(int(rng.integers(len(self.pseudo))), rng, augment)
        return self.labelled.sample(index, rng, augment)


def write_labels(path: Path, bodyparts: Sequence[str],
                 rows: Sequence[tuple[Path, int, np.ndarray]]) -> None:
    """``pseudo-labels.csv``: video, frame, then x and y per part (empty = not kept)."""
    head = ["video", "frame"] + [f"{bp}_{c}" for bp in bodyparts for c in ("x", "y")]
    lines = [",".join(head)]
    for video, index, kpts in rows:
        cells = ["" if not math.isfinite(v) else f"{v:.3f}" for v in kpts.reshape(-1)]
        lines.append(",".join([str(video), str(index), *cells]))
    atomic_write_text(path, "\n".join(lines) + "\n")


def read_labels(path: Path, parts: int) -> list[tuple[Path, int, np.ndarray]]:
    """The rows :func:`write_labels` wrote."""
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    if not rows or len(rows[0]) != 2 + 2 * parts:
        raise ConfigError(f"{path}: not a pseudo-label table for {parts} body parts; delete it "
                          f"to label again")
    return [(Path(r[0]), int(r[1]),
             np.array([float(v) if v else np.nan for v in r[2:]]).reshape(parts, 2))
            for r in rows[1:]]


class PseudoLabels:
    """Adds pseudo-labelled frames to training once ``start`` of the epochs have run.

    Use :attr:`samples` as the training samples and call :meth:`before_epoch` at the start of
    every epoch with the backend's prediction function.
    """

    def __init__(self, project: Any, cfg: TrainConfig, folder: Path, maker: SampleMaker,
                 labelled_images: Sequence[str]) -> None:
        from posed.engines.video import probe_video

        self.project, self.cfg, self.folder = project, cfg, folder
        self.settings = cfg.pseudo_labels
        self.samples = MixedSamples(maker, self.settings.mix)
        self.start_epoch = min(cfg.epochs - 1, max(1, round(self.settings.start * cfg.epochs)))
        infos = [probe_video(v) for v in resolve_videos(project, self.settings)]
        sizes = {im.shape[:2] for im in maker.images}
        if cfg.crop is None:
            for info in infos:
                if (info.height, info.width) not in sizes:
                    raise ConfigError(
                        f"key 'pseudo_labels.videos': {info.path} is {info.width}x{info.height} "
                        f"but the training images are not; set 'crop' to train on crops")
        self.lengths = [(info.path, info.nframes) for info in infos]
        self.exclude = labelled_frames(labelled_images)

    @property
    def path(self) -> Path:
        return self.folder / PSEUDO_FILE

    def before_epoch(self, epoch: int, predict: Predict) -> None:
        """At ``start_epoch`` (or later, when resuming), label the frames, or reread the
        labels this run already wrote, and add them to the samples."""
        if epoch < self.start_epoch or self.samples.pseudo is not None:
            return
        parts = len(self.project.bodyparts)
        if self.path.is_file() and epoch > self.start_epoch:  # resuming: the same labels
            rows = read_labels(self.path, parts)
            frames = {(v, i): im for v, i, im in read_frames([(v, i) for v, i, _ in rows])}
            kept = [(frames[(v, i)], k) for v, i, k in rows if (v, i) in frames]
        else:
            decoded = read_frames(pick_frames(self.lengths, self.settings.frames, self.exclude))
            labels = label_frames(predict, [im for _, _, im in decoded], self.settings)
            need = max(1, math.ceil(self.settings.min_parts * parts))
            chosen = [n for n in range(len(decoded))
                      if np.isfinite(labels[n, :, 0]).sum() >= need]
            write_labels(self.path, self.project.bodyparts,
                         [(decoded[n][0], decoded[n][1], labels[n]) for n in chosen])
            kept = [(decoded[n][2], labels[n]) for n in chosen]
            parts_kept = int(np.isfinite(labels[chosen, :, 0]).sum()) if chosen else 0
            log.info("pseudo-labels at epoch %d: %d of %d frames kept, %d of their %d parts "
                     "(both views >= %.2f, within %.1f px); %s", epoch, len(chosen),
                     len(decoded), parts_kept, len(chosen) * parts, self.settings.pcutoff,
                     self.settings.agree_px, self.path)
        self.samples.add([im for im, _ in kept], [k for _, k in kept])


def pseudo_labels_for(project: Any, cfg: TrainConfig, folder: Path, maker: SampleMaker,
                      labelled_images: Sequence[str]) -> PseudoLabels | None:
    """A :class:`PseudoLabels` when ``cfg`` enables them, else None."""
    if not cfg.pseudo_labels.enabled:
        return None
    return PseudoLabels(project, cfg, folder, maker, labelled_images)


def refuse(cfg: TrainConfig, what: str) -> None:
    """One-line refusal where pseudo-labels are not implemented."""
    if cfg.pseudo_labels.enabled:
        raise ConfigError(f"key 'pseudo_labels': not supported for {what} yet")
