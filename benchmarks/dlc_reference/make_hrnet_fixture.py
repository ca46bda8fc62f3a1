"""Make, with DeepLabCut 3.0.2 itself, a keypoint-parity reference for HRNet backbones.

Run with a DeepLabCut 3.0.2 environment's python (it pins numpy<2, so it cannot share posed's):

    OMP_NUM_THREADS=1 dlcenv/bin/python benchmarks/dlc_reference/make_hrnet_fixture.py \
        [--posed .venv/bin/posed] [--out tests/data/deeplabcut/hrnet_fixture] \
        [--workdir /tmp/hrnet-fixture]

Two models, each on its own synthetic project (``single``: (a), ``multi``: (b)):

  (a) single-animal ``hrnet_w18`` with DeepLabCut's ``HeatmapHead`` (``HeatmapPredictor``);
  (b) multi-animal ``hrnet_w32`` with the PAF head (``DLCRNetHead`` +
      ``PartAffinityFieldPredictor``, method ``bu``), ``--animals 3``.

Steps, for each model (each timed into OUT/check.json; OUT/README.md documents them):

1. ``posed synth WORKDIR/<model> --frames 20 --video-frames 8 --size 100x76 --seed 3 -q``
   (single: ``--bodyparts snout,leftear,rightear,tailbase,tailend``; multi: ``--animals 3``
   and the default 4 body parts). 100x76 is not a multiple of 32, so DLC pads every frame.
2. ``deeplabcut.create_training_dataset(config, Shuffles=[1], net_type="hrnet_w18" /
   "hrnet_w32", engine=Engine.PYTORCH, userfeedback=False)``.
3. ``PoseModel.build(pytorch_config["model"])`` as DLC's inference builds it (no pretrained
   weights), every state-dict tensor replaced by ``seeded_weights.value(name, shape)``
   (OUT/seeded_weights.py), saved as DLC's snapshot ``train/snapshot-005.pt`` =
   ``{"model": state_dict, "metadata": {"epoch": 5}}`` (no training); the tensor names, shapes
   and dtypes in state-dict order go to OUT/<model>/state_keys.json. DLC's snapshot choice
   (``snapshotindex: -1``) is checked.
4. ``deeplabcut.analyze_videos(config, [video], shuffle=1, destfolder=..., save_as_csv=True,
   device="cpu")`` (multi: also ``auto_track=False, save_as_df=True``: the untracked
   assemblies as h5/csv, plus ``_full.pickle`` / ``_assemblies.pickle``): twice with the
   ``pytorch_config.yaml`` as DLC wrote it (``data.inference.auto_padding`` has no
   ``position``, so ``build_auto_padding`` uses albumentations ``PadIfNeeded(position=
   "random")``: DLC's own run-to-run spread is recorded), then once after setting
   ``data.inference.auto_padding.position: center`` (the deterministic parity reference).
5. DLC's raw model outputs for the first 2 video frames with the centre padding
   (``VideoIterator`` frames, DLC's own ``build_transforms`` + bottom-up preprocessor, the
   snapshot's model, ``get_predictions``, DLC's bottom-up postprocessor) ->
   OUT/<model>/reference_maps.npz; statistics of the heatmaps / PAF peaks of all 8 frames
   (argmax margins, peaks per part, animals per frame) -> check.json.
6. ``deeplabcut.export_model(config, shuffle=1)``: its file name is recorded; neither it nor
   the snapshot is copied (tens of MB; rebuild them from seeded_weights.py + state_keys.json).
7. Copy to OUT/<model>/: config.yaml, the shuffle's pytorch_config.yaml (centre padding, as
   used for the reference), the video (+ posed's ground truth CSV), the analyze outputs of
   the three runs, reference_maps.npz, state_keys.json. The build path in text files is
   replaced by ``__PROJECT_PATH__``.

The projects are built in WORKDIR (deleted first), a fixed neutral path.
"""

from __future__ import annotations

import copy
import difflib
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

from fixture_common import (PLACEHOLDER, TEXT_SUFFIXES, capture, fixture_args,
                            load_seeded_weights, seeded, sha256, synth_project, tolist)

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
COMMON_SYNTH = ["--frames", "20", "--video-frames", "8", "--size", "100x76", "--seed", "3", "-q"]
MODELS = {
    "single": {"net_type": "hrnet_w18",
               "synth": [*COMMON_SYNTH, "--bodyparts", "snout,leftear,rightear,tailbase,tailend"]},
    "multi": {"net_type": "hrnet_w32", "synth": [*COMMON_SYNTH, "--animals", "3"]},
}
RUNS = {  # analyze output folder -> padding position written in pytorch_config.yaml
    "analyze_random_padding_run1": None,
    "analyze_random_padding_run2": None,
    "analyze_center_padding": "center",
}
N_REFERENCE_FRAMES = 2


def stats(d):
    """max / median / count of an array of non-negative differences, NaNs ignored."""
    import numpy as np

    d = np.asarray(d, dtype=float).ravel()
    d = d[np.isfinite(d)]
    if d.size == 0:
        return {"max": None, "median": None, "n": 0}
    return {"max": float(d.max()), "median": float(np.median(d)), "n": int(d.size)}


def keypoint_spread(a, b, multi: bool):
    """Differences between two analyze outputs (arrays (frames, [individuals,] parts, 3))."""
    import numpy as np

    out = {}
    xy = np.linalg.norm(a[..., :2] - b[..., :2], axis=-1)
    out["xy_distance_same_slot_px"] = stats(xy)
    out["likelihood_abs_diff_same_slot"] = stats(np.abs(a[..., 2] - b[..., 2]))
    out["nan_pattern_equal"] = bool(np.array_equal(np.isnan(a[..., 0]), np.isnan(b[..., 0])))
    if multi:
        # assembly order can change between runs: also the distance of every keypoint of one
        # run to the nearest keypoint of the same body part in the other run (both ways)
        near = []
        for f in range(a.shape[0]):
            for p in range(a.shape[2]):
                pa, pb = a[f, :, p, :2], b[f, :, p, :2]
                pa, pb = pa[np.isfinite(pa).all(1)], pb[np.isfinite(pb).all(1)]
                if len(pa) and len(pb):
                    dist = np.linalg.norm(pa[:, None] - pb[None], axis=-1)
                    near += list(dist.min(1)) + list(dist.min(0))
        out["xy_distance_nearest_same_part_px"] = stats(near)
    return out


def set_inference_padding_position(path: Path, position: str) -> None:
    """Add ``position: <position>`` to ``data.inference.auto_padding`` of a pytorch_config.yaml,
    as a text edit so that the rest of the file stays byte for byte as DeepLabCut wrote it."""
    lines = path.read_text().splitlines(True)
    path_keys, insert_at = [], None
    for i, line in enumerate(lines):
        if not line.strip() or line.lstrip().startswith("#") or line.lstrip().startswith("-"):
            continue
        level = len(line) - len(line.lstrip(" "))
        while path_keys and path_keys[-1][0] >= level:
            path_keys.pop()
        key = line.strip().split(":", 1)[0]
        path_keys.append((level, key))
        keys = [k for _, k in path_keys]
        if keys[:3] == ["data", "inference", "auto_padding"] and len(keys) == 4:
            insert_at, child_indent = i + 1, level
    if insert_at is None:
        raise RuntimeError(f"no data.inference.auto_padding block in {path}")
    lines.insert(insert_at, " " * child_indent + f"position: {position}\n")
    path.write_text("".join(lines))


def run_model(tag: str, spec: dict, args, sw, out_root: Path, work: Path) -> dict:
    import deeplabcut
    import numpy as np
    import pandas as pd
    import torch
    import torch.nn.functional as F
    from deeplabcut.core.config import read_config_as_dict
    from deeplabcut.pose_estimation_pytorch.apis.utils import get_model_snapshots
    from deeplabcut.pose_estimation_pytorch.apis.videos import VideoIterator
    from deeplabcut.pose_estimation_pytorch.data.postprocessor import (
        build_bottom_up_postprocessor,
    )
    from deeplabcut.pose_estimation_pytorch.data.preprocessor import (
        build_bottom_up_preprocessor,
    )
    from deeplabcut.pose_estimation_pytorch.data.transforms import build_transforms
    from deeplabcut.pose_estimation_pytorch.models import PoseModel
    from deeplabcut.pose_estimation_pytorch.task import Task
    from deeplabcut.utils import auxiliaryfunctions as af

    multi = tag == "multi"
    timings: dict[str, float] = {}
    rec: dict = {"net_type": spec["net_type"]}

    # ------------------------------------------------------------------ 1. posed synth
    project = work / tag
    t0 = time.perf_counter()
    synth_project(args.posed, project, spec["synth"])
    timings["1_posed_synth"] = time.perf_counter() - t0
    config = project / "config.yaml"
    rec["synth_command"] = ["posed", "synth", "PROJECT", *spec["synth"]]
    video = project / "videos" / "synth1.mp4"

    # ------------------------------------------------------------------ 2. training dataset
    t0 = time.perf_counter()
    with capture():
        deeplabcut.create_training_dataset(str(config), Shuffles=[1], net_type=spec["net_type"],
                                           engine=deeplabcut.Engine.PYTORCH, userfeedback=False)
    timings["2_create_training_dataset"] = time.perf_counter() - t0
    cfg = af.read_config(str(config))
    model_folder = project / af.get_model_folder(cfg["TrainingFraction"][0], 1, cfg,
                                                 engine=deeplabcut.Engine.PYTORCH)
    train_dir = model_folder / "train"
    pcfg_path = train_dir / "pytorch_config.yaml"
    original_pcfg_text = pcfg_path.read_text()
    pcfg = read_config_as_dict(pcfg_path)
    rec["pytorch_config_model"] = copy.deepcopy(pcfg["model"])
    rec["pytorch_config_method"] = pcfg.get("method")
    rec["pytorch_config_data_inference_auto_padding_as_written"] = copy.deepcopy(
        pcfg["data"]["inference"].get("auto_padding"))
    rec["bodyparts"] = pcfg["metadata"]["bodyparts"]
    rec["individuals"] = pcfg["metadata"]["individuals"]
    rec["project_batch_size"] = cfg.get("batch_size")

    # ------------------------------------------------------------------ 3. seeded snapshot
    t0 = time.perf_counter()
    model = PoseModel.build(copy.deepcopy(pcfg["model"]))  # as get_pose_inference_runner
    seeded_sd, keys = seeded(model, sw)
    snapshot_path = train_dir / "snapshot-005.pt"
    torch.save({"model": seeded_sd, "metadata": {"epoch": 5}}, snapshot_path)
    picked = get_model_snapshots(cfg.get("snapshotindex", -1), train_dir, Task(pcfg["method"]))
    stride = float(model.get_stride("bodypart"))
    with torch.inference_mode():
        probe = model(torch.zeros(1, 3, 96, 128))["bodypart"]
    rec["state_dict"] = {
        "n_tensors": len(keys),
        "n_values": int(sum(t.numel() for t in seeded_sd.values())),
        "float32_megabytes": round(sum(t.numel() * t.element_size()
                                       for t in seeded_sd.values()) / 2**20, 1),
        "snapshot": "train/snapshot-005.pt = {'model': state_dict, 'metadata': {'epoch': 5}}",
        "snapshot_bytes": snapshot_path.stat().st_size,
        "dlc_picks_with_snapshotindex": cfg.get("snapshotindex", -1),
        "dlc_picked": [p.path.name for p in picked],
    }
    rec["strides"] = {"backbone": model.backbone.stride, "head": model.heads["bodypart"].stride,
                      "model (PoseModel.get_stride)": stride}
    rec["output_shapes_for_input_1x3x96x128"] = {k: list(v.shape) for k, v in probe.items()}
    del model, probe
    timings["3_seeded_snapshot"] = time.perf_counter() - t0

    # ------------------------------------------------------------------ 4. analyze x3
    analyze_kwargs = {"shuffle": 1, "save_as_csv": True, "device": "cpu"}
    if multi:
        analyze_kwargs.update(auto_track=False, save_as_df=True)
    rec["analyze_calls"] = {}
    outputs = {}
    scorer = None
    for folder, position in RUNS.items():
        if position is not None:
            set_inference_padding_position(pcfg_path, position)
            p = read_config_as_dict(pcfg_path)
            if p["data"]["inference"]["auto_padding"].get("position") != position or \
                    "position" in (p["data"]["train"].get("auto_padding") or {}):
                raise RuntimeError(f"could not set the inference padding position in {pcfg_path}")
        dest = project / folder
        dest.mkdir()
        t0 = time.perf_counter()
        with capture() as buf:
            scorer = deeplabcut.analyze_videos(str(config), [str(video)], destfolder=str(dest),
                                               **analyze_kwargs)
        timings[f"4_analyze_videos_{folder}"] = time.perf_counter() - t0
        log = buf.getvalue()
        used = [line.strip() for line in log.splitlines() if "Analyzing videos with" in line]
        df = pd.read_hdf(dest / f"synth1{scorer}.h5")
        arr = df.to_numpy(dtype=float).reshape(len(df), *(
            (len(rec["individuals"]), len(rec["bodyparts"]), 3) if multi
            else (len(rec["bodyparts"]), 3)))
        outputs[folder] = arr
        rec["analyze_calls"][folder] = {
            "pytorch_config_auto_padding": read_config_as_dict(pcfg_path)["data"]["inference"][
                "auto_padding"],
            "call": f"deeplabcut.analyze_videos(config, [video], destfolder=PROJECT/{folder}, "
                    + ", ".join(f"{k}={v!r}" for k, v in analyze_kwargs.items()) + ")",
            "snapshot_used": [u.replace(str(project), PLACEHOLDER) for u in used],
            "outputs": sorted(p.name for p in dest.iterdir()),
            "h5_columns": [list(c) for c in df.columns],
            "h5_column_names": list(df.columns.names),
        }
    rec["scorer"] = scorer
    center_raw = outputs["analyze_center_padding"].copy()  # as DLC wrote it
    if multi:
        # DLC writes an animal slot the assembler left empty as likelihood -1 at (-1, -1)
        # mapped through the padding offset (not NaN): mask those before comparing
        rec["empty_animal_slots"] = {
            "what": "keypoints with likelihood < 0 in the h5 (DLC's fill for animal slots "
                    "without an assembly: x, y = -1 * scale + offset, likelihood -1)",
            **{k: int((v[..., 2] < 0).sum()) for k, v in outputs.items()}}
        for v in outputs.values():
            v[v[..., 2] < 0] = np.nan
    center = outputs["analyze_center_padding"]
    r1, r2 = outputs["analyze_random_padding_run1"], outputs["analyze_random_padding_run2"]
    rec["dlc_run_to_run_spread"] = {
        "what": "DeepLabCut's own differences between analyze_videos runs of the same snapshot "
                "on the same video: random padding position (albumentations PadIfNeeded "
                "position='random', DLC's default) vs itself and vs the centre padding",
        "random_run1_vs_random_run2": keypoint_spread(r1, r2, multi),
        "random_run1_vs_center": keypoint_spread(r1, center, multi),
        "random_run2_vs_center": keypoint_spread(r2, center, multi),
    }
    if multi:
        rec["animals_per_frame"] = {
            k: [int(n) for n in np.isfinite(v[..., 0]).any(-1).sum(-1)] for k, v in outputs.items()}
        rec["keypoints_per_animal_center"] = np.isfinite(center[..., 0]).sum(-1).tolist()
    else:
        rec["likelihood_center"] = center[..., 2].round(4).tolist()

    # ------------------------------------------------------------------ 5. reference maps
    t0 = time.perf_counter()
    pcfg = read_config_as_dict(pcfg_path)  # centre padding
    transform = build_transforms(pcfg["data"]["inference"])
    pre = build_bottom_up_preprocessor(pcfg["data"]["colormode"], transform)
    post = build_bottom_up_postprocessor(
        max_individuals=len(rec["individuals"]), num_bodyparts=len(rec["bodyparts"]),
        num_unique_bodyparts=len(pcfg["metadata"]["unique_bodyparts"]),
        with_identity=bool(pcfg["metadata"].get("with_identity")))
    frames = list(VideoIterator(str(video)))
    inputs, contexts = [], []
    for frame in frames:
        x, ctx = pre(frame, {})
        inputs.append(x)
        contexts.append(ctx)
    x = torch.cat(inputs)
    model = PoseModel.build(copy.deepcopy(pcfg["model"]))
    model.load_state_dict(torch.load(snapshot_path, map_location="cpu",
                                     weights_only=True)["model"])
    model.eval()
    predictor = model.heads["bodypart"].predictor
    if multi:
        predictor.return_preds = True
    with torch.inference_mode():
        out = model(x)["bodypart"]
        pred = model.get_predictions({"bodypart": out})["bodypart"]
    poses = pred["poses"].numpy()
    final = []
    for b in range(len(frames)):
        p, _ = post([{"bodypart": {"poses": poses[b]}}], contexts[b])
        final.append(p["bodyparts"])
    final = np.stack(final)
    n_ref = N_REFERENCE_FRAMES
    npz = {
        "frames_rgb_uint8": np.stack(frames[:n_ref]),
        "input": x[:n_ref].numpy(),
        "heatmap": out["heatmap"][:n_ref].numpy(),
        "locref": out["locref"][:n_ref].numpy(),
        "stride": np.float32(stride),
        "offsets_xy": np.array([c["offsets"] for c in contexts[:n_ref]], dtype=np.float32),
        "scales_xy": np.array([c["scales"] for c in contexts[:n_ref]], dtype=np.float32),
        "predictor_poses": poses[:n_ref],
        "final_poses": final[:n_ref],
        "analyze_center_keypoints": center_raw[:n_ref],
    }
    ref = {"frames": n_ref, "input_shape": list(x.shape[1:]),
           "final_vs_analyze_center_max_abs_diff": float(np.nanmax(np.abs(
               final[..., :3] - (center_raw if multi else center_raw[:, None])))),
           "final_nan_pattern_equals_analyze": bool(np.array_equal(
               np.isnan(final[..., 0]),
               np.isnan(center_raw if multi else center_raw[:, None])[..., 0]))}
    heat = out["heatmap"]
    if multi:
        npz["paf"] = out["paf"][:n_ref].numpy()
        preds = pred["preds"]
        for b in range(n_ref):
            for j, (xy, conf) in enumerate(zip(preds[b]["coordinates"][0],
                                               preds[b]["confidence"])):
                npz[f"peaks_xy_f{b}_p{j}"] = np.asarray(xy, dtype=np.float32).reshape(-1, 2)
                npz[f"peaks_confidence_f{b}_p{j}"] = np.asarray(conf, dtype=np.float32).ravel()
            for k, c in preds[b].get("costs", {}).items():
                npz[f"costs_m1_f{b}_e{k}"] = np.asarray(c["m1"], dtype=np.float32)
                npz[f"costs_distance_f{b}_e{k}"] = np.asarray(c["distance"], dtype=np.float32)
        # the predictor's peak finding, repeated to measure how clear-cut it is
        sig = torch.sigmoid(heat)
        n_ch = sig.shape[1]
        kernel = predictor.make_2d_gaussian_kernel(predictor.sigma, predictor.nms_radius * 2 + 1)
        smooth = F.conv2d(sig, kernel[None, None].repeat(n_ch, 1, 1, 1), padding="same",
                          groups=n_ch)
        r = predictor.nms_radius
        pooled = F.max_pool2d(smooth, kernel_size=r, stride=1, padding=r // 2)
        is_peak = (smooth == pooled) & (smooth >= 0.01)
        others = smooth.clone()
        others[smooth == pooled] = -1.0
        second = F.max_pool2d(others, kernel_size=r, stride=1, padding=r // 2)
        near = (smooth < pooled) & (smooth >= 0.01)
        rec["paf_peaks"] = {
            "peaks_per_part_per_frame": [[len(c) for c in p["coordinates"][0]] for p in preds],
            "assembled_animals_per_frame": [int(n) for n in (poses[..., 2] >= 0).any(-1).sum(-1)],
            "min_peak_value_minus_next_in_window": float((smooth - second)[is_peak].min()),
            "min_window_max_minus_value_of_non_peaks_above_threshold": float(
                (pooled - smooth)[near].min()),
            "min_relative_peak_margin_in_window": float(
                ((smooth - second) / smooth)[is_peak].min()),
            "min_relative_non_peak_margin_above_threshold": float(
                ((pooled - smooth) / pooled)[near].min()),
            "min_abs_peak_value_minus_threshold_0.01": float(
                (smooth[smooth == pooled] - 0.01).abs().min()),
            "smoothed_peak_values_range": [float(smooth[is_peak].min()),
                                           float(smooth[is_peak].max())],
            "heatmap_logit_range": [float(heat.min()), float(heat.max())],
            "edge_affinity_range": [
                float(min(np.min(c["m1"]) for p in preds for c in p.get("costs", {}).values())),
                float(max(np.max(c["m1"]) for p in preds for c in p.get("costs", {}).values()))],
            "note": "peaks on DLC's smoothed sigmoid heatmaps (2-D Gaussian sigma 1, size 11; "
                    "max-pool 5x5; threshold 0.01), all 8 frames, centre padding",
        }
    else:
        flat = heat.flatten(2)
        top2 = flat.topk(2, dim=2).values
        rec["heatmap_argmax"] = {
            "top1": top2[..., 0].numpy().round(4).tolist(),
            "min_top1_minus_top2": float((top2[..., 0] - top2[..., 1]).min()),
            "heatmap_range": [float(heat.min()), float(heat.max())],
            "note": "raw heatmaps (no sigmoid: apply_sigmoid false, clip_scores true), all 8 "
                    "frames, centre padding",
        }
    rec["reference_maps"] = ref
    npz_path = work / f"reference_maps_{tag}.npz"
    np.savez_compressed(npz_path, **npz)
    rec["reference_maps"]["arrays"] = {k: [list(np.shape(v)), str(np.asarray(v).dtype)]
                                       for k, v in npz.items()}
    del model
    timings["5_reference_maps"] = time.perf_counter() - t0

    # ------------------------------------------------------------------ 6. export
    t0 = time.perf_counter()
    with capture():
        deeplabcut.export_model(str(config), shuffle=1)
    timings["6_export_model"] = time.perf_counter() - t0
    exported = sorted((project / "exported-models-pytorch").rglob("*.pt"))
    raw = torch.load(exported[0], map_location="cpu", weights_only=True)
    rec["export_model"] = {
        "call": "deeplabcut.export_model(config, shuffle=1)",
        "files": [str(p.relative_to(project)) for p in exported],
        "bytes": [p.stat().st_size for p in exported],
        "top_level_keys": sorted(raw.keys()),
        "pose_equals_snapshot_model": bool(raw["pose"].keys() == seeded_sd.keys() and all(
            torch.equal(raw["pose"][k], seeded_sd[k]) for k in seeded_sd)),
        "copied_into_fixture": False,
    }

    # ------------------------------------------------------------------ 7. copy
    t0 = time.perf_counter()
    out_dir = out_root / tag
    out_dir.mkdir(parents=True)
    shutil.copy2(config, out_dir / "config.yaml")
    shutil.copy2(pcfg_path, out_dir / "pytorch_config.yaml")
    shutil.copy2(video, out_dir / video.name)
    shutil.copy2(project / "videos" / "synth1_truth.csv", out_dir / "synth1_truth.csv")
    for folder in RUNS:
        shutil.copytree(project / folder, out_dir / folder)
    shutil.copy2(npz_path, out_dir / "reference_maps.npz")
    (out_dir / "state_keys.json").write_text(
        "[\n" + ",\n".join(json.dumps(k) for k in keys) + "\n]\n")
    rec["pytorch_config_diff_vs_as_written"] = "".join(difflib.unified_diff(
        original_pcfg_text.replace(str(project), PLACEHOLDER).splitlines(True),
        pcfg_path.read_text().replace(str(project), PLACEHOLDER).splitlines(True),
        "pytorch_config.yaml (as DLC wrote it)", "pytorch_config.yaml (in this fixture)"))
    replaced, binary_with_path = [], []
    needle = str(project).encode()
    for p in sorted(q for q in out_dir.rglob("*") if q.is_file()):
        data = p.read_bytes()
        if needle not in data and work.name.encode() not in data:
            continue
        rel = str(p.relative_to(out_root))
        if p.suffix in TEXT_SUFFIXES:
            p.write_bytes(data.replace(needle, PLACEHOLDER.encode()))
            replaced.append(rel)
        else:
            binary_with_path.append(rel)
    rec["placeholder_replaced_in"] = replaced
    rec["build_path_left_in_binary_files"] = binary_with_path
    rec["build_path"] = str(project)
    timings["7_copy"] = time.perf_counter() - t0
    rec["timings_s"] = {k: round(v, 2) for k, v in timings.items()}
    return rec


def check_structure(records: dict) -> list[str]:
    """The properties the fixture is for; a failure means seeded_weights needs re-tuning."""
    problems = []
    s = records["single"]
    lik = [v for row in s["likelihood_center"] for v in row]
    if len(set(lik)) < len(lik) // 2 or min(lik) <= 0.0 or max(lik) >= 1.0:
        problems.append(f"single: likelihoods not spread inside (0, 1): {sorted(set(lik))}")
    if s["heatmap_argmax"]["min_top1_minus_top2"] < 1e-4:
        problems.append("single: heatmap argmax margin < 1e-4")
    m = records["multi"]["paf_peaks"]
    if min(min(r) for r in m["peaks_per_part_per_frame"]) < 3:
        problems.append("multi: fewer than 3 peaks for some part/frame")
    if min(m["assembled_animals_per_frame"]) < 2:
        problems.append("multi: fewer than 2 assembled animals in some frame")
    for tag in ("single", "multi"):
        if records[tag]["reference_maps"]["final_vs_analyze_center_max_abs_diff"] > 1e-3:
            problems.append(f"{tag}: reference maps' poses differ from analyze_videos (centre)")
        if records[tag]["state_dict"]["dlc_picked"] != ["snapshot-005.pt"]:
            problems.append(f"{tag}: DLC picked {records[tag]['state_dict']['dlc_picked']}")
    return problems


def main() -> int:
    args = fixture_args(__doc__.splitlines()[0], "hrnet_fixture", "/tmp/hrnet-fixture")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    t_start = time.perf_counter()

    out_root = args.out.resolve()
    sw_path = out_root / "seeded_weights.py"
    if not sw_path.is_file():
        raise SystemExit(f"{sw_path} is missing (it is the fixture's source, not an output)")
    sw = load_seeded_weights(sw_path)
    for tag in MODELS:  # everything but seeded_weights.py is rebuilt
        if (out_root / tag).exists():
            shutil.rmtree(out_root / tag)
    work = args.workdir.resolve()
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)

    import albumentations
    import deeplabcut
    import numpy as np
    import pandas as pd
    import timm
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    records = {tag: run_model(tag, spec, args, sw, out_root, work) for tag, spec in MODELS.items()}
    problems = check_structure(records)
    posed_version = subprocess.run([str(args.posed), "--version"], check=False,
                                   capture_output=True, text=True).stdout.strip()
    record = {
        "what": "DeepLabCut 3.0.2 HRNet keypoint-parity reference (seeded weights, synthetic "
                "projects made by `posed synth`)",
        "versions": {
            "deeplabcut": deeplabcut.__version__, "torch": torch.__version__,
            "timm": timm.__version__, "albumentations": albumentations.__version__,
            "numpy": np.__version__, "pandas": pd.__version__,
            "python": platform.python_version(), "machine": platform.machine(),
            "posed": posed_version, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        },
        "placeholder": PLACEHOLDER,
        "seeded_weights_sha256": sha256(sw_path),
        "structure_problems": problems,
        "total_time_s": round(time.perf_counter() - t_start, 1),
        **records,
    }
    write_readme(out_root, record)
    files = sorted(p for p in out_root.rglob("*") if p.is_file() and p.name != "check.json"
                   and "__pycache__" not in p.parts)
    record["files"] = {str(p.relative_to(out_root)): {"bytes": p.stat().st_size,
                                                      "sha256": sha256(p)} for p in files}
    record["total_bytes"] = sum(v["bytes"] for v in record["files"].values())
    (out_root / "check.json").write_text(json.dumps(tolist(record), indent=1) + "\n")
    print(f"fixture: {out_root} ({record['total_bytes']} bytes, {len(files) + 1} files)")
    if problems:
        print("STRUCTURE PROBLEMS:\n  " + "\n  ".join(problems))
        return 1
    return 0


def _fmt_spread(s: dict) -> str:
    def one(d):
        return f"max {d['max']:.2f} px, median {d['median']:.2f} px" if d["n"] else "n/a"

    r = s["random_run1_vs_random_run2"]
    text = f"same slot: {one(r['xy_distance_same_slot_px'])}"
    if "xy_distance_nearest_same_part_px" in r:
        text += f"; nearest same part: {one(r['xy_distance_nearest_same_part_px'])}"
    return text


def write_readme(out_root: Path, r: dict) -> None:
    v = r["versions"]
    s, m = r["single"], r["multi"]
    timings = "\n".join(f"| {tag} | {k} | {t} |" for tag in ("single", "multi")
                        for k, t in r[tag]["timings_s"].items())
    text = f"""# DeepLabCut HRNet parity fixture (seeded weights, synthetic projects)

Made by DeepLabCut {v['deeplabcut']} itself for posed's keypoint parity on HRNet backbones
(PyTorch engine), by `benchmarks/dlc_reference/make_hrnet_fixture.py` (re-run it to rebuild
everything here but `seeded_weights.py`, which is its input):

    OMP_NUM_THREADS=1 /work/dlcenv/bin/python benchmarks/dlc_reference/make_hrnet_fixture.py

Versions: deeplabcut {v['deeplabcut']}, torch {v['torch']}, timm {v['timm']}, albumentations
{v['albumentations']}, numpy {v['numpy']}, pandas {v['pandas']}, Python {v['python']}
({v['machine']}), CPU, `OMP_NUM_THREADS={v['OMP_NUM_THREADS']}`; `{v['posed']}`.

Two models; the projects are **synthetic** (`posed synth`, 100x76 frames: not a multiple of 32,
so DeepLabCut pads) and the weights are **not trained**: every tensor of DeepLabCut's PoseModel
state dict is `seeded_weights.value(name, shape)` (see its docstring for the rules). Neither
the snapshot nor the export is here (`single`: {s['state_dict']['float32_megabytes']} MB,
`multi`: {m['state_dict']['float32_megabytes']} MB); rebuild the state dict with

    {{k["name"]: seeded_weights.value(k["name"], k["shape"]) for k in json.load(open("<model>/state_keys.json"))}}

(names, shapes, dtypes in DeepLabCut's state-dict order; `num_batches_tracked` is int64).

| folder | net_type | head / predictor | body parts | individuals | model stride |
| --- | --- | --- | --- | --- | --- |
| `single/` | `{s['net_type']}` | HeatmapHead / HeatmapPredictor | {len(s['bodyparts'])} | 1 | {s['strides']['model (PoseModel.get_stride)']} |
| `multi/` | `{m['net_type']}` | DLCRNetHead / PartAffinityFieldPredictor (`bu`) | {len(m['bodyparts'])} | {len(m['individuals'])} | {m['strides']['model (PoseModel.get_stride)']} |

The single-animal project has 5 body parts (`--bodyparts ...,tailend`) and the multi-animal
one posed's default 4 on purpose: `seeded_weights.py` holds one calibrated tensor per model (the
per-part heatmap bias, chosen once on these videos so that the outputs have structure), and
both models name it `heads.bodypart.heatmap_head.deconv_layers.0.bias`, so its shape tells
the two apart. Everything else follows rules by tensor kind (He-normal convolutions, BatchNorm
statistics in fixed ranges, damped residual-closing and fuse BatchNorms, bilinear-tap
transposed-conv heads with a positive mean): see the module docstring.

## Steps (for each model; PROJECT = `{r['single']['build_path'].rsplit('/', 1)[0]}/<model>`)

1. `posed synth PROJECT {' '.join(s['synth_command'][3:])}` (single) and
   `posed synth PROJECT {' '.join(m['synth_command'][3:])}` (multi).
2. `deeplabcut.create_training_dataset(config, Shuffles=[1], net_type="{s['net_type']}" /
   "{m['net_type']}", engine=deeplabcut.Engine.PYTORCH, userfeedback=False)`.
3. `PoseModel.build(pytorch_config["model"])` (as DLC's inference builds it: no pretrained
   weights), all tensors from `seeded_weights.value`, saved as DLC's snapshot
   `train/snapshot-005.pt` = `{{"model": state_dict, "metadata": {{"epoch": 5}}}}`. DLC
   (`snapshotindex: -1`) picks {s['state_dict']['dlc_picked']} / {m['state_dict']['dlc_picked']}.
4. `deeplabcut.analyze_videos(config, [video], shuffle=1, destfolder=..., save_as_csv=True,
   device="cpu")`, multi with `auto_track=False, save_as_df=True` (the untracked assemblies in
   predictor order as h5/csv, and `_full.pickle`, `_assemblies.pickle`, `_meta.pickle`):
   - `analyze_random_padding_run1/`, `analyze_random_padding_run2/`: the shuffle's
     `pytorch_config.yaml` as DeepLabCut wrote it. Its `data.inference.auto_padding` is
     `{{pad_width_divisor: 32, pad_height_divisor: 32}}` and DLC's `build_auto_padding`
     defaults `position` to `"random"` (albumentations `PadIfNeeded`, border `reflect_101`):
     every frame lands at a random offset in its 128x96 canvas, so DLC's own outputs vary
     from run to run. DLC's run-to-run spread (run1 vs run2) — single: {_fmt_spread(s['dlc_run_to_run_spread'])};
     multi: {_fmt_spread(m['dlc_run_to_run_spread'])} (all numbers in `check.json`
     `<model>.dlc_run_to_run_spread`). With trained weights the spread would be much smaller:
     these untrained maps move with the canvas.
   - `analyze_center_padding/`: after adding `position: center` to
     `data.inference.auto_padding` in `pytorch_config.yaml` (DLC passes it through to
     `PadIfNeeded`): deterministic; **this is the parity reference**. The copy of
     `pytorch_config.yaml` here has that line (`check.json`
     `<model>.pytorch_config_diff_vs_as_written` shows the only difference).
5. `<model>/reference_maps.npz`: DLC's raw outputs for the first {N_REFERENCE_FRAMES} video frames,
   centre padding: `frames_rgb_uint8` (DLC's `VideoIterator`), `input` (after DLC's own
   `build_transforms` + bottom-up preprocessor: PadIfNeeded centre reflect_101, then ImageNet
   normalisation; NCHW float32), `heatmap`, `locref` (and `paf`), `stride` (DLC's
   `PoseModel.get_stride`), `offsets_xy` / `scales_xy` (DLC's preprocessing context: original =
   canvas * scale + offset), `predictor_poses` (`get_predictions`, canvas pixels), `final_poses`
   (after DLC's bottom-up postprocessor, image pixels; equal to the centre analyze output up
   to {max(s['reference_maps']['final_vs_analyze_center_max_abs_diff'], m['reference_maps']['final_vs_analyze_center_max_abs_diff']):.1e}),
   `analyze_center_keypoints`; multi also the predictor's PAF peaks
   (`peaks_xy_f<frame>_p<part>` (canvas pixels, locref applied), `peaks_confidence_...`) and
   edge costs (`costs_m1_f<frame>_e<edge>`, `costs_distance_...`).
6. `deeplabcut.export_model(config, shuffle=1)` wrote `{s['export_model']['files'][0]}` /
   `{m['export_model']['files'][0]}` (not copied: its `pose` equals the seeded state dict:
   {s['export_model']['pose_equals_snapshot_model']} / {m['export_model']['pose_equals_snapshot_model']}).
7. Copied here per model: `config.yaml`, `pytorch_config.yaml`, `synth1.mp4`,
   `synth1_truth.csv` (posed's ground truth; the untrained nets do not find it), the three
   analyze folders, `reference_maps.npz`, `state_keys.json`. `{r['placeholder']}` replaces the
   build path in text files; DLC's `_meta.pickle` files still hold it (pickled `PosixPath`s,
   and DLC enums: unpickle with a `find_class` that maps them).

## What the outputs look like

- single: likelihoods (clipped raw heatmap maxima) between
  {min(min(x) for x in s['likelihood_center']):.2f} and {max(max(x) for x in s['likelihood_center']):.2f}; per frame and
  part, the best heatmap cell beats the second by at least {s['heatmap_argmax']['min_top1_minus_top2']:.1e}.
- multi: PAF peaks per part and frame {min(min(x) for x in m['paf_peaks']['peaks_per_part_per_frame'])}..{max(max(x) for x in m['paf_peaks']['peaks_per_part_per_frame'])};
  assembled animals per frame {m['paf_peaks']['assembled_animals_per_frame']} (every animal with all
  {len(m['bodyparts'])} parts); on the smoothed sigmoid maps the smallest gap between a peak and the next
  value in its 5x5 window is {m['paf_peaks']['min_peak_value_minus_next_in_window']:.1e} ({m['paf_peaks']['min_relative_peak_margin_in_window']:.1e} relative), between a non-peak
  above the threshold and its window's maximum {m['paf_peaks']['min_window_max_minus_value_of_non_peaks_above_threshold']:.1e} ({m['paf_peaks']['min_relative_non_peak_margin_above_threshold']:.1e} relative); the
  closest peak to the 0.01 threshold is {m['paf_peaks']['min_abs_peak_value_minus_threshold_0.01']:.1e} away. Edge affinities range
  {m['paf_peaks']['edge_affinity_range'][0]:.3f}..{m['paf_peaks']['edge_affinity_range'][1]:.3f} (DLC rounds them to 3 decimals).
- Structure checks: {r['structure_problems'] or 'all passed'}.

## Caveats for parity tests

- Compare with `analyze_center_padding/` (or `reference_maps.npz`), never with the random-padding
  runs: those only show how much DeepLabCut itself moves (one sample of two runs; the numbers
  change each time the script runs).
- DLC ran the video in batches of {s['project_batch_size']} frames (config.yaml `batch_size`); the reference
  maps were computed the same way (all 8 frames in one batch, first {N_REFERENCE_FRAMES} kept) and give exactly
  the analyze output.
- multi: with ~50 peaks per frame (~400 in the 8 frames), the closest call between a peak
  and a neighbouring cell is {m['paf_peaks']['min_relative_peak_margin_in_window']:.1e} relative (see above): a runtime whose heatmaps differ by more than that there
  may move one peak by a cell; compare peaks with a one-cell tolerance or check the maps first.
  DLC rounds PAF affinities to 3 decimals before assembling.
- multi's h5/csv `individuals` columns are the predictor's assembly order (`auto_track=False`:
  no tracking, no identities). An animal slot the assembler leaves empty is written as
  likelihood -1 at x, y = -1 * scale + offset (e.g. (-8, -11) for a frame padded at offset
  (7, 10)), not NaN; a missing part of an assembled animal is NaN (`check.json`
  `multi.empty_animal_slots` counts the -1 entries per run).

## DeepLabCut details worth knowing

- DLC's `HRNet` backbone is `timm.create_model(model_name, features_only=True,
  feature_location="", out_indices=(1, 2, 3, 4))` and, with `interpolate_branches: false`,
  returns only the first (stride 4, highest-resolution) branch of timm's final stage (18
  / 32 channels); the other branches are computed (and their fuse layers feed branch 0) but
  not returned. No interpolation in DLC; timm's fuse layers upsample with
  `nn.Upsample(mode="nearest")`.
- HeatmapHead: `ConvTranspose2d(k=3, s=2, padding=0)`: a W/4 feature map gives 2*(W/4)+1
  columns; keypoint = (cell + 0.5) * stride + locref * 7.2801 (stride {s['strides']['model (PoseModel.get_stride)']}).
- DLCRNetHead (5 stages): `convt1..4` are `ConvTranspose2d(k=3, s=2, padding=1,
  output_padding=1)`, the refinement layers `Conv2d(k=3, padding="same")`, the heatmap
  refinement is residual from the second stage on, and the final heatmap/PAF deconvs are
  `ConvTranspose2d(k=3, s=2, padding=0)` on the stage features (a 128-column canvas gives 129
  columns); the locref path is `locref_head(convt2(features))`. Head stride 4 against the
  backbone's 4: model stride {m['strides']['model (PoseModel.get_stride)']}. The PAF predictor places a peak at
  `cell * stride + stride // 2 + locref * 7.2801` (`1.0 // 2 = 0`: no half-cell offset, unlike
  the HeatmapPredictor).

## check.json

`versions`, `seeded_weights_sha256`, `structure_problems`, `files` (bytes, sha256 of every
file here), and per model: `pytorch_config_model` (the `model` section DLC wrote),
`pytorch_config_data_inference_auto_padding_as_written`, `pytorch_config_diff_vs_as_written`,
`state_dict`, `strides`, `output_shapes_for_input_1x3x96x128`, `analyze_calls` (calls, the
snapshot each used, output names, h5 columns), `scorer`, `dlc_run_to_run_spread`,
`likelihood_center` (single) / `animals_per_frame`, `keypoints_per_animal_center`, `paf_peaks`
(multi), `heatmap_argmax` (single), `reference_maps` (array names, shapes, dtypes),
`export_model`, `timings_s`.

## Timings (seconds, 2 shared CPU cores, OMP_NUM_THREADS=1)

| model | step | s |
| --- | --- | --- |
{timings}
"""
    (out_root / "README.md").write_text(text)


if __name__ == "__main__":
    sys.exit(main())
