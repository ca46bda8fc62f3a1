"""Multi-animal training data: packed keypoints, PAF/heatmap targets and the skeleton."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from posed.engines.decoding import TargetSpec, make_targets
from posed.engines.training.loop import TrainingData, common_crop, split_rows
from posed.engines.training.settings import TrainConfig

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------- multi-animal

def pack_multianimal(keypoints: np.ndarray, unique: np.ndarray | None = None) -> np.ndarray:
    """One image's labels as the R×P×2 array multi-animal samples are made from.

    Rows 0..I-1 are the individuals' multi-animal parts (columns 0..K-1); when there are U
    unique parts, one more row holds them in columns K..K+U-1. Every other cell is NaN, so
    augmentation moves all points alike and each target sees only real labels.

    Args:
        keypoints: I×K×2 (NaN = unlabelled).
        unique: U×2 unique parts, or None / 0×2.
    """
    kp = np.asarray(keypoints, dtype=np.float64)
    n_ind, k = kp.shape[:2]
    u = 0 if unique is None else len(unique)
    out = np.full((n_ind + (1 if u else 0), k + u, 2), np.nan)
    out[:n_ind, :k] = kp
    if u:
        out[n_ind, k:] = np.asarray(unique, dtype=np.float64)
    return out


def make_multianimal_targets(keypoints: np.ndarray, grid_hw: tuple[int, int], stride: float,
                             spec: TargetSpec, skeleton: "Sequence[tuple[int, int]]",
                             paf_width: float) -> dict[str, np.ndarray]:
    """Heatmap, locref and part-affinity-field targets for one image of several animals.

    Args:
        keypoints: R×P×2 from :func:`pack_multianimal` (NaN = not labelled).
        grid_hw: Output grid (height, width).
        stride: Input pixels per grid cell.
        spec: Heatmap / locref settings.
        skeleton: E pairs of part indices (multi-animal parts only).
        paf_width: Half-width of each limb's band, input pixels.

    Returns:
        The arrays of :func:`make_targets` over all P parts, with the heatmaps of the animals
        max-combined and each cell's locref pointing at the nearest animal's part, plus
        ``paf``/``paf_weight`` (2E×h×w) from :func:`posed.engines.assembly.make_paf_targets`.
        ``heatmap_weight`` is 1 for every part: in a multi-animal image an unlabelled part is
        not visible (DeepLabCut labels every visible part), so its map must stay empty.
    """
    from posed.engines.assembly import make_paf_targets
    from posed.engines.decoding import grid_centres

    kp = np.asarray(keypoints, dtype=np.float32)
    rows, parts = kp.shape[:2]
    h, w = grid_hw
    per_row = [make_targets(kp[r], grid_hw, stride, spec) for r in range(rows)]
    heat = np.max([t["heatmap"] for t in per_row], axis=0)
    # The animal whose part is nearest owns the cell's offset (ties: the first animal).
    xs = grid_centres(w, stride)[None, None, None, :]
    ys = grid_centres(h, stride)[None, None, :, None]
    d2 = (kp[..., 0, None, None] - xs) ** 2 + (kp[..., 1, None, None] - ys) ** 2  # R×P×h×w
    owner = np.where(np.isfinite(d2), d2, np.inf).argmin(axis=0)  # P×h×w
    locref = np.stack([t["locref"].reshape(parts, 2, h, w) for t in per_row])  # R×P×2×h×w
    locref = np.take_along_axis(locref, owner[None, :, None], axis=0)[0].reshape(2 * parts, h, w)
    weight = np.max([t["locref_weight"] for t in per_row], axis=0)
    out = {"heatmap": heat.astype(np.float32),
           "heatmap_weight": np.ones((parts, 1, 1), dtype=np.float32),
           "locref": (locref * weight).astype(np.float32), "locref_weight": weight}
    out.update(make_paf_targets(kp, skeleton, grid_hw, stride, width=paf_width))
    return out


def skeleton_from_labels(keypoints: np.ndarray, extra_neighbours: int = 1) -> list[tuple[int, int]]:
    """A part-affinity graph learned from multi-animal labels.

    Parts are joined by a minimum spanning tree on the median distance between them within
    one animal (so every part is reachable), then each part is also joined to its
    ``extra_neighbours`` next-nearest parts: a redundant edge keeps an animal in one piece
    when the part a tree edge depends on is covered.

    Args:
        keypoints: N×I×K×2 labels (NaN = unlabelled).
        extra_neighbours: Extra edges per part beyond the tree.

    Returns:
        (i, j) index pairs with i < j, sorted.
    """
    kp = np.asarray(keypoints, dtype=np.float64).reshape(-1, keypoints.shape[-2], 2)
    k = kp.shape[1]
    dist = np.full((k, k), np.inf)
    for i in range(k):
        for j in range(i + 1, k):
            d = np.linalg.norm(kp[:, i] - kp[:, j], axis=-1)
            d = d[np.isfinite(d)]
            if len(d):
                dist[i, j] = dist[j, i] = float(np.median(d))
    # Prim's algorithm; pairs never labelled together are joined last, at any cost.
    edges: set[tuple[int, int]] = set()
    inside = {0}
    while len(inside) < k:
        best = min(((dist[i, j], i, j) for i in inside for j in range(k) if j not in inside),
                   key=lambda t: (t[0], t[1], t[2]))
        edges.add((min(best[1], best[2]), max(best[1], best[2])))
        inside.add(best[2])
    for i in range(k):
        order = [j for j in np.argsort(dist[i], kind="stable")
                 if j != i and np.isfinite(dist[i, j])]
        for j in order[:extra_neighbours + 1]:
            edges.add((min(i, int(j)), max(i, int(j))))
    return sorted(edges)


def multianimal_skeleton(project: Any, keypoints: np.ndarray) -> list[tuple[int, int]]:
    """The part-affinity graph of a multi-animal project: the config's ``skeleton`` (edges
    between multi-animal parts; DeepLabCut ignores edges to unique parts), completed with
    learned edges when it leaves parts unconnected; learned from the labels when the config
    has no skeleton (:func:`skeleton_from_labels`)."""
    names = list(project.multianimalbodyparts)
    index = {n: i for i, n in enumerate(names)}
    edges = [(index[a], index[b]) for a, b in project.skeleton
             if a in index and b in index and a != b]
    if not edges:
        return skeleton_from_labels(keypoints)
    learned = skeleton_from_labels(keypoints, extra_neighbours=0)
    # Union-find over the config's edges; learned tree edges join what is left apart.
    root = list(range(len(names)))

    def find(i: int) -> int:
        while root[i] != i:
            root[i] = root[root[i]]
            i = root[i]
        return i

    for i, j in edges:
        root[find(i)] = find(j)
    for i, j in learned:
        if find(i) != find(j):
            log.info("skeleton leaves %s unconnected; adding %s-%s", names[j], names[i], names[j])
            edges.append((i, j))
            root[find(i)] = find(j)
    return edges


@dataclass
class MultiAnimalTrainingData(TrainingData):
    """:class:`TrainingData` of a multi-animal project: keypoints are packed R×P×2
    (:func:`pack_multianimal`); ``test_truth`` holds each test image's I×K×2 labels and
    ``skeleton`` the part-affinity graph."""

    test_truth: list[np.ndarray] = field(default_factory=list)
    skeleton: list[tuple[int, int]] = field(default_factory=list)


def load_multianimal_training_data(project: Any, shuffle: int, cfg: TrainConfig,
                                   where: Path) -> MultiAnimalTrainingData:
    """Images and packed labels of a multi-animal shuffle (see :func:`load_training_data`)."""
    from posed.engines.project import load_image, load_multianimal_labels

    labels = load_multianimal_labels(project)
    train, test = split_rows(project, shuffle, labels.images, where)
    images = [load_image(project.root, labels.images[i]) for i in train]
    cfg = common_crop(cfg, images)
    packed = [pack_multianimal(labels.keypoints[i], labels.unique[i])
              for i in range(len(labels.images))]
    return MultiAnimalTrainingData(
        cfg, images, [packed[i] for i in train],
        [load_image(project.root, labels.images[i]) for i in test], [packed[i] for i in test],
        test_truth=[labels.keypoints[i] for i in test],
        skeleton=multianimal_skeleton(project, labels.keypoints[train]))


def random_animal_centre(keypoints: np.ndarray,
                         rng: np.random.Generator) -> tuple[float, float] | None:
    """Crop centre for multi-animal samples: the mean of the visible points of one row of
    the packed R×P×2 keypoints (an animal, or the unique parts), picked at random; None
    (the default centre) when nothing is labelled."""
    rows = [r for r in keypoints if np.isfinite(r).all(axis=1).any()]
    if not rows:
        return None
    row = rows[int(rng.integers(len(rows)))]
    cx, cy = row[np.isfinite(row).all(axis=1)].mean(axis=0)
    return float(cx), float(cy)
