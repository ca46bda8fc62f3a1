"""The PyTorch fast path: device decoding, precision choice, CUDA-graph pool and its fallbacks.

CUDA itself is exercised by benchmarks/gpu_check.sh on a GPU machine; here the selection
logic runs against fakes and everything else on the CPU.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from posed.engines import api  # noqa: E402
from posed.engines.bundle import load_bundle  # noqa: E402
from posed.engines.decoding import decode  # noqa: E402
from posed.engines.pytorch import accel  # noqa: E402
from posed.errors import CapabilityError, ConfigError  # noqa: E402

DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo" / "model"
CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def _maps(seed: int, n: int = 3, k: int = 4, h: int = 7, w: int = 9):
    rng = np.random.default_rng(seed)
    scores = rng.normal(0.3, 0.5, (n, k, h, w)).astype(np.float32)  # overshoots 0..1 too
    locref = rng.normal(0, 1, (n, 2 * k, h, w)).astype(np.float32)
    scores[0, 1, 2, 3] = scores[0, 1, 5, 1] = 9.0  # a tie: the first index wins in both
    scores[1, 2, 4, 4] = np.nan  # a non-finite map
    scores[2, 0] = -np.inf
    return scores, locref


@pytest.mark.parametrize("window", [None, 6.0, 30.0])
@pytest.mark.parametrize("seed", range(4))
def test_device_decoding_equals_the_shared_numpy_decoding(seed, window):
    scores, locref = _maps(seed)
    want = decode(scores, locref, 4.0, 7.2801, window)
    got = accel.decode_torch(torch.from_numpy(scores), torch.from_numpy(locref), 4.0, 7.2801,
                             window).numpy()
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5, equal_nan=True)
    assert got[1, 2].tolist()[2] == 0.0 and np.isnan(got[1, 2, :2]).all()
    # Without locref the cell centres are returned.
    np.testing.assert_allclose(accel.decode_torch(torch.from_numpy(scores), None, 4.0, 1.0).numpy(),
                               decode(scores, None, 4.0, 1.0), atol=1e-6, equal_nan=True)


def test_precision_auto_is_fp16_on_cuda_and_fp32_on_cpu():
    assert accel.resolve_precision("auto", CPU)[0] == torch.float32
    assert accel.resolve_precision("auto", CUDA)[0] == torch.float16
    assert accel.resolve_precision("bf16", CUDA)[0] == torch.bfloat16
    assert accel.resolve_precision("FP32", CUDA)[0] == torch.float32


def test_reduced_precision_on_the_cpu_needs_the_hardware():
    with pytest.raises(CapabilityError, match="fp16.*CUDA"):
        accel.resolve_precision("fp16", CPU)
    with pytest.raises(CapabilityError, match="no native bf16"):
        accel.resolve_precision("bf16", CPU, bf16_support=None)
    dtype, reason = accel.resolve_precision("bf16", CPU, bf16_support="amx_bf16")
    assert dtype == torch.bfloat16 and "amx_bf16" in reason
    with pytest.raises(ConfigError, match="precision 'int4' is not one of auto, fp32, fp16, bf16"):
        accel.resolve_precision("int4", CPU)


def test_bf16_capability_is_read_from_cpu_flags(tmp_path):
    from posed.engines.cpu import cpu_flags, native_bf16

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512_bf16 amx_tile amx_bf16\n")
    assert cpu_flags(info) >= {"avx512_bf16", "amx_bf16"}
    assert accel.cpu_bf16_support(cpu_flags(info)) == "amx_bf16"
    assert native_bf16({"avx512_bf16"}) == "avx512_bf16"
    assert accel.cpu_bf16_support({"avx512f", "avx512_vnni"}) is None
    assert cpu_flags(tmp_path / "absent") == set()


class _FakeCapture:
    """Stands in for CUDA graph capture: counts captures, optionally fails for some shapes."""

    def __init__(self, fail_for: set[tuple[int, ...]] = frozenset()) -> None:
        self.fail_for = fail_for
        self.captured: list[tuple[int, ...]] = []

    def __call__(self, fn, example):
        key = tuple(example.shape)
        if key in self.fail_for:
            raise RuntimeError("operation not permitted when stream is capturing")
        self.captured.append(key)
        return lambda x: fn(x) + 1000  # marks results that came through a "graph"


def test_graph_pool_captures_once_per_shape_and_evicts_the_oldest():
    capture = _FakeCapture()
    pool = accel.GraphPool(lambda x: x.float().sum().reshape(1), capture, size=2)
    a, b, c = torch.zeros(1, 4, 4, 3), torch.zeros(2, 4, 4, 3), torch.zeros(1, 8, 8, 3)
    for x in (a, a, b, a, b):
        assert pool(x).item() == 1000
    assert capture.captured == [(1, 4, 4, 3), (2, 4, 4, 3)]
    pool(c)  # a third shape: the least recently used (a) goes
    assert list(pool.graphs) == [(2, 4, 4, 3), (1, 8, 8, 3)]
    pool(a)
    assert capture.captured[-1] == (1, 4, 4, 3) and len(capture.captured) == 4


def test_graph_capture_failure_falls_back_to_eager_for_that_shape(caplog):
    capture = _FakeCapture(fail_for={(1, 4, 4, 3)})
    pool = accel.GraphPool(lambda x: x.float().sum().reshape(1), capture)
    with caplog.at_level(logging.WARNING, logger="posed.engines.pytorch.accel"):
        for _ in range(3):
            assert pool(torch.ones(1, 4, 4, 3)).item() == 48  # eager result, no +1000
    warnings = [r for r in caplog.records if "capture failed" in r.getMessage()]
    assert len(warnings) == 1 and "1×4×4×3" in warnings[0].getMessage()
    assert pool(torch.ones(2, 4, 4, 3)).item() == 1096  # other shapes still use graphs


def test_fast_path_is_cpu_only_without_graphs_even_when_asked():
    runner = api.load_model(load_bundle(DEMO), "pytorch", device="cpu", cuda_graphs=True)
    assert runner.fast.pool is None and runner.precision == "fp32"


def _frames(n: int = 6) -> np.ndarray:
    from posed.engines.video import VideoReader

    with VideoReader(DEMO.parent / "clip.mp4") as reader:
        _, frames = next(iter(reader.batches(n)))
    return frames


def test_cpu_runner_equals_the_model_with_numpy_decoding():
    bundle = load_bundle(DEMO)
    runner = api.load_model(bundle, "pytorch", device="cpu")
    frames = _frames()
    with torch.inference_mode():
        heat, loc = runner.model(torch.from_numpy(frames).permute(0, 3, 1, 2).float())
        want = decode(runner.model.probabilities(heat).numpy(), loc.numpy(), runner.model.stride,
                      bundle.locref_stdev)
    np.testing.assert_allclose(runner.predict(frames), want, atol=1e-4)


def test_channels_last_gives_the_same_keypoints_on_cpu():
    bundle = load_bundle(DEMO)
    frames = _frames()
    ref = api.load_model(bundle, "pytorch", device="cpu").predict(frames)
    nhwc = api.load_model(bundle, "pytorch", device="cpu", channels_last=True)
    assert nhwc.precision == "fp32 channels-last"
    out = nhwc.predict(frames)
    assert np.abs(out[..., :2] - ref[..., :2]).max() < 0.01
    assert np.abs(out[..., 2] - ref[..., 2]).max() < 1e-4


@pytest.mark.skipif(accel.cpu_bf16_support() is None, reason="this CPU has no native bf16")
def test_bf16_on_a_cpu_that_has_it_stays_close_to_fp32():
    bundle = load_bundle(DEMO)
    frames = _frames()
    ref = api.load_model(bundle, "pytorch", device="cpu").predict(frames)
    out = api.load_model(bundle, "pytorch", device="cpu", precision="bf16").predict(frames)
    assert np.nanmax(np.hypot(*(out[..., :2] - ref[..., :2]).transpose(2, 0, 1))) < 2.0


def test_bad_runner_options_are_config_errors():
    bundle = load_bundle(DEMO)
    with pytest.raises(ConfigError, match="precision 'half'"):
        api.load_model(bundle, "pytorch", device="cpu", precision="half")
    with pytest.raises(ConfigError, match="cuda_graphs must be true or false"):
        api.load_model(bundle, "pytorch", device="cpu", cuda_graphs="yes")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (benchmarks/gpu_check.sh)")
@pytest.mark.gpu
def test_cuda_fp16_graphs_match_fp32_within_the_stated_tolerance():
    bundle = load_bundle(DEMO)
    frames = _frames(8)
    ref = api.load_model(bundle, "pytorch", device="cuda", precision="fp32",
                            cuda_graphs=False).predict(frames)
    fast = api.load_model(bundle, "pytorch", device="cuda")
    assert fast.precision == "fp16 channels-last cuda-graphs"
    for _ in range(3):  # capture, then replays
        out = fast.predict(frames)
    assert fast.fast.pool.graphs and not fast.fast.pool.eager
    assert np.nanmax(np.hypot(*(out[..., :2] - ref[..., :2]).transpose(2, 0, 1))) < 0.2
    assert np.nanmax(np.abs(out[..., 2] - ref[..., 2])) < 1e-2
    cpu = api.load_model(bundle, "pytorch", device="cpu").predict(frames)
    assert np.nanmax(np.abs(ref - cpu)) < 1e-2  # fp32 on the GPU equals the CPU


def test_daemon_model_section_passes_fast_path_options_and_refuses_misfits(tmp_path):
    from posed.daemon.config import parse_config
    from posed.daemon.service import runner_options

    def section(**model):
        return parse_config({"model": {"bundle": str(DEMO), **model},
                             "cameras": [{"id": "c", "source": "x.mp4"}]}, "d.yaml").model

    bundle = load_bundle(DEMO)
    engine, options = runner_options(section(device="cuda:1", precision="fp16", cuda_graphs=False),
                                     bundle)
    assert engine.value == "pytorch"
    assert options == {"device": "cuda:1", "precision": "fp16", "cuda_graphs": False,
                       "channels_last": None}
    with pytest.raises(ConfigError, match="key 'model.precision'"):
        runner_options(section(precision="fp16", engine="onnx"), bundle)
    with pytest.raises(ConfigError, match="model.precision"):
        parse_config({"model": {"bundle": str(DEMO), "precision": "int8"},
                      "cameras": [{"id": "c", "source": "x.mp4"}]}, "d.yaml")


# ----------------------------------------------------------------------------- host threads and memory

def _run_python(code: str) -> str:
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().splitlines()[-1]


def test_handoff_ends_the_loading_threads_openmp_workers_and_the_runner_still_works(tmp_path):
    """After a handoff the OpenMP workers that served the loading thread are gone (the
    inference thread then gets the cores to itself), and the runner gives the same poses
    from a new thread and again from the loading thread."""
    pytest.importorskip("torch")
    from posed.engines.pytorch.backend import random_bundle

    random_bundle("mobilenet_v2_0.35", tmp_path / "b", keypoints=2)
    out = _run_python(f"""
import json, os, threading
import numpy as np, torch
torch.set_num_threads(2)
from posed.engines import api
if "OpenMP" not in torch.__config__.parallel_info():
    print(json.dumps(None)); raise SystemExit
tasks = lambda: len(os.listdir("/proc/self/task"))
r = api.load_model({str(tmp_path / 'b')!r}, device="cpu")
frames = np.random.default_rng(0).integers(0, 255, (1, 96, 128, 3), dtype=np.uint8)
want = r.predict(frames)
before = tasks()
r.handoff()
# libgomp's workers leave the pool's last barrier and then exit on their own: poll briefly
# rather than read the count at one instant (a loaded machine may not have run them yet).
import time
deadline = time.monotonic() + 10
while tasks() > before - 1 and time.monotonic() < deadline:
    time.sleep(0.01)
after = tasks()
got = {{}}
t = threading.Thread(target=lambda: got.update(p=r.predict(frames))); t.start(); t.join()
again = r.predict(frames)
print(json.dumps([before, after, bool(np.array_equal(got["p"], want)), bool(np.array_equal(again, want))]))
""")
    result = __import__("json").loads(out)
    if result is None:
        pytest.skip("this torch build does not use OpenMP")
    before, after, same_in_thread, same_again = result
    assert after == before - 1  # the one worker of a two-thread pool ended
    assert same_in_thread and same_again


def test_keep_freed_memory_stops_per_call_page_faults():
    """With the allocator settings, allocating and freeing a large buffer again and again
    reuses the same pages; without them glibc maps and faults in fresh ones every time."""
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        pytest.skip("glibc only")
    code = """
import json, resource, sys
import numpy as np
from posed.engines.memory import keep_freed_memory
applied = keep_freed_memory() if sys.argv[-1] == "on" else None
assert applied is None or keep_freed_memory() == applied  # idempotent
def churn(n):
    for _ in range(n):
        a = np.ones(12 << 20)  # 96 MiB, above glibc's largest adaptive mmap threshold
        del a
churn(2)
r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
churn(10)
print(json.dumps([applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0]))
"""
    import json
    import subprocess
    import sys

    def run(mode: str) -> list:
        proc = subprocess.run([sys.executable, "-c", code, mode], capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout.strip().splitlines()[-1])

    applied, faults_on = run("on")
    _, faults_off = run("off")
    assert applied and applied >= 32 << 20
    # Without the settings each 96 MiB buffer faults in again: about 24,000 4 KiB pages, or
    # about 48 where transparent huge pages are on (seen on some CI machines); with them, ~0.
    assert faults_off >= 10 * 40
    assert faults_on * 10 < faults_off


ISA_LIMITED = """
import types
import torch
from posed.engines.cpu import native_bf16
from posed.engines.pytorch import accel
from posed.errors import PosedError
print("flags:", native_bf16())
try:
    accel.resolve_precision("bf16", torch.device("cpu"))
    print("pytorch: ran")
except PosedError as exc:
    print("pytorch:", exc)
from posed.engines.openvino.backend import compile_bundle
try:
    compile_bundle(types.SimpleNamespace(format="onnx", path="m", weights_path="m.onnx"), "bf16")
    print("openvino: ran")
except PosedError as exc:
    print("openvino:", exc)
"""


def test_a_onednn_isa_limit_below_bf16_means_no_native_bf16():
    """`make test-avx2` holds oneDNN to AVX2 on CPUs whose flags list bf16: bf16 is then out
    of reach (OpenVINO's plugin crashed on it), so every engine treats the CPU as without it."""
    import subprocess
    import sys

    from posed.engines.cpu import isa_limit_allows_bf16, native_bf16

    pytest.importorskip("openvino")
    assert isa_limit_allows_bf16({})
    assert isa_limit_allows_bf16({"ONEDNN_MAX_CPU_ISA": "avx512_core_amx"})
    assert not isa_limit_allows_bf16({"ONEDNN_MAX_CPU_ISA": "AVX2"})
    assert not isa_limit_allows_bf16({"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_VNNI"})
    assert native_bf16({"avx512_bf16"}, {"ONEDNN_MAX_CPU_ISA": "AVX2"}) is None
    # In a child process: oneDNN reads the limit once, and every later OpenVINO call of this
    # worker would run under it (a bf16 one then crashed a worker in CI).
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2"}
    out = subprocess.run([sys.executable, "-c", ISA_LIMITED], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "flags: None"
    assert lines[1].startswith("pytorch: precision 'bf16': this CPU has no native bf16")
    assert lines[2].startswith("openvino: precision 'bf16': this CPU has no native bf16")
