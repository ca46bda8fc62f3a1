"""Shared fixtures: synthetic projects and one trained tiny model per test session."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
DLC_EXAMPLES = SHARED / "data" / "dlc-examples"
DLC3_MODEL = SHARED / "models" / "dlc3-openfield-resnet50"

# Settings that train a synthetic 128x128 project to ~2 px on two CPU cores in about 1.5 minutes:
# a small backbone at output stride 8 (heatmap stride 4) with a high peak learning rate,
# since it starts from random weights.
FAST_TRAIN = {"net": "mobilenet_v2_0.35", "output_stride": 8, "lr": 3e-3, "epochs": 40,
              "batch_size": 8, "save_every": 10}


@pytest.fixture(scope="session")
def synth_project(tmp_path_factory) -> Path:
    """A pristine synthetic project (150 labelled frames, a 60-frame video); copy before writing."""
    from posed.engines.synth import generate_project

    out = tmp_path_factory.mktemp("synth") / "proj"
    generate_project(out, frames=150, size=(128, 128), seed=0, video_frames=60)
    return out


@pytest.fixture(scope="session")
def trained_project(synth_project, tmp_path_factory) -> Path:
    """A copy of the synthetic project with shuffle 1 trained by the PyTorch engine."""
    pytest.importorskip("torch")
    from posed.engines import compat
    from posed.engines.project import load_project

    proj = tmp_path_factory.mktemp("trained") / "proj"
    shutil.copytree(synth_project, proj)
    compat.train_network(load_project(proj), 1, "pytorch", dict(FAST_TRAIN), progress=False)
    return proj


@pytest.fixture
def project_copy(synth_project, tmp_path) -> Path:
    """A writable copy of the synthetic project for one test."""
    dst = tmp_path / "proj"
    shutil.copytree(synth_project, dst)
    return dst
