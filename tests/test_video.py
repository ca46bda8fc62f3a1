"""Tests for posed.engines.video (PyAV reading, probing, prefetch)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import av
import numpy as np
import pytest

from posed.engines.video import VideoInfo, VideoReader, prefetch, probe_video
from posed.errors import VideoError

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
OPENFIELD = (
    SHARED / "data" / "dlc-examples" / "openfield-Pranav-2018-10-30" / "videos" / "m3v1mp4.mp4"
)

W, H = 64, 48


def _gray(i: int) -> np.ndarray:
    """Frame i is flat grey, brighter with i, so decode order can be checked."""
    return np.full((H, W, 3), 20 + 12 * i, dtype=np.uint8)


def make_video(
    path: Path,
    *,
    codec: str = "libx264",
    n: int = 12,
    fps: int = 25,
    pix_fmt: str = "yuv420p",
    frame: Callable[[int], np.ndarray] = _gray,
    options: dict[str, str] | None = None,
) -> Path:
    """Encode ``n`` frames with PyAV."""
    container = av.open(str(path), "w", options=options or {})
    stream = container.add_stream(codec, rate=fps)
    stream.width, stream.height, stream.pix_fmt = W, H, pix_fmt
    for i in range(n):
        image = av.VideoFrame.from_ndarray(frame(i), format="rgb24")
        for packet in stream.encode(image):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return path


def _noise(i: int) -> np.ndarray:
    # Incompressible frames so that half the file holds about half the frames.
    return np.random.default_rng(i).integers(0, 256, (H, W, 3), dtype=np.uint8)


# --- probe -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("codec", "name", "decoder"),
    [("libx264", "v.mp4", "h264"), ("mpeg4", "v.avi", "mpeg4"), ("libx264", "v.mkv", "h264")],
)
def test_probe(tmp_path: Path, codec: str, name: str, decoder: str) -> None:
    path = make_video(tmp_path / name, codec=codec, n=12, fps=25)
    info = probe_video(path)
    assert isinstance(info, VideoInfo)
    assert (info.width, info.height) == (W, H)
    assert info.fps == pytest.approx(25.0)
    assert info.nframes == 12
    assert info.nframes_exact is (not name.endswith(".mkv"))  # Matroska has no frame count
    assert info.codec == decoder
    assert info.pix_fmt == "yuv420p"
    assert info.duration_s == pytest.approx(12 / 25, abs=0.05)
    assert info.path == path


# --- reading ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("codec", "name"), [("libx264", "v.mp4"), ("mpeg4", "v.avi")])
@pytest.mark.parametrize("threads", [True, False])
def test_reader_yields_all_frames_in_order(
    tmp_path: Path, codec: str, name: str, threads: bool
) -> None:
    path = make_video(tmp_path / name, codec=codec, n=12)
    with VideoReader(path, threads=threads) as reader:
        assert reader.info.nframes == 12
        got = list(reader)
        assert reader.decode_errors == 0
    assert [i for i, _ in got] == list(range(12))
    for i, image in got:
        assert image.shape == (H, W, 3) and image.dtype == np.uint8
        assert abs(float(image.mean()) - (20 + 12 * i)) < 6  # lossy, but the right frame


def test_batches(tmp_path: Path) -> None:
    path = make_video(tmp_path / "v.mp4", n=10)
    with VideoReader(path) as reader:
        batches = list(reader.batches(4))
        with pytest.raises(ValueError):
            reader.batches(0)
    assert [len(idx) for idx, _ in batches] == [4, 4, 2]
    assert np.concatenate([idx for idx, _ in batches]).tolist() == list(range(10))
    for idx, frames in batches:
        assert idx.dtype == np.int64
        assert frames.dtype == np.uint8 and frames.shape == (len(idx), H, W, 3)


def test_start_stop_and_reiterate(tmp_path: Path) -> None:
    path = make_video(tmp_path / "v.mp4", n=10)
    with VideoReader(path) as reader:
        full = list(reader)
        again = list(reader)  # a second pass starts over
    assert [i for i, _ in again] == list(range(10))
    with VideoReader(path, start=3, stop=7) as reader:
        part = list(reader)
    assert [i for i, _ in part] == [3, 4, 5, 6]
    for (i, image), (j, ref) in zip(part, full[3:7], strict=True):
        assert i == j
        np.testing.assert_array_equal(image, ref)
    with pytest.raises(ValueError):
        VideoReader(path, start=-1)


def test_closed_reader(tmp_path: Path) -> None:
    reader = VideoReader(make_video(tmp_path / "v.mp4", n=3))
    reader.close()
    reader.close()  # idempotent
    with pytest.raises(VideoError, match="v.mp4: reader is closed"):
        iter(reader)


def test_colours(tmp_path: Path) -> None:
    def red(i: int) -> np.ndarray:
        image = np.zeros((H, W, 3), dtype=np.uint8)
        image[..., 0] = 255
        return image

    path = make_video(tmp_path / "red.mp4", n=2, frame=red)
    with VideoReader(path) as reader:
        _, image = next(iter(reader))
    r, g, b = (float(image[..., c].mean()) for c in range(3))
    assert r > 200 and g < 60 and b < 60


# --- errors ----------------------------------------------------------------------------------


def _bad_inputs(tmp_path: Path) -> list[tuple[Path, str]]:
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    text_mp4 = tmp_path / "notes.mp4"
    text_mp4.write_text("hello\n" * 100)
    # FFmpeg opens *.txt as an ANSI-art "video"; it must still be refused.
    text_txt = tmp_path / "notes.txt"
    text_txt.write_text("hello\n" * 100)
    audio = tmp_path / "audio.wav"
    container = av.open(str(audio), "w")
    stream = container.add_stream("pcm_s16le", rate=8000)
    frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
    frame.sample_rate = 8000
    for packet in stream.encode(frame):
        container.mux(packet)
    container.close()
    return [
        (tmp_path / "missing.mp4", "no such file"),
        (garbage, "cannot open video"),
        (text_mp4, "cannot open video"),
        (text_txt, "not a video"),
        (audio, "no video stream"),
        (tmp_path, "is a folder"),
    ]


def test_errors_name_the_file(tmp_path: Path) -> None:
    for path, problem in _bad_inputs(tmp_path):
        for opener in (probe_video, VideoReader):
            with pytest.raises(VideoError) as caught:
                opener(path)
            message = str(caught.value)
            assert message.startswith(f"{path}: {problem}"), message
            assert "\n" not in message


def _read_with_deadline(path: Path, seconds: float = 60) -> tuple[list[int], int]:
    """Read every frame in a thread; fail if reading hangs."""
    result: dict[str, object] = {}

    def work() -> None:
        with VideoReader(path) as reader:
            result["indices"] = [i for i, _ in reader]
            result["errors"] = reader.decode_errors

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"reading {path} hangs"
    return result["indices"], result["errors"]  # type: ignore[return-value]


@pytest.mark.parametrize(
    ("name", "options"), [("v.mp4", {"movflags": "+faststart"}), ("v.mkv", {})]
)
def test_truncated_video_yields_first_frames(
    tmp_path: Path, name: str, options: dict[str, str]
) -> None:
    # mp4 needs its index (moov) at the front, as cameras that stream MP4 write it, to be
    # readable at all once cut.
    full = make_video(tmp_path / name, n=30, frame=_noise, options=options)
    data = full.read_bytes()
    cut = tmp_path / f"cut_{name}"
    cut.write_bytes(data[: len(data) // 2])
    assert probe_video(cut).width == W
    indices, errors = _read_with_deadline(cut)
    assert len(indices) >= 8  # about half of the 30 frames survive
    assert indices == list(range(len(indices)))
    assert errors >= 0


def test_corrupt_middle_does_not_crash(tmp_path: Path) -> None:
    full = make_video(tmp_path / "v.mkv", n=30, frame=_noise)
    data = bytearray(full.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 500] = os.urandom(500)
    bad = tmp_path / "bad.mkv"
    bad.write_bytes(bytes(data))
    indices, _ = _read_with_deadline(bad)
    assert indices[:5] == [0, 1, 2, 3, 4]


# --- prefetch --------------------------------------------------------------------------------


def test_prefetch_order_and_depth() -> None:
    assert list(prefetch(range(50), depth=2)) == list(range(50))
    assert list(prefetch([])) == []
    with pytest.raises(ValueError):
        prefetch([1], depth=0)


def test_prefetch_propagates_exceptions() -> None:
    def source() -> Iterator[int]:
        yield 1
        yield 2
        raise KeyError("bad frame")

    got = []
    with pytest.raises(KeyError, match="bad frame"):
        for item in prefetch(source()):
            got.append(item)
    assert got == [1, 2]


def test_prefetch_early_stop_closes_source() -> None:
    produced: list[int] = []
    closed = threading.Event()

    def source() -> Iterator[int]:
        try:
            for i in range(10_000):
                produced.append(i)
                yield i
        finally:
            closed.set()

    before = threading.active_count()
    stream = prefetch(source(), depth=3)
    for item in stream:
        if item == 4:
            break
    stream.close()
    assert closed.is_set()  # the source was closed before close() returned
    assert len(produced) <= 5 + 3 + 2  # it stopped soon after the consumer did
    assert threading.active_count() == before


def test_prefetch_not_started_until_iterated() -> None:
    started = threading.Event()

    def source() -> Iterator[int]:
        started.set()
        yield 1

    stream = prefetch(source())
    time.sleep(0.05)
    assert not started.is_set()
    assert list(stream) == [1]


def test_prefetch_video_batches(tmp_path: Path) -> None:
    path = make_video(tmp_path / "v.mp4", n=9)
    with VideoReader(path) as reader:
        indices = [idx.tolist() for idx, _ in prefetch(reader.batches(4), depth=2)]
    assert indices == [[0, 1, 2, 3], [4, 5, 6, 7], [8]]


# --- the real example video ------------------------------------------------------------------


@pytest.mark.realdata
@pytest.mark.skipif(not OPENFIELD.is_file(), reason="shared example video absent")
def test_openfield_video() -> None:
    info = probe_video(OPENFIELD)
    assert (info.width, info.height) == (640, 480)
    assert info.fps == pytest.approx(30.0, abs=0.01)
    assert info.nframes == 2330 and info.nframes_exact
    assert (info.codec, info.pix_fmt) == ("h264", "yuv444p")
    with VideoReader(OPENFIELD, stop=10) as reader:
        frames = list(reader)
    assert [i for i, _ in frames] == list(range(10))
    assert all(f.shape == (480, 640, 3) and f.dtype == np.uint8 for _, f in frames)
    assert float(frames[0][1].std()) > 5  # a real picture, not a blank frame
