"""Rebuild the demo's bundled model and clip (run from the repository root).

    .venv/bin/python configs/demo/make_assets.py

Everything here is synthetic and made by posed itself (no third-party data): a synthetic
project (seed 0, 150 labelled 128x128 frames) is generated, a MobileNetV2-0.35 model is
trained on it from random weights with the PyTorch engine, and the newest snapshot is copied
with its ``posed.yaml`` into ``configs/demo/model/``. The clip is the project's 300-frame
video of the same synthetic "session" (same animal and floor, as a lab labels frames from
its own rig) with its ground truth; none of its frames is a labelled frame.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from pathlib import Path

from posed.engines import api
from posed.engines.bundle import load_bundle
from posed.engines.project import load_project
from posed.engines.synth import generate_project

HERE = Path(__file__).resolve().parent
SETTINGS = {"net": "mobilenet_v2_0.35", "output_stride": 8, "lr": 3e-3, "epochs": 60,
            "batch_size": 8, "save_every": 60}


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        proj = Path(tmp) / "demo-project"
        generate_project(proj, frames=150, size=(128, 128), seed=0, video_frames=300, task="demo",
                         scorer="synth")
        project = load_project(proj)
        folder = api.train_network(project, 1, "pytorch", dict(SETTINGS))
        print(api.evaluate_network(project, 1, "pytorch").format())
        bundle = load_bundle(folder)
        out = HERE / "model"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()
        shutil.copy2(bundle.weights_path, out / "model.safetensors")
        source = {k: v for k, v in bundle.source.items() if k != "project"}
        source["note"] = "synthetic demo model, built by configs/demo/make_assets.py"
        dataclasses.replace(bundle, source=source).save(out, ["model.safetensors"])
        shutil.copy2(proj / "videos" / "synth1.mp4", HERE / "clip.mp4")
        shutil.copy2(proj / "videos" / "synth1_truth.csv", HERE / "clip_truth.csv")


if __name__ == "__main__":
    main()
