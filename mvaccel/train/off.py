"""Sun et al.'s OFF networks (CVPR 2018) trained in the paper's three stages on Lightning.

The network (paper Fig. 2/3): a TSN backbone (the *feature generation sub-network*, BN-Inception
in the paper; any backbone of :data:`~mvaccel.train.BACKBONES`) runs on every sampled frame;
its intermediate feature maps, grouped into levels (the authors' Caffe nets: inception 3a-3b at
28x28, 3c and 4a-4d at 14x14, 5a-5b at 7x7), feed the OFF sub-network
(:class:`mvaccel.nn.OFFSubNetwork`: an OFF unit per level between consecutive segments,
residual blocks without BatchNorm, a classifier per level). Every head is supervised by its
own cross-entropy on the segment-averaged scores (intermediate supervision, eq. 9); at test
time the backbone's score and the last OFF level's score are summed (section 4.3; the
authors' ``score_fusion`` Eltwise SUM 1 : 1 of the averaged scores).

Three-stage training (section 4.2), the ``stage`` argument:

1. the backbone alone, as TSN (``sampling: tsn``);
2. the OFF sub-network and its classifiers from scratch on the frozen backbone (weights,
   BatchNorm statistics and dropout all frozen, as the authors' ``lr_mult: 0`` / ``frozen``
   prototxt), initialised from a stage-1 checkpoint (``init_checkpoint``);
3. everything end to end, initialised from a stage-2 checkpoint.

Stages 2 and 3 read frames with OFF's fixed-interval sampling (``data.sampling: fixed``): alpha
frames in training (``data.num_segments``), beta at test (``test_segments`` here), and the
interval ``floor(L / beta)`` in both, so the temporal difference spans the same time.
:meth:`OFFNetwork.setup` hands beta to the data module's datasets (they take the interval from
it; :class:`~mvaccel.train.data.VideoDataModule` has no argument for it).

Variants: RGB + OFF(RGB) (``raw_off: false``) and Raw OFF + OFF(Raw OFF) (``raw_off: true``:
:class:`mvaccel.nn.RawOFF` on the ``new_length`` consecutive frames of each segment, the
``K - 1`` pairs' Sobel x, Sobel y and difference stacked as the backbone's input channels).
The four-way combination of the paper's Table 1 is the score fusion of the two
(``mvaccel fuse``).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..nn import BN_INCEPTION_TAPS, RESNET_TAPS, OFFSubNetwork, RawOFF
from .modules import ActionClassifier, build_backbone, tapped

#: The feature levels each backbone feeds to the OFF sub-network by default (finest first).
#: BN-Inception: the authors' Caffe nets. ResNets: the last three stages (strides 8, 16, 32).
#: ClarifaiNet: conv2 before its pool, and conv3, conv4 and conv5 before its pool (strides 8
#: and 16 at 224; its Caffe-style pools make its other maps not halve exactly).
DEFAULT_TAPS: dict[str, tuple[tuple[str, ...], ...]] = {
    "bninception": BN_INCEPTION_TAPS,
    "resnet18": RESNET_TAPS,
    "resnet50": RESNET_TAPS,
    "resnet152": RESNET_TAPS,
    "clarifai": (("conv2.1",), ("conv3", "conv4", "conv5.1")),
}
#: Output channels of the units of ``off_architecture="resnet20"`` (mvaccel's reading of the
#: paper's "ResNet-20", widths of its own: the paper gives none), finest level first.
RESNET20_WIDTHS = (128, 192, 256)
STAGES = (1, 2, 3)


def _load_state(path: str | Path) -> dict[str, Tensor]:
    """The state dict of a Lightning checkpoint (or a plain state dict file)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"OFFNetwork: init_checkpoint not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=False)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"OFFNetwork: {path} holds no state dict")
    return state


def _sub_state(state: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


class OFFNetwork(ActionClassifier):
    """The OFF network of Sun et al.: TSN backbone + OFF sub-network, trained in three stages.

    Batches are ``(x, y)`` with ``x (N, S, C, H, W)``: ``S`` frames (segments) of each video in
    time order, ``C = 3 * new_length`` RGB channels. Every head's scores are averaged over the
    segments (TSN consensus; the OFF heads over the ``S - 1`` segment pairs).

    Args:
        stage: 1 (backbone only, TSN), 2 (OFF sub-network on the frozen backbone) or 3 (end
            to end). See the module docstring.
        init_checkpoint: what the stage starts from: stage 2 the backbone of a stage-1
            checkpoint (this class's, any :class:`ActionClassifier`'s, or a plain state dict of
            the backbone); stage 3 backbone and OFF sub-network of a stage-2 checkpoint;
            stage 1 optionally a backbone to continue from. Required for stages 2 and 3 when
            fitting (unless resuming).
        taps: the backbone's submodule names of each level, finest first (None: the
            backbone's :data:`DEFAULT_TAPS`).
        off_architecture: ``"authors"`` (the authors' released nets: a 1x1 conv + ReLU per
            tapped block, 7x7/2, 5x5/2, 3x3 transitions, bottlenecks with 256/512/1024 outputs;
            three levels) or ``"resnet20"`` (mvaccel's earlier reading of the text: basic
            blocks of ``off_widths``; any number of levels). See
            :class:`mvaccel.nn.OFFSubNetwork`.
        off_widths: ``"resnet20"``: output channels of each level's unit (None: 128, 192,
            256, as many as there are levels; mvaccel's choice).
        off_blocks: ``"resnet20"``: residual blocks per unit (3 over three levels: 20 layers).
        off_strides: ``"resnet20"``: resolution ratio between consecutive levels (2).
        off_reduce: channels of the OFF layer's 1x1 convolutions (128 in the paper).
        off_mode: the OFF layer (:class:`mvaccel.nn.OFFLayer`): ``"off"`` (the paper's Sobel
            x, Sobel y and difference), ``"rgb"`` (the authors' RGB-OFF net: difference plus a
            32-channel spatial branch with their fixed kernel) or ``"temporal"`` (the
            difference only: the authors' flow-OFF and RGB-diff-OFF nets).
        off_spatial_channels: width of the ``"rgb"`` mode's spatial branch.
        off_dropout: before each OFF classifier, and (``"authors"``) on the RGB-OFF spatial
            branch (0.8 in the authors' nets).
        level_weights: loss weight of each OFF level (None: 1 each; eq. 9 per level).
        backbone_weight: loss weight of the backbone's cross-entropy in stage 3 (in stage 2 the
            backbone is frozen and its loss is only logged).
        fusion_weights: ``(backbone, last OFF level)`` weights of the test-time score sum.
        raw_off: the Raw-OFF variant: the backbone reads the OFF of each segment's
            ``new_length`` consecutive input frames instead of the frames.
        raw_off_grey: take Raw OFF of the BT.601 luma (3 channels per pair instead of 9).
        test_segments: beta, the frames of the test protocol that fix the sampling interval
            (25 in the paper). :meth:`inference_network` takes its inputs as videos of this
            many frames: evaluate with ``segments = test_segments``.
        channels_last: run the networks in channels-last memory format (GPUs with AMP).
        **kw: :class:`ActionClassifier`'s arguments (backbone, optimizer, lr, milestones...).
    """

    INFERENCE_OVERRIDES: ClassVar[dict] = dict(init_checkpoint=None, pretrained=None)

    def __init__(
        self,
        stage: int = 2,
        init_checkpoint: str | None = None,
        taps: Sequence[Sequence[str]] | None = None,
        off_architecture: str = "authors",
        off_widths: Sequence[int] | None = None,
        off_blocks: int = 3,
        off_strides: int | Sequence[int] = 2,
        off_reduce: int = 128,
        off_mode: str = "off",
        off_spatial_channels: int = 32,
        off_dropout: float = 0.8,
        level_weights: Sequence[float] | None = None,
        backbone_weight: float = 1.0,
        fusion_weights: Sequence[float] = (1.0, 1.0),
        raw_off: bool = False,
        raw_off_grey: bool = False,
        test_segments: int = 25,
        channels_last: bool = False,
        **kw,
    ):
        super().__init__(**kw)
        hp = self.hparams
        if stage not in STAGES:
            raise ValueError(f"OFFNetwork: stage must be 1, 2 or 3, got {stage!r}")
        if len(fusion_weights) != 2:
            raise ValueError(
                f"OFFNetwork: fusion_weights are (backbone, OFF), got {list(fusion_weights)}"
            )
        if test_segments < 2:
            raise ValueError(f"OFFNetwork: test_segments must be >= 2, got {test_segments}")
        if self.image_dims != 3:
            raise ValueError(f"OFFNetwork: needs a 2D backbone, got {hp.backbone!r}")
        self.raw = None
        if raw_off:
            k, rest = divmod(hp.in_channels, 3)
            if rest or k < 2:
                raise ValueError(
                    f"OFFNetwork(raw_off=True): needs new_length >= 2 RGB frames per segment "
                    f"(in_channels a multiple of 3, >= 6), got in_channels={hp.in_channels}"
                )
            self.raw = RawOFF(grey=raw_off_grey)
            channels = (k - 1) * (3 if raw_off_grey else 9)
            self.net = build_backbone(
                hp.backbone, hp.num_classes, channels, **(hp.backbone_kwargs or {})
            )
            if hp.pretrained:
                from ..nn.backbones import load_weights

                load_weights(self.net, hp.pretrained)
        self.taps = [tuple(lv) for lv in (taps or DEFAULT_TAPS.get(hp.backbone, ()))]
        if not self.taps or any(isinstance(lv, str) or not lv for lv in self.taps):
            raise ValueError(
                f"OFFNetwork: taps must be levels of submodule names of the backbone "
                f"(no default for {hp.backbone!r}), got {taps!r}"
            )
        self.off: OFFSubNetwork | None = None
        if stage >= 2:
            chans = self._level_channels()
            levels = len(chans)
            widths = list(off_widths) if off_widths else list(RESNET20_WIDTHS[:levels])
            if len(widths) < levels:
                widths += [widths[-1]] * (levels - len(widths))
            self.off = OFFSubNetwork(
                chans, hp.num_classes, widths, off_blocks, off_strides, off_dropout,
                off_reduce, off_mode, off_spatial_channels, off_architecture,
            )  # fmt: skip
        n_levels = len(self.taps)
        self.level_weights = list(level_weights) if level_weights else [1.0] * n_levels
        if len(self.level_weights) != n_levels:
            raise ValueError(
                f"OFFNetwork: {n_levels} levels but {len(self.level_weights)} level_weights"
            )
        if init_checkpoint:
            self._init_from(init_checkpoint)
        if stage == 2:
            self.net.requires_grad_(False).eval()
        if channels_last:
            self.to(memory_format=torch.channels_last)

    # ---- construction ----

    @torch.no_grad()
    def _level_channels(self) -> list[list[int]]:
        """Channels of each tap of each level (one probe of the backbone at 224x224)."""
        names = [n for lv in self.taps for n in lv]
        was = self.net.training
        self.net.eval()
        probe = torch.zeros(1, self._backbone_channels(), 224, 224)
        try:
            with tapped(self.net, names) as store:
                self.net(probe)
        except ValueError as e:
            raise ValueError(f"OFFNetwork: bad taps for {self.hparams.backbone!r}: {e}") from e
        finally:
            self.net.train(was)
        return [[store[n].shape[1] for n in lv] for lv in self.taps]

    def _backbone_channels(self) -> int:
        first = next(m for m in self.net.modules() if isinstance(m, nn.Conv2d))
        return first.in_channels

    def _init_from(self, path: str | Path) -> None:
        stage = self.hparams.stage
        state = _load_state(path)
        net = _sub_state(state, "net.") if any(k.startswith("net.") for k in state) else state
        try:
            self.net.load_state_dict(net)
        except RuntimeError as e:
            raise ValueError(
                f"OFFNetwork: init_checkpoint {path} does not fit the {self.hparams.backbone} "
                f"backbone of this run (same backbone, classes and input channels?): {e}"
            ) from e
        if stage == 3:
            off = _sub_state(state, "off.")
            if not off:
                raise ValueError(
                    f"OFFNetwork: init_checkpoint {path} has no OFF sub-network (a stage-1 "
                    "checkpoint?); stage 3 fine-tunes end to end from a stage-2 checkpoint"
                )
            try:
                self.off.load_state_dict(off)
            except RuntimeError as e:
                raise ValueError(
                    f"OFFNetwork: the OFF sub-network of {path} does not fit this run's "
                    f"(taps, off_widths, off_mode, off_reduce...): {e}"
                ) from e

    def train(self, mode: bool = True):  # noqa: D102  (stage 2: the backbone stays frozen)
        super().train(mode)
        if self.hparams.stage == 2:
            self.net.eval()
        return self

    def on_fit_start(self) -> None:
        """Stages 2 and 3 start from a checkpoint of the stage before (or resume)."""
        super().on_fit_start()  # the RGB normalisation the backbone's weights expect
        hp = self.hparams
        if hp.stage >= 2 and not hp.init_checkpoint and not self.trainer.ckpt_path:
            prev = "a stage-1 (TSN backbone)" if hp.stage == 2 else "a stage-2"
            raise ValueError(
                f"OFFNetwork: stage {hp.stage} starts from {prev} checkpoint: set "
                "model.init_checkpoint (--model.init_args.init_checkpoint PATH)"
            )

    def setup(self, stage: str) -> None:
        """Give the data module's datasets OFF's test-time frame count beta (the interval)."""
        hp = self.hparams
        trainer = self._trainer
        dm = getattr(trainer, "datamodule", None) if trainer is not None else None
        if dm is None:
            return
        if hp.stage >= 2 and getattr(dm.hparams, "sampling", "fixed") != "fixed":
            warnings.warn(
                f"OFFNetwork stage {hp.stage}: data.sampling is {dm.hparams.sampling!r}; OFF "
                "samples frames at a fixed interval (data.sampling: fixed)",
                stacklevel=2,
            )
        for name in ("train_set", "val_set"):
            ds = getattr(dm, name, None)
            if ds is not None and getattr(ds, "sampling", None) == "fixed":
                ds.test_segments = hp.test_segments

    # ---- the network ----

    def _backbone_input(self, flat: Tensor) -> Tensor:
        if self.raw is not None:
            b, c, h, w = flat.shape
            flat = self.raw(flat.view(b, c // 3, 3, h, w)).flatten(1, 2)
        if self.hparams.channels_last:
            flat = flat.contiguous(memory_format=torch.channels_last)
        return flat

    def heads(self, x: Tensor) -> dict[str, Tensor | list[Tensor]]:
        """Every head's video-level scores for ``x (N, S, C, H, W)``.

        Returns:
            ``backbone (N, K)`` (the TSN scores averaged over segments), ``levels`` (a list of
            ``(N, K)``, one per OFF level, empty in stage 1) and ``fused (N, K)``
            (``fusion_weights`` of the backbone and the last level; the backbone in stage 1).
        """
        if x.dim() != 5:
            raise ValueError(
                f"OFFNetwork: expected (N, S, C, H, W) frames of S segments, got {tuple(x.shape)}"
            )
        n, s = x.shape[:2]
        if self.off is not None and s < 2:
            raise ValueError(
                f"OFFNetwork: OFF needs >= 2 segments per video (data.num_segments, "
                f"val_segments), got {s}"
            )
        flat = self._backbone_input(x.flatten(0, 1))
        names = [nm for lv in self.taps for nm in lv] if self.off is not None else []
        frozen = torch.no_grad() if self.hparams.stage == 2 else contextlib.nullcontext()
        with frozen, tapped(self.net, names) as store:
            scores = self.net(flat)
        backbone = scores.view(n, s, -1).mean(1)
        levels: list[Tensor] = []
        if self.off is not None:
            feats = []
            for lv in self.taps:
                f = torch.cat([store[nm] for nm in lv], 1) if len(lv) > 1 else store[lv[0]]
                feats.append(f.view(n, s, *f.shape[1:]))
            levels = self.off(feats)
        wb, wo = self.hparams.fusion_weights
        fused = wb * backbone + wo * levels[-1] if levels else backbone
        return {"backbone": backbone, "levels": levels, "fused": fused}

    def forward(self, x: Tensor) -> Tensor:
        """Test-time scores ``(N, K)``: backbone and last OFF level fused (stage 1: backbone)."""
        return self.heads(x)["fused"]

    def objective(self, batch) -> dict:
        """The loss of a ``(x, y)`` batch and its parts.

        Stage 1: the backbone's cross-entropy. Stage 2: the sum over OFF levels of
        ``level_weights[l] * CE(level l)`` (the backbone is frozen). Stage 3: that plus
        ``backbone_weight * CE(backbone)``. Returns the :meth:`heads` scores and ``loss``,
        ``ce_backbone``, ``ce_levels`` (a list).
        """
        x, y = batch
        out = self.heads(x)
        ce_b = F.cross_entropy(out["backbone"], y)
        ce_l = [F.cross_entropy(s, y) for s in out["levels"]]
        stage = self.hparams.stage
        if stage == 1:
            loss = ce_b
        else:
            loss = sum(w * c for w, c in zip(self.level_weights, ce_l, strict=True))
            if stage == 3:
                loss = loss + self.hparams.backbone_weight * ce_b
        out.update(loss=loss, ce_backbone=ce_b, ce_levels=ce_l)
        return out

    def _step(self, batch, stage: str) -> Tensor:
        out = self.objective(batch)
        y = batch[-1]
        n = len(y)

        def acc(s: Tensor) -> Tensor:
            return (s.argmax(1) == y).float().mean()

        self.log(f"{stage}/loss", out["loss"], prog_bar=True, batch_size=n)
        self.log(f"{stage}/acc", acc(out["fused"]), prog_bar=True, batch_size=n)
        self.log(f"{stage}/ce_backbone", out["ce_backbone"], batch_size=n)
        self.log(f"{stage}/acc_backbone", acc(out["backbone"]), batch_size=n)
        for i, (c, s) in enumerate(zip(out["ce_levels"], out["levels"], strict=True)):
            self.log(f"{stage}/ce_level{i}", c, batch_size=n)
            self.log(f"{stage}/acc_level{i}", acc(s), batch_size=n)
        return out["loss"]

    def inference_network(self) -> nn.Module:
        """Fused scores of videos of ``test_segments`` frames folded into the batch.

        Input ``(N * test_segments, C, H, W)`` (each video's frames consecutive, as
        :func:`mvaccel.train.evaluate.evaluate` folds them, ten crops too); output
        ``(N * test_segments, K)``: every frame of a video carries the video's fused score, so
        the average over its frames is that score.
        """
        return _OFFInference(self)


class _OFFInference(nn.Module):
    """What ``mvaccel eval`` runs for an :class:`OFFNetwork` (shares its weights)."""

    def __init__(self, model: OFFNetwork):
        super().__init__()
        self.model = model
        self.segments = model.hparams.test_segments

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        s = self.segments if self.model.off is not None else 1
        if x.shape[0] % s:
            raise ValueError(
                f"OFFNetwork: {x.shape[0]} frames are not whole videos of test_segments={s} "
                "frames: evaluate with segments equal to the model's test_segments"
            )
        fused = self.model(x.view(-1, s, *x.shape[1:]))
        return fused.repeat_interleave(s, dim=0)


__all__ = ["DEFAULT_TAPS", "OFFNetwork"]
