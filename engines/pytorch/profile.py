"""What ``posed bench`` measures inside PyTorch: FLOPs of a model, a torch matmul, the CUDA
device. The bench never imports torch; it asks the registry for these
(``capability("pytorch", "count_flops")``), which the backend module re-exports."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode


def count_flops(runner: Any, size: tuple[int, int]) -> float:
    """GFLOP of one forward pass of an eager PyTorch runner's model on one frame.

    Args:
        runner: A runner of a ``safetensors`` bundle (it has ``.model``).
        size: The frame's (width, height).
    """
    w, h = size
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        runner.model(torch.zeros(1, 3, h, w))
    return counter.get_total_flops() / 1e9


def matmul_call(a: np.ndarray) -> Callable[[], Any]:
    """A call that multiplies the square matrix ``a`` by itself with torch (no copy of ``a``)."""
    x = torch.from_numpy(a)
    return lambda: torch.matmul(x, x)


def cuda_device() -> dict[str, Any] | None:
    """The first CUDA device's name and the CUDA version torch was built with; None without."""
    if not torch.cuda.is_available():
        return None
    return {"device": torch.cuda.get_device_name(0), "cuda": torch.version.cuda}
