"""RTMPose (DeepLabCut 3's ``rtmpose_s/m/x``): a CSPNeXt backbone and the RTMCC head, decoded
by SimCC coordinate classification (:func:`posed.engines.decoding.decode_simcc`).

The modules are named as DeepLabCut's state dicts name them (``backbone.stem.0.conv``,
``backbone.stage1.1.blocks.0.conv2.depthwise_conv``, ``head.gau.uv``, ...), so an imported
snapshot loads strictly. Only what inference runs is built: the RTMCC head's gated attention
unit in self-attention form, without relative position bias or rotary encoding (DeepLabCut's
RTMPose configs switch both off; the importer refuses them).

CSPNeXt (arch ``P5``): a three-convolution stem (stride 2), then four stages, each a stride-2
3x3 convolution, a spatial-pyramid pooling block in the last stage, and a CSP layer: two 1x1
branches, one through ``n`` blocks (3x3 convolution, then a depthwise-separable 5x5
convolution, with a residual connection in the first three stages), concatenated, reweighted
by channel attention (global average, 1x1 convolution, hard sigmoid), then fused by a 1x1
convolution. Every convolution is followed by batch norm and SiLU. Output stride 32.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from posed.engines.base import PoseRunner
from posed.engines.bundle import ModelBundle
from posed.engines.pytorch.accel import OpenMPHandoff, select_device
from posed.errors import ConfigError, InferenceError, ModelLoadError

__all__ = ["RTMPoseNet", "SimCCRunner", "build_model"]

# (in channels, out channels, blocks, residual blocks, spatial pyramid pooling) before widening
_P5 = ((64, 128, 3, True, False), (128, 256, 6, True, False), (256, 512, 6, True, False),
       (512, 1024, 3, False, True))


class ConvNormAct(nn.Sequential):
    """Convolution (no bias), batch norm, SiLU: DeepLabCut's ``CSPConvModule`` layout."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False)
        self.norm = nn.BatchNorm2d(cout)
        self.activate = nn.SiLU(inplace=True)


class _SeparableConv(nn.Sequential):
    def __init__(self, cin: int, cout: int, k: int) -> None:
        super().__init__()
        self.depthwise_conv = ConvNormAct(cin, cin, k, groups=cin)
        self.pointwise_conv = ConvNormAct(cin, cout, 1)


class _Block(nn.Module):
    def __init__(self, channels: int, residual: bool) -> None:
        super().__init__()
        self.conv1 = ConvNormAct(channels, channels, 3)
        self.conv2 = _SeparableConv(channels, channels, 5)
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.conv1(x))
        return out + x if self.residual else out


class _ChannelAttention(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fc = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * nn.functional.hardsigmoid(self.fc(nn.functional.adaptive_avg_pool2d(x, 1)))


class _CSPLayer(nn.Module):
    def __init__(self, channels: int, blocks: int, residual: bool, expand: float) -> None:
        super().__init__()
        mid = int(channels * expand)
        self.main_conv = ConvNormAct(channels, mid, 1)
        self.short_conv = ConvNormAct(channels, mid, 1)
        self.final_conv = ConvNormAct(2 * mid, channels, 1)
        self.blocks = nn.Sequential(*[_Block(mid, residual) for _ in range(blocks)])
        self.attention = _ChannelAttention(2 * mid)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        both = torch.cat((self.blocks(self.main_conv(x)), self.short_conv(x)), dim=1)
        return self.final_conv(self.attention(both))


class _SPP(nn.Module):
    def __init__(self, channels: int, kernels: tuple[int, ...] = (5, 9, 13)) -> None:
        super().__init__()
        mid = channels // 2
        self.conv1 = ConvNormAct(channels, mid, 1)
        self.poolings = nn.ModuleList([nn.MaxPool2d(k, 1, k // 2) for k in kernels])
        self.conv2 = ConvNormAct(mid * (len(kernels) + 1), channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        return self.conv2(torch.cat([x] + [pool(x) for pool in self.poolings], dim=1))


class CSPNeXt(nn.Sequential):
    """CSPNeXt P5 scaled by ``deepen`` (blocks) and ``widen`` (channels); stride 32."""

    def __init__(self, deepen: float, widen: float, expand: float = 0.5) -> None:
        super().__init__()
        stem = int(64 * widen)
        self.stem = nn.Sequential(ConvNormAct(3, stem // 2, 3, 2),
                                  ConvNormAct(stem // 2, stem // 2, 3),
                                  ConvNormAct(stem // 2, stem, 3))
        for i, (cin, cout, blocks, residual, spp) in enumerate(_P5):
            cin, cout = int(cin * widen), int(cout * widen)
            layers = [ConvNormAct(cin, cout, 3, 2)] + ([_SPP(cout)] if spp else [])
            layers.append(_CSPLayer(cout, max(round(blocks * deepen), 1), residual, expand))
            self.add_module(f"stage{i + 1}", nn.Sequential(*layers))
        self.channels = int(_P5[-1][1] * widen)


class _ScaleNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.scale = dim ** -0.5
        self.eps = eps
        self.g = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = torch.linalg.norm(x, dim=-1, keepdim=True) * self.scale
        return x / norm.clamp(min=self.eps) * self.g


class _ResScale(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(dim))


class _GAU(nn.Module):
    """Gated attention unit over the K keypoint tokens (self-attention, squared-ReLU kernel)."""

    def __init__(self, dim: int, expansion: float, s: int) -> None:
        super().__init__()
        self.e, self.s = int(dim * expansion), s
        self.ln = _ScaleNorm(dim)
        self.uv = nn.Linear(dim, 2 * self.e + s, bias=False)
        self.gamma = nn.Parameter(torch.ones(2, s))
        self.beta = nn.Parameter(torch.zeros(2, s))
        self.o = nn.Linear(self.e, dim, bias=False)
        self.res_scale = _ResScale(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u, v, base = torch.split(nn.functional.silu(self.uv(self.ln(x))),
                                 [self.e, self.e, self.s], dim=2)
        q, k = torch.unbind(base.unsqueeze(2) * self.gamma + self.beta, dim=2)
        kernel = torch.square(torch.relu(torch.bmm(q, k.transpose(1, 2)) / math.sqrt(self.s)))
        return self.res_scale.scale * x + self.o(u * torch.bmm(kernel, v))


class RTMCCHead(nn.Module):
    """K maps (a k x k convolution), flattened, scale-normed and projected to tokens, one
    gated attention unit, then x and y classifiers over ``split_ratio`` bins per pixel."""

    def __init__(self, cin: int, k: int, featuremap: tuple[int, int], size: tuple[int, int],
                 split: float, kernel: int, hidden: int, expansion: float, s: int) -> None:
        super().__init__()
        flat = featuremap[0] * featuremap[1]
        self.final_layer = nn.Conv2d(cin, k, kernel, 1, kernel // 2)
        self.mlp = nn.Sequential(_ScaleNorm(flat), nn.Linear(flat, hidden, bias=False))
        self.gau = _GAU(hidden, expansion, s)
        self.cls_x = nn.Linear(hidden, int(size[0] * split), bias=False)
        self.cls_y = nn.Linear(hidden, int(size[1] * split), bias=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.gau(self.mlp(torch.flatten(self.final_layer(x), start_dim=2)))
        return self.cls_x(tokens), self.cls_y(tokens)


class RTMPoseNet(nn.Module):
    """Normalisation (raw 0..255 RGB in), CSPNeXt, RTMCC head: x logits N×K×(W·split) and y
    logits N×K×(H·split)."""

    def __init__(self, k: int, spec: dict[str, Any], mean: tuple[float, ...],
                 std: tuple[float, ...]) -> None:
        super().__init__()
        self.backbone = CSPNeXt(float(spec["deepen_factor"]), float(spec["widen_factor"]),
                                float(spec.get("expand_ratio", 0.5)))
        size = tuple(int(v) for v in spec["input_size"])
        self.head = RTMCCHead(self.backbone.channels, k,
                              tuple(int(v) for v in spec["in_featuremap_size"]), size,
                              float(spec["simcc_split_ratio"]),
                              int(spec["final_layer_kernel_size"]),
                              int(spec["hidden_dims"]), float(spec["expansion_factor"]),
                              int(spec["s"]))
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1) * 255.0, persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1) * 255.0, persistent=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(self.backbone((x - self.mean) / self.std))


def build_model(bundle: ModelBundle) -> RTMPoseNet:
    """The RTMPose network a bundle's ``architecture.rtmpose`` describes (weights not loaded)."""
    spec = bundle.architecture.get("rtmpose")
    if not isinstance(spec, dict):
        raise ModelLoadError(f"{bundle.path}: architecture lacks 'rtmpose'")
    try:
        return RTMPoseNet(len(bundle.bodyparts), spec, tuple(bundle.mean), tuple(bundle.std))
    except KeyError as exc:
        raise ModelLoadError(f"{bundle.path}: architecture.rtmpose lacks "
                             f"'{exc.args[0]}'") from None


class SimCCRunner(OpenMPHandoff, PoseRunner):
    """PyTorch inference (eager, or a TorchScript export) of an RTMPose pose model on crops of
    its ``input_size``. Options: ``device``, ``threads``."""

    engine = "pytorch"

    def __init__(self, bundle: ModelBundle, model: Any, device: torch.device) -> None:
        """``model``: an :class:`RTMPoseNet` or its TorchScript (float NCHW 0..255 in, x and
        y logits out)."""
        super().__init__(bundle)
        self.model = model.to(device)
        self.device = device
        self.precision = "fp32"

    @classmethod
    def load(cls, bundle: ModelBundle, device: str = "auto", threads: int | None = None,
             precision: str = "auto", channels_last: bool | None = None,
             cuda_graphs: bool = True, **options: Any) -> "SimCCRunner":
        """``precision`` auto or fp32 (RTMPose runs in float32 here); ``channels_last`` and
        ``cuda_graphs`` (the daemon's PyTorch options) have no effect on it."""
        from posed.engines.pytorch.model import load_state_dict

        if options:
            raise ConfigError(f"pytorch engine (RTMPose): unknown option '{next(iter(options))}'")
        if precision not in ("auto", "fp32"):
            raise ConfigError(f"pytorch engine: RTMPose runs in fp32, not '{precision}'")
        if bundle.format == "torchscript":
            from posed.engines.pytorch.accel import load_torchscript

            return cls(bundle, *load_torchscript(bundle, device, threads))
        if threads:
            torch.set_num_threads(int(threads))
        model = build_model(bundle)
        try:
            model.load_state_dict(load_state_dict(bundle.weights_path))
        except RuntimeError as exc:
            raise ModelLoadError(f"{bundle.weights_path}: weights do not fit RTMPose "
                                 f"({' '.join(str(exc).split())[:300]})") from None
        # Batch norms stay unfolded: SimCC takes an argmax over 512 bins per axis, where
        # folding's rounding could move a near-tied maximum by a bin.
        model.eval()
        return cls(bundle, model, select_device(device))

    @torch.inference_mode()
    def _forward(self, frames: np.ndarray) -> np.ndarray:
        from posed.engines.decoding import decode_rtmpose

        # one contiguous NCHW batch, as DeepLabCut stacks its crops
        x = torch.from_numpy(frames).to(self.device).permute(0, 3, 1, 2).float().contiguous()
        try:
            logits_x, logits_y = self.model(x)
        except RuntimeError as exc:
            raise InferenceError(f"pytorch forward failed: {str(exc).splitlines()[0]}") from exc
        return decode_rtmpose(logits_x.float().cpu().numpy(), logits_y.float().cpu().numpy(),
                              self.bundle.architecture["rtmpose"])
