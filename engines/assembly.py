"""Framework-free multi-animal assembly: heatmap peaks and part-affinity fields to animals.

A bottom-up multi-animal model predicts, on a grid of ``stride`` pixels, a score map per body
part (several animals give several peaks), location refinement (locref) as in
:mod:`posed.engines.decoding`, and a part-affinity field (PAF) per skeleton edge: two channels
(x, y) holding, near each animal's limb, the unit vector pointing from the edge's first body
part to its second, and zero elsewhere (Cao et al., OpenPose, CVPR 2017; DeepLabCut's
multi-animal models, Lauer et al. 2022). Layouts follow the other heads: score maps K×h×w,
locref 2K×h×w and PAFs 2E×h×w with channels interleaved (x0, y0, x1, y1, ...), one frame at
a time. Grid cell ``(i, j)`` stands for pixel ``((j + 0.5) * stride, (i + 0.5) * stride)``.

Assembly: :func:`find_peaks` finds the candidates of each body part; :func:`limb_affinity`
scores every candidate limb by the mean dot product of the PAF sampled along the segment
with the segment's direction (a discrete line integral); :func:`assemble` keeps, per edge,
the best one-to-one links (linear assignment), then merges links greedily, strongest first,
into animals that never hold two candidates of the same body part, and keeps the best
``max_individuals``. Unique body parts (DeepLabCut's ``uniquebodyparts``, one per image)
follow the multi-animal ones in the part order and take their best peak.

:func:`make_paf_targets` draws the PAF training targets from labelled keypoints.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import math

import numpy as np

from posed.engines.decoding import grid_centres

__all__ = [
    "Assemblies",
    "assemble",
    "assemble_maps",
    "find_peaks",
    "limb_affinity",
    "make_paf_targets",
]

DEFAULT_LOCREF_STDEV = 7.2801  # DeepLabCut's, as in decoding.TargetSpec


# --------------------------------------------------------------------------------------------
# Peaks
# --------------------------------------------------------------------------------------------


def _max_filter(maps: np.ndarray, radius: float) -> np.ndarray:
    """Maximum of each map of C×h×w over the cells within ``radius`` cells (a disc; edges
    padded with -inf)."""
    r = int(math.floor(radius))
    if r <= 0:
        return maps
    _, h, w = maps.shape
    padded = np.pad(maps, ((0, 0), (r, r), (r, r)), constant_values=-np.inf)
    out = maps.copy()
    # One shifted view per offset in the disc: (2r+1)² views at most, r is a few cells.
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            if (dy or dx) and dy * dy + dx * dx <= radius * radius:
                np.maximum(out, padded[:, r + dy : r + dy + h, r + dx : r + dx + w], out=out)
    return out


def find_peaks(
    heatmaps: np.ndarray,
    threshold: float = 0.1,
    nms_radius: int = 2,
    *,
    locref: np.ndarray | None = None,
    stride: float = 1.0,
    locref_stdev: float = DEFAULT_LOCREF_STDEV,
) -> list[np.ndarray]:
    """Candidate positions of each body part: local maxima of its score map.

    A cell is a peak when its score is at least ``threshold`` and no cell within
    ``nms_radius`` cells (Euclidean distance between cell centres) scores higher; of equal
    peaks that close to each other (plateaus), only the first in row-major order is kept.

    Args:
        heatmaps: K×h×w score maps of one frame.
        threshold: Lowest score kept.
        nms_radius: Suppression radius in grid cells (0 keeps every cell over threshold);
            two animals' peaks of one part closer than this merge into one.
        locref: 2K×h×w location refinement (interleaved x, y) or None for cell centres.
        stride: Input pixels per grid cell.
        locref_stdev: Scale the locref offsets were trained with.

    Returns:
        K float32 arrays M_k×3 (x, y, score) in input pixels, highest score first; M_k may
        be 0. Non-finite scores are never peaks.
    """
    maps = np.asarray(heatmaps, dtype=np.float32)
    if maps.ndim != 3:
        raise ValueError(f"heatmaps must be K×h×w, got shape {maps.shape}")
    k, h, w = maps.shape
    clean = np.where(np.isfinite(maps), maps, -np.inf)
    local_max = _max_filter(clean, float(nms_radius))
    is_peak = (clean >= local_max) & (clean >= threshold)
    xs = grid_centres(w, stride)
    ys = grid_centres(h, stride)
    off = None if locref is None else np.asarray(locref, dtype=np.float32).reshape(k, 2, h, w)
    out = []
    for part in range(k):
        rows, cols = np.nonzero(is_peak[part])
        scores = clean[part, rows, cols]
        order = np.argsort(-scores, kind="stable")
        rows, cols, scores = rows[order], cols[order], scores[order]
        if nms_radius > 0 and len(rows) > 1:
            keep: list[int] = []
            for n in range(len(rows)):
                if all(
                    (rows[n] - rows[m]) ** 2 + (cols[n] - cols[m]) ** 2 > nms_radius**2
                    for m in keep
                ):
                    keep.append(n)
            rows, cols, scores = rows[keep], cols[keep], scores[keep]
        x = xs[cols]
        y = ys[rows]
        if off is not None:
            x = x + off[part, 0, rows, cols] * locref_stdev
            y = y + off[part, 1, rows, cols] * locref_stdev
        out.append(np.stack([x, y, scores], axis=1).astype(np.float32).reshape(-1, 3))
    return out


# --------------------------------------------------------------------------------------------
# Part-affinity fields
# --------------------------------------------------------------------------------------------


def _bilinear(field: np.ndarray, px: np.ndarray, py: np.ndarray, stride: float) -> np.ndarray:
    """Samples C×h×w ``field`` at input-pixel positions (any shape); C×shape out. Positions
    outside the grid take the nearest border value."""
    _, h, w = field.shape
    gx = np.clip(px / stride - 0.5, 0.0, w - 1.0)
    gy = np.clip(py / stride - 0.5, 0.0, h - 1.0)
    x0 = np.floor(gx).astype(np.intp)
    y0 = np.floor(gy).astype(np.intp)
    x1 = np.minimum(x0 + 1, w - 1)
    y1 = np.minimum(y0 + 1, h - 1)
    fx = gx - x0
    fy = gy - y0
    top = field[:, y0, x0] * (1 - fx) + field[:, y0, x1] * fx
    bottom = field[:, y1, x0] * (1 - fx) + field[:, y1, x1] * fx
    return top * (1 - fy) + bottom * fy


def _xy(points: np.ndarray, what: str) -> np.ndarray:
    arr = np.asarray(points, dtype=np.float32)
    if arr.size == 0:
        return np.zeros((0, 2), dtype=np.float32)
    if arr.ndim != 2 or arr.shape[1] < 2:
        raise ValueError(f"{what} must be M×2 or M×3, got shape {arr.shape}")
    return arr[:, :2]


def _limb_dots(
    paf: np.ndarray, a: np.ndarray, b: np.ndarray, stride: float, n_samples: int
) -> tuple[np.ndarray, np.ndarray]:
    """Dot products M×N×S of the field with each segment's direction at S samples, and the
    M×N segment lengths."""
    field = np.asarray(paf, dtype=np.float32)
    field = np.where(np.isfinite(field), field, 0.0)
    delta = b[None, :, :] - a[:, None, :]  # M×N×2
    length = np.linalg.norm(delta, axis=-1)
    unit = delta / np.maximum(length, 1e-6)[..., None]
    t = np.linspace(0.0, 1.0, max(int(n_samples), 2), dtype=np.float32)
    pts = a[:, None, None, :] + delta[:, :, None, :] * t[None, None, :, None]  # M×N×S×2
    sampled = _bilinear(field, pts[..., 0], pts[..., 1], stride)  # 2×M×N×S
    dots = sampled[0] * unit[..., 0, None] + sampled[1] * unit[..., 1, None]
    return np.where(length[..., None] > 1e-6, dots, 0.0), length


def limb_affinity(
    paf: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
    stride: float,
    n_samples: int = 10,
) -> np.ndarray:
    """Scores every candidate limb from ``starts`` to ``ends`` with one edge's PAF.

    The score is the mean, over ``n_samples`` points evenly spaced on the segment (ends
    included), of the dot product between the field (bilinearly interpolated) and the
    segment's unit direction: about 1 along a true limb, about 0 across empty space or a
    limb going elsewhere, negative for a limb drawn backwards.

    Args:
        paf: 2×h×w field of the edge (x, y channels).
        starts: M×2 (or M×3; the third column is ignored) candidates of the first part.
        ends: N×2 (or N×3) candidates of the second part, in input pixels.
        stride: Input pixels per grid cell.
        n_samples: Points sampled per segment (at least 2).

    Returns:
        float32 M×N affinities; 0 for zero-length segments.
    """
    a = _xy(starts, "starts")
    b = _xy(ends, "ends")
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), dtype=np.float32)
    dots, _ = _limb_dots(paf, a, b, stride, n_samples)
    return dots.mean(axis=-1).astype(np.float32)


def make_paf_targets(
    keypoints: np.ndarray,
    skeleton: Sequence[tuple[int, int]],
    grid_hw: tuple[int, int],
    stride: float,
    width: float = 8.0,
) -> dict[str, np.ndarray]:
    """Part-affinity field training targets for one image.

    For each individual whose edge has both ends labelled, cells whose centre lies within
    ``width`` pixels of the segment (and between its ends) get the segment's unit vector;
    where limbs of several individuals overlap, their vectors are averaged (OpenPose). The
    weight is 1 except around limbs with only one end labelled: there the true field is
    unknown, so cells within that edge's typical length (median over the fully labelled
    individuals of the image, else of all labelled limbs) of the labelled end get weight 0.

    Args:
        keypoints: I×K×2 (x, y) in input pixels of the multi-animal body parts; NaN marks
            a part that is not labelled.
        skeleton: E pairs of body part indices (first -> second gives the vector's sense).
        grid_hw: Height and width of the output grid.
        stride: Input pixels per grid cell.
        width: Half-width of the limb band in input pixels.

    Returns:
        ``paf`` float32 2E×h×w (channels x0, y0, x1, y1, ...) and ``paf_weight`` float32
        2E×h×w.
    """
    kpts = np.asarray(keypoints, dtype=np.float32)
    if kpts.ndim != 3 or kpts.shape[-1] != 2:
        raise ValueError(f"keypoints must be I×K×2, got shape {kpts.shape}")
    h, w = grid_hw
    e_count = len(skeleton)
    ys = grid_centres(h, stride)[:, None]  # h×1
    xs = grid_centres(w, stride)[None, :]  # 1×w
    paf = np.zeros((2 * e_count, h, w), dtype=np.float32)
    weight = np.ones((2 * e_count, h, w), dtype=np.float32)
    labelled = np.isfinite(kpts).all(axis=-1)  # I×K

    lengths: list[list[float]] = []
    for i, j in skeleton:
        both = labelled[:, i] & labelled[:, j]
        lengths.append(list(np.linalg.norm(kpts[both, j] - kpts[both, i], axis=-1)))
    all_lengths = [v for per_edge in lengths for v in per_edge]

    for e, (i, j) in enumerate(skeleton):
        total = np.zeros((2, h, w), dtype=np.float32)
        count = np.zeros((h, w), dtype=np.float32)
        for ind in range(kpts.shape[0]):
            if labelled[ind, i] and labelled[ind, j]:
                p, q = kpts[ind, i], kpts[ind, j]
                length = float(np.linalg.norm(q - p))
                if length < 1e-6:
                    continue
                u = (q - p) / length
                along = (xs - p[0]) * u[0] + (ys - p[1]) * u[1]
                across = np.abs((xs - p[0]) * u[1] - (ys - p[1]) * u[0])
                band = (along >= 0.0) & (along <= length) & (across <= width)
                total[0] += band * u[0]
                total[1] += band * u[1]
                count += band
            elif labelled[ind, i] != labelled[ind, j]:
                known = kpts[ind, i] if labelled[ind, i] else kpts[ind, j]
                typical = lengths[e] or all_lengths
                if not typical:
                    continue
                reach = float(np.median(typical)) + width
                near = (xs - known[0]) ** 2 + (ys - known[1]) ** 2 <= reach**2
                weight[2 * e][near] = 0.0
                weight[2 * e + 1][near] = 0.0
        paf[2 * e : 2 * e + 2] = total / np.maximum(count, 1.0)
    return {"paf": paf, "paf_weight": weight}


# --------------------------------------------------------------------------------------------
# Assembly
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Assemblies:
    """The animals found in one frame.

    Attributes:
        animals: float32 A×K×3 (x, y, score) of the multi-animal body parts, A <=
            ``max_individuals``, best animal first; a part an animal lacks has NaN x, y and
            score 0.
        scores: float32 A: each animal's score, the sum of its parts' peak scores and of
            its links' affinities (animals with more, surer parts score higher).
        unique: float32 U×3 of the unique body parts (NaN x, y and score 0 when not found).
    """

    animals: np.ndarray
    scores: np.ndarray
    unique: np.ndarray


def _check_skeleton(skeleton: Sequence[tuple[int, int]], n_parts: int) -> list[tuple[int, int]]:
    edges = []
    for edge in skeleton:
        i, j = (int(v) for v in edge)
        if not (0 <= i < n_parts and 0 <= j < n_parts) or i == j:
            raise ValueError(
                f"skeleton edge {tuple(edge)} is not a pair of distinct parts < {n_parts}"
            )
        edges.append((i, j))
    return edges


def assemble(peaks: Sequence[np.ndarray], pafs: np.ndarray | None,
             skeleton: Sequence[tuple[int, int]], *, stride: float, max_individuals: int,
             n_unique: int = 0, min_affinity: float = 0.1, min_support: float = 0.8,
             n_samples: int = 10, min_parts: int = 1) -> Assemblies:
    """Groups body part candidates into animals using part-affinity fields.

    Per skeleton edge, every (first part, second part) candidate pair is scored with
    :func:`limb_affinity`; a pair is a possible link when its affinity exceeds
    ``min_affinity`` and the field agrees (dot product over ``min_affinity``) at a fraction
    ``min_support`` of the sampled points (OpenPose's test: a long segment that only crosses
    other limbs' fields on the way gets some affinity, but little support). A linear
    assignment keeps the best one-to-one links per edge. All kept links, strongest first,
    then join candidates into animals; a link that would give an animal two candidates of
    one body part is skipped.
    Candidates left without a link form one-part animals. The ``max_individuals`` animals
    with the highest scores (see :class:`Assemblies`) and at least ``min_parts`` parts are
    returned.

    Args:
        peaks: K + U arrays M×3 (x, y, score), e.g. from :func:`find_peaks`: the
            multi-animal body parts first, then the unique ones (DeepLabCut's order).
        pafs: 2E×h×w fields, channels 2e and 2e+1 for skeleton edge e (None when E = 0).
        skeleton: E pairs of part indices. Edges that touch a unique part are ignored
            (DeepLabCut leaves them out too).
        stride: Input pixels per PAF grid cell.
        max_individuals: Most animals returned.
        n_unique: U, the number of unique body parts at the end of ``peaks``.
        min_affinity: Lowest affinity of a link.
        min_support: Fraction of sampled points where the field must agree with a link.
        n_samples: Points sampled per candidate limb.
        min_parts: Fewest parts an animal must have to be returned.

    Returns:
        The animals and unique parts of the frame.
    """
    n_parts = len(peaks) - int(n_unique)
    if n_parts < 1 or n_unique < 0:
        raise ValueError(
            f"{len(peaks)} peak arrays cannot hold {n_unique} unique parts and 1+ others"
        )
    if max_individuals < 1:
        raise ValueError(f"max_individuals must be >= 1, got {max_individuals}")
    edges = _check_skeleton(skeleton, len(peaks))
    cands = [np.asarray(p, dtype=np.float32).reshape(-1, 3) for p in peaks]
    if edges and pafs is None:
        raise ValueError("a skeleton needs part-affinity fields")
    if pafs is not None and np.shape(pafs)[0] != 2 * len(edges):
        raise ValueError(
            f"pafs has {np.shape(pafs)[0]} channels, the skeleton needs {2 * len(edges)}"
        )
    links = _links(cands, pafs, edges, n_parts, stride, n_samples, min_affinity, min_support)
    groups, link_sum = _group(links, cands, n_parts)
    animals, scores = _best_animals(groups, link_sum, cands, n_parts, max_individuals, min_parts)
    return Assemblies(animals=animals, scores=scores, unique=_unique_parts(cands, n_parts))


# A candidate link: (affinity, part a, candidate a, part b, candidate b).
_Link = tuple[float, int, int, int, int]


def _links(cands: list[np.ndarray], pafs: np.ndarray | None, edges: list[tuple[int, int]],
           n_parts: int, stride: float, n_samples: int, min_affinity: float,
           min_support: float) -> list[_Link]:
    """The best one-to-one links of every edge between multi-animal parts (see
    :func:`assemble`), strongest first."""
    links: list[_Link] = []
    if edges:
        from scipy.optimize import linear_sum_assignment

        for e, (i, j) in enumerate(edges):
            if i >= n_parts or j >= n_parts or not len(cands[i]) or not len(cands[j]):
                continue
            dots, _ = _limb_dots(
                pafs[2 * e : 2 * e + 2], cands[i][:, :2], cands[j][:, :2], stride, n_samples
            )
            aff = dots.mean(axis=-1)
            valid = (aff > min_affinity) & ((dots > min_affinity).mean(axis=-1) >= min_support)
            # Invalid pairs may still be assigned (they cost nothing to drop afterwards);
            # they only must not displace valid ones.
            rows, cols = linear_sum_assignment(np.where(valid, aff, -1.0), maximize=True)
            links += [
                (float(aff[r, c]), i, int(r), j, int(c))
                for r, c in zip(rows, cols, strict=True)
                if valid[r, c]
            ]
    # Strongest first; ties broken by part and candidate so the result never depends on
    # the sort's stability.
    links.sort(key=lambda link: (-link[0], link[1:]))
    return links


def _group(links: list[_Link], cands: list[np.ndarray],
           n_parts: int) -> tuple[list[dict[int, int]], list[float]]:
    """Links merged greedily into groups {part: candidate} that never hold a part twice,
    plus one group per candidate left without a link; and each group's sum of link
    affinities."""
    groups: list[dict[int, int]] = []
    link_sum: list[float] = []
    member: dict[tuple[int, int], int] = {}
    for aff, i, a, j, b in links:
        ga, gb = member.get((i, a)), member.get((j, b))
        if ga is None and gb is None:
            member[(i, a)] = member[(j, b)] = len(groups)
            groups.append({i: a, j: b})
            link_sum.append(aff)
        elif ga is not None and gb is None:
            if j not in groups[ga]:
                groups[ga][j] = b
                member[(j, b)] = ga
                link_sum[ga] += aff
        elif ga is None and gb is not None:
            if i not in groups[gb]:
                groups[gb][i] = a
                member[(i, a)] = gb
                link_sum[gb] += aff
        elif ga == gb:
            link_sum[ga] += aff  # a cycle in the skeleton confirms the grouping
        elif not groups[ga].keys() & groups[gb].keys():
            for part, cand in groups[gb].items():
                groups[ga][part] = cand
                member[(part, cand)] = ga
            link_sum[ga] += link_sum[gb] + aff
            groups[gb] = {}
            link_sum[gb] = 0.0
    for part in range(n_parts):
        for cand in range(len(cands[part])):
            if (part, cand) not in member:
                member[(part, cand)] = len(groups)
                groups.append({part: cand})
                link_sum.append(0.0)
    return groups, link_sum


def _best_animals(groups: list[dict[int, int]], link_sum: list[float], cands: list[np.ndarray],
                  n_parts: int, max_individuals: int,
                  min_parts: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``max_individuals`` best-scoring groups of at least ``min_parts`` parts as
    A×K×3 animals, and their scores."""
    scored = []
    for g, group in enumerate(groups):
        if len(group) < max(int(min_parts), 1):
            continue
        score = link_sum[g] + sum(float(cands[p][c, 2]) for p, c in group.items())
        # Ties: the group whose first part comes earliest, then by candidate rank.
        scored.append((-score, sorted(group.items()), group))
    scored.sort(key=lambda item: (item[0], item[1]))
    scored = scored[: int(max_individuals)]

    animals = np.full((len(scored), n_parts, 3), np.nan, dtype=np.float32)
    animals[..., 2] = 0.0
    for row, (_, _, group) in enumerate(scored):
        for part, cand in group.items():
            animals[row, part] = cands[part][cand]
    return animals, np.array([-item[0] for item in scored], dtype=np.float32)


def _unique_parts(cands: list[np.ndarray], n_parts: int) -> np.ndarray:
    """U×3 best peak of each unique part (the candidates after the first ``n_parts``)."""
    unique = np.full((len(cands) - n_parts, 3), np.nan, dtype=np.float32)
    unique[:, 2] = 0.0
    for u, found in enumerate(cands[n_parts:]):
        if len(found):
            unique[u] = found[int(np.argmax(found[:, 2]))]
    return unique


def assemble_maps(heatmaps: np.ndarray, pafs: np.ndarray | None,
                  skeleton: Sequence[tuple[int, int]], *, stride: float,
                  locref: np.ndarray | None = None, locref_stdev: float = DEFAULT_LOCREF_STDEV,
                  threshold: float = 0.1, nms_radius: int = 2, **options: Any) -> Assemblies:
    """:func:`find_peaks` then :func:`assemble` on one frame of a bottom-up model's outputs.

    Args:
        heatmaps: (K+U)×h×w score maps.
        pafs: 2E×h×w part-affinity fields (None without skeleton).
        skeleton: E pairs of part indices.
        stride: Input pixels per grid cell.
        locref: 2(K+U)×h×w location refinement or None.
        locref_stdev: Scale of the locref offsets.
        threshold: Lowest peak score.
        nms_radius: Peak suppression radius in grid cells.
        **options: The rest of :func:`assemble`'s keywords: ``max_individuals`` (required),
            ``n_unique``, ``min_affinity``, ``min_support``, ``n_samples``, ``min_parts``.

    Returns:
        The frame's animals and unique parts.
    """
    peaks = find_peaks(
        heatmaps, threshold, nms_radius, locref=locref, stride=stride, locref_stdev=locref_stdev
    )
    return assemble(peaks, pafs, skeleton, stride=stride, **options)
