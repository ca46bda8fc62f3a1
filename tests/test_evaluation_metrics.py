"""The evaluation table (posed.engines.offline.evaluate): mean and median pixel error, the error
above pcutoff and PCK at several thresholds, checked on constructed predictions and labels."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from posed.engines.offline.evaluate import (
    PCK_THRESHOLDS, Evaluation, _metrics, _write_results, summarise, summarise_matched)

COLUMNS = ["error_px", "median_px", "error_px_pcutoff", "pck", "pck@2", "pck@5", "pck@10",
           "above_pcutoff", "n"]
PCUTOFF = 0.6


def constructed():
    """Four images, parts a and b, labels at the origin. Distances: a 0, 5, 10, 1; b 2, 20
    (likelihood 0.1, below pcutoff), unlabelled (predicted far off, confidently), 4."""
    truth = np.zeros((4, 2, 2))
    truth[2, 1] = np.nan
    pred = np.zeros((4, 2, 3))
    pred[:, 0, :2] = [[0, 0], [3, 4], [6, 8], [0, 1]]
    pred[:, 1, :2] = [[2, 0], [0, 20], [1000, 1000], [0, 4]]
    pred[..., 2] = 0.9
    pred[1, 1, 2] = 0.1
    pred[2, 1, 2] = 0.99
    return pred, truth


def test_columns_in_the_documented_order():
    pred, truth = constructed()
    table = summarise(pred, truth, ["a", "b"], PCUTOFF, pck_px=5.0)
    assert list(table.columns) == COLUMNS
    assert list(table.index) == ["a", "b", "all"]
    assert PCK_THRESHOLDS == (2.0, 5.0, 10.0)


def test_known_distances_give_exact_mean_median_and_pck():
    pred, truth = constructed()
    table = summarise(pred, truth, ["a", "b"], PCUTOFF, pck_px=3.0)
    a, b, everything = table.loc["a"], table.loc["b"], table.loc["all"]
    assert a["error_px"] == pytest.approx(4.0) and a["median_px"] == pytest.approx(3.0)
    assert (a["pck@2"], a["pck@5"], a["pck@10"], a["pck"]) == (0.5, 0.75, 1.0, 0.5)
    assert b["error_px"] == pytest.approx(26 / 3) and b["median_px"] == pytest.approx(4.0)
    assert b[["pck@2", "pck@5", "pck@10"]].tolist() == pytest.approx([1 / 3, 2 / 3, 2 / 3])
    # all: distances 0, 1, 2, 4, 5, 10, 20
    assert everything["error_px"] == pytest.approx(6.0)
    assert everything["median_px"] == pytest.approx(4.0)
    pcks = everything[["pck@2", "pck@5", "pck@10"]].tolist()
    assert pcks == pytest.approx([3 / 7, 5 / 7, 6 / 7])
    assert everything["pck"] == pytest.approx(3 / 7)
    assert table["n"].tolist() == [4, 3, 7]


def test_unlabelled_parts_are_left_out():
    pred, truth = constructed()
    table = summarise(pred, truth, ["a", "b"], PCUTOFF, pck_px=5.0)
    far = pred.copy()
    far[2, 1, :2] = [-5e5, 3e5]  # where the unlabelled part is predicted changes nothing
    assert summarise(far, truth, ["a", "b"], PCUTOFF, 5.0).equals(table)
    assert table.loc["b", "n"] == 3
    # the unlabelled part's likelihood 0.99 is not counted either
    assert table.loc["b", "above_pcutoff"] == pytest.approx(2 / 3)


def test_part_below_pcutoff_counts_in_error_px_only():
    pred, truth = constructed()
    table = summarise(pred, truth, ["a", "b"], PCUTOFF, pck_px=5.0)
    assert table.loc["b", "error_px"] == pytest.approx(26 / 3)  # 2, 20, 4
    assert table.loc["b", "error_px_pcutoff"] == pytest.approx(3.0)  # 2, 4: 20 is below pcutoff
    assert table.loc["all", "error_px_pcutoff"] == pytest.approx(22 / 6)
    assert table.loc["a", "error_px_pcutoff"] == table.loc["a", "error_px"]
    # ...and still in every PCK: the 20 px miss fails them all
    assert table.loc["b", "pck@10"] == pytest.approx(2 / 3)


def test_thresholds_are_a_parameter_sorted_and_named():
    pred, truth = constructed()
    table = summarise(pred, truth, ["a", "b"], PCUTOFF, 5.0, pck_thresholds=(20, 2.5, 20))
    assert [c for c in table.columns if c.startswith("pck@")] == ["pck@2.5", "pck@20"]
    assert table.loc["all", "pck@20"] == 1.0
    assert "pck@2" not in summarise(pred, truth, ["a", "b"], PCUTOFF, 5.0, pck_thresholds=())
    with pytest.raises(ValueError, match="positive"):
        summarise(pred, truth, ["a", "b"], PCUTOFF, 5.0, pck_thresholds=(0, 5))


def test_a_part_without_labels_anywhere_has_no_metrics():
    pred, truth = constructed()
    truth[:, 1] = np.nan
    b = summarise(pred, truth, ["a", "b"], PCUTOFF, 5.0).loc["b"]
    assert b["n"] == 0
    assert b.drop("n").isna().all()


def test_matched_unpredicted_parts_fail_pck_but_stay_out_of_errors():
    pred, truth = constructed()
    pred[0, 0, :2] = np.nan  # part a of image 0 (distance 0) not predicted
    pred[0, 0, 2] = 0.0
    table = _metrics(pred, truth, ["a", "b"], PCUTOFF, 5.0, matched=True)
    assert list(table.columns) == [*COLUMNS[:-1], "found", "n"]
    a = table.loc["a"]
    assert a["error_px"] == pytest.approx(16 / 3) and a["median_px"] == pytest.approx(5.0)
    assert (a["pck@2"], a["pck@5"], a["pck@10"]) == (0.25, 0.5, 0.75)
    assert a["found"] == 0.75 and a["n"] == 4


def test_summarise_matched_reports_the_same_columns():
    truth = np.array([[[[0.0, 0.0], [10.0, 0.0]], [[50.0, 50.0], [60.0, 50.0]]]])  # 1×2×2×2
    found = np.array([[[51.0, 50.0, 0.9], [63.0, 54.0, 0.9]], [[0.0, 0.0, 0.9], [10.0, 0.0, 0.9]]])
    table = summarise_matched([found], truth, ["nose", "tail"], PCUTOFF, 5.0)
    assert list(table.columns) == [*COLUMNS[:-1], "found", "n"]
    assert table.loc["all", "median_px"] == pytest.approx(0.5)  # 0, 0, 1, 5
    assert table.loc["all", ["pck@2", "pck@5", "pck@10"]].tolist() == [0.75, 1.0, 1.0]


def test_errors_csv_carries_the_new_columns(tmp_path, monkeypatch):
    import posed.engines.offline.evaluate as ev

    monkeypatch.setattr(ev, "write_pose_table", lambda *a, **k: None)
    pred, truth = constructed()
    table = pd.concat({"test": summarise(pred, truth, ["a", "b"], PCUTOFF, 5.0)},
                      names=["set", "bodypart"])
    _write_results(tmp_path, table, PCUTOFF, 5.0, pd.DataFrame(), "scorer")
    written = pd.read_csv(tmp_path / "errors.csv", index_col=[0, 1])
    assert list(written.columns) == [*COLUMNS, "pcutoff", "pck_px"]
    assert written.loc[("test", "all"), "median_px"] == pytest.approx(4.0)
    assert "median_px" in Evaluation(table, tmp_path, PCUTOFF, 5.0).format()


@st.composite
def poses(draw):
    n = draw(st.integers(1, 6))
    k = draw(st.integers(1, 4))
    coords = st.floats(-500, 500, allow_nan=False)
    truth = draw(hnp.arrays(np.float64, (n, k, 2), elements=coords))
    pred = draw(hnp.arrays(np.float64, (n, k, 2), elements=coords))
    likelihood = draw(hnp.arrays(np.float64, (n, k, 1), elements=st.floats(0, 1)))
    # Unlabelled parts: one coordinate missing leaves the part unlabelled too.
    missing = draw(hnp.arrays(np.int8, (n, k), elements=st.integers(0, 3)))
    truth[missing == 1] = np.nan
    truth[..., 0][missing == 2] = np.nan
    return np.concatenate([pred, likelihood], -1), truth


@settings(max_examples=200, deadline=None)
@given(poses())
def test_properties_on_random_arrays(data):
    pred, truth = data
    names = [f"p{i}" for i in range(pred.shape[1])]
    table = summarise(pred, truth, names, 0.5, pck_px=5.0)
    labelled = np.isfinite(truth).all(-1)
    dist = np.linalg.norm(pred[..., :2] - truth, axis=-1)
    assert table["n"].tolist() == [*labelled.sum(0).tolist(), int(labelled.sum())]
    for name, row in table.iterrows():
        if row["n"] == 0:
            assert np.isnan(row["pck@2"]) and np.isnan(row["median_px"])
            continue
        assert 0 <= row["pck@2"] <= row["pck@5"] <= row["pck@10"] <= 1
        assert row["pck"] == row["pck@5"]  # pck_px 5 is one of the thresholds
        d = dist[:, names.index(name)] if name != "all" else dist
        d = d[np.isfinite(d)]
        assert d.min() <= row["median_px"] <= d.max()
        assert row["error_px"] <= d.max() * (1 + 1e-12)
