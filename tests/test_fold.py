"""Batch-norm folding at inference (posed.engines.pytorch.fold): the same outputs with fewer
layers, and the original model kept where the traced pairing would be wrong."""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from posed.engines.pytorch.fold import fold_batchnorm  # noqa: E402


def _norms(model: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def _randomise_stats(model: nn.Module) -> None:
    """Norm statistics far from the identity, as after training."""
    gen = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen))
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.weight.data.copy_(torch.randn(m.num_features, generator=gen))
            m.bias.data.copy_(torch.randn(m.num_features, generator=gen))


@pytest.mark.parametrize("net", ["mobilenet_v2_0.35", "resnet_50"])
def test_folded_pose_net_gives_the_same_outputs(net, tmp_path):
    from posed.engines.pytorch.backend import build_model, random_bundle

    model = build_model(random_bundle(net, tmp_path / net, keypoints=3)).eval()
    _randomise_stats(model)
    before = _norms(model)
    folded = copy.deepcopy(model)
    assert fold_batchnorm(folded) > 0
    assert _norms(folded) < before
    x = torch.rand(2, 3, 96, 80) * 255
    with torch.no_grad():
        for want, got in zip(model(x), folded(x)):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))


class _Shared(nn.Module):
    """A convolution whose output feeds both a norm and a residual sum: not foldable."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x):
        y = self.conv(x)
        return self.bn(y) + y


def test_a_conv_output_used_elsewhere_keeps_the_model_unfolded():
    model = _Shared().eval()
    _randomise_stats(model)
    x = torch.rand(1, 3, 16, 16) * 255
    with torch.no_grad():
        want = model(x)
    assert fold_batchnorm(model, x) == 0
    assert isinstance(model.bn, nn.BatchNorm2d) and model.conv.bias is not None
    with torch.no_grad():
        torch.testing.assert_close(model(x), want)


def test_training_mode_is_refused():
    with pytest.raises(ValueError, match="eval"):
        fold_batchnorm(_Shared().train())


def test_only_loaded_runners_fold_a_model_being_trained_is_untouched(tmp_path):
    """Training evaluates through a runner wrapped around the model it trains: that model must
    keep its norms (their statistics still change); a runner loaded from a bundle folds."""
    from posed.engines.bundle import load_bundle
    from posed.engines.pytorch.backend import TorchRunner, build_model, random_bundle

    bundle = load_bundle(random_bundle("mobilenet_v2_0.35", tmp_path / "b", keypoints=3).path)
    training = build_model(bundle)
    before = _norms(training)
    TorchRunner(bundle, training, torch.device("cpu")).predict(
        torch.zeros(1, 64, 64, 3, dtype=torch.uint8).numpy())
    assert _norms(training) == before and before > 0
    loaded = TorchRunner.load(bundle, device="cpu")
    assert _norms(loaded.model) < before
