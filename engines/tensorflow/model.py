"""DeepLabCut-style single-animal pose network in Keras 3: application backbone + deconv heads.

The backbones are ``keras.applications`` ResNet50 and MobileNetV2, which downsample by 32.
Output strides 16 and 8 are made the way DeepLabCut's TensorFlow ResNets (and timm, which
the PyTorch engine uses) make them: the last one or two downsampling stages keep stride 1,
the first block of such a stage keeps the dilation of the stage before it and every later
3×3 convolution is dilated (atrous) by 2 or 4, so the network keeps its full depth and
receptive field at the finer grid. This is done by cloning the Keras application with
edited layer configs; weights keep their shapes, so ImageNet weights (or a local weights
file for the stride-32 model) load unchanged.

The heads read the same feature map as the PyTorch engine's timm ``features_only`` backbone:
the last block's output. For MobileNetV2 that is ``block_16_project_BN`` (112 channels at
alpha 0.35), not Keras' extra 1280-channel ``Conv_1``/``out_relu`` layer, which the PyTorch
model does not have and which would make the heads several times more expensive. Random
initialisation stays Keras' Glorot uniform: timm's He fan-out normal initialisation, tried
for parity, trained worse here (2.6 px against 1.7 px held-out on the synthetic project
after 30 epochs).

Everything is channels-last: input N×H×W×3 RGB on the 0..255 scale (normalisation is part of
the model), outputs heatmap logits N×h×w×K and locref N×h×w×2K, interleaved (x, y).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from posed.engines.bundle import IMAGENET_MEAN, IMAGENET_STD
from posed.errors import ConfigError, ModelLoadError, reason

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
# stage's first block, which keep the previous dilation, 3×3 layers of its later blocks).
_RESNET_STAGES = [
    (("conv5_block1_1_conv", "conv5_block1_0_conv"), None, ("conv5_block1_2_conv",),
     tuple(f"conv5_block{i}_2_conv" for i in range(2, 4))),
    (("conv4_block1_1_conv", "conv4_block1_0_conv"), None, ("conv4_block1_2_conv",),
     tuple(f"conv4_block{i}_2_conv" for i in range(2, 7))),
]
_MOBILENET_STAGES = [
    (("block_13_depthwise",), "block_13_pad", ("block_13_depthwise",),
     tuple(f"block_{i}_depthwise" for i in range(14, 17))),
    (("block_6_depthwise",), "block_6_pad", ("block_6_depthwise",),
     tuple(f"block_{i}_depthwise" for i in range(7, 13))),
]
# Layer whose output the heads read (the last block's output, as timm's features_only gives).
_FEATURES = {"ResNet50": "conv5_block3_out", "MobileNetV2": "block_16_project_BN"}

HEATMAP_BIAS = -4.0  # heatmaps start near zero probability, as in the PyTorch PoseNet


def _dilation_plan(net: str, output_stride: int) -> dict[str, dict[str, Any]]:
    """Config edits, by layer name, that turn a stride-32 backbone into ``output_stride``."""
    stages = _RESNET_STAGES if net == "resnet_50" else _MOBILENET_STAGES
    undo = {32: 0, 16: 1, 8: 2}[output_stride]
    edits: dict[str, dict[str, Any]] = {}
    # Stage i (0 = last) runs at dilation 2**(undo - i) once the stages before it are undone;
    # its first block still sees the previous stage's grid spacing (timm, TF-slim).
    for i, (strided, pad, first, rest) in enumerate(stages[:undo]):
        rate, previous = 2 ** (undo - i), 2 ** (undo - i - 1)
        for name in first:
            if previous > 1:
                edits.setdefault(name, {})["dilation_rate"] = (previous, previous)
        for name in rest:
            edits.setdefault(name, {})["dilation_rate"] = (rate, rate)
        for name in strided:
            edits.setdefault(name, {})["strides"] = (1, 1)
        if pad is not None:
            # The strided depthwise conv is 'valid' after asymmetric padding; at stride 1 and
            # dilation r it needs r pixels on every side to keep the grid size.
            edits[pad] = {"padding": ((previous, previous), (previous, previous))}
    return edits


class NativeDilatedDepthwiseConv2D(keras.layers.DepthwiseConv2D):
    """A dilated ``DepthwiseConv2D`` run by TensorFlow's native kernel (forward only).

    Keras runs a dilated depthwise convolution through ``tf.nn.depthwise_conv2d``, which wraps
    it in SpaceToBatchND/BatchToSpaceND with paddings computed from the input size. tf2onnx
    can fold that into one dilated ONNX ``Conv`` only when the input size is fixed; with a
    free height and width it leaves ~700 shape-arithmetic nodes (about 3× slower on
    onnxruntime). ``DepthwiseConv2dNative`` takes the dilations as an attribute and gives the
    same outputs, and one ``Conv`` at any size. It is only used to trace ONNX
    exports: TensorFlow's CPU gradient of the op does not match the decomposed one (so not
    for training), and its GPU support for dilations is untested here.
    """

    def call(self, inputs: "tf.Tensor") -> "tf.Tensor":
        padding, explicit = "VALID", []
        if self.padding == "same":
            # At stride 1 'same' is symmetric, rate * (k - 1) / 2 per side, whatever the input
            # size; spelled out, because onnxruntime refuses dilations with auto_pad SAME_*.
            ph, pw = ((k - 1) * r // 2 for k, r in zip(self.kernel_size, self.dilation_rate))
            padding, explicit = "EXPLICIT", [0, 0, ph, ph, pw, pw, 0, 0]
        outputs = tf.raw_ops.DepthwiseConv2dNative(
            input=inputs, filter=self.kernel, strides=(1, 1, 1, 1), padding=padding,
            explicit_paddings=explicit, dilations=(1, *self.dilation_rate, 1), data_format="NHWC")
        if self.use_bias:
            outputs = tf.nn.bias_add(outputs, self.bias)
        return outputs if self.activation is None else self.activation(outputs)


def build_backbone(net: str, output_stride: int, weights: str | None = None,
                   native_dilation: bool = False) -> "keras.Model":
    """A Keras application feature extractor at ``output_stride`` (8, 16 or 32).

    Args:
        net: posed net name (a key of :data:`KERAS_NETS`).
        output_stride: 8, 16 or 32.
        weights: ``None`` (random), ``"imagenet"`` (Keras downloads them) or a local
            ``.weights.h5`` file of the same Keras application without its top.
        native_dilation: Dilated depthwise layers as :class:`NativeDilatedDepthwiseConv2D`
            (same weights and outputs; for tracing ONNX exports only).

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
    trunk = keras.Model(base.inputs, base.get_layer(_FEATURES[ctor_name]).output, name=base.name)
    edits = _dilation_plan(net, output_stride)

    def clone(layer: "keras.layers.Layer") -> "keras.layers.Layer":
        config = layer.get_config()
        config.update(edits.get(layer.name, {}))
        if isinstance(layer, keras.layers.BatchNormalization):
            # Keras applications use momentum 0.999 (MobileNetV2) or 0.99 (ResNet50); torch's
            # 0.1 update (0.9 here) keeps the running statistics in step with a network
            # trained from scratch in few epochs.
            config["momentum"] = 0.9
        cls = layer.__class__
        if (native_dilation and cls is keras.layers.DepthwiseConv2D
                and max(config["dilation_rate"]) > 1 and tuple(config["strides"]) == (1, 1)
                and config["data_format"] == "channels_last"):
            cls = NativeDilatedDepthwiseConv2D
        return cls.from_config(config)

    model = keras.models.clone_model(trunk, clone_function=clone)
    if weights is not None:
        model.set_weights(trunk.get_weights())  # shapes are unchanged by stride/dilation
    return model


def build_pose_model(net: str, num_keypoints: int, output_stride: int = 16,
                     weights: str | None = None,
                     mean: tuple[float, float, float] = IMAGENET_MEAN,
                     std: tuple[float, float, float] = IMAGENET_STD,
                     native_dilation: bool = False) -> "keras.Model":
    """Backbone + heatmap and location-refinement heads (channels-last).

    Takes float N×H×W×3 RGB on the 0..255 scale and returns ``[heatmap logits N×h×w×K,
    locref N×h×w×2K]`` at ``output_stride / 2`` input pixels per cell. ``native_dilation``:
    see :func:`build_backbone`.
    """
    backbone = build_backbone(net, output_stride, weights, native_dilation)
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
        raise ModelLoadError(f"{path}: cannot read weights ({type(exc).__name__}: {reason(exc)})") from exc
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
