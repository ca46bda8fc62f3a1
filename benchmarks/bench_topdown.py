"""Benchmark: where a top-down frame's time goes, per runtime, and what ``detect_every`` saves.

For each top-down family of ``posed bench --case families`` (random-weight DeepLabCut exports,
imported by posed): the detector alone on one frame, the pose model alone on the crops of
that frame's boxes (one batch), and the whole frame with the detector on every 1st, 2nd and
5th frame of one stream (``detect_every``; boxes reused in between), on eager PyTorch,
TorchScript and ONNX Runtime. Writes JSON (machine, versions, figures) and prints a table.

    python benchmarks/bench_topdown.py --size 640x480 --seconds 3
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_info  # noqa: E402

from posed.bench.assets import frames as demo_frames  # noqa: E402
from posed.bench.stats import percentiles, time_calls  # noqa: E402
from posed.engines import api  # noqa: E402
from posed.engines.io import atomic_write_text  # noqa: E402
from posed.engines.registry import capability  # noqa: E402
from posed.engines.topdown import crop_box  # noqa: E402

HERE = Path(__file__).resolve().parent
DETECT_EVERY = (1, 2, 5)


def timed(call: Callable[[int], Any], seconds: float) -> dict[str, Any]:
    """``call(i)`` for i = 0, 1, ... until ``seconds`` pass (at least 10 calls, after 2 warm-up
    calls): calls per second and latency percentiles."""
    call(0)
    call(1)
    start = time.perf_counter()
    lat = time_calls(call, seconds, min_calls=10)
    return {"per_s": round(len(lat) / (time.perf_counter() - start), 2), **percentiles(lat)}


def breakdown(runner: Any, images: np.ndarray, seconds: float) -> dict[str, Any]:
    """The detector, the pose model and whole frames at each ``detect_every`` for one runner."""
    one = [images[i:i + 1] for i in range(len(images))]
    boxes, _ = runner.detect(one[0])[0]
    crop = runner.crop
    crops = np.stack([crop_box(images[0], b, crop["width"], crop["height"], crop["margin"])[0]
                      for b in boxes])
    row = {"boxes": len(boxes), "crop": [crop["width"], crop["height"]],
           "detector": timed(lambda i: runner.detect(one[i % len(one)]), seconds),
           "pose_on_crops": timed(lambda i: runner.pose_crops(crops), seconds)}
    for every in DETECT_EVERY:
        runner.detect_every = every
        runner._boxes.clear()
        row[f"frame_detect_every_{every}"] = timed(
            lambda i: runner.predict_animals(one[i % len(one)], streams=["cam0"]), seconds)
    runner.detect_every = 1
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", default="640x480")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--families", nargs="*", help="default: every top-down family")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "topdown_breakdown.json")
    args = ap.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    images = demo_frames(size, 8)
    families = args.families or list(capability("pytorch", "TOP_DOWN_FAMILIES"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for family in families:
            work = Path(tmp) / family
            export = capability("pytorch", "random_dlc_export")(family, work / "export.pt")
            bundle = api.import_dlc(export, work / "bundle")
            for name, fmt, extra in (("pytorch-eager", None, {"device": "cpu"}),
                                     ("torchscript", "torchscript", {"device": "cpu"}),
                                     ("onnx-fp32", "onnx", {"provider": "cpu"})):
                path = api.export_model(bundle, fmt, work / fmt) if fmt else bundle
                runner = api.load_model(path, **extra)
                try:
                    rows.append({"family": family, "runtime": name,
                                 **breakdown(runner, images, args.seconds)})
                finally:
                    runner.close()
                print(f"{family} {name}: detector p50 {rows[-1]['detector']['p50_ms']} ms, "
                      f"pose p50 {rows[-1]['pose_on_crops']['p50_ms']} ms", flush=True)
    record = {"benchmark": "bench_topdown",
              "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "machine": machine_info(), "size": list(size), "seconds": args.seconds,
              "weights": "random (posed bench's DeepLabCut exports)", "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(record, indent=2) + "\n")
    head = " | ".join(f"every {e}: frames/s" for e in DETECT_EVERY)
    print(f"\n| family | runtime | boxes | detector p50 ms | pose on crops p50 ms | {head} |")
    print("|---" * (5 + len(DETECT_EVERY)) + "|")
    for r in rows:
        every = " | ".join(str(r[f"frame_detect_every_{e}"]["per_s"]) for e in DETECT_EVERY)
        print(f"| {r['family']} | {r['runtime']} | {r['boxes']} | {r['detector']['p50_ms']} | "
              f"{r['pose_on_crops']['p50_ms']} | {every} |")
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
