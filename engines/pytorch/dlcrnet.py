"""DeepLabCut 3's multi-animal bottom-up network: a timm backbone and the ``DLCRNetHead``.

DeepLabCut 3 trains multi-animal projects (``resnet_50``, ``hrnet_w32``, ``dlcrnet_*``) with a
head that predicts part scores, location refinement and part-affinity fields, refined over
``num_stages`` stages (Lauer et al., Nature Methods 2022). Written here from the published
description and DeepLabCut's checkpoints' layout so that their weights load unchanged:

- ``convt1`` / ``convt3`` / ``convt4``: 3×3 stride-2 transposed convolutions, padded to an
  exact 2h×2w grid, of the backbone features into scores (K), fields (2E) and
  ``features_dim`` features; ``convt2`` does the same for locref (2K).
- Each stage ``s`` maps the concatenation (scores, fields, features) through one 3×3
  convolution each (``hm_ref_layers[s]``, ``paf_ref_layers[s]``) to new scores and fields;
  from the second stage on, the new scores add to the previous ones (a residual).
- The output layers ``heatmap`` / ``paf`` (on the last stage's concatenation) and ``locref``
  (on ``convt2``'s output) are DeepLabCut's unpadded 3×3 stride-2 transposed convolutions:
  a (4h+1)×(4w+1) grid at a quarter of the backbone's stride, decoded at cell centres.

With ``num_stages: 0`` the three output layers sit directly on the backbone (stride halved).
Outputs follow :class:`~posed.engines.pytorch.model.BottomUpNet`: logits N×K×h×w, locref
N×2K×h×w, fields N×2E×h×w with channels (x0, y0, x1, y1, ...).
"""

from __future__ import annotations

import torch
from torch import nn

from posed.engines.pytorch.model import MapsNet, build_backbone

__all__ = ["DLCRNet"]


def _up2(cin: int, cout: int) -> nn.ConvTranspose2d:
    """The stage layers' 2× upsampling: padded so the grid is exactly twice the input's."""
    return nn.ConvTranspose2d(cin, cout, 3, stride=2, padding=1, output_padding=1)


class DLCRNet(MapsNet):
    """Backbone + DLCRNetHead; takes float N×3×H×W RGB on the 0..255 scale, as
    :class:`~posed.engines.pytorch.model.PoseNet` does (normalisation inside the network)."""

    head = "dlcrnet"

    def __init__(self, net: str, num_keypoints: int, paf_edges: list[tuple[int, int]],
                 output_stride: int = 16, *, num_stages: int = 5, features_dim: int = 128,
                 mean: tuple[float, float, float] = (0.485, 0.456, 0.406),
                 std: tuple[float, float, float] = (0.229, 0.224, 0.225),
                 timm_model: str | None = None, score: str = "sigmoid",
                 pretrained: bool | str = False) -> None:
        super().__init__()
        self.score = score
        self.paf_edges = [(int(a), int(b)) for a, b in paf_edges]
        self.num_stages = int(num_stages)
        self.backbone = build_backbone(net, output_stride, pretrained, timm_model)
        cin = self.backbone.feature_info.channels()[-1]
        k, p = num_keypoints, 2 * len(self.paf_edges)
        # DeepLabCut builds these four even without stages; only the staged network uses them.
        self.convt1, self.convt2 = _up2(cin, k), _up2(cin, 2 * k)
        self.convt3, self.convt4 = _up2(cin, p), _up2(cin, features_dim)
        refined = features_dim + k + p
        self.hm_ref_layers = nn.ModuleList(
            nn.Conv2d(refined, k, 3, padding=1) for _ in range(self.num_stages))
        self.paf_ref_layers = nn.ModuleList(
            nn.Conv2d(refined, p, 3, padding=1) for _ in range(self.num_stages))
        staged = self.num_stages > 0
        self.heatmap = nn.ConvTranspose2d(refined if staged else cin, k, 3, stride=2)
        self.locref = nn.ConvTranspose2d(2 * k if staged else cin, 2 * k, 3, stride=2)
        self.paf = nn.ConvTranspose2d(refined if staged else cin, p, 3, stride=2)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1) * 255.0, persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1) * 255.0, persistent=False)
        self.stride = output_stride / (4 if staged else 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = (x - self.mean) / self.std
        feats = self.backbone(x)[-1]
        if self.num_stages == 0:
            return self.heatmap(feats), self.locref(feats), self.paf(feats)
        heat, paf, features = self.convt1(feats), self.convt3(feats), self.convt4(feats)
        stage_in = torch.cat((heat, paf, features), dim=1)
        for i, (hm_layer, paf_layer) in enumerate(zip(self.hm_ref_layers, self.paf_ref_layers)):
            new_heat = hm_layer(stage_in)
            heat = new_heat + heat if i > 0 else new_heat
            paf = paf_layer(stage_in)
            stage_in = torch.cat((heat, paf, features), dim=1)
        return self.heatmap(stage_in), self.locref(self.convt2(feats)), self.paf(stage_in)
