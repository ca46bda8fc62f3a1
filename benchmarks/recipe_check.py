"""Benchmark: does a plain ``posed train`` train well from random init? (issue 22, not a test)

For each project size, a synthetic project (128×128, seed 0) is trained with no settings at
all, as a new user would, under the ``scratch`` recipe that random init now selects, and
under the ``finetune`` defaults it used before. Each model is scored on the labelled frames of
a second synthetic project made with another seed (never seen in training): mean and median
pixel error and PCK@3/5 px over visible parts; and by the training loop's last mean error on
the project's own test images. CPU time is the process's user+system time
spent training (both cores count).

Writes ``benchmarks/results/recipe.json``.

    python benchmarks/recipe_check.py --frames 80 --seeds 0
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_info  # noqa: E402

from posed.engines import api  # noqa: E402
from posed.engines.io import atomic_write_text  # noqa: E402
from posed.engines.project import load_image, load_labels, load_project  # noqa: E402
from posed.engines.synth import generate_project  # noqa: E402

HERE = Path(__file__).resolve().parent


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def unseen_error(model: Path, project: Path) -> dict:
    """Pixel error of ``model`` on every labelled frame of ``project``."""
    proj = load_project(project)
    labels = load_labels(proj)
    frames = np.stack([load_image(proj.root, n) for n in labels.images])
    with api.load_model(model, device="cpu") as runner:
        poses = runner.predict(frames)
    dist = np.linalg.norm(poses[..., :2] - labels.keypoints, axis=-1)
    dist = dist[np.isfinite(dist)]
    return {"frames": len(frames), "parts": int(dist.size),
            "mean_px": round(float(dist.mean()), 3), "median_px": round(float(np.median(dist)), 3),
            "pck3": round(float((dist <= 3).mean()), 3), "pck5": round(float((dist <= 5).mean()), 3)}


def own_test_error(folder: Path) -> float | None:
    """The training loop's last mean test error (px) on the shuffle's own test images."""
    import csv

    with open(folder / "learning_stats.csv") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("test_error_px")]
    return float(rows[-1]["test_error_px"]) if rows else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, action="append", help="labelled frames (repeatable)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds")
    ap.add_argument("--recipes", nargs="+", default=["scratch", "finetune"])
    ap.add_argument("--out", type=Path, default=HERE / "results" / "recipe.json")
    args = ap.parse_args()
    record = {"benchmark": "recipe_check",
              "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "machine": machine_info(), "rows": []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        unseen = tmp / "unseen"
        generate_project(unseen, frames=40, size=(128, 128), seed=1, video_frames=0)
        for frames in args.frames or [80]:
            for recipe in args.recipes:
                for seed in args.seeds:
                    proj = tmp / f"p{frames}-{recipe}-{seed}"
                    generate_project(proj, frames=frames, size=(128, 128), seed=0,
                                     video_frames=0)
                    c0, t0 = cpu_s(), time.perf_counter()
                    folder = api.train_network(load_project(proj), 1, None,
                                               {"recipe": recipe, "seed": seed}, progress=False)
                    row = {"frames": frames, "recipe": recipe, "seed": seed,
                           "cpu_min": round((cpu_s() - c0) / 60, 2),
                           "wall_min": round((time.perf_counter() - t0) / 60, 2)}
                    resolved = (folder / "train_config.yaml").read_text()
                    row["settings"] = {k: v for k, v in (
                        line.split(": ", 1) for line in resolved.splitlines()
                        if line.split(": ", 1)[0] in ("net", "lr", "output_stride", "epochs",
                                                      "batch_size"))}
                    row["own_test_px"] = own_test_error(folder)
                    row["unseen"] = unseen_error(folder, unseen)
                    record["rows"].append(row)
                    print(json.dumps(row), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
