"""Label checks that need no model: left/right pairs labelled in the mirror order.

Seen from above (or from below), an animal is never its own mirror image. For a left/right
pair (``leftear``/``rightear``) and another body part on the midline (``tailbase``), the
triangle (left, right, other) turns the same way in every frame, whatever the animal's
position and heading. A frame where it turns the other way, against nearly all the others,
almost always has the pair's labels swapped. A model trained on the rest then predicts the
pair the other way round, and such a frame costs its test error twice the distance between
the two parts. (DeepLabCut's openfield example has one: ``m4s1/img0102.png``.)

Only references that agree in at least :data:`MIN_AGREEMENT` of :data:`MIN_FRAMES` or more
frames are used, so side views, where the turn changes with the pose, are not judged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

MIN_FRAMES = 10
"""Frames a reference part needs (with the pair labelled) before it is trusted."""
MIN_AGREEMENT = 0.9
"""Share of those frames that must turn the majority's way."""
MIN_OFFSET = 1.0
"""Pixels a reference part must lie off the pair's line for its turn to count."""


@dataclass(frozen=True)
class MirroredPair:
    """A labelled sample whose pair turns against the project's majority.

    Attributes:
        image: Image path relative to the project (with ``#individual`` for multi-animal ones).
        pair: The two body part names, as labelled (``left``, ``right``).
        references: The body parts whose turn disagrees with the majority in this sample.
        agree: Samples whose pair turns the majority way.
        total: Samples where the turn could be told.
    """

    image: str
    pair: tuple[str, str]
    references: tuple[str, ...]
    agree: int
    total: int

    def format(self) -> str:
        """One line: the image, the pair, and how many samples turn the other way."""
        a, b = self.pair
        return (f"{self.image}: {a}/{b} labelled in the mirror order of {self.agree} of "
                f"{self.total} samples (against {', '.join(self.references)}): swapped?")


def _turns(points: np.ndarray, a: int, b: int, c: int) -> np.ndarray:
    """Per sample: +1/-1 for the turn of the triangle (a, b, c), 0 where c is too near the
    line ab to tell or a point is missing."""
    u = points[:, b] - points[:, a]
    v = points[:, c] - points[:, a]
    cross = u[:, 0] * v[:, 1] - u[:, 1] * v[:, 0]
    base = np.hypot(u[:, 0], u[:, 1])
    with np.errstate(invalid="ignore", divide="ignore"):
        offset = np.abs(cross) / base  # distance of c from the line ab
    told = np.isfinite(offset) & (offset >= MIN_OFFSET)
    return np.where(told, np.sign(cross), 0.0)


def mirrored_pairs(keypoints: np.ndarray, images: Sequence[str], bodyparts: Sequence[str],
                   pairs: Sequence[Sequence[int]]) -> list[MirroredPair]:
    """The samples whose left/right pairs turn against the majority.

    Args:
        keypoints: N×K×2 labels (NaN where not labelled).
        images: The N samples' names.
        bodyparts: The K body part names.
        pairs: Index pairs of left/right partners (:func:`~posed.engines.training.settings.project_flip_pairs`).

    Returns:
        One :class:`MirroredPair` per sample and pair where more trusted references disagree
        with the majority than agree, in sample order.
    """
    points = np.asarray(keypoints, dtype=np.float64)
    paired = {i for pair in pairs for i in pair}
    found: list[tuple[int, MirroredPair]] = []
    for a, b in pairs:
        votes = np.zeros(len(points))
        against: list[list[str]] = [[] for _ in range(len(points))]
        for c in range(points.shape[1]):
            if c in paired:
                continue  # another pair's parts are off the midline: their turn varies
            turns = _turns(points, a, b, c)
            told = turns != 0
            if told.sum() < MIN_FRAMES:
                continue
            majority = 1.0 if (turns > 0).sum() >= (turns < 0).sum() else -1.0
            if (turns == majority).sum() < MIN_AGREEMENT * told.sum():
                continue  # not a midline reference in this project (e.g. a side view)
            votes += turns * majority
            for n in np.flatnonzero(turns == -majority):
                against[n].append(bodyparts[c])
        total = int((votes != 0).sum())
        agree = int((votes > 0).sum())
        for n in np.flatnonzero(votes < 0):
            found.append((int(n), MirroredPair(images[n], (bodyparts[a], bodyparts[b]),
                                               tuple(against[n]), agree, total)))
    return [issue for _, issue in sorted(found, key=lambda item: item[0])]


def swap_pairs(keypoints: np.ndarray, images: Sequence[str],
               issues: Sequence[MirroredPair], bodyparts: Sequence[str]) -> np.ndarray:
    """A copy of N×K×2 ``keypoints`` with each issue's pair swapped in its sample (to measure
    what the flagged labels cost; the project's files are never changed)."""
    out = np.array(keypoints, dtype=np.float64, copy=True)
    row = {name: i for i, name in enumerate(images)}
    for issue in issues:
        a, b = (list(bodyparts).index(p) for p in issue.pair)
        n = row[issue.image]
        out[n, [a, b]] = out[n, [b, a]]
    return out


def check_project(project) -> list[MirroredPair]:
    """:func:`mirrored_pairs` over a project's labels (each individual of a multi-animal
    project is a sample of its own, named ``image#individual``)."""
    from posed.engines.project.labels import load_labels, load_multianimal_labels
    from posed.engines.training.settings import project_flip_pairs

    pairs = project_flip_pairs(project)
    if not pairs:
        return []
    if getattr(project, "multianimal", False):
        labels = load_multianimal_labels(project, check_images=False)
        n, i, k, _ = labels.keypoints.shape
        parts = list(project.bodyparts)
        # project_flip_pairs indexes project.bodyparts; keep the pairs among the animals' parts.
        multi = [parts.index(p) for p in labels.bodyparts]
        pairs = [[multi.index(a), multi.index(b)] for a, b in pairs if a in multi and b in multi]
        names = [f"{img}#{ind}" for img in labels.images for ind in labels.individuals]
        return mirrored_pairs(labels.keypoints.reshape(n * i, k, 2), names,
                              list(labels.bodyparts), pairs)
    labels = load_labels(project, check_images=False)
    return mirrored_pairs(labels.keypoints, labels.images, list(labels.bodyparts), pairs)
