"""What every backbone shares: residual stages and input-channel adaptation."""

from __future__ import annotations

import torch
from torch import nn


def residual_stages(
    block, layers, conv, norm, base: int = 64, inplanes: int | None = None
) -> list[nn.Sequential]:
    """ResNet's four stages for 2D or 3D blocks: ``base`` x 1, 2, 4, 8 planes, strides 1, 2, 2, 2.

    ``block(inplanes, planes, stride, downsample)`` with an ``expansion`` attribute; ``conv`` and
    ``norm`` are ``nn.Conv2d``/``nn.BatchNorm2d`` or their 3D twins (the 1x1 shortcut, type B).
    Module names inside match torchvision's and Hara et al.'s (``0.downsample.0`` ...).
    ``inplanes``: channels of the stem (default ``base``; ResNeXt: 64 into 128-plane stages).
    """
    inplanes, stages = (base if inplanes is None else inplanes), []
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
