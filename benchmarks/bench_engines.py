"""Benchmark: training seconds per epoch and inference frames/s, PyTorch vs TensorFlow (not a test).

Both engines train the same model family (default MobileNetV2-0.35, output stride 8) on the
same synthetic project with the same settings. Each trained model is then exported to every
format its engine writes (PyTorch: TorchScript; TensorFlow: SavedModel; both: ONNX FP32,
static INT8 calibrated on the project and dynamic INT8) and every runtime runs through the common runner
interface on the same frames and input size. The first epoch (graph tracing, allocator
warm-up) is reported apart from the steady-state mean. Writes JSON (machine, versions,
settings, figures) to ``benchmarks/results/bench_engines.json`` and prints Markdown tables.

    python benchmarks/bench_engines.py
    python benchmarks/bench_engines.py --epochs 4 --size 320x240 --batch 1 8 --engines tf
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_info  # noqa: E402
from posed.bench import measure  # noqa: E402

from posed.engines import api  # noqa: E402
from posed.engines.io import atomic_write_text  # noqa: E402
from posed.engines.project import load_project  # noqa: E402
from posed.engines.synth import generate_project  # noqa: E402

HERE = Path(__file__).resolve().parent


def _size(text: str) -> tuple[int, int]:
    w, h = text.lower().split("x")
    return int(w), int(h)


# (runtime label, export format, export options, load options) per engine; "native" is the
# trained snapshot itself.
EXPORTS = {
    "pytorch": [("torchscript", "torchscript", {}, {"device": "cpu"}),
                ("onnx-fp32", "onnx", {}, {"provider": "cpu"}),
                ("onnx-int8-static", "onnx", {"precision": "int8"}, {"provider": "cpu"}),
                ("onnx-int8-dynamic", "onnx", {"precision": "int8-dynamic"}, {"provider": "cpu"})],
    "tensorflow": [("savedmodel", "savedmodel", {}, {}),
                   ("onnx-fp32", "onnx", {}, {"provider": "cpu"}),
                   ("onnx-int8-static", "onnx", {"precision": "int8"}, {"provider": "cpu"}),
                   ("onnx-int8-dynamic", "onnx", {"precision": "int8-dynamic"}, {"provider": "cpu"})],
}


def bench_exports(engine: str, project_dir: Path, out: Path, frames: np.ndarray, batches: list[int],
                  seconds: float) -> list[dict]:
    """Export the trained model to each format of ``engine`` and time every runtime.

    Exports start from the project, so parity is checked on its test images and static INT8
    is calibrated on its training images."""
    rows = []
    for label, fmt, export_opts, load_opts in EXPORTS.get(engine, []):
        try:
            bundle = api.export_model(project_dir, fmt, out / f"{engine}-{label}", engine,
                                         **export_opts)
        except Exception as exc:  # an exporter extra may be missing: report it, keep going
            rows.append({"runtime": label, "error": str(exc).splitlines()[0]})
            continue
        runner = api.load_model(bundle, **load_opts)
        rows.append({"runtime": label, "inference": [measure(runner, frames, b, seconds) for b in batches]})
        runner.close()
    return rows


def bench_engine(engine: str, project_dir: Path, settings: dict, frames: np.ndarray,
                 batches: list[int], seconds: float, threads: int | None, exports: bool) -> dict:
    """Train ``settings`` with ``engine``, time its epochs, then its native and exported runtimes."""
    project = load_project(project_dir)
    t0 = time.perf_counter()
    folder = api.train_network(project, 1, engine, dict(settings), progress=False)
    total = time.perf_counter() - t0
    with open(folder / "learning_stats.csv") as fh:
        rows = list(csv.DictReader(fh))
    epoch_s = [float(r["seconds"]) for r in rows]
    last_err = next((float(r["test_error_px"]) for r in reversed(rows) if r["test_error_px"]), None)
    options = {"device": "cpu"} | ({"threads": threads} if threads else {})
    runner = api.load_model(folder, engine, **options)
    infer = [measure(runner, frames, b, seconds) for b in batches]
    runner.close()
    runtimes = [{"runtime": "native", "inference": infer}]
    if exports:
        runtimes += bench_exports(engine, project_dir, project_dir.parent / "exports", frames, batches,
                                  seconds)
    return {"engine": engine, "train_total_s": round(total, 2),
            "first_epoch_s": epoch_s[0],
            "epoch_s_mean": round(float(np.mean(epoch_s[1:] or epoch_s)), 3),
            "epoch_s_all": epoch_s, "test_error_px": last_err, "inference": infer,
            "runtimes": runtimes}


def main() -> int:
    from posed.engines.memory import keep_freed_memory

    keep_freed_memory()  # as the posed command does
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engines", nargs="+", default=["pytorch", "tensorflow"])
    ap.add_argument("--net", default="mobilenet_v2_0.35")
    ap.add_argument("--output-stride", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=3, help="training epochs per engine")
    ap.add_argument("--frames", type=int, default=150, help="labelled synthetic frames")
    ap.add_argument("--train-size", type=_size, default=(128, 128), help="synthetic image WxH")
    ap.add_argument("--size", type=_size, default=(320, 240), help="inference frame WxH")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--seconds", type=float, default=5.0, help="inference time per batch size")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-exports", dest="exports", action="store_false",
                    help="time only the native runners, not the exported formats")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "bench_engines.json")
    args = ap.parse_args()

    settings = {"net": args.net, "output_stride": args.output_stride, "lr": 3e-3,
                "epochs": args.epochs, "batch_size": 8, "save_every": args.epochs}
    w, h = args.size
    frames = np.random.default_rng(0).integers(0, 255, (32, h, w, 3), dtype=np.uint8)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "proj"
        generate_project(base, frames=args.frames, size=args.train_size, seed=0, video_frames=0)
        for engine in args.engines:
            if not api.engine_available(engine):
                results.append({"engine": engine, "skipped": "not installed"})
                continue
            row = bench_engine(engine, base, settings, frames, args.batch, args.seconds, args.threads,
                               args.exports)
            results.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "epoch_s_all"}), flush=True)
    versions = {}
    for pkg in ("tensorflow", "tensorflow-cpu", "keras"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    record = {
        "benchmark": "bench_engines", "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(), "versions_extra": versions, "settings": settings,
        "train_images": {"count": args.frames, "width": args.train_size[0], "height": args.train_size[1]},
        "inference_input": {"width": w, "height": h}, "threads": args.threads, "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(record, indent=2) + "\n")
    print("\n| engine | first epoch s | epoch s | " + " | ".join(f"fps b{b}" for b in args.batch) + " |")
    print("|---|---|---|" + "---|" * len(args.batch))
    for r in results:
        if "skipped" in r:
            print(f"| {r['engine']} | skipped: {r['skipped']} |")
            continue
        fps = " | ".join(str(i["frames_per_s"]) for i in r["inference"])
        print(f"| {r['engine']} | {r['first_epoch_s']} | {r['epoch_s_mean']} | {fps} |")
    print("\n| engine | runtime | " + " | ".join(f"fps b{b} | p50 ms b{b}" for b in args.batch) + " |")
    print("|---|---|" + "---|---|" * len(args.batch))
    for r in results:
        for rt in r.get("runtimes", []):
            if "error" in rt:
                print(f"| {r['engine']} | {rt['runtime']} | error: {rt['error']} |")
                continue
            cells = " | ".join(f"{i['frames_per_s']} | {i['p50_ms']}" for i in rt["inference"])
            print(f"| {r['engine']} | {rt['runtime']} | {cells} |")
    print(f"\nwritten {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
