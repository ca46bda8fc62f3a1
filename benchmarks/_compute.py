"""The arithmetic side of a latency figure: a model's GFLOP per frame and the machine's GEMM
peak, measured in the same run, so a result can say how close to the hardware it got."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import numpy as np


def model_gflop(bundle: Path, height: int, width: int) -> float:
    """Multiply-adds x 2 of one frame through the bundle's PyTorch network (convolutions,
    transposed convolutions and linear layers; what dominates a pose model)."""
    import torch
    from torch import nn

    from posed.engines.bundle import load_bundle
    from posed.exporters.torch import _native

    net = _native(load_bundle(bundle))
    macs = [0]

    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        if isinstance(module, nn.Conv2d):
            k = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            macs[0] += output.numel() * k
        elif isinstance(module, nn.ConvTranspose2d):
            k = module.out_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            macs[0] += inputs[0].numel() * k
        elif isinstance(module, nn.Linear):
            macs[0] += output.numel() * module.in_features

    handles = [m.register_forward_hook(hook) for m in net.modules()
               if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))]
    with torch.inference_mode():
        net(torch.zeros(1, height, width, 3, dtype=torch.uint8))
    for h in handles:
        h.remove()
    return 2 * macs[0] / 1e9


def gemm_peak(seconds: float = 3.0, n: int = 2048) -> dict[str, float]:
    """Best GFLOP/s of an n×n float32 matrix product (PyTorch's BLAS, all its threads), of a
    bfloat16 one where the CPU has native bf16, and GOP/s of a u8×s8 one in ONNX Runtime
    (``MatMulInteger``: the kernels its INT8 convolutions use; PyTorch's CPU int8 matmul is a
    reference loop)."""
    import torch

    out: dict[str, float] = {"threads": torch.get_num_threads(), "n": n}
    a, b = torch.randn(n, n), torch.randn(n, n)
    out["fp32_gflops"] = _best(lambda: torch.mm(a, b), 2 * n**3, seconds)
    from posed.engines.pytorch.accel import cpu_bf16_support

    if cpu_bf16_support() is not None:  # AMX / AVX512-BF16: the ceiling of the bf16 rows
        a16, b16 = a.bfloat16(), b.bfloat16()
        out["bf16_gflops"] = _best(lambda: torch.mm(a16, b16), 2 * n**3, seconds)
    try:
        out["int8_gops"] = _best(_int8_matmul(n), 2 * n**3, seconds)
    except ImportError:
        pass
    return out


def constant_work(target_ms: float) -> tuple[Callable[[int], Any], str]:
    """A call of constant arithmetic lasting about ``target_ms``: an fp32 matrix product
    (PyTorch's BLAS, all its threads); returns it and its description."""
    import torch

    from posed.bench.stats import time_calls

    def matmul(n: int) -> Callable[[int], Any]:
        a, b = torch.randn(n, n), torch.randn(n, n)
        return lambda _i: torch.mm(a, b)

    probe = matmul(1024)
    probe(0)
    ms = float(np.median(time_calls(probe, 0.5)))
    n = max(128, int(1024 * (target_ms / ms) ** (1 / 3)) // 64 * 64)  # work grows as n**3
    return matmul(n), f"fp32 {n}x{n} matmul, {torch.get_num_threads()} threads"


def paired_flatness(runner: Any, frames: np.ndarray, seconds: float,
                    calls: int = 50) -> dict[str, Any]:
    """A runtime's latency spread next to the machine's: the runner (batch 1) and
    :func:`constant_work` as long as its median call take turns, ``calls`` calls at a time,
    until the runner's calls add up to ``seconds``; so both meet the same spells of the
    machine (a shared VM's host slowing the vCPUs down, frequency changes). The work's
    arithmetic never changes, so whatever spread it shows is the machine's; a runtime at the
    same spread adds none."""
    from posed.bench.stats import flatness, percentiles, time_calls

    for i in range(2):
        runner.predict(frames[i:i + 1])
    target = float(np.median(time_calls(lambda i: runner.predict(frames[i % len(frames)][None]),
                                        0.0, min_calls=10)))
    work, what = constant_work(target)
    work(0)
    lat: dict[str, list[float]] = {"runtime": [], "constant_work": []}
    while not lat["runtime"] or sum(lat["runtime"]) < seconds * 1000:  # one round at least
        k = len(lat["runtime"])
        lat["runtime"] += time_calls(
            lambda i: runner.predict(frames[(k + i) % len(frames)][None]), 0.0, calls)
        lat["constant_work"] += time_calls(work, 0.0, calls)
    out = {key: {"calls": len(v), **percentiles(v), **flatness(v)} for key, v in lat.items()}
    out["constant_work"]["workload"] = what
    out["round_calls"] = calls
    return out


def _best(fn, flop: float, seconds: float) -> float:
    fn()
    best = np.inf
    t_end = time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return round(flop / best / 1e9, 1)


def _int8_matmul(n: int):
    """A callable running an n×n ``MatMulInteger`` in ONNX Runtime on the CPU."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "b"], ["c"])], "mm",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [n, n]),
         helper.make_tensor_value_info("b", TensorProto.INT8, [n, n])],
        [helper.make_tensor_value_info("c", TensorProto.INT32, [n, n])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feed = {"a": rng.integers(0, 255, (n, n), dtype=np.uint8),
            "b": rng.integers(-128, 127, (n, n), dtype=np.int8)}
    onnx.checker.check_model(model)
    return lambda: session.run(None, feed)
