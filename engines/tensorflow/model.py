"""DeepLabCut-style single-animal pose network in Keras 3: application backbone + deconv heads.

The backbones are ``keras.applications`` ResNet50 and MobileNetV2, which downsample by 32.
Output strides 16 and 8 are made the way DeepLabCut's TensorFlow ResNets (and timm, which
the PyTorch engine uses) make them: the last one or two downsampling stages keep stride 1
and every 3×3 convolution after them is dilated (atrous) by 2 or 4, so the network keeps
its full depth and receptive field at the finer grid. This is done by cloning the Keras
application with edited layer configs; weights keep their shapes, so ImageNet weights
(or a local weights file for the stride-32 model) load unchanged.

Everything is channels-last: input N×H×W×3 RGB on the 0..255 scale (normalisation is part of
the model), outputs heatmap logits N×h×w×K and locref N×h×w×2K, interleaved (x, y).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from posed.engines.bundle import IMAGENET_MEAN, IMAGENET_STD
from posed.errors import ConfigError, ModelLoadError

from posed.engines.tensorflow import import_tensorflow

tf = import_tensorflow()
import keras  # noqa: E402  (after TensorFlow's environment is set up)

log = logging.getLogger(__name__)

# posed net name -> (keras.applications constructor, keyword arguments)
KERAS_NETS: dict[str, tuple[str, dict[str, Any]]] = {
    "resnet_50": ("ResNet50", {}),
    "mobilenet_v2_1.0": ("MobileNetV2", {"alpha": 1.0}),
    "mobilenet_v2_0.35": ("MobileNetV2", {"alpha": 0.35}),
}

# Per backbone, the two downsampling stages that output strides 16 and 8 undo, last first:
# (layers whose stride 2 becomes 1, zero-padding layer to make symmetric, 3×3 layers of the
# stage that get dilated).
_RESNET_STAGES = [
    (("conv5_block1_1_conv", "conv5_block1_0_conv"), None,
     tuple(f"conv5_block{i}_2_conv" for i in range(1, 4))),
    (("conv4_block1_1_conv", "conv4_block1_0_conv"), None,
     tuple(f"conv4_block{i}_2_conv" for i in range(1, 7))),
]
_MOBILENET_STAGES = [
    (("block_13_depthwise",), "block_13_pad",
     tuple(f"block_{i}_depthwise" for i in range(13, 17))),
    (("block_6_depthwise",), "block_6_pad",
     tuple(f"block_{i}_depthwise" for i in range(6, 13))),
]

HEATMAP_BIAS = -4.0  # heatmaps start near zero probability, as in the PyTorch PoseNet


def _dilation_plan(net: str, output_stride: int) -> dict[str, dict[str, Any]]:
    """Config edits, by layer name, that turn a stride-32 backbone into ``output_stride``."""
    stages = _RESNET_STAGES if net == "resnet_50" else _MOBILENET_STAGES
    undo = {32: 0, 16: 1, 8: 2}[output_stride]
    edits: dict[str, dict[str, Any]] = {}
    # Stage i (0 = last) runs at dilation 2**(undo - i) once the stages before it are undone.
    for i, (strided, pad, dilated) in enumerate(stages[:undo]):
        rate = 2 ** (undo - i)
        for name in dilated:
            edits.setdefault(name, {})["dilation_rate"] = (rate, rate)
        for name in strided:
            edits.setdefault(name, {})["strides"] = (1, 1)
        if pad is not None:
            # The strided depthwise conv is 'valid' after asymmetric padding; at stride 1 and
            # dilation r it needs r pixels on every side to keep the grid size.
            edits[pad] = {"padding": ((rate, rate), (rate, rate))}
    return edits


def build_backbone(net: str, output_stride: int, weights: str | None = None) -> "keras.Model":
    """A Keras application feature extractor at ``output_stride`` (8, 16 or 32).

    Args:
        net: posed net name (a key of :data:`KERAS_NETS`).
        output_stride: 8, 16 or 32.
        weights: ``None`` (random), ``"imagenet"`` (Keras downloads them) or a local
            ``.weights.h5`` file of the same Keras application without its top.

    Raises:
        ConfigError: a net the TensorFlow engine does not have, or a bad output stride.
        ModelLoadError: the weights file is missing or does not fit.
    """
    if net not in KERAS_NETS:
        raise ConfigError(f"net '{net}': the tensorflow engine supports {', '.join(KERAS_NETS)}")
    if output_stride not in (8, 16, 32):
        raise ConfigError(f"output_stride {output_stride} must be 8, 16 or 32")
    ctor_name, kwargs = KERAS_NETS[net]
    ctor = getattr(keras.applications, ctor_name)
    local = weights not in (None, "imagenet")
    if local and not Path(str(weights)).is_file():
        raise ModelLoadError(f"{weights}: backbone weights file missing")
    base = ctor(input_shape=(None, None, 3), include_top=False,
                weights="imagenet" if weights == "imagenet" else None, **kwargs)
    if local:
        try:
            base.load_weights(str(weights))
        except (ValueError, OSError) as exc:
            raise ModelLoadError(f"{weights}: does not fit {net} ({str(exc).splitlines()[0]})") from None
    edits = _dilation_plan(net, output_stride)

    def clone(layer: "keras.layers.Layer") -> "keras.layers.Layer":
        config = layer.get_config()
        config.update(edits.get(layer.name, {}))
        if isinstance(layer, keras.layers.BatchNormalization):
            # Keras applications use momentum 0.99; torch's 0.1 update (0.9 here) keeps the
            # running statistics in step with a network trained from scratch in few epochs.
            config["momentum"] = 0.9
        return layer.__class__.from_config(config)

    model = keras.models.clone_model(base, clone_function=clone)
    if weights is not None:
        model.set_weights(base.get_weights())  # shapes are unchanged by stride/dilation
    return model


def build_pose_model(net: str, num_keypoints: int, output_stride: int = 16,
                     weights: str | None = None,
                     mean: tuple[float, float, float] = IMAGENET_MEAN,
                     std: tuple[float, float, float] = IMAGENET_STD) -> "keras.Model":
    """Backbone + heatmap and location-refinement heads (channels-last).

    Takes float N×H×W×3 RGB on the 0..255 scale and returns ``[heatmap logits N×h×w×K,
    locref N×h×w×2K]`` at ``output_stride / 2`` input pixels per cell.
    """
    backbone = build_backbone(net, output_stride, weights)
    inputs = keras.Input((None, None, 3), dtype="float32", name="image")
    scale = np.asarray(std, dtype=np.float32) * 255.0
    x = keras.layers.Rescaling(1.0 / scale, offset=-np.asarray(mean, np.float32) / np.asarray(std, np.float32),
                               name="normalize")(inputs)
    feats = backbone(x)
    heat = keras.layers.Conv2DTranspose(
        num_keypoints, 3, strides=2, padding="same", name="heatmap",
        kernel_initializer=keras.initializers.RandomNormal(stddev=0.001),
        bias_initializer=keras.initializers.Constant(HEATMAP_BIAS))(feats)
    locref = keras.layers.Conv2DTranspose(
        2 * num_keypoints, 3, strides=2, padding="same", name="locref",
        kernel_initializer=keras.initializers.RandomNormal(stddev=0.001),
        bias_initializer="zeros")(feats)
    return keras.Model(inputs, [heat, locref], name=f"posenet_{net.replace('.', '')}")


def grid_size(model: "keras.Model", height: int, width: int) -> tuple[int, int]:
    """Output grid (h, w) for an input of ``height``×``width``, found by a dry run."""
    heat, _ = model(np.zeros((1, height, width, 3), np.float32), training=False)
    return int(heat.shape[1]), int(heat.shape[2])


def weights_dict(model: "keras.Model") -> dict[str, np.ndarray]:
    """All variables (trainable and BatchNorm statistics) by their unique Keras path."""
    return {w.path: np.ascontiguousarray(w.numpy()) for w in model.weights}


def save_weights(model: "keras.Model", path: Path, metadata: dict[str, str] | None = None) -> None:
    """Write the model's variables to a ``safetensors`` file (no pickle, no code)."""
    from safetensors.numpy import save_file

    save_file(weights_dict(model), str(path), metadata=metadata)


def load_weights(model: "keras.Model", path: Path) -> None:
    """Assign variables from a ``safetensors`` file written by :func:`save_weights`.

    Raises:
        ModelLoadError: the file is missing/unreadable or does not fit the model.
    """
    from safetensors.numpy import load_file

    if not path.is_file():
        raise ModelLoadError(f"{path}: weights file missing")
    try:
        state = load_file(str(path))
    except Exception as exc:  # safetensors raises its own and OS errors for corrupt files
        raise ModelLoadError(f"{path}: cannot read weights ({type(exc).__name__}: {exc})".split("\n")[0]) from exc
    wanted = {w.path: w for w in model.weights}
    missing = sorted(set(wanted) - set(state))
    unexpected = sorted(set(state) - set(wanted))
    if missing or unexpected:
        raise ModelLoadError(f"{path}: weights do not fit the architecture ({len(missing)} missing, "
                             f"{len(unexpected)} unexpected, e.g. {(missing + unexpected)[0]})")
    for name, var in wanted.items():
        if tuple(var.shape) != state[name].shape:
            raise ModelLoadError(f"{path}: tensor '{name}' has shape {state[name].shape}, "
                                 f"the architecture needs {tuple(var.shape)}")
        var.assign(state[name])
