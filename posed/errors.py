"""The error tree of posed.

Every error a user can cause (bad file, bad config, unknown name) is a :class:`PosedError`
whose message is one line that names the file, field or value and says what is wrong. The CLI
prints that line and exits non-zero; ``--debug`` or ``POSED_DEBUG=1`` shows the traceback.

    PosedError
    ├── ConfigError          a config file or option is missing, unknown or of the wrong type
    ├── DataError            a project, label file, image or video cannot be used
    │   └── VideoError       a video cannot be opened or decoded
    ├── EngineError          something in an engine failed
    │   ├── EngineUnavailableError   the engine's framework is not installed
    │   ├── ModelLoadError           a model bundle or snapshot is missing, corrupt or mismatched
    │   ├── InferenceError           a forward pass failed
    │   └── CapabilityError          the engine cannot do what was asked (e.g. train)
    ├── ExportError          exporting a model failed
    │   └── ExportMismatchError  the export disagrees with the original model
    ├── CaptureError         a camera or stream cannot be opened or read
    ├── PublishError         the pose stream cannot be set up (endpoint, keys)
    └── ProtocolError        a pose-stream message is malformed or of an unknown schema
"""

from __future__ import annotations


class PosedError(Exception):
    """Base class of every error posed raises on purpose.

    Exit code used by the CLI for this class (subclasses may override).
    """

    exit_code = 1


class ConfigError(PosedError):
    """A config file, key or command-line option is invalid."""

    exit_code = 2


class DataError(PosedError):
    """A project, label file, image or video cannot be used."""


class VideoError(DataError):
    """A video cannot be opened or decoded."""


class EngineError(PosedError):
    """An engine failed."""


class EngineUnavailableError(EngineError):
    """The framework an engine needs is not installed."""


class ModelLoadError(EngineError):
    """A model bundle or snapshot is missing, corrupt or does not match its description."""


class InferenceError(EngineError):
    """A forward pass failed."""


class CapabilityError(EngineError):
    """The chosen engine cannot perform the requested operation."""


class ExportError(PosedError):
    """Exporting a model failed."""


class ExportMismatchError(ExportError):
    """An exported model disagrees with the original beyond the stated tolerance."""


class CaptureError(PosedError):
    """A camera or stream cannot be opened or read."""


class PublishError(PosedError):
    """The pose stream cannot be set up (endpoint, keys)."""


class ProtocolError(PosedError):
    """A message on the pose stream is malformed or of an unknown schema."""


# Longest reason taken from a library's exception into one of posed's error lines.
REASON_CHARS = 100


def reason(exc: BaseException, limit: int = REASON_CHARS) -> str:
    """A short reason from a library exception: the first sentence of its first non-empty
    line, at most ``limit`` characters (its type name if it has no message).

    Library errors often start with a newline, run to many lines or add paragraphs of advice;
    posed's errors are one short line, and ``--debug`` shows the whole original.
    """
    for line in str(exc).splitlines():
        line = line.strip()
        if line:
            cut = line.find(". ")
            if 0 < cut < limit:
                line = line[:cut]
            return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"
    return type(exc).__name__
