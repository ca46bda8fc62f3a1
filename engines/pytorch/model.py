"""DeepLabCut-style single-animal pose network in PyTorch: timm backbone + deconv heads."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import torch
from torch import nn

from posed.errors import ConfigError, ModelLoadError, reason

log = logging.getLogger(__name__)

SCORES = ("sigmoid", "clip")

# Head name -> (padding, output_padding) of the 3x3 stride-2 transposed convolutions.
# ``deconv3x3s2`` (posed's own) gives a 2h x 2w grid. ``deconv3x3s2_nopad`` is DeepLabCut 3's
# HeatmapHead layer: a (2h+1) x (2w+1) grid whose cell i is cell i-1 of the padded head, so
# imported DeepLabCut weights need it to decode to the same pixels with the shared
# (i + 0.5) * stride convention.
# ``conv1x1`` is DeepLabCut 3's top-down HeatmapHead: one 1x1 convolution at the backbone's
# own stride (its crops are small; no upsampling).
HEADS = {"deconv3x3s2": (1, 1), "deconv3x3s2_nopad": (0, 0), "conv1x1": None}

# posed net name -> timm model name
TIMM_NAMES = {
    "resnet_50": "resnet50",
    "resnet_18": "resnet18",
    "mobilenet_v2_1.0": "mobilenetv2_100",
    "mobilenet_v2_0.35": "mobilenetv2_035",
    "efficientnet_b0": "efficientnet_b0",
    # DeepLabCut 3's resnet_50: a GroupNorm ResNet-50 with DeepLabCut's unpadded heads (posed's
    # resnet_50 is the BatchNorm one). Trained by posed, it is written in DeepLabCut's layout.
    "dlc_resnet_50": "resnet50_gn",
}

# posed net name -> head, where it is not posed's own ``deconv3x3s2``.
NET_HEADS = {"dlc_resnet_50": "deconv3x3s2_nopad"}


def build_backbone(net: str, output_stride: int, pretrained: bool | str = False,
                   timm_model: str | None = None) -> nn.Module:
    """A timm feature extractor returning the last (dilated) stage.

    ``pretrained=True`` asks timm for ImageNet weights (needs internet or a warm cache);
    a string is a local weights file (``.safetensors`` or a ``torch.save`` state dict,
    loaded with ``weights_only=True``). ``timm_model`` overrides the timm architecture
    behind ``net`` (imported DeepLabCut models use e.g. ``resnet50_gn``).
    """
    import timm

    if timm_model is None:
        if net not in TIMM_NAMES:
            raise ConfigError(f"net '{net}' is not known (known: {', '.join(TIMM_NAMES)})")
        timm_model = TIMM_NAMES[net]
    if is_hrnet(timm_model):
        # DeepLabCut's HRNet: the stride-4 high-resolution branch after the last fusion (the
        # network computes every branch; only the first is returned).
        if output_stride != 4:
            raise ConfigError(f"HRNet '{timm_model}' has output stride 4, not {output_stride}")
        layout = {"out_indices": (1,), "feature_location": ""}
    else:
        layout = {"out_indices": (-1,), "output_stride": output_stride}
    try:
        model = timm.create_model(timm_model, pretrained=pretrained is True, features_only=True,
                                  **layout)
    except RuntimeError as exc:  # timm: "Unknown model (...)"
        raise ModelLoadError(f"timm model '{timm_model}': {reason(exc)}") from None
    if isinstance(pretrained, str) and pretrained:
        state = load_state_dict(Path(pretrained))
        # Classifier weights of an ImageNet checkpoint have no place in a feature extractor.
        missing, unexpected = model.load_state_dict(state, strict=False)
        unexpected = [k for k in unexpected if not k.startswith(("fc.", "classifier.", "conv_head.", "bn2."))]
        if unexpected or len(missing) > 0:
            raise ModelLoadError(
                f"{pretrained}: does not fit {net} ({len(missing)} missing, "
                f"{len(unexpected)} unexpected tensors, e.g. {(missing + unexpected)[:2]})")
        log.info("loaded backbone weights from %s", pretrained)
    return model


def is_hrnet(timm_model: str) -> bool:
    """True for timm's HRNet family (``hrnet_w18``, ``hrnet_w32``, ...)."""
    return timm_model.startswith("hrnet")


def load_for_inference(model: nn.Module, path: Path) -> nn.Module:
    """``model`` with the weights of ``path``, in eval mode, its batch norms folded into its
    convolutions (:mod:`posed.engines.pytorch.fold`): for runners that own their model, never
    for one that is still being trained."""
    from posed.engines.pytorch.fold import fold_batchnorm

    try:
        model.load_state_dict(load_state_dict(path))
    except RuntimeError as exc:
        raise ModelLoadError(f"{path}: weights do not fit the architecture "
                             f"({reason(exc)})") from None
    fold_batchnorm(model.eval())
    return model


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or a torch file, never unpickling code."""
    if not path.is_file():
        raise ModelLoadError(f"{path}: weights file missing")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's message suggests weights_only=False; posed never does that for a file.
        raise ModelLoadError(f"{path}: refused: it holds pickled objects other than tensors "
                             "(posed reads weights with weights_only=True and never runs code "
                             "from a file)") from exc
    except Exception as exc:  # corrupt files surface as many different exception types
        raise ModelLoadError(f"{path}: cannot read weights ({type(exc).__name__}: "
                             f"{reason(exc)})") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ModelLoadError(f"{path}: not a state dict")
    return state


class MapsNet(nn.Module):
    """What every posed network shares: scores from heatmap outputs and the output grid.
    Subclasses set ``score`` and the ``mean`` buffer, and return the heatmap first."""

    score: str

    def probabilities(self, heat: torch.Tensor) -> torch.Tensor:
        """Heatmap outputs to the scores decoding takes the argmax of, as the model was trained."""
        # For ``clip`` models the map is passed on raw: DeepLabCut takes the argmax before
        # clipping, and decoding clips the likelihood it reads to [0, 1].
        return torch.sigmoid(heat) if self.score == "sigmoid" else heat

    @torch.no_grad()
    def grid_size(self, height: int, width: int) -> tuple[int, int]:
        """Output grid (h, w) for an input of ``height``×``width``, found by a dry run."""
        was_training = self.training
        self.eval()
        heat = self.forward(torch.zeros(1, 3, height, width, device=self.mean.device))[0]
        self.train(was_training)
        return int(heat.shape[-2]), int(heat.shape[-1])


class PoseNet(MapsNet):
    """Backbone + heatmap and location-refinement heads.

    Takes RGB images as float N×3×H×W on the 0..255 scale (normalisation is part of the
    network, so exported graphs accept raw pixels) and returns heatmap logits N×K×h×w and
    locref offsets N×2K×h×w at ``stride = output_stride / 2`` (``output_stride`` with the
    ``conv1x1`` head). ``score`` says how heatmap
    outputs become probabilities: ``sigmoid`` (posed's models, trained with BCE) or ``clip``
    to [0, 1] (DeepLabCut 3 models, trained with MSE on Gaussian targets). ``head`` is a
    key of :data:`HEADS` (``deconv3x3s2_nopad`` for imported DeepLabCut 3 models).
    """

    def __init__(self, net: str, num_keypoints: int, output_stride: int = 16,
                 pretrained: bool | str = False,
                 mean: tuple[float, float, float] = (0.485, 0.456, 0.406),
                 std: tuple[float, float, float] = (0.229, 0.224, 0.225),
                 timm_model: str | None = None, score: str = "sigmoid",
                 head: str | None = None) -> None:
        super().__init__()
        head = NET_HEADS.get(net, "deconv3x3s2") if head is None else head
        if score not in SCORES:
            raise ConfigError(f"score '{score}' is not one of {', '.join(SCORES)}")
        if head not in HEADS:
            raise ConfigError(f"head '{head}' is not one of {', '.join(HEADS)}")
        self.score = score
        self.head = head
        self.backbone = build_backbone(net, output_stride, pretrained, timm_model)
        channels = self.backbone.feature_info.channels()[-1]
        if head == "conv1x1":
            self.heatmap = nn.Conv2d(channels, num_keypoints, 1)
            self.locref = nn.Conv2d(channels, 2 * num_keypoints, 1)
        else:
            pad, out_pad = HEADS[head]
            self.heatmap = nn.ConvTranspose2d(channels, num_keypoints, 3, stride=2, padding=pad,
                                              output_padding=out_pad)
            self.locref = nn.ConvTranspose2d(channels, 2 * num_keypoints, 3, stride=2,
                                             padding=pad, output_padding=out_pad)
        # Heatmaps start near zero probability: a sparse target otherwise takes long to learn.
        nn.init.normal_(self.heatmap.weight, std=0.001)
        nn.init.constant_(self.heatmap.bias, -4.0)
        nn.init.normal_(self.locref.weight, std=0.001)
        nn.init.zeros_(self.locref.bias)
        # Not persistent: normalisation is recorded in the bundle, weights files hold weights only.
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1) * 255.0, persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1) * 255.0, persistent=False)
        self.stride = output_stride if head == "conv1x1" else output_stride / 2

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = (x - self.mean) / self.std
        feats = self.backbone(x)[-1]
        return self.heatmap(feats), self.locref(feats)


class BottomUpNet(PoseNet):
    """:class:`PoseNet` plus a part-affinity-field head: the bottom-up multi-animal model.

    Returns heatmap logits N×K×h×w, locref N×2K×h×w and PAFs N×2E×h×w (channels x0, y0, x1,
    y1, ... for the E skeleton edges, the layout :mod:`posed.engines.assembly` reads). The
    heatmap and locref heads are the single-animal ones, so K covers every body part
    (multi-animal parts, then unique parts); the PAF head is one more transposed convolution
    on the same features. ``paf_edges`` are the skeleton's (first, second) part indices.
    """

    def __init__(self, net: str, num_keypoints: int, paf_edges: list[tuple[int, int]],
                 output_stride: int = 16, pretrained: bool | str = False, **kwargs) -> None:
        super().__init__(net, num_keypoints, output_stride, pretrained, **kwargs)
        channels = self.backbone.feature_info.channels()[-1]
        pad, out_pad = HEADS[self.head]
        self.paf_edges = [(int(a), int(b)) for a, b in paf_edges]
        self.paf = nn.ConvTranspose2d(channels, 2 * len(self.paf_edges), 3, stride=2,
                                      padding=pad, output_padding=out_pad)
        # Fields start at zero, the value of almost every target cell.
        nn.init.normal_(self.paf.weight, std=0.001)
        nn.init.zeros_(self.paf.bias)

    def forward(  # type: ignore[override]
            self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = (x - self.mean) / self.std
        feats = self.backbone(x)[-1]
        return self.heatmap(feats), self.locref(feats), self.paf(feats)
