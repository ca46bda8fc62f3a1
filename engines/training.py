"""Framework-neutral training settings and sample generation.

Every engine trains from the same :class:`TrainConfig` and the same :class:`SampleMaker`
(augmentation + heatmap/locref targets in numpy), so switching engines changes nothing but
the framework that runs the network.

Settings are layered: built-in defaults, then ``train_config.yaml`` in the shuffle's model
folder (if the user wrote one), then command-line options; an option left as ``None`` means
"not set" and never overrides a lower layer.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import cv2
import numpy as np
import yaml

from posed.engines.decoding import TargetSpec, make_targets
from posed.errors import ConfigError

NETS = ("resnet_50", "resnet_18", "mobilenet_v2_1.0", "mobilenet_v2_0.35", "efficientnet_b0")
SCHEDULES = ("cosine", "step", "constant")


@dataclass(frozen=True)
class AugmentConfig:
    """Random augmentation applied to each training sample.

    Attributes:
        rotation: Maximum absolute rotation, degrees.
        scale: (min, max) zoom factor.
        shift: Maximum crop-centre shift as a fraction of the crop size.
        blur_prob: Probability of a Gaussian blur.
        noise: Standard deviation of additive Gaussian noise (0..1 scale); 0 disables it.
        brightness: Maximum brightness change (fraction of full range).
        contrast: Maximum relative contrast change.
    """

    rotation: float = 25.0
    scale: tuple[float, float] = (0.85, 1.15)
    shift: float = 0.1
    blur_prob: float = 0.2
    noise: float = 0.02
    brightness: float = 0.15
    contrast: float = 0.2


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides how a model is trained.

    Attributes:
        net: Backbone name (one of :data:`NETS`).
        output_stride: Backbone output stride (8, 16 or 32); the heatmap stride is half of it.
        pretrained: ``False``, ``True`` (download ImageNet weights) or a local weights file.
        epochs: Number of passes over the training images.
        batch_size: Images per optimisation step.
        lr: Peak learning rate (AdamW).
        weight_decay: AdamW weight decay.
        schedule: ``cosine`` (warm-up then cosine decay), ``step`` (÷10 at 60% and 85%) or ``constant``.
        warmup_epochs: Linear warm-up length for the cosine schedule.
        save_every: Write a snapshot every this many epochs (and always at the end).
        crop: Training crop (width, height) in pixels; ``None`` trains on whole images.
        locref_loss_weight: Weight of the location-refinement loss.
        seed: Seed for weights init, sample order and augmentation.
        num_workers: Data-loading worker processes (0 = in the training process).
        augment: Augmentation settings.
        target: Heatmap / locref target settings.
    """

    net: str = "resnet_50"
    output_stride: int = 16
    pretrained: bool | str = False
    epochs: int = 50
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-4
    schedule: str = "cosine"
    warmup_epochs: float = 1.0
    save_every: int = 10
    crop: tuple[int, int] | None = None
    locref_loss_weight: float = 0.1
    seed: int = 0
    num_workers: int = 0
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    target: TargetSpec = field(default_factory=TargetSpec)

    def to_dict(self) -> dict[str, Any]:
        """Plain YAML-friendly dict."""
        data = dataclasses.asdict(self)
        data["augment"]["scale"] = list(self.augment.scale)
        if self.crop is not None:
            data["crop"] = list(self.crop)
        return data


def _coerce(value: Any, typ: Any, where: str) -> Any:
    """Check one value against a dataclass field type (the few types used here)."""
    text = str(typ)
    if text in ("int",):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif text == "float":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif text == "str":
        ok = isinstance(value, str)
    elif text == "bool | str":
        ok = isinstance(value, (bool, str))
    elif text.startswith("tuple[int, int]"):
        ok = value is None if "None" in text and value is None else (
            isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) for v in value)
        )
        value = tuple(value) if isinstance(value, (list, tuple)) else value
    elif text == "tuple[float, float]":
        ok = isinstance(value, (list, tuple)) and len(value) == 2 and all(
            isinstance(v, (int, float)) for v in value)
        value = tuple(float(v) for v in value) if ok else value
    else:
        ok = True
    if not ok:
        raise ConfigError(f"{where}: expected {text}, got {value!r}")
    return value


def _build(cls: type, data: Mapping[str, Any], source: str, prefix: str = "") -> Any:
    """Instantiate a settings dataclass from a mapping, naming ``source`` and the key on error."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: key '{prefix.rstrip('.')}': expected a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if key not in fields:
            raise ConfigError(f"{source}: unknown key '{name}' (known: {', '.join(fields)})")
        if key == "augment":
            kwargs[key] = _build(AugmentConfig, value or {}, source, f"{name}.")
        elif key == "target":
            try:
                kwargs[key] = _build(TargetSpec, value or {}, source, f"{name}.")
            except ValueError as exc:
                raise ConfigError(f"{source}: key '{name}': {exc}") from None
        else:
            kwargs[key] = _coerce(value, fields[key].type, f"{source}: key '{name}'")
    return cls(**kwargs)


def make_train_config(layers: list[tuple[str, Mapping[str, Any] | None]]) -> TrainConfig:
    """Merge settings layers (lowest first); each is ``(where, mapping)``, ``None`` values skipped.

    ``where`` names the source (a file path or ``command line``) in error messages.
    """
    merged = TrainConfig()
    for where, layer in layers:
        if not layer:
            continue
        if not isinstance(layer, Mapping):
            raise ConfigError(f"{where}: expected a mapping of training settings")
        clean = {k: v for k, v in layer.items() if v is not None}
        for nested in ("augment", "target"):
            # A layer that sets one augmentation key keeps the others from lower layers.
            if isinstance(clean.get(nested), Mapping):
                lower = dataclasses.asdict(getattr(merged, nested))
                clean[nested] = {**lower, **clean[nested]}
        update = _build(TrainConfig, clean, where)
        changes = {k: getattr(update, k) for k in clean}
        merged = dataclasses.replace(merged, **changes)
    if merged.net not in NETS:
        raise ConfigError(f"net '{merged.net}' is not known (known: {', '.join(NETS)})")
    if merged.output_stride not in (8, 16, 32):
        raise ConfigError(f"output_stride {merged.output_stride} must be 8, 16 or 32")
    if merged.schedule not in SCHEDULES:
        raise ConfigError(f"schedule '{merged.schedule}' is not one of {', '.join(SCHEDULES)}")
    for name in ("epochs", "batch_size", "save_every"):
        if getattr(merged, name) < 1:
            raise ConfigError(f"{name} must be at least 1, got {getattr(merged, name)}")
    return merged


def read_train_config_file(path: Path) -> dict[str, Any] | None:
    """Load a ``train_config.yaml`` layer if the file exists."""
    if not path.is_file():
        return None
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML ({exc})".replace("\n", " ")) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of training settings")
    return data


def lr_at(cfg: TrainConfig, progress_epochs: float) -> float:
    """Learning rate after ``progress_epochs`` (fractional) epochs."""
    if cfg.schedule == "constant":
        return cfg.lr
    if cfg.schedule == "step":
        frac = progress_epochs / cfg.epochs
        return cfg.lr * (0.1 ** ((frac >= 0.6) + (frac >= 0.85)))
    if progress_epochs < cfg.warmup_epochs:
        return cfg.lr * max(progress_epochs / cfg.warmup_epochs, 0.02)
    span = max(cfg.epochs - cfg.warmup_epochs, 1e-9)
    t = min((progress_epochs - cfg.warmup_epochs) / span, 1.0)
    return cfg.lr * (0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * t)))


class SampleMaker:
    """Turns (image, keypoints) into augmented training samples with targets.

    Args:
        images: uint8 H×W×3 RGB images (sizes may differ).
        keypoints: Per image, K×2 float array (NaN = missing).
        cfg: Training settings.
        grid_fn: Maps an input (height, width) to the network's output grid (height, width).
        stride: Input pixels per output cell.
    """

    def __init__(self, images: list[np.ndarray], keypoints: list[np.ndarray], cfg: TrainConfig,
                 grid_fn: Any, stride: float) -> None:
        self.images = images
        self.keypoints = [np.asarray(k, dtype=np.float64) for k in keypoints]
        self.cfg = cfg
        self.grid_fn = grid_fn
        self.stride = stride
        self._grids: dict[tuple[int, int], tuple[int, int]] = {}

    def __len__(self) -> int:
        return len(self.images)

    def out_size(self, index: int) -> tuple[int, int]:
        """(width, height) of the sample for ``index`` (crop size, or the image size)."""
        if self.cfg.crop is not None:
            return self.cfg.crop
        h, w = self.images[index].shape[:2]
        return w, h

    def sample(self, index: int, rng: np.random.Generator, augment: bool = True) -> dict[str, np.ndarray]:
        """One sample: ``image`` uint8 H×W×3 plus the target arrays of :func:`make_targets`."""
        image = self.images[index]
        kpts = self.keypoints[index]
        out_w, out_h = self.out_size(index)
        matrix = self._affine(image.shape[:2], kpts, (out_w, out_h), rng, augment)
        # Replicate the edge: reflecting would mirror body parts into the sample without
        # labels (teaching that a visible part is background); a constant fill adds hard
        # edges never seen at inference (measured worse on the synthetic project).
        warped = cv2.warpAffine(image, matrix, (out_w, out_h), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_REPLICATE)
        ones = np.ones((kpts.shape[0], 1))
        moved = np.concatenate([kpts, ones], axis=1) @ matrix.T
        inside = (moved[:, 0] >= 0) & (moved[:, 0] <= out_w - 1) & (moved[:, 1] >= 0) & (
            moved[:, 1] <= out_h - 1)
        moved[~inside] = np.nan  # parts pushed out of the crop become "missing"
        if augment:
            warped = self._photometric(warped, rng)
        key = (out_h, out_w)
        if key not in self._grids:
            self._grids[key] = tuple(self.grid_fn(out_h, out_w))
        targets = make_targets(moved, self._grids[key], self.stride, self.cfg.target)
        targets["image"] = warped
        return targets

    def _affine(self, hw: tuple[int, int], kpts: np.ndarray, out: tuple[int, int],
                rng: np.random.Generator, augment: bool) -> np.ndarray:
        h, w = hw
        out_w, out_h = out
        aug = self.cfg.augment
        # Centre the crop on the animal (mean of visible parts) when cropping, else on the image.
        visible = np.isfinite(kpts).all(axis=1)
        if self.cfg.crop is not None and visible.any():
            cx, cy = kpts[visible].mean(axis=0)
        else:
            cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
        angle, scale = 0.0, 1.0
        if augment:
            angle = float(rng.uniform(-aug.rotation, aug.rotation))
            scale = float(rng.uniform(*aug.scale))
            cx += float(rng.uniform(-aug.shift, aug.shift)) * out_w
            cy += float(rng.uniform(-aug.shift, aug.shift)) * out_h
        matrix = cv2.getRotationMatrix2D((float(cx), float(cy)), angle, scale)
        matrix[0, 2] += (out_w - 1) / 2.0 - cx
        matrix[1, 2] += (out_h - 1) / 2.0 - cy
        return matrix

    def _photometric(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        aug = self.cfg.augment
        img = image.astype(np.float32)
        if aug.contrast or aug.brightness:
            c = 1.0 + float(rng.uniform(-aug.contrast, aug.contrast))
            b = float(rng.uniform(-aug.brightness, aug.brightness)) * 255.0
            img = (img - 127.5) * c + 127.5 + b
        if aug.blur_prob and rng.random() < aug.blur_prob:
            sigma = float(rng.uniform(0.5, 1.5))
            img = cv2.GaussianBlur(img, (0, 0), sigma)
        if aug.noise:
            img = img + rng.normal(0.0, aug.noise * 255.0, img.shape).astype(np.float32)
        return np.clip(img, 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------- shared by backends

STATS_FILE = "learning_stats.csv"
RESUME_FILE = "resume-state.safetensors"
STATS_COLUMNS = ["epoch", "lr", "loss", "heatmap_loss", "locref_loss", "seconds", "test_error_px"]


def snapshot_name(epoch: int) -> str:
    """File name of the weights snapshot written after ``epoch``."""
    return f"snapshot-{epoch:03d}.safetensors"


def resolve_train_config(project: Any, shuffle: int, overrides: "Mapping[str, Any] | TrainConfig | None",
                         engine: str, resume: bool = False) -> TrainConfig:
    """Defaults ← project config ← shuffle's ``train_config.yaml`` ← overrides.

    The user's settings file is ``<model folder>/train_config.yaml``; when resuming, the
    settings the interrupted run resolved (``train/train_config.yaml``) are used instead.
    """
    from posed.engines import compat

    if isinstance(overrides, TrainConfig):
        return overrides
    folder = compat.get_model_folder(project, shuffle, engine)
    cfg_file = folder / "train_config.yaml"
    if resume and (folder / "train" / "train_config.yaml").is_file():
        cfg_file = folder / "train" / "train_config.yaml"
    base: dict[str, Any] = {"batch_size": project.batch_size}
    if project.default_net_type:
        base["net"] = project.default_net_type
    return make_train_config([
        (str(project.config_path), base),
        (str(cfg_file), read_train_config_file(cfg_file)),
        ("command line", overrides or {}),
    ])


def write_resolved_config(path: Path, cfg: TrainConfig) -> None:
    """Record the settings a run actually used (read back on resume)."""
    from posed.engines.io import atomic_write_text

    atomic_write_text(path, "# resolved training settings of this run (written by posed)\n"
                      + yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def resume_epoch(folder: Path, snapshots: list[Path], load_state: Any) -> int:
    """Epoch to continue from: the optimiser state's, else (weights only) the newest snapshot's.

    Args:
        folder: Training folder.
        snapshots: Its snapshots, oldest first (non-empty).
        load_state: Engine function that restores ``resume-state.safetensors`` and returns its epoch.
    """
    import logging

    resume_file = folder / RESUME_FILE
    if resume_file.is_file():
        return int(load_state(resume_file))
    logging.getLogger(__name__).warning("%s missing: resuming weights only", resume_file)
    return int(snapshots[-1].stem.split("-")[1])


class LearningStats:
    """``learning_stats.csv`` of a run: earlier rows kept up to the resumed epoch, one row per epoch.

    Also writes the run's resolved settings (``train_config.yaml``) beside it, since both
    describe the same run and both are read back on resume.
    """

    def __init__(self, folder: Path, cfg: TrainConfig, start_epoch: int) -> None:
        import csv

        write_resolved_config(folder / "train_config.yaml", cfg)
        path = folder / STATS_FILE
        kept = stats_up_to(path, start_epoch)
        self._fh = open(path, "w", newline="")
        self._writer = csv.writer(self._fh)
        self._writer.writerow(STATS_COLUMNS)
        self._writer.writerows(kept)
        self._fh.flush()

    def row(self, epoch: int, lr: float, losses: np.ndarray, seconds: float, test_error: float) -> None:
        """Append one epoch: (total, heatmap, locref) losses; NaN test error is left empty."""
        self._writer.writerow([epoch, f"{lr:.6g}", f"{losses[0]:.6f}", f"{losses[1]:.6f}",
                               f"{losses[2]:.6f}", f"{seconds:.2f}",
                               "" if np.isnan(test_error) else f"{test_error:.3f}"])
        self._fh.flush()

    def close(self) -> None:
        """Close the file."""
        self._fh.close()


def stats_up_to(path: Path, epoch: int) -> list[list[str]]:
    """Rows of an earlier run's stats up to ``epoch``: a resumed run redoes the later epochs."""
    import csv

    if epoch == 0 or not path.is_file():
        return []
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))[1:]
    return [r for r in rows if r and r[0].isdigit() and int(r[0]) <= epoch]


@dataclass
class TrainingData:
    """The labelled images of one shuffle, loaded for training."""

    cfg: TrainConfig
    images: list[np.ndarray]
    keypoints: list[np.ndarray]
    test_images: list[np.ndarray]
    test_keypoints: list[np.ndarray]


def load_training_data(project: Any, shuffle: int, cfg: TrainConfig, where: Path) -> TrainingData:
    """Images and labels of the shuffle's split; picks a common crop when sizes differ.

    Raises:
        ConfigError: the split names an image that has no labels (``where`` names the folder).
    """
    import logging

    from posed.engines.project import load_image, load_labels, load_split

    split = load_split(project, shuffle)
    labels = load_labels(project)
    index = {img: i for i, img in enumerate(labels.images)}
    missing = [img for img in split.train if img not in index]
    if missing:
        raise ConfigError(f"{where}: split lists '{missing[0]}', which has no labels")
    images = [load_image(project.root, img) for img in split.train]
    kpts = [labels.keypoints[index[img]] for img in split.train]
    test = [img for img in split.test if img in index]
    if cfg.crop is None and len({im.shape for im in images}) > 1:
        w = min(im.shape[1] for im in images) // 32 * 32
        h = min(im.shape[0] for im in images) // 32 * 32
        logging.getLogger(__name__).info("training images differ in size; training on %dx%d crops",
                                         w, h)
        cfg = dataclasses.replace(cfg, crop=(w, h))
    return TrainingData(cfg, images, kpts, [load_image(project.root, img) for img in test],
                        [labels.keypoints[index[img]] for img in test])


def bundle_source(project: Any, shuffle: int, cfg: TrainConfig, epoch: int) -> dict[str, Any]:
    """The ``source`` section of a trained snapshot's bundle (same for every engine)."""
    from posed.engines.dataformats import scorer_name
    from posed.engines.project import load_split

    return {"project": str(project.root), "task": project.task, "shuffle": shuffle,
            "snapshot": epoch, "train_fraction": load_split(project, shuffle).train_fraction,
            "scorer": scorer_name(cfg.net, project.name, shuffle, epoch),
            "pcutoff": project.pcutoff}
