"""DeepLabCut 3.0.2 and DeepLabCut-Live on a shuffle posed trained through its compat layer.

Run with a DeepLabCut 3.0.2 environment's python, after posed's side of the round trip
(see benchmarks/dlc_reference/README.md):

    dlcenv/bin/python benchmarks/dlc_reference/roundtrip_check.py PROJECT/config.yaml \
        POSED_OUTPUT.h5 EXPORTED.pt [--out benchmarks/results/dlc_roundtrip.json]

Runs DeepLabCut's ``analyze_videos`` and ``evaluate_network`` on shuffle 1 of PROJECT (trained
and written in DeepLabCut's layout by posed), compares DeepLabCut's keypoints with posed's
table POSED_OUTPUT.h5 (same video), loads EXPORTED.pt (posed's ``compat.export_model``) in
DeepLabCut-Live and compares its poses on the first frames with posed's rows. Exits 1 if any
step fails or a keypoint differs by more than 1e-3 px.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import traceback
from pathlib import Path

TOL_PX = 1e-3


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", type=Path)
    ap.add_argument("posed_h5", type=Path)
    ap.add_argument("exported", type=Path)
    ap.add_argument("--frames", type=int, default=3)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    import numpy as np
    import pandas as pd

    import deeplabcut

    posed = pd.read_hdf(args.posed_h5)
    video = Path(args.config).parent / "videos" / (args.posed_h5.name.split("DLC_")[0] + ".mp4")
    record: dict = {"deeplabcut": deeplabcut.__version__, "python": platform.python_version(),
                    "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "steps": {}}

    def step(name, fn):
        t0 = time.perf_counter()
        try:
            result = fn()
            record["steps"][name] = {"ok": True, **(result or {})}
        except Exception as exc:  # every step is reported
            traceback.print_exc()
            record["steps"][name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        record["steps"][name]["seconds"] = round(time.perf_counter() - t0, 2)
        print(name, record["steps"][name])

    def analyze():
        dest = Path(args.config).parent / "dlc-out"
        scorer = deeplabcut.analyze_videos(str(args.config), [str(video)], shuffle=1,
                                           destfolder=str(dest), device="cpu")
        theirs = pd.read_hdf(dest / f"{video.stem}{scorer}.h5")
        diff = np.abs(theirs.to_numpy() - posed.to_numpy())
        return {"scorer": scorer, "same_scorer": scorer == posed.columns[0][0],
                "max_xy_px": float(np.nanmax(np.concatenate([diff[:, 0::3], diff[:, 1::3]]))),
                "max_likelihood": float(np.nanmax(diff[:, 2::3])),
                "within_tol": bool(np.nanmax(diff) < TOL_PX)}

    def evaluate():
        deeplabcut.evaluate_network(str(args.config), shuffles=[1], device="cpu")
        found = sorted(Path(args.config).parent.glob("evaluation-results-pytorch/**/*-results.csv"))
        return {"results": [p.read_text() for p in found]}

    def live():
        import cv2
        from dlclive import DLCLive

        cap = cv2.VideoCapture(str(video))
        # BGR, as a camera gives them: DeepLabCut-Live converts to RGB itself (convert2rgb).
        frames = [cap.read()[1] for _ in range(args.frames)]
        cap.release()
        runner = DLCLive(str(args.exported), model_type="pytorch", device="cpu")
        poses = [runner.init_inference(frames[0])] + [runner.get_pose(f) for f in frames[1:]]
        ours = posed.to_numpy()[: len(frames)].reshape(len(frames), -1, 3)
        diff = np.abs(np.stack([np.asarray(p).reshape(-1, 3) for p in poses]) - ours)
        return {"frames": len(frames), "max_xy_px": float(diff[..., :2].max()),
                "max_likelihood": float(diff[..., 2].max()),
                "within_tol": bool(diff[..., :2].max() < TOL_PX)}

    step("analyze_videos", analyze)
    step("evaluate_network", evaluate)
    step("dlclive", live)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=2) + "\n")
    ok = all(s["ok"] and s.get("within_tol", True) for s in record["steps"].values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
