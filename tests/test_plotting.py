"""`posed plot` and `posed evaluate --plots`: PNG files written, bad input named in one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from posed.cli import main
from posed.engines.project.posetables import poses_to_frame, write_pose_table

pytest.importorskip("matplotlib")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, path
    assert len(data) > 1024, path


def _table(path: Path, n: int = 80) -> Path:
    """A walking animal: parts move right with noise; likelihood dips in the middle."""
    rng = np.random.default_rng(0)
    poses = np.zeros((n, 3, 3), np.float32)
    t = np.arange(n)
    for k in range(3):
        poses[:, k, 0] = 10 + t + 5 * k + rng.normal(0, 0.5, n)
        poses[:, k, 1] = 40 + 3 * k + rng.normal(0, 0.5, n)
        poses[:, k, 2] = np.where((t > 30) & (t < 40), 0.1, 0.95)
    df = poses_to_frame(poses, ["snout", "ear", "tail"], "scorerX")
    write_pose_table(df, path)
    return path


def test_plot_writes_trajectories_likelihood_and_histograms(tmp_path, capsys):
    table = _table(tmp_path / "mouseDLC.h5")
    assert main(["plot", str(table), "-q"]) == 0
    folder = tmp_path / "plot-poses" / "mouseDLC"
    names = ["trajectories.png", "likelihood.png", "histograms.png"]
    assert capsys.readouterr().out.split() == [str(folder / n) for n in names]
    for name in names:
        _assert_png(folder / name)
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # no temporary files

    # Several tables with --out: one folder per table; a body-part subset is accepted.
    other = _table(tmp_path / "ratDLC.h5", n=20)
    out = tmp_path / "plots"
    code = main(["plot", str(table), str(other), "--out", str(out), "--bodyparts", "ear", "-q"])
    assert code == 0
    for stem in ("mouseDLC", "ratDLC"):
        for name in names:
            _assert_png(out / stem / name)


def test_plot_bad_inputs_give_one_line_errors(tmp_path, capsys):
    bad = tmp_path / "broken.h5"
    bad.write_bytes(b"not an hdf5 file" * 200)
    assert main(["plot", str(bad), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {bad}") and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "out").exists()

    table = _table(tmp_path / "mouseDLC.h5")
    assert main(["plot", str(table), "--bodyparts", "wing"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no body part 'wing'" in err and str(table) in err


def test_evaluate_plots_error_per_bodypart_and_test_images(trained_project, capsys):
    from posed.engines.project import load_project, load_split

    assert main(["evaluate", str(trained_project), "--plots", "-q"]) == 0
    folder = Path(capsys.readouterr().out.strip().splitlines()[-1].removeprefix("written to "))
    _assert_png(folder / "error-per-bodypart.png")
    split = load_split(load_project(trained_project), 1)
    images = sorted((folder / "test-images").iterdir())
    assert [p.name for p in images] == sorted(
        f"{Path(i).parent.name}_{Path(i).stem}.png" for i in split.test)
    for png in images:
        _assert_png(png)
