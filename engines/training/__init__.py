"""Framework-neutral training settings and sample generation.

Every engine trains from the same :class:`TrainConfig` and the same :class:`SampleMaker`
(augmentation + heatmap/locref targets in numpy), so switching engines changes nothing but
the framework that runs the network.

Settings are layered: built-in defaults, then ``train_config.yaml`` in the shuffle's model
folder (if the user wrote one), then command-line options; an option left as ``None`` means
"not set" and never overrides a lower layer.
"""

from posed.engines.training.settings import (
    NETS,
    SCHEDULES,
    AugmentConfig,
    PseudoLabelConfig,
    TrainConfig,
    make_train_config,
    read_train_config_file,
    lr_at,
    budget_epochs,
)
from posed.engines.training.samples import SampleMaker
from posed.engines.training.loop import (
    STATS_FILE,
    RESUME_FILE,
    STATS_COLUMNS,
    snapshot_name,
    resolve_train_config,
    write_resolved_config,
    resume_epoch,
    LearningStats,
    stats_up_to,
    TrainingData,
    load_training_data,
    bundle_source,
)
from posed.engines.training.multianimal import (
    pack_multianimal,
    make_multianimal_targets,
    skeleton_from_labels,
    multianimal_skeleton,
    MultiAnimalTrainingData,
    load_multianimal_training_data,
    random_animal_centre,
)

__all__ = [
    "NETS",
    "SCHEDULES",
    "AugmentConfig",
    "PseudoLabelConfig",
    "TrainConfig",
    "make_train_config",
    "read_train_config_file",
    "lr_at",
    "budget_epochs",
    "SampleMaker",
    "STATS_FILE",
    "RESUME_FILE",
    "STATS_COLUMNS",
    "snapshot_name",
    "resolve_train_config",
    "write_resolved_config",
    "resume_epoch",
    "LearningStats",
    "stats_up_to",
    "TrainingData",
    "load_training_data",
    "bundle_source",
    "pack_multianimal",
    "make_multianimal_targets",
    "skeleton_from_labels",
    "multianimal_skeleton",
    "MultiAnimalTrainingData",
    "load_multianimal_training_data",
    "random_animal_centre",
]
