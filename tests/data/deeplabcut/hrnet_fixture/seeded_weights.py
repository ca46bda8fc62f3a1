"""The weights of the HRNet fixture: a pure function of each PyTorch state-dict tensor's name
and shape (numpy's ``RandomState`` seeded with ``zlib.crc32(name)``, whose stream numpy keeps
fixed across versions), so that DeepLabCut's environment (which wrote the reference) and
posed's (which checks it) build the same weights without committing 40 MB (``hrnet_w18``,
single/) and 120 MB (``hrnet_w32`` + DLCRNet PAF head, multi/) of snapshots.

``value(name, shape)`` returns a float32 array (int64 zeros for ``num_batches_tracked``).

Backbone (``backbone.model.*``, timm HRNet: convolutions without bias, each followed by a
BatchNorm2d):

- conv ``weight`` (4-D): He normal, N(0, sqrt(2 / fan_in)), fan_in = in * kh * kw;
- BatchNorm ``weight``: U(0.5, 1), except the BatchNorm closing a residual branch (``bn3`` of
  the Bottlenecks in ``layer1``, ``bn2`` of the BasicBlocks in ``branches``) and every
  BatchNorm of the cross-branch ``fuse_layers``: U(0.1, 0.3) (with U(0.5, 1) the activations
  of a random HRNet grow ~1e4-fold over its 8 multi-resolution modules; damped they stay O(1));
- ``bias`` and ``running_mean``: N(0, 0.1); ``running_var``: U(0.5, 1.5);
  ``num_batches_tracked``: 0.

Heads (``heads.bodypart.*``), by module (``HEAD``: gain, mu, bias mean, bias std):

- ConvTranspose2d weights (``*deconv_layers.*``, ``convt1..4``; shape (in, out, 3, 3)): a 1x1
  projection ``z = mu / in + N(0, 1) / sqrt(in)`` spread with the bilinear-upsampling taps
  [.5, 1, .5] x [.5, 1, .5] (so that a constant input gives a flat output: no stride-2
  checkerboard), plus ``EPS`` times per-tap noise that sums to zero within each stride-2
  phase (rows/columns 0 and 2 share a phase) so that kernels are not flip-symmetric; all
  times ``gain``;
- Conv2d weights (the DLCRNet refinement layers ``hm_ref_layers``/``paf_ref_layers``):
  ``gain * (mu / fan_in + N(0, 1) / sqrt(fan_in))``;
- biases: N(bias mean, bias std).

A positive ``mu`` makes the score maps mostly a positive average of the (non-negative)
backbone features, so that a transposed conv's half-covered edge rows and the zero-padded
borders come out *low* (with mu = 0 most maxima and peaks sit on the map's edge).

``CALIBRATED``: the heatmap biases, one per body part, chosen once on this fixture's
centre-padded video frames (single: the mean over frames of each part's heatmap maximum
maps to 0.7 .. 0.4, so DLC's clipped likelihoods are spread in (0, 1); multi: 1 % of each
part's map lies above logit 0.5, which gives ~10 PAF peaks per part and frame). The two
models share the tensor's name, so these are keyed by name *and* shape: the single-animal
project has 5 body parts, the multi-animal one 4.
"""

import re
import zlib

import numpy as np

EPS = 0.3
# module -> (gain, mu, bias mean, bias std)
HEAD = {
    "heatmap_head": (2.0, 5.0, 0.0, 0.1),
    "locref_head": (0.1, 0.0, 0.0, 0.1),
    "paf_head": (0.2, 0.0, 0.0, 0.1),
    "convt1": (1.0, 4.0, 0.0, 0.1),
    "convt2": (1.0, 0.0, 0.0, 0.1),
    "convt3": (1.0, 0.0, 0.0, 0.1),
    "convt4": (1.0, 4.0, 0.0, 0.1),
    "hm_ref_layers": (0.5, 0.0, 0.0, 0.1),
    "paf_ref_layers": (0.5, 0.0, 0.0, 0.1),
}
_HEATMAP_BIAS = "heads.bodypart.heatmap_head.deconv_layers.0.bias"
CALIBRATED = {
    (_HEATMAP_BIAS, (5,)): [-12.39, -14.47, -12.61, -19.26, -12.14],  # single/ (hrnet_w18)
    (_HEATMAP_BIAS, (4,)): [-67.13, -65.57, -57.88, -85.41],  # multi/ (hrnet_w32, PAF)
}
_DAMPED = re.compile(r"(layer1\.\d+\.bn3|branches\.\d+\.\d+\.bn2)\.weight$|fuse_layers\..*\.weight$")


def value(name, shape):
    shape = [int(s) for s in shape]
    key = (name, tuple(shape))
    if key in CALIBRATED:
        return np.asarray(CALIBRATED[key], dtype=np.float32).reshape(shape)
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "num_batches_tracked":
        return np.zeros(shape, dtype=np.int64)
    rs = np.random.RandomState(zlib.crc32(name.encode()))
    if name.startswith("backbone."):
        if leaf == "weight" and len(shape) == 4:
            v = rs.normal(0.0, np.sqrt(2.0 / np.prod(shape[1:])), shape)
        elif leaf == "weight" and _DAMPED.search(name):
            v = rs.uniform(0.1, 0.3, shape)
        elif leaf == "weight":
            v = rs.uniform(0.5, 1.0, shape)
        elif leaf in ("bias", "running_mean"):
            v = rs.normal(0.0, 0.1, shape)
        elif leaf == "running_var":
            v = rs.uniform(0.5, 1.5, shape)
        else:
            raise ValueError(f"no rule for tensor {name!r}")
        return v.astype(np.float32)
    if not name.startswith("heads."):
        raise ValueError(f"no rule for tensor {name!r}")
    module = name.split(".")[2]
    if module not in HEAD:
        raise ValueError(f"no rule for tensor {name!r}")
    gain, mu, bias_mean, bias_std = HEAD[module]
    transposed = ".deconv_layers." in name or module.startswith("convt")
    if leaf == "weight" and transposed:  # ConvTranspose2d: (in, out, kh, kw)
        if shape[2:] != [3, 3]:
            raise ValueError(f"{name!r}: expected a 3x3 kernel, got {shape}")
        fan = shape[0]
        z = mu / fan + rs.normal(0.0, 1.0, shape[:2] + [1, 1]) / np.sqrt(fan)
        n = rs.normal(0.0, 1.0, shape)
        a = np.zeros(shape)
        a[:, :, 1, 0], a[:, :, 1, 2] = n[:, :, 1, 0], -n[:, :, 1, 0]
        a[:, :, 0, 1], a[:, :, 2, 1] = n[:, :, 0, 1], -n[:, :, 0, 1]
        corners = n[:, :, ::2, ::2]
        a[:, :, ::2, ::2] = corners - corners.mean(axis=(2, 3), keepdims=True)
        tap = np.array([0.5, 1.0, 0.5])
        v = gain * (z * np.outer(tap, tap) + EPS * a / np.sqrt(fan))
    elif leaf == "weight":  # Conv2d: (out, in, kh, kw)
        fan = np.prod(shape[1:])
        v = gain * (mu / fan + rs.normal(0.0, 1.0, shape) / np.sqrt(fan))
    elif leaf == "bias":
        v = bias_mean + rs.normal(0.0, bias_std, shape)
    else:
        raise ValueError(f"no rule for tensor {name!r}")
    return v.astype(np.float32)
