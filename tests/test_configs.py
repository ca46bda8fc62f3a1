"""Everything shipped under configs/ loads and does what the README says."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from posed.engines import api
from posed.engines.bundle import load_bundle

DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo"


def test_demo_bundle_is_valid_and_contains_no_pickle():
    bundle = load_bundle(DEMO / "model")  # verifies sha256
    assert bundle.engine == "pytorch" and bundle.format == "safetensors"
    assert "project" not in bundle.source  # no path from the machine that built it
    assert (DEMO / "model" / "model.safetensors").read_bytes()[:1] != b"\x80"  # not a pickle


def test_demo_clip_poses_match_its_ground_truth(tmp_path):
    pytest.importorskip("torch")
    report = api.analyze_videos(DEMO / "model", [DEMO / "clip.mp4"], dest=tmp_path,
                                   progress=False)
    df = pd.read_hdf(report.outputs[0], "df_with_missing")
    truth = pd.read_csv(DEMO / "clip_truth.csv", index_col="frame")
    assert len(df) == len(truth) == 300
    scorer = df.columns.get_level_values(0)[0]
    err = np.concatenate([
        np.hypot(df[(scorer, bp, "x")] - truth[f"{bp}_x"], df[(scorer, bp, "y")] - truth[f"{bp}_y"])
        for bp in load_bundle(DEMO / "model").bodyparts])
    assert np.median(err) <= 3.0


CONFIGS = DEMO.parent


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_every_shipped_camera_is_one_capture_accepts(name):
    """Serve's start-up checks build each camera as capture will: no setting it refuses
    (the model bundles of the rig examples live on the rig, so only cameras are checked)."""
    from posed.daemon.config import load_config
    from posed.daemon.validate import camera_spec

    for cam in load_config(CONFIGS / name).cameras:
        camera_spec(cam)


def test_the_curve_example_passes_serves_checks_once_its_keys_exist(tmp_path, capsys, caplog):
    """configs/curve.yaml, with its key folder moved to a temporary one, followed step by step
    as its comments say: refused until the keys exist, then ok, encrypted and loopback-only."""
    from posed.cli import main
    from posed.daemon.config import load_config, non_loopback_endpoints

    text = (CONFIGS / "curve.yaml").read_text()
    assert "/etc/posed/curve" in text
    (tmp_path / "demo").symlink_to(DEMO)  # the example names the demo relative to itself
    config = tmp_path / "curve.yaml"
    config.write_text(text.replace("/etc/posed/curve", str(tmp_path / "curve")))
    assert main(["config", "check", str(config)]) == 2
    assert "publisher.curve.server_secret_key" in capsys.readouterr().err
    assert main(["keys", "generate", str(tmp_path / "curve"), "--name", "server"]) == 0
    assert main(["keys", "generate", str(tmp_path / "lab"), "--name", "lab-pc"]) == 0
    (tmp_path / "curve" / "allowed").mkdir()
    (tmp_path / "curve" / "allowed" / "lab-pc.key").write_bytes(
        (tmp_path / "lab" / "lab-pc.key").read_bytes())
    capsys.readouterr()
    caplog.clear()
    assert main(["config", "check", str(config)]) == 0
    assert "(CurveZMQ)" in capsys.readouterr().out
    assert not [r for r in caplog.records if r.levelname == "WARNING"]  # key modes are right
    cfg = load_config(config)
    assert cfg.publisher.curve is not None and non_loopback_endpoints(cfg) == []
