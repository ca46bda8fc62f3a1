"""GroupNorm with frozen statistics: a per-frame normalisation made a fixed affine.

DeepLabCut 3's ResNet-50 (timm ``resnet50_gn``) normalises every feature map by the mean and
variance of the whole frame, per group of channels. Two costs follow on a CPU. The statistics
are a reduction over the full map at each of the 53 layers, which no runtime can fold into
the convolutions; and every output pixel depends on every input pixel, so a crop (dynamic
cropping) changes the keypoints everywhere, not only near its border: a 256-px window around
the animal moved the openfield keypoints by 3 px.

With a fixed camera the statistics barely change from frame to frame (the arena dominates
them). Measured on a project's own frames and averaged, they turn each GroupNorm into a
per-channel scale and shift: exactly an inference-mode BatchNorm, which the exporters and
the runtimes fold into the preceding convolution. The network becomes local (a crop with a
margin sees the same features as the full frame) and cheaper. The change is an
approximation of the trained model, so exports check it on held-out frames against the
original (:mod:`posed.exporters.torch`, ``freeze_norm``).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from posed.errors import ConfigError


def group_norms(model: nn.Module) -> dict[str, nn.GroupNorm]:
    """The model's GroupNorm layers by qualified name."""
    return {name: m for name, m in model.named_modules() if isinstance(m, nn.GroupNorm)}


def freeze_group_norm(model: nn.Module, frames: np.ndarray,
                      forward: Callable[[torch.Tensor], Any]) -> dict[str, Any]:
    """Replace every GroupNorm of ``model`` by an inference-mode BatchNorm2d holding the group
    statistics of ``frames``, averaged over them (each frame's own mean and variance, as the
    GroupNorm computed them, one frame at a time).

    Args:
        model: The network (changed in place).
        frames: uint8 N×H×W×3 frames from the camera the model will serve, whole frames at
            the size it will see.
        forward: Runs the network on one uint8 1×H×W×3 tensor (e.g. the export wrapper).

    Returns:
        What was done: layers replaced, frames used, and the spread of the statistics over
        the frames (largest relative standard deviation of a group's variance).

    Raises:
        ConfigError: the model has no GroupNorm layer, or no frames were given.
    """
    layers = group_norms(model)
    if not layers:
        raise ConfigError("freeze_norm: the model has no GroupNorm layers (its normalisation "
                          "is already fixed at inference)")
    if len(frames) == 0:
        raise ConfigError("freeze_norm: no frames to measure the statistics on")
    sums: dict[str, list[torch.Tensor]] = {name: [] for name in layers}

    def recorder(name: str, layer: nn.GroupNorm) -> Callable[..., None]:
        def hook(_module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            x = inputs[0].detach().float().reshape(inputs[0].shape[0], layer.num_groups, -1)
            sums[name].append(torch.stack([x.mean(-1), x.var(-1, unbiased=False)]))
        return hook

    handles = [layer.register_forward_pre_hook(recorder(name, layer))
               for name, layer in layers.items()]
    try:
        with torch.inference_mode():
            for frame in frames:
                forward(torch.from_numpy(np.ascontiguousarray(frame[None])))
    finally:
        for handle in handles:
            handle.remove()
    spread = 0.0
    for name, layer in layers.items():
        stats = torch.cat(sums[name], dim=1)  # 2 × frames × groups
        mean, var = stats[0].mean(0), stats[1].mean(0)
        spread = max(spread, float((stats[1].std(0) / var.clamp_min(1e-12)).max())
                     if stats.shape[1] > 1 else 0.0)
        bn = _as_batchnorm(layer, mean, var)
        # timm's GroupNormAct applies dropout and an activation after normalising: keep them.
        tail = [getattr(layer, a) for a in ("drop", "act") if isinstance(getattr(layer, a, None),
                                                                        nn.Module)]
        _replace(model, name, nn.Sequential(bn, *tail).eval() if tail else bn)
    return {"layers": len(layers), "frames": int(len(frames)),
            "max_relative_std_of_variance": round(spread, 4)}


def _as_batchnorm(layer: nn.GroupNorm, mean: torch.Tensor, var: torch.Tensor) -> nn.BatchNorm2d:
    """BatchNorm2d computing ``layer`` with fixed group statistics (each group's mean and
    variance repeated over its channels)."""
    per = layer.num_channels // layer.num_groups
    bn = nn.BatchNorm2d(layer.num_channels, eps=layer.eps, affine=True)
    with torch.no_grad():
        bn.running_mean.copy_(mean.repeat_interleave(per))
        bn.running_var.copy_(var.repeat_interleave(per))
        if layer.affine:
            bn.weight.copy_(layer.weight)
            bn.bias.copy_(layer.bias)
        else:
            bn.weight.fill_(1.0)
            bn.bias.zero_()
    return bn.to(layer.weight.device if layer.affine else mean.device).eval()


def _replace(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, attr, new)
