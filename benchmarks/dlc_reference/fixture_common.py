"""Helpers shared by the DeepLabCut fixture scripts in this folder (run with a DeepLabCut
environment's python; the scripts import this module from their own folder)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import sys
from pathlib import Path

PLACEHOLDER = "__PROJECT_PATH__"
TEXT_SUFFIXES = {".yaml", ".yml", ".csv", ".txt", ".json", ".md"}


class _Tee(io.TextIOBase):
    """Write to several streams (keep the console output while capturing it)."""

    def __init__(self, *streams):
        self.streams = streams

    def write(self, s):
        for st in self.streams:
            st.write(s)
        return len(s)

    def flush(self):
        for st in self.streams:
            st.flush()


@contextlib.contextmanager
def capture():
    """Capture stdout, stderr and logging records (still echoed) into one buffer."""
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        with contextlib.redirect_stdout(_Tee(sys.stdout, buf)), \
                contextlib.redirect_stderr(_Tee(sys.stderr, buf)):
            yield buf
    finally:
        root.removeHandler(handler)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def tolist(x):
    """numpy/torch/pandas values -> plain JSON values (NaN -> None)."""
    import numpy as np

    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    if isinstance(x, np.ndarray):
        return tolist(x.tolist())
    if isinstance(x, (list, tuple)):
        return [tolist(v) for v in x]
    if isinstance(x, dict):
        return {str(k): tolist(v) for k, v in x.items()}
    if isinstance(x, (np.floating, float)):
        x = float(x)
        return None if x != x else x
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, (np.bool_,)):
        return bool(x)
    if isinstance(x, Path):
        return str(x)
    return x


def files_of(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def posed_synth(posed: Path, workdir: Path, synth_args: list[str]
                ) -> tuple[Path, dict, str, list[str], float]:
    """Make ``workdir/synth`` (emptied first) with ``posed synth``, its config's
    ``project_path`` set to where it is. Returns the project, the record of the step (the
    command, the path it wrote under :data:`PLACEHOLDER`, whether it was fixed), posed's
    version, the project's files and the seconds it took."""
    import shutil
    import subprocess
    import time

    work = workdir.resolve()
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    project = work / "synth"
    t0 = time.perf_counter()
    subprocess.run([str(posed), "synth", str(project), *synth_args], check=True)
    seconds = time.perf_counter() - t0
    version = subprocess.run([str(posed), "--version"], capture_output=True, text=True,
                             check=False).stdout.strip()
    config = project / "config.yaml"
    text = config.read_text()
    written = next(line.split(":", 1)[1].strip() for line in text.splitlines()
                   if line.startswith("project_path:"))
    record = {"command": ["posed", "synth", "PROJECT", *synth_args],
              "project_path_written": written.replace(str(project), PLACEHOLDER),
              "project_path_fixed": written != str(project)}
    if written != str(project):
        config.write_text(text.replace(f"project_path: {written}", f"project_path: {project}"))
    files = sorted(str(p.relative_to(project)) for p in files_of(project))
    return project, record, version, files, seconds

def pkg_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def replace_build_path(out_dir: Path, project: Path, work: Path) -> tuple[list[str], list[str]]:
    """Put :data:`PLACEHOLDER` for the build folder in the fixture's text files; returns the
    text files changed and the binary files that still hold the path (left untouched)."""
    replaced, binary_with_path = [], []
    needle = str(project).encode()
    # pickled PosixPaths store the path's parts, not the joined string: look for the work
    # folder's name too
    marker = work.name.encode()
    for p in sorted(files_of(out_dir)):
        data = p.read_bytes()
        if needle not in data and marker not in data:
            continue
        rel = str(p.relative_to(out_dir))
        if p.suffix in TEXT_SUFFIXES:
            data = data.replace(needle, PLACEHOLDER.encode())
            if marker in data:
                raise RuntimeError(f"{rel}: build path left after the replacement")
            p.write_bytes(data)
            replaced.append(rel)
        else:
            binary_with_path.append(rel)
    return replaced, binary_with_path


def versions(posed_version: str) -> dict:
    """The versions a fixture records (DeepLabCut, DeepLabCut-Live, frameworks, Python)."""
    import platform

    import cv2
    import deeplabcut
    import dlclive
    import numpy as np
    import pandas as pd
    import timm
    import torch

    return {
        "deeplabcut": deeplabcut.__version__,
        "deeplabcut_live": getattr(dlclive, "__version__", None) or pkg_version("deeplabcut-live"),
        "torch": torch.__version__, "timm": timm.__version__, "numpy": np.__version__,
        "pandas": pd.__version__, "opencv": cv2.__version__,
        "python": platform.python_version(), "machine": platform.machine(),
        "posed": posed_version,
    }


def write_check(out_dir: Path, record: dict) -> None:
    """``check.json``: the record plus every fixture file's size and sha256."""
    import json

    record["files"] = {str(p.relative_to(out_dir)): {"bytes": p.stat().st_size,
                                                      "sha256": sha256(p)}
                       for p in sorted(files_of(out_dir))}
    record["total_bytes"] = sum(v["bytes"] for v in record["files"].values())
    (out_dir / "check.json").write_text(json.dumps(tolist(record), indent=1) + "\n")
    print(f"fixture: {out_dir} ({record['total_bytes']} bytes, {len(record['files'])} files)")


REPO = Path(__file__).resolve().parent.parent.parent


def fixture_args(description: str, fixture: str, workdir: str):
    """The command line every fixture script takes: ``--posed`` (posed's executable, for
    ``posed synth``), ``--out`` (default ``tests/data/deeplabcut/<fixture>``), ``--workdir``."""
    import argparse

    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--posed", type=Path, default=REPO / ".venv" / "bin" / "posed")
    ap.add_argument("--out", type=Path, default=REPO / "tests" / "data" / "deeplabcut" / fixture)
    ap.add_argument("--workdir", type=Path, default=Path(workdir))
    return ap.parse_args()


def synth_project(posed: Path, project: Path, synth_args: list[str]) -> str:
    """``posed synth project *synth_args``, then config.yaml's ``project_path`` set to
    ``project`` (synth writes the path it was given; a symlinked or relative one differs).
    Returns the ``project_path`` synth wrote."""
    import subprocess

    subprocess.run([str(posed), "synth", str(project), *synth_args], check=True)
    config = project / "config.yaml"
    text = config.read_text()
    written = next(line.split(":", 1)[1].strip() for line in text.splitlines()
                   if line.startswith("project_path:"))
    if written != str(project):
        config.write_text(text.replace(f"project_path: {written}", f"project_path: {project}"))
    return written


def load_seeded_weights(path: Path):
    """A fixture's ``seeded_weights.py`` (its one rule for the weights) as a module."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"{path.parent.name}_seeded_weights", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def seeded(module, sw) -> tuple[dict, list[dict]]:
    """Load ``sw.value(name, shape)`` into every tensor of ``module`` (checked against its
    shape and dtype); returns (state dict, [{name, shape, dtype}] in state-dict order)."""
    import numpy as np
    import torch

    state, keys = {}, []
    for name, tensor in module.state_dict().items():
        v = torch.from_numpy(np.array(sw.value(name, tuple(tensor.shape)), copy=True, order="C"))
        if tuple(v.shape) != tuple(tensor.shape) or v.dtype != tensor.dtype:
            raise RuntimeError(f"{name}: seeded {tuple(v.shape)} {v.dtype}, DLC "
                               f"{tuple(tensor.shape)} {tensor.dtype}")
        state[name] = v
        keys.append({"name": name, "shape": list(tensor.shape),
                     "dtype": str(tensor.dtype).replace("torch.", "")})
    module.load_state_dict(state, strict=True)
    return state, keys
