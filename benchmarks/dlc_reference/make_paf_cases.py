"""DeepLabCut 3.0.2's part-affinity-field predictor on synthetic maps: a reference fixture.

Run with a DeepLabCut 3.0.2 environment's python (see README.md):

    dlcenv/bin/python benchmarks/dlc_reference/make_paf_cases.py \
        [--out tests/data/deeplabcut/paf_cases.npz] [--cases 48] [--seed 0]

Each case draws a few animals (random body parts, some missing, some overlapping), renders
score logits (a blob per visible part plus spurious blobs and noise), random location
refinement and part-affinity fields along each animal's limbs (plus noise), and runs
DeepLabCut's own ``PartAffinityFieldPredictor`` on them (graph, kept edges, number of
animals, stride and ``nms_radius`` vary by case). The file holds, per case ``i``, the maps
(``heat_i``, ``locref_i``, ``paf_i``, float32, one frame each), DeepLabCut's ``poses_i``
(animals × parts × (x, y, confidence, id, affinity), -1 for empty slots) and, in
``settings`` (JSON), each case's predictor settings. ``settings`` also holds
``assembler_cases``: random candidates and cost matrices (many ties) with the animals
DeepLabCut's ``Assembler`` makes of them, for the assembler's rarer paths. posed's
:mod:`posed.engines.dlc.assembler` must give the same animals on every case
(``tests/test_dlc_multianimal.py``).
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent.parent


def _case(rng: np.random.Generator) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray]:
    k = int(rng.integers(3, 6))
    h, w = int(rng.integers(14, 26)), int(rng.integers(14, 26))
    pairs = list(itertools.combinations(range(k), 2))
    if rng.random() < 0.3:  # a chain instead of the full graph, sometimes reversed edges
        pairs = [(i, i + 1) if rng.random() < 0.8 else (i + 1, i) for i in range(k - 1)]
    graph = [list(p) for p in pairs]
    keep = list(range(len(graph)))
    if len(graph) > k and rng.random() < 0.5:
        keep = sorted(rng.choice(len(graph), size=k, replace=False).tolist())
    n_true = int(rng.integers(1, 7))  # up to 6 animals on a small grid: crowded, merges
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    heat = np.full((k, h, w), -6.0, dtype=np.float32)
    paf = np.zeros((len(graph), 2, h, w), dtype=np.float32)
    centre = rng.uniform((2, 2), (h - 3, w - 3))
    for _ in range(n_true):
        if rng.random() > 0.3:  # else near the previous animal: nested animals, suppression
            centre = rng.uniform((2, 2), (h - 3, w - 3))
        parts = centre + rng.normal(0, rng.uniform(0.8, 4), size=(k, 2))
        parts = np.clip(parts, 0, (h - 1, w - 1))
        visible = rng.random(k) > 0.15
        for j in np.flatnonzero(visible):
            amp = rng.uniform(4, 12)
            heat[j] += amp * np.exp(-((yy - parts[j, 0]) ** 2 + (xx - parts[j, 1]) ** 2)
                                    / (2 * rng.uniform(0.6, 1.5) ** 2))
        broken = int(rng.integers(0, len(graph))) if rng.random() < 0.3 else -1  # fragments
        for e, (a, b) in enumerate(graph):
            if not (visible[a] and visible[b]) or e == broken:
                continue
            d = parts[b] - parts[a]
            length = float(np.hypot(*d)) + 1e-6
            u = d / length
            # distance of each cell to the segment a->b
            t = np.clip(((yy - parts[a, 0]) * u[0] + (xx - parts[a, 1]) * u[1]) / length, 0, 1)
            dist = np.hypot(yy - (parts[a, 0] + t * d[0]), xx - (parts[a, 1] + t * d[1]))
            band = dist <= rng.uniform(0.7, 1.5)
            paf[e, 0][band] = u[1]  # x component
            paf[e, 1][band] = u[0]
    for _ in range(int(rng.integers(0, 4))):  # spurious candidates
        j = int(rng.integers(0, k))
        y0, x0 = rng.uniform(0, h), rng.uniform(0, w)
        heat[j] += rng.uniform(2, 8) * np.exp(-((yy - y0) ** 2 + (xx - x0) ** 2) / 2)
    heat += rng.normal(0, 0.4, size=heat.shape).astype(np.float32)
    paf += rng.normal(0, 0.08, size=paf.shape).astype(np.float32)
    locref = rng.normal(0, 0.3, size=(2 * k, h, w)).astype(np.float32)
    settings = {
        "n_parts": k, "graph": graph, "edges_to_keep": keep,
        "num_animals": int(rng.integers(max(1, n_true - 2), n_true + 2)),
        "stride": float(rng.choice([4.0, 8.0])), "nms_radius": int(rng.choice([3, 5])),
        "sigma": 1.0, "locref_stdev": 7.2801, "min_affinity": 0.05,
    }
    return settings, heat.astype(np.float32), locref, paf.reshape(-1, h, w).astype(np.float32)


def _candidates_case(rng: np.random.Generator) -> dict:
    """Random candidates and cost matrices (ties, NaN and missing edges included) for
    DeepLabCut's assembler alone: it reaches its rarer paths (merging fragments, suppression,
    truncation) far more often than rendered maps do."""
    k = int(rng.integers(2, 6))
    graph = [list(p) for p in itertools.combinations(range(k), 2)]
    keep = list(range(len(graph)))
    if rng.random() < 0.4:
        keep = sorted(rng.choice(len(graph), size=int(rng.integers(1, len(graph) + 1)),
                                 replace=False).tolist())
    centres = rng.uniform(0, 100, size=(int(rng.integers(1, 5)), 2))
    xy, conf = [], []
    spread = rng.uniform(1, 25)  # small: animals share a bounding box (suppression)
    for _ in range(k):
        n = int(rng.integers(0, 6))
        near = centres[rng.integers(0, len(centres), size=n)]
        xy.append(np.round(near + rng.normal(0, spread, size=(n, 2)), 2).tolist())
        conf.append(np.round(rng.uniform(0, 1, size=n), int(rng.integers(1, 3))).tolist())
    costs = {}
    for e in keep:
        a, b = graph[e]
        if not (xy[a] and xy[b]) or rng.random() < 0.1:
            continue
        shape = (len(xy[a]), len(xy[b]))
        aff = rng.uniform(0, 1, size=shape) ** rng.uniform(0.5, 3)
        aff = np.round(aff, int(rng.integers(1, 3)))  # coarse: tied affinities
        aff[rng.random(shape) < 0.05] = np.nan
        dist = np.round(rng.uniform(1, 50, size=shape), 3)
        if rng.random() < 0.05:
            dist[:] = np.inf
        costs[str(e)] = {"m1": aff.tolist(), "distance": dist.tolist()}
    return {"n_parts": k, "graph": graph, "edges_to_keep": keep,
            "num_animals": int(rng.integers(1, 5)), "min_affinity": 0.05,
            "xy": xy, "confidence": conf, "costs": costs}


def _suppression_case() -> dict:
    """Two complete animals with the same bounding box (one's first two parts sit where the
    other's are swapped) and a third elsewhere, two slots: suppression must drop the weaker
    of the first two; random cases almost never reach that path."""
    xy = [[[0, 0], [10, 10], [50, 50]], [[10, 10], [0, 0], [60, 60]],
          [[5, 5], [4, 5], [55, 50]], [[5, 6], [6, 5], [50, 55]]]
    conf = [[0.9, 0.8, 0.7]] * 4
    graph = [list(p) for p in itertools.combinations(range(4), 2)]
    costs = {}
    for e, (a, b) in enumerate(graph):
        m1 = np.full((3, 3), 0.01)
        m1[0, 0], m1[1, 1], m1[2, 2] = 0.9, 0.6, 0.7
        costs[str(e)] = {"m1": m1.tolist(), "distance": np.full((3, 3), 5.0).tolist()}
    return {"n_parts": 4, "graph": graph, "edges_to_keep": list(range(len(graph))),
            "num_animals": 3, "min_affinity": 0.05, "xy": xy, "confidence": conf,
            "costs": costs}


def _assemble_with_dlc(case: dict) -> list[dict]:
    from deeplabcut.core.inferenceutils import Assembler

    assembler = Assembler.empty(case["num_animals"], n_multibodyparts=case["n_parts"],
                                n_uniquebodyparts=0, graph=[tuple(e) for e in case["graph"]],
                                paf_inds=case["edges_to_keep"], min_affinity=case["min_affinity"])
    data = {
        "coordinates": ([np.asarray(c, dtype=np.float32).reshape(-1, 2) for c in case["xy"]],),
        "confidence": [np.asarray(c, dtype=np.float32).reshape(-1, 1) for c in case["confidence"]],
        "costs": {int(e): {key: np.asarray(v, dtype=np.float32) for key, v in c.items()}
                  for e, c in case["costs"].items()},
    }
    assemblies, _ = assembler._assemble(data, 0)
    return [{"data": np.where(np.isnan(a.data[:, :3]), None, a.data[:, :3]).tolist(),
             "affinity": a.affinity} for a in assemblies or []]


def main() -> None:
    from deeplabcut.pose_estimation_pytorch.models.predictors.paf_predictor import (
        PartAffinityFieldPredictor)

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "tests/data/deeplabcut/paf_cases.npz")
    ap.add_argument("--cases", type=int, default=48)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--assembler-cases", type=int, default=300)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    arrays, settings = {}, []
    for i in range(args.cases):
        case, heat, locref, paf = _case(rng)
        predictor = PartAffinityFieldPredictor(
            num_animals=case["num_animals"], num_multibodyparts=case["n_parts"],
            num_uniquebodyparts=0, graph=[tuple(e) for e in case["graph"]],
            edges_to_keep=case["edges_to_keep"], locref_stdev=case["locref_stdev"],
            nms_radius=case["nms_radius"], sigma=case["sigma"],
            min_affinity=case["min_affinity"], apply_sigmoid=True, clip_scores=False)
        with torch.no_grad():
            out = predictor(case["stride"], {"heatmap": torch.from_numpy(heat[None]),
                                             "locref": torch.from_numpy(locref[None]),
                                             "paf": torch.from_numpy(paf[None])})
        poses = out["poses"][0].numpy().astype(np.float32)
        arrays.update({f"heat_{i}": heat, f"locref_{i}": locref, f"paf_{i}": paf,
                       f"poses_{i}": poses})
        found = int((poses[..., 0] != -1).any(axis=-1).sum())
        case["dlc_animals"] = found
        settings.append(case)
    assembler_cases = [_suppression_case()]
    assembler_cases[0]["dlc_assemblies"] = _assemble_with_dlc(assembler_cases[0])
    for _ in range(args.assembler_cases):
        case = _candidates_case(rng)
        case["dlc_assemblies"] = _assemble_with_dlc(case)
        assembler_cases.append(case)
    import deeplabcut

    meta = {"deeplabcut": deeplabcut.__version__, "torch": torch.__version__,
            "numpy": np.__version__, "seed": args.seed, "cases": settings,
            "assembler_cases": assembler_cases}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, settings=np.array(json.dumps(meta)), **arrays)
    counts = [c["dlc_animals"] for c in settings]
    print(f"{args.out}: {len(settings)} cases, animals per case {counts}")


if __name__ == "__main__":
    main()
