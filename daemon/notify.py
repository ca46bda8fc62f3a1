"""systemd's notification protocol (``sd_notify``) without libsystemd.

Under ``Type=notify`` systemd passes ``$NOTIFY_SOCKET``, an ``AF_UNIX`` datagram socket (a path,
or ``@name`` in the abstract namespace), and waits for ``READY=1`` before it calls the service
started. With ``WatchdogSec=`` it also sets ``$WATCHDOG_USEC`` and ``$WATCHDOG_PID`` and kills
the service when no ``WATCHDOG=1`` arrives within that time. Each message is one datagram of
``KEY=value`` lines.

Notification is best-effort: a failure is logged once and reported as ``False``, never raised,
because the daemon must keep serving poses even if systemd (or a test harness) went away.
Outside systemd ``$NOTIFY_SOCKET`` is unset and every method is a no-op.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Mapping

__all__ = ["Notifier"]

log = logging.getLogger(__name__)

# A blocked notify socket (systemd stalled) must not stall the watchdog thread for long.
_SEND_TIMEOUT_S = 1.0


class Notifier:
    """Sends ``sd_notify`` datagrams to systemd.

    Args:
        address: Socket to notify. ``None`` reads ``$NOTIFY_SOCKET``. An absolute path is a
            filesystem socket, ``@name`` an abstract one. An empty address (or an unset
            variable) disables the notifier; so does an unsupported one (relative path,
            ``vsock:``), with a warning.

    Attributes:
        enabled: Whether messages are sent at all.
        address: The address as given or read ("" when disabled).
    """

    def __init__(self, address: str | None = None) -> None:
        if address is None:
            address = os.environ.get("NOTIFY_SOCKET", "")
        self.address = address
        self._target: str | bytes | None = self._parse(address)
        self.enabled = self._target is not None
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()  # the watchdog pings from its own thread
        self._warned = False

    @staticmethod
    def _parse(address: str) -> str | bytes | None:
        if not address:
            return None
        if address.startswith("@"):
            # Abstract namespace: a leading NUL byte and no terminating one.
            return b"\0" + address[1:].encode()
        if address.startswith("/"):
            return address
        # sd_notify rejects relative paths too; vsock needs AF_VSOCK, which the unit forbids.
        log.warning("NOTIFY_SOCKET %r is not supported; systemd notification disabled", address)
        return None

    def send(self, *fields: str) -> bool:
        """Send ``fields`` (``"KEY=value"`` strings) as one datagram.

        Args:
            *fields: The assignments, e.g. ``"READY=1"``, ``"STATUS=warming up"``.

        Returns:
            True if the datagram was handed to the kernel; False when disabled or on error.
        """
        if self._target is None or not fields:
            return False
        data = "\n".join(fields).encode()
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                    self._sock.settimeout(_SEND_TIMEOUT_S)
                self._sock.sendto(data, self._target)
            except OSError as exc:
                # Once, at warning: a gone manager would otherwise log every watchdog ping.
                level = logging.DEBUG if self._warned else logging.WARNING
                log.log(level, "sd_notify to %s failed: %s", self.address, exc)
                self._warned = True
                return False
        return True

    def ready(self, status: str | None = None) -> None:
        """Tell systemd that startup is complete (``READY=1``).

        Args:
            status: Optional status line sent in the same datagram.
        """
        fields = ["READY=1"]
        if status is not None:
            fields.append(_status_field(status))
        self.send(*fields)

    def status(self, text: str) -> None:
        """Set the one-line status shown by ``systemctl status`` (``STATUS=...``)."""
        self.send(_status_field(text))

    def watchdog(self) -> None:
        """Ping the service watchdog (``WATCHDOG=1``)."""
        self.send("WATCHDOG=1")

    def stopping(self) -> None:
        """Tell systemd that shutdown has begun (``STOPPING=1``)."""
        self.send("STOPPING=1")

    def failed(self, text: str, errno: int) -> None:
        """Report a fatal failure: ``STATUS=text`` and ``ERRNO=errno`` in one datagram.

        ``systemctl status`` then shows the reason and the errno until the service restarts.
        """
        self.send(_status_field(text), f"ERRNO={int(errno)}")

    def extend_timeout(self, seconds: float) -> None:
        """Ask for more start/stop time, e.g. while a model warms up (``EXTEND_TIMEOUT_USEC``).

        Args:
            seconds: Time from now within which the next message or ``READY=1`` will come.
        """
        self.send(f"EXTEND_TIMEOUT_USEC={max(0, int(seconds * 1_000_000))}")

    def watchdog_interval(self, environ: Mapping[str, str] | None = None) -> float | None:
        """How often to ping the watchdog, or None when no watchdog is armed for this process.

        Reads ``$WATCHDOG_USEC`` and ``$WATCHDOG_PID`` like ``sd_watchdog_enabled``: the
        watchdog applies only if ``WATCHDOG_PID`` is unset or names this process. Independent
        of :attr:`enabled`, as in libsystemd.

        Args:
            environ: Environment to read; ``os.environ`` by default.

        Returns:
            Half the watchdog timeout in seconds (systemd's advice), or None.
        """
        env = os.environ if environ is None else environ
        try:
            usec = int(env.get("WATCHDOG_USEC", ""))
        except ValueError:
            return None
        if usec <= 0:
            return None
        pid = env.get("WATCHDOG_PID", "")
        if pid:
            try:
                if int(pid) != os.getpid():
                    return None  # meant for our parent or a child: not ours to ping
            except ValueError:
                return None
        return usec / 2 / 1e6

    def close(self) -> None:
        """Close the socket; a later :meth:`send` opens a new one."""
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None

    def __enter__(self) -> Notifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _status_field(text: str) -> str:
    # A newline would start a new KEY=value assignment in the datagram.
    return "STATUS=" + " ".join(text.splitlines())
