"""Devices and fast inference pieces for the PyTorch engine: device selection, TorchScript
loading, precision, decoding on the device, CUDA graphs.

At batch 1 an eager GPU forward is bound by kernel launches, and copying full score maps
back to the host costs more than the arithmetic that reads them. So on CUDA the runner
converts and normalises uint8 frames on the device, runs the network in fp16/bf16
channels-last, takes the argmax + locref there (:func:`decode_torch`, numerically the same as
:func:`posed.engines.decoding.decode`) so only N×K×3 numbers come back, and replays a CUDA
graph captured per (batch size, height, width) with fixed input/output buffers
(:class:`GraphPool`). Capture failures fall back to eager per shape, with one log line.

Everything here also runs on the CPU (where graphs are not used), which is how the selection
and fallback logic is tested on machines without a GPU.
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Callable

import torch

from posed.engines.cpu import isa_limit_allows_bf16, native_bf16
from posed.engines.decoding import window_blocks, window_cells
from posed.errors import CapabilityError, ConfigError, ModelLoadError, reason

if TYPE_CHECKING:
    from posed.engines.bundle import ModelBundle

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "fp16", "bf16")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


# ----------------------------------------------------------------------------- devices

def select_device(device: str = "auto") -> torch.device:
    """Resolve ``auto``/``cpu``/``cuda``/``cuda:N``; a CUDA request without CUDA falls back to CPU."""
    want = (device or "auto").lower()
    if want == "cpu":
        return torch.device("cpu")
    if want == "auto" or want.startswith("cuda"):
        if torch.cuda.is_available():
            dev = torch.device("cuda" if want == "auto" else want)
            if dev.index is not None and dev.index >= torch.cuda.device_count():
                raise ConfigError(f"device '{device}': only {torch.cuda.device_count()} CUDA device(s)")
            log.info("pytorch engine: using %s (%s)", dev, torch.cuda.get_device_name(dev))
            return dev
        if want != "auto":
            log.warning("pytorch engine: device '%s' requested but CUDA is not available; using CPU", device)
        else:
            log.info("pytorch engine: no CUDA device; using CPU")
        return torch.device("cpu")
    raise ConfigError(f"device '{device}' is not one of auto, cpu, cuda, cuda:N")


def load_torchscript(bundle: "ModelBundle", device: str = "auto",
                     threads: int | None = None) -> tuple[torch.jit.ScriptModule, torch.device]:
    """The TorchScript module of a ``torchscript`` bundle, on the selected device, in eval mode."""
    if threads:
        torch.set_num_threads(int(threads))
    dev = select_device(device)
    try:
        with warnings.catch_warnings():
            # torch 2.14 marks TorchScript as deprecated; it still runs, and the bundle
            # format is what users chose to export.
            warnings.simplefilter("ignore", FutureWarning)
            module = torch.jit.load(str(bundle.weights_path), map_location=dev)
    except Exception as exc:  # TorchScript raises RuntimeError and internal types alike
        raise ModelLoadError(f"{bundle.weights_path}: cannot load TorchScript "
                             f"({reason(exc)})") from exc
    return module.eval(), dev


# ----------------------------------------------------------------------------- capability

def cpu_bf16_support(flags: set[str] | None = None) -> str | None:
    """The native bf16 instruction set of this CPU (``amx_bf16``/``avx512_bf16``) or None.

    Without one of these, bf16 on the CPU is emulated and slower than fp32, so it is only
    used where the hardware has it. PyTorch's own CPUID probe is asked first (a VM's
    /proc/cpuinfo can differ from what the CPU executes), within the oneDNN ISA limit as
    :func:`posed.engines.cpu.native_bf16` reads it; given ``flags``, those alone decide.
    """
    probes = (("amx_bf16", "_is_amx_tile_supported"), ("avx512_bf16", "_is_avx512_bf16_supported"))
    probed = all(hasattr(torch.cpu, fn) for _, fn in probes)
    if flags is None and probed and isa_limit_allows_bf16():
        return next((name for name, fn in probes if getattr(torch.cpu, fn)()), None)
    return native_bf16(flags)


def resolve_precision(requested: str, device: torch.device,
                      bf16_support: str | None | Callable[[], str | None] = cpu_bf16_support
                      ) -> tuple[torch.dtype, str]:
    """The compute dtype for a precision request on a device, and the reason for the log.

    ``auto`` is fp16 on CUDA (tensor cores; measured keypoint error in the README) and fp32
    on the CPU, so the default CPU path gives exactly the trained model's numbers. ``bf16`` on a
    CPU without native bf16 is refused rather than silently slower.

    Raises:
        ConfigError: unknown precision name.
        CapabilityError: bf16 requested on a CPU without native bf16, or fp16 on the CPU.
    """
    want = (requested or "auto").lower()
    if want not in PRECISIONS:
        raise ConfigError(f"precision '{requested}' is not one of {', '.join(PRECISIONS)}")
    cuda = device.type == "cuda"
    if want == "auto":
        return (torch.float16, "auto: fp16 on CUDA") if cuda else (torch.float32, "auto: fp32 on CPU")
    if not cuda and want == "fp16":
        raise CapabilityError("precision 'fp16' needs a CUDA device; on the CPU use fp32, or bf16 "
                              "where the CPU has AMX/AVX512-BF16")
    if not cuda and want == "bf16":
        support = bf16_support() if callable(bf16_support) else bf16_support
        if support is None:
            raise CapabilityError("precision 'bf16': this CPU has no native bf16 (amx_bf16 or "
                                  "avx512_bf16 in /proc/cpuinfo); use fp32")
        return torch.bfloat16, f"bf16 as requested (CPU has {support})"
    return DTYPES[want], f"{want} as requested"


# ----------------------------------------------------------------------------- decoding

def body_window_torch(scores: torch.Tensor, radius: int) -> torch.Tensor:
    """:func:`posed.engines.decoding.body_window` on tensors: N×1×h×w, True inside."""
    pool = torch.nn.functional.max_pool2d
    n, _, h, w = scores.shape
    b = window_blocks(radius)
    clean = torch.nan_to_num(scores, nan=0.0, posinf=0.0, neginf=0.0)
    # Both pools pad with -inf, which a max ignores: the same as the numpy version's padding
    # and edge mode.
    blocks = pool(clean, b, stride=b, ceil_mode=True)
    rb = radius // b
    reach = pool(blocks, 2 * rb + 1, stride=1, padding=rb)
    wb = blocks.shape[-1]
    centre = reach.sum(dim=1).reshape(n, -1).argmax(dim=1)
    cy = torch.div(centre, wb, rounding_mode="floor")
    cx = centre - cy * wb
    half = b // 2
    fy, fx = cy * b + half, cx * b + half
    rows = (torch.arange(h, device=scores.device)[None, :] - fy[:, None]).abs() <= radius + half
    cols = (torch.arange(w, device=scores.device)[None, :] - fx[:, None]).abs() <= radius + half
    return (rows[:, :, None] & cols[:, None, :])[:, None]


def decode_torch(scores: torch.Tensor, locref: torch.Tensor | None, stride: float,
                 locref_stdev: float, window: float | None = None) -> torch.Tensor:
    """:func:`posed.engines.decoding.decode` on tensors, on whatever device they live.

    Args:
        scores: N×K×h×w scores (any float dtype; read in fp32).
        locref: N×2K×h×w interleaved offsets, or None.
        window: The bundle's body window in pixels, or None (see ``decode``).

    Returns:
        float32 N×K×3 (x, y, likelihood); non-finite maps give NaN, NaN, 0.
    """
    scores = scores.float()
    n, k, h, w = scores.shape
    flat = scores.reshape(n, k, h * w)
    finite_cells = torch.isfinite(flat)
    finite = finite_cells.all(dim=2)
    flat = torch.where(finite_cells, flat, torch.full_like(flat, float("-inf")))
    if window and k > 1:
        inside = body_window_torch(scores, window_cells(window, stride)).reshape(n, 1, h * w)
        flat = flat.masked_fill(~inside, float("-inf"))
    peak, idx = flat.max(dim=2)
    # max() returns the first maximal index, as numpy's argmax does.
    likelihood = peak.clamp(0.0, 1.0)
    row = torch.div(idx, w, rounding_mode="floor")
    col = idx - row * w
    x = (col.float() + 0.5) * stride
    y = (row.float() + 0.5) * stride
    if locref is not None:
        off = locref.float().reshape(n, k, 2, h * w)
        picked = off.gather(3, idx[:, :, None, None].expand(n, k, 2, 1))[..., 0]
        x = x + picked[:, :, 0] * locref_stdev
        y = y + picked[:, :, 1] * locref_stdev
    out = torch.stack([x, y, likelihood], dim=-1)
    bad = torch.tensor([float("nan"), float("nan"), 0.0], device=out.device)
    return torch.where(finite[..., None], out, bad)


# ----------------------------------------------------------------------------- CUDA graphs

Replay = Callable[[torch.Tensor], torch.Tensor]


def capture_cuda_graph(fn: Replay, example: torch.Tensor, warmup: int = 3) -> Replay:
    """Capture ``fn`` on fixed buffers; the returned callable copies in, replays, and returns
    the (reused) output buffer.

    Warm-up runs on a side stream first, as CUDA graph capture requires (cuDNN picks its
    algorithms and the caching allocator settles before capture).
    """
    static_in = torch.empty_like(example)
    static_in.copy_(example)
    stream = torch.cuda.Stream(device=example.device)
    stream.wait_stream(torch.cuda.current_stream(example.device))
    with torch.cuda.stream(stream):
        for _ in range(warmup):
            fn(static_in)
    torch.cuda.current_stream(example.device).wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = fn(static_in)

    def replay(x: torch.Tensor) -> torch.Tensor:
        static_in.copy_(x, non_blocking=True)
        graph.replay()
        return static_out

    return replay


class GraphPool:
    """One captured graph per input shape, least recently used evicted past ``size``.

    Args:
        fn: The eager function (device uint8 N×H×W×3 → N×K×3 float32 on the device).
        capture: Turns (fn, example input) into a replay callable; raises where capture is
            impossible, and that shape then runs eagerly for good (one log line).
        size: Shapes kept; each graph holds its own activation memory.
    """

    def __init__(self, fn: Replay, capture: Callable[[Replay, torch.Tensor], Replay] = capture_cuda_graph,
                 size: int = 8) -> None:
        self.fn = fn
        self.capture = capture
        self.size = size
        self.graphs: OrderedDict[tuple[int, ...], Replay] = OrderedDict()
        self.eager: set[tuple[int, ...]] = set()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        key = tuple(x.shape)
        if key in self.eager:
            return self.fn(x)
        replay = self.graphs.get(key)
        if replay is None:
            try:
                replay = self.capture(self.fn, x)
            except Exception as exc:  # capture is best effort: eager is always correct
                log.warning("pytorch engine: CUDA graph capture failed for input %s (%s); "
                            "running that shape eagerly", "×".join(map(str, key)),
                            str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
                self.eager.add(key)
                return self.fn(x)
            self.graphs[key] = replay
            if len(self.graphs) > self.size:
                self.graphs.popitem(last=False)
            log.info("pytorch engine: captured a CUDA graph for input %s", "×".join(map(str, key)))
        else:
            self.graphs.move_to_end(key)
        return replay(x)


# ----------------------------------------------------------------------------- the fast path

class FastForward:
    """uint8 frames → keypoints with the model's work and decoding on its device.

    Args:
        model: A :class:`~posed.engines.pytorch.model.PoseNet` in eval mode on ``device``.
        device: Where it runs.
        dtype: Compute dtype (see :func:`resolve_precision`).
        channels_last: Run convolutions in NHWC memory format.
        cuda_graphs: Replay captured graphs per shape (CUDA only).
        stride, locref_stdev, window: The bundle's decoding constants.
    """

    def __init__(self, model: Any, device: torch.device, dtype: torch.dtype, *,
                 channels_last: bool, cuda_graphs: bool, stride: float, locref_stdev: float,
                 window: float | None = None,
                 capture: Callable[[Replay, torch.Tensor], Replay] = capture_cuda_graph) -> None:
        self.device = device
        self.dtype = dtype
        self.channels_last = channels_last
        self.stride = stride
        self.locref_stdev = locref_stdev
        self.window = window
        model = model.to(device=device).eval()
        if dtype == torch.float16:
            # fp16 weights and activations; bf16 on CPU runs under autocast instead so that
            # oneDNN picks its AMX kernels while normalisation stays in fp32.
            model = model.half()
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.cuda = device.type == "cuda"
        self.pool = GraphPool(self._eager, capture) if (cuda_graphs and self.cuda) else None
        self._pinned: dict[tuple[int, ...], torch.Tensor] = {}

    def _eager(self, x: torch.Tensor) -> torch.Tensor:
        """Device uint8 N×H×W×3 → device float32 N×K×3."""
        x = x.permute(0, 3, 1, 2)
        x = x.to(torch.float16 if self.dtype == torch.float16 else torch.float32)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.dtype == torch.bfloat16:
            with torch.autocast(self.device.type, dtype=torch.bfloat16):
                heat, locref = self.model(x)
        else:
            heat, locref = self.model(x)
        scores = self.model.probabilities(heat.float())
        return decode_torch(scores, locref, self.stride, self.locref_stdev, self.window)

    def _to_device(self, frames: Any) -> torch.Tensor:
        host = torch.from_numpy(frames)
        if not self.cuda:
            return host
        # Page-locked staging buffer per shape: the copy to the GPU is then asynchronous.
        pinned = self._pinned.get(host.shape)
        if pinned is None:
            pinned = self._pinned[host.shape] = torch.empty(host.shape, dtype=torch.uint8,
                                                            pin_memory=True)
        pinned.copy_(host)
        return pinned.to(self.device, non_blocking=True)

    @torch.inference_mode()
    def __call__(self, frames: Any) -> Any:
        """uint8 N×H×W×3 numpy frames → float32 N×K×3 numpy keypoints."""
        x = self._to_device(frames)
        out = self.pool(x) if self.pool is not None else self._eager(x)
        # .cpu() synchronises with the stream, so a replayed graph's buffer is read complete.
        return out.cpu().numpy().copy()


# ----------------------------------------------------------------------------- CPU threads

def release_openmp_pool() -> bool:
    """Free the OpenMP worker threads that belong to the calling thread.

    libgomp keeps one worker pool per thread that ever ran a parallel region. When the
    threads of all pools outnumber the CPUs it stops spinning at barriers and sleeps on a
    futex instead: with the pool of the thread that loaded and warmed a model still alive,
    the daemon's inference thread made about 380 context switches per call and ran at half
    the speed (demo model, 640×480, 2 cores: 22 against 45 frames/s). Freeing the loading
    thread's pool (OpenMP 5 ``omp_pause_resource_all``) leaves one pool and full speed.

    Returns:
        True when a pool was released; False where torch does not use an OpenMP runtime that
        offers the call (nothing to do there).
    """
    import ctypes
    import glob
    import os

    if "OpenMP" not in torch.__config__.parallel_info():
        return False
    libdir = os.path.join(os.path.dirname(torch.__file__), "lib")
    candidates = sorted(glob.glob(os.path.join(libdir, "libgomp*.so*"))
                        + glob.glob(os.path.join(libdir, "libiomp5*.so*"))) or ["libgomp.so.1"]
    for path in candidates:
        try:
            pause = ctypes.CDLL(path).omp_pause_resource_all
        except (OSError, AttributeError):
            continue
        pause.argtypes = (ctypes.c_int,)
        return pause(1) == 0  # 1 = omp_pause_hard: the pool's threads end
    return False


class OpenMPHandoff:
    """Mixin for PyTorch runners: :meth:`handoff` releases the calling thread's OpenMP pool."""

    def handoff(self) -> None:
        """See :meth:`posed.engines.base.PoseRunner.handoff`."""
        if release_openmp_pool():
            log.debug("released the OpenMP pool of thread %s", threading.current_thread().name)


def describe(dtype: torch.dtype, channels_last: bool, graphs: bool) -> str:
    """Short text for logs and metrics labels, e.g. ``fp16 channels-last cuda-graphs``."""
    name = {v: k for k, v in DTYPES.items()}[dtype]
    return " ".join([name] + (["channels-last"] if channels_last else [])
                    + (["cuda-graphs"] if graphs else []))


def check_options(precision: str, channels_last: Any, cuda_graphs: Any) -> None:
    """Validate option types early so a bad config names the field."""
    if (precision or "auto").lower() not in PRECISIONS:
        raise ConfigError(f"precision '{precision}' is not one of {', '.join(PRECISIONS)}")
    for name, value in (("channels_last", channels_last), ("cuda_graphs", cuda_graphs)):
        if value is not None and not isinstance(value, bool):
            raise ConfigError(f"{name} must be true or false, got {value!r}")
