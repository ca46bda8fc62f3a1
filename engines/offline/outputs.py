"""What an offline analysis records beside its tables: the metadata, the signature of the
run (what the output depends on) and the check that lets a rerun skip finished videos."""

from __future__ import annotations

import logging
from pathlib import Path

import posed
from posed.engines.base import PoseRunner
from posed.engines.offline.reading import truncation_warning

log = logging.getLogger("posed.engines.offline.analyze")


def output_metadata(runner: PoseRunner, **extra: object) -> dict:
    """The metadata every analysis writes: posed, engine, model, and ``extra``."""
    bundle = runner.bundle
    return {
        "posed_version": posed.__version__,
        "engine": runner.engine,
        "precision": getattr(runner, "precision", None),
        **_flip(runner),
        "scorer": bundle.scorer,
        "bodyparts": list(bundle.bodyparts),
        "model": {"path": str(bundle.path) if bundle.path else None,
                  "weights": bundle.weights, "architecture": bundle.architecture},
        **extra,
    }


def run_signature(runner: PoseRunner, video: Path, csv: bool) -> dict:
    """What an output depends on: model weights, engine, the video file and the settings.

    A rerun skips a video whose metadata holds the same signature; the video is identified by
    size and modification time (hashing hours of video on every run would cost more than
    analysing a short one).
    """
    stat = video.stat()
    return {"weights": [w.get("sha256") for w in runner.bundle.weights], "engine": runner.engine,
            "precision": getattr(runner, "precision", None),
            "format": runner.bundle.format, "video_size": stat.st_size,
            "video_mtime_ns": stat.st_mtime_ns, "csv": csv, **_flip(runner)}


def _flip(runner: PoseRunner) -> dict:
    """``flip_test: true`` for a flip-tested runner; nothing otherwise, so the signatures of
    outputs written before flip tests existed still match."""
    return {"flip_test": True} if getattr(runner, "flip_test", False) else {}


def already_done(h5: Path, signature: dict, csv: bool) -> dict | None:
    """The metadata of a complete earlier output with this signature, else None."""
    import json

    meta = h5.with_name(h5.stem + "_meta.json")
    if not (h5.is_file() and meta.is_file()) or (csv and not h5.with_suffix(".csv").is_file()):
        return None
    try:
        data = json.loads(meta.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("signature") == signature else None


def skipped(video: Path, h5: Path, meta: dict) -> tuple[Path, None, str | None]:
    """A video whose output exists: (h5, None, the truncation warning its run recorded)."""
    log.info("%s: output exists for this model and settings; skipped", video)
    message = truncation_warning(video, meta.get("truncated"))
    if message:
        log.warning("%s", message)
    return h5, None, message
