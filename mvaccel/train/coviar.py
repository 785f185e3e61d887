"""CoViAR's streams (Wu et al., CVPR 2018), the compressed-domain baselines of DMC-Net.

Three TSN-style classifiers, one per representation of an MPEG-4 stream with GOPs of 12 frames:
the I-frame of each sampled GOP (ResNet-152), the motion vectors accumulated back to the
I-frame (ResNet-18) and the accumulated residual (ResNet-18). Their scores are fused with
weights I 2 : MV 1 : R 1 (``mvaccel fuse i.npz mv.npz r.npz --weights 2 1 1 --logits``; DMC-Net
adds its own stream with weight 1).

What the authors' code (``chaoyuaw/pytorch-coviar``, ``train.py`` / ``model.py``) fixes and
this module reproduces:

- a BatchNorm over the input channels (``data_bn``) before the network for MV and residual;
- Adam (``eps = 1e-3``) with per-layer learning-rate multipliers: the classifier layer x1, the
  first convolution, its BatchNorm and ``data_bn`` x0.1 for MV / residual, every other layer
  x0.01 (ImageNet-initialised backbones are fine-tuned slowly); no weight decay on biases;
- the learning rate divided by 10 at given epochs (``milestones``).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from ..nn.backbones.common import first_conv
from .modules import ActionClassifier

REPRESENTATIONS = ("iframe", "mv", "residual", "flow")


class _WithDataBN(nn.Module):
    """``data_bn`` (BatchNorm over the input channels) then the network."""

    def __init__(self, data_bn: nn.Module | None, net: nn.Module):
        super().__init__()
        self.data_bn, self.net = data_bn, net

    def forward(self, x: Tensor) -> Tensor:
        return self.net(self.data_bn(x) if self.data_bn is not None else x)


def _head_name(net: nn.Module) -> str:
    """Name of the last ``nn.Linear`` of ``net`` (the classifier layer: ``fc``, ``fc8``)."""
    names = [n for n, m in net.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        raise ValueError(f"{type(net).__name__} has no linear classifier layer")
    return names[-1]


class CoViARStream(ActionClassifier):
    """One CoViAR stream: a backbone on I-frames, accumulated MV or accumulated residuals.

    Batches are ``(x, y)`` with ``x`` ``(N, S, C, H, W)`` (TSN segments, scores averaged), as
    :class:`ActionClassifier`'s; the data module reads modality ``"iframe"``, ``"mv"`` or
    ``"residual"`` with ``accumulate=True`` and ``sampling="gop"``.

    Args:
        representation: ``"iframe"``, ``"mv"``, ``"residual"`` (or ``"flow"``: the same recipe
            on TV-L1 flow, the flow stream DMC-Net compares with and starts from).
        data_bn: a BatchNorm over the input channels first (None: CoViAR's choice, on for MV
            and residual, off for I-frames).
        backbone_lr_mult: learning-rate multiplier of the backbone (CoViAR: 0.01, it
            fine-tunes ImageNet weights; use 1 when training from scratch).
        first_lr_mult: multiplier of the first convolution, its BatchNorm and ``data_bn`` for
            MV / residual / flow (CoViAR: 0.1); I-frames use ``backbone_lr_mult``.
        head_lr_mult: multiplier of the classifier layer (1).
        adam_eps: Adam's epsilon (CoViAR: 1e-3).
        optimizer: must stay ``"adam"`` (CoViAR's optimizer).
        weight_decay: of the weights; biases have none (CoViAR: 1e-4).
        **kw: :class:`ActionClassifier`'s arguments (``backbone``, ``lr``, ``milestones``,
            ``pretrained``...).
    """

    INFERENCE_OVERRIDES: ClassVar[dict] = dict(pretrained=None)

    def __init__(
        self,
        representation: str = "mv",
        data_bn: bool | None = None,
        backbone_lr_mult: float = 0.01,
        first_lr_mult: float = 0.1,
        head_lr_mult: float = 1.0,
        adam_eps: float = 1e-3,
        optimizer: str = "adam",
        weight_decay: float = 1e-4,
        **kw,
    ):
        super().__init__(optimizer=optimizer, weight_decay=weight_decay, **kw)
        if representation not in REPRESENTATIONS:
            raise ValueError(
                f"representation must be one of {REPRESENTATIONS}, got {representation!r}"
            )
        if self.hparams.optimizer != "adam":
            raise ValueError("CoViARStream trains with Adam (optimizer='adam')")
        if self.image_dims != 3:
            raise ValueError("CoViARStream needs a 2D backbone (frame-level classifier)")
        use_bn = representation != "iframe" if data_bn is None else data_bn
        self.data_bn = nn.BatchNorm2d(self.hparams.in_channels) if use_bn else None

    def inference_network(self) -> nn.Module:
        """``data_bn`` (when used) and the backbone: ``(N*S, C, H, W)`` -> ``(N*S, K)``."""
        return _WithDataBN(self.data_bn, self.net)

    def forward(self, x: Tensor) -> Tensor:
        """Scores ``(N, num_classes)``, averaged over the segment axis if there is one."""
        flat = x.flatten(0, 1) if x.dim() == 5 else x
        if flat.dim() != 4:
            raise ValueError(f"expected (N, C, H, W) or (N, S, C, H, W), got {tuple(x.shape)}")
        s = x.shape[1] if x.dim() == 5 else 1
        if self.data_bn is not None:
            flat = self.data_bn(flat)
        return self.net(flat).view(-1, s, self.hparams.num_classes).mean(1)

    def param_groups(self) -> list[dict]:
        """Adam's parameter groups with CoViAR's multipliers (``lr_mult``, ``decay_mult``)."""
        hp = self.hparams
        head = _head_name(self.net) + "."
        conv_name, _ = first_conv(self.net)
        first = (conv_name + ".", "bn1.")
        groups: dict[tuple[float, float], list] = {}
        named = list(self.net.named_parameters())
        if self.data_bn is not None:
            named += [("data_bn." + n, p) for n, p in self.data_bn.named_parameters()]
        for local, p in named:
            if not p.requires_grad:
                continue
            if local.startswith(head):
                mult = hp.head_lr_mult
            elif hp.representation != "iframe" and (
                local.startswith(first) or local.startswith("data_bn.")
            ):
                mult = hp.first_lr_mult
            else:
                mult = hp.backbone_lr_mult
            decay = 0.0 if local.endswith("bias") else 1.0
            groups.setdefault((mult, decay), []).append(p)
        return [
            {"params": ps, "lr": hp.lr * m, "weight_decay": hp.weight_decay * d, "lr_mult": m}
            for (m, d), ps in groups.items()
        ]

    def configure_optimizers(self):  # noqa: D102
        hp = self.hparams
        opt = torch.optim.Adam(self.param_groups(), lr=hp.lr, eps=hp.adam_eps)
        if not hp.milestones:
            return opt
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, list(hp.milestones), hp.gamma)
        return {
            "optimizer": opt,
            "lr_scheduler": {"scheduler": sched, "interval": hp.scheduler_interval},
        }
