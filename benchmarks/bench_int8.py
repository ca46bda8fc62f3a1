"""Benchmark: static INT8 on ONNX Runtime and OpenVINO against ONNX Runtime FP32 (not a test).

The DeepLabCut-3 ResNet-50 (``../shared/models/dlc3-openfield-resnet50``, imported as
``posed import-dlc`` does) exported to ONNX FP32 and to static INT8 (QDQ) calibrated with
``--calibration`` on the openfield video (32 evenly spaced frames; the export's parity check
runs on 8 others; when it refuses the export, that is recorded and the same graph is built
without the check to measure it anyway). Then, at 640×480, batch 1, 2 threads:

* latency (p50, p99; the runtimes take turns call by call, so that other work on the
  cores disturbs them alike) of ONNX Runtime FP32, ONNX Runtime INT8, OpenVINO INT8 (the
  same QDQ bundle) and, for context, OpenVINO FP32 and PyTorch eager FP32;
* keypoint distance of each INT8 run from the FP32 run of the same runtime family (ONNX
  Runtime FP32) on 50 frames not used for calibration, on the parts FP32 sees (likelihood
  >= 0.5): median and max;
* which precision and instruction set OpenVINO's compiled convolutions use (runtime graph).

Each mode runs in a child process: ``native``, and ``avx2`` with PyTorch, oneDNN and MKL held
to AVX2 (``ATEN_CPU_CAPABILITY``, ``ONEDNN_MAX_CPU_ISA``, ``MKL_ENABLE_INSTRUCTIONS``).
ONNX Runtime's CPU kernels (MLAS) choose their instruction set from CPUID and read none of
these, so its ``avx2`` rows are native figures, marked so in the JSON. OpenVINO's CPU plugin
reads ``ONEDNN_MAX_CPU_ISA`` for its oneDNN kernels; the ISA of every compiled primitive is
recorded, so the kernels it does not hold to AVX2 are visible.

Writes ``benchmarks/results/int8-<machine>.json`` and prints a table (about 10 minutes on
2 cores).

    python benchmarks/bench_int8.py [--calls 15] [--modes native avx2]
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np

from posed.bench import AVX2_LIMITS

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
SHARED = HERE.parent.parent / "shared"
MODEL_DIR = SHARED / "models" / "dlc3-openfield-resnet50"
DLC_PT = MODEL_DIR / "DLC_openfield_NetType.RESNET_50_iteration-0_shuffle-1_snapshot-1.pt"
VIDEO = SHARED / "data" / "dlc-examples" / "openfield-Pranav-2018-10-30" / "videos" / "m3v1mp4.mp4"
THREADS = 2
EVAL_FRAMES = 50
TIMED_FRAMES = 10


def held_out_frames(calibrated: list[int], n: int) -> tuple[list[int], np.ndarray]:
    """``n`` evenly spaced frames of the video that calibration did not use."""
    from posed.engines.video import VideoReader, probe_video

    total = probe_video(VIDEO).nframes
    used = set(calibrated)
    candidates = [i for i in range(total) if i not in used]
    wanted = [candidates[j] for j in np.linspace(0, len(candidates) - 1, n).round().astype(int)]
    with VideoReader(VIDEO, stop=max(wanted) + 1) as reader:
        frames = {i: f for i, f in reader if i in set(wanted)}
    return wanted, np.stack([frames[i] for i in wanted if i in frames])


def distances(poses: np.ndarray, reference: np.ndarray) -> dict[str, float | int | None]:
    """Median and max keypoint distance (px) on the parts the reference sees."""
    from posed.exporters.common import CONFIDENT, TOLERANCE

    seen = reference[..., 2] >= CONFIDENT
    dist = np.linalg.norm(poses[..., :2] - reference[..., :2], axis=-1)[seen]
    return {"visible_keypoints": int(seen.sum()),
            "visible_beyond_int8_tolerance": int((dist > TOLERANCE["int8"][0]).sum()),
            "median_px_visible": round(float(np.median(dist)), 4) if dist.size else None,
            "max_px_visible": round(float(dist.max()), 4) if dist.size else None,
            "max_likelihood_diff": round(float(np.abs(poses[..., 2] - reference[..., 2]).max()), 4)}


def isa_of(primitive: str) -> str:
    """The instruction set named in an OpenVINO primitive type (``brgconv_avx512_1x1_I8``)."""
    for isa in ("avx512", "avx2", "sse42", "amx"):
        if isa in primitive.lower():
            return isa
    return "none named"


def openvino_graph(compiled) -> dict:
    """Convolution precisions and the ISA of every compiled primitive (runtime graph)."""
    from posed.engines.openvino.backend import convolution_precisions

    isas: dict[str, int] = {}
    not_avx2: set[str] = set()
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        isa = isa_of(str(info["primitiveType"].astype(str)))
        isas[isa] = isas.get(isa, 0) + 1
        if isa in ("avx512", "amx"):
            not_avx2.add(f"{info['layerType'].astype(str)}:{info['primitiveType'].astype(str)}")
    return {"convolution_precisions": convolution_precisions(compiled),
            "primitive_isa": isas, "primitives_above_avx2": sorted(not_avx2)}


RUNTIMES = (("onnxruntime fp32", "fp32", {"engine": "onnx", "provider": "cpu"}),
            ("onnxruntime int8", "int8", {"engine": "onnx", "provider": "cpu"}),
            ("openvino int8", "int8", {"engine": "openvino"}),
            ("openvino fp32", "fp32", {"engine": "openvino"}),
            ("pytorch eager fp32", "bundle", {"device": "cpu"}))


def describe(name: str, runner, mode: str, frames: np.ndarray, reference) -> dict:
    """What a runtime ran (OpenVINO's graph, PyTorch's ISA) and, for the ONNX Runtime FP32
    and INT8 runs, the keypoints' distance from ONNX Runtime FP32 on ``frames``."""
    row: dict = {"runtime": name}
    if name.startswith("openvino"):
        row["graph"] = openvino_graph(runner.compiled)
    elif name.startswith("pytorch"):
        import torch

        row["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    else:
        row["isa_held_to_avx2"] = False if mode == "avx2" else None
    if "int8" in name or name == "onnxruntime fp32":
        poses = runner.predict(frames)
        row["vs_onnxruntime_fp32"] = distances(poses, poses if reference is None else reference)
        # Equal hashes across modes: the same kernels ran (the ISA setting was ignored).
        row["poses_sha256"] = hashlib.sha256(poses.tobytes()).hexdigest()[:16]
        row["_poses"] = poses
    return row


def interleaved(runners: dict, frames: np.ndarray, calls: int) -> dict[str, list[float]]:
    """Latency (ms) of single-frame calls, the runtimes taking turns call by call.

    Other work on the two cores comes and goes; taking turns exposes every runtime to the
    same share of it, so their ratios hold even when the absolute figures are disturbed.
    """
    for runner in runners.values():  # warm-up: first-call allocations and kernel choice
        runner.predict(frames[:1])
        runner.predict(frames[1:2])
    lat: dict[str, list[float]] = {name: [] for name in runners}
    for k in range(calls):
        frame = frames[k % len(frames)][None]
        for name, runner in runners.items():
            t0 = time.perf_counter()
            runner.predict(frame)
            lat[name].append((time.perf_counter() - t0) * 1000)
    return lat


def run_mode(mode: str, workdir: Path, calls: int) -> dict:
    """Time and compare every runtime in this process (the child of one mode)."""
    from posed.engines import api
    from posed.engines.bundle import load_bundle

    from posed.bench import percentiles

    calibrated = load_bundle(workdir / "int8").export["calibration"]["frame_indices"]
    indices, frames = held_out_frames(calibrated, EVAL_FRAMES)
    runners = {name: api.load_model(workdir / folder, threads=THREADS, **options)
               for name, folder, options in RUNTIMES}
    rows, reference = {}, None
    for name, runner in runners.items():
        rows[name] = describe(name, runner, mode, frames, reference)
        if reference is None:
            reference = rows[name].get("_poses")
    load = round(os.getloadavg()[0], 2)
    lat = interleaved(runners, frames[:TIMED_FRAMES], calls)
    base = float(np.median(lat["onnxruntime fp32"]))
    for name, runner in runners.items():
        runner.close()
        rows[name].pop("_poses", None)
        rows[name].update(calls=len(lat[name]), **percentiles(lat[name]),
                          speedup_vs_onnxruntime_fp32=round(base / np.median(lat[name]), 2))
        print(json.dumps({"mode": mode, "runtime": name, "p50_ms": rows[name]["p50_ms"]}),
              file=sys.stderr, flush=True)
    return {"mode": mode, "env": {k: os.environ.get(k) for k in AVX2_LIMITS},
            "load_average_1min_before_timing": load,
            "load_average_1min_after_timing": round(os.getloadavg()[0], 2),
            "eval_frames": indices, "rows": list(rows.values())}


def prepare(workdir: Path) -> dict:
    """Import the DeepLabCut model and export FP32 and static INT8 (``--calibration``).

    When posed's parity check refuses the INT8 export, the refusal is recorded and the same
    graph (the same quantiser on the same FP32 graph and frames) is built without the check,
    so that its speed and its distance from FP32 can still be measured.
    """
    from posed.engines import api
    from posed.engines.bundle import load_bundle
    from posed.exporters.dlc import import_dlc_pytorch

    from posed.errors import ExportMismatchError

    bundle = import_dlc_pytorch(DLC_PT, workdir / "bundle")
    api.export_model(bundle, "onnx", workdir / "fp32")
    try:
        api.export_model(bundle, "onnx", workdir / "int8", precision="int8",
                         calibration_from=VIDEO)
    except ExportMismatchError as exc:
        return {"int8_export": "refused by the parity check", "refusal": str(exc),
                "calibration": ungated_int8(workdir / "fp32", workdir / "int8")}
    export = load_bundle(workdir / "int8").export
    return {"int8_export": "passed the parity check", "calibration": export["calibration"],
            "export_parity": export["parity"]}


def ungated_int8(fp32_dir: Path, out: Path) -> dict:
    """The static INT8 graph ``posed export --int8 --calibration`` builds, without its check."""
    import dataclasses

    from posed.engines.bundle import load_bundle
    from posed.engines.calibration import read_calibration
    from posed.exporters.common import quantize_static_onnx

    fp32 = load_bundle(fp32_dir)  # its graph is already simplified, as export quantises it
    calib = read_calibration(VIDEO)
    out.mkdir()
    quantize_static_onnx(fp32.weights_path, out / "model.onnx", calib.frames)
    info = {**calib.info, "note": "built without the parity check, for measuring only"}
    new = dataclasses.replace(fp32, export={**fp32.export, "precision": "int8",
                                            "calibration": info, "parity": {}}, weights=[])
    new.save(out, ["model.onnx"])
    return info


def machine_name(info: dict) -> str:
    """``<vendor>-<best vector ISA>``, e.g. ``amd-avx512``: the result file's suffix."""
    cpu = str(info.get("cpu", "")).lower()
    vendor = "amd" if "amd" in cpu else "intel" if ("intel" in cpu or "xeon" in cpu) else "cpu"
    flags = info.get("cpu_flags", [])
    isa = "amx" if any(f.startswith("amx") for f in flags) else \
        "avx512" if "avx512f" in flags else "avx2" if "avx2" in flags else "sse"
    return f"{vendor}-{isa}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=15, help="timed calls per runtime and mode")
    ap.add_argument("--modes", nargs="+", choices=("native", "avx2"), default=["native", "avx2"])
    ap.add_argument("--child", nargs=2, metavar=("MODE", "DIR"), help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help="default: benchmarks/results/int8-<machine>.json")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(run_mode(args.child[0], Path(args.child[1]), args.calls)))
        return 0
    if not DLC_PT.is_file() or not VIDEO.is_file():
        print(f"error: {DLC_PT} or {VIDEO} is missing (see ../shared)", file=sys.stderr)
        return 2
    from _machine import machine_info
    from posed.engines.io import atomic_write_text

    machine = machine_info()
    for pkg in ("openvino", "onnx"):
        machine["versions"][pkg] = metadata.version(pkg)
    record = {"benchmark": "bench_int8", "machine": machine, "model": DLC_PT.name,
              "video": VIDEO.name, "size": [640, 480], "batch": 1, "threads": THREADS,
              "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    with tempfile.TemporaryDirectory() as tmp:
        record.update(prepare(Path(tmp)))
        record["modes"] = []
        for mode in args.modes:
            env = {**os.environ, **(AVX2_LIMITS if mode == "avx2" else {})}
            for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
                env[var] = str(THREADS)
            proc = subprocess.run([sys.executable, __file__, "--child", mode, tmp,
                                   "--calls", str(args.calls)],
                                  env=env, text=True,
                                  stdout=subprocess.PIPE, check=True)
            record["modes"].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    out = args.out or HERE / "results" / f"int8-{machine_name(machine)}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(record, indent=2) + "\n")
    print("| mode | runtime | p50 ms | p99 ms | vs ORT fp32 | median px | max px (visible) |")
    print("|---|---|---|---|---|---|---|")
    for m in record["modes"]:
        for r in m["rows"]:
            d = r.get("vs_onnxruntime_fp32", {})
            print(f"| {m['mode']} | {r['runtime']} | {r['p50_ms']} | {r['p99_ms']} | "
                  f"{r['speedup_vs_onnxruntime_fp32']}x | "
                  f"{d.get('median_px_visible', '–')} | {d.get('max_px_visible', '–')} |")
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
