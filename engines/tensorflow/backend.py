"""The TensorFlow engine: Keras 3 training and inference behind :mod:`posed.engines.api`.

Mirrors the PyTorch engine file for file: the same :class:`~posed.engines.training.TrainConfig`
layers, the same :class:`~posed.engines.training.SampleMaker` targets, the same losses,
AdamW and learning-rate schedule, the same ``learning_stats.csv`` and the same bundle fields.
Snapshots are ``snapshot-NNN.safetensors`` holding every Keras variable by its path (weights
only, no pickle and no Keras config: the architecture is rebuilt from ``posed.yaml``), so the
snapshot helpers of :mod:`posed.engines.project.folders` work unchanged. The optimiser state
needed to resume is in ``resume-state.safetensors``; the epoch loop around the training step is
:func:`posed.engines.backend_common.run_epochs`, as for PyTorch.

Bundles of format ``frozen-graph`` (imported DeepLabCut 2.x exports) run through
:mod:`posed.engines.tensorflow.dlc2`; ``savedmodel`` bundles (``posed export --format
savedmodel``) through :class:`SavedModelRunner`. Exporting is :mod:`posed.exporters.tensorflow`
(the registry's ``export`` capability of this engine).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from posed.engines.backend_common import (StepClock, load_by_format, prepare_training,
                                          run_epochs, write_snapshot)
from posed.engines.base import PoseRunner
from posed.engines.bundle import ModelBundle
from posed.engines.decoding import decode
from posed.engines.io import atomic_path
from posed.engines.project import Project
from posed.engines.project.folders import get_model_folder
from posed.engines.tensorflow import import_tensorflow
from posed.engines.tensorflow.devices import select_device, set_threads
from posed.engines.tensorflow.dlc2 import FrozenGraphRunner
from posed.engines.training import (SampleMaker, TrainConfig, bundle_source, load_training_data,
                                    lr_at)
from posed.engines.training.pseudo import pseudo_labels_for
from posed.errors import ConfigError, InferenceError, ModelLoadError

tf = import_tensorflow()
import keras  # noqa: E402  (after TensorFlow's environment is set up)

from posed.engines.tensorflow.model import (  # noqa: E402
    KERAS_NETS, build_pose_model, grid_size, load_weights, save_weights)

log = logging.getLogger(__name__)

ENGINE = "tensorflow"
HEAD = "deconv3x3s2_same"  # Keras Conv2DTranspose(3, strides 2, padding 'same'): a 2h×2w grid


# ----------------------------------------------------------------------------- inference

def build_model(bundle: ModelBundle, native_dilation: bool = False) -> "keras.Model":
    """Instantiate the network a bundle describes (weights not loaded).

    ``native_dilation`` builds the inference-only variant exports are traced from (see
    :class:`~posed.engines.tensorflow.model.NativeDilatedDepthwiseConv2D`).
    """
    arch = bundle.architecture
    try:
        return build_pose_model(arch["net"], len(bundle.bodyparts), int(arch.get("output_stride", 16)),
                                mean=tuple(bundle.mean), std=tuple(bundle.std),
                                native_dilation=native_dilation)
    except KeyError as exc:
        raise ModelLoadError(f"{bundle.path}: architecture lacks '{exc.args[0]}'") from None


class TFRunner(PoseRunner):
    """Keras model inference compiled once with :func:`tf.function`.

    The function has a fixed input signature (uint8 N×H×W×3, every dimension but the channels
    free), so batches and frame sizes never retrace it.
    """

    engine = ENGINE

    def __init__(self, bundle: ModelBundle, model: "keras.Model", device: str) -> None:
        super().__init__(bundle)
        self.model = model
        self.device = device
        self.stride = float(bundle.stride)
        self.function = tf.function(self._scores, input_signature=[
            tf.TensorSpec([None, None, None, 3], tf.uint8, name="frames")])

    @classmethod
    def load(cls, bundle: ModelBundle, device: str = "auto", threads: int | None = None,
             **options: Any) -> "TFRunner":
        if options:
            raise ConfigError(f"tensorflow engine: unknown option '{next(iter(options))}'")
        if bundle.format != "safetensors":
            raise ModelLoadError(f"{bundle.path}: tensorflow engine cannot run format '{bundle.format}'")
        set_threads(threads)
        dev = select_device(device)
        with tf.device(dev):
            model = build_model(bundle)
            load_weights(model, bundle.weights_path)
        return cls(bundle, model, dev)

    def _scores(self, frames: "tf.Tensor") -> tuple["tf.Tensor", "tf.Tensor"]:
        with tf.device(self.device):
            heat, locref = self.model(tf.cast(frames, tf.float32), training=False)
            return tf.sigmoid(heat), locref

    def _forward(self, frames: np.ndarray) -> np.ndarray:
        try:
            probs, locref = self.function(tf.convert_to_tensor(frames))
        except (tf.errors.OpError, ValueError) as exc:
            raise InferenceError(f"tensorflow forward failed: {str(exc).splitlines()[0]}") from exc
        # decode() takes the PyTorch layout (N×K×h×w); the Keras heads are channels-last.
        return decode(np.transpose(probs.numpy(), (0, 3, 1, 2)),
                      np.transpose(locref.numpy(), (0, 3, 1, 2)), self.stride,
                      self.bundle.locref_stdev, self.bundle.body_window)


class SavedModelRunner(PoseRunner):
    """Inference of a ``savedmodel`` bundle written by :mod:`posed.exporters.tensorflow`.

    Calls the SavedModel's ``maps`` function (uint8 N×H×W×3 frames in, channels-first score
    maps and locref out); its signature leaves batch, height and width free, so it is never
    retraced. Needs TensorFlow but not the posed model code that wrote it.
    """

    engine = ENGINE

    def __init__(self, bundle: ModelBundle, saved: Any, device: str) -> None:
        super().__init__(bundle)
        self.saved = saved  # keeps the restored variables alive
        self.function = saved.maps
        self.device = device

    @classmethod
    def load(cls, bundle: ModelBundle, device: str = "auto", threads: int | None = None,
             **options: Any) -> "SavedModelRunner":
        if options:
            raise ConfigError(f"tensorflow engine: unknown option '{next(iter(options))}'")
        set_threads(threads)
        dev = select_device(device)
        folder = bundle.weights_path.parent
        try:
            with tf.device(dev):
                saved = tf.saved_model.load(str(folder))
        except Exception as exc:  # TensorFlow raises OpError, OSError and parse errors alike
            raise ModelLoadError(f"{folder}: cannot load the SavedModel "
                                 f"({str(exc).strip().splitlines()[0]})") from exc
        if not hasattr(saved, "maps"):
            raise ModelLoadError(f"{folder}: SavedModel has no 'maps' function "
                                 "(not written by posed export)")
        return cls(bundle, saved, dev)

    def _forward(self, frames: np.ndarray) -> np.ndarray:
        try:
            with tf.device(self.device):
                scores, locref = self.function(tf.convert_to_tensor(frames))
        except (tf.errors.OpError, ValueError, TypeError) as exc:
            raise InferenceError(f"savedmodel forward failed: {str(exc).splitlines()[0]}") from exc
        return decode(scores.numpy(), locref.numpy(), self.bundle.stride, self.bundle.locref_stdev,
                      self.bundle.body_window)


def load_runner(bundle: ModelBundle, **options: Any) -> PoseRunner:
    """Engine entry point used by :func:`posed.engines.api.load_model`."""
    return load_by_format(bundle, options, {"frozen-graph": FrozenGraphRunner.load,
                                            "savedmodel": SavedModelRunner.load}, TFRunner.load)


# ----------------------------------------------------------------------------- training

def _check_net(cfg: TrainConfig) -> None:
    if cfg.net not in KERAS_NETS:
        raise ConfigError(f"net '{cfg.net}': the tensorflow engine supports {', '.join(KERAS_NETS)}")


def pose_loss(heat: "tf.Tensor", locref: "tf.Tensor", heatmap: "tf.Tensor",
              heatmap_weight: "tf.Tensor", locref_target: "tf.Tensor",
              locref_weight: "tf.Tensor", locref_loss_weight: float
              ) -> tuple["tf.Tensor", "tf.Tensor", "tf.Tensor"]:
    """Weighted BCE on heatmaps + weighted Huber on locref; returns (total, heatmap, locref).

    ``heat``/``locref`` are channels-last network outputs; targets and weights are the
    N×C×h×w arrays of :func:`posed.engines.decoding.make_targets`, as the PyTorch loss takes.
    """
    heat = tf.transpose(heat, (0, 3, 1, 2))
    locref = tf.transpose(locref, (0, 3, 1, 2))
    hw = tf.broadcast_to(heatmap_weight, tf.shape(heat))
    bce = tf.nn.sigmoid_cross_entropy_with_logits(labels=heatmap, logits=heat)
    hm = tf.reduce_sum(bce * hw) / tf.maximum(tf.reduce_sum(hw), 1.0)
    diff = tf.abs(locref * locref_weight - locref_target * locref_weight)
    huber = tf.where(diff < 1.0, 0.5 * diff * diff, diff - 0.5)  # torch huber_loss, delta 1
    lo = tf.reduce_sum(huber) / tf.maximum(tf.reduce_sum(locref_weight), 1.0)
    return hm + locref_loss_weight * lo, hm, lo


def _make_optimizer(cfg: TrainConfig) -> "keras.optimizers.Optimizer":
    # torch.optim.AdamW defaults (eps 1e-8); Keras' weight decay is decoupled and scaled by
    # the learning rate exactly as torch's is.
    return keras.optimizers.AdamW(learning_rate=cfg.lr, weight_decay=cfg.weight_decay,
                                  beta_1=0.9, beta_2=0.999, epsilon=1e-8)


def _save_resume_state(path: Path, optimizer: "keras.optimizers.Optimizer", epoch: int) -> None:
    from safetensors.numpy import save_file

    tensors = {f"{i:05d}:{v.path}": np.ascontiguousarray(np.asarray(v.numpy()))
               for i, v in enumerate(optimizer.variables)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"epoch": str(epoch)})


def _load_resume_state(path: Path, optimizer: "keras.optimizers.Optimizer") -> int:
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as fh:
        meta = fh.metadata()
        values = {int(k.split(":", 1)[0]): fh.get_tensor(k) for k in fh.keys()}
    variables = optimizer.variables
    if len(values) != len(variables):
        raise ModelLoadError(f"{path}: optimiser state has {len(values)} tensors, "
                             f"this model needs {len(variables)}")
    for i, var in enumerate(variables):
        # safetensors keeps scalars (the step counter) as one-element tensors.
        if int(np.prod(var.shape)) != values[i].size:
            raise ModelLoadError(f"{path}: optimiser tensor {i} ({var.path}) does not fit")
        var.assign(values[i].reshape(tuple(var.shape)))
    return int(meta["epoch"])


def _bundle_for(project: Project, shuffle: int, cfg: TrainConfig, epoch: int,
                window: float | None) -> ModelBundle:
    ctor, kwargs = KERAS_NETS[cfg.net]
    return ModelBundle(
        engine=ENGINE, format="safetensors", bodyparts=list(project.bodyparts),
        architecture={"net": cfg.net, "output_stride": cfg.output_stride, "head": HEAD,
                      "keras_model": ctor, **kwargs, "score": "sigmoid", "layout": "channels_last"},
        stride=cfg.output_stride / 2, locref_stdev=cfg.target.locref_stdev,
        source=bundle_source(project, shuffle, cfg, epoch), body_window=window,
    )


def _poses(predict: Any, images: list[np.ndarray], stride: float,
           locref_stdev: float, window: float | None = None) -> np.ndarray:
    """N×K×3 poses on full images (one at a time: sizes may differ)."""
    out = []
    for img in images:
        probs, loc = predict(tf.convert_to_tensor(img[None]))
        out.append(decode(np.transpose(probs.numpy(), (0, 3, 1, 2)),
                          np.transpose(loc.numpy(), (0, 3, 1, 2)), stride, locref_stdev,
                          window)[0])
    return np.stack(out) if out else np.zeros((0, 0, 3))


def _mean_error(predict: Any, images: list[np.ndarray], keypoints: list[np.ndarray],
                stride: float, locref_stdev: float, window: float | None = None) -> float:
    """Mean pixel error on full images (NaN when nothing is labelled)."""
    errs = []
    for pred, kp in zip(_poses(predict, images, stride, locref_stdev, window), keypoints):
        d = np.linalg.norm(pred[:, :2] - kp, axis=1)
        errs.extend(d[np.isfinite(d)].tolist())
    return float(np.mean(errs)) if errs else float("nan")


def _dataset(maker: SampleMaker, cfg: TrainConfig, epoch: int, drop_last: bool) -> "tf.data.Dataset":
    """One epoch of batches; order and augmentation depend only on (seed, epoch, index)."""
    n = len(maker)

    def samples():
        order = np.random.default_rng((cfg.seed, epoch)).permutation(n)
        for index in order:
            rng = np.random.default_rng((cfg.seed, epoch, int(index)))
            s = maker.sample(int(index), rng)
            yield s["image"], s["heatmap"], s["heatmap_weight"], s["locref"], s["locref_weight"]

    f32 = tf.float32
    signature = (tf.TensorSpec([None, None, 3], tf.uint8), tf.TensorSpec([None, None, None], f32),
                 tf.TensorSpec([None, 1, 1], f32), tf.TensorSpec([None, None, None], f32),
                 tf.TensorSpec([None, None, None], f32))
    ds = tf.data.Dataset.from_generator(samples, output_signature=signature)
    return ds.batch(cfg.batch_size, drop_remainder=drop_last).prefetch(2)


def train(project: Project, shuffle: int, overrides: dict[str, Any] | TrainConfig | None = None,
          *, progress: bool = True, resume: bool = False) -> Path:
    """Train a model for ``shuffle``; returns the training folder (a model bundle).

    With ``resume``, training continues from the newest snapshot and its optimiser state up to
    ``epochs``; otherwise an existing training folder with snapshots is an error.
    """
    cfg, folder, existing = prepare_training(project, shuffle, overrides, ENGINE, resume,
                                             seed=keras.utils.set_random_seed, check=_check_net)
    data = load_training_data(project, shuffle, cfg, get_model_folder(project, shuffle, ENGINE))
    cfg = data.cfg
    pretrained = cfg.pretrained
    weights = "imagenet" if pretrained is True else (pretrained or None)
    model = build_pose_model(cfg.net, len(project.bodyparts), cfg.output_stride, weights=weights)
    stride = cfg.output_stride / 2
    maker = SampleMaker(data.images, data.keypoints, cfg, lambda h, w: grid_size(model, h, w),
                        stride)
    pseudo = pseudo_labels_for(project, cfg, folder, maker, data.labelled)
    samples = maker if pseudo is None else pseudo.samples
    optimizer = _make_optimizer(cfg)
    optimizer.build(model.trainable_variables)
    train_step, predict = _compiled(model, optimizer, float(cfg.locref_loss_weight))
    drop_last = len(maker) > cfg.batch_size
    steps_per_epoch = max(len(maker) // cfg.batch_size if drop_last
                          else math.ceil(len(maker) / cfg.batch_size), 1)

    def train_epoch(epoch: int, cfg: TrainConfig, clock: StepClock) -> tuple[np.ndarray, float]:
        totals, lr = np.zeros(3), cfg.lr
        if pseudo is not None:
            pseudo.before_epoch(epoch, lambda ims: _poses(predict, ims, stride,
                                                          cfg.target.locref_stdev,
                                                          data.body_window))
        for step, batch in enumerate(_dataset(samples, cfg, epoch, drop_last)):
            lr = lr_at(cfg, epoch + step / steps_per_epoch)
            optimizer.learning_rate = lr
            loss, hm, lo = train_step(*batch)
            totals += (float(loss), float(hm), float(lo))
            clock.tick()
        return totals / steps_per_epoch, lr

    def save(epoch: int) -> None:
        write_snapshot(folder, epoch, _bundle_for(project, shuffle, cfg, epoch, data.body_window),
                       lambda path: save_weights(model, path, metadata={
                           "epoch": str(epoch), "net": cfg.net, "engine": ENGINE}),
                       lambda path: _save_resume_state(path, optimizer, epoch))

    return run_epochs(
        project, shuffle, cfg, folder, existing, resume=resume, progress=progress,
        restore=lambda snapshot: load_weights(model, snapshot),
        load_state=lambda path: _load_resume_state(path, optimizer), train_epoch=train_epoch,
        test_error=lambda: _mean_error(predict, data.test_images, data.test_keypoints, stride,
                                       cfg.target.locref_stdev, data.body_window),
        save_snapshot=save)


def _compiled(model: "keras.Model", optimizer: "keras.optimizers.Optimizer",
              loss_weight: float) -> tuple[Any, Any]:
    """The compiled training step (a batch -> losses) and prediction (images -> maps)."""
    variables = model.trainable_variables
    f32 = tf.float32

    @tf.function(input_signature=[
        tf.TensorSpec([None, None, None, 3], tf.uint8), tf.TensorSpec([None, None, None, None], f32),
        tf.TensorSpec([None, None, 1, 1], f32), tf.TensorSpec([None, None, None, None], f32),
        tf.TensorSpec([None, None, None, None], f32)])
    def train_step(image, heatmap, heatmap_weight, locref, locref_weight):
        with tf.GradientTape() as tape:
            heat, loc = model(tf.cast(image, f32), training=True)
            loss, hm, lo = pose_loss(heat, loc, heatmap, heatmap_weight, locref, locref_weight,
                                     loss_weight)
        grads = tape.gradient(loss, variables)
        optimizer.apply_gradients(zip(grads, variables))
        return loss, hm, lo

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)])
    def predict(image):
        heat, loc = model(tf.cast(image, f32), training=False)
        return tf.sigmoid(heat), loc

    return train_step, predict
