"""The inference contract every engine implements.

Single-animal runners (:class:`PoseRunner`) turn a batch of frames into one pose per frame.
Runners of bottom-up multi-animal bundles (:class:`MultiAnimalRunner`, returned by
:func:`posed.engines.api.load_model` for bundles whose ``architecture`` lists
``individuals``) keep that contract (``predict`` returns the best animal's pose and the
unique parts, so every single-animal caller still works) and add
:meth:`MultiAnimalRunner.predict_animals`: per frame every assembled animal, as an
:class:`AnimalPoses` batch, without identities (identities come from tracking,
:mod:`posed.engines.tracking`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from posed.engines.bundle import ModelBundle
from posed.errors import InferenceError


class PoseRunner(ABC):
    """Runs one model bundle on batches of RGB frames.

    Subclasses load the bundle in :meth:`load` and implement :meth:`_forward`; this base class
    validates input and owns the shared contract, so every engine behaves the same for the
    same frames.
    """

    engine: ClassVar[str]

    def __init__(self, bundle: ModelBundle) -> None:
        self.bundle = bundle
        self.bodyparts: list[str] = list(bundle.bodyparts)

    @classmethod
    @abstractmethod
    def load(cls, bundle: ModelBundle, **options: Any) -> "PoseRunner":
        """Load ``bundle``; options are engine specific (device, threads, precision...)."""

    @abstractmethod
    def _forward(self, frames: np.ndarray) -> np.ndarray:
        """Run validated uint8 N×H×W×3 frames; return N×K×3 float32 in frame pixels."""

    def predict(self, frames: np.ndarray) -> np.ndarray:
        """Estimate poses.

        Args:
            frames: uint8 N×H×W×3 RGB (a single H×W×3 frame is accepted too).

        Returns:
            float32 N×K×3 array of (x, y, likelihood) in the frames' pixel coordinates.
        """
        frames = self._check_frames(frames)
        if frames.shape[0] == 0:
            return np.zeros((0, len(self.bodyparts), 3), dtype=np.float32)
        frames, offset = self._pad(frames)
        return _unshift(self._forward(frames), offset)

    def _pad(self, frames: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
        """Frames padded as the model wants them (``architecture.pad``, see
        :mod:`posed.engines.padding`) and the offset to take off the keypoints."""
        spec = self.bundle.architecture.get("pad")
        if not spec:
            return frames, (0, 0)
        from posed.engines.padding import pad_frames

        return pad_frames(frames, spec)

    def _check_frames(self, frames: np.ndarray) -> np.ndarray:
        """Validated contiguous uint8 N×H×W×3 frames (a single frame gets a batch axis)."""
        frames = np.asarray(frames)
        if frames.ndim == 3:
            frames = frames[None]
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise InferenceError(f"frames must be N×H×W×3 RGB, got shape {frames.shape}")
        if frames.dtype != np.uint8:
            raise InferenceError(f"frames must be uint8, got {frames.dtype}")
        size = self.bundle.input_size
        if size and tuple(frames.shape[1:3]) != tuple(size):
            raise InferenceError(f"this model takes {size[0]}×{size[1]} frames (height×width), "
                                 f"got {frames.shape[1]}×{frames.shape[2]}")
        return np.ascontiguousarray(frames)

    def warmup(self, batch_size: int = 1, height: int = 480, width: int = 640) -> None:
        """Run one dummy batch so that lazy initialisation happens before real frames."""
        self.predict(np.zeros((batch_size, height, width, 3), dtype=np.uint8))

    def handoff(self) -> None:
        """Called by the thread that loaded and warmed up the runner when another thread will
        run it from now on (the daemon's inference stage). Engines release resources tied
        to the calling thread here; the runner stays usable from any thread."""

    def close(self) -> None:
        """Release resources held by the runner."""

    def __enter__(self) -> "PoseRunner":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _unshift(points: np.ndarray, offset: tuple[int, int]) -> np.ndarray:
    """``...×3`` (x, y, score) moved from padded-frame to frame pixels (in place)."""
    if offset != (0, 0):
        points[..., 0] -= offset[0]
        points[..., 1] -= offset[1]
    return points


# ----------------------------------------------------------------------------- multi-animal

# Assembly settings of bottom-up runners; a bundle's ``architecture.assembly`` or the
# ``assembly`` runner option overrides them. The peak threshold suits sigmoid heatmaps
# trained with BCE (a visible part peaks well above 0.5); see :func:`assembly.assemble`.
ASSEMBLY_DEFAULTS = {"threshold": 0.3, "nms_radius": 2, "min_affinity": 0.1,
                     "min_support": 0.6, "n_samples": 10, "min_parts": 1}


@dataclass(frozen=True)
class AnimalPoses:
    """The animals a bottom-up model found in a batch of frames.

    Attributes:
        animals: float32 N×I×K×3 (x, y, score) of the multi-animal body parts; per frame the
            assembled animals come first, best first, and slots beyond them (I is the
            number of individuals the model was trained for) are NaN with score 0, as is
            every part an animal lacks. Slot order carries no identity.
        scores: float32 N×I assembly scores (0 for empty slots).
        unique: float32 N×U×3 unique body parts (NaN, score 0 when not found).
        boxes: top-down models: float32 N×I×4 each slot's detector box (x, y, w, h; NaN for
            empty slots); None for bottom-up models.
    """

    animals: np.ndarray
    scores: np.ndarray
    unique: np.ndarray
    boxes: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.animals)

    def found(self, frame: int) -> np.ndarray:
        """A×K×3: the assembled animals of one frame (empty slots left out)."""
        present = np.isfinite(self.animals[frame, ..., 0]).any(axis=-1)
        return self.animals[frame][present]


class MultiAnimalRunner(PoseRunner):
    """Runs a bottom-up multi-animal bundle: score maps + locref + part-affinity fields, then
    framework-free assembly (:func:`posed.engines.assembly.assemble_maps`).

    The bundle's ``architecture`` holds ``individuals``, ``multianimalbodyparts``,
    ``uniquebodyparts`` and ``paf_edges`` (pairs of multi-animal part indices);
    ``bodyparts`` is the multi-animal parts then the unique ones. Engines implement
    :meth:`_maps`; this class owns assembly, so every engine assembles alike.
    """

    multianimal: ClassVar[bool] = True

    def __init__(self, bundle: ModelBundle, assembly: dict[str, Any] | None = None) -> None:
        super().__init__(bundle)
        arch = bundle.architecture
        self.individuals: list[str] = [str(i) for i in arch["individuals"]]
        self.animal_bodyparts: list[str] = [str(b) for b in arch["multianimalbodyparts"]]
        self.unique_bodyparts: list[str] = [str(b) for b in arch.get("uniquebodyparts", [])]
        self.skeleton: list[tuple[int, int]] = [(int(a), int(b))
                                                for a, b in arch.get("paf_edges", [])]
        if self.animal_bodyparts + self.unique_bodyparts != self.bodyparts:
            raise InferenceError(f"{bundle.path}: bodyparts must be multianimalbodyparts then "
                                 "uniquebodyparts")
        # DeepLabCut's models assemble as DeepLabCut does (its settings come with the model).
        self.dlc_predictor = dict(arch.get("dlc_predictor") or {})
        if self.dlc_predictor:
            from posed.engines.dlc.assembler import TUNABLE

            defaults, known = self.dlc_predictor, TUNABLE
        else:
            defaults, known = ASSEMBLY_DEFAULTS, tuple(ASSEMBLY_DEFAULTS)
        overrides = {**dict(arch.get("assembly") or {}), **dict(assembly or {})}
        unknown = sorted(set(overrides) - set(known))
        if unknown:
            raise InferenceError(f"unknown assembly setting '{unknown[0]}' "
                                 f"(known: {', '.join(known)})")
        self.assembly = {**defaults, **overrides}

    @abstractmethod
    def _maps(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Validated frames → numpy (scores N×K×h×w in [0, 1], locref N×2K×h×w, PAFs
        N×2E×h×w), K counting unique parts too."""

    def predict_animals(self, frames: np.ndarray) -> AnimalPoses:
        """Every animal in each frame (see :class:`AnimalPoses`), in frame pixels."""
        from posed.engines.assembly import assemble_maps

        frames = self._check_frames(frames)
        n, slots = frames.shape[0], len(self.individuals)
        k, u = len(self.animal_bodyparts), len(self.unique_bodyparts)
        animals = np.full((n, slots, k, 3), np.nan, dtype=np.float32)
        animals[..., 2] = 0.0
        scores = np.zeros((n, slots), dtype=np.float32)
        unique = np.full((n, u, 3), np.nan, dtype=np.float32)
        unique[..., 2] = 0.0
        if n == 0:
            return AnimalPoses(animals, scores, unique)
        frames, offset = self._pad(frames)
        heat, locref, pafs = self._maps(frames)
        if self.dlc_predictor:
            found = self._dlc_animals(heat, locref, pafs, animals, scores, unique)
            return AnimalPoses(_unshift(found.animals, offset), found.scores,
                               _unshift(found.unique, offset))
        for i in range(n):
            found = assemble_maps(
                heat[i], pafs[i] if self.skeleton else None, self.skeleton,
                stride=self.bundle.stride, max_individuals=slots, locref=locref[i],
                locref_stdev=self.bundle.locref_stdev, n_unique=u, **self.assembly)
            animals[i, : len(found.animals)] = found.animals
            scores[i, : len(found.scores)] = found.scores
            unique[i] = found.unique
        return AnimalPoses(_unshift(animals, offset), scores, _unshift(unique, offset))

    def _dlc_animals(self, heat: np.ndarray, locref: np.ndarray, pafs: np.ndarray,
                     animals: np.ndarray, scores: np.ndarray, unique: np.ndarray) -> AnimalPoses:
        from posed.engines.dlc.assembler import predict

        for i in range(len(heat)):
            found, affinity = predict(heat[i], locref[i], pafs[i], stride=self.bundle.stride,
                                      settings=self.assembly, n_parts=animals.shape[2],
                                      slots=animals.shape[1])
            animals[i] = found
            scores[i] = affinity
        # posed's convention: a part an animal lacks has score 0 (DeepLabCut writes NaN).
        animals[..., 2][np.isnan(animals[..., 2])] = 0.0
        return AnimalPoses(animals, scores, unique)

    def _forward(self, frames: np.ndarray) -> np.ndarray:
        """The single-animal view: the best animal's parts, then the unique parts."""
        found = self.predict_animals(frames)
        return np.concatenate([found.animals[:, 0], found.unique], axis=1)
