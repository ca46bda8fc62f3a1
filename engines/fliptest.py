"""Test-time flips: each frame is inferred as it is and mirrored left to right, and the two
poses are fused.

The mirrored frame's pose is mapped back (x → W − 1 − x, the pixel-centre convention of the
labels and of training's flip augmentation) with each left/right pair swapped, so both poses
name the same parts in the same frame. Per part, two estimates within ``agree_px`` of each
other are averaged, weighted by likelihood, with the mean of both likelihoods. Farther apart,
the plain frame's estimate stands as it is: the mirror image refines, it never overrides. A
model trained without flips can misread a mirrored animal entirely (on openfield one put the
snout at the tail, confidently enough to win a more-likely-wins rule), and the plain view is
the one a model is trained on. A part only the mirror image finds takes its position at
half its likelihood.

It costs a second forward pass per frame, so it is for offline analysis and evaluation
(``--flip-test``), not the daemon. It suits views where a mirrored animal is a plausible
animal: top-down and most side views.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from posed.engines.base import MultiAnimalRunner, PoseRunner
from posed.errors import CapabilityError, ConfigError


def flip_order(bodyparts: Sequence[str],
               pairs: Sequence[Sequence[str]] | None = None) -> np.ndarray:
    """Column order of a mirrored pose: each part's partner (itself when unpaired).

    ``pairs`` are name pairs; None infers them from names such as leftear/rightear
    (:func:`posed.engines.training.settings.infer_flip_pairs`).
    """
    from posed.engines.training.settings import infer_flip_pairs

    parts = list(bodyparts)
    order = np.arange(len(parts))
    named = infer_flip_pairs(parts) if pairs is None else [tuple(p) for p in pairs]
    seen: set[str] = set()
    for pair in named:
        if len(pair) != 2 or any(p not in parts for p in pair) or seen & set(pair) \
                or pair[0] == pair[1]:
            raise ConfigError(f"flip pairs: {list(pair)} is not a pair of two distinct body "
                              f"parts of this model, each in one pair only ({parts})")
        seen.update(pair)
        a, b = parts.index(pair[0]), parts.index(pair[1])
        order[a], order[b] = b, a
    return order


def project_pairs(bundle: Any) -> list[tuple[str, str]] | None:
    """The left/right pairs by name of the project a bundle was trained in (its
    ``flip_pairs``, else those found in its names), or None where the bundle names no project
    that is there: pairs are then found in the model's part names."""
    from posed.engines.project import load_project
    from posed.engines.training.settings import project_flip_pairs

    root = (bundle.source or {}).get("project")
    if not root or not (Path(root) / "config.yaml").is_file():
        return None
    project = load_project(root)
    parts = list(project.bodyparts)
    return [(parts[a], parts[b]) for a, b in project_flip_pairs(project)]


def mirror_back(poses: np.ndarray, width: int, order: np.ndarray) -> np.ndarray:
    """Poses found on mirrored frames ``width`` pixels wide, in the unmirrored frames' pixels
    and part order."""
    out = poses[:, order].copy()
    out[..., 0] = (width - 1) - out[..., 0]
    return out


def fuse(plain: np.ndarray, mirrored: np.ndarray, agree_px: float) -> np.ndarray:
    """Per part of two N×K×3 estimates: the likelihood-weighted mean (likelihood: the mean of
    both) where they agree within ``agree_px``; elsewhere ``plain``, or where it is missing
    (NaN), ``mirrored`` at half its likelihood."""
    pa, pb = plain[..., 2], mirrored[..., 2]
    dist = np.linalg.norm(plain[..., :2] - mirrored[..., :2], axis=-1)
    agree = np.isfinite(dist) & (dist <= agree_px)
    total = pa + pb
    # Both at likelihood 0 and agreeing: the plain mean.
    wa = np.where(total > 0, pa / np.where(total > 0, total, 1.0), 0.5)[..., None]
    only_mirror = ~np.isfinite(plain[..., 0]) & np.isfinite(mirrored[..., 0])
    out = plain.copy()
    out[..., :2] = np.where(agree[..., None], wa * plain[..., :2] + (1 - wa) * mirrored[..., :2],
                            np.where(only_mirror[..., None], mirrored[..., :2], plain[..., :2]))
    out[..., 2] = np.where(agree, 0.5 * total, np.where(only_mirror, 0.5 * pb, pa))
    return out


class FlipTestRunner(PoseRunner):
    """Wraps a single-animal runner: :meth:`predict` runs each batch with its mirror image
    and fuses the poses (see the module's docstring)."""

    flip_test = True

    def __init__(self, inner: PoseRunner, pairs: Sequence[Sequence[str]] | None = None,
                 agree_px: float | None = None) -> None:
        if isinstance(inner, MultiAnimalRunner):
            raise CapabilityError("--flip-test: multi-animal models are not supported (their "
                                  "animals would have to be matched between the two views)")
        bundle = dataclasses.replace(inner.bundle,
                                     source={**inner.bundle.source, "flip_test": True})
        super().__init__(bundle)
        self.inner = inner
        self.engine = inner.engine
        self.order = flip_order(self.bodyparts, pairs)
        # Two peaks a few score-map cells apart are one peak seen twice; farther apart, two
        # candidates. Four cells: 32 px at stride 8 (posed's scratch models), 16 px at 4.
        self.agree_px = float(agree_px) if agree_px is not None else 4.0 * float(bundle.stride)
        if not self.agree_px > 0:
            raise ConfigError(f"--flip-test: agree_px must be positive, got {agree_px!r}")

    @property
    def precision(self) -> Any:
        return getattr(self.inner, "precision", None)

    @classmethod
    def load(cls, bundle: Any, **options: Any) -> "FlipTestRunner":
        raise TypeError("wrap a loaded runner: FlipTestRunner(runner)")

    def predict(self, frames: np.ndarray) -> np.ndarray:
        frames = self._check_frames(frames)
        n, width = frames.shape[0], frames.shape[2]
        both = self.inner.predict(np.concatenate([frames, frames[:, :, ::-1]]))
        return fuse(both[:n], mirror_back(both[n:], width, self.order), self.agree_px)

    def _forward(self, frames: np.ndarray) -> np.ndarray:  # predict does the work
        raise NotImplementedError

    def warmup(self, batch_size: int = 1, height: int = 480, width: int = 640) -> None:
        self.inner.warmup(2 * batch_size, height, width)

    def handoff(self) -> None:
        self.inner.handoff()

    def close(self) -> None:
        self.inner.close()
