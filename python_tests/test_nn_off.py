"""OFF modules: shapes, consistency with the op, FeatureTaps, compile, and a tiny learning task."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mvaccel.nn import (
    BN_INCEPTION_TAPS,
    Bottleneck,
    FeatureTaps,
    OFFLayer,
    OFFSubNetwork,
    OFFUnit,
    RawOFF,
    SegmentConsensus,
    TapOFFLayer,
)
from mvaccel.nn.off import AUTHORS_SPATIAL_KERNEL
from mvaccel.ops.off import off_gradients_reference, off_gradients_stack_reference


def _tiny_backbone():
    # Three levels at strides 1, 2, 4 of the input.
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, 1, 1),
        nn.ReLU(),
        nn.Conv2d(8, 12, 3, 2, 1),
        nn.ReLU(),
        nn.Conv2d(12, 16, 3, 2, 1),
        nn.ReLU(),
    )


TAPS = [["1"], ["2", "3"], ["5"]]  # level 2 concatenates the conv and its ReLU


@pytest.mark.parametrize("mode, width", [("off", 3 * 6), ("temporal", 6), ("rgb", 6 + 2 * 4)])
def test_off_layer_modes(mode, width):
    torch.manual_seed(0)
    layer = OFFLayer(5, reduce=6, mode=mode, spatial_channels=4).double()
    f = torch.randn(2, 3, 5, 7, 6, dtype=torch.float64)
    out = layer(f)
    assert out.shape == (2, 2, width, 7, 6) and layer.out_channels == width
    r = layer.reduce(f.flatten(0, 1)).view(2, 3, 6, 7, 6)
    if mode == "off":
        torch.testing.assert_close(out, off_gradients_stack_reference(r))
    else:
        torch.testing.assert_close(out[:, :, -6:], r[:, 1:] - r[:, :-1])
    if mode == "rgb":
        s = layer.spatial(f[:, 2])
        ref = off_gradients_reference(s, s)[:, :8]  # Sobel x (4) then Sobel y (4)
        grad = out[:, 1, :8]
        torch.testing.assert_close(grad.view(2, 4, 2, 7, 6).transpose(1, 2).flatten(1, 2), ref)
    # The pair form is the stack form of one pair.
    torch.testing.assert_close(layer(f[:, 2], f[:, 1]), out[:, 1])


def test_off_layer_gradients_reach_the_conv():
    layer = OFFLayer(4, reduce=3)
    f = torch.randn(1, 2, 4, 5, 5, requires_grad=True)
    layer(f).square().sum().backward()
    assert layer.reduce.weight.grad.abs().sum() > 0 and f.grad.abs().sum() > 0


def test_segment_consensus():
    x = torch.arange(24.0).view(6, 4)
    torch.testing.assert_close(SegmentConsensus(3)(x), x.view(2, 3, 4).mean(1))
    torch.testing.assert_close(SegmentConsensus()(x.view(2, 3, 4)), x.view(2, 3, 4).mean(1))
    with pytest.raises(ValueError, match="multiple"):
        SegmentConsensus(4)(x)


def test_feature_taps():
    net = _tiny_backbone()
    taps = FeatureTaps(net, TAPS)
    x = torch.randn(2, 3, 16, 16)
    levels = taps(x)
    assert [tuple(t.shape) for t in levels] == [(2, 8, 16, 16), (2, 24, 8, 8), (2, 16, 4, 4)]
    a = net[2](net[1](net[0](x)))
    torch.testing.assert_close(levels[1], torch.cat([a, F.relu(a)], 1))
    assert taps.level_channels(x) == [8, 24, 16]
    assert FeatureTaps(net, {"fine": ["1"], "coarse": ["5"]})(x)[1].shape == (2, 16, 4, 4)
    with pytest.raises(ValueError, match="no submodules"):
        FeatureTaps(net, BN_INCEPTION_TAPS)
    with pytest.raises(ValueError, match="non-empty"):
        FeatureTaps(net, ["1", "3"])


def _subnet(num_classes=4, mode="off"):
    return OFFSubNetwork(
        (8, 24, 16),
        num_classes,
        widths=(12, 12, 16),
        blocks=1,
        reduce=6,
        dropout=0.0,
        mode=mode,
        architecture="resnet20",
    )


def _levels(taps, clips):
    n, t = clips.shape[:2]
    return [lv.view(n, t, *lv.shape[1:]) for lv in taps(clips.flatten(0, 1))]


@pytest.mark.parametrize("mode", ["off", "temporal", "rgb"])
def test_subnetwork_shapes(mode):
    torch.manual_seed(0)
    taps = FeatureTaps(_tiny_backbone(), TAPS)
    net = _subnet(5, mode)
    scores = net(_levels(taps, torch.randn(2, 3, 3, 16, 16)))
    assert [tuple(s.shape) for s in scores] == [(2, 5)] * 3
    with pytest.raises(ValueError, match="3 feature levels"):
        net(_levels(taps, torch.randn(2, 3, 3, 16, 16))[:2])


def test_unit_checks_prev():
    unit = OFFUnit(4, prev_channels=3, width=5, blocks=1, prev_stride=2, reduce=2)
    f = torch.randn(1, 3, 4, 4, 4)
    assert unit(f, torch.randn(2, 3, 8, 8)).shape == (2, 5, 4, 4)
    with pytest.raises(ValueError, match="pass prev"):
        unit(f)
    with pytest.raises(ValueError, match="does not match"):
        unit(f, torch.randn(2, 3, 6, 6))


def test_raw_off():
    frames = torch.rand(2, 3, 3, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(RawOFF()(frames), off_gradients_stack_reference(frames))
    grey = RawOFF(grey=True).double()(frames)
    luma = (frames * torch.tensor([0.299, 0.587, 0.114]).view(1, 1, 3, 1, 1)).sum(2, True)
    torch.testing.assert_close(grey, off_gradients_stack_reference(luma.double()))
    with pytest.raises(ValueError, match="T >= 2"):
        RawOFF()(frames[:, :1])


def test_compile_fullgraph_modules():
    torch.manual_seed(0)
    taps = FeatureTaps(_tiny_backbone(), TAPS)
    net = _subnet()
    clips = torch.randn(2, 3, 3, 16, 16)
    levels = [lv.detach() for lv in _levels(taps, clips)]
    compiled = torch.compile(net, fullgraph=True, backend="aot_eager")
    for a, b in zip(compiled(levels), net(levels), strict=True):
        torch.testing.assert_close(a, b)
    sum(s.sum() for s in compiled(levels)).backward()
    raw = torch.compile(RawOFF(), fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(raw(clips), off_gradients_stack_reference(clips))


def _moving_clips(n, gen, t=3, size=16, step=2):
    """Random smooth textures translated by `step` px per segment; label = direction (4)."""
    labels = torch.randint(0, 4, (n,), generator=gen)
    big = size + 2 * step * t
    tex = F.avg_pool2d(torch.randn(n, 3, big, big, generator=gen), 3, 1, 1)
    tex = tex / tex.std()
    dy = torch.tensor([0, 0, 1, -1])[labels] * step
    dx = torch.tensor([1, -1, 0, 0])[labels] * step
    clips = torch.empty(n, t, 3, size, size)
    c = step * t
    for i in range(n):
        for s in range(t):
            y0, x0 = c + s * int(dy[i]), c + s * int(dx[i])
            clips[i, s] = tex[i, :, y0 : y0 + size, x0 : x0 + size]
    return clips, labels


def test_off_network_fits_a_tiny_motion_task(one_thread):
    # Direction of motion of a random texture: appearance alone says nothing; the temporal
    # difference and the Sobel gradients say it all.
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    taps = FeatureTaps(_tiny_backbone(), TAPS)
    net = _subnet()
    params = list(net.parameters()) + list(taps.parameters())
    opt = torch.optim.Adam(params, lr=3e-3)
    for _ in range(150):
        clips, y = _moving_clips(16, gen)
        scores = net(_levels(taps, clips))
        loss = sum(F.cross_entropy(s, y) for s in scores)
        opt.zero_grad()
        loss.backward()
        opt.step()
    clips, y = _moving_clips(128, torch.Generator().manual_seed(1))
    with torch.no_grad():
        accs = [(s.argmax(1) == y).float().mean().item() for s in net(_levels(taps, clips))]
    # Every level's classifier (the last is the prediction) on unseen clips; chance is 0.25.
    assert min(accs) >= 0.9, f"OFF network accuracies {accs} on the 4-direction task"


# ---- the authors' released nets (kevin-ssy/Optical-Flow-Guided-Feature train.prototxt) ----

#: BN-Inception's tapped blocks: 3a, 3b | 3c, 4a, 4b, 4c, 4d | 5a, 5b output channels.
BN_TAP_CHANNELS = [[256, 320], [576, 576, 576, 608, 608], [1024, 1024]]


def test_authors_rgb_off_layer_against_a_reference():
    torch.manual_seed(0)
    layer = OFFLayer(5, reduce=6, mode="rgb", spatial_channels=4, relu=True,
                     spatial_kernel="authors", spatial_dropout=0.8).double().eval()  # fmt: skip
    assert layer.out_channels == 6 + 4
    f = torch.randn(2, 3, 5, 7, 9, dtype=torch.float64)
    out = layer(f)
    r = F.relu(layer.reduce(f.flatten(0, 1))).view(2, 3, 6, 7, 9)
    # their Caffe "sobel" filler, one kernel per channel, on the earlier frame of each pair
    k = torch.tensor([[0, 1, 0], [-1, 0, 1], [0, -1, 0]], dtype=torch.float64)
    s = layer.spatial(f[:, :-1].flatten(0, 1))
    g = F.conv2d(s, k.expand(4, 1, 3, 3), padding=1, groups=4).view(2, 2, 4, 7, 9)
    torch.testing.assert_close(out, torch.cat([g, r[:, 1:] - r[:, :-1]], 2))
    assert torch.equal(torch.tensor(AUTHORS_SPATIAL_KERNEL, dtype=torch.float64), k)
    # the pair form gives the same pair
    torch.testing.assert_close(layer(f[:, 1], f[:, 0]), out[:, 0])
    # dropout 0.8 on the spatial branch only, in training
    layer.train()
    torch.manual_seed(1)
    train_out = layer(f)
    zeros = (train_out[:, :, :4] == 0).double().mean().item()
    assert 0.7 < zeros < 0.9
    torch.testing.assert_close(train_out[:, :, 4:], out[:, :, 4:])
    with pytest.raises(ValueError, match="spatial_kernel must be one of"):
        OFFLayer(5, mode="rgb", spatial_kernel="prewitt")


def test_tap_off_layer_is_one_layer_per_tap():
    torch.manual_seed(0)
    tap = TapOFFLayer([3, 5], reduce=4, mode="temporal", relu=True).double()
    f = torch.randn(2, 3, 8, 6, 6, dtype=torch.float64)
    expected = torch.cat([tap.taps[0](f[:, :, :3]), tap.taps[1](f[:, :, 3:])], 2)
    torch.testing.assert_close(tap(f), expected)
    assert tap.out_channels == 8 and expected.shape == (2, 2, 8, 6, 6)
    with pytest.raises(ValueError, match="expected 8 channels"):
        tap(f[:, :, :7])


def test_bottleneck_without_batchnorm():
    b = Bottleneck(6, 2, 10, last_kernel=3, relu=False).double()
    x = torch.randn(1, 6, 5, 5, dtype=torch.float64)
    y = b.conv3(F.relu(b.conv2(F.relu(b.conv1(x))))) + b.shortcut(x)
    torch.testing.assert_close(b(x), y)
    assert y.min() < 0  # no ReLU after the last sum
    assert not any(isinstance(m, nn.BatchNorm2d) for m in b.modules())
    assert isinstance(Bottleneck(4, 2, 4).shortcut, nn.Identity)


def test_authors_subnetwork_is_their_prototxt():
    net = OFFSubNetwork(BN_TAP_CHANNELS, 101, mode="rgb").eval()  # architecture="authors"
    u0, u1, u2 = net.units
    # a 1x1 conv (128) + ReLU per inception block; RGB-OFF: 32 spatial + 128 temporal
    assert [t.reduce.in_channels for t in u1.layer.taps] == BN_TAP_CHANNELS[1]
    assert all(t.relu and t.out_channels == 160 for u in net.units for t in u.layer.taps)
    convs = [(u.transition.in_channels, u.transition.out_channels, u.transition.kernel_size[0],
              u.transition.stride[0]) for u in net.units]  # fmt: skip
    assert convs == [(320, 64, 7, 2), (5 * 160 + 256, 128, 5, 2), (2 * 160 + 512, 256, 3, 1)]
    assert [[b.conv3.out_channels for b in u.blocks] for u in net.units] == [
        [256] * 3,
        [512] * 2,
        [1024],
    ]
    assert u0.blocks[0].conv1.out_channels == 64 and u2.blocks[0].conv2.out_channels == 256
    assert u1.blocks[1].conv3.kernel_size == (3, 3)  # their motion_conv3_trans_14b
    assert not u2.blocks[-1].relu and u1.blocks[-1].relu
    assert all(h[-2].p == 0.8 for h in net.heads)
    assert isinstance(net.heads[0][0], nn.MaxPool2d) and isinstance(
        net.heads[1][0], nn.AdaptiveAvgPool2d
    )
    levels = [
        torch.randn(1, 2, sum(c), s, s) for c, s in zip(BN_TAP_CHANNELS, (28, 14, 7), strict=True)
    ]
    with torch.no_grad():
        assert [tuple(s.shape) for s in net(levels)] == [(1, 101)] * 3
    with pytest.raises(ValueError, match="has 3 levels"):
        OFFSubNetwork(BN_TAP_CHANNELS[:2], 5)
    with pytest.raises(ValueError, match="architecture must be one of"):
        OFFSubNetwork(BN_TAP_CHANNELS, 5, architecture="paper")
