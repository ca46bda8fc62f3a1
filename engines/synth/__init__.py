"""Synthetic DeepLabCut projects with exact ground truth, for tests and demos.

:func:`generate_project` writes a complete single-animal DeepLabCut project: ``config.yaml``,
labelled PNG frames with ``CollectedData_<scorer>.h5``/``.csv``, a short H.264 video and the
video's ground-truth keypoints. The animal is a top view of a mouse-like shape (bent body,
head with a pointed snout and a nose, two ears, eyes, a tapering tail) drawn with anti-aliased
sub-pixel polygons on a textured background, so every landmark is a visible image feature
whose position is known to 1/16 pixel. :func:`generate_multianimal_project` writes the
multi-animal counterpart: several such animals that cross and cover one another, with every
individual's identity and per-part visibility in the video's ground truth.

Coordinates follow DeepLabCut labels: (0, 0) is the centre of the top-left pixel, x to the
right, y down.
"""

from posed.engines.synth.render import (
    CATALOGUE,
    AnimalState,
    Appearance,
    make_background,
    random_appearance,
    random_state,
    render_animal,
    skeleton_for,
)
from posed.engines.synth.single import generate_project
from posed.engines.synth.multi import (
    MultiAnimalTruth,
    multianimal_video_truth,
    read_multianimal_truth,
    generate_multianimal_project,
)

__all__ = [
    "CATALOGUE",
    "AnimalState",
    "Appearance",
    "make_background",
    "random_appearance",
    "random_state",
    "render_animal",
    "generate_project",
    "skeleton_for",
    "MultiAnimalTruth",
    "multianimal_video_truth",
    "read_multianimal_truth",
    "generate_multianimal_project",
]
