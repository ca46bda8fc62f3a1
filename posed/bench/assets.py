"""What the cases run on: their options, the demo model and clip, frames and videos.

The demo model and clip live in the source tree (``configs/demo/``). An installed wheel has
neither; then a randomly initialised bundle of the demo's architecture and a synthetic clip
of the demo's size stand in (timings do not depend on the weights or the pictures), each made
once per process and said so in one log line.
"""

from __future__ import annotations

import atexit
import functools
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

DEMO = Path(__file__).resolve().parents[2] / "configs" / "demo"
DEMO_MODEL = DEMO / "model"
DEMO_CLIP = DEMO / "clip.mp4"
# The demo model's architecture and the demo clip's size and length, for the stand-ins.
_DEMO_NET = ("mobilenet_v2_0.35", 4, 8)  # net, keypoints, output stride
_DEMO_CLIP = (128, 128, 300, 30)  # width, height, frames, fps


@dataclass
class BenchOptions:
    """Options shared by every case.

    Attributes:
        model: Model bundle folder; None: the demo model (see the module notes). ``engine``,
            ``resources`` and ``matmul`` need a PyTorch ``safetensors`` bundle; ``pipeline``
            runs any bundle.
        size: Input frame (width, height).
        seconds: Measuring time per measurement.
        nets: Extra architectures for ``engine`` (randomly initialised, 4 body parts), e.g.
            ``mobilenet_v2_1.0``, ``resnet_50``; the timing of a net does not depend on its weights.
        batches: Batch sizes for ``engine``.
    """

    model: Path | None = None
    size: tuple[int, int] = (320, 240)
    seconds: float = 3.0
    nets: tuple[str, ...] = ()
    batches: tuple[int, ...] = (1, 8)


def has_demo_model() -> bool:
    """Whether the trained demo model is here (a source checkout)."""
    return (DEMO_MODEL / "posed.yaml").is_file()


@functools.cache
def _scratch() -> Path:
    """A folder for this process's stand-ins, removed at exit."""
    folder = Path(tempfile.mkdtemp(prefix="posed-bench-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


@functools.cache
def demo_model() -> Path:
    """The demo model, or a randomly initialised bundle of its architecture."""
    if has_demo_model():
        return DEMO_MODEL
    from posed.engines.registry import capability

    net, keypoints, stride = _DEMO_NET
    folder = _scratch() / f"random-{net}"
    capability("pytorch", "random_bundle")(net, folder, keypoints=keypoints, output_stride=stride)
    log.warning("no demo model at %s (an installed package): timing a randomly initialised %s "
                "instead", DEMO_MODEL, net)
    return folder


def model_of(opts: BenchOptions) -> Path:
    """The bundle the cases time: ``opts.model``, else :func:`demo_model`."""
    return demo_model() if opts.model is None else opts.model


def model_label(opts: BenchOptions) -> str:
    """The model as the record names it, without making a stand-in just to name it."""
    if opts.model is not None:
        return str(opts.model)
    return str(DEMO_MODEL) if has_demo_model() else f"random {_DEMO_NET[0]}"


@functools.cache
def demo_clip() -> Path:
    """The demo clip, or a synthetic clip of its size and length."""
    if DEMO_CLIP.is_file():
        return DEMO_CLIP
    w, h, n, fps = _DEMO_CLIP
    # A bright disc circling over a smooth gradient: motion and detail for the encoder.
    yy, xx = np.mgrid[0:h, 0:w]
    background = ((xx + yy) * 255 // (w + h)).astype(np.uint8)
    frames = np.repeat(background[None, :, :, None], n, axis=0).repeat(3, axis=3)
    for i, frame in enumerate(frames):
        t = 2 * np.pi * i / n
        cx, cy = w / 2 + w / 4 * np.cos(t), h / 2 + h / 4 * np.sin(t)
        frame[(xx - cx) ** 2 + (yy - cy) ** 2 < (w / 10) ** 2] = 255
    path = _scratch() / "clip.mp4"
    write_video(path, frames, fps)
    log.warning("no demo clip at %s (an installed package): using a synthetic clip instead",
                DEMO_CLIP)
    return path


def frames(size: tuple[int, int], n: int) -> np.ndarray:
    """``n`` frames of the demo clip resized to ``size`` (uint8 N×H×W×3)."""
    import cv2

    from posed.engines.video import VideoReader

    with VideoReader(demo_clip(), stop=n) as reader:
        resized = [cv2.resize(f, size, interpolation=cv2.INTER_AREA) for _, f in reader]
    return np.stack(resized)


def write_video(path: Path, images: np.ndarray, fps: int) -> None:
    """Encode uint8 N×H×W×3 RGB ``images`` as H.264 at ``fps``."""
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height = images.shape[2], images.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "ultrafast"}
        for img in images:
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
