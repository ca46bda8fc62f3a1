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
from _machine import machine_info  # noqa: E402

from posed.bench import measure, percentiles  # noqa: E402
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
PEER_SCRIPT = r"""
import json, sys, time
import numpy as np
from dlclive import DLCLive
frames = np.load(sys.argv[2])
live = DLCLive(sys.argv[1], model_type="pytorch", device="cpu")
live.init_inference(frames[0])
live.get_pose(frames[1])
lat, poses = [], []
for f in frames:
    t0 = time.perf_counter()
    poses.append(live.get_pose(f))
    lat.append((time.perf_counter() - t0) * 1000)
import dlclive, torch
print(json.dumps({"latency_ms": lat, "poses": np.asarray(poses).tolist(),
                  "dlclive": getattr(dlclive, "__version__", "1.1.0"), "torch": torch.__version__,
                  "threads": torch.get_num_threads()}))
"""


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


def main() -> int:
    from posed.engines.memory import keep_freed_memory

    keep_freed_memory()  # as the posed command does
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--peer-python", type=Path, help="python of a DeepLabCut-Live environment")
    ap.add_argument("--frames", type=int, default=30, help="frames timed per runtime")
    ap.add_argument("--seconds", type=float, default=10.0, help="measuring time per posed runtime")
    ap.add_argument("--analyze", action="store_true", help="also time posed analyze on 300 frames")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "peer.json")
    args = ap.parse_args()
    if not DLC_PT.is_file() or not VIDEO.is_file():
        print(f"error: {DLC_PT} or {VIDEO} is missing (see ../shared)", file=sys.stderr)
        return 2
    frames = video_frames(args.frames)
    record: dict = {"benchmark": "bench_peer",
                    "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                    "machine": machine_info(), "model": DLC_PT.name, "video": VIDEO.name,
                    "size": [int(frames.shape[2]), int(frames.shape[1])], "frames": len(frames),
                    "rows": []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        from posed.exporters.dlc import import_dlc_pytorch

        bundle = import_dlc_pytorch(DLC_PT, tmp / "bundle")
        # Static INT8 is calibrated on other frames of the same video than the timed ones.
        # (Dynamic INT8 is not timed: onnxruntime's ConvInteger path ran 4x slower than FP32
        # on this model and moved keypoints by hundreds of pixels.)
        calibration = video_frames(32, start=CALIBRATION_START)
        onnx = api.export_model(bundle, "onnx", tmp / "onnx")
        runtimes = [("posed pytorch-eager fp32", bundle, {"device": "cpu"}),
                    ("posed torchscript fp32", api.export_model(bundle, "torchscript", tmp / "ts"),
                     {"device": "cpu"}),
                    ("posed onnx-fp32", onnx, {"provider": "cpu"})]
        if api.engine_available("openvino"):
            from posed.engines.registry import get_backend

            runtimes.append(("posed openvino fp32", onnx, {"engine": "openvino"}))
            if "BF16" in get_backend("openvino").cpu_capabilities():
                runtimes.append(("posed openvino bf16", onnx, {"engine": "openvino",
                                                               "precision": "bf16"}))
        try:
            runtimes.append(("posed onnx-int8 (static)", api.export_model(
                bundle, "onnx", tmp / "int8", precision="int8", calibration=calibration,
                check_frames=frames[:8]), {"provider": "cpu"}))
        except Exception as exc:  # e.g. the export's parity check refuses it: report that
            record["rows"].append({"runtime": "posed onnx-int8 (static)",
                                   "error": str(exc).splitlines()[0]})
        reference = None
        for name, path, options in runtimes:
            runner = api.load_model(path, **options)
            row = {"runtime": name, **measure(runner, frames, 1, args.seconds)}
            poses = runner.predict(frames)
            if reference is None:
                reference = poses
            row.update(_agreement(poses, reference))
            record["rows"].append(row)
            runner.close()
        if args.peer_python:
            np.save(tmp / "frames.npy", frames)
            proc = subprocess.run([str(args.peer_python), "-c", PEER_SCRIPT, str(DLC_PT),
                                   str(tmp / "frames.npy")], capture_output=True, text=True,
                                  timeout=3600)
            if proc.returncode != 0:
                tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
                record["rows"].append({"runtime": "dlclive", "error": tail})
            else:
                peer = json.loads(proc.stdout.strip().splitlines()[-1])
                lat = peer.pop("latency_ms")
                poses = np.asarray(peer.pop("poses"), dtype=np.float32)
                record["rows"].append({
                    "runtime": f"dlclive {peer['dlclive']} pytorch", "batch": 1, "calls": len(lat),
                    "frames_per_s": round(1000 * len(lat) / sum(lat), 2), **percentiles(lat),
                    **_agreement(poses, reference), **peer})
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
    peer_rows = [r for r in record["rows"] if r["runtime"].startswith("dlclive") and "error" not in r]
    if peer_rows:
        base = peer_rows[0]["p50_ms"]
        for r in record["rows"]:
            if "p50_ms" in r:
                r["speedup_vs_dlclive_p50"] = round(base / r["p50_ms"], 2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(record, indent=2) + "\n")
    print("| runtime | frames/s | p50 ms | p99 ms | vs DLC-Live | px vs posed fp32: max | "
          "median seen | max seen |")
    print("|---|---|---|---|---|---|---|---|")
    for r in record["rows"]:
        print(f"| {r['runtime']} | {r.get('frames_per_s', r.get('error'))} | {r.get('p50_ms')} | "
              f"{r.get('p99_ms')} | {r.get('speedup_vs_dlclive_p50', '–')} | "
              f"{r.get('max_px_vs_posed_fp32', '–')} | {r.get('median_px_seen', '–')} | "
              f"{r.get('max_px_seen', '–')} |")
    if "analyze" in record:
        a = record["analyze"]
        print(f"analyze: posed {a['posed_frames_per_s']} frames/s vs DeepLabCut "
              f"{a['dlc_frames_per_s']} frames/s ({a['ratio']}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
