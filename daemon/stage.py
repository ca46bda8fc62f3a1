"""The thread plumbing shared by the pipeline's stages (capture, inference)."""

from __future__ import annotations

import threading
from typing import Any


class StageThread:
    """A stage whose :meth:`_run` runs in its own daemon thread until ``stop`` is set.

    Daemon threads: a stage blocked in a driver or FFmpeg call never holds up process exit.

    Args:
        name: The thread's name (shown in tracebacks and ``py-spy``).
        stop: The event that ends the stage.
        metrics: Optional :class:`~posed.daemon.metrics.Metrics` the stage counts into.
    """

    def __init__(self, name: str, stop: threading.Event, metrics: Any = None) -> None:
        self.stop = stop
        self.metrics = metrics
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the thread to end."""
        self._thread.join(timeout)

    def is_alive(self) -> bool:
        """True while the thread runs."""
        return self._thread.is_alive()
