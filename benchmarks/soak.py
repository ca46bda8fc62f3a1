"""Soak run of the daemon (not a test): memory, file descriptors and latency over time.

Starts ``posed serve`` as its own process on ``configs/demo.yaml`` (the bundled model on the
bundled clip, looping), with free ports instead of the demo's fixed ones and, by default,
``pace: fast`` so the pipeline runs at the full rate it can sustain. A subscriber in this
process reads every pose. Every few seconds the daemon's resident memory (VmRSS) and open file
descriptors (/proc/PID/fd) are sampled; per minute the pose rate and the capture-to-receive
latency percentiles are recorded. At the end the daemon is stopped with SIGTERM and its drop and
error counters are read from its metrics endpoint first.

    python benchmarks/soak.py                  # 10 minutes
    python benchmarks/soak.py --minutes 2 --pace native
    python benchmarks/soak.py --faults         # + a damaged and a truncated copy of the clip

With ``--faults`` two more looping cameras read copies of the clip re-encoded as all-intra
MJPEG: one with every 25th packet zeroed (those frames fail to decode), one cut at half its
bytes (its header promises more frames than it holds). For every message of every camera the
record checks that ``frame`` is the frame its ``pts`` says (``round(pts × fps)``), and reports
per camera the messages, the mismatches (0 expected) and the frame indices never published.

Writes ``benchmarks/results/soak.json`` (machine, settings, samples, per-minute figures and
a summary: RSS growth after warm-up, fd growth, p99 latency spread) and prints the figures.
The issue's targets are reported, not enforced: RSS growth < 5 % after warm-up, no fd growth,
a stable p99 (every minute after warm-up within 1.5x of the best minute).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_info  # noqa: E402

from posed.daemon.client import Subscriber  # noqa: E402
from posed.engines.io import atomic_write_text  # noqa: E402

HERE = Path(__file__).resolve().parent
DEMO_CONFIG = HERE.parent / "configs" / "demo.yaml"
SAMPLE_S = 5.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _sample(pid: int, t: float) -> dict:
    # The 1-minute load average says how much other work shared the CPUs at that moment.
    return {"t_s": round(t, 1), "rss_mb": round(_rss_mb(pid), 2), "fds": _fds(pid),
            "loadavg_1m": round(os.getloadavg()[0], 2)}


def _counters(url: str) -> dict[str, float]:
    """posed_* counters summed over their labels except ``reason`` and ``stage``."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if not sample.name.endswith("_total"):
                continue
            extra = {k: v for k, v in sample.labels.items() if k in ("reason", "stage")}
            key = sample.name + "".join(f"{{{k}={v}}}" for k, v in sorted(extra.items()))
            out[key] = out.get(key, 0.0) + sample.value
    return out


DAMAGE_EVERY = 25


def _fault_sources(folder: Path, clip: Path) -> dict[str, Path]:
    """All-intra MJPEG copies of ``clip``: one with every DAMAGE_EVERY-th packet zeroed (same
    size and timestamps, so exactly those frames are lost), one cut at half its bytes."""
    import av

    with av.open(str(clip)) as src:
        images = [f.to_ndarray(format="rgb24") for f in src.decode(video=0)]
        fps = int(round(src.streams.video[0].average_rate))
    out = {}
    for name, damaged in (("damaged", True), ("truncated", False)):
        path = folder / f"{name}.mp4"
        # The index in front (faststart): cut at half, the file still opens and its header
        # still promises every frame.
        with av.open(str(path), "w", options={"movflags": "+faststart"}) as dst:
            stream = dst.add_stream("mjpeg", rate=fps)
            stream.height, stream.width = images[0].shape[:2]
            stream.pix_fmt = "yuvj420p"
            packets = [p for img in images
                       for p in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24"))]
            packets += stream.encode()
            for i, packet in enumerate(packets):
                if damaged and i % DAMAGE_EVERY == DAMAGE_EVERY - 1:
                    bad = av.Packet(bytes(packet.size))
                    bad.pts, bad.dts, bad.time_base = packet.pts, packet.dts, packet.time_base
                    bad.stream = packet.stream
                    packet = bad
                dst.mux(packet)
        if not damaged:
            data = path.read_bytes()
            path.write_bytes(data[: len(data) // 2])
        out[name] = path
    return out


def _config(folder: Path, pace: str, faults: bool) -> tuple[Path, str, str]:
    cfg = yaml.safe_load(DEMO_CONFIG.read_text())
    base = DEMO_CONFIG.parent
    cfg["model"]["bundle"] = str((base / cfg["model"]["bundle"]).resolve())
    for cam in cfg["cameras"]:
        cam["source"] = str((base / cam["source"]).resolve())
    if faults:
        clip = Path(cfg["cameras"][0]["source"])
        cfg["cameras"] += [{"id": name, "source": str(path)}
                           for name, path in _fault_sources(folder, clip).items()]
    for cam in cfg["cameras"]:
        cam["pace"] = pace
        cam["loop"] = True
    endpoint = f"tcp://127.0.0.1:{_free_port()}"
    port = _free_port()
    cfg["publisher"]["endpoint"] = endpoint
    cfg["metrics"] = {"host": "127.0.0.1", "port": port}
    path = folder / "soak.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path, endpoint, f"http://127.0.0.1:{port}/metrics"


class FrameCheck:
    """Per camera: does every message's ``frame`` match its ``pts``, and which frame indices
    of a pass were never published (decode failures show up here)."""

    def __init__(self) -> None:
        self.cameras: dict[str, dict] = {}

    def add(self, msg) -> None:
        cam = self.cameras.setdefault(msg.camera, {"messages": 0, "mismatches": 0,
                                                   "first_mismatches": [], "seen": set()})
        cam["messages"] += 1
        fps = 30.0  # the demo clip's rate (every fault source is made at it too)
        if round(msg.pts * fps) != msg.frame:
            cam["mismatches"] += 1
            if len(cam["first_mismatches"]) < 5:
                cam["first_mismatches"].append([msg.frame, round(msg.pts, 4)])
        cam["seen"].add(msg.frame)

    def summary(self) -> dict:
        out = {}
        for camera, cam in self.cameras.items():
            seen = cam["seen"]
            never = sorted(set(range(max(seen) + 1)) - seen) if seen else []
            out[camera] = {"messages": cam["messages"], "frame_pts_mismatches": cam["mismatches"],
                           "first_mismatches": cam["first_mismatches"],
                           "frames_per_pass": max(seen) + 1 if seen else 0,
                           "frames_never_published": never[:40]}
        return out


def _minute_row(minute: int, latencies: list[float], seconds: float) -> dict:
    lat = np.asarray(latencies) if latencies else np.full(1, np.nan)
    return {"minute": minute, "poses": len(latencies),
            "poses_per_s": round(len(latencies) / seconds, 2),
            "latency_ms_p50": round(float(np.percentile(lat, 50)), 2),
            "latency_ms_p99": round(float(np.percentile(lat, 99)), 2),
            "latency_ms_max": round(float(lat.max()), 2)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="length of the run")
    ap.add_argument("--warmup-minutes", type=float, default=1.0,
                    help="RSS/fd growth is measured from the end of this")
    ap.add_argument("--pace", choices=["fast", "native"], default="fast",
                    help="fast: as fast as the pipeline goes; native: the clip's 30 frames/s")
    ap.add_argument("--faults", action="store_true",
                    help="add a camera on a damaged copy of the clip and one on a truncated copy")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "soak.json")
    args = ap.parse_args()
    if args.warmup_minutes >= args.minutes:
        ap.error("--warmup-minutes must be shorter than --minutes")

    with tempfile.TemporaryDirectory(prefix="posed-soak-") as tmp:
        cfg_path, endpoint, metrics_url = _config(Path(tmp), args.pace, args.faults)
        log_path = Path(tmp) / "daemon.log"
        with open(log_path, "w") as log:
            daemon = subprocess.Popen(
                [sys.executable, "-m", "posed.cli", "serve", "--config", str(cfg_path)],
                stderr=log, stdout=subprocess.DEVNULL)
        samples: list[dict] = []
        minutes: list[dict] = []
        counters: dict[str, float] = {}
        code = None
        try:
            with Subscriber(endpoint, rcvhwm=100_000) as sub:
                if not sub.wait_for_meta(120):
                    raise SystemExit(f"daemon did not start: {log_path.read_text()[-2000:]}")
                t0 = time.monotonic()
                end = t0 + args.minutes * 60
                next_sample = t0
                minute_start, latencies, seqs = t0, [], []
                frames = FrameCheck()
                received = 0
                while time.monotonic() < end:
                    if daemon.poll() is not None:
                        raise SystemExit(f"daemon exited ({daemon.returncode}): "
                                         f"{log_path.read_text()[-2000:]}")
                    now = time.monotonic()
                    if now >= next_sample:
                        samples.append(_sample(daemon.pid, now - t0))
                        next_sample += SAMPLE_S
                    if now - minute_start >= 60:
                        minutes.append(_minute_row(len(minutes) + 1, latencies,
                                                   now - minute_start))
                        print(json.dumps({**minutes[-1], **samples[-1]}), flush=True)
                        minute_start, latencies = now, []
                    msg = sub.recv(0.2)
                    if msg is not None:
                        received += 1
                        frames.add(msg)
                        if msg.camera == "cam0":
                            seqs.append(msg.seq)
                        latencies.append((msg.receive_ns - msg.capture_ns) / 1e6)
                if latencies and time.monotonic() - minute_start >= 10:
                    minutes.append(_minute_row(len(minutes) + 1, latencies,
                                               time.monotonic() - minute_start))
                    print(json.dumps(minutes[-1]), flush=True)
                samples.append(_sample(daemon.pid, time.monotonic() - t0))
                counters = _counters(metrics_url)
            daemon.send_signal(signal.SIGTERM)
            code = daemon.wait(timeout=30)
        finally:
            if daemon.poll() is None:
                daemon.kill()
                daemon.wait()
        log_tail = log_path.read_text()[-1500:]

    warm = [s for s in samples if s["t_s"] >= args.warmup_minutes * 60]
    rss_growth = 100 * (warm[-1]["rss_mb"] - warm[0]["rss_mb"]) / warm[0]["rss_mb"]
    fd_growth = warm[-1]["fds"] - warm[0]["fds"]
    p99 = [m["latency_ms_p99"] for m in minutes]
    # Stable p99: after warm-up, no minute's p99 more than 1.5x the best minute's.
    p99_warm = [m["latency_ms_p99"] for m in minutes if m["minute"] > args.warmup_minutes] or p99
    gaps = int(np.count_nonzero(np.diff(seqs) != 1)) if len(seqs) > 1 else 0
    summary = {
        "minutes": args.minutes, "poses_received": received,
        "poses_per_s": round(received / (args.minutes * 60), 2),
        "seq_gaps_seen": gaps,
        "frame_index_vs_pts": frames.summary(),
        "rss_mb_after_warmup": warm[0]["rss_mb"], "rss_mb_end": warm[-1]["rss_mb"],
        "rss_mb_max": max(s["rss_mb"] for s in warm),
        "rss_growth_pct_after_warmup": round(rss_growth, 2),
        "fds_after_warmup": warm[0]["fds"], "fds_max": max(s["fds"] for s in warm),
        "fd_growth_after_warmup": fd_growth,
        "latency_ms_p99_min": min(p99), "latency_ms_p99_max": max(p99),
        "loadavg_1m_mean": round(float(np.mean([s["loadavg_1m"] for s in samples])), 2),
        "cpus": os.cpu_count(),
        "sigterm_exit_code": code,
        "latency_ms_p99_spread_after_warmup": round(max(p99_warm) / min(p99_warm), 2),
        "targets": {"rss_growth_under_5pct": rss_growth < 5.0, "no_fd_growth": fd_growth <= 0,
                    "p99_within_1_5x_after_warmup": max(p99_warm) <= 1.5 * min(p99_warm)},
    }
    result = {
        "benchmark": "soak",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "settings": {"config": "configs/demo.yaml", "pace": args.pace, "loop": True,
                     "faults": ({"damaged": f"every {DAMAGE_EVERY}th packet zeroed (MJPEG)",
                                 "truncated": "MJPEG copy cut at half its bytes"}
                                if args.faults else None),
                     "minutes": args.minutes, "warmup_minutes": args.warmup_minutes,
                     "sample_s": SAMPLE_S, "subscriber": "posed.daemon.client.Subscriber, "
                     "same host, reads every message"},
        "summary": summary,
        "counters_at_end": counters,
        "per_minute": minutes,
        "samples": samples,
        "daemon_log_tail": log_tail,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
