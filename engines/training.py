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
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import cv2
import numpy as np
import yaml

from posed.engines.decoding import TargetSpec, make_targets
from posed.errors import ConfigError

log = logging.getLogger(__name__)

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
        target_fn: Builds the target arrays from the moved keypoints (same shape as given),
            the grid (height, width), the stride and ``cfg.target``; by default
            :func:`make_targets` (K×2 keypoints). Multi-animal training passes I×K×2
            keypoints and its own function; augmentation treats every point alike.
        crop_centre: With ``cfg.crop``, picks the crop centre from the (unflattened)
            keypoints and the sample's RNG; by default the mean of the visible points.
            Multi-animal training centres each crop on one animal picked at random.
    """

    def __init__(self, images: list[np.ndarray], keypoints: list[np.ndarray], cfg: TrainConfig,
                 grid_fn: Any, stride: float, target_fn: Any = None, crop_centre: Any = None) -> None:
        self.images = images
        self.keypoints = [np.asarray(k, dtype=np.float64) for k in keypoints]
        self.cfg = cfg
        self.grid_fn = grid_fn
        self.stride = stride
        self.target_fn = make_targets if target_fn is None else target_fn
        self.crop_centre = crop_centre
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
        shape = self.keypoints[index].shape
        kpts = self.keypoints[index].reshape(-1, 2)  # any layout of points: K×2, I×K×2
        out_w, out_h = self.out_size(index)
        centre = None
        if self.crop_centre is not None and self.cfg.crop is not None:
            centre = self.crop_centre(self.keypoints[index], rng)
        matrix = self._affine(image.shape[:2], kpts, (out_w, out_h), rng, augment, centre)
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
        targets = self.target_fn(moved.reshape(shape), self._grids[key], self.stride,
                                 self.cfg.target)
        targets["image"] = warped
        return targets

    def _affine(self, hw: tuple[int, int], kpts: np.ndarray, out: tuple[int, int],
                rng: np.random.Generator, augment: bool,
                centre: tuple[float, float] | None = None) -> np.ndarray:
        h, w = hw
        out_w, out_h = out
        aug = self.cfg.augment
        # Centre the crop on the animal (mean of visible parts) when cropping, else on the image.
        visible = np.isfinite(kpts).all(axis=1)
        if centre is not None:
            cx, cy = centre
        elif self.cfg.crop is not None and visible.any():
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
    resume_file = folder / RESUME_FILE
    if resume_file.is_file():
        return int(load_state(resume_file))
    log.warning("%s missing: resuming weights only", resume_file)
    return int(snapshots[-1].stem.split("-")[1])


class LearningStats:
    """``learning_stats.csv`` of a run: earlier rows kept up to the resumed epoch, one row per epoch.

    Also writes the run's resolved settings (``train_config.yaml``) beside it, since both
    describe the same run and both are read back on resume.
    """

    def __init__(self, folder: Path, cfg: TrainConfig, start_epoch: int,
                 extra_losses: Sequence[str] = ()) -> None:
        import csv

        write_resolved_config(folder / "train_config.yaml", cfg)
        path = folder / STATS_FILE
        kept = stats_up_to(path, start_epoch)
        self._fh = open(path, "w", newline="")
        self._writer = csv.writer(self._fh)
        # Extra loss columns (e.g. the multi-animal ``paf_loss``) go last, so the shared
        # columns keep their positions.
        self._writer.writerow(STATS_COLUMNS + list(extra_losses))
        self._writer.writerows(kept)
        self._fh.flush()

    def row(self, epoch: int, lr: float, losses: np.ndarray, seconds: float, test_error: float) -> None:
        """Append one epoch: (total, heatmap, locref, *extra) losses; NaN test error is left
        empty."""
        self._writer.writerow([epoch, f"{lr:.6g}", f"{losses[0]:.6f}", f"{losses[1]:.6f}",
                               f"{losses[2]:.6f}", f"{seconds:.2f}",
                               "" if np.isnan(test_error) else f"{test_error:.3f}",
                               *[f"{v:.6f}" for v in losses[3:]]])
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


def _split_rows(project: Any, shuffle: int, labelled: Sequence[str],
                where: Path) -> tuple[list[int], list[int]]:
    """Label-table rows of the shuffle's training and test images (``labelled``: the table's
    image names); test images without labels are left out.

    Raises:
        ConfigError: the split names a training image that has no labels (``where`` names
            the folder).
    """
    from posed.engines.project import load_split

    split = load_split(project, shuffle)
    index = {img: i for i, img in enumerate(labelled)}
    missing = [img for img in split.train if img not in index]
    if missing:
        raise ConfigError(f"{where}: split lists '{missing[0]}', which has no labels")
    return [index[img] for img in split.train], [index[img] for img in split.test if img in index]


def _common_crop(cfg: TrainConfig, images: list[np.ndarray]) -> TrainConfig:
    """``cfg`` with a crop all training images fit (multiples of 32) when their sizes differ
    and no crop is set."""
    if cfg.crop is not None or len({im.shape for im in images}) <= 1:
        return cfg
    w = min(im.shape[1] for im in images) // 32 * 32
    h = min(im.shape[0] for im in images) // 32 * 32
    log.info("training images differ in size; training on %dx%d crops", w, h)
    return dataclasses.replace(cfg, crop=(w, h))


def load_training_data(project: Any, shuffle: int, cfg: TrainConfig, where: Path) -> TrainingData:
    """Images and labels of the shuffle's split; picks a common crop when sizes differ.

    Raises:
        ConfigError: the split names an image that has no labels (``where`` names the folder).
    """
    from posed.engines.project import load_image, load_labels

    labels = load_labels(project)
    train, test = _split_rows(project, shuffle, labels.images, where)
    images = [load_image(project.root, labels.images[i]) for i in train]
    return TrainingData(_common_crop(cfg, images), images, [labels.keypoints[i] for i in train],
                        [load_image(project.root, labels.images[i]) for i in test],
                        [labels.keypoints[i] for i in test])


def bundle_source(project: Any, shuffle: int, cfg: TrainConfig, epoch: int) -> dict[str, Any]:
    """The ``source`` section of a trained snapshot's bundle (same for every engine)."""
    from posed.engines.dataformats import scorer_name
    from posed.engines.project import load_split

    return {"project": str(project.root), "task": project.task, "shuffle": shuffle,
            "snapshot": epoch, "train_fraction": load_split(project, shuffle).train_fraction,
            "scorer": scorer_name(cfg.net, project.name, shuffle, epoch),
            "pcutoff": project.pcutoff}


# ----------------------------------------------------------------------------- multi-animal

def pack_multianimal(keypoints: np.ndarray, unique: np.ndarray | None = None) -> np.ndarray:
    """One image's labels as the R×P×2 array multi-animal samples are made from.

    Rows 0..I-1 are the individuals' multi-animal parts (columns 0..K-1); when there are U
    unique parts, one more row holds them in columns K..K+U-1. Every other cell is NaN, so
    augmentation moves all points alike and each target sees only real labels.

    Args:
        keypoints: I×K×2 (NaN = unlabelled).
        unique: U×2 unique parts, or None / 0×2.
    """
    kp = np.asarray(keypoints, dtype=np.float64)
    n_ind, k = kp.shape[:2]
    u = 0 if unique is None else len(unique)
    out = np.full((n_ind + (1 if u else 0), k + u, 2), np.nan)
    out[:n_ind, :k] = kp
    if u:
        out[n_ind, k:] = np.asarray(unique, dtype=np.float64)
    return out


def make_multianimal_targets(keypoints: np.ndarray, grid_hw: tuple[int, int], stride: float,
                             spec: TargetSpec, skeleton: "Sequence[tuple[int, int]]",
                             paf_width: float) -> dict[str, np.ndarray]:
    """Heatmap, locref and part-affinity-field targets for one image of several animals.

    Args:
        keypoints: R×P×2 from :func:`pack_multianimal` (NaN = not labelled).
        grid_hw: Output grid (height, width).
        stride: Input pixels per grid cell.
        spec: Heatmap / locref settings.
        skeleton: E pairs of part indices (multi-animal parts only).
        paf_width: Half-width of each limb's band, input pixels.

    Returns:
        The arrays of :func:`make_targets` over all P parts, with the heatmaps of the animals
        max-combined and each cell's locref pointing at the nearest animal's part, plus
        ``paf``/``paf_weight`` (2E×h×w) from :func:`posed.engines.assembly.make_paf_targets`.
        ``heatmap_weight`` is 1 for every part: in a multi-animal image an unlabelled part is
        not visible (DeepLabCut labels every visible part), so its map must stay empty.
    """
    from posed.engines.assembly import make_paf_targets
    from posed.engines.decoding import grid_centres

    kp = np.asarray(keypoints, dtype=np.float32)
    rows, parts = kp.shape[:2]
    h, w = grid_hw
    per_row = [make_targets(kp[r], grid_hw, stride, spec) for r in range(rows)]
    heat = np.max([t["heatmap"] for t in per_row], axis=0)
    # The animal whose part is nearest owns the cell's offset (ties: the first animal).
    xs = grid_centres(w, stride)[None, None, None, :]
    ys = grid_centres(h, stride)[None, None, :, None]
    d2 = (kp[..., 0, None, None] - xs) ** 2 + (kp[..., 1, None, None] - ys) ** 2  # R×P×h×w
    owner = np.where(np.isfinite(d2), d2, np.inf).argmin(axis=0)  # P×h×w
    locref = np.stack([t["locref"].reshape(parts, 2, h, w) for t in per_row])  # R×P×2×h×w
    locref = np.take_along_axis(locref, owner[None, :, None], axis=0)[0].reshape(2 * parts, h, w)
    weight = np.max([t["locref_weight"] for t in per_row], axis=0)
    out = {"heatmap": heat.astype(np.float32),
           "heatmap_weight": np.ones((parts, 1, 1), dtype=np.float32),
           "locref": (locref * weight).astype(np.float32), "locref_weight": weight}
    out.update(make_paf_targets(kp, skeleton, grid_hw, stride, width=paf_width))
    return out


def skeleton_from_labels(keypoints: np.ndarray, extra_neighbours: int = 1) -> list[tuple[int, int]]:
    """A part-affinity graph learned from multi-animal labels.

    Parts are joined by a minimum spanning tree on the median distance between them within
    one animal (so every part is reachable), then each part is also joined to its
    ``extra_neighbours`` next-nearest parts: a redundant edge keeps an animal in one piece
    when the part a tree edge depends on is covered.

    Args:
        keypoints: N×I×K×2 labels (NaN = unlabelled).
        extra_neighbours: Extra edges per part beyond the tree.

    Returns:
        (i, j) index pairs with i < j, sorted.
    """
    kp = np.asarray(keypoints, dtype=np.float64).reshape(-1, keypoints.shape[-2], 2)
    k = kp.shape[1]
    dist = np.full((k, k), np.inf)
    for i in range(k):
        for j in range(i + 1, k):
            d = np.linalg.norm(kp[:, i] - kp[:, j], axis=-1)
            d = d[np.isfinite(d)]
            if len(d):
                dist[i, j] = dist[j, i] = float(np.median(d))
    # Prim's algorithm; pairs never labelled together are joined last, at any cost.
    edges: set[tuple[int, int]] = set()
    inside = {0}
    while len(inside) < k:
        best = min(((dist[i, j], i, j) for i in inside for j in range(k) if j not in inside),
                   key=lambda t: (t[0], t[1], t[2]))
        edges.add((min(best[1], best[2]), max(best[1], best[2])))
        inside.add(best[2])
    for i in range(k):
        order = [j for j in np.argsort(dist[i], kind="stable")
                 if j != i and np.isfinite(dist[i, j])]
        for j in order[:extra_neighbours + 1]:
            edges.add((min(i, int(j)), max(i, int(j))))
    return sorted(edges)


def multianimal_skeleton(project: Any, keypoints: np.ndarray) -> list[tuple[int, int]]:
    """The part-affinity graph of a multi-animal project: the config's ``skeleton`` (edges
    between multi-animal parts; DeepLabCut ignores edges to unique parts), completed with
    learned edges when it leaves parts unconnected; learned from the labels when the config
    has no skeleton (:func:`skeleton_from_labels`)."""
    names = list(project.multianimalbodyparts)
    index = {n: i for i, n in enumerate(names)}
    edges = [(index[a], index[b]) for a, b in project.skeleton
             if a in index and b in index and a != b]
    if not edges:
        return skeleton_from_labels(keypoints)
    learned = skeleton_from_labels(keypoints, extra_neighbours=0)
    # Union-find over the config's edges; learned tree edges join what is left apart.
    root = list(range(len(names)))

    def find(i: int) -> int:
        while root[i] != i:
            root[i] = root[root[i]]
            i = root[i]
        return i

    for i, j in edges:
        root[find(i)] = find(j)
    for i, j in learned:
        if find(i) != find(j):
            log.info("skeleton leaves %s unconnected; adding %s-%s", names[j], names[i], names[j])
            edges.append((i, j))
            root[find(i)] = find(j)
    return edges


@dataclass
class MultiAnimalTrainingData(TrainingData):
    """:class:`TrainingData` of a multi-animal project: keypoints are packed R×P×2
    (:func:`pack_multianimal`); ``test_truth`` holds each test image's I×K×2 labels and
    ``skeleton`` the part-affinity graph."""

    test_truth: list[np.ndarray] = field(default_factory=list)
    skeleton: list[tuple[int, int]] = field(default_factory=list)


def load_multianimal_training_data(project: Any, shuffle: int, cfg: TrainConfig,
                                   where: Path) -> MultiAnimalTrainingData:
    """Images and packed labels of a multi-animal shuffle (see :func:`load_training_data`)."""
    from posed.engines.project import load_image, load_multianimal_labels

    labels = load_multianimal_labels(project)
    train, test = _split_rows(project, shuffle, labels.images, where)
    images = [load_image(project.root, labels.images[i]) for i in train]
    cfg = _common_crop(cfg, images)
    packed = [pack_multianimal(labels.keypoints[i], labels.unique[i])
              for i in range(len(labels.images))]
    return MultiAnimalTrainingData(
        cfg, images, [packed[i] for i in train],
        [load_image(project.root, labels.images[i]) for i in test], [packed[i] for i in test],
        test_truth=[labels.keypoints[i] for i in test],
        skeleton=multianimal_skeleton(project, labels.keypoints[train]))


def random_animal_centre(keypoints: np.ndarray,
                         rng: np.random.Generator) -> tuple[float, float] | None:
    """Crop centre for multi-animal samples: the mean of the visible points of one row of
    the packed R×P×2 keypoints (an animal, or the unique parts), picked at random; None
    (the default centre) when nothing is labelled."""
    rows = [r for r in keypoints if np.isfinite(r).all(axis=1).any()]
    if not rows:
        return None
    row = rows[int(rng.integers(len(rows)))]
    cx, cy = row[np.isfinite(row).all(axis=1)].mean(axis=0)
    return float(cx), float(cy)
