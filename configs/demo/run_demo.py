"""`make demo`: start the daemon on the bundled clip, show poses arriving, then stop it.

Runs ``posed serve --config configs/demo.yaml`` as a child process, waits until its metrics
say it is ready, subscribes with the same client ``posed listen`` uses and prints the poses
of about three seconds of video, shows a few metrics, and stops the daemon with SIGTERM as
systemd would. To keep it running instead: ``posed serve --config configs/demo.yaml`` and
``posed listen`` in a second terminal.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
CONFIG = HERE.parent / "demo.yaml"
METRICS = "http://127.0.0.1:9108/metrics"


def _metrics() -> str | None:
    try:
        with urllib.request.urlopen(METRICS, timeout=1) as resp:
            return resp.read().decode()
    except OSError:
        return None


def main() -> int:
    from posed.daemon.listening import listen

    print(f"$ posed serve --config {CONFIG.relative_to(Path.cwd()) if CONFIG.is_relative_to(Path.cwd()) else CONFIG}")
    daemon = subprocess.Popen([sys.executable, "-m", "posed.cli", "serve", "--config",
                               str(CONFIG)])
    try:
        deadline = time.monotonic() + 120
        while True:
            text = _metrics()
            if text and "\nposed_ready 1.0" in text:
                break
            if daemon.poll() is not None:
                print(f"error: the daemon exited with status {daemon.returncode}", file=sys.stderr)
                return 1
            if time.monotonic() > deadline:
                print("error: the daemon did not become ready in 120 s", file=sys.stderr)
                return 1
            time.sleep(0.2)
        print("\n$ posed listen --count 90      # poses arriving over ZeroMQ")
        n = listen("tcp://127.0.0.1:5555", count=90, timeout_s=30)
        print(f"{n} poses received")
        text = _metrics() or ""
        print(f"\n$ curl {METRICS}      # a few of the Prometheus metrics")
        for line in text.splitlines():
            if line.startswith(("posed_frames_captured_total", "posed_frames_published_total",
                                "posed_frames_dropped_total", "posed_end_to_end_seconds_count",
                                "posed_end_to_end_seconds_sum", "posed_build_info")):
                print(line)
        return 0 if n else 1
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            code = daemon.wait(timeout=10)
            print(f"\ndaemon stopped (exit status {code})")
        except subprocess.TimeoutExpired:
            daemon.kill()
            print("\ndaemon did not stop in 10 s; killed", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
