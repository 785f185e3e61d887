"""Backbones: the papers' shapes, torchvision-exact ResNets, taps, channels, local weights."""

from __future__ import annotations

import pytest
import torch

from mvaccel.nn import backbones as B


def n_params(m):
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize(
    "make,count",
    # torchvision's parameter counts of the same architectures (1000 classes).
    [(B.resnet18, 11_689_512), (B.resnet50, 25_557_032), (B.resnet152, 60_192_808)],
)
def test_resnet_matches_torchvision_architecture(make, count):
    assert n_params(make(num_classes=1000)) == count


def test_resnet_any_channels_and_features():
    m = B.resnet18(num_classes=7, in_channels=20).eval()
    out = m(torch.randn(2, 20, 64, 64))
    assert out.shape == (2, 7)
    f = B.resnet18(num_classes=0, in_channels=2).eval()(torch.randn(1, 2, 64, 64))
    assert f.shape == (1, 512)


def test_bninception_levels_of_the_off_taps():
    m = B.BNInception(num_classes=5).eval()
    shapes = {}
    hooks = [
        getattr(m, n).register_forward_hook(lambda mod, i, o, n=n: shapes.__setitem__(n, o.shape))
        for n in B.bninception.BLOCKS
    ]
    with torch.no_grad():
        assert m(torch.randn(1, 3, 224, 224)).shape == (1, 5)
    for h in hooks:
        h.remove()
    assert shapes["inception_3a"][1:] == (256, 28, 28)
    assert shapes["inception_3b"][1:] == (320, 28, 28)
    assert shapes["inception_3c"][1:] == (576, 14, 14)
    assert shapes["inception_4d"][1:] == (608, 14, 14)
    assert shapes["inception_4e"][1:] == (1056, 7, 7)
    assert shapes["inception_5b"][1:] == (1024, 7, 7)


def test_clarifai_shapes():
    m = B.ClarifaiNet(num_classes=101, in_channels=20).eval()
    x = torch.randn(2, 20, 224, 224)
    with torch.no_grad():
        c5 = m.conv5(m.conv4(m.conv3(m.conv2(m.conv1(x)))))
        assert c5.shape == (2, 512, 6, 6)  # Caffe's ceil-mode pooling: 6x6 at pool5
        assert m(x).shape == (2, 101)
    assert isinstance(m.conv1[1], torch.nn.PReLU)
    spatial = B.ClarifaiNet(in_channels=3, prelu=False, dropout=(0.5, 0.5))
    assert isinstance(spatial.conv1[1], torch.nn.ReLU) and spatial.fc6[2].p == 0.5


def test_resnet3d_clip():
    m = B.resnet3d18(num_classes=4, in_channels=2).eval()
    with torch.no_grad():
        assert m(torch.randn(1, 2, 8, 32, 32)).shape == (1, 4)
    assert B.resnet3d101(num_classes=10).layer3[22] is not None  # 23 blocks in stage 3


def test_cross_modality_load(tmp_path):
    rgb = B.resnet18(num_classes=1000)
    path = tmp_path / "rgb.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in rgb.state_dict().items()}}, path)
    flow = B.resnet18(num_classes=101, in_channels=10)
    report = B.load_weights(flow, path)
    assert report["adapted"] == ["conv1.weight"]
    assert set(report["skipped"]) == {"fc.weight", "fc.bias"}
    assert report["missing"] == ["fc.weight", "fc.bias"] and report["unexpected"] == []
    expected = rgb.conv1.weight.mean(1, keepdim=True).expand(-1, 10, -1, -1)
    torch.testing.assert_close(flow.conv1.weight, expected)
    torch.testing.assert_close(flow.layer3[0].conv1.weight, rgb.layer3[0].conv1.weight)
    with pytest.raises(RuntimeError, match="fc.weight"):
        B.load_weights(B.resnet18(num_classes=101), path, strict=True)
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        B.load_weights(flow, tmp_path / "nope.pth")


def test_load_weights_of_a_lightning_checkpoint_and_of_a_foreign_file(tmp_path):
    from mvaccel.train import ActionClassifier

    trained = ActionClassifier(backbone="resnet18", num_classes=5, in_channels=4)
    teacher = B.resnet18(num_classes=5, in_channels=4)  # a submodule that must not load
    state = {f"net.{k}": v for k, v in trained.net.state_dict().items()}
    state.update({f"teacher.{k}": torch.zeros_like(v) for k, v in teacher.state_dict().items()})
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": state, "hyper_parameters": {"backbone": "resnet18"}}, path)
    net = B.resnet18(num_classes=5, in_channels=4)
    report = B.load_weights(net, path)
    assert report["missing"] == [] and report["skipped"] == []
    torch.testing.assert_close(net.layer4[1].conv2.weight, trained.net.layer4[1].conv2.weight)
    other = tmp_path / "other.pth"
    torch.save({"encoder.weight": torch.zeros(3)}, other)
    with pytest.raises(ValueError, match="none of its 1 tensors belongs to ResNet"):
        B.load_weights(net, other)
