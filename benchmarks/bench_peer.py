"""Benchmark: posed against DeepLabCut-Live and DeepLabCut's analyze_videos (not a test).

The same DeepLabCut-3 ResNet-50 model (``../shared/models/dlc3-openfield-resnet50``, exported
by DeepLabCut 3.0.2) on the same 640×480 frames of the openfield video:

* DeepLabCut-Live 1.1.0 (``DLCLive(..., model_type="pytorch")``), batch 1, timed per
  ``get_pose`` call. It needs numpy<2, so it runs in its own environment given by
  ``--peer-python`` (made with ``python3.11 -m venv peer && peer/bin/pip install torch==2.14.1
  torchvision==0.29.1 'deeplabcut-live[pytorch]==1.1.0'``); without it that row is absent.
* posed: the model imported with ``posed import-dlc``, through the common runner interface:
  PyTorch eager fp32 (posed's default CPU path for this bundle), TorchScript, ONNX Runtime
  FP32 and static INT8 (calibrated on 32 other frames of the video), each with its keypoint
  distance to the FP32 poses.
* ``--dynamic PCUTOFF,MARGIN`` (repeatable): every runtime again with dynamic cropping, posed's
  (:mod:`posed.engines.dynamic`) and DeepLabCut-Live's ``dynamic=(True, PCUTOFF, MARGIN)``,
  over the same consecutive frames (a warm-up pass, then timed passes): latency per frame,
  the share of frames inferred on a crop, and the keypoint distance to the same runtime's
  full-frame poses.
* For every runtime, in a fresh process: the time from loading the model to the first pose
  (also counted from the process start, imports included) and the peak RSS.
* ``posed export --precision auto``: the runtime and precision it chose on this machine, loaded
  as a user would (its whole table under ``auto``).
* The model's GFLOP per frame and this machine's GEMM peaks (fp32 in PyTorch, u8×s8 in ONNX
  Runtime), measured in the same run: each full-frame row's achieved GFLOP/s and its share of
  the fp32 peak.
* How flat each row's latency is (``p99_over_p50``, ``slow_share``, ``slow_episodes``), and
  ``flatness``: the fastest full-frame runtime timed in turns with an fp32 matrix product of
  the same length, whose spread is the machine's own in the same window.
* ``posed analyze`` frames/s on the first 300 frames of the video, against DeepLabCut's own
  ``analyze_videos`` time for the same 300 frames recorded in the model folder's README.

Writes ``benchmarks/results/peer.json`` (machine, versions, figures, ratios) and prints a table.

    python benchmarks/bench_peer.py --peer-python /path/to/peer/bin/python --frames 30
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _compute import gemm_peak, model_gflop, paired_flatness  # noqa: E402
from _machine import machine_info  # noqa: E402

from posed.bench import flatness, measure, percentiles  # noqa: E402
from posed.engines import api  # noqa: E402
from posed.engines.io import atomic_write_text  # noqa: E402

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared"
MODEL_DIR = SHARED / "models" / "dlc3-openfield-resnet50"
DLC_PT = MODEL_DIR / "DLC_openfield_NetType.RESNET_50_iteration-0_shuffle-1_snapshot-1.pt"
VIDEO = SHARED / "data" / "dlc-examples" / "openfield-Pranav-2018-10-30" / "videos" / "m3v1mp4.mp4"
# DeepLabCut 3.0.2 analyze_videos on these 300 frames, batch 4, CPU (MODEL_DIR/README.md, step 5).
DLC_ANALYZE_S, DLC_ANALYZE_FRAMES = 397.0, 300
CALIBRATION_START = 600  # INT8 calibration frames: away from the timed ones at the start

# Runs inside the DeepLabCut-Live environment: frames come as an .npy file, timings go to stdout.
# DeepLabCut-Live wants BGR frames (it converts them to RGB itself). argv[3], when given, is
# its dynamic triple as JSON; the frames then run twice in order (a warm-up pass, then timed).
PEER_SCRIPT = r"""
import time
t_proc = time.perf_counter()
import json, sys
import numpy as np
from dlclive import DLCLive
frames = np.ascontiguousarray(np.load(sys.argv[2])[..., ::-1])
dynamic = tuple(json.loads(sys.argv[3])) if len(sys.argv) > 3 else (False, 0.5, 10)
t_load = time.perf_counter()
live = DLCLive(sys.argv[1], model_type="pytorch", device="cpu", dynamic=dynamic)
live.init_inference(frames[0])
first = time.perf_counter()
live.get_pose(frames[1])
if dynamic[0]:
    for f in frames:
        live.get_pose(f)
lat, poses, cropped = [], [], 0
for f in frames:
    t0 = time.perf_counter()
    poses.append(np.array(live.get_pose(f)))
    lat.append((time.perf_counter() - t0) * 1000)
    cropped += live.dynamic_cropping is not None
import dlclive, torch
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
print(json.dumps({"latency_ms": lat, "poses": np.asarray(poses).tolist(), "cropped": cropped,
                  "first_pose_s": round(first - t_load, 3),
                  "first_pose_s_with_imports": round(first - t_proc, 3),
                  "peak_rss_mb": round(hwm / 1024, 1),
                  "dlclive": getattr(dlclive, "__version__", "1.1.0"), "torch": torch.__version__,
                  "threads": torch.get_num_threads()}))
"""


# A fresh process per posed runtime: the time from loading the model to its first pose, and
# the peak RSS after a few more frames (VmHWM: this process image only).
FIRST_POSE_SCRIPT = r"""
import time
t_proc = time.perf_counter()
import json, sys
import numpy as np
from posed.engines import api
frames = np.load(sys.argv[2])
t0 = time.perf_counter()
runner = api.load_model(sys.argv[1], **json.loads(sys.argv[3]))
runner.predict(frames[:1])
first = time.perf_counter()
for f in frames[1:6]:
    runner.predict(f[None])
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
print(json.dumps({"first_pose_s": round(first - t0, 3),
                  "first_pose_s_with_imports": round(first - t_proc, 3),
                  "peak_rss_mb": round(hwm / 1024, 1)}))
"""


def first_pose(path: Path, options: dict, frames: Path) -> dict:
    """First-pose time and peak RSS of one posed runtime, in a fresh process."""
    proc = subprocess.run([sys.executable, "-c", FIRST_POSE_SCRIPT, str(path), str(frames),
                           json.dumps(options)], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        return {"first_pose_error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _agreement(poses: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Keypoint distance (px) to posed's FP32 eager poses: the largest over all keypoints,
    and the median and largest over those the reference sees (likelihood >= 0.5)."""
    from posed.exporters.common import CONFIDENT, compare_poses

    parity = compare_poses(reference, poses)  # the exporters' own measure
    seen = reference[..., 2] >= CONFIDENT
    dist = np.linalg.norm(poses[..., :2] - reference[..., :2], axis=-1)[seen]
    return {"max_px_vs_posed_fp32": round(parity["max_px"], 4),
            "median_px_seen": round(float(np.nanmedian(dist)), 4) if seen.any() else None,
            "max_px_seen": round(parity["max_px_confident"], 4) if seen.any() else None}


def dynamic_row(runner, frames: np.ndarray, settings, full: np.ndarray, seconds: float) -> dict:
    """posed's dynamic cropping over the frames in order: one warm-up pass (every crop shape
    seen once), then timed passes for about ``seconds``; each frame's latency includes placing
    the window and mapping the keypoints back."""
    from posed.engines.dynamic import DynamicCropper, predict_dynamic

    region = (0, 0, frames.shape[2], frames.shape[1])
    predict_dynamic(runner, frames, DynamicCropper(settings, region))
    lat: list[float] = []
    cropped = passes = 0
    t_end = time.perf_counter() + seconds
    while passes == 0 or time.perf_counter() < t_end:
        cropper = DynamicCropper(settings, region)
        poses = []
        for frame in frames:
            t0 = time.perf_counter()
            poses.append(predict_dynamic(runner, frame[None], cropper)[0])
            lat.append((time.perf_counter() - t0) * 1000)
        cropped += cropper.cropped
        passes += 1
    poses = np.stack(poses)
    return {"poses": poses, "calls": len(lat), "frames_per_s": round(1000 * len(lat) / sum(lat), 2),
            **percentiles(lat), **flatness(lat),
            "cropped_share": round(cropped / (passes * len(frames)), 3),
            "vs_own_full_frame": _agreement(poses, full)}


def video_frames(n: int, start: int = 0) -> np.ndarray:
    """Frames ``start``..``start+n`` of the openfield video as uint8 RGB."""
    from posed.engines.video import VideoReader

    with VideoReader(VIDEO, start=start, stop=start + n) as reader:
        return np.stack([f for _, f in reader])


def first_frames_clip(src: Path, dst: Path, n: int) -> None:
    """The first ``n`` frames of ``src`` by stream copy (no re-encode), as DLC's reference run."""
    import av

    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        stream = inp.streams.video[0]
        ostream = out.add_stream_from_template(stream)
        count = 0
        for packet in inp.demux(stream):
            if packet.dts is None:
                continue
            packet.stream = ostream
            out.mux(packet)
            count += 1
            if count >= n:
                break


def peer_row(python: Path, frames: Path, reference: np.ndarray, record: dict,
             dynamic: list | None = None, full: np.ndarray | None = None) -> np.ndarray | None:
    """Run DeepLabCut-Live in its environment, add its row; returns its poses (None if it
    failed). With ``dynamic``, the row also has the distance to its own full-frame ``full``."""
    cmd = [str(python), "-c", PEER_SCRIPT, str(DLC_PT), str(frames)]
    proc = subprocess.run(cmd + ([json.dumps(dynamic)] if dynamic else []), capture_output=True,
                          text=True, timeout=3600)
    tag = f" dynamic {dynamic[1]:g},{dynamic[2]:g}" if dynamic else ""
    name = "dlclive" + tag
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
        record["rows"].append({"runtime": name, "error": tail})
        return None
    peer = json.loads(proc.stdout.strip().splitlines()[-1])
    lat = peer.pop("latency_ms")
    poses = np.asarray(peer.pop("poses"), dtype=np.float32)
    cropped = peer.pop("cropped")
    row = {"runtime": f"dlclive {peer['dlclive']} pytorch{tag}", "dynamic": dynamic,
           "batch": 1, "calls": len(lat), "frames_per_s": round(1000 * len(lat) / sum(lat), 2),
           **percentiles(lat), **flatness(lat), **_agreement(poses, reference), **peer}
    if dynamic:
        row["cropped_share"] = round(cropped / len(lat), 3)
        row["vs_own_full_frame"] = _agreement(poses, full)
    record["rows"].append(row)
    return poses


def main() -> int:
    from posed.engines.memory import keep_freed_memory

    keep_freed_memory()  # as the posed command does
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--peer-python", type=Path, help="python of a DeepLabCut-Live environment")
    ap.add_argument("--frames", type=int, default=30, help="frames timed per runtime")
    ap.add_argument("--seconds", type=float, default=10.0, help="measuring time per posed runtime")
    ap.add_argument("--analyze", action="store_true", help="also time posed analyze on 300 frames")
    ap.add_argument("--dynamic", metavar="PCUTOFF,MARGIN", action="append", default=[],
                    help="also time dynamic cropping (posed's and DeepLabCut-Live's); repeatable")
    ap.add_argument("--only", help="posed runtimes to time: names containing this text")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "peer.json")
    args = ap.parse_args()
    from posed.engines.dynamic import DynamicSettings

    dynamics = [DynamicSettings.parse((True, *(float(v) for v in d.split(","))))
                for d in args.dynamic]
    if not DLC_PT.is_file() or not VIDEO.is_file():
        print(f"error: {DLC_PT} or {VIDEO} is missing (see ../shared)", file=sys.stderr)
        return 2
    frames = video_frames(args.frames)
    record: dict = {"benchmark": "bench_peer",
                    "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                    "machine": machine_info(), "model": DLC_PT.name, "video": VIDEO.name,
                    "size": [int(frames.shape[2]), int(frames.shape[1])], "frames": len(frames),
                    "dynamic": [[True, d.pcutoff, d.margin] for d in dynamics],
                    "rows": []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        from posed.exporters.dlc import import_dlc_pytorch

        bundle = import_dlc_pytorch(DLC_PT, tmp / "bundle")
        # How close to the hardware: the model's arithmetic and this machine's GEMM peaks.
        record["compute"] = {"model_gflop_per_frame": round(model_gflop(
            Path(bundle), frames.shape[1], frames.shape[2]), 2), **gemm_peak()}
        # Static INT8 is calibrated on other frames of the same video than the timed ones.
        # (Dynamic INT8 is not timed: onnxruntime's ConvInteger path ran 4x slower than FP32
        # on this model and moved keypoints by hundreds of pixels.)
        calibration = video_frames(32, start=CALIBRATION_START)
        exports: dict[str, Path] = {}

        def export(key: str, fmt: str, **kw) -> Path:  # each export once, when first needed
            if key not in exports:
                exports[key] = api.export_model(bundle, fmt, tmp / key, **kw)
            return exports[key]

        int8 = {"precision": "int8", "calibration": calibration, "check_frames": frames[:8]}
        # GroupNorm statistics frozen on the same 32 frames (posed export --freeze-norm).
        frozen = {"freeze_norm": True, "calibration": calibration, "check_frames": frames[:8]}
        # PyTorch bf16 only where the CPU computes it natively (AMX or AVX512-BF16).
        from posed.engines.pytorch.accel import cpu_bf16_support

        bf16_cpu = cpu_bf16_support() is not None
        runtimes = [("posed pytorch-eager fp32", lambda: bundle, {"device": "cpu"}),
                    *([("posed pytorch-eager bf16", lambda: bundle,
                        {"device": "cpu", "precision": "bf16"})] if bf16_cpu else []),
                    ("posed torchscript fp32", lambda: export("ts", "torchscript"),
                     {"device": "cpu"}),
                    ("posed onnx-fp32", lambda: export("onnx", "onnx"), {"provider": "cpu"}),
                    ("posed onnx-int8 (static)", lambda: export("int8", "onnx", **int8),
                     {"provider": "cpu"}),
                    ("posed onnx-fp32 frozen-norm", lambda: export("fz", "onnx", **frozen),
                     {"provider": "cpu"}),
                    ("posed onnx-int8 frozen-norm", lambda: export(
                        "fz8", "onnx", **{**int8, **frozen}), {"provider": "cpu"}),
                    # posed export --precision auto: its own choice, loaded as a user would.
                    ("posed precision auto", lambda: export(
                        "auto", "onnx", precision="auto", calibration=calibration,
                        check_frames=frames[:8]), {})]
        if api.engine_available("openvino"):
            from posed.engines.registry import get_backend

            runtimes.append(("posed openvino fp32", lambda: export("onnx", "onnx"),
                             {"engine": "openvino"}))
            runtimes.append(("posed openvino fp32 frozen-norm",
                             lambda: export("fz", "onnx", **frozen), {"engine": "openvino"}))
            if "BF16" in get_backend("openvino").cpu_capabilities():
                runtimes.append(("posed openvino bf16", lambda: export("onnx", "onnx"),
                                 {"engine": "openvino", "precision": "bf16"}))
                runtimes.append(("posed openvino bf16 frozen-norm",
                                 lambda: export("fz", "onnx", **frozen),
                                 {"engine": "openvino", "precision": "bf16"}))
            runtimes.append(("posed openvino int8 (static)",
                             lambda: export("int8", "onnx", **int8), {"engine": "openvino"}))
            runtimes.append(("posed openvino int8 frozen-norm", lambda: export(
                "fz8", "onnx", **{**int8, **frozen}), {"engine": "openvino"}))
        reference = None
        loaded: dict[str, tuple[Path, dict]] = {}
        np.save(tmp / "frames.npy", frames)
        for name, make, options in runtimes:
            if args.only and args.only not in name and reference is not None:
                continue
            try:
                path = make()
            except Exception as exc:  # e.g. the export's parity check refuses it: report that
                record["rows"].append({"runtime": name, "error": str(exc).splitlines()[0]})
                continue
            loaded[name] = (path, options)
            startup = first_pose(path, options, tmp / "frames.npy")
            runner = api.load_model(path, **options)
            row = {"runtime": name, **measure(runner, frames, 1, args.seconds), **startup}
            poses = runner.predict(frames)
            if reference is None:
                reference = poses
            row.update(_agreement(poses, reference))
            record["rows"].append(row)
            for d in dynamics:
                dyn = dynamic_row(runner, frames, d, poses, args.seconds)
                vs_fp32 = _agreement(dyn.pop("poses"), reference)
                record["rows"].append({"runtime": f"{name} dynamic {d.pcutoff:g},{d.margin:g}",
                                       "dynamic": [True, d.pcutoff, d.margin], **dyn, **vs_fp32})
            runner.close()
        # The fastest full-frame runtime's p99/p50 next to the machine's own, in one window.
        timed = [r for r in record["rows"] if r.get("calls") and not r.get("dynamic")]
        if timed:
            fastest = min(timed, key=lambda r: r["p50_ms"])
            path, options = loaded[fastest["runtime"]]
            runner = api.load_model(path, **options)
            record["flatness"] = {"runtime_name": fastest["runtime"],
                                  **paired_flatness(runner, frames, args.seconds)}
            runner.close()
        if "auto" in exports:
            from posed.engines.bundle import load_bundle

            record["auto"] = load_bundle(exports["auto"]).export["auto"]
        if args.peer_python:
            full = peer_row(args.peer_python, tmp / "frames.npy", reference, record)
            for d in dynamics if full is not None else []:
                peer_row(args.peer_python, tmp / "frames.npy", reference, record,
                         [True, d.pcutoff, d.margin], full)
        if args.analyze:
            clip = tmp / VIDEO.name
            first_frames_clip(VIDEO, clip, DLC_ANALYZE_FRAMES)
            t0 = time.perf_counter()
            report = api.analyze_videos(bundle, [clip], dest=tmp / "out", progress=False,
                                           overwrite=True, runner_options={"device": "cpu"})
            seconds = time.perf_counter() - t0
            dlc_fps = DLC_ANALYZE_FRAMES / DLC_ANALYZE_S
            record["analyze"] = {"posed_frames": report.frames, "posed_s": round(seconds, 2),
                                 "posed_frames_per_s": round(report.frames / seconds, 3),
                                 "dlc_frames_per_s": round(dlc_fps, 3),
                                 "ratio": round(report.frames / seconds / dlc_fps, 2),
                                 "dlc_source": "MODEL_DIR/README.md: DeepLabCut 3.0.2 "
                                               "analyze_videos, 300 frames in 397 s"}
    gflop, peak = record["compute"]["model_gflop_per_frame"], record["compute"]["fp32_gflops"]
    for r in record["rows"]:
        if "p50_ms" in r and not r.get("dynamic"):
            r["achieved_gflops"] = round(gflop / (r["p50_ms"] / 1000), 1)
            r["share_of_fp32_gemm_peak"] = round(r["achieved_gflops"] / peak, 3)
    # DeepLabCut-Live's rows by their dynamic setting (None: full frame).
    peer_rows = {str(r.get("dynamic")): r for r in record["rows"]
                 if r["runtime"].startswith("dlclive") and "error" not in r}
    for r in record["rows"]:
        if "p50_ms" in r and "None" in peer_rows:
            r["speedup_vs_dlclive_p50"] = round(peer_rows["None"]["p50_ms"] / r["p50_ms"], 2)
        same = peer_rows.get(str(r.get("dynamic"))) if r.get("dynamic") else None
        if "p50_ms" in r and same is not None:
            r["speedup_vs_dlclive_dynamic_p50"] = round(same["p50_ms"] / r["p50_ms"], 2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(record, indent=2) + "\n")
    print("| runtime | frames/s | p50 ms | p99 ms | p99/p50 | slow calls | vs DLC-Live | "
          "vs DLC-Live dynamic | cropped | px vs posed fp32: max | median seen | max seen | "
          "px vs own full frame: median seen | max seen | first pose s | peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in record["rows"]:
        own = r.get("vs_own_full_frame", {})
        print(f"| {r['runtime']} | {r.get('frames_per_s', r.get('error'))} | {r.get('p50_ms')} | "
              f"{r.get('p99_ms')} | {r.get('p99_over_p50', '–')} | "
              f"{r.get('slow_share', '–')} | "
              f"{r.get('speedup_vs_dlclive_p50', '–')} | "
              f"{r.get('speedup_vs_dlclive_dynamic_p50', '–')} | {r.get('cropped_share', '–')} | "
              f"{r.get('max_px_vs_posed_fp32', '–')} | {r.get('median_px_seen', '–')} | "
              f"{r.get('max_px_seen', '–')} | {own.get('median_px_seen', '–')} | "
              f"{own.get('max_px_seen', '–')} | {r.get('first_pose_s', '–')} | "
              f"{r.get('peak_rss_mb', '–')} |")
    if "flatness" in record:
        f = record["flatness"]
        for key, name in (("runtime", f["runtime_name"]),
                          ("constant_work", f["constant_work"]["workload"])):
            print(f"taking turns, {name}: {f[key]['calls']} calls, p50 {f[key]['p50_ms']} ms, "
                  f"p99/p50 {f[key]['p99_over_p50']}, slow calls {f[key]['slow_share']} in "
                  f"{f[key]['slow_episodes']} episodes")
    if "analyze" in record:
        a = record["analyze"]
        print(f"analyze: posed {a['posed_frames_per_s']} frames/s vs DeepLabCut "
              f"{a['dlc_frames_per_s']} frames/s ({a['ratio']}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
