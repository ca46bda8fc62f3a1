"""What only the PyTorch engine has: every timm backbone, device selection. What every engine
must do is in ``test_engine_contract.py``."""

from __future__ import annotations


import pytest

from posed.errors import ConfigError

torch = pytest.importorskip("torch")

@pytest.mark.parametrize("net", ["resnet_50", "resnet_18", "mobilenet_v2_1.0", "mobilenet_v2_0.35",
                                 "efficientnet_b0"])
def test_every_net_builds_and_matches_its_grid(net):
    from posed.engines.pytorch.model import PoseNet

    model = PoseNet(net, 3, output_stride=16).eval()
    with torch.no_grad():
        heat, loc = model(torch.zeros(1, 3, 96, 128))
    assert heat.shape == (1, 3, 12, 16) and loc.shape == (1, 6, 12, 16)
    assert model.stride == 8


def test_device_selection_falls_back_to_cpu(monkeypatch, caplog):
    from posed.engines.pytorch.backend import select_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert select_device("auto").type == "cpu"
    with caplog.at_level("WARNING"):
        assert select_device("cuda:0").type == "cpu"
    assert "CUDA is not available" in caplog.text
    with pytest.raises(ConfigError, match="device 'tpu'"):
        select_device("tpu")
