"""Opening a camera's source with PyAV: the demuxer, options and timeouts its kind needs.

Split from :mod:`posed.daemon.capture` (the capture thread), which re-exports it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import av

from posed.engines.video import TEXT_CODECS as _TEXT_CODECS
from posed.engines.video import error_reason as _reason
from posed.errors import CaptureError

if TYPE_CHECKING:
    from posed.daemon.capture import CameraSpec

__all__ = ["open_source"]


def open_source(spec: CameraSpec) -> Any:
    """Open a camera's source with the demuxer, options and timeouts its kind needs.

    Files decode with frame threads (throughput); live sources get FFmpeg's low-latency
    settings (``fflags=nobuffer``, codec ``low_delay``, slice threads only) since frame
    threading holds back one frame per thread.

    Args:
        spec: The camera.

    Returns:
        An open ``av.container.InputContainer`` whose first video stream is configured.

    Raises:
        CaptureError: ``"<id>: <source>: cannot open (<reason>)"``.
    """
    kind = spec.resolved_kind()
    target = spec.target()

    def fail(reason: str, exc: BaseException | None = None) -> CaptureError:
        err = CaptureError(f"{spec.id}: {spec.source}: cannot open ({reason})")
        err.__cause__ = exc
        return err

    fmt: str | None = None
    options: dict[str, str] = {}
    timeout: tuple[float, float] | None = None
    if kind == "file":
        path = Path(target)
        if not path.exists():
            raise fail("no such file")
        if path.is_dir():
            raise fail("is a folder, not a video")
    elif kind == "v4l2":
        fmt = "v4l2"
        if spec.width is not None and spec.height is not None:
            options["video_size"] = f"{spec.width}x{spec.height}"
        if spec.fps is not None:
            options["framerate"] = f"{spec.fps:g}"
        if spec.pixel_format:
            options["input_format"] = spec.pixel_format
        timeout = (spec.open_timeout_s, spec.read_timeout_s)
    else:
        options["fflags"] = "nobuffer"
        timeout = (spec.open_timeout_s, spec.read_timeout_s)
    options.update({str(k): str(v) for k, v in spec.options.items()})

    try:
        container = av.open(target, mode="r", format=fmt, container_options=options,
                            timeout=timeout)
    except av.ExitError as exc:  # FFmpeg's interrupt callback: the open timeout ran out
        raise fail(f"no answer within {spec.open_timeout_s:g} s", exc) from exc
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise fail(_reason(exc), exc) from exc
    try:
        if not container.streams.video:
            raise fail("no video stream")
        stream = container.streams.video[0]
        ctx = stream.codec_context
        if ctx is None or ctx.name in _TEXT_CODECS:
            raise fail("not a video")
        if kind == "file":
            ctx.thread_type = "AUTO"
        else:
            ctx.thread_type = "SLICE"
            ctx.flags = int(ctx.flags) | int(av.codec.context.Flags.low_delay)
    except CaptureError:
        container.close()
        raise
    except Exception as exc:  # noqa: BLE001 - any PyAV surprise is an open failure
        container.close()
        raise fail(_reason(exc), exc) from exc
    return container
