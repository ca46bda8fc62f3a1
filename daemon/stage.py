"""The thread plumbing shared by the pipeline's stages (capture, inference, post)."""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable

log = logging.getLogger("posed.daemon")


class StageThread:
    """A stage whose :meth:`_run` (or ``target``) runs in its own thread until ``stop`` is set.

    An exception that escapes the stage does not vanish with the thread: it is kept in
    :attr:`crashed` (traceback logged at debug level), which the service checks to make a
    dead stage fatal.

    Args:
        name: The thread's name (shown in tracebacks and ``py-spy``).
        stop: The event that ends the stage.
        metrics: Optional :class:`~posed.daemon.metrics.Metrics` the stage counts into.
        daemon: Capture threads are daemon threads, so that a read blocked inside FFmpeg never
            holds up exit; a thread that runs the model must not be one (it is joined: the
            interpreter must never tear down a thread that is inside native code).
        target: Run this instead of :meth:`_run`.

    Attributes:
        crashed: ``"<ExceptionType>: <message>"`` if the stage died of an exception, else None.
    """

    def __init__(self, name: str, stop: threading.Event, metrics: Any = None, *,
                 daemon: bool = True, target: Callable[[], None] | None = None) -> None:
        self.stop = stop
        self.metrics = metrics
        self.crashed: str | None = None
        self._target = target or self._run
        self._thread = threading.Thread(target=self._main, name=name, daemon=daemon)

    def _run(self) -> None:
        raise NotImplementedError

    def _main(self) -> None:
        try:
            self._target()
        except BaseException as exc:  # noqa: BLE001 - recorded for the service to act on
            self.crashed = " ".join(f"{type(exc).__name__}: {exc}".split())[:160]
            # The service reports it in one line; the traceback is for --debug.
            log.debug("%s thread died", self._thread.name, exc_info=True)

    @property
    def name(self) -> str:
        """The thread's name."""
        return self._thread.name

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the thread to end (returns at once if it was never started)."""
        if self._thread.ident is not None:
            self._thread.join(timeout)

    def is_alive(self) -> bool:
        """True while the thread runs."""
        return self._thread.is_alive()
