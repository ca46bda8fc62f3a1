"""DeepLabCut's assembler, as its PyTorch part-affinity-field predictor runs it.

Groups one frame's :class:`~posed.engines.dlc.paf.Candidates` into animals the way DeepLabCut
3 does for its bottom-up models (Lauer et al., Nature Methods 2022; written from that
description and DeepLabCut's observed behaviour, for parity on DeepLabCut's models; posed's
own models use :mod:`posed.engines.assembly`). The predictor builds its assembler without
calibration, identity or temporal windows, so those paths are absent here:

1. Links: per kept edge, among the ``max_individuals`` most confident candidates of each end
   at or above ``pcutoff``, the one-to-one pairing of largest total affinity; pairs below
   ``min_affinity`` are dropped.
2. Every connected group of links holding exactly as many candidates as there are body
   parts is an animal. Then, strongest link first, a link with no assembled end seeds an
   animal that grows along its strongest links (never taking a second candidate of a part).
3. With more animals than ``max_individuals``, two incomplete animals with no part in common
   merge when an unused link joins them; then incomplete animals grow once more.
4. Animals with fewer than ``min_n_links`` links are dropped; non-maximum suppression by total
   affinity drops an animal when at least ``max_overlap`` of its parts lie in the bounding
   box it shares with a better one; the ``max_individuals`` largest remain.

Tie-breaking follows DeepLabCut's (stable sorts, insertion-ordered containers), so equal
affinities, which rounding to 3 decimals makes common, resolve as DeepLabCut resolves them.
"""

from __future__ import annotations

import heapq
import itertools
from collections import defaultdict

import numpy as np

from posed.engines.dlc.paf import Candidates

__all__ = ["Animal", "assemble"]


class _Joint:
    __slots__ = ("xy", "confidence", "label", "idx")

    def __init__(self, xy: tuple[float, float], confidence: float, label: int, idx: int) -> None:
        self.xy, self.confidence, self.label, self.idx = xy, confidence, label, idx


class _Link:
    __slots__ = ("a", "b", "affinity")

    def __init__(self, a: _Joint, b: _Joint, affinity: float) -> None:
        self.a, self.b, self.affinity = a, b, affinity

    @property
    def idx(self) -> tuple[int, int]:
        return self.a.idx, self.b.idx


class Animal:
    """An assembled animal: ``data`` K×3 (x, y, confidence; NaN, NaN, 0 where missing), its
    links and their summed affinity."""

    def __init__(self, n_parts: int) -> None:
        self.data = np.full((n_parts, 3), np.nan)
        self.data[:, 2] = 0.0  # a missing part has confidence 0, x and y NaN
        self.links: list[_Link] = []
        self.affinity_sum = 0.0
        self.labels: set[int] = set()
        self.idx: set[int] = set()

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def affinity(self) -> float:
        """Mean affinity of the links (0 without links), DeepLabCut's assembly score."""
        return float(self.affinity_sum / len(self.links)) if self.links else 0.0

    def shares_part(self, other: "Animal") -> bool:
        return bool(self.labels & other.labels)

    def add_joint(self, joint: _Joint) -> None:
        if joint.label not in self.labels:
            self.data[joint.label] = (*joint.xy, joint.confidence)
            self.labels.add(joint.label)
            self.idx.add(joint.idx)

    def add_link(self, link: _Link) -> bool:
        """Add a link and its ends; False (nothing added but a closing link's affinity)
        where both ends are in already or both parts are taken."""
        i, j = link.idx
        if i in self.idx and j in self.idx:
            self.affinity_sum += link.affinity
            self.links.append(link)
            return False
        if link.a.label in self.labels and link.b.label in self.labels:
            return False
        self.add_joint(link.a)
        self.add_joint(link.b)
        self.affinity_sum += link.affinity
        self.links.append(link)
        return True

    def merged(self, other: "Animal") -> "Animal":
        out = Animal(len(self.data))
        for link in self.links + other.links:
            out.add_link(link)
        return out

    def overlap(self, other: "Animal") -> float:
        """Least fraction of either animal's parts inside their bounding boxes' intersection."""
        xy1, xy2 = self.data[:, :2], other.data[:, :2]
        lo = np.maximum(np.nanmin(xy1, axis=0), np.nanmin(xy2, axis=0))
        hi = np.minimum(np.nanmax(xy1, axis=0), np.nanmax(xy2, axis=0))
        if (hi < lo).any():
            return 0
        inside = [np.all((xy >= lo) & (xy <= hi), axis=1).sum()
                  for xy in (xy1[~np.isnan(xy1).any(axis=1)], xy2[~np.isnan(xy2).any(axis=1)])]
        return min(inside[0] / len(self), inside[1] / len(other))


def _joints(found: Candidates) -> list[_Joint]:
    joints, idx = [], 0
    for label, (xy, conf) in enumerate(zip(found.xy, found.confidence)):
        if not np.any(xy):  # DeepLabCut skips a part whose candidates are all at (0, 0)
            continue
        for (x, y), p in zip(xy, conf):
            joints.append(_Joint((x, y), float(p), label, idx))
            idx += 1
    return joints


def _best_links(bag: dict[int, list[_Joint]], found: Candidates, graph: list[tuple[int, int]],
                keep: list[int], slots: int, pcutoff: float, min_affinity: float) -> list[_Link]:
    from scipy.optimize import linear_sum_assignment

    links = []
    for index in keep:
        s, t = graph[index]
        if s not in bag or t not in bag or index not in found.costs:
            continue
        aff, lengths = found.costs[index]
        if np.isinf(lengths).all():
            continue
        aff = np.nan_to_num(aff, nan=0.0)
        dets_s, dets_t = bag[s], bag[t]

        def confident(dets: list[_Joint]) -> list[int]:
            ranked = sorted(range(len(dets)), key=lambda n: dets[n].confidence, reverse=True)
            return [n for n in ranked[:slots] if dets[n].confidence >= pcutoff]

        keep_s, keep_t = confident(dets_s), confident(dets_t)
        sub = aff[np.ix_(keep_s, keep_t)]
        for row, col in zip(*linear_sum_assignment(sub, maximize=True)):
            # Compared and summed in float64, as DeepLabCut's numpy<2 does with float32 values.
            affinity = float(sub[row, col])
            if affinity >= min_affinity:
                links.append(_Link(dets_s[keep_s[row]], dets_t[keep_t[col]], affinity))
    return links


def _grow(animal: Animal, lookup: dict[int, dict[int, _Link]], assembled: set[int],
          n_parts: int) -> None:
    """Add the strongest links touching ``animal`` while it lacks parts."""
    stack: list = []
    visited: set[tuple[int, int]] = set()
    counter = itertools.count()

    def push(i: int) -> None:
        for j, link in lookup[i].items():
            if j in animal.idx or link.idx in visited:
                continue
            heapq.heappush(stack, (-link.affinity, next(counter), link))
            visited.add(link.idx)

    for i in animal.idx:
        push(i)
    while stack and len(animal) < n_parts:
        best = heapq.heappop(stack)[2]
        i, j = best.idx
        if i in animal.idx:
            new = j
        elif j in animal.idx:
            new = i
        else:
            continue
        if new in assembled:
            continue
        animal.add_link(best)
        push(new)


def _components(links: list[_Link]) -> list[set[int]]:
    """Connected groups of candidate indices, in order of their first appearance."""
    neighbours: dict[int, list[int]] = {}
    for link in links:
        i, j = link.idx
        neighbours.setdefault(i, []).append(j)
        neighbours.setdefault(j, []).append(i)
    seen: set[int] = set()
    groups = []
    for start in neighbours:
        if start in seen:
            continue
        group, todo = {start}, [start]
        while todo:
            for j in neighbours[todo.pop()]:
                if j not in group:
                    group.add(j)
                    todo.append(j)
        seen |= group
        groups.append(group)
    return groups


def _build(links: list[_Link], n_parts: int, slots: int) -> list[Animal]:
    lookup: dict[int, dict[int, _Link]] = defaultdict(dict)
    for link in links:
        i, j = link.idx
        lookup[i][j] = link
        lookup[j][i] = link
    animals: list[Animal] = []
    assembled: set[int] = set()

    def unlink(animal: Animal) -> None:
        for link in animal.links:
            i, j = link.idx
            lookup[i].pop(j)
            lookup[j].pop(i)

    for group in _components(links):
        if len(group) != n_parts:
            continue
        edges = {tuple(sorted(link.idx)) for link in links if link.idx[0] in group}
        animal = Animal(n_parts)
        for link in links:
            # DeepLabCut matches the link's (first, second) order against sorted pairs.
            if link.idx in edges and animal.add_link(link):
                i, j = link.idx
                lookup[i].pop(j)
                lookup[j].pop(i)
        assembled |= animal.idx
        animals.append(animal)
    if len(animals) == slots:
        return animals

    for link in sorted(links, key=lambda lk: lk.affinity, reverse=True):
        if link.idx[0] in assembled or link.idx[1] in assembled:
            continue
        animal = Animal(n_parts)
        animal.add_link(link)
        _grow(animal, lookup, assembled, n_parts)
        unlink(animal)
        assembled |= animal.idx
        animals.append(animal)

    if len(animals) > slots:
        _merge_incomplete(animals, links, n_parts)
    for animal in animals:
        if len(animal) != n_parts:
            _grow(animal, lookup, assembled, n_parts)
            assembled |= animal.idx
    return animals


def _merge_incomplete(animals: list[Animal], links: list[_Link], n_parts: int) -> None:
    """Merge incomplete animals joined by a link none of them uses (in place)."""
    owner: dict[int, Animal] = {}
    for animal in animals:
        if len(animal) != n_parts:
            for i in animal.idx:
                owner[i] = animal
    used = {id(link) for animal in animals for link in animal.links}
    for link in links:
        if id(link) in used:
            continue
        i, j = link.idx
        if i not in owner or j not in owner or owner[i].shares_part(owner[j]):
            continue
        first, second = owner[i], owner[j]
        first.__dict__.update(first.merged(second).__dict__)
        animals.remove(second)
        for idx in second.idx:
            owner[idx] = first


def _suppress(animals: list[Animal], max_overlap: float) -> list[Animal]:
    """Non-maximum suppression by summed affinity (first best wins ties)."""
    todo = list(animals)
    kept = []
    while todo:
        best = max(todo, key=lambda a: a.affinity_sum)
        todo.remove(best)
        kept.append(best)
        todo = [a for a in todo if best.overlap(a) < max_overlap]
    return kept


def assemble(found: Candidates | None, *, n_parts: int, slots: int,
             graph: list[tuple[int, int]], keep: list[int], pcutoff: float = 0.1,
             min_affinity: float = 0.05, min_n_links: int = 2,
             max_overlap: float = 0.8) -> list[Animal]:
    """One frame's animals, best first as DeepLabCut orders them (at most ``slots``)."""
    joints = _joints(found) if found is not None else []
    if not joints:
        return []
    bag: dict[int, list[_Joint]] = {}
    for joint in joints:
        bag.setdefault(joint.label, []).append(joint)
    if n_parts == 1:
        animals = []
        for joint in bag.get(0, []):
            if joint.confidence >= pcutoff:
                animals.append(Animal(n_parts))
                animals[-1].add_joint(joint)
        return animals[:slots]
    if slots == 1:
        animal = Animal(n_parts)
        for label in range(n_parts):
            if label in bag:
                animal.add_joint(max(bag[label], key=lambda jt: jt.confidence))
        return [animal]
    links = _best_links(bag, found, graph, keep, slots, pcutoff, min_affinity)
    animals = _build(links, n_parts, slots)
    animals = [a for a in animals if len(a) and not 0 < len(a.links) < min_n_links]
    if 0 < max_overlap < 1:
        animals = _suppress(animals, max_overlap)
    if len(animals) > slots:
        animals = sorted(animals, key=len, reverse=True)[:slots]
    return animals


SETTINGS = ("graph", "edges_to_keep", "locref_stdev", "nms_radius", "sigma", "pcutoff",
            "min_affinity", "min_n_links", "max_overlap", "clip_scores")
"""Keys of a bundle's ``architecture.dlc_predictor``: DeepLabCut's predictor settings."""

TUNABLE = ("pcutoff", "min_affinity", "min_n_links", "max_overlap", "nms_radius", "sigma")
"""The settings a runner's ``assembly`` option may override for DeepLabCut models."""


def predict(scores: np.ndarray, locref: np.ndarray, pafs: np.ndarray, *, stride: float,
            settings: dict, n_parts: int, slots: int) -> tuple[np.ndarray, np.ndarray]:
    """One frame's animals as DeepLabCut's predictor finds them: ``slots``×K×3 (x, y,
    confidence; NaN, NaN, 0 where an animal lacks a part; all NaN in an empty slot) and
    ``slots`` mean link affinities (0 for empty slots), best first."""
    from posed.engines.dlc.paf import candidates

    graph = [(int(a), int(b)) for a, b in settings["graph"]]
    keep = [int(i) for i in settings["edges_to_keep"]]
    found = candidates(scores, locref, pafs, stride=stride, graph=graph, keep=keep,
                       locref_stdev=float(settings["locref_stdev"]),
                       nms_radius=int(settings["nms_radius"]), sigma=float(settings["sigma"]))
    animals = assemble(found, n_parts=n_parts, slots=slots, graph=graph, keep=keep,
                       pcutoff=float(settings["pcutoff"]),
                       min_affinity=float(settings["min_affinity"]),
                       min_n_links=int(settings["min_n_links"]),
                       max_overlap=float(settings["max_overlap"]))
    out = np.full((slots, n_parts, 3), np.nan)
    affinity = np.zeros(slots)
    for i, animal in enumerate(animals):
        out[i] = animal.data
        affinity[i] = animal.affinity
    if settings.get("clip_scores"):
        out[..., 2] = np.clip(out[..., 2], 0, 1)
    return out, affinity
