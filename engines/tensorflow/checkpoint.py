"""DeepLabCut 2.x TensorFlow training snapshots, frozen into the graph DeepLabCut exports.

A TensorFlow shuffle's ``train/`` folder holds ``pose_cfg.yaml`` and checkpoints
``snapshot-<iterations>.{index,data-*}``. :func:`freeze_snapshot` reads the checkpoint's
tensors by name (``tf.train.load_checkpoint``: tensors only, no code and no pickles; the
``.meta`` graph beside it is never loaded) and rebuilds DeepLabCut's test-time network around
them as constants, with the tensor names of ``deeplabcut.export_model``'s score-map graph
(:mod:`posed.engines.tensorflow.dlc2`), so the result runs exactly as an imported export.

The network, from DeepLabCut's ``nnets/resnet.py`` and tf-slim's ``resnet_v1``: the image
minus ``mean_pixel``; ResNet v1 (50/101/152) at output stride 16 (the stride-2 unit that
would pass 16 runs at stride 1 and every later 3×3 conv is dilated by 2); batch norm with
its moving statistics (epsilon 1e-5); then per head a 3×3 stride-2 transposed convolution
with bias (``pose/part_pred/block4``, ``pose/locref_pred/block4``); a sigmoid on the part
scores. Other DeepLabCut TensorFlow nets (MobileNet, EfficientNet, multi-animal, multi-stage)
are refused by name: their exports import with ``posed import-dlc``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from posed.engines.tensorflow.dlc2 import INPUT, LOCREF, SCOREMAP
from posed.errors import ModelLoadError

__all__ = ["RESNET_UNITS", "freeze_snapshot"]

# Bottleneck units per block (tf-slim's resnet_v1_50/101/152).
RESNET_UNITS = {"resnet_50": (3, 4, 6, 3), "resnet_101": (3, 4, 23, 3),
                "resnet_152": (3, 8, 36, 3)}
_BLOCK_STRIDES = (2, 2, 2, 1)  # each block's last unit (tf-slim puts the stride there)
_OUTPUT_STRIDE = 16
_BN_EPSILON = 1e-5


def _tf() -> Any:
    from posed.engines.tensorflow import import_tensorflow

    return import_tensorflow()


def check_supported(cfg: dict[str, Any], path: Path) -> str:
    """The net type of a ``pose_cfg.yaml`` posed freezes, or a one-line refusal."""
    net = str(cfg.get("net_type", ""))
    if net not in RESNET_UNITS:
        raise ModelLoadError(
            f"{path}: net_type {net!r}: TensorFlow shuffles are served in place for "
            f"{', '.join(RESNET_UNITS)}; export this one with deeplabcut.export_model and "
            "run `posed import-dlc` on the export")
    if "multi-animal" in str(cfg.get("dataset_type", "")) or cfg.get("multi_stage"):
        raise ModelLoadError(f"{path}: multi-animal and multi-stage TensorFlow models are not "
                             "supported (key 'dataset_type' / 'multi_stage')")
    if int(cfg.get("num_idchannel", 0) or 0) or int(cfg.get("stride", 8)) != 8:
        raise ModelLoadError(f"{path}: key 'stride' must be 8 and 'num_idchannel' 0 for a "
                             "single-animal ResNet shuffle")
    return net


class _Weights:
    """The checkpoint's tensors by name; a missing one is a ModelLoadError naming it."""

    def __init__(self, prefix: Path) -> None:
        tf = _tf()
        try:
            self.reader = tf.train.load_checkpoint(str(prefix))
        except (tf.errors.OpError, ValueError) as exc:
            raise ModelLoadError(f"{prefix}: not a readable TensorFlow checkpoint "
                                 f"({str(exc).splitlines()[0]})") from None
        self.prefix = prefix
        self.names = set(self.reader.get_variable_to_shape_map())

    def __call__(self, name: str) -> Any:
        if name not in self.names:
            raise ModelLoadError(f"{self.prefix}: tensor '{name}' not in the checkpoint")
        return _tf().constant(self.reader.get_tensor(name))


def _conv(w: _Weights, x: Any, scope: str, stride: int = 1, rate: int = 1,
          relu: bool = True) -> Any:
    """tf-slim ``conv2d``/``conv2d_same`` + batch norm (+ ReLU): strided convolutions pad
    explicitly and symmetrically, stride-1 ones use SAME padding."""
    tf = _tf()
    kernel = w(f"{scope}/weights")
    k = int(kernel.shape[0])
    if stride == 1:
        y = tf.nn.conv2d(x, kernel, 1, "SAME", dilations=rate)
    else:
        total = k + (k - 1) * (rate - 1) - 1
        pads = [[0, 0], [total // 2, total - total // 2], [total // 2, total - total // 2], [0, 0]]
        y = tf.nn.conv2d(tf.pad(x, pads), kernel, stride, "VALID", dilations=rate)
    bn = f"{scope}/BatchNorm"
    y, _, _ = tf.compat.v1.nn.fused_batch_norm(
        y, w(f"{bn}/gamma"), w(f"{bn}/beta"), w(f"{bn}/moving_mean"),
        w(f"{bn}/moving_variance"), epsilon=_BN_EPSILON, is_training=False)
    return tf.nn.relu(y) if relu else y


def _bottleneck(w: _Weights, x: Any, scope: str, depth: int, stride: int, rate: int) -> Any:
    tf = _tf()
    if int(x.shape[-1]) == depth:
        shortcut = x if stride == 1 else x[:, ::stride, ::stride, :]
    else:
        shortcut = _conv(w, x, f"{scope}/shortcut", stride, relu=False)
    y = _conv(w, x, f"{scope}/conv1")
    y = _conv(w, y, f"{scope}/conv2", stride, rate)
    y = _conv(w, y, f"{scope}/conv3", relu=False)
    return tf.nn.relu(shortcut + y)


def _resnet(w: _Weights, x: Any, net: str) -> Any:
    """tf-slim's ResNet v1 features at output stride 16."""
    tf = _tf()
    root = f"resnet_v1_{net.split('_')[1]}"
    y = _conv(w, x, f"{root}/conv1", stride=2)
    y = tf.nn.max_pool2d(y, 3, 2, "SAME")
    current, rate = 4, 1
    for b, (units, block_stride) in enumerate(zip(RESNET_UNITS[net], _BLOCK_STRIDES)):
        depth = 256 * 2 ** b
        for u in range(units):
            stride = block_stride if u == units - 1 else 1
            scope = f"{root}/block{b + 1}/unit_{u + 1}/bottleneck_v1"
            if current == _OUTPUT_STRIDE:  # later strides become dilation
                y = _bottleneck(w, y, scope, depth, 1, rate)
                rate *= stride
            else:
                y = _bottleneck(w, y, scope, depth, stride, 1)
                current *= stride
    return y


def _head(w: _Weights, x: Any, name: str) -> Any:
    """tf-slim ``conv2d_transpose`` 3×3, stride 2, SAME, with bias."""
    tf = _tf()
    kernel = w(f"pose/{name}/block4/weights")
    shape = tf.shape(x)
    out = tf.stack([shape[0], 2 * shape[1], 2 * shape[2], int(kernel.shape[2])])
    y = tf.nn.conv2d_transpose(x, kernel, out, 2, "SAME")
    return tf.nn.bias_add(y, w(f"pose/{name}/block4/biases"))


def freeze_snapshot(cfg: dict[str, Any], cfg_path: Path, prefix: Path) -> Any:
    """The frozen ``GraphDef`` of one snapshot, with DeepLabCut's export tensor names
    (input ``Placeholder``, outputs ``Sigmoid`` and, with location refinement,
    ``pose/locref_pred/block4/BiasAdd``).

    Raises:
        ModelLoadError: an unsupported net (see :func:`check_supported`), an unreadable
            checkpoint, or one without a tensor the net needs (named).
    """
    tf = _tf()
    net = check_supported(cfg, cfg_path)
    weights = _Weights(prefix)
    mean = [float(v) for v in cfg.get("mean_pixel", [123.68, 116.779, 103.939])]
    graph = tf.Graph()
    with graph.as_default():
        images = tf.compat.v1.placeholder(tf.float32, [None, None, None, 3], name=INPUT)
        features = _resnet(weights, images - tf.constant(mean, shape=[1, 1, 1, 3]), net)
        tf.sigmoid(_head(weights, features, "part_pred"), name=SCOREMAP)
        if cfg.get("location_refinement", True):
            tf.identity(_head(weights, features, "locref_pred"), name=LOCREF)
    return graph.as_graph_def()
