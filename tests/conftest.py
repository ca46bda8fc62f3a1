"""Shared fixtures: synthetic projects and one trained tiny model per test session.

Under pytest-xdist (``make test`` runs two workers) each worker is a process of its own: the
models below are trained once for the whole run by whichever worker needs one first, the
others wait for it (:func:`build_once`), and every worker runs PyTorch, OpenMP and BLAS on one
thread so that two workers share the two cores instead of four threads fighting over them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Read by torch, onnxruntime and BLAS when they start, so set before any of them loads;
    # subprocesses (posed serve) inherit them.
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, "1")

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
DLC_EXAMPLES = SHARED / "data" / "dlc-examples"
DLC3_MODEL = SHARED / "models" / "dlc3-openfield-resnet50"

# Settings that train a synthetic 128x128 project to ~2 px on two CPU cores in about 1.5 minutes:
# a small backbone at output stride 8 (heatmap stride 4) with a high peak learning rate,
# since it starts from random weights.
# Every setting is explicit; recipe finetune keeps the plain augmentation under which the
# accuracy bounds were measured (the scratch recipe's stronger one wants twice the steps).
FAST_TRAIN = {"net": "mobilenet_v2_0.35", "output_stride": 8, "lr": 3e-3, "epochs": 40,
              "batch_size": 8, "save_every": 10, "recipe": "finetune"}

# The TensorFlow engine trains the same net with the same rate and batch in half the epochs:
# measured 2.11-2.43 px held-out over seeds 0-2 at 20 epochs (1.72 px at 30).
TF_TRAIN = {**FAST_TRAIN, "epochs": 20}


def build_once(tmp_path_factory, name: str, build: Callable[[Path], None]) -> Path:
    """``name`` under the run's shared temporary folder, built by ``build(path)`` exactly once
    across xdist workers (a file lock; the first caller builds, the others wait and reuse).
    Whatever is built this way is read-only for the tests."""
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # shared by the workers of this run
    path = root / "shared" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    done = path.parent / f"{name}.done"
    with FileLock(str(path.parent / f"{name}.lock")):
        if not done.exists():
            with contextlib.suppress(FileNotFoundError):
                shutil.rmtree(path)  # a build that failed half-way in an earlier test
            build(path)
            done.touch()
    return path


# Modules with the longest tests or fixtures, first. Under ``--dist loadscope`` a worker takes
# whole modules in collection order, so starting the long ones first keeps both workers busy
# to the end instead of leaving one module of minutes as the tail.
LONG_FIRST = ("test_realdata_video.py", "test_multianimal_model.py", "test_export.py",
              "test_tensorflow_engine.py", "test_engine_contract.py", "test_realdata.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONG_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable within a module


# Under xdist each worker starts by training the shared models the selected tests need, in
# this order (one worker each while there are two): they are ready early, and no worker later
# waits idle on another's build. `make test` needs the first two, `make test-heavy` the first
# and the TensorFlow one.
PREBUILD = ("trained_project", "ma_trained", "tf_trained")


@pytest.fixture(scope="session", autouse=True)
def _prebuild_shared_models(request):
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker.startswith("gw"):
        return
    needed = [name for name in PREBUILD if any(name in getattr(item, "fixturenames", ())
                                                  for item in request.session.items)]
    mine = needed[int(worker[2:])::max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", 1)))]
    for name in mine:
        try:
            request.getfixturevalue(name)
        except pytest.skip.Exception:
            pass  # its framework is not installed: the tests that need it skip themselves


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
    from posed.engines import api
    from posed.engines.project import load_project

    def build(proj: Path) -> None:
        shutil.copytree(synth_project, proj)
        api.train_network(load_project(proj), 1, "pytorch", dict(FAST_TRAIN), progress=False)

    return build_once(tmp_path_factory, "trained", build)


@pytest.fixture(scope="session")
def tf_trained(synth_project, tmp_path_factory) -> Path:
    """A copy of the synthetic project with shuffle 1 trained by ``posed train --engine tf``."""
    pytest.importorskip("tensorflow")
    from posed.cli import main

    def build(proj: Path) -> None:
        shutil.copytree(synth_project, proj)
        args = [f"--{k.replace('_', '-')}={v}" for k, v in TF_TRAIN.items()]
        assert main(["train", str(proj), "--engine", "tf", "--quiet", *args]) == 0

    return build_once(tmp_path_factory, "tftrained", build)


# The multi-animal model: 3 animals of ~15 px on 128x128 frames, crops of 64x64, trained
# through the command line on one thread (the bounds in test_multianimal_model.py were
# measured so; other thread counts sum in another order and end elsewhere).
# 64x64 crops centred on one animal each: four times cheaper per step than whole frames, so
# 120 epochs (1440 steps) cost less than 40 whole-frame epochs (about 130 CPU seconds), and
# they reach about 3 px where 40 whole-frame epochs reached 8.5 px (test images, measured).
MA_TRAIN_ARGS = ["--net", "mobilenet_v2_0.35", "--output-stride", "8", "--lr", "3e-3",
                 "--epochs", "120", "--batch-size", "8", "--save-every", "60", "--crop", "64x64",
                 "--recipe", "finetune", "--crop-sampling", "centred"]
MA_VIDEO_FRAMES = 150


@pytest.fixture(scope="session")
def ma_trained(tmp_path_factory) -> Path:
    """A synthetic 3-animal project (128x128, 120 labelled frames, a 150-frame video) with
    shuffle 1 trained through the command line; read-only for the tests."""
    torch = pytest.importorskip("torch")
    from posed.cli import main
    from posed.engines.synth import generate_multianimal_project

    def build(root: Path) -> None:
        generate_multianimal_project(root, animals=3, frames=120, size=(128, 128), seed=0,
                                     video_frames=MA_VIDEO_FRAMES)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            assert main(["train", str(root), *MA_TRAIN_ARGS, "-q"]) == 0
        finally:
            torch.set_num_threads(threads)

    return build_once(tmp_path_factory, "multianimal", build)


@pytest.fixture(scope="session")
def openfield_trained(tmp_path_factory) -> Path:
    """DeepLabCut's openfield example project trained for one quick epoch from the CLI (a
    format test, not accuracy); read-only for the tests."""
    openfield = DLC_EXAMPLES / "openfield-Pranav-2018-10-30"
    if not openfield.is_dir():
        pytest.skip("shared DLC example data absent")
    pytest.importorskip("torch")
    from posed.cli import main

    def build(root: Path) -> None:
        proj = root / openfield.name
        shutil.copytree(openfield, proj)
        for p in proj.rglob("*"):
            p.chmod(p.stat().st_mode | 0o200)
        assert main(["train", str(proj), "--net", "mobilenet_v2_0.35", "--epochs", "1",
                     "--crop", "160x160", "--batch-size", "16", "--recipe", "finetune",
                     "-q"]) == 0

    return build_once(tmp_path_factory, "openfield", build) / openfield.name


@pytest.fixture
def project_copy(synth_project, tmp_path) -> Path:
    """A writable copy of the synthetic project for one test."""
    dst = tmp_path / "proj"
    shutil.copytree(synth_project, dst)
    return dst
