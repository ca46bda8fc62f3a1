"""The weights of the TensorFlow shuffle fixture: a pure function of each variable's name
and shape (numpy's ``RandomState``, whose stream numpy keeps fixed across versions), so that
DeepLabCut's environment (which wrote the reference) and posed's (which checks it) make the
same checkpoint without committing 94 MB. Scales keep a random ResNet-50's activations and
score maps away from saturation (the argmax must be unambiguous)."""

import zlib

import numpy as np


def value(name, shape):
    rs = np.random.RandomState(zlib.crc32(name.encode()))
    shape = [int(s) for s in shape]
    leaf = name.rsplit("/", 1)[-1]
    if leaf == "moving_variance":
        v = rs.uniform(0.5, 1.5, shape)
    elif leaf == "gamma":
        v = rs.uniform(0.1, 0.3, shape) if "/conv3/" in name else rs.uniform(0.5, 1.0, shape)
    elif leaf in ("beta", "moving_mean", "biases"):
        v = rs.normal(0.0, 0.1, shape)
    elif leaf == "weights" and name.startswith("pose/"):  # transposed conv [k, k, out, in]
        v = rs.normal(0.0, 0.02 / np.sqrt(shape[0] * shape[1] * shape[3]), shape)
    elif leaf == "weights":  # conv [k, k, in, out]
        v = rs.normal(0.0, np.sqrt(2.0 / np.prod(shape[:-1])), shape)
    else:
        raise ValueError(f"no rule for variable {name!r}")
    return v.astype(np.float32)
