"""The engine-side cases: every runtime's speed, video decoding, start-up cost and GFLOP/s.

Each case is ``case(opts) -> dict`` of figures; its docstring's first line describes it in
``posed bench --list``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from posed.bench.assets import BenchOptions, demo_clip, frames, model_of
from posed.bench.stats import measure


def _runtimes(model: Path, tmp: Path) -> list[tuple[str, Path, dict[str, Any]]]:
    """(name, bundle, load options) of every CPU runtime for one PyTorch bundle."""
    from posed.engines import api
    from posed.engines.bundle import load_bundle

    rows: list[tuple[str, Path, dict[str, Any]]] = [("pytorch-eager", model, {"device": "cpu"})]
    rows.append(("torchscript", api.export_model(model, "torchscript", tmp / "ts"), {"device": "cpu"}))
    onnx = api.export_model(model, "onnx", tmp / "onnx")
    rows.append(("onnx-fp32", onnx, {"provider": "cpu"}))
    if api.engine_available("openvino"):
        rows.append(("openvino-fp32", onnx, {"engine": "openvino"}))
    try:
        # Dynamic INT8 needs no calibration set, so it works for any bundle; static INT8
        # (calibrated on the project) is timed by benchmarks/bench_runtimes.py.
        rows.append(("onnx-int8-dynamic", api.export_model(model, "onnx", tmp / "int8",
                                                              precision="int8-dynamic"),
                      {"provider": "cpu"}))
    except Exception as exc:  # quantisation needs the export extra; report, don't stop
        rows.append(("onnx-int8-dynamic", Path(), {"error": str(exc).splitlines()[0]}))
    if api.engine_available("tensorflow") and load_bundle(model).engine == "tensorflow":
        rows.append(("tensorflow", model, {}))
    return rows


def _models(opts: BenchOptions, tmp: Path) -> list[tuple[str, Path]]:
    """(label, bundle): the model, then a randomly initialised bundle per ``opts.nets``."""
    from posed.engines.registry import capability

    models = [("model", model_of(opts))]
    for net in opts.nets:
        capability("pytorch", "random_bundle")(net, tmp / f"net-{net}")
        models.append((net, tmp / f"net-{net}"))
    return models


def case_engine(opts: BenchOptions) -> dict[str, Any]:
    """Every CPU runtime (eager, TorchScript, ONNX Runtime FP32/INT8, OpenVINO FP32) per model
    and batch, same frames."""
    from posed.engines import api

    images = frames(opts.size, 32)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, model in _models(opts, Path(tmp)):
            for name, path, extra in _runtimes(model, Path(tmp) / f"x-{label}"):
                if "error" in extra:
                    rows.append({"model": label, "runtime": name, "error": extra["error"]})
                    continue
                runner = api.load_model(path, **extra)
                try:
                    for batch in opts.batches:
                        rows.append({"model": label, "runtime": name,
                                     **measure(runner, images, batch, opts.seconds)})
                finally:
                    runner.close()
    return {"rows": rows}


def case_decode(opts: BenchOptions) -> dict[str, Any]:
    """PyAV decode frames/s of the bundled clip, codec threads on and off."""
    from posed.engines.video import VideoReader

    clip = demo_clip()
    rows = []
    for threads in (True, False):
        n = 0
        passes = 0
        start = time.perf_counter()
        while (time.perf_counter() - start < opts.seconds or passes == 0) and passes < 1000:
            with VideoReader(clip, threads=threads) as reader:
                for _ in reader:
                    n += 1
            passes += 1
        total = time.perf_counter() - start
        rows.append({"threads": threads, "frames": n, "passes": passes,
                     "frames_per_s": round(n / total, 1)})
    return {"clip": clip.name, "rows": rows}


_RESOURCE_SCRIPT = r"""
import json, resource, sys, time
t_proc = time.perf_counter()
from posed.bench.service import daemon_config, QuietNotifier
from posed.daemon.service import Service
cfg = daemon_config(sys.argv[1], sys.argv[3], engine=sys.argv[2], pace="native")
t0 = time.perf_counter()
service = Service(cfg, notifier=QuietNotifier())
try:
    service.start()
    ready = time.perf_counter()
finally:
    service.stop()
# Linux keeps ru_maxrss across execve (it would show the parent's peak); VmHWM is per image.
hwm = next((int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")), None)
print(json.dumps({"ready_s": round(ready - t0, 3), "ready_s_with_imports": round(ready - t_proc, 3),
                  "peak_rss_mb": round((hwm or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
                                       / 1024, 1),
                  "torch_imported": "torch" in sys.modules}))
"""


def case_resources(opts: BenchOptions) -> dict[str, Any]:
    """Start-up time to READY and peak RSS of a daemon, one fresh process per engine."""
    from posed.engines import api

    model = model_of(opts)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = api.export_model(model, "onnx", Path(tmp) / "onnx")
        engines = [("pytorch", model), ("onnx", onnx_path)]
        if api.engine_available("openvino"):
            engines.append(("openvino", onnx_path))
        for engine, path in engines:
            proc = subprocess.run([sys.executable, "-c", _RESOURCE_SCRIPT, str(path), engine,
                                   str(demo_clip())], capture_output=True, text=True, timeout=120)
            if proc.returncode != 0:
                tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
                rows.append({"engine": engine, "error": tail})
                continue
            rows.append({"engine": engine, **json.loads(proc.stdout.strip().splitlines()[-1])})
    return {"rows": rows}


def _matmul_peaks(seconds: float, n: int) -> dict[str, float]:
    """GFLOP/s of an n×n float32 matmul with numpy and with torch."""
    from posed.engines.registry import capability

    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    peaks = {}
    for name, mm in (("numpy", lambda: np.matmul(a, a)),
                     ("torch", capability("pytorch", "matmul_call")(a))):
        mm()
        calls = 0
        start = time.perf_counter()
        while (time.perf_counter() - start < seconds / 2 or calls < 3) and calls < 100000:
            mm()
            calls += 1
        peaks[name] = round(2 * n**3 * calls / (time.perf_counter() - start) / 1e9, 2)
    return peaks


def _achieved(opts: BenchOptions, label: str, model: Path, tmp: Path,
              peak: float) -> list[dict[str, Any]]:
    """One model's GFLOP per frame and GFLOP/s in eager PyTorch and ONNX Runtime."""
    from posed.engines import api
    from posed.engines.registry import capability

    images = frames(opts.size, 16)
    rows = []
    # The same graph on both runtimes, so one FLOP count serves both.
    for runtime, path, options in (
            ("pytorch-eager", model, {"device": "cpu"}),
            ("onnx-fp32", api.export_model(model, "onnx", tmp / f"{label}-onnx"),
             {"provider": "cpu"})):
        runner = api.load_model(path, **options)
        try:
            if runtime == "pytorch-eager":
                gflop = capability("pytorch", "count_flops")(runner, opts.size)
            raw = measure(runner, images, 1, opts.seconds)
        finally:
            runner.close()
        achieved = gflop * raw["frames_per_s"]
        rows.append({"model": label, "runtime": runtime, "gflop_per_frame": round(gflop, 3),
                     "frames_per_s": raw["frames_per_s"], "gflops": round(achieved, 2),
                     "fraction_of_peak": round(achieved / peak, 4) if peak else None})
    return rows


def case_matmul(opts: BenchOptions) -> dict[str, Any]:
    """Matmul GFLOP/s (numpy, torch) as peak; the model's achieved GFLOP/s as a fraction."""
    n = 1024
    peaks = _matmul_peaks(opts.seconds, n)
    models = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, model in _models(opts, Path(tmp)):
            models += _achieved(opts, label, model, Path(tmp), max(peaks.values()))
    first = models[0]
    return {"matmul_n": n, "matmul_gflops": peaks, "model_gflop_per_frame": first["gflop_per_frame"],
            "model_frames_per_s": first["frames_per_s"], "model_gflops": first["gflops"],
            "fraction_of_peak": first["fraction_of_peak"], "models": models}


def case_families(opts: BenchOptions) -> dict[str, Any]:
    """DeepLabCut 3 families posed imports (random weights): eager, TorchScript and ONNX
    frames/s and latency at batch 1, multi-animal ones with DeepLabCut's assembly, top-down
    ones (detector + pose model on every box's crop) with the crop batch size."""
    from posed.engines import api
    from posed.engines.registry import capability
    from posed.errors import ExportMismatchError

    images = frames(opts.size, 8)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for family in [*capability("pytorch", "DLC_FAMILIES"),
                       *capability("pytorch", "TOP_DOWN_FAMILIES")]:
            work = Path(tmp) / family
            export = capability("pytorch", "random_dlc_export")(family, work / "export.pt",
                                                                 frames=images[:2])
            bundle = api.import_dlc(export, work / "bundle")
            runtimes = [("pytorch-eager", bundle, {"device": "cpu"}),
                        ("torchscript", "torchscript", {"device": "cpu"}),
                        ("onnx-fp32", "onnx", {"provider": "cpu"})]
            for name, path, extra in runtimes:
                if isinstance(path, str):
                    try:
                        path = api.export_model(bundle, path, work / path)
                    except ExportMismatchError as exc:
                        # e.g. torchvision's untrained Faster R-CNN: its box scores tie, and
                        # which tied boxes a runtime keeps is chance; recorded, not timed
                        rows.append({"family": family, "runtime": name,
                                     "export_refused": str(exc).split(": ", 1)[-1][:300]})
                        continue
                runner = api.load_model(path, **extra)
                try:
                    multi = bool(getattr(runner, "multianimal", False))
                    row = {"family": family, "runtime": name, "multianimal": multi,
                           "stride": runner.bundle.stride}
                    if hasattr(runner, "crop_batch"):
                        row["crop_batch"] = runner.crop_batch
                    if multi:  # the assembly's load: it grows with the candidates' square
                        found = runner.predict_animals(images)
                        row["animals_per_frame"] = round(float(
                            np.isfinite(found.animals[..., 0]).any(axis=-1).sum()) / len(images), 2)
                    rows.append({**row, **measure(runner, images, 1, opts.seconds)})
                finally:
                    runner.close()
    return {"rows": rows}
