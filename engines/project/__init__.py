"""Reading DeepLabCut projects: config.yaml, labelled frames, and the train/test split.

A DeepLabCut project is a folder with a ``config.yaml`` and ``labeled-data/<video>/`` folders
that each hold PNG frames plus ``CollectedData_<scorer>.h5`` (and usually a ``.csv`` copy) with
the hand labels. This module reads those files without DeepLabCut installed, checks them, and
keeps the split of labelled frames into training and test sets in
``training-datasets/iteration-<n>/posed/split-shuffle<k>.yaml``.

Multi-animal projects (``multianimalproject: true``) list ``individuals``,
``multianimalbodyparts`` (labelled once per individual) and ``uniquebodyparts`` (labelled
once per image, under the pseudo-individual ``single``); their label files have the column
levels ``scorer/individuals/bodyparts/coords``. :func:`load_multianimal_labels` reads them;
:func:`load_labels` (what training and evaluation use) stays single-animal.
"""

from posed.engines.project.config import SINGLE, Project, load_project
from posed.engines.project.labels import (
    LabeledData,
    read_label_file,
    MultiAnimalLabels,
    read_multianimal_label_file,
    load_labels,
    load_multianimal_labels,
    image_size,
    load_image,
)
from posed.engines.project.split import Split, create_split, load_split, save_split, split_path

__all__ = [
    "SINGLE",
    "Project",
    "load_project",
    "LabeledData",
    "read_label_file",
    "MultiAnimalLabels",
    "read_multianimal_label_file",
    "load_labels",
    "load_multianimal_labels",
    "image_size",
    "load_image",
    "Split",
    "split_path",
    "create_split",
    "load_split",
    "save_split",
]
