"""Benchmark: does a plain ``posed train`` train well from random init? (issue 22, not a test)

For each project size, a synthetic project (128×128, seed 0) is trained with no settings at
all, as a new user would, under the ``scratch`` recipe that random init now selects, and
under the ``finetune`` defaults it used before. Each model is scored on the labelled frames of
a second synthetic project made with another seed (never seen in training): mean and median
pixel error and PCK@3/5 px over visible parts; and by the training loop's last mean error on
the project's own test images. CPU time is the process's user+system time
spent training (both cores count).

``--augment`` compares augmentation settings under the ``scratch`` recipe instead (each a
named preset of :data:`AUGMENT`), scored on unseen projects of several seeds: a synthetic
project has one floor and one animal colour per seed, so another seed is a change of lighting
and appearance, which photometric augmentation is meant to cover.

Writes ``benchmarks/results/recipe.json`` (``--augment``: ``augment.json``).

    python benchmarks/recipe_check.py --frames 80 --seeds 0
    python benchmarks/recipe_check.py --augment default photometric --seeds 0 1
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
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
from posed.engines.project import create_split, load_image, load_labels, load_project  # noqa: E402
from posed.engines.synth import generate_project  # noqa: E402

HERE = Path(__file__).resolve().parent
UNSEEN_SEEDS = (1, 3, 5)  # 1 and 3: darker floor and animal than seed 0; 5: a lighter animal
# Augmentation presets (keys of the training config's ``augment``); "default" sets nothing
# (the recipe's: photometric and ``invert_prob`` 0.15 since 2026-12-07; "photometric" was the
# default before).
PHOTOMETRIC = {"brightness": 0.4, "contrast": 0.5, "noise": 0.04}
AUGMENT = {
    "default": {},
    "photometric": {**PHOTOMETRIC, "invert_prob": 0.0},
    "photometric+rot180": {**PHOTOMETRIC, "invert_prob": 0.0, "rotation": 180},
    "photometric+invert": {**PHOTOMETRIC, "invert_prob": 0.3},
    "photometric+invert015": {**PHOTOMETRIC, "invert_prob": 0.15},
    "default+rot180": {"rotation": 180},
}
# Presets trained for twice the scratch recipe's steps of the time (600; 80 frames: 150 epochs,
# 1200 steps). The "default-x2" rows of augment.json are the plain augmentation, then the
# recipe's default.
AUGMENT["default-x2"] = {"epochs": 150}
AUGMENT["photometric-x2"] = {**AUGMENT["photometric"], "epochs": 150}
AUGMENT["photometric+invert-x2"] = {**AUGMENT["photometric+invert"], "epochs": 150}


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
    ap.add_argument("--augment", nargs="+", choices=sorted(AUGMENT),
                    help="compare these augmentation presets (scratch recipe)")
    ap.add_argument("--steps", type=int,
                    help="train this many optimisation steps instead of the recipe's "
                         "(epochs = steps / batches per epoch, beyond the recipe's bounds)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    out = args.out or HERE / "results" / ("augment.json" if args.augment else "recipe.json")
    record = {"benchmark": "recipe_check",
              "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "machine": machine_info(), "rows": []}
    if args.augment:
        record["augment_presets"] = {k: AUGMENT[k] for k in args.augment}
        runs = [("scratch", name) for name in args.augment]
    else:
        runs = [(recipe, None) for recipe in args.recipes]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        unseen = {}
        for seed in (UNSEEN_SEEDS if args.augment else (1,)):
            unseen[seed] = tmp / f"unseen{seed}"
            generate_project(unseen[seed], frames=40, size=(128, 128), seed=seed,
                             video_frames=0)
        for frames in args.frames or [80]:
            for recipe, preset in runs:
                for seed in args.seeds:
                    row = train_and_score(tmp, frames, recipe, preset, seed, unseen,
                                          args.steps)
                    record["rows"].append(row)
                    print(json.dumps(row), flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(record, indent=2) + "\n")
    return 0


def train_and_score(tmp: Path, frames: int, recipe: str, preset: str | None, seed: int,
                    unseen: dict[int, Path], steps: int | None = None) -> dict:
    """Train one model on a seed-0 project and score it on its own and the unseen frames
    (for ``steps`` optimisation steps when given, else the recipe's)."""
    proj = tmp / f"p{frames}-{recipe}-{preset}-{seed}"
    generate_project(proj, frames=frames, size=(128, 128), seed=0, video_frames=0)
    settings = {"recipe": recipe, "seed": seed}
    if steps:
        project = load_project(proj)
        batches = math.ceil(len(create_split(project, 1).train) / project.batch_size)
        settings["epochs"] = max(1, math.ceil(steps / batches))
    if preset:
        preset_settings = dict(AUGMENT[preset])
        if "epochs" in preset_settings:
            settings["epochs"] = preset_settings.pop("epochs")
        settings["augment"] = preset_settings
    c0, t0 = cpu_s(), time.perf_counter()
    folder = api.train_network(load_project(proj), 1, None, settings, progress=False)
    row = {"frames": frames, "recipe": recipe, "seed": seed,
           "cpu_min": round((cpu_s() - c0) / 60, 2),
           "wall_min": round((time.perf_counter() - t0) / 60, 2)}
    if preset:
        row["augment"] = preset
    resolved = (folder / "train_config.yaml").read_text()
    row["settings"] = {k: v for k, v in (
        line.split(": ", 1) for line in resolved.splitlines()
        if line.split(": ", 1)[0] in ("net", "lr", "output_stride", "epochs", "batch_size"))}
    row["own_test_px"] = own_test_error(folder)
    if len(unseen) == 1:
        row["unseen"] = unseen_error(folder, next(iter(unseen.values())))
    else:
        row["unseen"] = {str(s): unseen_error(folder, p) for s, p in unseen.items()}
    return row


if __name__ == "__main__":
    sys.exit(main())
