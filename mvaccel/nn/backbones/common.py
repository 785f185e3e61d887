"""What every backbone shares: input-channel adaptation and loading weights from a local file."""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from torch import nn


def residual_stages(block, layers, conv, norm, base: int = 64) -> list[nn.Sequential]:
    """ResNet's four stages for 2D or 3D blocks: ``base`` x 1, 2, 4, 8 planes, strides 1, 2, 2, 2.

    ``block(inplanes, planes, stride, downsample)`` with an ``expansion`` attribute; ``conv`` and
    ``norm`` are ``nn.Conv2d``/``nn.BatchNorm2d`` or their 3D twins (the 1x1 shortcut, type B).
    Module names inside match torchvision's and Hara et al.'s (``0.downsample.0`` ...).
    """
    inplanes, stages = base, []
    widths = (base, 2 * base, 4 * base, 8 * base)
    for planes, blocks, stride in zip(widths, layers, (1, 2, 2, 2), strict=True):
        out = planes * block.expansion
        down = None
        if stride != 1 or inplanes != out:
            down = nn.Sequential(conv(inplanes, out, 1, stride, bias=False), norm(out))
        mods = [block(inplanes, planes, stride, down)]
        mods += [block(out, planes) for _ in range(1, blocks)]
        stages.append(nn.Sequential(*mods))
        inplanes = out
    return stages


def first_conv(model: nn.Module) -> tuple[str, nn.Module]:
    """The model's first convolution (the one that sees the input), by module order."""
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d | nn.Conv3d):
            return name, m
    raise ValueError(f"{type(model).__name__} has no convolution")


def cross_modality_weight(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """TSN's cross-modality initialisation of a first-layer kernel for ``in_channels`` inputs.

    The kernel's mean over its input channels (an RGB filter's average response) is replicated
    to every new input channel: a network pre-trained on RGB starts on optical flow, motion
    vectors (2K channels) or a residual with filters of the right spatial shape.
    """
    mean = weight.mean(dim=1, keepdim=True)
    return mean.expand(-1, in_channels, *weight.shape[2:]).contiguous()


def set_in_channels(model: nn.Module, in_channels: int) -> nn.Module:
    """Change the first convolution to take ``in_channels`` inputs (cross-modality weights)."""
    name, conv = first_conv(model)
    if conv.in_channels == in_channels:
        return model
    cls = type(conv)
    new = cls(
        in_channels,
        conv.out_channels,
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=1,
        bias=conv.bias is not None,
    )
    with torch.no_grad():
        new.weight.copy_(cross_modality_weight(conv.weight, in_channels))
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
    setattr(parent, name.rpartition(".")[2], new)
    return model


def load_weights(model: nn.Module, path: str | Path, strict: bool = False) -> dict[str, list]:
    """Load a local checkpoint into ``model``; nothing is ever downloaded.

    Accepts a plain state dict or a checkpoint holding one under ``state_dict`` / ``model``
    (a Lightning checkpoint of :mod:`mvaccel.train`: the ``net.`` weights, i.e. the trained
    network and never a teacher), strips DataParallel's ``module.`` prefix, adapts a first-layer
    kernel with a different input-channel count (cross-modality,
    :func:`cross_modality_weight`), and skips tensors whose shapes differ (a classifier for
    another number of classes) unless ``strict``.

    Returns:
        ``{"missing": [...], "unexpected": [...], "skipped": [...], "adapted": [...]}``.

    Raises:
        FileNotFoundError: no file at ``path``.
        RuntimeError: ``strict`` and the keys or shapes do not match.
        ValueError: not a state dict, or none of its tensors belongs to ``model``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # Lightning checkpoints may pickle hyper-parameter objects
        state = torch.load(path, map_location="cpu", weights_only=False)
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: holds no state dict")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    own = model.state_dict()
    if not any(k in own for k in state) and any(k.startswith("net.") for k in state):
        state = {k[4:]: v for k, v in state.items() if k.startswith("net.")}  # Lightning
    if not any(k in own for k in state):
        raise ValueError(
            f"{path}: none of its {len(state)} tensors belongs to {type(model).__name__} "
            f"(its keys start {sorted(state)[:3]}, the model's {sorted(own)[:3]})"
        )
    conv_name, conv = first_conv(model)
    report: dict[str, list] = {"skipped": [], "adapted": []}
    filtered = {}
    for k, v in state.items():
        if k in own and own[k].shape != v.shape:
            if k == f"{conv_name}.weight" and v.shape[2:] == own[k].shape[2:]:
                filtered[k] = cross_modality_weight(v, conv.in_channels)
                report["adapted"].append(k)
                continue
            if strict:
                raise RuntimeError(
                    f"{path}: {k} has shape {tuple(v.shape)}, model has {tuple(own[k].shape)}"
                )
            report["skipped"].append(k)
            continue
        filtered[k] = v
    result = model.load_state_dict(filtered, strict=strict)
    report["missing"] = list(result.missing_keys)
    report["unexpected"] = list(result.unexpected_keys)
    return report
