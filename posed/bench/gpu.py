"""The CUDA case: raw engine per precision and graph mode, keypoint agreement between modes,
and the daemon at a high frame rate and with several cameras."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from posed.bench.assets import DEMO_MODEL, BenchOptions, frames, has_demo_model, write_video
from posed.bench.service import daemon_config, multicam, run_service
from posed.bench.stats import measure, percentiles

GPU_MODES = {  # name: pytorch runner options
    "fp32-eager": {"precision": "fp32", "cuda_graphs": False, "channels_last": False},
    "fp16-eager": {"precision": "fp16", "cuda_graphs": False, "channels_last": True},
    "fp16-graph": {"precision": "fp16", "cuda_graphs": True, "channels_last": True},
    "bf16-graph": {"precision": "bf16", "cuda_graphs": True, "channels_last": True},
}


def case_gpu(opts: BenchOptions) -> dict[str, Any]:
    """CUDA: raw engine per precision/graph mode and batch; daemon 640×480 at 200 fps; 1/4/8 cameras."""
    from posed.engines.registry import capability, engine_available

    if not engine_available("pytorch"):
        return {"skipped": "no CUDA device (PyTorch is not installed)"}
    cuda = capability("pytorch", "cuda_device")()
    if cuda is None:
        return {"skipped": "no CUDA device (torch.cuda.is_available() is False)"}
    return {**cuda, **gpu_figures(opts, "cuda", GPU_MODES)}


def _engine_rows(nets: tuple[str, ...], tmp: Path, images: np.ndarray, device: str,
                 modes: dict[str, dict[str, Any]], batches: tuple[int, ...],
                 seconds: float) -> list[dict[str, Any]]:
    """Frames/s per randomly initialised net, mode and batch."""
    from posed.engines import api
    from posed.engines.registry import capability

    rows = []
    for net in nets:
        model = tmp / net
        capability("pytorch", "random_bundle")(net, model, keypoints=4, output_stride=16)
        for mode, options in modes.items():
            runner = api.load_model(model, device=device, **options)
            for batch in batches:
                pool = np.concatenate([images] * (1 + 2 * batch // len(images)))
                rows.append({"model": net, "mode": mode, **measure(runner, pool, batch, seconds)})
            runner.close()
    return rows


def _accuracy(device: str, modes: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Keypoint error of each mode against the first (fp32) on the demo model and its clip."""
    from posed.engines import api

    clip = frames((128, 128), 64)
    first, *others = modes
    ref = api.load_model(DEMO_MODEL, device=device, **modes[first]).predict(clip)
    out = {}
    for mode in others:
        got = api.load_model(DEMO_MODEL, device=device, **modes[mode]).predict(clip)
        out[f"{mode} vs {first}"] = {
            "max_px": round(float(np.nanmax(np.hypot(*(got[..., :2] - ref[..., :2])
                                                     .transpose(2, 0, 1)))), 4),
            "max_likelihood": round(float(np.nanmax(np.abs(got[..., 2] - ref[..., 2]))), 5)}
    return out


def _paced_daemon(model: Path, net: str, tmp: Path, images: np.ndarray, device: str,
                  daemon_frames: int, daemon_fps: int) -> dict[str, Any]:
    """The daemon end to end on one file paced at ``daemon_fps``."""
    video = tmp / "paced.mp4"
    write_video(video, images[np.arange(daemon_frames) % len(images)], daemon_fps)
    times: list[float] = []
    msgs = run_service(daemon_config(model, video, pace="native", wait=1,
                                     model_options={"device": device}),
                       daemon_frames, 60, times)
    skip = daemon_frames // 16  # the first frames pay for allocator and cache warm-up
    e2e = [(m.publish_ns - m.capture_ns) / 1e6 for m in msgs[skip:]]
    return {"model": net, "fps": daemon_fps, "frames": len(msgs), "expected": daemon_frames,
            "capture_to_publish": percentiles(e2e), "inference": percentiles(times[skip:])}


def gpu_figures(opts: BenchOptions, device: str, modes: dict[str, dict[str, Any]], *,
                size: tuple[int, int] = (640, 480), batches: tuple[int, ...] = (1, 8, 64),
                daemon_frames: int = 800, daemon_fps: int = 200,
                cameras: tuple[int, ...] = (1, 4, 8), per_camera: int = 400) -> dict[str, Any]:
    """The figures of :func:`case_gpu` on ``device`` (a CPU run checks the procedure)."""
    images = frames(size, 64)
    out: dict[str, Any] = {"size": list(size)}
    with tempfile.TemporaryDirectory() as tmp:
        nets = opts.nets or ("resnet_50", "mobilenet_v2_0.35")
        out["rows"] = _engine_rows(nets, Path(tmp), images, device, modes, batches, opts.seconds)
        # Agreement needs a trained model and its own clip: the demo's, when it is here.
        if opts.model is None and has_demo_model():
            out["accuracy"] = _accuracy(device, modes)
        model = Path(tmp) / nets[0]
        out["daemon"] = _paced_daemon(model, nets[0], Path(tmp), images, device, daemon_frames,
                                      daemon_fps)
        out["cameras"] = multicam(model, images, cameras, per_camera, {"device": device},
                                  fps=daemon_fps)
    return out
