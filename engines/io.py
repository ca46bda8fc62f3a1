"""Atomic output helpers.

Analysis results are written to a temporary file in the destination folder and moved onto the
real name only once complete, so a crash, a full disk or Ctrl-C never leaves a half-written
``.h5`` that a later run (or DeepLabCut) would mistake for a finished result.

Temporary names look like ``.<name>.tmp-<pid>-<random><suffix>``: hidden, recognisable by
:func:`cleanup_stale_temps`, and ending in the real suffix because some writers (HDF5, video
muxers) pick their format from the file name.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path", "atomic_write_text", "cleanup_stale_temps", "temp_name_prefix"]

# Temporary files this process is writing right now. cleanup_stale_temps() must not remove
# them even though their pid is alive (it is ours).
_active_temps: set[Path] = set()
_active_lock = threading.Lock()


def temp_name_prefix(name: str) -> str:
    """Return the prefix shared by every temporary file made for the final file name ``name``.

    Args:
        name: The final file's name (no folder), e.g. ``"video1DLC_x.h5"``.

    Returns:
        ``".<name>.tmp-"``.
    """
    return f".{name}.tmp-"


def _fsync_dir(folder: Path) -> None:
    """Flush a directory entry change to disk; best effort (not possible on every OS/fs)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    # Opened read-only: fsync flushes the file's data no matter which descriptor wrote it.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once at import: os.umask can only be read by setting it, which is not thread-safe.
_UMASK = _read_umask()


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Give a temporary path to write, then move it onto ``path`` if the block succeeds.

    The temporary file lives in the same folder as ``path`` (so the final ``os.replace`` is an
    atomic rename on the same file system) and is named ``.<name>.tmp-<pid>-<random><suffix>``.
    On normal exit it is fsynced and replaces ``path``; if the block raises, the temporary file
    is removed and the exception propagates, leaving any previous ``path`` untouched.

    Args:
        path: The final file path. Its folder must exist.

    Yields:
        The temporary path. The block must create it.

    Raises:
        FileNotFoundError: The block exited normally without creating the temporary file.
    """
    final = Path(path)
    tmp = final.with_name(
        f"{temp_name_prefix(final.name)}{os.getpid()}-{secrets.token_hex(4)}{final.suffix}"
    )
    with _active_lock:
        _active_temps.add(tmp)
    try:
        try:
            yield tmp
            # Some writers (safetensors) create files 0600; outputs get the usual
            # umask-based mode, as a plain open() would have given them.
            os.chmod(tmp, 0o666 & ~_UMASK)
            _fsync_file(tmp)
            os.replace(tmp, final)
        except BaseException:
            # BaseException too: Ctrl-C during a long write must not leave the temp behind.
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise
        _fsync_dir(final.parent)
    finally:
        with _active_lock:
            _active_temps.discard(tmp)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8, newlines kept as given) to ``path`` atomically.

    Args:
        path: The destination file.
        text: The whole content.
    """
    with atomic_path(path) as tmp:
        tmp.write_bytes(text.encode("utf-8"))


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    except OSError:
        return False
    return True


def cleanup_stale_temps(folder: str | Path, name: str) -> list[Path]:
    """Remove temporary files left by crashed writes of ``folder/name``.

    A file ``.<name>.tmp-<pid>-...`` is removed unless this process is writing it right now or
    ``<pid>`` is another live process on this machine (which may still be writing it). Files
    whose pid cannot be parsed are removed.

    Args:
        folder: The folder holding the final file.
        name: The final file's name (no folder).

    Returns:
        The paths removed.
    """
    folder = Path(folder)
    prefix = temp_name_prefix(name)
    removed: list[Path] = []
    try:
        candidates = [p for p in folder.iterdir() if p.name.startswith(prefix)]
    except FileNotFoundError:
        return removed
    with _active_lock:
        active = set(_active_temps)
    me = os.getpid()
    for cand in candidates:
        if cand in active:
            continue
        pid_text = cand.name[len(prefix) :].split("-", 1)[0]
        pid = int(pid_text) if pid_text.isdigit() else -1
        # Our own pid but not active: left by an earlier process that had the same pid
        # (common in containers), so it is stale.
        if pid != me and _pid_alive(pid):
            continue
        try:
            cand.unlink()
        except OSError:
            # Gone already, a folder, or not ours to delete: cleanup is best effort.
            continue
        removed.append(cand)
    return removed
