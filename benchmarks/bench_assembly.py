"""Benchmark: multi-animal assembly + tracking cost per frame versus the number of animals.

For 1, 3 and 10 animals walking in a synthetic arena (the trajectories of
``posed synth --animals N``), builds what an ideal bottom-up model would output per frame
(score maps, locref and part-affinity fields at stride 8, with a little noise), then times,
frame by frame: peak finding, assembly, and the live tracker (``OnlineTracker``) update; and,
per frame of the clip, offline tracklets + stitching. Only posed's numpy code is timed; the
maps are made beforehand. Also records how many animals were assembled correctly and the
identity switches of the live tracker, to show the timed work was real. Writes JSON
(machine, versions, settings, figures) to ``benchmarks/results/assembly.json`` and prints a
Markdown table.

    python benchmarks/bench_assembly.py
    python benchmarks/bench_assembly.py --animals 1 3 10 30 --frames 200 --size 1280x960
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_info  # noqa: E402

from posed.engines.assembly import assemble, find_peaks, make_paf_targets  # noqa: E402
from posed.engines.decoding import TargetSpec, make_targets  # noqa: E402
from posed.engines.io import atomic_write_text  # noqa: E402
from posed.engines.synth import multianimal_video_truth, skeleton_for  # noqa: E402
from posed.engines.tracking import (  # noqa: E402
    OnlineTracker,
    identity_switches,
    make_tracklets,
    stitch_tracklets,
)

HERE = Path(__file__).resolve().parent
BODYPARTS = ("snout", "leftear", "rightear", "tailbase")


def percentiles(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms, dtype=float)
    return {"mean_ms": round(float(a.mean()), 3),
            **{f"p{q}_ms": round(float(np.percentile(a, q)), 3) for q in (50, 95, 99)}}


def model_maps(keypoints, visible, skeleton, grid_hw, stride, spec, rng, noise):
    """Score maps (max over animals), locref of the animal owning each cell, PAFs: what a
    perfect model outputs, plus Gaussian noise on the score maps."""
    kp = np.where(visible[..., None], keypoints, np.nan)
    targets = [make_targets(kp[i], grid_hw, stride, spec) for i in range(len(kp))]
    heat = np.stack([t["heatmap"] for t in targets])
    owner = heat.argmax(axis=0)
    k = heat.shape[1]
    locref = np.stack([t["locref"] for t in targets]).reshape(len(kp), k, 2, *grid_hw)
    locref = np.take_along_axis(locref, owner[None, :, None], axis=0)[0].reshape(2 * k, *grid_hw)
    paf = make_paf_targets(kp, skeleton, grid_hw, stride, width=spec.sigma)["paf"]
    heat = heat.max(axis=0) + rng.normal(0.0, noise, (k, *grid_hw)).astype(np.float32)
    return heat, locref, paf


def correct_animals(found: np.ndarray, keypoints: np.ndarray, visible: np.ndarray) -> int:
    """Animals whose visible parts were all found, within 1 px, in one assembly."""
    from scipy.optimize import linear_sum_assignment

    if not len(found):
        return 0
    gt = np.where(visible[..., None], keypoints, np.nan)
    d = np.linalg.norm(gt[:, None] - found[None, :, :, :2], axis=-1)
    cost = np.where(np.isnan(d), 0.0, np.minimum(d, 100.0)).sum(-1)
    ok = 0
    for g, a in zip(*linear_sum_assignment(cost), strict=True):
        ok += bool((d[g, a][visible[g]] < 1.0).all())
    return ok


def run_case(animals: int, args) -> dict:
    w, h = args.size
    truth = multianimal_video_truth((w, h), args.frames, animals, seed=args.seed,
                                    bodyparts=BODYPARTS)
    names = list(BODYPARTS)
    if args.skeleton == "tree":
        edges = [(names.index(a), names.index(b)) for a, b in skeleton_for(BODYPARTS)]
    else:
        edges = list(itertools.combinations(range(len(names)), 2))
    stride = float(args.stride)
    grid = (h // args.stride, w // args.stride)
    # Peaks must clear the 0.3 threshold wherever a keypoint falls in its cell.
    spec = TargetSpec(sigma=0.6 * stride, radius=1.5 * stride)
    rng = np.random.default_rng(args.seed)
    maps = [model_maps(truth.keypoints[f], truth.visible[f], edges, grid, stride, spec, rng,
                       args.map_noise) for f in range(args.frames)]

    def one_pass(record: bool):
        peaks_ms, assemble_ms, track_ms = [], [], []
        tracker = OnlineTracker(animals, "ellipse")
        per_frame, live = [], np.full((args.frames, animals, len(names), 3), np.nan, np.float32)
        correct = 0
        for f, (heat, locref, paf) in enumerate(maps):
            t0 = time.perf_counter()
            peaks = find_peaks(heat, 0.3, 2, locref=locref, stride=stride,
                               locref_stdev=spec.locref_stdev)
            t1 = time.perf_counter()
            found = assemble(peaks, paf, edges, stride=stride, max_individuals=animals)
            t2 = time.perf_counter()
            identities = tracker.update(found.animals)
            t3 = time.perf_counter()
            if record:
                peaks_ms.append((t1 - t0) * 1e3)
                assemble_ms.append((t2 - t1) * 1e3)
                track_ms.append((t3 - t2) * 1e3)
                correct += correct_animals(found.animals, truth.keypoints[f], truth.visible[f])
                per_frame.append(found.animals)
                for ident, pose in identities:
                    live[f, ident] = pose
        return peaks_ms, assemble_ms, track_ms, per_frame, live, correct

    one_pass(record=False)  # warm-up: imports, caches
    peaks_ms, assemble_ms, track_ms, per_frame, live, correct = one_pass(record=True)
    t0 = time.perf_counter()
    stitched = stitch_tracklets(make_tracklets(per_frame, "ellipse"), animals)
    offline_ms = (time.perf_counter() - t0) * 1e3 / args.frames
    total = [a + b + c for a, b, c in zip(peaks_ms, assemble_ms, track_ms, strict=True)]
    candidates = int(sum(truth.visible.sum(axis=(1, 2))))
    return {
        "animals": animals,
        "frames": args.frames,
        "skeleton_edges": len(edges),
        "peaks_per_frame": round(candidates / args.frames, 1),
        "find_peaks": percentiles(peaks_ms),
        "assemble": percentiles(assemble_ms),
        "online_tracker": percentiles(track_ms),
        "total_live": percentiles(total),
        "offline_tracklets_and_stitch_ms_per_frame": round(offline_ms, 3),
        "assembled_correctly": round(correct / (animals * args.frames), 4),
        "live_identity_switches": identity_switches(live, truth.keypoints, 10.0)["switches"],
        "offline_identity_switches": identity_switches(
            stitched.poses(args.frames, len(names)), truth.keypoints, 10.0)["switches"],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--animals", type=int, nargs="+", default=[1, 3, 10])
    ap.add_argument("--frames", type=int, default=150, help="frames per case")
    ap.add_argument("--size", default="640x480", help="arena WIDTHxHEIGHT in pixels")
    ap.add_argument("--stride", type=int, default=8, help="model output stride")
    ap.add_argument("--skeleton", choices=("tree", "full"), default="tree",
                    help="tree: synth's skeleton (3 edges); full: all 6 pairs")
    ap.add_argument("--map-noise", type=float, default=0.02, help="noise std on score maps")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "assembly.json")
    args = ap.parse_args()
    args.size = tuple(int(v) for v in args.size.lower().split("x"))
    results = []
    for n in args.animals:
        row = run_case(n, args)
        results.append(row)
        print(json.dumps(row), flush=True)
    record = {
        "benchmark": "bench_assembly",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        # The machine is shared: a load average above the core count means the figures
        # include waiting for the CPU.
        "load_average_1_5_15min": [round(v, 2) for v in os.getloadavg()],
        "settings": {"size": list(args.size), "stride": args.stride, "frames": args.frames,
                     "bodyparts": list(BODYPARTS), "skeleton": args.skeleton,
                     "map_noise": args.map_noise, "seed": args.seed,
                     "targets": {"sigma_px": 0.6 * args.stride,
                                 "locref_radius_px": 1.5 * args.stride},
                     "find_peaks": {"threshold": 0.3, "nms_radius": 2},
                     "tracker": "ellipse (defaults)"},
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(record, indent=2) + "\n")
    print("\n| animals | peaks/frame | find_peaks p50 ms | assemble p50 ms | live tracker p50 ms "
          "| live total p50 / p95 ms | offline ms/frame | assembled correctly | ID switches "
          "live / offline |\n|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['animals']} | {r['peaks_per_frame']} | {r['find_peaks']['p50_ms']} | "
              f"{r['assemble']['p50_ms']} | {r['online_tracker']['p50_ms']} | "
              f"{r['total_live']['p50_ms']} / {r['total_live']['p95_ms']} | "
              f"{r['offline_tracklets_and_stitch_ms_per_frame']} | {r['assembled_correctly']} | "
              f"{r['live_identity_switches']} / {r['offline_identity_switches']} |")
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
