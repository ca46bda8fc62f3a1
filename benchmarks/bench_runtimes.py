"""Benchmark: one model on every runtime posed has (not a test).

Exports one PyTorch bundle to TorchScript, ONNX FP32 and ONNX INT8 (static, calibrated on
the benchmark frames), then runs each runner through the common interface on the same
frames and records frames/s and per-batch latency percentiles, plus the keypoint difference
to native PyTorch. Writes JSON (machine, versions, settings, figures) to
``benchmarks/results/`` and prints a Markdown table.

    python benchmarks/bench_runtimes.py                       # bundled demo model, 640x480
    python benchmarks/bench_runtimes.py --net resnet_50 --size 320x240 --batch 1 8

With ``--net`` the model has random weights (speed does not depend on them).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_info  # noqa: E402

from posed.bench import measure  # noqa: E402

from posed.engines import api  # noqa: E402
from posed.engines.bundle import load_bundle  # noqa: E402
from posed.engines.io import atomic_write_text  # noqa: E402
from posed.engines.pytorch.backend import random_bundle  # noqa: E402

HERE = Path(__file__).resolve().parent
DEMO = HERE.parent / "configs" / "demo" / "model"


def _clip_frames(n: int) -> np.ndarray:
    """The first ``n`` frames of the demo clip (what the demo model was trained for)."""
    from posed.engines.video import VideoReader

    with VideoReader(DEMO.parent / "clip.mp4") as reader:
        return next(iter(reader.batches(n)))[1]


def main() -> int:
    from posed.engines.memory import keep_freed_memory

    keep_freed_memory()  # as the posed command does
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--net", help="random-weights model of this net instead of the demo model")
    ap.add_argument("--size", default="640x480", help="frame WIDTHxHEIGHT")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--seconds", type=float, default=5.0, help="measuring time per case")
    ap.add_argument("--threads", type=int, help="intra-op threads for every runtime")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "bench_runtimes.json")
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (max(args.batch) * 4, h, w, 3), dtype=np.uint8)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        bundle = random_bundle(args.net, tmp / "native") if args.net else load_bundle(DEMO)
        exports = {
            "pytorch-eager": bundle.path,
            "torchscript": api.export_model(bundle, "torchscript", tmp / "ts"),
            "onnx-fp32": api.export_model(bundle, "onnx", tmp / "onnx"),
            "onnx-int8": api.export_model(bundle, "onnx", tmp / "int8", precision="int8",
                                             calibration=frames[:16], check_frames=frames[:4]),
        }
        opts = {"threads": args.threads} if args.threads else {}
        native = api.load_model(bundle.path, device="cpu", **opts)
        # Agreement is measured on frames the model was trained for (the demo clip): on noise
        # the score maps are flat and their argmax says nothing about the runtime.
        check = None if args.net else _clip_frames(32)
        reference = native.predict(check) if check is not None else None
        for name, path in exports.items():
            extra = {"provider": "cpu"} if name.startswith("onnx") else {"device": "cpu"}
            runner = native if name == "pytorch-eager" else api.load_model(path, **extra, **opts)
            diff = None
            if reference is not None:
                got = runner.predict(check)
                seen = reference[..., 2] >= 0.5
                dist = np.linalg.norm(got[..., :2] - reference[..., :2], axis=-1)[seen]
                diff = round(float(dist.max()), 4) if dist.size else None
            for batch in args.batch:
                row = {"runtime": name, **measure(runner, frames, batch, args.seconds),
                       "max_px_vs_pytorch": diff}
                results.append(row)
                print(json.dumps(row), flush=True)
        results.append({"runtime": "tensorflow", "skipped": "a Keras model is trained, not converted: "
                        "see benchmarks/bench_engines.py"})
    record = {
        "benchmark": "bench_runtimes",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "model": {"net": bundle.architecture.get("net"), "weights": "random" if args.net else "demo",
                  "output_stride": bundle.architecture.get("output_stride"),
                  "keypoints": len(bundle.bodyparts)},
        "input": {"width": w, "height": h}, "threads": args.threads, "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(record, indent=2) + "\n")
    print("\n| runtime | batch | frames/s | p50 ms | p95 ms | p99 ms | max px vs PyTorch "
          "(visible keypoints, demo clip) |\n"
          "|---|---|---|---|---|---|---|")
    for r in results:
        if "skipped" in r:
            print(f"| {r['runtime']} | – | – | – | – | – | {r['skipped']} |")
        else:
            print(f"| {r['runtime']} | {r['batch']} | {r['frames_per_s']} | {r['p50_ms']} | "
                  f"{r['p95_ms']} | {r['p99_ms']} | {r['max_px_vs_pytorch']} |")
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
