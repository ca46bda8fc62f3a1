"""``posed config check`` refuses exactly what ``posed serve`` refuses, in the same words.

Every refusal of serve's start-up checks (camera settings, number ranges, duplicate keys, the
model bundle's hashes, engine options, the hook, CurveZMQ key files) is walked through both
commands: each gives the same one line and exit status 2, and neither starts a camera or
loads a model. Also here: a secret key file others can read is warned about once.
"""

from __future__ import annotations

import logging
import shutil
import signal
from pathlib import Path

import pytest
import yaml

from faultkit import DEMO, free_port
from posed.cli import main
from posed.errors import PosedError


class _PastChecks(PosedError):
    """Raised where serve would load the model: the start-up checks all passed."""

    exit_code = 99


@pytest.fixture
def rig(tmp_path, monkeypatch):
    """A folder with a copy of the demo bundle, CurveZMQ keys, and a valid config for them."""
    shutil.copytree(DEMO / "model", tmp_path / "model")
    keys = tmp_path / "keys"
    for name in ("server", "client"):
        assert main(["keys", "generate", str(keys), "--name", name, "-q"]) == 0
    (tmp_path / "allowed").mkdir()
    shutil.copy(keys / "client.key", tmp_path / "allowed" / "client.key")

    def past_checks(self):
        raise _PastChecks("past the start-up checks")

    # serve stops where it would load the model, and leaves this process's signals alone.
    monkeypatch.setattr("posed.daemon.service.Service._load_model", past_checks)
    monkeypatch.setattr(signal, "signal", lambda *args: None)
    return tmp_path


def _valid() -> dict:
    return {"model": {"bundle": "model", "device": "cpu"},
            "cameras": [{"id": "cam0", "source": str(DEMO / "clip.mp4"), "pace": "fast"}],
            "publisher": {"endpoint": f"tcp://127.0.0.1:{free_port()}",
                          "curve": {"server_secret_key": "keys/server.key_secret",
                                    "allowed_clients": "allowed"}},
            "metrics": {"enabled": False}}


def _both(capsys, path: Path) -> tuple[tuple[int, str], tuple[int, str]]:
    """(exit status, stderr) of `posed config check` and of `posed serve`."""
    results = []
    for argv in (["config", "check", str(path)], ["serve", "--config", str(path)]):
        code = main([*argv, "-q"])
        results.append((code, capsys.readouterr().err))
    return results[0], results[1]


def _camera(**changes):
    return lambda d, root: d["cameras"][0].update(changes)


def _section(name, **changes):
    return lambda d, root: d.setdefault(name, {}).update(changes)


def _curve(**changes):
    return lambda d, root: d["publisher"]["curve"].update(changes)


def _damage_weights(d, root):
    weights = root / "model" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))


def _junk_key(d, root):
    (root / "junk.key_secret").write_text("this is not a certificate\n")
    d["publisher"]["curve"]["server_secret_key"] = "junk.key_secret"


def _junk_allowed_key(d, root):
    (root / "allowed" / "broken.key").write_text("metadata\ncurve\n    public-key = \"short\"\n")


V4L2 = {"source": "/dev/video0", "width": 64, "height": 48}

# name -> (change to the valid config, words the error line must contain)
REFUSALS = {
    "fps on a file": (_camera(fps=30), "apply only to v4l2"),
    "size on a stream": (_camera(source="rtsp://127.0.0.1:1/x", width=64, height=48),
                         "apply only to v4l2"),
    "width without height": (_camera(source="/dev/video0", width=64), "give both or neither"),
    "reconnect_initial_s above its maximum": (_camera(reconnect_initial_s=20.0,
                                                      reconnect_max_s=10.0),
                                              "must be >= reconnect_initial_s"),
    "negative crop": (_camera(crop=[-1, 0, 8, 8]), "cameras[0].crop"),
    "empty crop": (_camera(crop=[0, 0, 0, 8]), "cameras[0].crop"),
    "zero resize": (_camera(resize=[0, 0]), "cameras[0].resize"),
    "crop outside the frame": (_camera(crop=[32, 0, 64, 48], **V4L2), "outside the 64x48"),
    "infinite max_delay_ms": (_section("batching", max_delay_ms=float("inf")),
                              "batching.max_delay_ms"),
    "NaN lead_ms": (_section("processors", kalman={"lead_ms": float("nan")}), "lead_ms"),
    "max_delay_ms of an hour": (_section("batching", max_delay_ms=3.6e6),
                                "batching.max_delay_ms"),
    "max_batch true": (_section("batching", max_batch=True), "batching.max_batch"),
    "fps true": (_camera(fps=True, **V4L2), "cameras[0].fps"),
    "queue_size as a string": (_camera(queue_size="4"), "cameras[0].queue_size"),
    "zero reconnect": (_camera(reconnect_max_s=0), "reconnect_max_s"),
    "hwm huge": (_section("publisher", hwm=10**12), "publisher.hwm"),
    "duplicate camera id": (lambda d, root: d["cameras"].append(dict(d["cameras"][0])),
                            "used twice"),
    "weights replaced": (_damage_weights, "sha256 mismatch"),
    "no bundle": (_section("model", bundle="nowhere"), "not a model bundle"),
    "precision the engine cannot honour": (_section("model", engine="onnx", precision="fp16"),
                                           "model.precision"),
    "onnx engine on a safetensors bundle": (_section("model", engine="openvino"),
                                            "runs onnx bundles"),
    "openvino on a gpu": (_section("model", engine="openvino", device="cuda"), "model."),
    "hook that does not exist": (_section("processors", hook="no_such_module_posed:f"),
                                 "cannot import"),
    "hook with a relative module": (_section("processors", hook=".relative:f"), "'.relative:f'"),
    "hook with no module": (_section("processors", hook=":f"), "processors.hook"),
    "hook name with a newline": (_section("processors", hook="two\nlines:f"), "two\\nlines"),
    "public key as the secret key": (_curve(server_secret_key="keys/server.key"),
                                     "holds no secret key"),
    "key file that is not a key": (_junk_key, "junk.key_secret"),
    "missing secret key file": (_curve(server_secret_key="keys/gone.key_secret"),
                                "no such key file"),
    "missing allowed_clients folder": (_curve(allowed_clients="nobody"),
                                       "allowed-clients folder does not exist"),
    "allowed client key that is not a key": (_junk_allowed_key, "broken.key"),
}


def test_the_valid_rig_passes_both(rig, capsys):
    path = rig / "rig.yaml"
    path.write_text(yaml.safe_dump(_valid()))
    (check_code, check_err), (serve_code, serve_err) = _both(capsys, path)
    assert check_code == 0, check_err
    assert serve_code == _PastChecks.exit_code, serve_err


@pytest.mark.parametrize("name", sorted(REFUSALS))
def test_config_check_refuses_what_serve_refuses(rig, capsys, name):
    change, words = REFUSALS[name]
    data = _valid()
    change(data, rig)
    path = rig / "rig.yaml"
    path.write_text(yaml.safe_dump(data))
    check, serve = _both(capsys, path)
    assert serve[0] == 2, f"serve did not refuse {name}: {serve[1]}"
    assert check == serve, f"config check and serve disagree on {name}"
    line = check[1]
    assert line.count("\n") == 1 and line.startswith(f"error: {path}: ") and words in line, line
    assert len(line.replace(str(rig), "")) < 200, line  # short, but for the folder's name


def test_duplicate_keys_are_refused_by_both(rig, capsys):
    path = rig / "rig.yaml"
    path.write_text(yaml.safe_dump(_valid()) + "batching:\n  max_batch: 2\nbatching:\n"
                    "  max_batch: 8\n")
    check, serve = _both(capsys, path)
    assert check == serve and check[0] == 2
    assert check[1].count("\n") == 1 and f"{path}: " in check[1]
    assert "duplicate key 'batching'" in check[1]
    camera = f"  - {{id: cam0, source: '{DEMO / 'clip.mp4'}', loop: true, loop: false}}\n"
    path.write_text(f"model: {{bundle: model}}\ncameras:\n{camera}")
    check, serve = _both(capsys, path)
    assert check == serve and check[0] == 2 and "duplicate key 'loop'" in check[1]


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_secret_key_readable_by_others_is_warned_once(rig, capsys, caplog):
    path = rig / "rig.yaml"
    path.write_text(yaml.safe_dump(_valid()))
    secret = rig / "keys" / "server.key_secret"
    with caplog.at_level(logging.WARNING):
        assert main(["config", "check", str(path)]) == 0
        assert _warnings(caplog) == []
        secret.chmod(0o640)
        assert main(["config", "check", str(path)]) == 0
        found = _warnings(caplog)
        assert len(found) == 1 and str(secret) in found[0] and "0640" in found[0], found
        caplog.clear()
        assert main(["serve", "--config", str(path)]) == _PastChecks.exit_code
        assert len([w for w in _warnings(caplog) if str(secret) in w]) == 1
    capsys.readouterr()


def test_client_secret_key_readable_by_others_is_warned(rig, caplog):
    from posed.daemon.keys import CurveClient

    client = CurveClient(rig / "keys" / "client.key_secret", rig / "keys" / "server.key")
    with caplog.at_level(logging.WARNING):
        client.load()
        assert _warnings(caplog) == []
        (rig / "keys" / "client.key_secret").chmod(0o644)
        client.load()
    found = _warnings(caplog)
    assert len(found) == 1 and "client.key_secret" in found[0] and "chmod 600" in found[0]
