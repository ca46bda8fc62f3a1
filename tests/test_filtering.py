"""Temporal filters on pose tables: they remove noise, bridge unsure frames, keep the layout."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from posed.engines.project.posetables import poses_to_frame, read_pose_table, write_pose_table
from posed.engines.offline.filtering import filter_file, filter_table, savgol_coefficients
from posed.errors import ConfigError


def _noisy_track(n=200, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 30.0
    truth = np.stack([100 + 40 * np.sin(t), 80 + 30 * np.cos(0.7 * t)], axis=1)  # smooth path
    poses = np.zeros((n, 1, 3), np.float32)
    poses[:, 0, :2] = truth + rng.normal(0, 2.0, truth.shape)
    poses[:, 0, 2] = 0.9
    poses[50:55, 0, :2] = (0.0, 0.0)  # a burst the model was unsure about
    poses[50:55, 0, 2] = 0.001
    return truth, poses_to_frame(poses, ["snout"], "posed_test")


@pytest.mark.parametrize("method,options", [("median", {"window": 7}),
                                            ("savgol", {"window": 9, "order": 2}),
                                            ("kalman", {})])
def test_filters_reduce_error_and_bridge_unsure_frames(method, options):
    truth, df = _noisy_track()
    raw = df.to_numpy().reshape(-1, 3)[:, :2]
    out = filter_table(df, method, p_bound=0.1, **options)
    got = out.to_numpy().reshape(-1, 3)[:, :2]
    ok = np.r_[0:50, 55:200]
    raw_err = np.linalg.norm(raw[ok] - truth[ok], axis=1).mean()
    new_err = np.linalg.norm(got[ok] - truth[ok], axis=1).mean()
    assert new_err < 0.8 * raw_err
    assert np.linalg.norm(got[50:55] - truth[50:55], axis=1).max() < 6  # not pulled to (0, 0)
    pd.testing.assert_index_equal(out.columns, df.columns)
    np.testing.assert_array_equal(out.xs("likelihood", axis=1, level="coords"),
                                  df.xs("likelihood", axis=1, level="coords"))


def test_savgol_coefficients_reproduce_polynomials():
    c = savgol_coefficients(7, 2)
    x = np.arange(-3, 4)
    assert c.sum() == pytest.approx(1.0)
    assert c @ (2 + 3 * x + 0.5 * x**2) == pytest.approx(2.0)  # the quadratic's value at 0


def test_filter_file_writes_deeplabcut_named_outputs(tmp_path):
    _, df = _noisy_track(60)
    src = tmp_path / "videoposed_test.h5"
    write_pose_table(df, src)
    out = filter_file(src, "median", csv=True, window=5)
    assert out.name == "videoposed_test_filtered.h5"
    back = read_pose_table(out)
    assert back.shape == df.shape and (tmp_path / "videoposed_test_filtered.csv").is_file()


def test_bad_filter_settings_are_clear_errors():
    _, df = _noisy_track(20)
    with pytest.raises(ConfigError, match="method 'arima'"):
        filter_table(df, "arima")
    with pytest.raises(ConfigError, match="odd number"):
        filter_table(df, "median", window=4)
    with pytest.raises(ConfigError, match="order must be"):
        filter_table(df, "savgol", window=5, order=5)


def test_filter_from_the_cli(tmp_path, capsys):
    from posed.cli import main

    _, df = _noisy_track(40)
    write_pose_table(df, tmp_path / "aposed_x.h5")
    assert main(["filter", str(tmp_path), "--method", "savgol", "--window", "7", "-q"]) == 0
    assert capsys.readouterr().out.strip().endswith("aposed_x_filtered.h5")
    assert main(["filter", str(tmp_path / "aposed_x.h5"), "--window", "4", "-q"]) == 2
    assert "odd number" in capsys.readouterr().err
