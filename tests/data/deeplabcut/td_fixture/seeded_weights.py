"""The weights of the top-down fixture: a pure function of each PyTorch state-dict tensor's
name and shape (numpy's ``RandomState`` seeded with ``zlib.crc32(name)``, a stream numpy keeps
fixed across versions), so that DeepLabCut's environment (which wrote the reference) and
posed's (which checks it) build the same weights without committing ~100 MB of snapshots
(ResNet-50 pose model, Faster R-CNN MobileNetV3 and SSDLite detectors).

``value(name, shape)`` returns float32 (int64 zeros for ``num_batches_tracked``).

Pose model (``backbone.model.*``: timm ``resnet50_gn`` or HRNet-W18; ``heads.bodypart.*``: the top-down
head, two 1x1 convolutions ``final_conv``):

- conv ``weight`` (4-D): He normal N(0, sqrt(2 / fan_in));
- norm ``weight``: U(0.5, 1), except the norm closing a residual branch (``bn3``; in HRNet
  also the BasicBlocks' ``bn2``) and HRNet's cross-branch ``fuse_layers`` norms: U(0.1, 0.3)
  so that activations stay O(1) over 16 bottlenecks or 8 HRNet modules; ``bias``: N(0, 0.1);
- heatmap ``final_conv.weight``: ``HEAT_GAIN * N(0, 1) / sqrt(fan_in)``, bias
  ``HEAT_BIAS``: raw scores of O(1) around 0.5, so DeepLabCut's clipped likelihoods spread in
  [0, 1] instead of all being 1;
- locref ``final_conv``: ``0.1 * N(0, 1) / sqrt(fan_in)``, bias N(0, 0.1).

RTMPose (``backbone.*``: DeepLabCut's CSPNeXt, same rules as the ResNet; ``heads.bodypart.*``:
the RTMCC head): scale-norm gains ``g`` and ``res_scale`` U(0.5, 1); the attention unit's
``gamma``/``beta`` N(0, 0.5); the x/y classifiers ``RTM_CLS_GAIN * N(0, 1) / sqrt(fan_in)``
(SimCC multiplies logits by sigma x decode_beta = 849: small logits keep its softmax from
being one-hot, so the likelihoods spread); other weights He normal, biases N(0, 0.1).

Detectors (``model.*``: torchvision's models as DeepLabCut builds them):

- conv / linear ``weight``: N(0, sqrt(DET_GAIN / fan_in)), DET_GAIN = 2 (He);
- BatchNorm / FrozenBatchNorm ``weight``: U(DET_NORM) = U(0.5, 1), ``bias`` and
  ``running_mean``: N(0, 0.1), ``running_var``: U(0.5, 1.5); other biases N(0, 0.1).
  (Their scores are distinct, unlike torchvision's init of an untrained Faster R-CNN.)

The random detectors find boxes anywhere (they were never trained): what the fixture checks is
that posed finds the same boxes, crops them alike and decodes the same keypoints in them.
"""

import re
import zlib

import numpy as np

HEAT_GAIN, HEAT_BIAS = 0.5, -0.3
RTM_CLS_GAIN = 0.01
RTMCC = tuple(f"heads.bodypart.{m}." for m in ("final_layer", "mlp", "gau", "cls_x", "cls_y"))
# the norms closing a residual branch (ResNet/HRNet Bottleneck bn3, HRNet BasicBlock bn2) and
# HRNet's cross-branch fuse norms
_DAMPED = re.compile(r"\.bn3\.|branches\.\d+\.\d+\.bn2\.|fuse_layers\.")
DET_GAIN, DET_NORM = 2.0, (0.5, 1.0)


def _norm_or_bias(leaf, shape, rs, weight_range):
    if leaf == "weight":
        return rs.uniform(*weight_range, shape)
    if leaf in ("bias", "running_mean"):
        return rs.normal(0.0, 0.1, shape)
    if leaf == "running_var":
        return rs.uniform(0.5, 1.5, shape)
    return None


def _rtmcc(name, leaf, shape, rs):
    if leaf == "g" or name.endswith("res_scale.scale"):
        return rs.uniform(0.5, 1.0, shape)
    if leaf in ("gamma", "beta"):
        return rs.normal(0.0, 0.5, shape)
    if ".cls_x." in name or ".cls_y." in name:
        return RTM_CLS_GAIN * rs.normal(0.0, 1.0, shape) / np.sqrt(shape[1])
    if leaf == "weight":
        return rs.normal(0.0, np.sqrt(2.0 / np.prod(shape[1:])), shape)
    return rs.normal(0.0, 0.1, shape)


def _pose(name, leaf, shape, rs):
    if name.startswith(RTMCC):
        return _rtmcc(name, leaf, shape, rs)
    if name.startswith("heads.bodypart.heatmap_head."):
        if leaf == "weight":
            return HEAT_GAIN * rs.normal(0.0, 1.0, shape) / np.sqrt(np.prod(shape[1:]))
        return HEAT_BIAS + rs.normal(0.0, 0.1, shape)
    if name.startswith("heads.bodypart.locref_head."):
        if leaf == "weight":
            return 0.1 * rs.normal(0.0, 1.0, shape) / np.sqrt(np.prod(shape[1:]))
        return rs.normal(0.0, 0.1, shape)
    if leaf == "weight" and len(shape) == 4:
        return rs.normal(0.0, np.sqrt(2.0 / np.prod(shape[1:])), shape)
    damped = _DAMPED.search(name) is not None
    return _norm_or_bias(leaf, shape, rs, (0.1, 0.3) if damped else (0.5, 1.0))


def _detector(leaf, shape, rs):
    if leaf == "weight" and len(shape) >= 2:
        return rs.normal(0.0, np.sqrt(DET_GAIN / np.prod(shape[1:])), shape)
    return _norm_or_bias(leaf, shape, rs, DET_NORM)


def value(name, shape):
    shape = [int(s) for s in shape]
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "num_batches_tracked":
        return np.zeros(shape, dtype=np.int64)
    rs = np.random.RandomState(zlib.crc32(name.encode()))
    if name.startswith(("backbone.", "heads.")):
        v = _pose(name, leaf, shape, rs)
    elif name.startswith("model."):
        v = _detector(leaf, shape, rs)
    else:
        v = None
    if v is None:
        raise ValueError(f"no rule for tensor {name!r}")
    return np.asarray(v).astype(np.float32)
