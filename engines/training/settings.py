"""Training settings: :class:`TrainConfig`, its layers and the learning-rate schedule."""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import yaml
from posed.engines.decoding import TargetSpec

from posed.errors import ConfigError

log = logging.getLogger(__name__)

NETS = ("resnet_50", "resnet_18", "mobilenet_v2_1.0", "mobilenet_v2_0.35", "efficientnet_b0",
        "dlc_resnet_50")
SCHEDULES = ("cosine", "step", "constant")
CROP_SAMPLING = ("centred", "uniform", "hybrid")
RECIPES = ("auto", "scratch", "finetune")
# From random init a network needs a higher rate, finer score maps and a fixed amount of
# optimisation whatever the project size. Measured on synthetic projects (tests/conftest.py
# FAST_TRAIN and benchmarks/results/recipe.json): 600 steps at 3e-3 with output stride 8 reach
# 2-3 px where the fine-tuning defaults (1e-3, stride 16, 50 epochs) stay near 19 px. Strong
# photometric augmentation over twice the steps (benchmarks/results/augment.json) then gives
# 1.8-2.0 px on the project's own test images and 2.1-2.7 px on projects of other floors and
# coats, where the plain augmentation over 600 steps gave 2.2-2.4 and 7.6-19 px (means).
# Inverting 15% of the images as well (benchmarks/results/recipe-invert-intel-amx.json, same
# CPU, 80 and 160 frames, two seeds each) keeps every unseen floor within 3 px, the inverted
# one included, where without it each of the 4 such models was over 3 px on one floor or
# more (3.3-45.8 px).
SCRATCH = {"lr": 3e-3, "output_stride": 8,
           "augment": {"brightness": 0.4, "contrast": 0.5, "noise": 0.04, "invert_prob": 0.15}}
SCRATCH_STEPS = 1200
SCRATCH_EPOCHS = (30, 300)  # the bounds on the epochs those steps become
# Larger training inputs need more steps. Measured at two sizes: 1200 steps suffice for 128x128
# synthetic frames; DeepLabCut's openfield project on 320x320 crops is <= 5 px mean in 4 of 9
# runs after 1200 steps, in 5 of 6 after 2400 and in 3 of 3 after 2800 (4.17-4.35 px; the
# seed at 5.11 px after 2400 is one of them; 52-58 CPU-minutes on an AVX-512 CPU;
# benchmarks/results/train_openfield_seeds.json). In between the steps grow linearly with the
# input's side; beyond 320 px (not measured) they stay at 2800.
SCRATCH_STEPS_LARGE = 2800
SCRATCH_SIDES = (128, 320)
# Frames larger than this on a side train on crops of this size (cut "hybrid": on the animal
# or anywhere), as the openfield measurement did: whole 640x480 frames would cost 3x the CPU
# per step.
SCRATCH_CROP = 320
# A top-down camera sees the animal face every way, while a few dozen labelled frames show
# some headings only (openfield's 93 cover about 240 degrees). Rotating whole synthetic frames
# over the full circle took 40-frame projects from 4.7-8.7 px to 2.0-3.0 px on unseen floors
# and 80-frame ones from 2.2-3.0 to 1.8-2.4 px, at the recipe's 1200 steps; on openfield's
# 320-px crops it did not converge within 2800 steps (benchmarks/RESULTS.md, "Full-circle
# rotation"), so crops keep the plain rotation. The view counts as top-down when no line
# between two labelled parts keeps its axis across the frames: the largest mean resultant
# length of the doubled line angles (0: every axis, 1: one) is below TOPDOWN_AXIS. Measured:
# synthetic (40 frames, seeds 0, 1, 5) 0.14-0.28, openfield 0.40, Reaching (side view, a
# fixed joystick among its parts) 1.00. 0.55 is an axis spread evenly over about 110 degrees:
# a side view where the body tilts between level and upright (rearing, 0.64) stays a side
# view. Too few frames tell nothing. Fine-tuning keeps its rotation: pretrained weights cannot
# be measured here (nothing can be downloaded).
TOPDOWN_AXIS = 0.55
TOPDOWN_MIN_FRAMES = 10
# DeepLabCut's own architectures keep DeepLabCut's stride: it is part of the snapshot format
# that posed publishes for DeepLabCut to read (engines/dlc/roundtrip.py).
FIXED_STRIDE_NETS = ("dlc_resnet_50",)


def _key_error(section: str, settings: Any, key: str, why: str) -> ValueError:
    """The one-line error of a bad ``section.key`` value (``_build`` adds the file)."""
    return ValueError(f"key '{section}.{key}': {why}, got {getattr(settings, key)!r}")


@dataclass(frozen=True)
class AugmentConfig:
    """Random augmentation applied to each training sample.

    Attributes:
        rotation: Maximum absolute rotation, degrees (0..180; 180 = the full circle, for
            top-down views where the animal faces any way).
        scale: (min, max) zoom factor.
        shift: Maximum crop-centre shift as a fraction of the crop size.
        blur_prob: Probability of a Gaussian blur.
        noise: Standard deviation of additive Gaussian noise (0..1 scale); 0 disables it.
        brightness: Maximum brightness change (fraction of full range).
        contrast: Maximum relative contrast change.
        flip_prob: Probability of a horizontal flip; the parts of each ``flip_pairs`` pair
            swap labels, every other part keeps its own.
        flip_pairs: Index pairs of the body parts a flip swaps (columns of the keypoints);
            training sets them from the project (see :func:`project_flip_pairs`).
        occlude_prob: Probability of a rectangle of random grey or noise over the image;
            the parts under it keep their labels.
        motion_blur_prob: Probability of a linear motion blur of random angle and length.
        invert_prob: Probability of inverting the image (255 - value): a light animal on a
            dark floor then also looks like a dark one on a light floor.
    """

    rotation: float = 25.0
    scale: tuple[float, float] = (0.85, 1.15)
    shift: float = 0.1
    blur_prob: float = 0.2
    noise: float = 0.02
    brightness: float = 0.15
    contrast: float = 0.2
    flip_prob: float = 0.0
    flip_pairs: tuple[tuple[int, int], ...] = ()
    occlude_prob: float = 0.0
    motion_blur_prob: float = 0.0
    invert_prob: float = 0.0

    def __post_init__(self) -> None:
        def bad(key: str, why: str) -> ValueError:
            return _key_error("augment", self, key, why)

        for key in ("blur_prob", "flip_prob", "occlude_prob", "motion_blur_prob", "invert_prob"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise bad(key, "a probability must be between 0 and 1")
        for key in ("shift", "noise", "brightness", "contrast"):
            if getattr(self, key) < 0:
                raise bad(key, "must not be negative")
        if not 0.0 <= self.rotation <= 180.0:
            raise bad("rotation", "must be between 0 and 180 degrees (180 = any angle)")
        if not 0.0 < self.scale[0] <= self.scale[1]:
            raise bad("scale", "must be [min, max] with 0 < min <= max")
        flat = [i for pair in self.flip_pairs for i in pair]
        if any(i < 0 for i in flat) or len(set(flat)) != len(flat):
            raise bad("flip_pairs", "each body part index (>= 0) may appear in one pair only")


@dataclass(frozen=True)
class PseudoLabelConfig:
    """Semi-supervised training on the project's unlabelled video frames
    (:mod:`posed.engines.training.pseudo`).

    From ``start`` of the epochs on, the model being trained labels ``frames`` frames of the
    videos; a part counts only where two views of the frame (the frame, and the frame scaled
    by 7/8) both reach ``pcutoff`` and agree within ``agree_px``. From then on, each sample of
    an epoch is one of those frames with probability ``mix`` (a frame with less than
    ``min_parts`` of its parts kept is left out); the steps per epoch do not change.

    Attributes:
        enabled: Off by default.
        videos: Video files (relative to the project folder, or absolute); empty = the
            project's videos (``videos/`` files named like a ``labeled-data`` folder).
        frames: Unlabelled frames to label, evenly spaced over the videos; labelled frames
            are left out.
        start: Fraction of the epochs after which the frames are labelled (0 < start < 1).
        pcutoff: Likelihood both views must reach for a part to be kept.
        agree_px: Largest distance, in pixels, between the two views' positions of a part.
        mix: Probability that a training sample is a pseudo-labelled frame.
        min_parts: Fraction of the body parts a frame must keep to be used.
    """

    enabled: bool = False
    videos: tuple[str, ...] = ()
    frames: int = 200
    start: float = 0.5
    pcutoff: float = 0.8
    agree_px: float = 4.0
    mix: float = 0.5
    min_parts: float = 0.5

    def __post_init__(self) -> None:
        def bad(key: str, why: str) -> ValueError:
            return _key_error("pseudo_labels", self, key, why)

        if self.frames < 1:
            raise bad("frames", "must be at least 1")
        if not 0.0 < self.start < 1.0:
            raise bad("start", "must be a fraction of the epochs between 0 and 1 (exclusive)")
        for key in ("pcutoff", "mix", "min_parts"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise bad(key, "must be between 0 and 1")
        if self.agree_px <= 0:
            raise bad("agree_px", "must be positive")


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
        schedule: ``cosine`` (warm-up then cosine decay), ``step`` (÷10 at 60% and 85%) or
            ``constant``.
        warmup_epochs: Linear warm-up length for the cosine schedule.
        save_every: Write a snapshot every this many epochs (and always at the end).
        crop: Training crop (width, height) in pixels; ``None`` trains on whole images.
        crop_sampling: Where training crops are cut: ``centred`` on the animal (shifted by
            ``augment.shift``), ``uniform`` anywhere in the image, or ``hybrid`` (each
            sample either, at even odds). Crops away from the animal show the model the
            background it meets on whole frames at inference: centred crops alone never
            show it the far parts of a large frame, where it may then find a part.
            ``hybrid`` is the default, as in DeepLabCut 3 (measured on openfield: see
            benchmarks/RESULTS.md).
        locref_loss_weight: Weight of the location-refinement loss.
        seed: Seed for weights init, sample order and augmentation.
        num_workers: Data-loading worker processes (0 = in the training process).
        augment: Augmentation settings.
        target: Heatmap / locref target settings.
        recipe: ``auto`` (``scratch`` without pretrained weights, else ``finetune``),
            ``scratch`` or ``finetune``: the defaults below the project's and the user's
            settings (:func:`recipe_settings`); the resolved config names the one used.
        pseudo_labels: Training on confidently self-labelled video frames (off by default).
        budget_minutes: Wall-clock minutes the training epochs may take (``None``: no limit).
            After the first epoch ``epochs`` is lowered, never raised, to what fits at that
            epoch's pace (:func:`budget_epochs`); the rest of the run is then the run those
            epochs would have been. Snapshot evaluations are not counted.
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
    crop_sampling: str = "hybrid"
    locref_loss_weight: float = 0.1
    seed: int = 0
    num_workers: int = 0
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    target: TargetSpec = field(default_factory=TargetSpec)
    recipe: str = "auto"
    pseudo_labels: PseudoLabelConfig = field(default_factory=PseudoLabelConfig)
    budget_minutes: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain YAML-friendly dict."""
        data = dataclasses.asdict(self)
        data["augment"]["scale"] = list(self.augment.scale)
        data["augment"]["flip_pairs"] = [list(p) for p in self.augment.flip_pairs]
        if self.crop is not None:
            data["crop"] = list(self.crop)
        data["pseudo_labels"]["videos"] = list(self.pseudo_labels.videos)
        return data


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _coerce(value: Any, typ: Any, where: str) -> Any:
    """Check one value against a dataclass field type (the few types used here)."""
    text = str(typ)
    if text in ("int",):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif text == "float":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif text == "float | None":
        ok = value is None or isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok and value is not None else value
    elif text == "str":
        ok = isinstance(value, str)
    elif text == "bool | str":
        ok = isinstance(value, (bool, str))
    elif text == "bool":
        ok = isinstance(value, bool)
    elif text == "tuple[str, ...]":
        ok = isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
        value = tuple(value) if ok else value
    elif text.startswith("tuple[int, int]"):
        ok = value is None if "None" in text and value is None else (
            isinstance(value, (list, tuple)) and len(value) == 2
            and all(isinstance(v, int) for v in value)
        )
        value = tuple(value) if isinstance(value, (list, tuple)) else value
    elif text == "tuple[tuple[int, int], ...]":
        ok = isinstance(value, (list, tuple)) and all(
            isinstance(p, (list, tuple)) and len(p) == 2 and all(_is_int(i) for i in p)
            for p in value)
        value = tuple((p[0], p[1]) for p in value) if ok else value
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
        if key in ("augment", "pseudo_labels"):
            kind = AugmentConfig if key == "augment" else PseudoLabelConfig
            try:
                kwargs[key] = _build(kind, value or {}, source, f"{name}.")
            except ValueError as exc:  # their checks name the key
                raise ConfigError(f"{source}: {exc}") from None
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
        for nested in ("augment", "target", "pseudo_labels"):
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
    if merged.recipe not in RECIPES:
        raise ConfigError(f"recipe '{merged.recipe}' is not one of {', '.join(RECIPES)}")
    if merged.schedule not in SCHEDULES:
        raise ConfigError(f"schedule '{merged.schedule}' is not one of {', '.join(SCHEDULES)}")
    if merged.crop_sampling not in CROP_SAMPLING:
        raise ConfigError(f"crop_sampling '{merged.crop_sampling}' is not one of "
                          f"{', '.join(CROP_SAMPLING)}")
    for name in ("epochs", "batch_size", "save_every"):
        if getattr(merged, name) < 1:
            raise ConfigError(f"{name} must be at least 1, got {getattr(merged, name)}")
    if merged.budget_minutes is not None:
        if not 0 < merged.budget_minutes < math.inf:
            raise ConfigError(f"budget_minutes must be a positive number of minutes, "
                              f"got {merged.budget_minutes}")
        if merged.pseudo_labels.enabled:
            # Pseudo-labelling starts at a fraction of the epochs, fixed before the budget
            # could lower them.
            raise ConfigError("budget_minutes: not supported with pseudo_labels yet")
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


_SEPARATORS = "_-. "


def _mirrored_names(name: str) -> set[str]:
    """Lower-case names of ``name``'s possible left/right partner."""
    low = name.lower()
    out = set()
    for side, other in (("left", "right"), ("right", "left")):
        if low.startswith(side):
            out.add(other + low[len(side):])
        if low.endswith(side):
            out.add(low[:-len(side)] + other)
    # A lone l/r is a side only at a boundary (l_ear, LEar, LF, ear_R, earL): 'rear' and
    # 'lip' are not sided.
    swap = {"l": "r", "r": "l"}
    if len(name) > 1 and low[0] in swap and (name[1] in _SEPARATORS or name[1].isupper()):
        out.add(swap[low[0]] + low[1:])
    if len(name) > 1 and low[-1] in swap and (
            name[-2] in _SEPARATORS or (name[-1].isupper() and name[-2].islower())):
        out.add(low[:-1] + swap[low[-1]])
    out.discard(low)
    return out


def infer_flip_pairs(names: Sequence[str]) -> list[tuple[str, str]]:
    """Left/right partners among ``names``, told by a left/right word or an l/r letter at
    either end (``leftear``/``rightear``, ``ear_L``/``ear_R``, ``LeftPaw``/``RightPaw``);
    case-insensitive. A sided name without a partner is left out (a flip keeps its label)."""
    by_lower = {}
    for name in names:
        by_lower.setdefault(name.lower(), name)
    pairs: list[tuple[str, str]] = []
    taken: set[str] = set()
    for name in names:
        if name in taken:
            continue
        partners = [by_lower[m] for m in sorted(_mirrored_names(name)) if m in by_lower]
        # Both must read as sided: 'LEar' and 'rear' are not partners.
        partners = [m for m in partners if m not in taken and m != name
                    and name.lower() in _mirrored_names(m)]
        if partners:
            pairs.append((name, partners[0]))
            taken.update((name, partners[0]))
    return pairs


def project_flip_pairs(project: Any) -> list[list[int]]:
    """Index pairs (into ``project.bodyparts``) a flip swaps: the config's ``flip_pairs``, else
    those inferred from the names; multi-animal and unique parts are paired among their own."""
    parts = list(project.bodyparts)
    pairs = getattr(project, "flip_pairs", None)
    if pairs is None:
        multi = getattr(project, "multianimalbodyparts", ()) if getattr(
            project, "multianimal", False) else parts
        unique = [p for p in parts if p not in multi]
        pairs = infer_flip_pairs(multi) + infer_flip_pairs(unique)
    return [[parts.index(a), parts.index(b)] for a, b in pairs]


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


def budget_epochs(cfg: TrainConfig, epoch_seconds: float, done: int = 0,
                  elapsed_seconds: float = 0.0) -> int:
    """The epochs of ``cfg`` that fit in its ``budget_minutes`` when ``done`` epochs took
    ``elapsed_seconds`` and each further one takes ``epoch_seconds``: at least ``done`` and
    1 (the epoch already run), at most ``cfg.epochs``."""
    if cfg.budget_minutes is None or epoch_seconds <= 0:
        return cfg.epochs
    left = cfg.budget_minutes * 60.0 - elapsed_seconds
    fit = done + math.floor(left / epoch_seconds + 1e-9)  # 59.999... is 60
    return max(1, done, min(cfg.epochs, fit))


def scratch_steps(side: float) -> int:
    """Optimisation steps of the ``scratch`` recipe for training inputs ``side`` pixels a side
    (the geometric mean of width and height): :data:`SCRATCH_STEPS` up to the first of
    :data:`SCRATCH_SIDES`, :data:`SCRATCH_STEPS_LARGE` from the second, linear in between."""
    lo, hi = SCRATCH_SIDES
    frac = min(1.0, max(0.0, (side - lo) / (hi - lo)))
    return int(round(SCRATCH_STEPS + (SCRATCH_STEPS_LARGE - SCRATCH_STEPS) * frac))


def axis_concentration(keypoints: np.ndarray) -> float | None:
    """How firmly the labelled poses keep one orientation, in [0, 1].

    For each pair of parts, the mean resultant length of twice the angle of the line between
    them over the frames where both are labelled (doubling makes a line and its reverse one
    axis): 1 when the line keeps its axis, near 0 when it turns every way. Returns the largest
    over pairs, as one fixed line (a joystick, an animal seen from the side) marks a view
    that does not turn; None when no pair is labelled in :data:`TOPDOWN_MIN_FRAMES` frames.

    Args:
        keypoints: (frames, parts, 2) pixel coordinates, NaN where not labelled.
    """
    kp = np.asarray(keypoints, dtype=float)
    best = None
    for a in range(kp.shape[1]):
        for b in range(a + 1, kp.shape[1]):
            d = kp[:, b] - kp[:, a]
            ok = np.isfinite(d).all(axis=1) & (np.abs(d).sum(axis=1) > 0)
            if ok.sum() < TOPDOWN_MIN_FRAMES:
                continue
            r = float(np.abs(np.exp(2j * np.arctan2(d[ok, 1], d[ok, 0])).mean()))
            best = r if best is None else max(best, r)
    return best


def recipe_settings(cfg: TrainConfig, train_images: int,
                    image_size: tuple[int, int] | None = None,
                    axis: float | None = None) -> tuple[str, dict[str, Any], str]:
    """The recipe for ``cfg`` (its ``recipe``, or chosen by ``auto``), its settings and why.

    ``scratch`` (random init): :data:`SCRATCH`; crops of :data:`SCRATCH_CROP` pixels when the
    largest training image (``image_size``, width and height) is larger on a side and ``cfg``
    sets no crop; and enough epochs for :func:`scratch_steps` optimisation steps over
    ``train_images``, within :data:`SCRATCH_EPOCHS`. ``finetune`` (pretrained weights): the
    plain defaults of :class:`TrainConfig`. ``scratch`` rotates over the full circle when the
    training labels' :func:`axis_concentration` (``axis``) says the view is top-down and it
    trains on whole images (see :data:`TOPDOWN_AXIS` for why not on crops, nor when
    fine-tuning).
    """
    name = cfg.recipe
    if name == "auto":
        name = "finetune" if cfg.pretrained else "scratch"
        why = "pretrained weights given" if cfg.pretrained else "no pretrained weights"
    else:
        why = "asked for"
    if name == "finetune":
        return name, {"recipe": name}, why
    settings: dict[str, Any] = {**SCRATCH, "recipe": name}
    crop = cfg.crop
    if crop is None and image_size is not None and max(image_size) > SCRATCH_CROP:
        crop = (SCRATCH_CROP, SCRATCH_CROP)
        settings["crop"] = list(crop)
    if axis is not None and axis < TOPDOWN_AXIS:
        why += "; top-down view: label axes %.2f < %g" % (axis, TOPDOWN_AXIS)
        if crop is None:
            settings["augment"] = {**SCRATCH["augment"], "rotation": 180.0}
        else:
            why += ", but crops keep the plain rotation"
    sample = crop or image_size
    side = math.sqrt(sample[0] * sample[1]) if sample else SCRATCH_SIDES[0]
    steps = max(1, math.ceil(max(1, train_images) / cfg.batch_size))
    lo, hi = SCRATCH_EPOCHS
    settings["epochs"] = min(hi, max(lo, math.ceil(scratch_steps(side) / steps)))
    if cfg.net in FIXED_STRIDE_NETS:
        del settings["output_stride"]
    return name, settings, why
