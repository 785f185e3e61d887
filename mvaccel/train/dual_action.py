"""Lu et al.'s Dual-action Stream: a 3D CNN on RGB clips that mimics a frozen flow stream.

Three LightningModules, all subclasses of :class:`~mvaccel.train.ActionClassifier` on clips
(``VideoDataModule(sampling="clip")``, samples ``(S, C, K, H, W)``):

- :class:`ClipClassifier`: a 3D ResNet trained with cross-entropy on RGB or flow clips (the
  motion stream, the Dual-action Stream's teacher: ``clip_channels=2`` on ``[flow]``).
- :class:`DualActionStream`: the student on RGB clips with the frozen flow teacher and the loss
  of eq. 4, ``CE + alpha (L_MAE + L_G)`` (alpha = 50) over the levels of both networks
  (:data:`CLIP_LEVELS`); ``loss="mar"`` is MARS's baseline (MSE of the pre-FC features),
  ``"mae"`` / ``"gram"`` the ablations of Table 2, ``"ce"`` the RGB stream alone.
- :class:`DualActionFusion`: the attention fusion (:class:`mvaccel.nn.AttentionFusion`) of the
  Dual-action Stream and the flow stream, both loaded from checkpoints and frozen.

**Channels.** ``mvaccel train`` links ``in_channels`` to a 2D stack's count (channels times
``new_length``); a 3D network reads ``C`` channels per frame, so these modules take the clip's
channels from ``clip_channels`` (3 RGB, 2 flow) and ignore the linked value.

**Backbones.** ``resnext3d101`` (MARS's 3D ResNeXt-101, cardinality 32: the network of the
paper's teacher, MARS's released Kinetics flow model, loadable with
:func:`mvaccel.nn.backbones.load_weights`), ``"resnext3d"`` (any depth, cardinality and width),
``resnet3d18`` / ``50`` / ``101`` of :data:`~mvaccel.train.BACKBONES` and ``"resnet3d"``
(:func:`mvaccel.nn.backbones.resnet3d`: any depth and a width multiplier, the demo's and the
tests' tiny networks).

**Fine-tuning the last block.** The paper's motion stream is MARS's Kinetics flow model with
"the last block and the last fully-connected layer" fine-tuned: ``finetune="last_block"``
trains ``layer4`` and ``fc`` only; everything before stays frozen, its BatchNorm statistics too.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import distill
from ..nn.backbones.resnet3d import resnet3d
from ..nn.fusion import AttentionFusion
from .modules import CLIP_BACKBONES, ActionClassifier, _fold, build_backbone, tapped

#: The levels the student matches (eq. 2 and 3, i = 1 ... n-1): the four stages' outputs and the
#: pooled features before the classifier (``f_(n-1)``, MAR's only level).
CLIP_LEVELS: tuple[str, ...] = ("layer1", "layer2", "layer3", "layer4", "avgpool")
#: ``loss`` values of :class:`DualActionStream`.
LOSSES = ("dual_action", "mae", "gram", "mar", "ce")
#: ``gram_reduction`` values: how eq. 3's L1 norm reduces the ``C x C`` entries.
GRAM_REDUCTIONS = ("mean", "sum")
#: ``finetune`` values of :class:`ClipClassifier`: what trains.
FINETUNE = ("all", "last_block")
#: The parts ``finetune="last_block"`` trains (MARS's ``ft_begin_index`` 4: layer4 and fc).
LAST_BLOCK = ("layer4", "fc")


def load_stream(net: nn.Module, path: str | Path, role: str) -> None:
    """Load the network ``net.*`` of a Lightning checkpoint (or a plain state dict) into ``net``.

    Args:
        net: the network to fill.
        path: a checkpoint of a module of :mod:`mvaccel.train` (``ActionClassifier``,
            :class:`ClipClassifier`, :class:`DualActionStream`: its student) or a state dict.
        role: what the network is, for error messages (``"teacher"``, ``"flow stream"``).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the weights do not fit ``net`` (another backbone, width or class count).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{role} checkpoint not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=False)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{role} checkpoint {path}: not a state dict or a Lightning checkpoint")
    if any(k.startswith("net.") for k in state):
        state = {k[4:]: v for k, v in state.items() if k.startswith("net.")}
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).splitlines()[:3]
        raise ValueError(
            f"{role} checkpoint {path} does not fit the configured network "
            f"({type(net).__name__}; same backbone, backbone_kwargs and classes needed): "
            + " ".join(first)
        ) from e


def mean_gram_loss(student: Sequence[Tensor], teacher: Sequence[Tensor]) -> Tensor:
    """Eq. 3 with the L1 norm as PyTorch's ``L1Loss`` computes it: the mean over the entries.

    ``L_G = sum_i mean| (G(f_DS(i)) - G(f_FLOW(i))) / ((n-1) C_i T_i H_i W_i) |``, the mean
    over the batch and the ``C_i x C_i`` entries; :func:`mvaccel.distill.gram_loss` sums the
    entries instead (``C_i**2`` times this level's term).
    """
    total = 0.0
    for s, t in zip(student, teacher, strict=True):
        distill.gram_loss([s], [t])  # the shape checks, with their messages
        denom = len(student) * s[0].numel()  # (n - 1) * C * T * H * W
        total = total + ((distill.gram(s) - distill.gram(t.detach())) / denom).abs().mean()
    return total


def _frozen(net: nn.Module) -> nn.Module:
    return net.eval().requires_grad_(False)


class ClipClassifier(ActionClassifier):
    """A 3D CNN on clips trained with cross-entropy: the motion stream (flow) or an RGB stream.

    Batches are ``(x, y)`` with ``x`` of ``(N, S, C, K, H, W)`` (``S`` clips per video, scores
    averaged) or ``(N, C, K, H, W)``.

    Args:
        clip_channels: channels per frame of the clips, 3 (RGB) or 2 (flow); the network's
            input channels (the linked ``in_channels`` counts a 2D stack and is ignored).
        channels_last: run the network in ``torch.channels_last_3d`` memory format (GPUs with
            tensor cores, together with ``--trainer.precision 16-mixed``).
        finetune: ``"all"`` or ``"last_block"`` (only ``layer4`` and ``fc`` train; the rest,
            BatchNorm statistics included, stays as ``pretrained`` left it: the paper's
            fine-tuning of MARS's flow model).
        **kw: :class:`ActionClassifier`'s arguments; ``backbone`` one of the 3D networks
            (``resnext3d101``, ``resnext3d``, ``resnet3d18``, ``resnet3d50``, ``resnet3d101``,
            ``resnet3d`` with ``backbone_kwargs={depth, width}``).
    """

    #: the checkpoint holds the weights: evaluation does not read ``pretrained`` again.
    INFERENCE_OVERRIDES: ClassVar[dict] = dict(pretrained=None)

    def __init__(
        self, clip_channels: int = 3, channels_last: bool = False, finetune: str = "all", **kw
    ):
        backbone = kw.get("backbone", "resnet18")
        if not backbone.startswith(CLIP_BACKBONES):
            raise ValueError(
                f"{type(self).__name__}: backbone must be a 3D network (resnext3d101, "
                f"resnext3d, resnet3d, resnet3d18, resnet3d50, resnet3d101), got {backbone!r}"
            )
        if clip_channels < 1:
            raise ValueError(f"clip_channels must be >= 1, got {clip_channels}")
        if finetune not in FINETUNE:
            raise ValueError(f"finetune must be one of {FINETUNE}, got {finetune!r}")
        kw["in_channels"] = clip_channels
        super().__init__(**kw)
        self.image_dims = 4
        self.memory_format = torch.channels_last_3d if channels_last else torch.contiguous_format
        if channels_last:
            self.net.to(memory_format=self.memory_format)
        if finetune == "last_block":
            for name, p in self.net.named_parameters():
                p.requires_grad_(name.startswith(tuple(f"{m}." for m in LAST_BLOCK)))

    def frozen_modules(self) -> list[nn.Module]:
        """The network's parts that ``finetune`` keeps frozen (eval mode in training)."""
        if self.hparams.get("finetune", "all") != "last_block":
            return []
        return [m for n, m in self.net.named_children() if n not in LAST_BLOCK]

    def train(self, mode: bool = True):  # noqa: D102  (frozen parts keep their BN statistics)
        super().train(mode)
        for m in self.frozen_modules():
            m.eval()
        return self

    def _build(self, in_channels: int) -> nn.Module:
        """Another network of this module's backbone (a teacher or a second stream)."""
        hp = self.hparams
        net = build_backbone(hp.backbone, hp.num_classes, in_channels,
                             **(hp.backbone_kwargs or {}))  # fmt: skip
        return net.to(memory_format=self.memory_format)

    def _clips(self, x: Tensor, name: str, channels: int) -> tuple[Tensor, int]:
        """``(N*S, C, K, H, W)`` clips of ``x`` and ``S``, with a clear error on other shapes."""
        if x.dim() not in (5, 6) or x.shape[-4] != channels:
            raise ValueError(
                f"{type(self).__name__}: {name} clips must be (N, S, {channels}, K, H, W) or "
                f"(N, {channels}, K, H, W) (VideoDataModule sampling='clip'), got shape "
                f"{tuple(x.shape)}"
            )
        flat, s = _fold(x, 4)
        return flat.contiguous(memory_format=self.memory_format), s

    def forward(self, x: Tensor) -> Tensor:
        """Scores ``(N, num_classes)`` of clips, averaged over the clip axis if there is one."""
        flat, s = self._clips(x, "input", self.hparams.clip_channels)
        return self.net(flat).view(-1, s, self.hparams.num_classes).mean(1)


class DualActionStream(ClipClassifier):
    """The Dual-action Stream (Lu et al.): an RGB 3D CNN taught by a frozen flow 3D CNN.

    Training batches are ``(rgb, flow, y)`` of the same clips (``modalities: [rgb, flow]``,
    ``sampling: clip``); at test time the student reads RGB only (``val_modalities: [rgb]``).
    The loss (eq. 4) is ``CE(h_DS, y) + alpha (L_MAE + L_G)`` with

    - ``L_MAE`` (eq. 2): the mean over the ``n-1`` levels of each level's mean absolute error
      between student and teacher features (:func:`mvaccel.distill.multi_level_mae_loss`);
    - ``L_G`` (eq. 3): the L1 distance of the levels' Gram matrices divided by
      ``(n-1) C_i T_i H_i W_i``, summed over the levels (:func:`mean_gram_loss`, or
      :func:`mvaccel.distill.gram_loss` with ``gram_reduction="sum"``).

    Args:
        teacher: the flow stream (frozen, kept in eval mode); or ``teacher_checkpoint``, a
            checkpoint of :class:`ClipClassifier` (or any module whose ``net`` has this
            backbone on ``teacher_channels`` channels) or a plain state dict.
        loss: ``"dual_action"`` (eq. 4), ``"mae"`` / ``"gram"`` (one term only, Table 2),
            ``"mar"`` (MARS: ``CE + alpha * MSE`` of the pre-FC features, the baseline) or
            ``"ce"`` (no teacher: the RGB stream alone).
        alpha: the weight of the motion terms (50, from MARS).
        levels: submodule names of the backbone whose outputs are matched (default
            :data:`CLIP_LEVELS`; ``"mar"`` always uses ``avgpool``).
        gram_reduction: how eq. 3's ``||.||_1`` reduces the ``C x C`` entries of a level:
            ``"mean"`` (:func:`mean_gram_loss`, PyTorch's ``L1Loss``) or ``"sum"``
            (:func:`mvaccel.distill.gram_loss`, the norm's letter). The paper does not say;
            ``"mean"`` is the default because with ``"sum"`` and alpha = 50 the Gram term
            outweighs everything else (at initialisation, on 8x64x64 clips: 12.7 for a
            1/8-width ResNet-10, 162 for ResNet-18, 1053 for ResNet-50, against a
            cross-entropy of about 4.6 and an MAE of about 1; its gradient per feature is
            ~2 C |f| times the MAE's) and the classifier does not learn, while eq. 2's
            ``||.||_1``, which the paper calls the mean absolute error, is a mean, and
            alpha = 50 was tuned by MARS for a mean-reduced loss.
        teacher_channels: channels per frame of the teacher's clips (2: x and y flow).
        **kw: :class:`ClipClassifier`'s arguments (the student's backbone etc.).
    """

    INFERENCE_OVERRIDES: ClassVar[dict] = dict(teacher_checkpoint=None, loss="ce", pretrained=None)
    TRAINING_ONLY: ClassVar[tuple[str, ...]] = ("teacher.",)

    def __init__(
        self,
        teacher: nn.Module | None = None,
        teacher_checkpoint: str | None = None,
        loss: str = "dual_action",
        alpha: float = 50.0,
        levels: Sequence[str] = CLIP_LEVELS,
        teacher_channels: int = 2,
        gram_reduction: str = "mean",
        **kw,
    ):
        super().__init__(**kw)
        if loss not in LOSSES:
            raise ValueError(f"DualActionStream: loss must be one of {LOSSES}, got {loss!r}")
        if gram_reduction not in GRAM_REDUCTIONS:
            raise ValueError(
                f"DualActionStream: gram_reduction must be one of {GRAM_REDUCTIONS}, got "
                f"{gram_reduction!r}"
            )
        if not levels and loss in ("dual_action", "mae", "gram"):
            raise ValueError(f"DualActionStream: loss {loss!r} needs at least one level")
        self.levels = ("avgpool",) if loss == "mar" else tuple(levels)
        modules = dict(self.net.named_modules())
        missing = [n for n in self.levels if n not in modules]
        if missing:
            raise ValueError(
                f"DualActionStream: the backbone {self.hparams.backbone!r} has no submodules "
                f"{missing} (levels); e.g. {list(CLIP_LEVELS)}"
            )
        if teacher is None and teacher_checkpoint:
            teacher = self._build(teacher_channels)
            load_stream(teacher, teacher_checkpoint, "teacher")
        if teacher is None and loss != "ce":
            raise ValueError(
                f"DualActionStream: loss {loss!r} needs the flow teacher: pass "
                "teacher_checkpoint=... (or teacher=...)"
            )
        self.teacher = _frozen(teacher) if teacher is not None else None

    def train(self, mode: bool = True):  # noqa: D102  (the teacher stays in eval mode)
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    def objective(self, batch) -> dict[str, Tensor]:
        """The loss of a ``(rgb, flow, y)`` batch and its parts.

        Returns:
            ``loss``, ``logits`` ``(N, K)`` and, as the loss has them, ``ce``, ``mae``,
            ``gram``, ``mar`` (the unweighted terms).
        """
        hp = self.hparams
        if len(batch) != 3:
            raise ValueError(
                "DualActionStream: training batches are (rgb, flow, y): set data.modalities to "
                f"[rgb, flow] and sampling to clip (got a batch of {len(batch)} tensors)"
            )
        rgb, flow, y = batch
        x, s = self._clips(rgb, "rgb", hp.clip_channels)
        levels = self.levels if hp.loss != "ce" else ()
        with tapped(self.net, levels) as fs:
            scores = self.net(x)
        logits = scores.view(-1, s, hp.num_classes).mean(1)
        ce = F.cross_entropy(logits, y)
        out = {"logits": logits, "ce": ce}
        if hp.loss == "ce":
            out["loss"] = ce
            return out
        fx, _ = self._clips(flow, "flow", hp.teacher_channels)
        if fx.shape[0] != x.shape[0] or fx.shape[-3:] != x.shape[-3:]:
            raise ValueError(
                f"DualActionStream: rgb clips {tuple(rgb.shape)} and flow clips "
                f"{tuple(flow.shape)} must cover the same frames and crops"
            )
        with torch.no_grad(), tapped(self.teacher, levels) as ft:
            self.teacher(fx)
        student = [fs[n] for n in levels]
        teacher = [ft[n] for n in levels]
        if hp.loss == "mar":
            out["mar"] = distill.mar_loss(student[0].flatten(1), teacher[0].flatten(1))
            motion = out["mar"]
        else:
            motion = torch.zeros((), dtype=ce.dtype, device=ce.device)
            if hp.loss in ("dual_action", "mae"):
                out["mae"] = distill.multi_level_mae_loss(student, teacher)
                motion = motion + out["mae"]
            if hp.loss in ("dual_action", "gram"):
                gram = distill.gram_loss if hp.gram_reduction == "sum" else mean_gram_loss
                out["gram"] = gram(student, teacher)
                motion = motion + out["gram"]
        out["loss"] = ce + hp.alpha * motion
        return out

    def training_step(self, batch, batch_idx):  # noqa: D102
        out = self.objective(batch)
        n = len(batch[-1])
        for k in ("ce", "mae", "gram", "mar"):
            if k in out:
                self.log(f"train/{k}", out[k], batch_size=n)
        self.log("train/loss", out["loss"], prog_bar=True, batch_size=n)
        acc = (out["logits"].argmax(1) == batch[-1]).float().mean()
        self.log("train/acc", acc, prog_bar=True, batch_size=n)
        return out["loss"]


class FusedStreams(nn.Module):
    """Two clip networks and their :class:`~mvaccel.nn.AttentionFusion`: ``(rgb, flow)`` -> scores.

    Shapes:
        ``(B, 3, K, H, W)`` and ``(B, 2, K, H, W)`` -> ``(B, num_classes)``.
    """

    def __init__(self, rgb: nn.Module, flow: nn.Module, fusion: AttentionFusion):
        super().__init__()
        self.rgb, self.flow, self.fusion = rgb, flow, fusion

    def stream_scores(self, rgb: Tensor, flow: Tensor) -> tuple[Tensor, Tensor]:
        """Each stream's scores ``(B, num_classes)``."""
        return self.rgb(rgb), self.flow(flow)

    def forward(self, rgb: Tensor, flow: Tensor) -> Tensor:
        """Fused scores (log-probabilities when the fusion reads softmax inputs)."""
        return self.fusion(*self.stream_scores(rgb, flow))


class DualActionFusion(ClipClassifier):
    """The attention-based fusion of the Dual-action Stream and the flow stream (section 3.4).

    Both streams are loaded from their checkpoints and frozen ("in favor of convergence"): only
    the fusion's two linear layers train, with the cross-entropy of the fused scores. Batches
    are ``(rgb, flow, y)`` in training and at test time (``modalities`` and ``val_modalities``
    both ``[rgb, flow]``).

    Args:
        rgb_checkpoint: the Dual-action Stream (its student, ``net``; or any RGB clip network of
            this backbone). None: the weights come from this module's own checkpoint.
        flow_checkpoint: the motion stream (a :class:`ClipClassifier` on flow clips).
        flow_channels: channels per frame of the flow clips (2).
        hidden / fusion_inputs / activation: :class:`~mvaccel.nn.AttentionFusion`'s ``hidden``,
            ``inputs`` (``"scores"``: the streams' raw scores, the paper's "outputs"; or
            ``"softmax"``) and ``activation``.
        **kw: :class:`ClipClassifier`'s arguments: the streams' shared ``backbone`` and
            ``backbone_kwargs``, the fusion's optimizer.
    """

    INFERENCE_OVERRIDES: ClassVar[dict] = dict(
        rgb_checkpoint=None, flow_checkpoint=None, pretrained=None
    )

    def __init__(
        self,
        rgb_checkpoint: str | None = None,
        flow_checkpoint: str | None = None,
        flow_channels: int = 2,
        hidden: int | None = None,
        fusion_inputs: str = "scores",
        activation: str | None = None,
        **kw,
    ):
        super().__init__(**kw)
        self.flow_net = self._build(flow_channels)
        if rgb_checkpoint:
            load_stream(self.net, rgb_checkpoint, "rgb stream (Dual-action Stream)")
        if flow_checkpoint:
            load_stream(self.flow_net, flow_checkpoint, "flow stream")
        _frozen(self.net)
        _frozen(self.flow_net)
        self.fusion = AttentionFusion(self.hparams.num_classes, 2, hidden, fusion_inputs,
                                      activation)  # fmt: skip

    def train(self, mode: bool = True):  # noqa: D102  (the streams stay in eval mode)
        super().train(mode)
        self.net.eval()
        self.flow_net.eval()
        return self

    def inference_network(self) -> nn.Module:
        """``(rgb, flow)`` clips -> fused scores."""
        return FusedStreams(self.net, self.flow_net, self.fusion)

    def forward(self, rgb: Tensor, flow: Tensor | None = None) -> Tensor:
        """Fused scores ``(N, num_classes)`` of ``(N[, S], C, K, H, W)`` clips of both streams."""
        return self._fused(rgb, flow)[0]

    def _fused(self, rgb: Tensor, flow: Tensor | None) -> tuple[Tensor, Tensor]:
        hp = self.hparams
        if flow is None:
            raise ValueError("DualActionFusion: needs the rgb and the flow clips of each video")
        x, s = self._clips(rgb, "rgb", hp.clip_channels)
        fx, _ = self._clips(flow, "flow", hp.flow_channels)
        if fx.shape[0] != x.shape[0]:
            raise ValueError(
                f"DualActionFusion: rgb clips {tuple(rgb.shape)} and flow clips "
                f"{tuple(flow.shape)} hold different numbers of clips"
            )
        with torch.no_grad():
            a, b = self.net(x), self.flow_net(fx)
        k = hp.num_classes
        fused = self.fusion(a, b).view(-1, s, k).mean(1)
        weights = self.fusion.weights(a, b).view(-1, s, 2).mean(1)
        return fused, weights

    def _step(self, batch, stage: str) -> Tensor:
        if len(batch) != 3:
            raise ValueError(
                "DualActionFusion: batches are (rgb, flow, y): set data.modalities and "
                f"data.val_modalities to [rgb, flow] (got a batch of {len(batch)} tensors)"
            )
        rgb, flow, y = batch
        scores, weights = self._fused(rgb, flow)
        loss = F.cross_entropy(scores, y)
        n = len(y)
        self.log(f"{stage}/loss", loss, prog_bar=True, batch_size=n)
        self.log(f"{stage}/acc", (scores.argmax(1) == y).float().mean(), prog_bar=True,
                 batch_size=n)  # fmt: skip
        self.log(f"{stage}/w_rgb", weights[:, 0].mean(), batch_size=n)
        return loss

    def predict_step(self, batch, batch_idx):  # noqa: D102
        return self(batch[0], batch[1])


__all__ = [
    "CLIP_LEVELS",
    "FINETUNE",
    "GRAM_REDUCTIONS",
    "LOSSES",
    "ClipClassifier",
    "DualActionFusion",
    "DualActionStream",
    "FusedStreams",
    "load_stream",
    "mean_gram_loss",
    "resnet3d",
]
