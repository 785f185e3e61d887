"""Pre-trained weights from the files researchers have, in the public naming schemes.

:func:`load_weights` reads a local file (nothing is downloaded), recognises its naming scheme,
renames its tensors to mvaccel's module names and loads them, reporting per layer what matched.

Schemes (:data:`SCHEMES`):

- ``"mvaccel"``: mvaccel's own names, which are torchvision's for the 2D ResNets and Hara et
  al.'s for the 3D ResNets; also Lightning checkpoints of :mod:`mvaccel.train` (``net.*``).
- ``"tsn"``: tsn-pytorch (``base_model.conv1_7x7_s2.weight``, ``new_fc.weight``) and the
  BN-Inception it starts from (``conv1_7x7_s2``, ``inception_3a_1x1_bn`` ..., ``fc``; Cadene's
  ``pretrainedmodels`` port has ``last_linear``): :func:`.bninception.layer_names`.
- ``"mmaction"``: mmaction / mmaction2 recognisers (``backbone.*``, ``cls_head.fc_cls.*``):
  their ``BNInception`` keeps the Caffe layer names above; their ResNets wrap each conv and its
  norm in a ``ConvModule`` (``backbone.layer1.0.conv1.conv.weight``, ``.conv1.bn.*``,
  ``.downsample.conv`` / ``.downsample.bn``, the stem ``conv1.conv`` / ``conv1.bn``).
- ``"mars"``: MARS and Hara et al.'s 3D-ResNets checkpoints (``{"arch", "state_dict":
  {"module.conv1.weight", "module.layer1.0.conv1.weight", ...}}``): mvaccel's names once
  DataParallel's ``module.`` is stripped; their RGB models expect :data:`RGB_NORMS`'
  ``"activitynet"`` input.
- ``"caffe"``: Caffe layers by name, ``layer -> [weight, bias]`` (or ``{"weights", "biases"}``),
  from a ``.caffemodel`` (read here with a small protobuf wire-format reader, no Caffe needed),
  or from the ``.npy`` / ``.pth`` dicts people save with pycaffe
  (``{k: [b.data for b in v] for k, v in net.params.items()}``): ClarifaiNet (CNN-M-2048)
  ``conv1`` ... ``conv5``, ``fc6``, ``fc7``, ``fc8`` and PReLU slopes ``relu1`` ... ``relu7``
  (or ``prelu1`` ...), and BN-Inception by its layer names (``conv1/7x7_s2`` or
  ``conv1_7x7_s2``; TSN's ``BN`` layers: scale, shift, mean, variance). Blobs keep Caffe's layout
  (``out, in, kh, kw``; legacy 4D inner-product blobs are reshaped). caffe-tensorflow's
  ``.npy`` (TensorFlow layout, ``h, w, in, out``) is not this layout and is refused by shape.

Caffe-trained weights (TSN's BN-Inception, the two-stream / DTMV-CNN ClarifaiNets) were
trained on BGR 0-255 images minus the mean: loading them sets the backbone's ``input_norm`` to
``"caffe_bgr"``, which the data module's ``rgb_norm`` must match (checked when training starts).
"""

from __future__ import annotations

import logging
import pickle
import re
import struct
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from .bninception import BNInception, layer_names
from .clarifai import ClarifaiNet
from .common import cross_modality_weight, first_conv

log = logging.getLogger(__name__)

SCHEMES = ("auto", "mvaccel", "tsn", "mmaction", "mars", "caffe")
#: the RGB input convention each scheme's weights were trained with, where it is fixed.
SCHEME_INPUT_NORMS = {"tsn": "caffe_bgr", "mars": "activitynet", "caffe": "caffe_bgr"}
#: parameter names of a Caffe layer's blobs, in order: a conv / inner product (weight, bias); a
#: PReLU (slope); TSN's ``BN`` layer (scale, shift, history mean, history variance).
CAFFE_BLOBS = ("weight", "bias", "running_mean", "running_var")


# ---- reading files ----


def _varint(buf, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, i
        shift += 7


def _fields(buf):
    """``(field number, wire type, value)`` of a protobuf message (wire format)."""
    i, n = 0, len(buf)
    while i < n:
        key, i = _varint(buf, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 1:
            value, i = buf[i : i + 8], i + 8
        elif wire == 2:
            size, i = _varint(buf, i)
            value, i = buf[i : i + size], i + size
        elif wire == 5:
            value, i = buf[i : i + 4], i + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        if i > n:
            raise ValueError("truncated protobuf message")
        yield field, wire, value


def _blob(buf) -> np.ndarray:
    """A Caffe ``BlobProto``: ``data`` (5, float) or ``double_data`` (8) in ``shape`` (7)."""
    legacy = {1: 1, 2: 1, 3: 1, 4: 1}
    shape: list[int] = []
    floats: list[np.ndarray] = []
    for field, wire, value in _fields(buf):
        if field in legacy and wire == 0:
            legacy[field] = value
        elif field == 7:  # BlobShape { repeated int64 dim = 1 [packed] }
            for f, w, v in _fields(value):
                if f == 1 and w == 0:
                    shape.append(v)
                elif f == 1 and w == 2:
                    j = 0
                    while j < len(v):
                        d, j = _varint(v, j)
                        shape.append(d)
        elif field == 5:
            fmt = "<f4"
            floats.append(np.frombuffer(bytes(value), fmt) if wire == 2 else
                          np.array(struct.unpack("<f", bytes(value)), fmt))  # fmt: skip
        elif field == 8:
            fmt = "<f8"
            floats.append(np.frombuffer(bytes(value), fmt) if wire == 2 else
                          np.array(struct.unpack("<d", bytes(value)), fmt))  # fmt: skip
    data = np.concatenate(floats) if floats else np.zeros(0, np.float32)
    if not shape:
        shape = [legacy[1], legacy[2], legacy[3], legacy[4]]
    if int(np.prod(shape)) != data.size:
        raise ValueError(f"Caffe blob of shape {shape} holds {data.size} values")
    return data.astype(np.float32).reshape(shape)


def read_caffemodel(path: str | Path) -> dict[str, list[np.ndarray]]:
    """The learned blobs of a binary ``.caffemodel``: ``{layer name: [blob, ...]}``.

    Reads ``NetParameter.layer`` (field 100, ``LayerParameter``: name 1, blobs 7) and the
    legacy ``layers`` (field 2, ``V1LayerParameter``: name 4, blobs 6); layers without blobs
    (pooling, ReLU, LRN ...) are left out. Blobs keep Caffe's layout (``out, in, kh, kw``).

    Raises:
        ValueError: the file is not a Caffe ``NetParameter`` with learned layers.
    """
    path = Path(path)
    buf = memoryview(path.read_bytes())
    out: dict[str, list[np.ndarray]] = {}
    try:
        for field, wire, value in _fields(buf):
            if wire != 2 or field not in (2, 100):
                continue
            name_f, blob_f = (1, 7) if field == 100 else (4, 6)
            name, blobs = None, []
            for f, w, v in _fields(value):
                if f == name_f and w == 2:
                    name = bytes(v).decode("utf-8", "replace")
                elif f == blob_f and w == 2:
                    blobs.append(_blob(v))
            if name and blobs:
                out[name] = blobs
    except (IndexError, ValueError) as e:
        raise ValueError(f"{path}: not a readable .caffemodel ({e})") from e
    if not out:
        raise ValueError(f"{path}: no Caffe layer with learned blobs in this file")
    return out


def _tensor(v) -> Tensor:
    return v if isinstance(v, Tensor) else torch.from_numpy(np.ascontiguousarray(v, np.float32))


def _caffe_dict(d: dict) -> dict[str, Tensor] | None:
    """``{layer: [w, b]}`` / ``{layer: {"weights", "biases"}}`` -> ``layer.weight/bias``."""
    if not d or not all(isinstance(v, list | tuple | dict) for v in d.values()):
        return None
    out = {}
    for layer, blobs in d.items():
        if isinstance(blobs, dict):
            blobs = [blobs[k] for k in ("weights", "biases", "0", "1", 0, 1) if k in blobs]
        for blob, param in zip(blobs, CAFFE_BLOBS, strict=False):
            out[f"{layer}.{param}"] = _tensor(blob)
    return out


def read_state(path: str | Path) -> tuple[dict[str, Tensor], str | None, str | None]:
    """The tensors of a weights file, the scheme and the RGB convention its container tells.

    The scheme hint is ``"caffe"`` for Caffe files, ``"mars"`` for checkpoints with an ``arch``
    (MARS, 3D-ResNets; tsn-pytorch's too, recognised by their names), else None; the RGB
    convention hint is the ``rgb_norm`` a Lightning checkpoint of :mod:`mvaccel.train` was
    trained with (its data module's), else None.

    ``.caffemodel``: :func:`read_caffemodel`; ``.npy`` / ``.npz``: a pickled dict of Caffe
    layers (``np.save`` of a dict; loaded with ``allow_pickle``, so only open files you trust);
    anything else: ``torch.load`` (a state dict, or a checkpoint holding one under
    ``state_dict`` / ``model``; MARS / 3D-ResNets checkpoints carry ``arch``).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: no state dict in the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    if path.suffix == ".caffemodel":
        return {f"{k}.{p}": _tensor(b) for k, v in read_caffemodel(path).items()
                for b, p in zip(v, CAFFE_BLOBS, strict=False)}, "caffe", None  # fmt: skip
    if path.suffix in (".npy", ".npz"):
        raw = np.load(path, allow_pickle=True, encoding="latin1")
        if isinstance(raw, np.ndarray) and raw.dtype == object and raw.shape == ():
            raw = raw.item()
        elif hasattr(raw, "files"):
            raw = {k: raw[k] for k in raw.files}
        state = _caffe_dict(raw) if isinstance(raw, dict) else None
        if state is None:
            raise ValueError(
                f"{path}: expected a pickled dict layer -> [weight, bias] (Caffe layers saved "
                "with pycaffe), got " + type(raw).__name__
            )
        return state, "caffe", None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # Lightning checkpoints may pickle hyper-parameter objects
        state = torch.load(path, map_location="cpu", weights_only=False)
    # MARS and 3D-ResNets save {"arch", "state_dict"} (tsn-pytorch too, with its own names)
    told = "mars" if isinstance(state, dict) and "arch" in state else None
    dm = state.get("datamodule_hyper_parameters") if isinstance(state, dict) else None
    norm = dm.get("rgb_norm", "imagenet") if isinstance(dm, dict) else None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if isinstance(state, dict) and (caffe := _caffe_dict(state)) is not None:
        return caffe, "caffe", None
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"{path}: holds no state dict")
    return dict(state), told, norm


# ---- renaming ----

_PREFIXES = ("module.", "base_model.", "backbone.")
_HEADS = {"new_fc.": "fc.", "cls_head.fc_cls.": "fc.", "last_linear.": "fc.", "fc-action.": "fc."}
_MM_RESNET = [
    (re.compile(r"^conv1\.conv\."), "conv1."),
    (re.compile(r"^conv1\.bn\."), "bn1."),
    (re.compile(r"\.conv(\d)\.conv\."), r".conv\1."),
    (re.compile(r"\.conv(\d)\.bn\."), r".bn\1."),
    (re.compile(r"\.downsample\.conv\."), ".downsample.0."),
    (re.compile(r"\.downsample\.bn\."), ".downsample.1."),
]


def _strip(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for p in _PREFIXES:
            if key.startswith(p):
                key, changed = key[len(p) :], True
    for old, new in _HEADS.items():
        if key.startswith(old):
            return new + key[len(old) :]
    return key


def _by_layer_name(state: dict[str, Tensor], names: dict[str, str]) -> dict[str, Tensor]:
    out = {}
    for k, v in state.items():
        layer, _, param = k.rpartition(".")
        layer = layer.replace("/", "_")  # Caffe's own names: conv1/7x7_s2, inception_3a/1x1
        out[f"{names[layer]}.{param}" if layer in names else k] = v
    return out


def _clarifai_names(model: nn.Module) -> dict[str, str]:
    names = {f"conv{i}": f"conv{i}.0" for i in range(1, 6)}
    names.update(fc6="fc6.0", fc7="fc7.0", fc8="fc8")
    acts = {i: f"conv{i}.1" for i in range(1, 6)} | {6: "fc6.1", 7: "fc7.1"}
    for i, ours in acts.items():
        names[f"relu{i}"] = names[f"prelu{i}"] = ours
    return names


def detect_scheme(keys, model: nn.Module) -> str:
    """The naming scheme of state-dict ``keys`` for ``model`` (see :data:`SCHEMES`)."""
    keys = list(keys)
    if any(k.startswith(("backbone.", "module.backbone.", "cls_head.")) for k in keys):
        return "mmaction"
    bare = {_strip(k).rpartition(".")[0] for k in keys}
    if "conv1/7x7_s2" in bare:  # the layer names of TSN's own .caffemodel
        return "caffe"
    if "conv1_7x7_s2" in bare:
        return "tsn"
    if isinstance(model, ClarifaiNet) and "conv1" in bare and "conv1.0" not in bare:
        return "caffe"
    return "mvaccel"


def convert_state_dict(
    state: dict[str, Tensor], model: nn.Module, scheme: str = "auto"
) -> tuple[dict[str, Tensor], str]:
    """Rename ``state``'s keys from ``scheme`` to ``model``'s module names.

    Args:
        state: tensors by the file's names.
        model: the backbone they are for (the BN-Inception and ClarifaiNet maps depend on it).
        scheme: one of :data:`SCHEMES` (``"auto"``: :func:`detect_scheme`).

    Returns:
        The renamed state dict and the scheme used.
    """
    if scheme not in SCHEMES:
        raise ValueError(f"weights scheme must be one of {SCHEMES}, got {scheme!r}")
    if scheme == "auto":
        scheme = detect_scheme(state, model)
    state = {_strip(k): v for k, v in state.items()}
    if scheme == "mmaction":
        if any(k.rpartition(".")[0] == "conv1_7x7_s2" for k in state):
            scheme_names = layer_names()
            state = _by_layer_name(state, scheme_names)
        else:
            renamed = {}
            for k, v in state.items():
                for pattern, repl in _MM_RESNET:
                    k = pattern.sub(repl, k)
                renamed[k] = v
            state = renamed
    elif scheme == "tsn" or (scheme == "caffe" and isinstance(model, BNInception)):
        state = _by_layer_name(state, layer_names())
    elif scheme == "caffe" and isinstance(model, ClarifaiNet):
        state = _by_layer_name(state, _clarifai_names(model))
    return state, scheme


# ---- loading ----


def _layer(key: str) -> str:
    return key.split(".", 1)[0]


def load_weights(
    model: nn.Module, path: str | Path, strict: bool = False, scheme: str = "auto"
) -> dict:
    """Load a local weights file into ``model``; nothing is ever downloaded.

    Reads the file (:func:`read_state`), renames its tensors from their scheme to ``model``'s
    names (:func:`convert_state_dict`: tsn-pytorch, mmaction(2), MARS / 3D-ResNets, Caffe, or
    mvaccel's own including Lightning checkpoints of :mod:`mvaccel.train`, whose ``net.``
    weights load, never a teacher's), strips DataParallel's ``module.``, adapts a first-layer
    kernel with another input-channel count (cross-modality, :func:`cross_modality_weight`),
    reshapes legacy Caffe inner-product blobs, and skips tensors whose shapes differ (a
    classifier for another number of classes) unless ``strict``. BatchNorm's
    ``num_batches_tracked`` counters, absent from older files, are not reported missing.
    Sets ``model.input_norm`` to the convention of the scheme's weights
    (:data:`SCHEME_INPUT_NORMS`; for a Lightning checkpoint of :mod:`mvaccel.train`, its data
    module's ``rgb_norm``) and logs the per-layer report.

    Args:
        model: the backbone to fill.
        path: the file (``.pth`` / ``.pt`` / ``.tar`` / ``.ckpt``, ``.caffemodel``,
            ``.npy`` / ``.npz``).
        strict: raise on any missing, unexpected or mis-shaped tensor.
        scheme: one of :data:`SCHEMES`; ``"auto"`` recognises it from the keys.

    Returns:
        ``{"scheme", "input_norm", "matched", "missing", "unexpected", "skipped", "adapted",
        "layers"}``: key lists, and ``layers`` maps each top-level module (``conv1``,
        ``inception_3a``, ``layer4``, ``fc`` ...) to its ``{"matched", "missing",
        "unexpected", "skipped"}`` counts.

    Raises:
        FileNotFoundError: no file at ``path``.
        RuntimeError: ``strict`` and the keys or shapes do not match.
        ValueError: not a weights file, an unknown scheme, or none of its tensors belongs to
            ``model``.
    """
    path = Path(path)
    state, told, trained_norm = read_state(path)
    if scheme == "auto":
        scheme = detect_scheme(state, model)
        if scheme == "mvaccel" and told is not None:  # MARS / 3D-ResNets: native names
            scheme = told
    own = model.state_dict()
    if scheme in ("auto", "mvaccel") and not any(_strip(k) in own for k in state):
        if any(k.startswith("net.") for k in state):  # a Lightning checkpoint of mvaccel.train
            state = {k[4:]: v for k, v in state.items() if k.startswith("net.")}
    state, scheme = convert_state_dict(state, model, scheme)
    if not any(k in own for k in state):
        raise ValueError(
            f"{path}: none of its {len(state)} tensors belongs to {type(model).__name__} "
            f"as scheme {scheme!r} (its keys start {sorted(state)[:3]}, the model's "
            f"{sorted(own)[:3]}); pass scheme= one of {SCHEMES[1:]}"
        )
    conv_name, conv = first_conv(model)
    report: dict = {"scheme": scheme, "skipped": [], "adapted": []}
    filtered = {}
    for k, v in state.items():
        if k in own and own[k].shape != v.shape:
            first = k == f"{conv_name}.weight" and v.dim() == own[k].dim()
            if first and v.shape[2:] == own[k].shape[2:]:
                filtered[k] = cross_modality_weight(v, conv.in_channels)
                report["adapted"].append(k)
                continue
            if scheme == "caffe" and v.numel() == own[k].numel():
                filtered[k] = v.reshape(own[k].shape)  # V1 blobs: (1, 1, out, in)
                continue
            if strict:
                raise RuntimeError(
                    f"{path}: {k} has shape {tuple(v.shape)}, model has {tuple(own[k].shape)}"
                )
            report["skipped"].append(k)
            continue
        filtered[k] = v
    result = model.load_state_dict(filtered, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    unexpected = list(result.unexpected_keys)
    if strict and (missing or unexpected):
        raise RuntimeError(
            f"{path}: missing keys {missing[:5]}..., unexpected keys {unexpected[:5]}..."
        )
    report["matched"] = [k for k in filtered if k in own]
    report["missing"], report["unexpected"] = missing, unexpected
    layers: dict[str, dict[str, int]] = defaultdict(
        lambda: {"matched": 0, "missing": 0, "unexpected": 0, "skipped": 0}
    )
    for what in ("matched", "missing", "unexpected", "skipped"):
        for k in report[what]:
            layers[_layer(k)][what] += 1
    report["layers"] = dict(layers)
    norm = SCHEME_INPUT_NORMS.get(scheme)
    if scheme == "mmaction" and isinstance(model, BNInception):
        norm = "caffe_bgr"  # mmaction's BN-Inception is TSN's Caffe model
    norm = norm or trained_norm  # a checkpoint of mvaccel.train: the data it was trained on
    if norm is not None:
        model.input_norm = norm
    report["input_norm"] = getattr(model, "input_norm", "imagenet")
    log.info(
        "%s (%s): %d matched, %d missing, %d unexpected, %d skipped; per layer %s",
        path, scheme, len(report["matched"]), len(missing), len(unexpected),
        len(report["skipped"]), report["layers"],
    )  # fmt: skip
    return report
