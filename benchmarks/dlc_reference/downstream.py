"""Run DeepLabCut's own downstream tools on a folder posed's compat layer wrote.

Run with a DeepLabCut 3.0.2 environment's python (it pins numpy<2, so it cannot share posed's):

    dlcenv/bin/python benchmarks/dlc_reference/downstream.py PROJECT/config.yaml VIDEO DESTFOLDER \
        [--out benchmarks/results/dlc_downstream.json]

PROJECT holds the DeepLabCut shuffle posed analysed with (``dlc-models-pytorch/...``; its
config's ``project_path`` must be PROJECT, as DeepLabCut requires). The script calls, in order,
``filterpredictions``, ``plot_trajectories``, ``analyzeskeleton`` and ``create_labeled_video``
on DESTFOLDER, records for each whether it ran and what it wrote, and exits 1 if any failed.

With ``--multianimal`` (posed analysed a multi-animal shuffle with ``auto_track=False``) it
runs DeepLabCut's own tracking on posed's detection pickles instead:
``convert_detections2tracklets`` (reads ``_full.pickle``, ``_assemblies.pickle``,
``_meta.pickle``; writes ``_el.pickle``), ``stitch_tracklets`` (writes ``_el.h5``, with
``--min-length`` for short clips), ``create_video_with_all_detections`` (reads
``_full.pickle``) and ``create_labeled_video`` of the tracked table. ``--reference-tracklets
EL_PICKLE`` (DeepLabCut's ``_el.pickle`` from its own analysis of the same video) compares
the tracklets DeepLabCut made from posed's pickles with it: same tracklets, frames and
NaNs, and the largest coordinate difference.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import traceback
from pathlib import Path


def multianimal_steps(deeplabcut, cfg: str, video: str, dest: str, args) -> dict:
    """DeepLabCut's tracking of posed's untracked multi-animal analysis."""
    return {
        "convert_detections2tracklets": lambda: deeplabcut.convert_detections2tracklets(
            cfg, [video], shuffle=args.shuffle, destfolder=dest, track_method="ellipse"),
        "stitch_tracklets": lambda: deeplabcut.stitch_tracklets(
            cfg, [video], shuffle=args.shuffle, destfolder=dest, track_method="ellipse",
            min_length=args.min_length, save_as_csv=True),
        "create_video_with_all_detections": lambda: deeplabcut.create_video_with_all_detections(
            cfg, [video], shuffle=args.shuffle, destfolder=dest),
        "create_labeled_video": lambda: deeplabcut.create_labeled_video(
            cfg, [video], shuffle=args.shuffle, destfolder=dest, track_method="ellipse",
            color_by="individual"),
    }


def compare_tracklets(dest: Path, reference: Path) -> dict:
    """DeepLabCut's tracklets of posed's detections (the ``_el.pickle`` in ``dest`` of the
    reference's name) against ``reference``."""
    import pickle

    import numpy as np

    with open(dest / reference.name, "rb") as fh:
        got = pickle.load(fh)
    with open(reference, "rb") as fh:
        want = pickle.load(fh)
    ids = [k for k in want if k != "header"]
    same = sorted(map(str, got)) == sorted(map(str, want)) and bool(
        (got["header"] == want["header"]).all())
    worst = 0.0
    for k in ids:
        if not same or sorted(got[k]) != sorted(want[k]):
            same = False
            break
        for frame in want[k]:
            a, b = np.asarray(got[k][frame], float), np.asarray(want[k][frame], float)
            if a.shape != b.shape or not (np.isnan(a) == np.isnan(b)).all():
                same = False
                break
            if np.isfinite(b).any():
                worst = max(worst, float(np.nanmax(np.abs(a - b))))
    return {"ok": same and worst < 1e-3, "tracklets": len(ids),
            "same_tracklets_frames_and_nans": same, "max_abs_diff": worst,
            "reference": str(reference)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", type=Path)
    ap.add_argument("video", type=Path)
    ap.add_argument("dest", type=Path)
    ap.add_argument("--shuffle", type=int, default=1)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--multianimal", action="store_true")
    ap.add_argument("--min-length", type=int, default=10)
    ap.add_argument("--reference-tracklets", type=Path)
    args = ap.parse_args()

    import deeplabcut

    video, dest, cfg = str(args.video), str(args.dest), str(args.config)
    steps = multianimal_steps(deeplabcut, cfg, video, dest, args) if args.multianimal else {
        "filterpredictions": lambda: deeplabcut.filterpredictions(
            cfg, [video], shuffle=args.shuffle, destfolder=dest, save_as_csv=True),
        "plot_trajectories": lambda: deeplabcut.plot_trajectories(
            cfg, [video], shuffle=args.shuffle, destfolder=dest),
        "analyzeskeleton": lambda: deeplabcut.analyzeskeleton(
            cfg, [video], shuffle=args.shuffle, destfolder=dest, save_as_csv=True),
        "create_labeled_video": lambda: deeplabcut.create_labeled_video(
            cfg, [video], shuffle=args.shuffle, destfolder=dest),
    }
    results = {}
    for name, step in steps.items():
        before = set(Path(dest).rglob("*"))
        t0 = time.perf_counter()
        try:
            returned = step()
            ok, error = True, None
        except Exception as exc:  # record and go on: every tool is reported
            ok, error, returned = False, f"{type(exc).__name__}: {exc}", None
            traceback.print_exc()
        written = sorted(str(p.relative_to(dest)) for p in set(Path(dest).rglob("*")) - before)
        results[name] = {"ok": ok, "error": error, "seconds": round(time.perf_counter() - t0, 2),
                         "written": written, "returned": repr(returned)[:200]}
        print(f"{name}: {'ok' if ok else 'FAILED'} {error or ''} wrote {written}")
    if args.reference_tracklets:
        results["tracklets_vs_reference"] = compare_tracklets(Path(dest), args.reference_tracklets)
        print("tracklets_vs_reference:", results["tracklets_vs_reference"])
    record = {"deeplabcut": deeplabcut.__version__, "python": platform.python_version(),
              "machine": platform.machine(), "when": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                   time.gmtime()),
              "config": cfg, "video": video, "dest": dest, "steps": results}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=2) + "\n")
    return 0 if all(r["ok"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
