"""Make, with DeepLabCut 3.0.2 itself, a small fixture of a multi-animal bottom-up shuffle.

Run with a DeepLabCut 3.0.2 environment's python (it pins numpy<2, so it cannot share posed's):

    OMP_NUM_THREADS=1 dlcenv/bin/python benchmarks/dlc_reference/make_ma_fixture.py \
        [--posed .venv/bin/posed] [--out tests/data/deeplabcut/ma_fixture] \
        [--workdir /tmp/posed-dlc-ma-fixture]

The model is DeepLabCut's multi-animal bottom-up model for ``net_type="resnet_50"``: a ResNet
backbone, a ``DLCRNetHead`` (heatmaps, location refinement and part affinity fields, 5
refinement stages) and a ``PartAffinityFieldPredictor`` (peaks, PAF costs, DeepLabCut's
``Assembler``). The fixture exists so that posed can prove keypoint and assembly parity
against DeepLabCut: OUT/reference_maps.npz and OUT/reference_preds.json hold the raw maps and
the predictor's intermediate results on the first video frames.

Steps (each is timed and recorded in OUT/check.json; OUT/README.md documents them):

1. ``posed synth WORKDIR/synth --animals 3 --frames 20 --video-frames 12 --size 160x160
   --seed 3 -q`` (a synthetic multi-animal project: individuals individual1..3,
   multianimalbodyparts snout,leftear,rightear,tailbase).
2. ``deeplabcut.create_training_dataset(config, Shuffles=[1], net_type="resnet_50",
   engine=Engine.PYTORCH, userfeedback=False)``.
3. Shrink the net: in the shuffle's ``train/pytorch_config.yaml`` the backbone becomes timm's
   tiny ``test_resnet`` (96 output channels): ``backbone_output_channels`` and the first entry
   of the head's heatmap/locref/paf ``channels`` become 96 (the head's other settings, and
   ``net_type: resnet_50``, are left as DLC wrote them). The training ``crop_sampling``
   (448x448 crops of 160x160 images, i.e. mostly padding) is switched off so that a short
   training learns separate animals.
4. A random-init state dict (``torch.manual_seed(0)``; ``PoseModel.build(model_cfg,
   pretrained_backbone=False)``) saved as ``{"model": state_dict}`` outside the project, then
   ``deeplabcut.train_network(config, shuffle=1, device="cpu", snapshot_path=<init>,
   epochs=60, save_epochs=60, batch_size=4, pytorch_cfg_updates={"runner.eval_interval": 60})``.
5. ``deeplabcut.analyze_videos(config, [video], shuffle=1, device="cpu",
   destfolder=PROJECT/analyze, auto_track=False)`` (the ``_full.pickle``, ``_assemblies.pickle``
   and ``_meta.pickle`` before tracking), then the same call with DLC's default
   ``auto_track=True`` and ``destfolder=PROJECT/analyze_autotrack`` (tracklets and the h5).
6. ``deeplabcut.export_model(config, shuffle=1)``; DeepLabCut-Live on the export (first 3
   frames).
7. Reference arrays: DLC's ``PoseModel`` built from the shuffle's pytorch_config and the
   trained snapshot, run on the first 4 video frames read and preprocessed by DLC's own video
   reader and bottom-up preprocessor: raw ``heatmap``/``locref``/``paf`` (before sigmoid) in
   OUT/reference_maps.npz; the predictor's ``poses`` and, with ``return_preds=True``, its
   peaks (coordinates, confidence) and PAF cost matrices (``m1``, ``distance``) per edge in
   OUT/reference_preds.json; the predictor and Assembler settings in check.json.
8. Copy the project to OUT (the build path in text files replaced by ``__PROJECT_PATH__``) and
   write OUT/check.json (versions, sha256 of every file, DLC's outputs read back) and
   OUT/README.md.

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

from fixture_common import (PLACEHOLDER, capture, files_of, posed_synth, replace_build_path, sha256, tolist,
                            versions, write_check)

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
SIZE = "160x160"
SYNTH_ARGS = ["--animals", "3", "--frames", "20", "--video-frames", "12", "--size", SIZE,
              "--seed", "3", "-q"]
TINY_BACKBONE = "test_resnet"
EPOCHS = 60
N_REF_FRAMES = 4
N_LIVE_FRAMES = 3
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def describe(x, depth: int = 0):
    """A JSON description of a pickled structure: types, keys, array shapes and dtypes."""
    import numpy as np

    if isinstance(x, np.ndarray):
        return f"ndarray{list(x.shape)} {x.dtype}"
    if isinstance(x, dict):
        if depth > 3:
            return f"dict({len(x)})"
        return {repr(k): describe(v, depth + 1) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        if depth > 4:
            return f"{type(x).__name__}({len(x)})"
        return {"type": type(x).__name__, "len": len(x),
                "items": [describe(v, depth + 1) for v in x]}
    return f"{type(x).__name__}: {x!r}"[:200]


def read_video_rgb(video: Path, n: int | None = None):
    """The video's frames as DeepLabCut's PyTorch video analysis reads them (its
    VideoIterator: cv2 BGR frames flipped to RGB), uint8 (h, w, 3)."""
    from deeplabcut.pose_estimation_pytorch.apis.videos import VideoIterator

    frames = []
    it = VideoIterator(str(video))
    for frame in it:
        frames.append(frame)
        if n is not None and len(frames) == n:
            break
    return frames


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--posed", type=Path, default=REPO / ".venv" / "bin" / "posed")
    ap.add_argument("--out", type=Path,
                    default=REPO / "tests" / "data" / "deeplabcut" / "ma_fixture")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/posed-dlc-ma-fixture"))
    args = ap.parse_args()

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    record: dict = {}

    # ------------------------------------------------------------------ 1. posed synth
    project, record["synth"], posed_version, synth_files, timings["1_posed_synth"] = \
        posed_synth(args.posed, args.workdir, SYNTH_ARGS)
    work, config = project.parent, project / "config.yaml"

    import deeplabcut
    import numpy as np
    import pandas as pd
    import timm
    import torch
    from deeplabcut.core.config import read_config_as_dict, write_config
    from deeplabcut.pose_estimation_pytorch.data.preprocessor import (
        build_bottom_up_preprocessor,
    )
    from deeplabcut.pose_estimation_pytorch.data.transforms import build_transforms
    from deeplabcut.pose_estimation_pytorch.models import PoseModel
    from deeplabcut.utils import auxiliaryfunctions as af

    cfg = af.read_config(str(config))
    record["synth"]["project"] = {k: cfg.get(k) for k in (
        "multianimalproject", "identity", "individuals", "uniquebodyparts",
        "multianimalbodyparts", "bodyparts", "skeleton", "pcutoff", "batch_size",
        "default_track_method")}

    # ------------------------------------------------------------------ 2. training dataset
    t0 = time.perf_counter()
    with capture() as out:
        splits = deeplabcut.create_training_dataset(
            str(config), Shuffles=[1], net_type="resnet_50",
            engine=deeplabcut.Engine.PYTORCH, userfeedback=False)
    timings["2_create_training_dataset"] = time.perf_counter() - t0
    record["create_training_dataset"] = {
        "call": "deeplabcut.create_training_dataset(config, Shuffles=[1], "
                "net_type='resnet_50', engine=deeplabcut.Engine.PYTORCH, userfeedback=False)",
        "returned": tolist(splits),
        "output": out.getvalue().replace(str(project), PLACEHOLDER)[-3000:]}

    model_folder = project / af.get_model_folder(
        cfg["TrainingFraction"][0], 1, cfg, engine=deeplabcut.Engine.PYTORCH)
    train_cfg_path = model_folder / "train" / "pytorch_config.yaml"
    test_dir = model_folder / "test"
    after_ctd = sorted(str(p.relative_to(project)) for p in files_of(project))
    record["create_training_dataset"]["model_folder"] = str(model_folder.relative_to(project))
    record["create_training_dataset"]["model_as_written"] = read_config_as_dict(
        train_cfg_path)["model"]
    record["create_training_dataset"]["method"] = read_config_as_dict(train_cfg_path)["method"]

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
            for key in ("heatmap_config", "locref_config", "paf_config"):
                if key in head and "channels" in head[key]:
                    before[f"model.heads.{hname}.{key}.channels"] = list(head[key]["channels"])
                    head[key]["channels"][0] = channels
        before["data.train.crop_sampling"] = pcfg["data"]["train"].get("crop_sampling")
        pcfg["data"]["train"]["crop_sampling"] = None
        write_config(pc, pcfg, overwrite=True)
        after_cfg = read_config_as_dict(pc)
        after = after_cfg["model"]
        edits.append({"file": str(pc.relative_to(project)), "before": before, "after": {
            "model.backbone.model_name": after["backbone"]["model_name"],
            "model.backbone_output_channels": after.get("backbone_output_channels"),
            **{f"model.heads.{h}.{k}.channels": after["heads"][h][k]["channels"]
               for h in after["heads"] for k in ("heatmap_config", "locref_config", "paf_config")
               if k in after["heads"][h]},
            "data.train.crop_sampling": after_cfg["data"]["train"].get("crop_sampling")}})
    test_note = ("DeepLabCut also wrote `test/pytorch_config.yaml`, edited the same way."
                 if (test_dir / "pytorch_config.yaml").exists() else
                 "DeepLabCut wrote no `test/pytorch_config.yaml` (only `test/pose_cfg.yaml` and "
                 "`test/inference_cfg.yaml`, left as written).")
    record["tiny_backbone"] = {"test_cfg_note": test_note, "model_name": TINY_BACKBONE,
                               "output_channels": channels, "edits": edits,
                               "net_type_kept": read_config_as_dict(train_cfg_path).get("net_type")}

    # random init, saved outside the project
    pcfg = read_config_as_dict(train_cfg_path)
    torch.manual_seed(0)
    init_model = PoseModel.build(pcfg["model"], pretrained_backbone=False)
    init_path = work / "random_init.pt"
    torch.save({"model": init_model.state_dict()}, init_path)
    w, h = (int(v) for v in SIZE.split("x"))
    init_model.eval()
    with torch.no_grad():
        probe_out = init_model(torch.zeros(1, 3, h, w))
    sd = init_model.state_dict()
    record["tiny_backbone"].update({
        "n_parameters": int(sum(p.numel() for p in init_model.parameters())),
        "n_state_dict_tensors": len(sd),
        "n_backbone_parameters": int(sum(p.numel() for p in init_model.backbone.parameters())),
        "n_head_parameters": int(sum(p.numel() for p in init_model.heads.parameters())),
        f"head_output_shapes_{SIZE}": {f"{hn}.{k}": list(v.shape)
                                       for hn, d in probe_out.items() for k, v in d.items()},
        "head_state_dict": {k: list(v.shape) for k, v in sd.items() if k.startswith("heads.")},
        "model_stride": init_model.get_stride("bodypart"),
        "head_module": repr(init_model.heads["bodypart"]).replace("\n", " ")[:4000],
    })
    del init_model
    timings["3_tiny_backbone_and_init"] = time.perf_counter() - t0

    # ------------------------------------------------------------------ 4. train
    train_kwargs = {"shuffle": 1, "device": "cpu", "snapshot_path": str(init_path),
                    "epochs": EPOCHS, "save_epochs": EPOCHS, "batch_size": 4,
                    "pytorch_cfg_updates": {"runner.eval_interval": EPOCHS}}
    t0 = time.perf_counter()
    with capture() as out:
        deeplabcut.train_network(str(config), **train_kwargs)
    timings["4_train_network"] = time.perf_counter() - t0
    train_dir = model_folder / "train"
    snap_pts = sorted(train_dir.glob("snapshot*.pt"))
    snap = torch.load(snap_pts[-1], map_location="cpu", weights_only=True)
    dropped = [k for k in snap if k not in ("model", "metadata", "scheduler")]
    if dropped:  # optimizer states: too large for a fixture, not needed for inference
        for k in dropped:
            snap.pop(k)
        torch.save(snap, snap_pts[-1])
    record["train_network"] = {
        "kwargs": {**train_kwargs, "snapshot_path": "<WORKDIR>/random_init.pt"},
        "snapshots": [p.name for p in snap_pts],
        "snapshot_keys": sorted(snap.keys()),
        "snapshot_keys_dropped": dropped,
        "snapshot_metadata": tolist(snap.get("metadata")),
        "learning_stats_csv": (train_dir / "learning_stats.csv").read_text()
        if (train_dir / "learning_stats.csv").exists() else None,
        "output_tail": out.getvalue().replace(str(project), PLACEHOLDER)[-3000:],
    }
    train_cfg = read_config_as_dict(train_cfg_path)
    record["pytorch_config_model"] = train_cfg["model"]
    record["pytorch_config_data_inference"] = train_cfg["data"]["inference"]
    record["pytorch_config_inference"] = train_cfg.get("inference")

    # ------------------------------------------------------------------ 5. analyze
    video = project / "videos" / "synth1.mp4"
    dest = project / "analyze"
    t0 = time.perf_counter()
    with capture() as out:
        scorer = deeplabcut.analyze_videos(str(config), [str(video)], shuffle=1, device="cpu",
                                           destfolder=str(dest), auto_track=False)
    timings["5a_analyze_videos_no_track"] = time.perf_counter() - t0
    prefix = f"synth1{scorer}"
    with (dest / f"{prefix}_full.pickle").open("rb") as f:
        full = pickle.load(f)
    with (dest / f"{prefix}_assemblies.pickle").open("rb") as f:
        assemblies = pickle.load(f)
    with (dest / f"{prefix}_meta.pickle").open("rb") as f:
        meta = pickle.load(f)
    frame_keys = [k for k in full if k != "metadata"]
    full_poses = []  # (frames, individuals, bodyparts, [x, y, likelihood]) from the full pickle
    for k in frame_keys:
        coords = np.stack(full[k]["coordinates"][0])  # (bodyparts, individuals, 2)
        conf = np.stack(full[k]["confidence"])  # (bodyparts, individuals, 1)
        full_poses.append(np.concatenate([coords, conf], axis=-1).transpose(1, 0, 2))
    full_poses = np.stack(full_poses)
    n_assembled = [len(assemblies[i]) for i in range(len(frame_keys))]
    record["analyze_videos"] = {
        "call": "deeplabcut.analyze_videos(config, [video], shuffle=1, device='cpu', "
                "destfolder=PROJECT/analyze, auto_track=False)",
        "scorer": scorer,
        "outputs": sorted(p.name for p in dest.iterdir()),
        "output_tail": out.getvalue().replace(str(project), PLACEHOLDER)[-2000:],
        "full_pickle_structure": describe({"metadata": full["metadata"],
                                           frame_keys[0]: full[frame_keys[0]]}),
        "full_pickle_frame_keys": frame_keys,
        "full_pickle_metadata": tolist(full["metadata"]),
        # (frames, individuals, bodyparts, [x, y, likelihood]) read from the full pickle
        "full_pickle_poses": tolist(full_poses),
        "assemblies_pickle_structure": describe({k: v for k, v in assemblies.items()
                                                 if k in ("single", 0)}),
        "assemblies_pickle_keys": [repr(k) for k in assemblies],
        # frame -> (assemblies, bodyparts, [x, y, likelihood, identity])
        "assemblies_pickle": {str(k): tolist(v) for k, v in assemblies.items()
                              if k != "single"},
        "assembled_animals_per_frame": n_assembled,
        "meta_pickle_data_keys": sorted(meta["data"].keys()),
    }

    # DLC's default auto_track (tracklets + stitching) in another folder
    dest_track = project / "analyze_autotrack"
    t0 = time.perf_counter()
    try:
        with capture() as out:
            scorer_t = deeplabcut.analyze_videos(str(config), [str(video)], shuffle=1,
                                                 device="cpu", destfolder=str(dest_track))
        track_error = None
    except Exception as e:  # noqa: BLE001 - recorded, the fixture is still useful without it
        scorer_t, track_error = None, f"{type(e).__name__}: {e}"
    timings["5b_analyze_videos_auto_track"] = time.perf_counter() - t0
    rec_t = {"call": "deeplabcut.analyze_videos(config, [video], shuffle=1, device='cpu', "
                     "destfolder=PROJECT/analyze_autotrack)  # auto_track=True (default)",
             "scorer": scorer_t, "error": track_error,
             "outputs": sorted(p.name for p in dest_track.iterdir()) if dest_track.exists()
             else [],
             "output_tail": out.getvalue().replace(str(project), PLACEHOLDER)[-3000:]}
    h5s = sorted(dest_track.glob("*.h5")) if dest_track.exists() else []
    for h5 in h5s:
        try:
            df = pd.read_hdf(h5)
        except Exception as e:  # noqa: BLE001
            rec_t[f"h5:{h5.name}"] = f"unreadable: {e}"
            continue
        rec_t[f"h5:{h5.name}"] = {
            "columns": [list(c) for c in df.columns], "column_names": list(df.columns.names),
            "index": tolist(df.index.values),
            "values": tolist(df.to_numpy()),
        }
    for pk in sorted(dest_track.glob("*_el.pickle")) if dest_track.exists() else []:
        with pk.open("rb") as f:
            tracklets = pickle.load(f)
        # tracklet id -> the frames it covers (stitch_tracklets drops those shorter than
        # its min_length, 10)
        rec_t[f"pickle:{pk.name}"] = {
            "keys": [repr(k) for k in tracklets],
            "tracklet_frames": {str(k): sorted(v) for k, v in tracklets.items()
                                if k not in ("header", "single")},
            "first_entry": describe(next(iter(tracklets[next(
                k for k in tracklets if k not in ("header", "single"))].values()))),
        }
    record["analyze_videos_auto_track"] = rec_t

    # ------------------------------------------------------------------ 6. export + DLC-Live
    t0 = time.perf_counter()
    with capture() as out:
        deeplabcut.export_model(str(config), shuffle=1)
    timings["6a_export_model"] = time.perf_counter() - t0
    exported = sorted((project / "exported-models-pytorch").rglob("*.pt"))
    raw = torch.load(exported[0], map_location="cpu", weights_only=True)
    record["export_model"] = {
        "call": "deeplabcut.export_model(config, shuffle=1)",
        "files": [str(p.relative_to(project)) for p in sorted(
            files_of(project / "exported-models-pytorch"))],
        "top_level_keys": sorted(raw.keys()),
        "config_keys": sorted(raw["config"].keys()),
        "pose_equals_snapshot_model": bool(
            snap["model"].keys() == raw["pose"].keys()
            and all(torch.equal(snap["model"][k], raw["pose"][k]) for k in snap["model"])),
    }

    import cv2

    t0 = time.perf_counter()
    try:
        from dlclive import DLCLive

        cap = cv2.VideoCapture(str(video))
        bgr = []
        while len(bgr) < N_LIVE_FRAMES:
            ok, frame = cap.read()
            if not ok:
                break
            bgr.append(frame)
        cap.release()
        record["dlclive"] = {
            "frames_read_with": "cv2.VideoCapture, BGR uint8 (DLCLive converts to RGB)",
            "calls": [("DLCLive(exported_pt, model_type='pytorch', device='cpu'[, "
                       "single_animal=False])"), "init_inference(frame0)", "get_pose(frame1)",
                      "get_pose(frame2)"],
        }
        for name, kw in (("default", {}), ("single_animal_false", {"single_animal": False})):
            live = DLCLive(str(exported[0]), model_type="pytorch", device="cpu", **kw)
            lp = [live.init_inference(bgr[0])] + [live.get_pose(f) for f in bgr[1:]]
            lp = np.stack([np.asarray(p) for p in lp])
            # the default (single_animal=True) keeps the first individual slot only
            ref_poses = full_poses[:len(lp), 0] if lp.ndim == 3 else full_poses[:len(lp)]
            record["dlclive"][name] = {
                "pose_shape": list(lp.shape[1:]), "poses": tolist(lp),
                "max_abs_diff_vs_full_pickle": float(np.nanmax(np.abs(
                    lp[..., :3] - ref_poses))),
                "nan_pattern_equals_full_pickle": bool(np.array_equal(
                    np.isnan(lp[..., :3]), np.isnan(ref_poses))),
            }
    except Exception as e:  # noqa: BLE001
        record["dlclive"] = {"error": f"{type(e).__name__}: {e}"}
    timings["6b_dlclive"] = time.perf_counter() - t0

    # ------------------------------------------------------------------ 7. reference arrays
    t0 = time.perf_counter()
    model_cfg = read_config_as_dict(train_cfg_path)
    frames = read_video_rgb(video, N_REF_FRAMES)
    transform = build_transforms(model_cfg["data"]["inference"])
    preprocessor = build_bottom_up_preprocessor(color_mode=model_cfg["data"]["colormode"],
                                                transform=transform)
    batch, contexts = [], []
    for fr in frames:
        x_i, ctx = preprocessor(fr.copy(), {})
        batch.append(x_i)
        contexts.append(ctx)
    x = torch.cat(batch).float()
    manual = (torch.from_numpy(np.stack(frames)).float().permute(0, 3, 1, 2) / 255.0
              - torch.tensor(IMAGENET_MEAN)[:, None, None]) \
        / torch.tensor(IMAGENET_STD)[:, None, None]
    net = PoseModel.build(model_cfg["model"], pretrained_backbone=False)
    net.load_state_dict(snap["model"])
    net.eval()
    stride = net.get_stride("bodypart")
    predictor = net.heads["bodypart"].predictor
    predictor.return_preds = True
    with torch.no_grad():
        outputs = net(x)["bodypart"]
        result = predictor(stride, {k: v.clone() for k, v in outputs.items()})
        # the predictor's own intermediate maps (its first steps, re-run for the record)
        hm = torch.sigmoid(outputs["heatmap"]) if predictor.apply_sigmoid else outputs["heatmap"]
        kernel = predictor.make_2d_gaussian_kernel(
            sigma=predictor.sigma, size=predictor.nms_radius * 2 + 1)
        smoothed = torch.nn.functional.conv2d(
            hm, kernel[None, None].repeat(hm.shape[1], 1, 1, 1), stride=1, padding="same",
            groups=hm.shape[1])
        peak_inds = predictor.find_local_peak_indices_maxpool_nms(
            smoothed, predictor.nms_radius, threshold=0.01)
    poses = result["poses"].numpy()
    preds = result["preds"]
    np.savez_compressed(
        work / "reference_maps.npz",
        frames=np.stack(frames).astype(np.uint8),
        heatmap=outputs["heatmap"].numpy().astype(np.float32),
        locref=outputs["locref"].numpy().astype(np.float32),
        paf=outputs["paf"].numpy().astype(np.float32),
        heatmap_smoothed=smoothed.numpy().astype(np.float32),
        peak_indices=peak_inds.numpy().astype(np.int32),
        poses=poses.astype(np.float32),
        stride=np.float32(stride),
        mean=np.asarray(IMAGENET_MEAN, np.float32), std=np.asarray(IMAGENET_STD, np.float32),
    )
    preds_json = {
        "what": "PartAffinityFieldPredictor(return_preds=True) on the first "
                f"{N_REF_FRAMES} video frames: per frame, peaks per body part (x, y in input "
                "pixels; confidence = Gaussian-smoothed sigmoid heatmap at the peak cell) and "
                "per kept graph edge the PAF cost matrices m1 (affinity) and distance "
                "(rows: source part's peaks, columns: target part's peaks, peaks in the "
                "order of `peaks[part]`), and `poses` (individuals, bodyparts, "
                "[x, y, score, id, affinity])",
        "bodyparts": model_cfg["metadata"]["bodyparts"],
        "graph": predictor.graph, "edges_to_keep": predictor.edges_to_keep,
        "stride": stride,
        "peak_indices": tolist(peak_inds),
        "frames": [],
    }
    for i, p in enumerate(preds):
        preds_json["frames"].append({
            "frame": i,
            "peaks": [{"xy": tolist(c), "confidence": tolist(s.reshape(-1))}
                      for c, s in zip(p["coordinates"][0], p["confidence"])],
            "costs": {str(k): {"edge": list(predictor.graph[k]), "m1": tolist(v["m1"]),
                               "distance": tolist(v["distance"])}
                      for k, v in p["costs"].items()},
            "poses": tolist(poses[i]),
            "n_assembled": int((poses[i, :, :, 2] != -1).any(-1).sum()),
        })
    (work / "reference_preds.json").write_text(json.dumps(preds_json, indent=1) + "\n")
    asm = predictor.assembler
    n_ref = len(frames)
    record["reference"] = {
        "how": f"first {n_ref} frames read with DLC's VideoIterator (cv2, BGR flipped to RGB); "
               "preprocessed with DLC's build_bottom_up_preprocessor(colormode, "
               "build_transforms(data.inference)) one frame at a time and concatenated; "
               "PoseModel.build(train pytorch_config model, pretrained_backbone=False) + "
               "snapshot['model'], eval mode, one batch; predictor(stride, outputs) with "
               "return_preds=True",
        "inference_transform": repr(transform).replace("\n", " ")[:2000],
        "preprocess_contexts": tolist(contexts),
        "preprocess_max_abs_diff_vs_imagenet_formula": float((x - manual).abs().max()),
        "input_shape": list(x.shape), "input_dtype": str(x.dtype),
        "model_stride": stride,
        "output_shapes": {k: list(v.shape) for k, v in outputs.items()},
        "peaks_per_frame_and_part": [[len(c) for c in p["coordinates"][0]] for p in preds],
        "peaks_per_frame_and_part_at_least_pcutoff": [
            [int((s >= asm.pcutoff).sum()) for s in p["confidence"]] for p in preds],
        "assembled_per_frame": [f["n_assembled"] for f in preds_json["frames"]],
        "poses_max_abs_diff_vs_full_pickle_xy": float(np.nanmax(np.abs(
            poses[:, :, :, :2] - full_poses[:n_ref, :, :, :2]))),
        "poses_max_abs_diff_vs_full_pickle_score": float(np.nanmax(np.abs(
            poses[:, :, :, 2] - full_poses[:n_ref, :, :, 2]))),
        "poses_nan_pattern_equals_full_pickle": bool(np.array_equal(
            np.isnan(poses[..., :3]), np.isnan(full_poses[:n_ref]))),
    }
    record["predictor"] = {
        "class": type(predictor).__name__,
        **{k: tolist(getattr(predictor, k)) for k in (
            "num_animals", "num_multibodyparts", "num_uniquebodyparts", "graph",
            "edges_to_keep", "nms_radius", "sigma", "locref_stdev", "apply_sigmoid",
            "clip_scores")},
        "peak_threshold": 0.01,
        "gaussian_kernel_size": predictor.nms_radius * 2 + 1,
        "gaussian_kernel": tolist(kernel),
        "assembler": {"class": type(asm).__name__, **{k: tolist(getattr(asm, k)) for k in (
            "max_n_individuals", "n_multibodyparts", "n_uniquebodyparts", "graph", "paf_inds",
            "pcutoff", "min_affinity", "min_n_links", "max_overlap", "greedy", "window_size",
            "add_discarded", "force_fusion", "identity_only", "nan_policy", "method",
            "safe_edge")}, "calibrated_kde": asm._kde is not None},
    }
    timings["7_reference_arrays"] = time.perf_counter() - t0

    # ------------------------------------------------------------------ 8. copy to fixture
    t0 = time.perf_counter()
    out_dir = args.out.resolve()
    if out_dir.exists():
        shutil.rmtree(out_dir)
    shutil.copytree(project, out_dir)
    # The export's `pose` equals the snapshot's `model` (checked above) and its `config` is
    # the shuffle's pytorch_config: one copy of the weights is enough (tests rebuild the
    # export's dict from the two); its name and sha256 stay in check.json.
    record["export_model"]["dropped_from_fixture"] = {
        str(p.relative_to(project)): sha256(p) for p in exported}
    shutil.rmtree(out_dir / "exported-models-pytorch")
    shutil.copy2(work / "reference_maps.npz", out_dir / "reference_maps.npz")
    shutil.copy2(work / "reference_preds.json", out_dir / "reference_preds.json")
    replaced, binary_with_path = replace_build_path(out_dir, project, work)
    timings["8_copy"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t_start

    record_head = {
        "what": "DeepLabCut 3.0.2-trained multi-animal bottom-up (DLCRNetHead + PAF) shuffle "
                "of a synthetic project made by `posed synth --animals 3`",
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
    print("peaks per frame and part:", record["reference"]["peaks_per_frame_and_part"])
    print("assembled per frame (analyze):", n_assembled)
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
    an = r["analyze_videos"]
    at = r["analyze_videos_auto_track"]
    ref = r["reference"]
    pr = r["predictor"]
    asm = pr["assembler"]
    tracklet_frames = next((v["tracklet_frames"] for k, v in at.items()
                            if k.startswith("pickle:")), None)
    if at["error"]:
        lengths = sorted(len(f) for f in tracklet_frames.values()) if tracklet_frames else []
        autotrack = (f"On this tiny data it raised `{at['error']}`: "
                     "`convert_detections2tracklets` (ellipse tracker) wrote the tracklets "
                     f"(`_el.pickle`, kept; tracklet lengths in frames: {lengths}), and "
                     "`stitch_tracklets` (min_length 10) dropped every tracklet, so no tracked "
                     "h5 was written. Outputs in `analyze_autotrack/`: " + ", ".join(
                         f"`{o}`" for o in at["outputs"]) + ".")
    else:
        autotrack = "Outputs in `analyze_autotrack/`: " + ", ".join(
            f"`{o}`" for o in at["outputs"]) + "."
    live = r["dlclive"]
    live_txt = (f"failed: `{live['error']}`" if "error" in live else
                f"by default (`single_animal=True`) each pose is "
                f"{tuple(live['default']['pose_shape'])}: the first individual slot only "
                f"(columns x, y, score, identity, affinity); with `single_animal=False` "
                f"{tuple(live['single_animal_false']['pose_shape'])}; largest differences to "
                f"the full pickle {live['default']['max_abs_diff_vs_full_pickle']:.1e} and "
                f"{live['single_animal_false']['max_abs_diff_vs_full_pickle']:.1e}")
    text = f"""# DeepLabCut-trained multi-animal bottom-up fixture (synthetic)

A whole multi-animal DeepLabCut project after DeepLabCut {v['deeplabcut']} created, trained,
analysed a video with and exported shuffle 1 of a **bottom-up** model (`net_type: resnet_50`,
`method: bu`: ResNet backbone, `DLCRNetHead` with part affinity fields,
`PartAffinityFieldPredictor` + DeepLabCut's `Assembler`), plus the model's raw maps and the
predictor's intermediate results on the first {len(ref['assembled_per_frame'])} video frames.
posed's tests read it **without DeepLabCut installed**. The project is **synthetic**: its
images, labels and video were rendered by `posed synth --animals 3` (no real animal data). The
network is tiny and trained for {r['train_network']['kwargs']['epochs']} epochs from a random
init: its assemblies are imperfect, which is the point (the assembler has real work to do).

Made by `benchmarks/dlc_reference/make_ma_fixture.py` (re-run it to rebuild this folder):

    OMP_NUM_THREADS=1 /work/dlcenv/bin/python benchmarks/dlc_reference/make_ma_fixture.py

Versions: deeplabcut {v['deeplabcut']}, deeplabcut-live {v['deeplabcut_live']}, torch
{v['torch']}, timm {v['timm']}, numpy {v['numpy']}, pandas {v['pandas']}, opencv {v['opencv']},
Python {v['python']} ({v['machine']}), CPU only; `{v['posed']}`.
The DeepLabCut environment: `python3.11 -m venv dlcenv; dlcenv/bin/pip install
deeplabcut==3.0.2 "numpy<2" torch==2.14.1 torchvision==0.29.1 deeplabcut-live`.

## Steps (as the script runs them; PROJECT = `{r['build_path']}`)

1. `posed synth PROJECT {' '.join(SYNTH_ARGS)}`: a multi-animal project (Task `synth`,
   scorer `synth`, date `Jan1`, individuals individual1..3, multianimalbodyparts snout, leftear,
   rightear, tailbase, no unique body parts, skeleton tailbase-snout, snout-leftear,
   snout-rightear; 20 labelled {SIZE} PNGs in `labeled-data/synth1/` with
   `CollectedData_synth.h5/.csv`, a 12-frame H.264 `videos/synth1.mp4` and its ground truth
   `videos/synth1_truth.csv`).
2. `deeplabcut.create_training_dataset(config, Shuffles=[1], net_type="resnet_50",
   engine=deeplabcut.Engine.PYTORCH, userfeedback=False)` (TrainingFraction 0.8). For a
   multi-animal project DeepLabCut writes a `DLCRNetHead` / `PartAffinityFieldPredictor` head
   with the complete PAF graph over the 4 body parts (6 edges, all kept).
3. **Changed by hand (not by DeepLabCut)**, so the weights are small and a short training
   learns something: the shuffle's train `pytorch_config.yaml`, read and written with
   DeepLabCut's own `deeplabcut.core.config.read_config_as_dict` / `write_config`:
{edits}
   i.e. the backbone is timm's tiny `{tb['model_name']}` (DLC's `ResNet` backbone wrapper,
   output_stride 16, {tb['output_channels']} output channels) instead of `resnet50_gn`; the
   `DLCRNetHead` settings (num_stages 5, features_dim 128 by default, kernel 3 / stride 2
   deconvolutions, the predictor, target generators and criteria) are as DeepLabCut wrote them.
   The training crops (`crop_sampling` 448x448 of {SIZE} images, i.e. mostly zero padding) are
   switched off: with them a short training leaves flat maps. The pose model has
   {tb['n_parameters']} parameters ({tb['n_backbone_parameters']} backbone,
   {tb['n_head_parameters']} head; {tb['n_state_dict_tensors']} state-dict tensors).
   {tb['test_cfg_note']}
4. Random init: `torch.manual_seed(0); PoseModel.build(model_cfg, pretrained_backbone=False)`
   saved as `{{"model": state_dict}}` outside the project, then
   `deeplabcut.train_network(config, shuffle=1, device="cpu", snapshot_path=<random init>,
   epochs={EPOCHS}, save_epochs={EPOCHS}, batch_size=4,
   pytorch_cfg_updates={{"runner.eval_interval": {EPOCHS}}})`. Snapshots written: {snaps}
   (keys {r['train_network']['snapshot_keys']}; DeepLabCut saves no optimizer state by default).
5. `deeplabcut.analyze_videos(config, [PROJECT/videos/synth1.mp4], shuffle=1, device="cpu",
   destfolder=PROJECT/analyze, auto_track=False)`: outputs in `analyze/`:
   {', '.join(f'`{o}`' for o in an['outputs'])} (scorer `{an['scorer']}`).
   Then the same with DeepLabCut's default `auto_track=True` and
   `destfolder=PROJECT/analyze_autotrack`. {autotrack}
6. `deeplabcut.export_model(config, shuffle=1)` -> {exported} (a dict with `config` and
   `pose`; `pose` equals the snapshot's `model`: {r['export_model']['pose_equals_snapshot_model']}).
   DeepLabCut-Live on it (`DLCLive(<export>, model_type="pytorch", device="cpu")`,
   `init_inference` + `get_pose` on the first {N_LIVE_FRAMES} frames read with cv2, BGR):
   {live_txt}.
7. Reference arrays (`reference_maps.npz`, `reference_preds.json`), see below.
8. This folder is PROJECT copied as is (the random-init file was kept outside it), plus the
   two reference files, `check.json` and this README.

## Reference arrays

The first {len(ref['assembled_per_frame'])} video frames, read as DeepLabCut's PyTorch video
analysis reads them (`VideoIterator`: cv2 frames flipped BGR -> RGB, uint8) and preprocessed
with DeepLabCut's own bottom-up preprocessor for this shuffle: `data.inference` has only
`normalize_images: true`, so the transform is albumentations `Normalize(mean={list(IMAGENET_MEAN)},
std={list(IMAGENET_STD)}, max_pixel_value=255)`: no resize, no padding, RGB; largest difference
to `(x/255 - mean)/std` in float32: {ref['preprocess_max_abs_diff_vs_imagenet_formula']:.1e}.
The model (`PoseModel.build` of the train `pytorch_config.yaml` model section + the snapshot's
`model`, eval mode) ran on them as one NCHW float32 batch; model stride {ref['model_stride']}
(backbone 16 / head 4); map shapes {ref['output_shapes']}
(backbone: {SIZE} / 16 = 10 cells; the head's `convt1`..`convt4` ConvTranspose2d (kernel 3,
stride 2, padding 1, output_padding 1) double that to 20; the final heatmap/locref/paf
ConvTranspose2d (kernel 3, stride 2, no padding) maps n cells to 2n + 1 = 41).

`reference_maps.npz`:
- `frames` uint8 (N, H, W, 3) RGB: the model's input before normalisation (`mean`, `std`
  float32 are stored too);
- `heatmap` (N, 4, h, w), `locref` (N, 8, h, w: channels 2k, 2k+1 = dx, dy of body part k, in
  units of `locref_stdev`), `paf` (N, 12, h, w: channels 2e, 2e+1 = x, y components of graph
  edge e): the head's raw float32 outputs, before any sigmoid;
- `heatmap_smoothed`: sigmoid(heatmap) convolved per channel with the predictor's normalised
  {pr['gaussian_kernel_size']}x{pr['gaussian_kernel_size']} Gaussian (sigma {pr['sigma']}, zero
  padding "same") - the map peaks are searched and scored on;
- `peak_indices` int32 (n, 4): [frame, body part, row, col] of every peak (local max over a
  {pr['nms_radius']}x{pr['nms_radius']} max-pool window, value >= 0.01), in torch.nonzero order;
- `poses` float32 (N, {pr['num_animals']}, 4, 5): the predictor's output, [x, y, score,
  identity, assembly affinity]; -1 everywhere for an individual slot not filled; NaN x, y,
  identity and score 0 for a body part missing from an assembly;
- `stride` (float32).

`reference_preds.json`: per frame, `peaks[part]` (`xy` in input pixels, `confidence`), `costs`
per kept edge index (`edge`, `m1`, `distance`: rows = the source part's peaks, columns = the
target part's peaks, in `peaks` order), `poses`, `n_assembled`; plus `graph`, `edges_to_keep`,
`stride`, `peak_indices`. Floats are float32 values written in full.

Peaks per frame and body part: {ref['peaks_per_frame_and_part']} (of which with confidence >=
the assembler's pcutoff {asm['pcutoff']}: {ref['peaks_per_frame_and_part_at_least_pcutoff']});
assembled individuals per frame: {ref['assembled_per_frame']} (analyze_videos, all 12 frames:
{an['assembled_animals_per_frame']}). These poses equal analyze_videos' `_full.pickle` to
{ref['poses_max_abs_diff_vs_full_pickle_xy']:.1e} px / {ref['poses_max_abs_diff_vs_full_pickle_score']:.1e}
(score), same NaN pattern: {ref['poses_nan_pattern_equals_full_pickle']}.

Predictor settings (as built from the config): nms_radius {pr['nms_radius']}, sigma
{pr['sigma']}, locref_stdev {pr['locref_stdev']}, apply_sigmoid {pr['apply_sigmoid']},
clip_scores {pr['clip_scores']}, graph {pr['graph']}, edges_to_keep {pr['edges_to_keep']}.
Its `Assembler` (built with `Assembler.empty`, so mostly defaults, not the project's pcutoff
nor `test/inference_cfg.yaml`): pcutoff {asm['pcutoff']}, min_affinity {asm['min_affinity']},
min_n_links {asm['min_n_links']}, max_overlap {asm['max_overlap']}, greedy {asm['greedy']},
window_size {asm['window_size']}, add_discarded {asm['add_discarded']}, force_fusion
{asm['force_fusion']}, method {asm['method']!r}, nan_policy {asm['nan_policy']!r},
identity_only {asm['identity_only']}, no calibration (safe_edge {asm['safe_edge']}).

## What DeepLabCut {v['deeplabcut']}'s predictor does with the maps (read from its code)

1. `sigmoid(heatmap)`, then a per-channel 2D convolution with an
   {pr['gaussian_kernel_size']}x{pr['gaussian_kernel_size']} kernel (the outer product of
   `softmax(-k**2 / (2 sigma**2))`, k = -5..5; zero padding): the smoothed map.
2. Peaks: cells equal to the max of a {pr['nms_radius']}x{pr['nms_radius']} max-pool window
   (stride 1, padding 2; the window is `nms_radius` wide, not 2 nms_radius + 1) with smoothed
   value >= 0.01, taken in (frame, part, row, col) order. Confidence = the smoothed value at
   the peak (not the raw sigmoid).
3. Position in input pixels: x = stride * col + stride // 2 + 7.2801 * locref[2k], y = stride
   * row + stride // 2 + 7.2801 * locref[2k + 1] (stride 4.0, so + 2.0; no clipping, so
   positions can be negative or beyond the image).
4. PAF cost of a (source peak, target peak) pair for edge e: 10 points evenly spaced from the
   source cell to the target cell (in (row, col) cell units), truncated to int and clipped to
   the map; the PAF vectors there (`paf[2e]` = x, `paf[2e + 1]` = y component) integrated with
   the trapezoidal rule, the x component against the points' columns and the y component
   against their rows; `m1` = norm of that 2-vector / (cell distance + float32 eps), rounded to
   3 decimals; `distance` = the cell distance + eps, rounded to 3 decimals.
5. `Assembler._assemble` per frame (links per kept edge: the `max_n_individuals` most confident
   peaks of each part with confidence >= pcutoff, optimal assignment on `m1` with
   `scipy.optimize.linear_sum_assignment(maximize=True)`, links with m1 >= min_affinity; then
   DeepLabCut's assembly building, min_n_links, pose NMS with max_overlap), and `poses` filled
   in the returned order.

## Paths

The project was built in the fixed neutral folder `{r['build_path']}`. In text files that path was
replaced by the placeholder `{r['placeholder']}` (substitute the folder you copy the fixture to):
{replaced}

Binary files written by DeepLabCut still hold `{r['build_path']}` (not edited, formats untouched):
{binaries}

Rebuilding gives byte-identical snapshot, exported `.pt`, `_full`/`_assemblies`/`_el`
pickles, `reference_maps.npz` and `reference_preds.json`; the `.h5`, `_meta.pickle` and
`train.txt` files differ in embedded timestamps only.

The exported `.pt` ({exported}) is not kept: its `pose` equals the snapshot's `model` and its
`config` is the shuffle's `pytorch_config.yaml`, so tests rebuild it from those two (its
sha256 is in `check.json`, `export_model.dropped_from_fixture`).

## Things to know when reading these files without DeepLabCut

- `analyze/*_full.pickle` holds the **assembled** poses, not the raw peaks: `metadata`
  (`nms radius`, `minimal confidence`: None; `sigma` 1; `PAFgraph`: None and `PAFinds`: an
  empty int64 array, because `test/pose_cfg.yaml` has no PAF graph; `all_joints`,
  `all_joints_names`, `nframes`, `key_str_width`) and one entry per frame, `frame00`..`frame11`
  (`"frame" + str(i).zfill(key_str_width)`), each `{{"coordinates": ([float32 array
  (individuals, 2) per body part],), "confidence": [float32 array (individuals, 1) per body
  part], "costs": None}}`. The individual slots are in the assembler's order (assemblies
  sorted by their summed link affinity); an empty slot is -1 in x, y and confidence; a body
  part missing from an assembly has x, y NaN and confidence 0.
- `analyze/*_assemblies.pickle`: `{{"single": {{}}, 0: float64 array (n_assemblies,
  bodyparts, 4), 1: ...}}` (frame index keys, ints), columns x, y, likelihood, identity (-1:
  no identity head); the empty (all -1) slots are removed; a body part missing from an
  assembly is NaN, NaN, 0, -1. DeepLabCut builds it from the full pickle.
- `*_meta.pickle` pickles DeepLabCut enums and `PosixPath`s (see the shuffle fixture's README).
- No `.h5` is written before tracking (`analyze_videos` writes the h5 for multi-animal projects
  only through tracking, or with `save_as_df=True`).

## check.json

`versions`, `timings_s`, `files` (bytes, sha256), `synth`, `create_training_dataset` (the
model section as DeepLabCut wrote it), `tiny_backbone` (edits, parameter counts, the head's
state-dict names and shapes, output shapes), `train_network`, `pytorch_config_model` (the
model section used), `analyze_videos` (outputs, the pickles' structure and full contents,
assembled animals per frame), `analyze_videos_auto_track`, `export_model`, `dlclive`,
`reference` (how the reference was made, peaks and assemblies per frame, its difference to
analyze_videos), `predictor` (settings, Gaussian kernel, the Assembler's settings).

## Timings (seconds, 2 CPU cores, OMP_NUM_THREADS=1)

| step | s |
| --- | --- |
{timings}
"""
    (out_dir / "README.md").write_text(text)


if __name__ == "__main__":
    sys.exit(main())
