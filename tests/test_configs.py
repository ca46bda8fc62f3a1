"""Everything shipped under configs/ loads and does what the README says."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from posed.engines import compat
from posed.engines.bundle import load_bundle

DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo"


def test_demo_bundle_is_valid_and_contains_no_pickle():
    bundle = load_bundle(DEMO / "model")  # verifies sha256
    assert bundle.engine == "pytorch" and bundle.format == "safetensors"
    assert "project" not in bundle.source  # no path from the machine that built it
    assert (DEMO / "model" / "model.safetensors").read_bytes()[:1] != b"\x80"  # not a pickle


def test_demo_clip_poses_match_its_ground_truth(tmp_path):
    pytest.importorskip("torch")
    report = compat.analyze_videos(DEMO / "model", [DEMO / "clip.mp4"], dest=tmp_path,
                                   progress=False)
    df = pd.read_hdf(report.outputs[0], "df_with_missing")
    truth = pd.read_csv(DEMO / "clip_truth.csv", index_col="frame")
    assert len(df) == len(truth) == 300
    scorer = df.columns.get_level_values(0)[0]
    err = np.concatenate([
        np.hypot(df[(scorer, bp, "x")] - truth[f"{bp}_x"], df[(scorer, bp, "y")] - truth[f"{bp}_y"])
        for bp in load_bundle(DEMO / "model").bodyparts])
    assert np.median(err) <= 3.0
