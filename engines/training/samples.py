"""Training samples in numpy: augmentation plus heatmap/location-refinement targets."""

from __future__ import annotations

import logging
from typing import Any

import cv2
import numpy as np
from posed.engines.decoding import make_targets
from posed.engines.training.settings import TrainConfig

from posed.errors import ConfigError

log = logging.getLogger(__name__)

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
                 grid_fn: Any, stride: float, target_fn: Any = None,
                 crop_centre: Any = None) -> None:
        self.images = images
        self.keypoints = [np.asarray(k, dtype=np.float64) for k in keypoints]
        self.cfg = cfg
        self.grid_fn = grid_fn
        self.stride = stride
        self.target_fn = make_targets if target_fn is None else target_fn
        self.crop_centre = crop_centre
        self._grids: dict[tuple[int, int], tuple[int, int]] = {}
        # A flip relabels each paired part as its partner; unpaired parts keep their label.
        parts = self.keypoints[0].shape[-2] if self.keypoints else 0
        self._flip_order = np.arange(parts)
        for a, b in cfg.augment.flip_pairs:
            if max(a, b) >= parts:
                raise ConfigError(f"key 'augment.flip_pairs': pair {[a, b]} names a body part "
                                  f"beyond the {parts} labelled")
            self._flip_order[[a, b]] = b, a

    def __len__(self) -> int:
        return len(self.images)

    def out_size(self, index: int) -> tuple[int, int]:
        """(width, height) of the sample for ``index`` (crop size, or the image size)."""
        if self.cfg.crop is not None:
            return self.cfg.crop
        h, w = self.images[index].shape[:2]
        return w, h

    def sample(self, index: int, rng: np.random.Generator,
               augment: bool = True) -> dict[str, np.ndarray]:
        """One sample: ``image`` uint8 H×W×3 plus the target arrays of :func:`make_targets`."""
        image = self.images[index]
        shape = self.keypoints[index].shape
        kpts = self.keypoints[index].reshape(-1, 2)  # any layout of points: K×2, I×K×2
        out_w, out_h = self.out_size(index)
        centre = None
        sampling = self.cfg.crop_sampling
        # drawn only when not centred, so centred settings keep their sample stream
        if self.cfg.crop is not None and augment and sampling != "centred" and (
                sampling == "uniform" or rng.random() < 0.5):
            centre = _uniform_centre(image.shape[:2], (out_w, out_h), rng)
        elif self.crop_centre is not None and self.cfg.crop is not None:
            centre = self.crop_centre(self.keypoints[index], rng)
        matrix, flipped = self._affine(image.shape[:2], kpts, (out_w, out_h), rng, augment,
                                       centre)
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
        moved = moved.reshape(shape)
        if flipped:
            moved = moved[..., self._flip_order, :]
        if augment:
            warped = self._photometric(warped, rng)
        key = (out_h, out_w)
        if key not in self._grids:
            self._grids[key] = tuple(self.grid_fn(out_h, out_w))
        targets = self.target_fn(moved, self._grids[key], self.stride,
                                 self.cfg.target)
        targets["image"] = warped
        return targets

    def _affine(self, hw: tuple[int, int], kpts: np.ndarray, out: tuple[int, int],
                rng: np.random.Generator, augment: bool,
                centre: tuple[float, float] | None = None) -> tuple[np.ndarray, bool]:
        """Input-to-sample matrix, and whether it mirrors left and right."""
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
        angle, scale, flipped = 0.0, 1.0, False
        if augment:
            angle = float(rng.uniform(-aug.rotation, aug.rotation))
            scale = float(rng.uniform(*aug.scale))
            cx += float(rng.uniform(-aug.shift, aug.shift)) * out_w
            cy += float(rng.uniform(-aug.shift, aug.shift)) * out_h
            # Drawn only when enabled, so settings without flips keep their sample stream.
            flipped = bool(aug.flip_prob) and rng.random() < aug.flip_prob
        matrix = cv2.getRotationMatrix2D((float(cx), float(cy)), angle, scale)
        matrix[0, 2] += (out_w - 1) / 2.0 - cx
        matrix[1, 2] += (out_h - 1) / 2.0 - cy
        if flipped:  # mirror the sample about its vertical centre line
            matrix[0] = -matrix[0]
            matrix[0, 2] += out_w - 1
        return matrix, flipped

    def _photometric(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        aug = self.cfg.augment
        img = image.astype(np.float32)
        # New effects draw from the RNG only when enabled: older settings keep their samples.
        if aug.occlude_prob and rng.random() < aug.occlude_prob:
            img = _occlude(img, rng)
        if aug.invert_prob and rng.random() < aug.invert_prob:
            img = 255.0 - img
        if aug.contrast or aug.brightness:
            c = 1.0 + float(rng.uniform(-aug.contrast, aug.contrast))
            b = float(rng.uniform(-aug.brightness, aug.brightness)) * 255.0
            img = (img - 127.5) * c + 127.5 + b
        if aug.blur_prob and rng.random() < aug.blur_prob:
            sigma = float(rng.uniform(0.5, 1.5))
            img = cv2.GaussianBlur(img, (0, 0), sigma)
        if aug.motion_blur_prob and rng.random() < aug.motion_blur_prob:
            img = cv2.filter2D(img, -1, _motion_kernel(img.shape[:2], rng),
                               borderType=cv2.BORDER_REPLICATE)
        if aug.noise:
            img = img + rng.normal(0.0, aug.noise * 255.0, img.shape).astype(np.float32)
        return np.clip(img, 0, 255).astype(np.uint8)


def _occlude(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``img`` with a random rectangle (10-40% of each side) of flat grey or noise.

    The parts under it keep their labels: a labeller marks an occluded part where it must be,
    and the net learns to infer it from the rest of the animal rather than from its own
    pixels (cables, bars, bedding and other animals hide parts in real recordings).
    """
    h, w = img.shape[:2]
    ph = max(1, int(h * rng.uniform(0.1, 0.4)))
    pw = max(1, int(w * rng.uniform(0.1, 0.4)))
    y0 = int(rng.integers(0, h - ph + 1))
    x0 = int(rng.integers(0, w - pw + 1))
    out = img.copy()
    if rng.random() < 0.5:
        out[y0:y0 + ph, x0:x0 + pw] = rng.uniform(0.0, 255.0)
    else:
        out[y0:y0 + ph, x0:x0 + pw] = rng.uniform(0.0, 255.0, (ph, pw, img.shape[2]))
    return out


def _motion_kernel(hw: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A normalised line kernel through the centre: random angle, length 3 px to 5% of the
    shorter side."""
    half = int(rng.integers(1, max(1, min(hw) // 40) + 1))
    size = 2 * half + 1
    line = np.zeros((size, size), np.float32)
    line[half, :] = 1.0
    turn = cv2.getRotationMatrix2D((float(half), float(half)), float(rng.uniform(0, 180)), 1.0)
    kernel = cv2.warpAffine(line, turn, (size, size), flags=cv2.INTER_LINEAR)
    # Point-symmetric, so the blur smears each part along the line without moving it.
    kernel = kernel + kernel[::-1, ::-1]
    return kernel / kernel.sum()


def _uniform_centre(hw: tuple[int, int], out: tuple[int, int],
                    rng: np.random.Generator) -> tuple[float, float]:
    """A crop centre drawn uniformly among those that keep an ``out`` (width, height) crop
    inside an image of ``hw`` (height, width); the image centre along a side shorter than
    the crop."""
    (h, w), (out_w, out_h) = hw, out

    def draw(size: int, crop: int) -> float:
        half = (crop - 1) / 2.0
        return float(rng.uniform(half, size - 1 - half)) if size > crop else (size - 1) / 2.0
    return draw(w, out_w), draw(h, out_h)

