"""Make, with DeepLabCut 3.0.2 itself, a parity reference for top-down models (detector +
pose model on crops).

Run with a DeepLabCut 3.0.2 environment's python (it pins numpy<2, so it cannot share posed's):

    OMP_NUM_THREADS=1 dlcenv/bin/python benchmarks/dlc_reference/make_td_fixture.py \
        [--posed .venv/bin/posed] [--out tests/data/deeplabcut/td_fixture] \
        [--workdir /tmp/td-fixture]

Seven shuffles of one synthetic two-animal project:

  frcnn:     ``top_down_resnet_50`` (``HeatmapHead`` of two 1x1 convolutions on crops) with
             ``fasterrcnn_mobilenet_v3_large_fpn`` (FrozenBatchNorm backbone, two classes);
  ssd:       ``top_down_resnet_50`` with ``ssdlite`` (``ssdlite320_mobilenet_v3_large``);
  rtm:       ``rtmpose_s`` (CSPNeXt-s + ``RTMCCHead``, SimCC decoding) with the Faster R-CNN;
  frcnn_r50: ``top_down_resnet_50`` with ``fasterrcnn_resnet50_fpn_v2`` (BatchNorm ResNet-50);
  hrnet:     ``top_down_hrnet_w18`` with ``ssdlite``;
  rtm_m:     ``rtmpose_m`` with ``ssdlite``;
  rtm_x:     ``rtmpose_x`` with ``ssdlite``.

Steps (timed into OUT/check.json):

1. ``posed synth WORKDIR/project --animals 2 --frames 20 --video-frames 6 --size 160x120
   --seed 5 -q``.
2. ``deeplabcut.create_training_dataset(config, Shuffles=[S], net_type=..., detector_type=...,
   userfeedback=False)`` (S = 1 frcnn, 2 ssd, 3 rtm, 4 frcnn_r50, 5 hrnet,
   6 rtm_m, 7 rtm_x).
3. DeepLabCut's ``PoseModel.build`` and ``DETECTORS.build`` of the shuffle's config (no
   pretrained weights; torchvision's Faster R-CNN still asks for MobileNetV3's ImageNet file,
   so TORCH_HOME points at a folder holding a random one under that name: the snapshot
   replaces every tensor), every tensor from ``seeded_weights.value`` (OUT/seeded_weights.py),
   saved as ``train/snapshot-005.pt`` and ``train/snapshot-detector-005.pt``
   (``{"model": state_dict, "metadata": {"epoch": 5}}``); names, shapes, dtypes in
   state-dict order -> OUT/<shuffle>/state_keys.json.
4. ``deeplabcut.analyze_videos(config, [video], shuffle=S, destfolder=OUT/<shuffle>/analyze,
   save_as_csv=True, device="cpu", batch_size=4, auto_track=False, save_as_df=True)``: the
   untracked detections as h5/csv, and ``_full.pickle`` (boxes and box scores per frame,
   copied to ``boxes.json`` so that tests need not unpickle).
5. ``deeplabcut.export_model(config, shuffle=S)``: the file name and its top-level keys are
   recorded; the file is not copied (rebuild it from seeded_weights.py + state_keys.json).
6. OUT gets config.yaml, the video and posed's ground truth, and per shuffle its
   pytorch_config.yaml, state_keys.json and analyze outputs; the build path in text files is
   replaced by ``__PROJECT_PATH__``.
"""

from __future__ import annotations

import copy
import json
import os
import pickle
import shutil
import subprocess
import time
from pathlib import Path

from fixture_common import (PLACEHOLDER, capture, fixture_args, load_seeded_weights,
                            replace_build_path, seeded, synth_project, versions, write_check)

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
SYNTH = ["--animals", "2", "--frames", "20", "--video-frames", "6", "--size", "160x120",
         "--seed", "5", "-q"]
# tag -> (shuffle, pose net_type, detector)
SHUFFLES = {"frcnn": (1, "top_down_resnet_50", "fasterrcnn_mobilenet_v3_large_fpn"),
            "ssd": (2, "top_down_resnet_50", "ssdlite"),
            "rtm": (3, "rtmpose_s", "fasterrcnn_mobilenet_v3_large_fpn"),
            # the wider variants (the slow tests): the other detector, HRNet and RTMPose m/x
            "frcnn_r50": (4, "top_down_resnet_50", "fasterrcnn_resnet50_fpn_v2"),
            "hrnet": (5, "top_down_hrnet_w18", "ssdlite"),
            "rtm_m": (6, "rtmpose_m", "ssdlite"),
            "rtm_x": (7, "rtmpose_x", "ssdlite")}
BATCH_SIZE = 4


def fake_mobilenet_home(work: Path) -> Path:
    """A TORCH_HOME where torchvision finds "ImageNet" MobileNetV3 weights (random ones)."""
    import torch
    import torchvision

    home = work / "torch_home"
    ckpt = home / "hub" / "checkpoints"
    ckpt.mkdir(parents=True)
    model = torchvision.models.mobilenet_v3_large(weights=None)
    torch.save(model.state_dict(), ckpt / "mobilenet_v3_large-8738ca79.pth")
    return home


def match_crop_to_head(pcfg: dict, path: Path) -> str | None:
    """DeepLabCut 3.0.2 writes the project's 256x256 ``top_down_crop`` into an ``rtmpose_x``
    shuffle whose head wants 384x384 crops (its own model config says 384), and its
    ``analyze_videos`` then fails on a shape mismatch. The reference sets the crop to the
    head's ``input_size``, as DeepLabCut's rtmpose_x.yaml does; recorded in check.json."""
    from deeplabcut.core.config import write_config

    head = pcfg["model"]["heads"]["bodypart"]
    if "input_size" not in head:
        return None
    w, h = head["input_size"]
    edited = None
    for section in ("inference", "train"):
        crop = pcfg["data"][section]["top_down_crop"]
        if (crop["width"], crop["height"]) != (w, h):
            edited = (f"data.*.top_down_crop {crop['width']}x{crop['height']} -> {w}x{h} "
                      "(the head's input_size; DeepLabCut's analyze_videos fails otherwise)")
            crop.update(width=w, height=h)
    if edited:
        write_config(str(path), pcfg)
    return edited


def run_shuffle(tag: str, project: Path, sw, out_root: Path) -> dict:
    import deeplabcut
    import numpy as np
    import pandas as pd
    import torch
    from deeplabcut.core.config import read_config_as_dict
    from deeplabcut.pose_estimation_pytorch.models import DETECTORS, PoseModel
    from deeplabcut.utils import auxiliaryfunctions as af

    shuffle, net_type, detector = SHUFFLES[tag]
    config = project / "config.yaml"
    timings: dict[str, float] = {}
    rec: dict = {"shuffle": shuffle, "net_type": net_type, "detector_type": detector}
    t0 = time.perf_counter()
    with capture():
        deeplabcut.create_training_dataset(str(config), Shuffles=[shuffle], net_type=net_type,
                                           detector_type=detector,
                                           engine=deeplabcut.Engine.PYTORCH, userfeedback=False)
    timings["2_create_training_dataset"] = time.perf_counter() - t0
    cfg = af.read_config(str(config))
    train_dir = project / af.get_model_folder(cfg["TrainingFraction"][0], shuffle, cfg,
                                              engine=deeplabcut.Engine.PYTORCH) / "train"
    pcfg_path = train_dir / "pytorch_config.yaml"
    pcfg = read_config_as_dict(pcfg_path)
    rec["config_edit"] = match_crop_to_head(pcfg, pcfg_path)
    rec["pytorch_config"] = {"method": pcfg.get("method"), "model": copy.deepcopy(pcfg["model"]),
                             "detector_model": copy.deepcopy(pcfg["detector"]["model"]),
                             "data_inference": copy.deepcopy(pcfg["data"]["inference"])}

    t0 = time.perf_counter()
    pose_state, pose_keys = seeded(PoseModel.build(copy.deepcopy(pcfg["model"])), sw)
    det_state, det_keys = seeded(DETECTORS.build(dict(pcfg["detector"]["model"])), sw)
    torch.save({"model": pose_state, "metadata": {"epoch": 5}}, train_dir / "snapshot-005.pt")
    torch.save({"model": det_state, "metadata": {"epoch": 5}},
               train_dir / "snapshot-detector-005.pt")
    rec["state_dict"] = {"pose_tensors": len(pose_keys), "detector_tensors": len(det_keys),
                         "detector_megabytes": round(sum(t.numel() * 4 for t in
                                                         det_state.values()) / 2**20, 1)}
    timings["3_seeded_snapshots"] = time.perf_counter() - t0

    dest = project / f"analyze_{tag}"
    dest.mkdir()
    kwargs = {"shuffle": shuffle, "save_as_csv": True, "device": "cpu",
              "batch_size": BATCH_SIZE, "auto_track": False, "save_as_df": True}
    t0 = time.perf_counter()
    with capture() as buf:
        scorer = deeplabcut.analyze_videos(str(config), [str(project / "videos" / "synth1.mp4")],
                                           destfolder=str(dest), **kwargs)
    timings["4_analyze_videos"] = time.perf_counter() - t0
    rec["analyze_call"] = ("deeplabcut.analyze_videos(config, [video], destfolder=..., "
                           + ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) + ")")
    rec["snapshots_used"] = [line.strip().replace(str(project), PLACEHOLDER)
                             for line in buf.getvalue().splitlines() if "snapshot" in line]
    rec["scorer"] = scorer
    with open(dest / f"synth1{scorer}_full.pickle", "rb") as fh:
        full = pickle.load(fh)
    frames = sorted(k for k in full if k.startswith("frame"))
    scores = np.array([full[f]["bbox_scores"] for f in frames])
    # the boxes as JSON (float32 values, exactly), so that tests need not unpickle
    (dest / "boxes.json").write_text(json.dumps(
        {"what": "per frame DeepLabCut's detections from _full.pickle: bboxes (x, y, w, h), "
                 "bbox_scores; -1 pads empty slots", "frames": [
            {"bboxes": full[f]["bboxes"].astype(float).tolist(),
             "bbox_scores": full[f]["bbox_scores"].astype(float).tolist()} for f in frames]}))
    rec["boxes_per_frame"] = [int((s >= 0).sum()) for s in scores]
    rec["box_scores"] = scores.round(4).tolist()
    df = pd.read_hdf(dest / f"synth1{scorer}.h5")
    lik = df.xs("likelihood", level="coords", axis=1).to_numpy()
    rec["likelihood"] = {"min": float(lik[lik >= 0].min()), "max": float(lik.max()),
                         "distinct": int(len(np.unique(lik)))}

    t0 = time.perf_counter()
    with capture():
        deeplabcut.export_model(str(config), shuffle=shuffle)
    exported = sorted((project / "exported-models-pytorch").rglob(f"*shuffle-{shuffle}*.pt"))
    rec["export_model"] = {"files": [p.relative_to(project).as_posix() for p in exported],
                           "keys": sorted(torch.load(exported[0], map_location="cpu",
                                                     weights_only=False))}
    timings["5_export_model"] = time.perf_counter() - t0

    out = out_root / tag
    shutil.copy2(pcfg_path, out / "pytorch_config.yaml")
    shutil.copytree(dest, out / "analyze")
    (out / "state_keys.json").write_text(json.dumps(
        {"pose": pose_keys, "detector": det_keys}, indent=0) + "\n")
    rec["timings_s"] = {k: round(v, 2) for k, v in timings.items()}
    return rec


def check_structure(records: dict) -> list[str]:
    """The properties the fixture is for; a failure means seeded_weights needs re-tuning."""
    problems = []
    for tag, r in records.items():
        if min(r["boxes_per_frame"]) < 1 or max(r["boxes_per_frame"]) < 2:
            problems.append(f"{tag}: boxes per frame {r['boxes_per_frame']} (want >= 1, some 2)")
        if r["likelihood"]["distinct"] < 10:
            problems.append(f"{tag}: likelihoods not spread: {r['likelihood']}")
    return problems


def main() -> int:
    args = fixture_args(__doc__.splitlines()[0], "td_fixture", "/tmp/td-fixture")
    t_start = time.perf_counter()
    out_root = args.out.resolve()
    sw_path = out_root / "seeded_weights.py"
    if not sw_path.is_file():
        raise SystemExit(f"{sw_path} is missing (it is the fixture's source, not an output)")
    sw = load_seeded_weights(sw_path)
    for p in out_root.iterdir():  # everything but seeded_weights.py and README.md is rebuilt
        if p.name not in ("seeded_weights.py", "README.md"):
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    for tag in SHUFFLES:
        (out_root / tag).mkdir()
    work = args.workdir.resolve()
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    os.environ["TORCH_HOME"] = str(fake_mobilenet_home(work))

    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    project = work / "project"
    synth_project(args.posed, project, SYNTH)
    records = {tag: run_shuffle(tag, project, sw, out_root) for tag in SHUFFLES}
    shutil.copy2(project / "config.yaml", out_root / "config.yaml")
    shutil.copy2(project / "videos" / "synth1.mp4", out_root / "synth1.mp4")
    shutil.copy2(project / "videos" / "synth1_truth.csv", out_root / "synth1_truth.csv")
    replaced, binary = replace_build_path(out_root, project, work)
    posed_version = subprocess.run([str(args.posed), "--version"], check=False,
                                   capture_output=True, text=True).stdout.strip()
    problems = check_structure(records)
    write_check(out_root, {
        "what": "DeepLabCut 3.0.2 top-down parity reference (seeded weights, synthetic "
                "two-animal project made by `posed synth`)",
        "synth_command": ["posed", "synth", "PROJECT", *SYNTH],
        "versions": versions(posed_version), "placeholder": PLACEHOLDER,
        "placeholder_replaced_in": replaced, "build_path_left_in_binary_files": binary,
        "structure_problems": problems,
        "total_time_s": round(time.perf_counter() - t_start, 1), **records})
    if problems:
        print("STRUCTURE PROBLEMS:\n  " + "\n  ".join(problems))
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
