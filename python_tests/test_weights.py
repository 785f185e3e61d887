"""Weight routes: files keyed as tsn-pytorch, mmaction(2), MARS and Caffe load where they should.

Every state dict here is synthetic, built from the public naming schemes' key names and shapes
(written out below, independently of mvaccel's modules), with distinct random values; nothing
is downloaded.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mvaccel.data import transforms as tf
from mvaccel.nn import backbones as B

# BN-Inception as the Caffe model / tsn-pytorch's bn_inception.yaml lays it out:
# block: (in, 1x1, 3x3_reduce, 3x3, double_3x3_reduce, double_3x3, pool_proj, stride, pool)
BN_BLOCKS = {
    "inception_3a": (192, 64, 64, 64, 64, 96, 32, 1, "avg"),
    "inception_3b": (256, 64, 64, 96, 64, 96, 64, 1, "avg"),
    "inception_3c": (320, 0, 128, 160, 64, 96, 0, 2, "max"),
    "inception_4a": (576, 224, 64, 96, 96, 128, 128, 1, "avg"),
    "inception_4b": (576, 192, 96, 128, 96, 128, 128, 1, "avg"),
    "inception_4c": (576, 160, 128, 160, 128, 160, 128, 1, "avg"),
    "inception_4d": (608, 96, 128, 192, 160, 192, 128, 1, "avg"),
    "inception_4e": (608, 0, 128, 192, 192, 256, 0, 2, "max"),
    "inception_5a": (1056, 352, 192, 320, 160, 224, 128, 1, "avg"),
    "inception_5b": (1024, 352, 192, 320, 192, 224, 128, 1, "max"),
}


def bn_inception_convs() -> dict[str, tuple[int, int, int]]:
    """Caffe layer name -> (out, in, kernel) of every convolution (each has a ``_bn``)."""
    convs = {
        "conv1_7x7_s2": (64, 3, 7),
        "conv2_3x3_reduce": (64, 64, 1),
        "conv2_3x3": (192, 64, 3),
    }
    for b, (cin, c1, c3r, c3, cdr, cd, proj, _, _) in BN_BLOCKS.items():
        if c1:
            convs[f"{b}_1x1"] = (c1, cin, 1)
        convs[f"{b}_3x3_reduce"] = (c3r, cin, 1)
        convs[f"{b}_3x3"] = (c3, c3r, 3)
        convs[f"{b}_double_3x3_reduce"] = (cdr, cin, 1)
        convs[f"{b}_double_3x3_1"] = (cd, cdr, 3)
        convs[f"{b}_double_3x3_2"] = (cd, cd, 3)
        if proj:
            convs[f"{b}_pool_proj"] = (proj, cin, 1)
    return convs


def bn_inception_state(num_classes: int, fc: str = "fc", prefix: str = "") -> dict:
    """A state dict keyed as tsn-pytorch's (old PyTorch: no ``num_batches_tracked``)."""
    g = torch.Generator().manual_seed(0)
    state = {}
    for name, (cout, cin, k) in bn_inception_convs().items():
        state[f"{prefix}{name}.weight"] = torch.randn(cout, cin, k, k, generator=g) * 0.1
        state[f"{prefix}{name}.bias"] = torch.randn(cout, generator=g) * 0.1
        bn = f"{prefix}{name}_bn"
        state[f"{bn}.weight"] = 1 + 0.1 * torch.randn(cout, generator=g)
        state[f"{bn}.bias"] = 0.1 * torch.randn(cout, generator=g)
        state[f"{bn}.running_mean"] = 0.1 * torch.randn(cout, generator=g)
        state[f"{bn}.running_var"] = 0.5 + torch.rand(cout, generator=g)
    state[f"{fc}.weight"] = torch.randn(num_classes, 1024, generator=g) * 0.01
    state[f"{fc}.bias"] = torch.randn(num_classes, generator=g) * 0.01
    return state


def bn_inception_reference(state: dict, x: torch.Tensor, fc: str = "fc") -> torch.Tensor:
    """BN-Inception's forward written from the Caffe layer names alone (eval mode)."""

    def cbr(name, x, stride=1):
        w = state[f"{name}.weight"]
        x = F.conv2d(x, w, state[f"{name}.bias"], stride, w.shape[-1] // 2)
        bn = f"{name}_bn"
        x = F.batch_norm(x, state[f"{bn}.running_mean"], state[f"{bn}.running_var"],
                         state[f"{bn}.weight"], state[f"{bn}.bias"], False, 0.0, 1e-5)  # fmt: skip
        return F.relu(x)

    x = F.max_pool2d(cbr("conv1_7x7_s2", x, 2), 3, 2, ceil_mode=True)
    x = cbr("conv2_3x3", cbr("conv2_3x3_reduce", x))
    x = F.max_pool2d(x, 3, 2, ceil_mode=True)
    for b, (_, c1, _, _, _, _, proj, s, pool) in BN_BLOCKS.items():
        outs = [cbr(f"{b}_1x1", x)] if c1 else []
        outs.append(cbr(f"{b}_3x3", cbr(f"{b}_3x3_reduce", x), s))
        d = cbr(f"{b}_double_3x3_1", cbr(f"{b}_double_3x3_reduce", x))
        outs.append(cbr(f"{b}_double_3x3_2", d, s))
        pad = 1 if s == 1 else 0
        if pool == "avg":
            p = F.avg_pool2d(x, 3, s, pad, ceil_mode=True)
        else:
            p = F.max_pool2d(x, 3, s, pad, ceil_mode=True)
        outs.append(cbr(f"{b}_pool_proj", p) if proj else p)
        x = torch.cat(outs, 1)
    return F.linear(x.mean((2, 3)), state[f"{fc}.weight"], state[f"{fc}.bias"])


def _save(tmp_path, name, obj):
    path = tmp_path / name
    torch.save(obj, path)
    return path


def _bn_count(model):
    return sum(1 for k in model.state_dict() if k.endswith("num_batches_tracked"))


def test_tsn_pytorch_bn_inception_lands_everywhere(tmp_path):
    # tsn-pytorch's trained TSN: DataParallel around TSN(base_model=BNInception, new_fc).
    state = bn_inception_state(101, fc="new_fc", prefix="base_model.")
    ckpt = {"epoch": 80, "arch": "BNInception", "best_prec1": 85.0,
            "state_dict": {f"module.{k}": v for k, v in state.items()}}  # fmt: skip
    path = _save(tmp_path, "ucf101_bninception_rgb_checkpoint.pth.tar", ckpt)
    model = B.BNInception(num_classes=101).eval()
    report = B.load_weights(model, path)
    assert report["scheme"] == "tsn"
    assert report["missing"] == [] and report["unexpected"] == [] and report["skipped"] == []
    assert len(report["matched"]) == len(state) == len(model.state_dict()) - _bn_count(model)
    # 4e: 3x3_reduce, 3x3, double_3x3_reduce, double_3x3_1, double_3x3_2 (conv 2 + BN 4 each)
    assert report["layers"]["inception_4e"] == dict(matched=30, missing=0, unexpected=0, skipped=0)
    assert report["input_norm"] == model.input_norm == "caffe_bgr"
    bare = {k.removeprefix("base_model."): v for k, v in state.items()}
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(model(x), bn_inception_reference(bare, x, "new_fc"))


def test_tsn_imagenet_bn_inception_to_flow_with_cross_modality(tmp_path):
    # The ImageNet model TSN starts from (bn_inception-*.pth): bare Caffe names, 1000-class fc.
    state = bn_inception_state(1000)
    path = _save(tmp_path, "bn_inception.pth", state)
    model = B.BNInception(num_classes=101, in_channels=10)
    report = B.load_weights(model, path)
    assert report["missing"] == ["fc.weight", "fc.bias"]  # a new classifier: expected
    assert set(report["skipped"]) == {"fc.weight", "fc.bias"}
    assert report["adapted"] == ["conv1.0.weight"]
    mean = state["conv1_7x7_s2.weight"].mean(1, keepdim=True).expand(-1, 10, -1, -1)
    torch.testing.assert_close(model.conv1[0].weight, mean)
    torch.testing.assert_close(model.inception_5b.pool[1][1].running_var,
                               state["inception_5b_pool_proj_bn.running_var"])  # fmt: skip


def test_mmaction2_bn_inception_lands_everywhere(tmp_path):
    # mmaction2's Recognizer2D: backbone=BNInception (the Caffe names), cls_head=TSNHead.
    state = bn_inception_state(51, fc="cls_head.fc_cls")
    keyed = {(k if k.startswith("cls_head") else f"backbone.{k}"): v for k, v in state.items()}
    path = _save(tmp_path, "tsn_bninception_hmdb51.pth", {"meta": {}, "state_dict": keyed})
    model = B.BNInception(num_classes=51).eval()
    report = B.load_weights(model, path)
    assert report["scheme"] == "mmaction" and report["input_norm"] == "caffe_bgr"
    assert report["missing"] == [] and report["unexpected"] == [] and report["skipped"] == []
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(model(x), bn_inception_reference(state, x, "cls_head.fc_cls"))


def test_mmaction2_resnet_convmodule_names(tmp_path):
    # mmaction2's ResNet wraps every conv + norm in a ConvModule (conv1.conv, conv1.bn ...).
    src = B.resnet18(num_classes=7)
    for p in src.parameters():
        torch.nn.init.normal_(p)

    def mm(k):
        k = k.replace("downsample.0.", "downsample.conv.").replace(
            "downsample.1.", "downsample.bn."
        )
        if k.startswith("fc."):
            return "cls_head.fc_cls." + k[3:]
        if k.startswith(("conv1.", "bn1.")):
            return "backbone." + ("conv1.conv." if k[0] == "c" else "conv1.bn.") + k.split(".")[1]
        for i in (1, 2):
            k = k.replace(f".conv{i}.", f".conv{i}.conv.").replace(f".bn{i}.", f".conv{i}.bn.")
        return "backbone." + k

    keyed = {mm(k): v for k, v in src.state_dict().items()}
    assert "backbone.layer2.0.downsample.conv.weight" in keyed
    assert "backbone.layer1.1.conv2.bn.running_mean" in keyed
    path = _save(tmp_path, "tsn_r18.pth", {"state_dict": keyed})
    model = B.resnet18(num_classes=7)
    report = B.load_weights(model, path, strict=True)
    assert report["scheme"] == "mmaction" and report["missing"] == []
    for k, v in src.state_dict().items():
        torch.testing.assert_close(model.state_dict()[k], v, msg=k)


def mars_resnext101_state(in_channels: int, num_classes: int) -> dict:
    """MARS's ``resnext.resnet101`` keys and shapes (cardinality 32, shortcut B), DataParallel."""
    g = torch.Generator().manual_seed(1)
    state = {}

    def conv(name, *shape):
        state[f"module.{name}.weight"] = torch.randn(*shape, generator=g) * 0.01

    def bn(name, c):
        for p, v in (("weight", 1.0), ("bias", 0.0), ("running_mean", 0.0), ("running_var", 1.0)):
            state[f"module.{name}.{p}"] = v + 0.1 * torch.rand(c, generator=g)

    conv("conv1", 64, in_channels, 7, 7, 7)
    bn("bn1", 64)
    inplanes = 64
    for i, (planes, blocks) in enumerate(zip((128, 256, 512, 1024), (3, 4, 23, 3), strict=True), 1):
        mid = 32 * (planes // 32)
        for j in range(blocks):
            p = f"layer{i}.{j}"
            conv(f"{p}.conv1", mid, inplanes, 1, 1, 1)
            bn(f"{p}.bn1", mid)
            conv(f"{p}.conv2", mid, mid // 32, 3, 3, 3)
            bn(f"{p}.bn2", mid)
            conv(f"{p}.conv3", 2 * planes, mid, 1, 1, 1)
            bn(f"{p}.bn3", 2 * planes)
            if j == 0:
                conv(f"{p}.downsample.0", 2 * planes, inplanes, 1, 1, 1)
                bn(f"{p}.downsample.1", 2 * planes)
            inplanes = 2 * planes
    state["module.fc.weight"] = torch.randn(num_classes, 2048, generator=g) * 0.01
    state["module.fc.bias"] = torch.zeros(num_classes)
    return state


def test_mars_resnext101_flow_checkpoint_loads_with_no_missing_key(tmp_path):
    state = mars_resnext101_state(2, 400)  # MARS's Kinetics flow model (Flow_Kinetics_16f)
    path = _save(tmp_path, "Flow_Kinetics_16f.pth", {"arch": "resnext-101", "state_dict": state})
    model = B.resnext3d101(num_classes=400, in_channels=2)
    report = B.load_weights(model, path, strict=True)
    assert report["scheme"] == "mars" and report["input_norm"] == "activitynet"
    assert report["missing"] == [] and report["unexpected"] == [] and report["skipped"] == []
    assert report["layers"]["layer3"]["matched"] == 23 * 15 + 5
    own = model.state_dict()
    for k, v in state.items():
        assert torch.equal(own[k.removeprefix("module.")], v), k
    del own, state


def test_resnext3d_forward_and_levels():
    m = B.resnext3d(101, width=0.25, cardinality=8, num_classes=5).eval()
    assert m.layer3[22].conv2.groups == 8  # 23 blocks in stage 3
    shapes = {}
    for n in ("layer1", "layer2", "layer3", "layer4"):
        getattr(m, n).register_forward_hook(lambda mod, i, o, n=n: shapes.__setitem__(n, o.shape))
    with torch.no_grad():
        assert m(torch.randn(1, 3, 8, 32, 32)).shape == (1, 5)
    assert [s[1] for s in shapes.values()] == [64, 128, 256, 512]  # 2 x planes, width 0.25
    with pytest.raises(ValueError, match="depth must be one of"):
        B.resnext3d(34)
    with pytest.raises(ValueError, match="planes // 32"):
        B.resnext3d(50, width=0.1)


# ---- Caffe: .caffemodel (protobuf wire format) and pycaffe dicts ----


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(num: int, payload: bytes) -> bytes:
    return _varint(num << 3 | 2) + _varint(len(payload)) + payload


def _blob(a: np.ndarray, legacy: bool = False) -> bytes:
    data = _field(5, a.astype("<f4").tobytes())
    if legacy:  # V1: num, channels, height, width as varints
        dims = (1,) * (4 - a.ndim) + a.shape
        return b"".join(_varint(i << 3) + _varint(d) for i, d in enumerate(dims, 1)) + data
    return _field(7, _field(1, b"".join(_varint(d) for d in a.shape))) + data


def _layer(name: str, blobs, v1: bool = False) -> bytes:
    if v1:  # V1LayerParameter: name 4, blobs 6; NetParameter.layers is field 2
        body = _field(4, name.encode()) + b"".join(_field(6, _blob(b, True)) for b in blobs)
        return _field(2, body)
    body = _field(1, name.encode()) + _field(2, b"Convolution")
    return _field(100, body + b"".join(_field(7, _blob(b)) for b in blobs))


def clarifai_caffe_layers(width: float, in_channels: int, classes: int) -> dict:
    """CNN-M-2048's learned Caffe layers (Caffe's out, in, kh, kw) with PReLU slopes."""
    rng = np.random.default_rng(2)
    c1, c2, c3, f6, f7 = (round(c * width) for c in (96, 256, 512, 4096, 2048))
    shapes = {
        "conv1": (c1, in_channels, 7, 7),
        "conv2": (c2, c1, 5, 5),
        "conv3": (c3, c2, 3, 3),
        "conv4": (c3, c3, 3, 3),
        "conv5": (c3, c3, 3, 3),
        "fc6": (f6, c3 * 36),
        "fc7": (f7, f6),
        "fc8": (classes, f7),
    }
    layers = {
        k: [
            rng.standard_normal(s).astype(np.float32) * 0.01,
            rng.standard_normal(s[0]).astype("f4"),
        ]
        for k, s in shapes.items()
    }
    for i, c in enumerate((c1, c2, c3, c3, c3, f6, f7), 1):
        layers[f"relu{i}"] = [rng.uniform(0, 0.5, c).astype(np.float32)]
    return layers


def _check_clarifai(model, layers):
    own = model.state_dict()
    for i in range(1, 6):
        assert np.array_equal(own[f"conv{i}.0.weight"].numpy(), layers[f"conv{i}"][0])
        assert np.array_equal(own[f"conv{i}.0.bias"].numpy(), layers[f"conv{i}"][1])
        assert np.array_equal(own[f"conv{i}.1.weight"].numpy(), layers[f"relu{i}"][0])
    for fc, ours in (("fc6", "fc6.0"), ("fc7", "fc7.0"), ("fc8", "fc8")):
        assert np.array_equal(own[f"{ours}.weight"].numpy(), layers[fc][0])
        assert np.array_equal(own[f"{ours}.bias"].numpy(), layers[fc][1])
    assert np.array_equal(own["fc7.1.weight"].numpy(), layers["relu7"][0])


def test_clarifai_from_a_caffemodel(tmp_path):
    layers = clarifai_caffe_layers(0.25, 20, 101)
    net = b"".join(_layer(k, v, v1=k == "fc7") for k, v in layers.items())  # fc7: legacy V1
    net = _field(1, b"ClarifaiNet") + _layer("pool1", []) + net
    path = tmp_path / "mv_cnn_temporal.caffemodel"
    path.write_bytes(net)
    model = B.ClarifaiNet(num_classes=101, in_channels=20, width=0.25)
    report = B.load_weights(model, path, strict=True)
    assert report["scheme"] == "caffe" and report["input_norm"] == "caffe_bgr"
    assert report["missing"] == [] and report["unexpected"] == []
    assert len(report["matched"]) == len(model.state_dict()) == 16 + 7
    _check_clarifai(model, layers)


def test_clarifai_from_a_pycaffe_npy_dict(tmp_path):
    layers = clarifai_caffe_layers(0.25, 3, 101)
    layers["data_mean"] = [np.zeros(3, np.float32)]  # a stray layer: reported, not loaded
    path = tmp_path / "spatial.npy"
    np.save(path, layers, allow_pickle=True)
    model = B.ClarifaiNet(num_classes=101, in_channels=3, prelu=True, width=0.25)
    report = B.load_weights(model, path)
    assert report["missing"] == [] and report["unexpected"] == ["data_mean.weight"]
    assert report["layers"]["conv3"] == {"matched": 3, "missing": 0, "unexpected": 0,
                                         "skipped": 0}  # fmt: skip
    _check_clarifai(model, layers)


def test_full_size_clarifai_and_bn_inception_shapes_are_the_caffe_ones():
    with torch.device("meta"):
        clarifai = B.ClarifaiNet(num_classes=101, in_channels=20)
    layers = {"conv1": (96, 20, 7, 7), "conv2": (256, 96, 5, 5), "conv5": (512, 512, 3, 3),
              "fc6": (4096, 18432), "fc7": (2048, 4096)}  # fmt: skip
    own = clarifai.state_dict()
    for k, shape in layers.items():
        ours = f"{k}.0.weight"
        assert tuple(own[ours].shape) == shape, k
    bn = B.BNInception(num_classes=0).state_dict()
    names = B.bninception.layer_names()
    for caffe, (cout, cin, k) in bn_inception_convs().items():
        assert tuple(bn[f"{names[caffe]}.weight"].shape) == (cout, cin, k, k), caffe


def test_tsn_caffemodel_of_bn_inception(tmp_path):
    # TSN's own release: Caffe names with "/", its BN layers (scale, shift, mean, variance as
    # (1, C, 1, 1) blobs), the classifier "fc-action".
    state = bn_inception_state(101, fc="fc-action")
    net = b""
    for name in bn_inception_convs():
        caffe = name.replace("_", "/", 1) if name.startswith(("conv", "inception")) else name
        if name.startswith("inception"):
            caffe = name[:12] + "/" + name[13:]  # inception_3a/1x1
        w, b = (state[f"{name}.{p}"].numpy() for p in ("weight", "bias"))
        net += _layer(caffe, [w, b])
        bn = [state[f"{name}_bn.{p}"].numpy().reshape(1, -1, 1, 1)
              for p in ("weight", "bias", "running_mean", "running_var")]  # fmt: skip
        net += _layer(f"{caffe}_bn", bn)
    net += _layer("fc-action", [state["fc-action.weight"].numpy(), state["fc-action.bias"].numpy()])
    path = tmp_path / "ucf101_split1_tsn_rgb_bn_inception.caffemodel"
    path.write_bytes(net)
    model = B.BNInception(num_classes=101).eval()
    report = B.load_weights(model, path, strict=True)
    assert report["scheme"] == "caffe" and report["input_norm"] == "caffe_bgr"
    assert report["missing"] == [] and report["unexpected"] == []
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(model(x), bn_inception_reference(state, x, "fc-action"))


def test_fit_refuses_rgb_normalised_otherwise_than_the_weights(tmp_path):
    from types import SimpleNamespace
    from unittest import mock

    from mvaccel.train import ActionClassifier

    path = _save(tmp_path, "bn_inception.pth", bn_inception_state(1000))
    model = ActionClassifier(backbone="bninception", num_classes=4, pretrained=str(path))
    assert model.net.input_norm == "caffe_bgr"

    def fit_start(rgb_norm, modalities=("rgb",)):
        dm = SimpleNamespace(modalities=list(modalities), val_modalities=list(modalities),
                             hparams={"rgb_norm": rgb_norm})  # fmt: skip
        trainer = SimpleNamespace(datamodule=dm)
        with mock.patch.object(type(model), "trainer", new_callable=mock.PropertyMock,
                               return_value=trainer):  # fmt: skip
            model.on_fit_start()

    fit_start("caffe_bgr")
    fit_start("imagenet", modalities=("flow",))  # the network reads no RGB
    with pytest.raises(ValueError, match="expect RGB normalised as 'caffe_bgr'.*--data.rgb_norm"):
        fit_start("imagenet")


def test_bad_weight_files(tmp_path):
    model = B.ClarifaiNet(num_classes=5, in_channels=3, width=0.25)
    bad = tmp_path / "broken.caffemodel"
    bad.write_bytes(_field(100, b"\x0a\xff\xff"))  # a name longer than the file
    with pytest.raises(ValueError, match=r"broken.caffemodel: not a readable .caffemodel"):
        B.load_weights(model, bad)
    empty = tmp_path / "empty.caffemodel"
    empty.write_bytes(_field(1, b"net"))
    with pytest.raises(ValueError, match="no Caffe layer with learned blobs"):
        B.load_weights(model, empty)
    arr = tmp_path / "arr.npy"
    np.save(arr, np.zeros(3))
    with pytest.raises(ValueError, match="expected a pickled dict layer"):
        B.load_weights(model, arr)
    with pytest.raises(ValueError, match="weights scheme must be one of"):
        B.load_weights(model, _save(tmp_path, "x.pth", {"conv1.0.weight": torch.zeros(1)}),
                       scheme="caffe2")  # fmt: skip
    mars = _save(
        tmp_path, "mars.pth", {"arch": "resnext-101", "state_dict": {"fc.w": torch.ones(1)}}
    )
    with pytest.raises(
        ValueError, match="none of its 1 tensors belongs to ResNet3d as scheme 'mars'"
    ):
        B.load_weights(B.resnext3d(50, width=0.25), mars)


def test_float_blobs_without_packing_are_read(tmp_path):
    # Old writers emit repeated floats one by one (wire type 5): the same values must come back.
    vals = np.array([1.5, -2.0], np.float32)
    blob = _field(7, _field(1, _varint(2))) + b"".join(
        _varint(5 << 3 | 5) + struct.pack("<f", v) for v in vals
    )
    path = tmp_path / "tiny.caffemodel"
    path.write_bytes(_field(100, _field(1, b"fc8") + _field(7, blob)))
    assert np.array_equal(B.read_caffemodel(path)["fc8"][0], vals)


# ---- the RGB input conventions ----


def test_rgb_conventions():
    x = torch.tensor([200.0, 100.0, 50.0, 10.0, 20.0, 30.0]).view(6, 1, 1).expand(6, 2, 3)
    caffe = tf.normalize_rgb(x, "caffe_bgr")
    # BGR order, 0-255, minus TSN's [104, 117, 128]: frame 1 (R 200, G 100, B 50)
    assert caffe[:3, 0, 0].tolist() == [50 - 104, 100 - 117, 200 - 128]
    assert caffe[3:, 0, 0].tolist() == [30 - 104, 20 - 117, 10 - 128]
    imagenet = tf.normalize_rgb(x, "imagenet")
    assert imagenet[0, 0, 0].item() == pytest.approx((200 / 255 - 0.485) / 0.229)
    anet = tf.normalize_rgb(x, "activitynet")
    assert anet[2, 0, 0].item() == pytest.approx(50 - 99.4750)
    for conv, y in (("caffe_bgr", caffe), ("imagenet", imagenet), ("activitynet", anet)):
        torch.testing.assert_close(tf.denormalize_rgb(y, conv), x / 255)
    with pytest.raises(ValueError, match="RGB normalisation must be one of"):
        tf.normalize_rgb(x, "bgr")
    with pytest.raises(ValueError, match=r"expected RGB stacks \(..., 3K, H, W\)"):
        tf.normalize_rgb(x[:4], "imagenet")
