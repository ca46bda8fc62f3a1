"""Model bundles: posed.yaml round trip and integrity checks."""

from __future__ import annotations

import pytest
import yaml

from posed.engines.bundle import BUNDLE_FILE, ModelBundle, is_bundle, load_bundle
from posed.errors import ModelLoadError


def _bundle(tmp_path):
    (tmp_path / "w.bin").write_bytes(b"weights" * 100)
    b = ModelBundle(engine="pytorch", format="safetensors", bodyparts=["a", "b"],
                    architecture={"net": "resnet_18", "output_stride": 16}, stride=8.0,
                    locref_stdev=7.2801, source={"scorer": "posed_x"})
    b.save(tmp_path, ["w.bin"])
    return b


def test_round_trip(tmp_path):
    saved = _bundle(tmp_path)
    assert is_bundle(tmp_path)
    loaded = load_bundle(tmp_path)
    assert loaded.bodyparts == ["a", "b"] and loaded.stride == 8.0
    assert loaded.weights == saved.weights and loaded.weights_path == tmp_path / "w.bin"
    assert loaded.scorer == "posed_x"
    meta = yaml.safe_load((tmp_path / BUNDLE_FILE).read_text())
    for key in ("format_version", "posed_version", "engine", "format", "bodyparts", "weights"):
        assert key in meta
    assert len(meta["weights"][0]["sha256"]) == 64


def test_corrupt_weights_are_refused(tmp_path):
    _bundle(tmp_path)
    (tmp_path / "w.bin").write_bytes(b"tampered")
    with pytest.raises(ModelLoadError, match=r"w\.bin: sha256 mismatch"):
        load_bundle(tmp_path)


def test_missing_weights_and_bad_version(tmp_path):
    _bundle(tmp_path)
    (tmp_path / "w.bin").unlink()
    with pytest.raises(ModelLoadError, match="weights file missing"):
        load_bundle(tmp_path)
    meta = yaml.safe_load((tmp_path / BUNDLE_FILE).read_text())
    meta["format_version"] = 99
    meta["posed_version"] = "9.0.0"
    (tmp_path / BUNDLE_FILE).write_text(yaml.safe_dump(meta))
    with pytest.raises(ModelLoadError, match=r"newer posed \(9\.0\.0, format_version 99\).*upgrade"):
        load_bundle(tmp_path)
    meta["format_version"] = "one"
    (tmp_path / BUNDLE_FILE).write_text(yaml.safe_dump(meta))
    with pytest.raises(ModelLoadError, match="format_version 'one' is not supported"):
        load_bundle(tmp_path)


def test_not_a_bundle_and_unknown_key(tmp_path):
    with pytest.raises(ModelLoadError, match="not a model bundle"):
        load_bundle(tmp_path)
    _bundle(tmp_path)
    meta = yaml.safe_load((tmp_path / BUNDLE_FILE).read_text())
    meta["colour"] = "red"
    (tmp_path / BUNDLE_FILE).write_text(yaml.safe_dump(meta))
    with pytest.raises(ModelLoadError, match="unknown key 'colour'"):
        load_bundle(tmp_path)
