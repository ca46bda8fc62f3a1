"""posed's own API over the engines: engine names, lazy imports, dispatch errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from posed.engines import api
from posed.engines import registry
from posed.engines.api import Engine
from posed.errors import CapabilityError, ConfigError, EngineUnavailableError


@pytest.mark.parametrize("name,expected", [
    ("pytorch", Engine.PYTORCH), ("torch", Engine.PYTORCH), ("PyTorch", Engine.PYTORCH),
    ("tensorflow", Engine.TENSORFLOW), ("tf", Engine.TENSORFLOW), ("onnx", Engine.ONNX),
])
def test_engine_aliases(name, expected):
    assert Engine.parse(name) is expected


def test_unknown_engine_lists_known_ones():
    with pytest.raises(ConfigError) as err:
        Engine.parse("caffe")
    msg = str(err.value)
    assert "caffe" in msg and "pytorch" in msg and "tensorflow" in msg and "onnx" in msg


def test_importing_posed_does_not_import_frameworks():
    code = (
        "import sys, json\n"
        "import posed, posed.engines, posed.engines.api, posed.cli\n"
        "from posed.engines import api\n"
        "api.list_engines(); api.Engine.parse('tf')\n"
        "print(json.dumps(sorted(m for m in ('torch','tensorflow','timm','keras') if m in sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_cli_help_does_not_import_frameworks():
    code = (
        "import sys\n"
        "from posed import cli\n"
        "try:\n    cli.main(['train', '--help'])\nexcept SystemExit:\n    pass\n"
        "print('torch' in sys.modules, 'tensorflow' in sys.modules, file=sys.stderr)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stderr.strip().endswith("False False")
    assert "--epochs" in out.stdout


class _Project:
    """The two attributes resolve_engine reads."""

    def __init__(self, engine):
        self.engine = engine
        self.config_path = "config.yaml"


def test_engine_resolution_order():
    assert api.resolve_engine("tf", _Project("pytorch")) is Engine.TENSORFLOW
    assert api.resolve_engine(None, _Project("tensorflow")) is Engine.TENSORFLOW
    assert api.resolve_engine(None, _Project(None)) is api.DEFAULT_ENGINE
    assert api.resolve_engine() is Engine.PYTORCH
    with pytest.raises(ConfigError, match="config.yaml: key 'engine'"):
        api.resolve_engine(None, _Project("mxnet"))


def test_unregistered_engine_is_a_clear_error(monkeypatch):
    monkeypatch.delitem(registry._REGISTRY, Engine.TENSORFLOW, raising=False)
    with pytest.raises(EngineUnavailableError, match="engine 'tensorflow' is not available"):
        api.get_backend("tf")


def test_duplicate_registration_is_an_error():
    with pytest.raises(ValueError, match="already registered"):
        api.register_engine(Engine.PYTORCH, api.BackendSpec("x", "torch", "torch"))


def test_missing_capability_names_engines_that_have_it(monkeypatch):
    pytest.importorskip("torch")
    backend = api.get_backend("pytorch")
    monkeypatch.delattr(backend, "load_runner")
    with pytest.raises(CapabilityError, match="cannot load runner"):
        registry.capability(Engine.PYTORCH, "load_runner")


def test_missing_framework_names_the_extra(monkeypatch):
    monkeypatch.setitem(registry._REGISTRY, Engine.TENSORFLOW,
                        api.BackendSpec("posed.engines.tensorflow.backend", "no_such_framework_x",
                                           "tensorflow"))
    with pytest.raises(EngineUnavailableError, match=r"pip install 'posed\[tensorflow\]'"):
        api.get_backend("tf")
