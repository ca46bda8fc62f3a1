"""posed check-labels: left/right pairs labelled in the mirror order of the other samples."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from posed.cli import main
from posed.engines.project import load_project
from posed.engines.project.labelcheck import MIN_FRAMES, check_project, mirrored_pairs, swap_pairs

from conftest import DLC_EXAMPLES

PARTS = ["snout", "leftear", "rightear", "tailbase"]
PAIRS = [[1, 2]]
# A mouse seen from above, heading +x, image y down: its left ear is at smaller y.
TEMPLATE = np.array([[30.0, 0.0], [20.0, -8.0], [20.0, 8.0], [-40.0, 0.0]])


def _poses(angles: np.ndarray, shifts: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """The template turned, scaled and moved (proper motions: never a mirror image)."""
    c, s = np.cos(angles), np.sin(angles)
    rot = np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)  # N×2×2
    return np.einsum("nij,kj->nki", rot, TEMPLATE) * scales[:, None, None] + shifts[:, None, :]


@settings(max_examples=40, deadline=None)
@given(n=st.integers(MIN_FRAMES + 1, 40), seed=st.integers(0, 2**31 - 1), data=st.data())
def test_only_the_mirrored_sample_is_flagged(n, seed, data):
    rng = np.random.default_rng(seed)
    pts = _poses(rng.uniform(-np.pi, np.pi, n), rng.uniform(0, 500, (n, 2)),
                 rng.uniform(0.5, 2.0, n))
    pts += rng.normal(0, 0.5, pts.shape)  # labelling noise
    names = [f"img{i:03d}.png" for i in range(n)]
    assert mirrored_pairs(pts, names, PARTS, PAIRS) == []  # invariant: proper motions pass
    bad = data.draw(st.integers(0, n - 1))
    pts[bad] = pts[bad][[0, 2, 1, 3]]
    found = mirrored_pairs(pts, names, PARTS, PAIRS)
    assert [(f.image, f.pair, f.agree, f.total) for f in found] == [
        (names[bad], ("leftear", "rightear"), n - 1, n)]
    assert set(found[0].references) == {"snout", "tailbase"}
    fixed = swap_pairs(pts, names, found, PARTS)
    assert mirrored_pairs(fixed, names, PARTS, PAIRS) == []


def test_side_views_and_missing_labels_are_not_judged():
    rng = np.random.default_rng(0)
    n = 30
    pts = _poses(rng.uniform(-np.pi, np.pi, n), rng.uniform(0, 500, (n, 2)), np.ones(n))
    # A side view: the pair turns either way with the pose, so no reference is trusted.
    side = pts.copy()
    side[::2] = side[::2][:, [0, 2, 1, 3]]
    assert mirrored_pairs(side, [str(i) for i in range(n)], PARTS, PAIRS) == []
    # Too few samples with the pair labelled to trust any reference.
    few = pts.copy()
    few[MIN_FRAMES - 1:, 1] = np.nan
    few[0] = few[0][[0, 2, 1, 3]]
    assert mirrored_pairs(few, [str(i) for i in range(n)], PARTS, PAIRS) == []
    # No pairs, nothing to check.
    assert mirrored_pairs(pts, [str(i) for i in range(n)], PARTS, []) == []


def _swap_in_label_files(folder, image: str, a: str, b: str, individual: str | None = None):
    """Swap parts a and b of one row in a CollectedData h5 and its csv copy, in place."""
    for h5 in folder.glob("CollectedData_*.h5"):
        df = pd.read_hdf(h5)
        row = [i for i, idx in enumerate(df.index) if (idx[-1] if isinstance(idx, tuple)
                                                       else idx).endswith(image)][0]
        cols = df.columns

        def pick(part):
            return [j for j, c in enumerate(cols) if c[-2] == part
                    and (individual is None or c[1] == individual)]

        ja, jb = pick(a), pick(b)
        values = df.to_numpy(copy=True)
        values[row, ja], values[row, jb] = df.to_numpy()[row, jb], df.to_numpy()[row, ja]
        df = pd.DataFrame(values, index=df.index, columns=cols)
        df.to_hdf(h5, key="df_with_missing", mode="w")
        df.to_csv(h5.with_suffix(".csv"))


def test_cli_flags_a_swapped_synthetic_label(synth_project, tmp_path, capsys):
    import shutil

    proj = tmp_path / "p"
    shutil.copytree(synth_project, proj)
    assert main(["check-labels", str(proj)]) == 0
    err = capsys.readouterr().err
    assert "0 sample(s)" in err and "1 pair(s) checked" in err
    _swap_in_label_files(proj / "labeled-data" / "synth1", "img0007.png", "leftear", "rightear")
    assert main(["check-labels", str(proj)]) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith(
        "labeled-data/synth1/img0007.png: leftear/rightear labelled in the mirror order of ")
    agree, total = (int(w) for w in re.findall(r"of (\d+)", out[0]))
    # Samples with an ear or both references hidden cannot be told; all others agree.
    assert agree == total - 1 and total >= 100


def test_multianimal_samples_are_per_individual(tmp_path):
    from posed.engines.synth.multi import generate_multianimal_project

    proj = tmp_path / "ma"
    generate_multianimal_project(proj, frames=20, size=(128, 128), seed=0, video_frames=0)
    project = load_project(proj)
    assert check_project(project) == []
    ind = project.individuals[1]
    _swap_in_label_files(proj / "labeled-data" / "synth1", "img0003.png", "leftear",
                         "rightear", individual=ind)
    found = check_project(project)
    assert [f.image for f in found] == [f"labeled-data/synth1/img0003.png#{ind}"]


@pytest.mark.skipif(not (DLC_EXAMPLES / "openfield-Pranav-2018-10-30").is_dir(),
                    reason="shared DLC example data absent")
def test_openfield_has_one_test_image_with_its_ears_swapped():
    """DeepLabCut's openfield example: m4s1/img0102.png (one of the 5 test images of shuffle
    1) has leftear/rightear the other way round from the 92 other labelled frames."""
    found = check_project(load_project(DLC_EXAMPLES / "openfield-Pranav-2018-10-30"))
    assert [(f.image, f.agree, f.total) for f in found] == [
        ("labeled-data/m4s1/img0102.png", 92, 93)]
