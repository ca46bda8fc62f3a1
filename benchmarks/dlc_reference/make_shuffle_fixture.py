"""Make, with DeepLabCut 3.0.2 itself, a small fixture of a DeepLabCut-trained shuffle.

Run with a DeepLabCut 3.0.2 environment's python (it pins numpy<2, so it cannot share posed's):

    dlcenv/bin/python benchmarks/dlc_reference/make_shuffle_fixture.py \
        [--posed .venv/bin/posed] [--out tests/data/deeplabcut/shuffle_fixture] \
        [--workdir /tmp/posed-dlc-fixture]

Steps (each is timed and recorded in OUT/check.json; OUT/README.md documents them):

1. ``posed synth WORKDIR/synth --frames 20 --video-frames 12 --size 64x64 --seed 3 -q``
   (a synthetic single-animal DeepLabCut project, body parts snout,leftear,rightear,tailbase).
2. ``deeplabcut.create_training_dataset(config, Shuffles=[1], net_type="resnet_50",
   engine=Engine.PYTORCH, userfeedback=False)``.
3. Shrink the net: in the shuffle's ``train/pytorch_config.yaml`` the backbone becomes timm's
   tiny ``test_resnet`` (96 output channels) and the HeatmapHead's heatmap/locref
   ConvTranspose2d layers take 96 input channels (``net_type: resnet_50`` is left as DLC wrote it).
4. A random-init state dict (``torch.manual_seed(0)``; ``PoseModel.build(model_cfg,
   pretrained_backbone=False)``) saved as ``{"model": state_dict}`` outside the project, then
   ``deeplabcut.train_network(config, shuffle=1, device="cpu", snapshot_path=<init>, epochs=2,
   save_epochs=2, batch_size=4, pytorch_cfg_updates={"runner.eval_interval": 2})``.
5. ``deeplabcut.analyze_videos`` on the synth video, once writing next to the video and once
   with ``destfolder=analyze/``.
6. ``deeplabcut.evaluate_network(config, shuffles=[1])``.
7. ``deeplabcut.export_model(config, shuffle=1)``.
8. DeepLabCut-Live: ``DLCLive(exported .pt, model_type="pytorch", device="cpu")``,
   ``init_inference`` + ``get_pose`` on the first 3 video frames.
9. Copy the project to OUT (the build path in text files replaced by ``__PROJECT_PATH__``) and
   write OUT/check.json (versions, sha256 of every file, DLC's outputs read through DLC's API)
   and OUT/README.md.

The project is built in WORKDIR (deleted first), a fixed neutral path, so that the only build
path left inside DLC's binary files (pickles, .pt, .h5) is that one.
"""

from __future__ import annotations

import argparse
import json
import logging
import pickle
import shutil
import sys
import time
from pathlib import Path

from fixture_common import (PLACEHOLDER, capture, files_of, posed_synth, replace_build_path, tolist, versions,
                            write_check)

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
SYNTH_ARGS = ["--frames", "20", "--video-frames", "12", "--size", "64x64", "--seed", "3", "-q"]
TINY_BACKBONE = "test_resnet"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--posed", type=Path, default=REPO / ".venv" / "bin" / "posed")
    ap.add_argument("--out", type=Path,
                    default=REPO / "tests" / "data" / "deeplabcut" / "shuffle_fixture")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/posed-dlc-fixture"))
    args = ap.parse_args()

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    record: dict = {}

    # ------------------------------------------------------------------ 1. posed synth
    project, record["synth"], posed_version, synth_files, timings["1_posed_synth"] = \
        posed_synth(args.posed, args.workdir, SYNTH_ARGS)
    work, config = project.parent, project / "config.yaml"

    import numpy as np
    import pandas as pd
    import timm
    import torch

    import deeplabcut
    from deeplabcut.core.config import read_config_as_dict, write_config
    from deeplabcut.pose_estimation_pytorch.data.dlcloader import DLCLoader
    from deeplabcut.pose_estimation_pytorch.models import PoseModel
    from deeplabcut.utils import auxiliaryfunctions as af

    # ------------------------------------------------------------------ 2. training dataset
    t0 = time.perf_counter()
    with capture() as out:
        splits = deeplabcut.create_training_dataset(
            str(config), Shuffles=[1], net_type="resnet_50",
            engine=deeplabcut.Engine.PYTORCH, userfeedback=False)
    timings["2_create_training_dataset"] = time.perf_counter() - t0
    record["create_training_dataset"] = {"returned": tolist(splits)}

    cfg = af.read_config(str(config))
    model_folder = project / af.get_model_folder(
        cfg["TrainingFraction"][0], 1, cfg, engine=deeplabcut.Engine.PYTORCH)
    train_cfg_path = model_folder / "train" / "pytorch_config.yaml"
    test_dir = model_folder / "test"
    after_ctd = sorted(str(p.relative_to(project)) for p in files_of(project))

    # ------------------------------------------------------------------ 3. tiny backbone
    t0 = time.perf_counter()
    probe = timm.create_model(TINY_BACKBONE, pretrained=False, output_stride=16)
    channels = int(probe.num_features)
    del probe
    edits = []
    for pc in [train_cfg_path, test_dir / "pytorch_config.yaml"]:
        if not pc.exists():
            continue
        pcfg = read_config_as_dict(pc)
        model = pcfg["model"]
        before = {"model.backbone.model_name": model["backbone"]["model_name"],
                  "model.backbone_output_channels": model.get("backbone_output_channels")}
        model["backbone"]["model_name"] = TINY_BACKBONE
        if "backbone_output_channels" in model:
            model["backbone_output_channels"] = channels
        for hname, head in model["heads"].items():
            for key in ("heatmap_config", "locref_config"):
                if key in head and "channels" in head[key]:
                    before[f"model.heads.{hname}.{key}.channels"] = list(head[key]["channels"])
                    head[key]["channels"][0] = channels
        write_config(pc, pcfg, overwrite=True)
        after = read_config_as_dict(pc)["model"]
        edits.append({"file": str(pc.relative_to(project)), "before": before, "after": {
            "model.backbone.model_name": after["backbone"]["model_name"],
            "model.backbone_output_channels": after.get("backbone_output_channels"),
            **{f"model.heads.{h}.{k}.channels": after["heads"][h][k]["channels"]
               for h in after["heads"] for k in ("heatmap_config", "locref_config")
               if k in after["heads"][h]}}})
    test_note = ("DeepLabCut also wrote `test/pytorch_config.yaml`, edited the same way."
                 if (test_dir / "pytorch_config.yaml").exists() else
                 "DeepLabCut wrote no `test/pytorch_config.yaml` (only `test/pose_cfg.yaml`, "
                 "left as written).")
    record["tiny_backbone"] = {"test_cfg_note": test_note, "model_name": TINY_BACKBONE, "output_channels": channels,
                               "edits": edits, "net_type_kept": read_config_as_dict(
                                   train_cfg_path).get("net_type")}

    # random init, saved outside the project
    pcfg = read_config_as_dict(train_cfg_path)
    torch.manual_seed(0)
    init_model = PoseModel.build(pcfg["model"], pretrained_backbone=False)
    init_path = work / "random_init.pt"
    torch.save({"model": init_model.state_dict()}, init_path)
    n_params = sum(p.numel() for p in init_model.parameters())
    with torch.no_grad():
        probe_out = init_model(torch.zeros(1, 3, 64, 64))
    record["tiny_backbone"]["n_parameters"] = int(n_params)
    record["tiny_backbone"]["n_state_dict_tensors"] = len(init_model.state_dict())
    record["tiny_backbone"]["head_output_shapes_64x64"] = {
        f"{h}.{k}": list(v.shape) for h, d in probe_out.items() for k, v in d.items()}
    del init_model
    timings["3_tiny_backbone_and_init"] = time.perf_counter() - t0

    # ------------------------------------------------------------------ 4. train
    train_kwargs = dict(shuffle=1, device="cpu", snapshot_path=str(init_path), epochs=2,
                        save_epochs=2, batch_size=4,
                        pytorch_cfg_updates={"runner.eval_interval": 2})
    t0 = time.perf_counter()
    with capture() as out:
        deeplabcut.train_network(str(config), **train_kwargs)
    timings["4_train_network"] = time.perf_counter() - t0
    train_dir = model_folder / "train"
    snapshots = sorted(p.name for p in train_dir.glob("*.pt"))
    record["train_network"] = {
        "kwargs": {**train_kwargs, "snapshot_path": "<WORKDIR>/random_init.pt"},
        "snapshots": snapshots,
        "learning_stats_csv": (train_dir / "learning_stats.csv").read_text()
        if (train_dir / "learning_stats.csv").exists() else None,
    }

    # ------------------------------------------------------------------ 5. analyze
    video = project / "videos" / "synth1.mp4"
    dest = project / "analyze"
    dest.mkdir()
    t0 = time.perf_counter()
    with capture():
        scorer = deeplabcut.analyze_videos(str(config), [str(video)], shuffle=1,
                                           save_as_csv=True, device="cpu")
    timings["5a_analyze_videos"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    with capture():
        scorer_dest = deeplabcut.analyze_videos(str(config), [str(video)], shuffle=1,
                                                save_as_csv=True, device="cpu",
                                                destfolder=str(dest))
    timings["5b_analyze_videos_destfolder"] = time.perf_counter() - t0
    h5 = dest / f"synth1{scorer_dest}.h5"
    df = pd.read_hdf(h5)
    record["analyze_videos"] = {
        "calls": ["deeplabcut.analyze_videos(config, [video], shuffle=1, save_as_csv=True, "
                  "device='cpu')",
                  "deeplabcut.analyze_videos(config, [video], shuffle=1, save_as_csv=True, "
                  "device='cpu', destfolder=PROJECT/analyze)"],
        "scorer": scorer, "scorer_destfolder": scorer_dest,
        "videos_dir_outputs": sorted(p.name for p in video.parent.iterdir()
                                     if p.name.startswith("synth1DLC")),
        "destfolder_outputs": sorted(p.name for p in dest.iterdir()),
        "h5_columns": [list(c) for c in df.columns],
        "h5_column_names": list(df.columns.names),
        "h5_index": tolist(df.index.values),
        # (frames, bodyparts, 3) with x, y, likelihood
        "keypoints": tolist(df.to_numpy().reshape(len(df), -1, 3)),
    }
    with (dest / f"synth1{scorer_dest}_meta.pickle").open("rb") as f:
        meta = pickle.load(f)
    record["analyze_videos"]["meta_data_keys"] = sorted(meta["data"].keys()) \
        if isinstance(meta, dict) and "data" in meta else repr(type(meta))

    # ------------------------------------------------------------------ 6. evaluate
    t0 = time.perf_counter()
    with capture() as out:
        ev_returned = deeplabcut.evaluate_network(str(config), shuffles=[1], device="cpu")
    timings["6_evaluate_network"] = time.perf_counter() - t0
    eval_folder = project / af.get_evaluation_folder(
        cfg["TrainingFraction"][0], 1, cfg, engine=deeplabcut.Engine.PYTORCH)
    eval_root = project / "evaluation-results-pytorch"
    eval_files = sorted(str(p.relative_to(project)) for p in files_of(eval_root))
    eval_csvs = {str(p.relative_to(project)): p.read_text().replace(str(project), PLACEHOLDER)
                 for p in sorted(eval_root.rglob("*.csv"))}
    record["evaluate_network"] = {
        "call": "deeplabcut.evaluate_network(config, shuffles=[1], device='cpu')",
        "returned": tolist(ev_returned),
        "output": out.getvalue().replace(str(project), PLACEHOLDER),
        "evaluation_folder": str(eval_folder.relative_to(project)),
        "files": eval_files, "csv_contents": eval_csvs}

    # ------------------------------------------------------------------ 7. export
    t0 = time.perf_counter()
    with capture() as out:
        deeplabcut.export_model(str(config), shuffle=1)
    timings["7_export_model"] = time.perf_counter() - t0
    exported = sorted((project / "exported-models-pytorch").rglob("*.pt"))
    record["export_model"] = {
        "call": "deeplabcut.export_model(config, shuffle=1)",
        "files": [str(p.relative_to(project)) for p in sorted(
            files_of(project / "exported-models-pytorch"))],
    }
    raw = torch.load(exported[0], map_location="cpu", weights_only=True)
    record["export_model"]["top_level_keys"] = sorted(raw.keys())
    record["export_model"]["config_keys"] = sorted(raw["config"].keys())
    record["export_model"]["pose_equals_snapshot_model"] = None
    snap_pts = sorted(train_dir.glob("snapshot*.pt"))
    if snap_pts:
        snap = torch.load(snap_pts[-1], map_location="cpu", weights_only=True)
        record["export_model"]["pose_equals_snapshot_model"] = bool(
            snap["model"].keys() == raw["pose"].keys()
            and all(torch.equal(snap["model"][k], raw["pose"][k]) for k in snap["model"]))

    # ------------------------------------------------------------------ 8. DLC-Live
    import cv2
    import dlclive
    from dlclive import DLCLive

    t0 = time.perf_counter()
    cap = cv2.VideoCapture(str(video))
    frames = []
    while len(frames) < 3:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    live = DLCLive(str(exported[0]), model_type="pytorch", device="cpu")
    first = live.init_inference(frames[0])
    poses = [first] + [live.get_pose(f) for f in frames[1:]]
    poses_again = [live.get_pose(frames[0])]
    timings["8_dlclive"] = time.perf_counter() - t0
    record["dlclive"] = {
        "calls": ["DLCLive(exported_pt, model_type='pytorch', device='cpu')",
                  "init_inference(frame0)", "get_pose(frame1)", "get_pose(frame2)",
                  "get_pose(frame0) again -> pose_frame0_again"],
        "frames_read_with": f"cv2.VideoCapture (opencv {cv2.__version__}), BGR uint8, "
                            "passed as-is (DLCLive convert2rgb=True converts BGR->RGB)",
        "frame_shape": list(frames[0].shape),
        "poses": tolist(poses), "pose_frame0_again": tolist(poses_again[0]),
        "max_abs_diff_vs_analyze_xy": tolist(np.nanmax(np.abs(
            np.asarray(poses)[:, :, :2] - df.to_numpy().reshape(len(df), -1, 3)[:3, :, :2]))),
        "max_abs_diff_vs_analyze_likelihood": tolist(np.nanmax(np.abs(
            np.asarray(poses)[:, :, 2] - df.to_numpy().reshape(len(df), -1, 3)[:3, :, 2]))),
    }

    # how close the argmax decisions are (for tests comparing other runtimes with DLC's
    # numbers): the snapshot's model run on the 12 video frames, raw heatmaps
    t0 = time.perf_counter()
    cap = cv2.VideoCapture(str(video))
    all_frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        all_frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    cap.release()
    net = PoseModel.build(read_config_as_dict(train_cfg_path)["model"], pretrained_backbone=False)
    net.load_state_dict(torch.load(snap_pts[-1], map_location="cpu",
                                   weights_only=True)["model"])
    net.eval()
    x = torch.from_numpy(np.stack(all_frames)).float().permute(0, 3, 1, 2) / 255.0
    x = (x - torch.tensor([0.485, 0.456, 0.406])[:, None, None]) \
        / torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    with torch.no_grad():
        outputs = net(x)
        decoded = net.get_predictions(outputs)["bodypart"]["poses"][:, 0]  # (frames, K, 3)
    heat = outputs["bodypart"]["heatmap"]
    flat = heat.flatten(2)
    top2 = flat.topk(2, dim=2).values
    argmax = flat.argmax(dim=2)
    w = heat.shape[-1]
    kp = df.to_numpy().reshape(len(df), -1, 3)
    record["heatmaps"] = {
        "how": "PoseModel.build(train pytorch_config model) + snapshot['model'], eval mode, "
               "all video frames RGB/255 normalised with ImageNet mean/std, NCHW float32; "
               "decoded with PoseModel.get_predictions",
        "model_stride": net.get_stride("bodypart"),
        "heatmap_shape": list(heat.shape),
        "locref_shape": list(outputs["bodypart"]["locref"].shape),
        "argmax_cell_xy": tolist(torch.stack([argmax % w, argmax // w], dim=-1)),
        "top1": tolist(top2[..., 0]),
        "top1_minus_top2": tolist(top2[..., 0] - top2[..., 1]),
        "min_top1_minus_top2": float((top2[..., 0] - top2[..., 1]).min()),
        "decoded_max_abs_diff_vs_analyze_xy": float(np.abs(decoded[..., :2].numpy()
                                                           - kp[..., :2]).max()),
        "decoded_max_abs_diff_vs_analyze_likelihood": float(np.abs(decoded[..., 2].numpy()
                                                                   - kp[..., 2]).max()),
    }
    timings["8b_heatmap_margins"] = time.perf_counter() - t0

    # ------------------------------------------------------------------ split through DLC's API
    loader = DLCLoader(config=str(config), shuffle=1, trainset_index=0)
    split = loader.split
    doc = project / af.get_data_and_metadata_filenames(
        af.get_training_set_folder(cfg), cfg["TrainingFraction"][0], 1, cfg)[1]
    _, train_idx, test_idx, frac = af.load_metadata(doc)
    record["split"] = {
        "api": "DLCLoader(config, shuffle=1, trainset_index=0).split and "
               "auxiliaryfunctions.load_metadata(Documentation_data-*.pickle); image names "
               "from DLCLoader.df.index",
        "train_indices": split["train"], "test_indices": split["test"],
        "load_metadata_train_indices": tolist(train_idx),
        "load_metadata_test_indices": tolist(test_idx),
        "load_metadata_train_fraction": tolist(frac),
        "all_images": ["/".join(i) if isinstance(i, tuple) else str(i) for i in loader.df.index],
        "train_images": ["/".join(loader.df.index[i]) for i in split["train"]],
        "test_images": ["/".join(loader.df.index[i]) for i in split["test"]],
        "df_train_images": ["/".join(i) for i in loader.df_train.index],
        "df_test_images": ["/".join(i) for i in loader.df_test.index],
    }
    record["scorer_names"] = {
        "analyze_videos_returned": scorer,
        "get_scorer_name": list(af.get_scorer_name(cfg, 1, cfg["TrainingFraction"][0],
                                                   engine=deeplabcut.Engine.PYTORCH)),
    }

    # ------------------------------------------------------------------ 9. copy to fixture
    t0 = time.perf_counter()
    out_dir = args.out.resolve()
    if out_dir.exists():
        shutil.rmtree(out_dir)
    shutil.copytree(project, out_dir)
    replaced, binary_with_path = replace_build_path(out_dir, project, work)
    timings["9_copy"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t_start

    record_head = {
        "what": "DeepLabCut 3.0.2-trained shuffle of a synthetic project made by `posed synth`",
        "versions": versions(posed_version),
        "build_path": str(project),
        "placeholder": PLACEHOLDER,
        "placeholder_replaced_in": replaced,
        "build_path_left_in_binary_files": binary_with_path,
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
        "synth_files": synth_files,
        "files_after_create_training_dataset": after_ctd,
    }
    record = {**record_head, **record}

    write_readme(out_dir, record)
    write_check(out_dir, record)
    print(json.dumps(record_head["timings_s"], indent=1))
    return 0


def write_readme(out_dir: Path, r: dict) -> None:
    v = r["versions"]
    tb = r["tiny_backbone"]
    edits = "\n".join(
        f"  - `{e['file']}`: " + ", ".join(
            f"`{k}`: {e['before'].get(k)!r} -> {e['after'].get(k)!r}" for k in e["after"])
        for e in tb["edits"])
    snaps = ", ".join(f"`{s}`" for s in r["train_network"]["snapshots"])
    exported = ", ".join(f"`{s}`" for s in r["export_model"]["files"])
    replaced = "\n".join(f"  - `{f}`" for f in r["placeholder_replaced_in"]) or "  - (none)"
    binaries = "\n".join(f"  - `{f}`" for f in r["build_path_left_in_binary_files"]) \
        or "  - (none)"
    timings = "\n".join(f"| {k} | {s} |" for k, s in r["timings_s"].items())
    text = f"""# DeepLabCut-trained shuffle fixture (synthetic)

A whole DeepLabCut project after DeepLabCut {v['deeplabcut']} created, trained, evaluated,
analysed a video with and exported shuffle 1, and DeepLabCut-Live {v['deeplabcut_live']} ran
the export. posed's tests read it **without DeepLabCut installed**. The project is
**synthetic**: its images, labels and video were rendered by `posed synth` (no real animal data).
The network is tiny and trained for 2 epochs from a random init, so its predictions are
meaningless; the fixture is about DeepLabCut's file layout, names, formats and numbers.

Made by `benchmarks/dlc_reference/make_shuffle_fixture.py` (re-run it to rebuild this folder):

    /work/dlcenv/bin/python benchmarks/dlc_reference/make_shuffle_fixture.py

Versions: deeplabcut {v['deeplabcut']}, deeplabcut-live {v['deeplabcut_live']}, torch
{v['torch']}, timm {v['timm']}, numpy {v['numpy']}, pandas {v['pandas']}, opencv {v['opencv']},
Python {v['python']} ({v['machine']}), CPU only; `{v['posed']}`.
The DeepLabCut environment: `python3.11 -m venv dlcenv; dlcenv/bin/pip install
deeplabcut==3.0.2 "numpy<2" torch==2.14.1 torchvision==0.29.1 deeplabcut-live`.

## Steps (as the script runs them; PROJECT = `{r['build_path']}`)

1. `posed synth PROJECT --frames 20 --video-frames 12 --size 64x64 --seed 3 -q`: a single-animal
   project (Task `synth`, scorer `synth`, date `Jan1`, body parts snout, leftear, rightear,
   tailbase; 20 labelled 64x64 PNGs in `labeled-data/synth1/` with `CollectedData_synth.h5/.csv`,
   a 12-frame H.264 `videos/synth1.mp4` and its ground truth `videos/synth1_truth.csv`).
   `project_path` in config.yaml was already the project's location (fixed: {r['synth']['project_path_fixed']}).
2. `deeplabcut.create_training_dataset(config, Shuffles=[1], net_type="resnet_50",
   engine=deeplabcut.Engine.PYTORCH, userfeedback=False)` (TrainingFraction 0.8: 16 train, 4 test images).
3. **Changed by hand (not by DeepLabCut)**, so the weights are small: the shuffle's train
   `pytorch_config.yaml`, read and written with DeepLabCut's own
   `deeplabcut.core.config.read_config_as_dict` / `write_config`:
{edits}
   i.e. the backbone is timm's tiny `{tb['model_name']}` (DLC's `ResNet` backbone wrapper,
   output_stride 16, {tb['output_channels']} output channels) instead of `resnet50_gn`
   (2048 channels), and the HeatmapHead keeps its single ConvTranspose2d (kernel 3, stride 2) for
   the heatmaps and the location refinement, with {tb['output_channels']} input channels. Everything
   else, `net_type: {tb['net_type_kept']}` included, is as DeepLabCut wrote it (so names such
   as the scorer `..._Resnet50_...` and the export folder still say resnet 50). The pose model has
   {tb['n_parameters']} parameters ({tb['n_state_dict_tensors']} state-dict tensors). {tb['test_cfg_note']}
4. Random init (no pretrained weights can be downloaded here, and DeepLabCut 3.0.2 would fetch
   ImageNet weights without a snapshot): `torch.manual_seed(0); PoseModel.build(model_cfg,
   pretrained_backbone=False)` saved as `{{"model": state_dict}}` outside the project, then
   `deeplabcut.train_network(config, shuffle=1, device="cpu", snapshot_path=<random init>,
   epochs=2, save_epochs=2, batch_size=4, pytorch_cfg_updates={{"runner.eval_interval": 2}})`.
   `eval_interval: 2` (DLC default 10) makes DLC compute test metrics after epoch 2 so that it saves
   a *best* snapshot, as real projects have; `save_epochs=2` keeps to one snapshot file (each is
   ~1.5 MB). Snapshots written: {snaps}. Also `train/learning_stats.csv` and `train/train.txt`.
   train_network writes the overrides (epochs 2, save_epochs 2, batch_size 4, eval_interval 2)
   back into `train/pytorch_config.yaml`.
5. `deeplabcut.analyze_videos(config, [PROJECT/videos/synth1.mp4], shuffle=1, save_as_csv=True,
   device="cpu")` (outputs next to the video, in `videos/`) and the same with
   `destfolder=PROJECT/analyze` (outputs in `analyze/`). Scorer returned: `{r['analyze_videos']['scorer']}`.
6. `deeplabcut.evaluate_network(config, shuffles=[1], device="cpu")` -> `evaluation-results-pytorch/`.
7. `deeplabcut.export_model(config, shuffle=1)` -> {exported}.
8. DeepLabCut-Live: `DLCLive(<exported .pt>, model_type="pytorch", device="cpu")`,
   `init_inference(frame0)`, `get_pose(frame1)`, `get_pose(frame2)` on the first 3 video frames
   read with `cv2.VideoCapture` (BGR, as DLCLive expects); poses in `check.json` (`dlclive`).
9. This folder is PROJECT copied as is (nothing removed: the random-init file was kept outside it),
   plus `check.json` and this README.

## Paths

The project was built in the fixed neutral folder `{r['build_path']}`. In text files that path was
replaced by the placeholder `{r['placeholder']}` (substitute the folder you copy the fixture to):
{replaced}

Binary files written by DeepLabCut still hold `{r['build_path']}` (not edited, formats untouched;
the `.pt` as a string in its config's `metadata`, the `_meta.pickle` files as pickled `PosixPath`s):
{binaries}

Rebuilding gives byte-identical `.pt` files, split, keypoints, poses and evaluation CSVs; the
`.h5`, `.mat`, `_meta.pickle` and `train.txt` files differ in embedded timestamps only.

## Things to know when reading these files without DeepLabCut

- `*_meta.pickle` (in `videos/` and `analyze/`) pickles DeepLabCut enums
  (`deeplabcut.pose_estimation_pytorch.config.enums.NetType` / `MethodType`, under
  `data["pytorch-config"]["net_type"]` / `["method"]`) and `pathlib.PosixPath`s
  (`["metadata"]["project_path"]`, `["pose_config_path"]`): a plain `pickle.load` without
  DeepLabCut raises ModuleNotFoundError; an Unpickler whose `find_class` maps those enums to str
  reads them. `*_full.pickle` and `Documentation_data-*.pickle` need only numpy (they name
  `numpy.core.numeric`, which numpy 2 still resolves with a DeprecationWarning).
- The export folder is named `DLC_synth_NetType.RESNET_50_iteration-0_shuffle-1` (DeepLabCut
  3.0.2 formats its `NetType` str-enum with an f-string on Python 3.11; older releases wrote
  `DLC_synth_resnet_50_...`).
- The evaluation `.h5` has 4 column levels (scorer, individuals, bodyparts, coords; individual
  `individual_1`) and all 20 labelled images as rows, while the analyze `.h5` files have 3 levels
  (scorer, bodyparts, coords) and a RangeIndex over the 12 frames.
- The 2-epoch net is barely trained: likelihoods are ~0.005-0.02 and, per frame and body part,
  the best heatmap cell beats the second one by as little as
  {r['heatmaps']['min_top1_minus_top2']:.1e} (`check.json` `heatmaps`), so another runtime can
  pick a different cell on near-ties: compare positions with care.
- `test/pose_cfg.yaml` has `dataset:` set to the project folder itself (as DeepLabCut wrote it).

## check.json

`versions`, `timings_s`, `files` (every file but check.json: bytes, sha256), `synth` /
`create_training_dataset` / `tiny_backbone` / `train_network` (snapshot names, learning_stats.csv
text) / `analyze_videos` (scorer string DLC returned, output names, h5 columns and index,
`keypoints`: the h5's (frames, bodyparts, [x, y, likelihood]) for all 12 frames) /
`evaluate_network` (what it returned and printed/logged, its files and CSV contents) /
`export_model` (files, keys) / `heatmaps` (the snapshot's raw heatmaps on all 12 frames:
argmax cells, top-1 values and top-1 minus top-2 margins, and the largest difference between
`PoseModel.get_predictions` and analyze_videos) / `dlclive` (the 3 poses, each (bodyparts, [x, y, likelihood]),
and their largest difference to analyze_videos' keypoints) / `split` (train and test indices and
image names of DLC's split read through `DLCLoader(...).split` and
`auxiliaryfunctions.load_metadata`) / `scorer_names`.

## Timings (seconds, 2 CPU cores)

| step | s |
| --- | --- |
{timings}
"""
    (out_dir / "README.md").write_text(text)


if __name__ == "__main__":
    sys.exit(main())
