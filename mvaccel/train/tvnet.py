"""TVNet end to end (Fan et al., CVPR 2018): TVNet's flow feeding a temporal-stream classifier.

A training sample is a stack of ``K + 1`` consecutive RGB frames (``VideoDataModule`` with
``modalities: [rgb]`` and ``new_length: K + 1``; the paper: 6 frames, 5 flows). TVNet
(:class:`mvaccel.nn.TVNet`, TV-L1 unrolled, trainable ``u0`` and filters) computes the flow of
every consecutive pair; the ``K`` fields are stacked as ``2K`` channels ``x_1, y_1, x_2, ...``
and normalised as a flow CNN's input (clip to ``±flow_clip``, ``normalize_motion`` with
``flow_std``). The classifier starts, as in the paper, from ImageNet BN-Inception with TSN's
cross-modality initialisation (``classifier_init="imagenet"``); a classifier already trained on
stored TV-L1 flow (``recipes/two_stream_flow.yaml``) is the ``"flow"`` option. The loss is eq. 13,
``L = L_c + 0.1 * L_f``, with ``L_f`` the TV-L1 energy of TVNet's flow (eq. 1 with the exact,
warped data term: :func:`mvaccel.distill.tvl1_energy`); TVNet's learning rate is the
classifier's divided by 255 ("the learning rate for TVNets is further divided by 255").
At test time the network reads RGB frames only: no flow is computed beforehand or stored.

**Direction.** ``direction="backward"`` (default) computes field ``t`` as
``TVNet(I_t, I_{t-1})``: the direction of ``mvaccel flow --backward`` (what ``mvaccel prepare``
stores and the flow CNNs of the recipes train on) and of motion vectors. ``"forward"`` computes
``TVNet(I_{t-1}, I_t)`` (dense_flow's order, the paper's ``u^t`` from ``t`` to ``t + 1``).

**Two-stream.** The paper fuses the TVNet stream with an RGB net, spatial : temporal = 1 : 2:
``mvaccel eval`` both checkpoints with ``--out``, then ``mvaccel fuse rgb.npz tvnet.npz
--weights 1 2``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import distill
from ..data.datasets import IMAGENET_MEAN, IMAGENET_STD
from ..data.transforms import normalize_motion
from ..nn.tvnet import TVNet, renamed_kwargs
from .modules import ActionClassifier, _fold

DIRECTIONS = ("backward", "forward")
#: TVNetClassifier's old argument spellings -> the :class:`mvaccel.flow.TVL1Params` names.
RENAMED_ARGS = {
    "tvnet_scales": "nscales",
    "iters": "iterations",
    "lbda": "lambda_",
    "zfactor": "scale_step",
}
#: where the classifier starts: ImageNet weights (cross-modality), a flow-trained net, nothing.
CLASSIFIER_INITS = ("imagenet", "flow", "scratch")


def rgb_stack_frames(x: Tensor) -> Tensor:
    """ImageNet-normalised RGB stacks ``(M, 3 * T, H, W)`` -> frames ``(M, T, 3, H, W)`` in [0, 1].

    Undoes :class:`mvaccel.data.VideoDataset`'s RGB normalisation (``/255``, ImageNet mean and
    std); values are clamped to ``[0, 1]``.
    """
    if x.dim() != 4 or x.shape[1] % 3:
        raise ValueError(f"expected RGB stacks (M, 3 * T, H, W), got {tuple(x.shape)}")
    m, c, h, w = x.shape
    frames = x.view(m, c // 3, 3, h, w)
    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype, device=x.device).view(1, 1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=x.dtype, device=x.device).view(1, 1, 3, 1, 1)
    return (frames * std + mean).clamp(0, 1)


def frame_pairs(frames: Tensor, direction: str = "backward") -> tuple[Tensor, Tensor]:
    """The ``(I0, I1)`` pairs of consecutive frames whose flow is field ``t`` of the stack.

    Args:
        frames: ``(M, T, C, H, W)``.
        direction: ``"backward"``: ``(I_t, I_{t-1})``; ``"forward"``: ``(I_{t-1}, I_t)``.

    Returns:
        ``I0, I1`` each ``(M * (T - 1), C, H, W)``, stack-major (field order within a stack).
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    m, t = frames.shape[:2]
    if t < 2:
        raise ValueError(f"a stack needs 2 or more frames, got {t}")
    prev = frames[:, :-1].reshape(m * (t - 1), *frames.shape[2:])
    nxt = frames[:, 1:].reshape(m * (t - 1), *frames.shape[2:])
    return (nxt, prev) if direction == "backward" else (prev, nxt)


class TVNetPipeline(nn.Module):
    """RGB stacks -> TVNet flow stacks -> classifier scores: what ``mvaccel eval`` runs.

    Args:
        tvnet: the :class:`~mvaccel.nn.TVNet`.
        classifier: a network on ``2K``-channel flow stacks.
        bound / motion_std: the flow CNN's input normalisation
            (:func:`mvaccel.data.transforms.normalize_motion`).
        direction: see the module docstring.
        channels_last: feed the classifier channels-last tensors.

    Shapes:
        ``forward(x)``: ``(M, 3 * (K + 1), H, W)`` ImageNet-normalised RGB stacks (the data
        module's ``rgb`` modality) -> ``(M, num_classes)`` scores.
    """

    def __init__(
        self,
        tvnet: TVNet,
        classifier: nn.Module,
        bound: float = 20.0,
        motion_std: float = 1.0,
        direction: str = "backward",
        channels_last: bool = False,
    ):
        super().__init__()
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        self.tvnet, self.classifier = tvnet, classifier
        self.bound, self.motion_std = bound, motion_std
        self.direction, self.channels_last = direction, channels_last

    def flow(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(I0, I1, u)``: the frame pairs in [0, 1] and TVNet's flow of each, in pixels.

        ``u`` is ``(M * K, 2, H, W)`` float32, always computed in float32 (autocast off: the
        solver's thresholds are not made for half precision).
        """
        i0, i1 = frame_pairs(rgb_stack_frames(x.float()), self.direction)
        with torch.autocast(x.device.type, enabled=False):
            u = self.tvnet(i0, i1)
        return i0, i1, u

    def stack(self, u: Tensor, stacks: int) -> Tensor:
        """``(M * K, 2, H, W)`` pixels -> ``(M, 2K, H, W)`` normalised classifier input."""
        s = normalize_motion(u, self.bound, self.motion_std).reshape(stacks, -1, *u.shape[-2:])
        return s.contiguous(memory_format=torch.channels_last) if self.channels_last else s

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        _, _, u = self.flow(x)
        return self.classifier(self.stack(u, x.shape[0]))


class TVNetClassifier(ActionClassifier):
    """TVNet + a temporal-stream classifier trained end to end (Fan et al., eq. 13).

    Args:
        in_channels: the RGB stack's channels, ``3 * (K + 1)`` (linked from the data:
            ``modalities: [rgb]``, ``new_length: K + 1``); the classifier gets ``2K``.
        nscales / warps / iterations: TVNet-``nscales``-``warps``-``iterations`` (the paper's
            TVNet-50: 1, 1, 50).
        tau / lambda_ / theta / scale_step: TV-L1's parameters (0.25, 0.15, 0.3; pyramid ratio
            0.5), named as :class:`mvaccel.flow.TVL1Params`' fields.
        tvnet_scales / iters / lbda / zfactor: deprecated spellings of ``nscales``,
            ``iterations``, ``lambda_``, ``scale_step`` (still read, from Python, recipes and
            old checkpoints, with a ``DeprecationWarning``).
        tvnet_trainable: ``"filters"`` and/or ``"u0"`` (the paper trains both); ``[]`` freezes
            TVNet ("TVNet-50 (no training)" of Table 3).
        tvnet_size: ``(H, W)`` of a per-pixel trainable ``u0`` (the crop size), ``None`` for
            one global vector.
        preprocess: ``"tvl1"`` (BT.601 grey 0..255) or ``"authors"`` (also their pair min-max
            scaling and 5x5 Gaussian); see :class:`~mvaccel.nn.TVNet`.
        fused: TVNet's iterations in the fused op (False: unrolled PyTorch, the reference).
        flow_weight: ``lambda`` of eq. 13 (0.1); 0 is Table 3's "no flow loss".
        tvnet_lr_div: TVNet's learning rate is ``lr / tvnet_lr_div`` (255, the paper's).
        tvnet_weight_decay: weight decay of TVNet's parameters (0: decay would pull the TV-L1
            taps and ``u0`` towards zero; the paper does not say).
        flow_clip / flow_std: the flow normalisation of the classifier's training data (set
            them to the flow CNN's ``data.bound`` and ``data.motion_std``; other names than the
            data module's, whose hyper-parameters Lightning logs beside these).
        direction: ``"backward"`` or ``"forward"`` (module docstring).
        classifier_init: where the classifier starts.

            - ``"imagenet"`` (the paper's route, ``recipes/tvnet_e2e.yaml``'s default):
              ``pretrained``, ImageNet BN-Inception weights, with TSN's cross-modality
              initialisation (the first kernel's mean over RGB replicated to the ``2K`` flow
              channels; :func:`mvaccel.nn.backbones.load_weights`).
            - ``"flow"``: ``classifier_checkpoint``, a network already trained on stored TV-L1
              flow (a shortcut the paper does not take).
            - ``"scratch"``: random weights (ablations, tests).

            ``None``: ``"flow"`` if ``classifier_checkpoint`` is given, else ``"imagenet"`` if
            ``pretrained`` is, else ``"scratch"``.
        classifier_checkpoint: the flow-trained classifier of ``classifier_init="flow"``: a
            checkpoint of ``mvaccel train`` (e.g. ``recipes/two_stream_flow.yaml``'s
            ActionClassifier, same backbone and ``2K`` input channels) or a plain state dict of
            the backbone; loaded strictly.
        channels_last: run the classifier in channels-last memory format (GPUs with AMP).
        **kw: :class:`ActionClassifier`'s arguments (backbone, optimizer, lr, milestones...).
    """

    INFERENCE_OVERRIDES: ClassVar[dict] = dict(
        classifier_init="scratch", classifier_checkpoint=None, pretrained=None
    )
    NET_READS_RGB: ClassVar[bool] = False  # the classifier reads TVNet's flow

    def __init__(
        self,
        in_channels: int = 18,
        nscales: int = 1,
        warps: int = 1,
        iterations: int = 50,
        tau: float = 0.25,
        lambda_: float = 0.15,
        theta: float = 0.3,
        scale_step: float = 0.5,
        tvnet_trainable: Sequence[str] = ("filters", "u0"),
        tvnet_size: Sequence[int] | None = None,
        preprocess: str = "tvl1",
        fused: bool = True,
        flow_weight: float = 0.1,
        tvnet_lr_div: float = 255.0,
        tvnet_weight_decay: float = 0.0,
        flow_clip: float = 20.0,
        flow_std: float = 1.0,
        direction: str = "backward",
        classifier_init: str | None = None,
        classifier_checkpoint: str | None = None,
        channels_last: bool = False,
        tvnet_scales: int | None = None,
        iters: int | None = None,
        lbda: float | None = None,
        zfactor: float | None = None,
        **kw,
    ):
        old = dict(tvnet_scales=tvnet_scales, iters=iters, lbda=lbda, zfactor=zfactor)
        old = {k: v for k, v in old.items() if v is not None}
        if old:
            defaults = {"nscales": 1, "iterations": 50, "lambda_": 0.15, "scale_step": 0.5}
            here = {"nscales": nscales, "iterations": iterations, "lambda_": lambda_,
                    "scale_step": scale_step}  # fmt: skip
            given = {k: v for k, v in here.items() if v != defaults[k]}
            new = renamed_kwargs("TVNetClassifier", old, RENAMED_ARGS, given)
            nscales = new.get("nscales", nscales)
            iterations = new.get("iterations", iterations)
            lambda_ = new.get("lambda_", lambda_)
            scale_step = new.get("scale_step", scale_step)
            # save_hyperparameters reads this frame: record the new names only
            tvnet_scales = iters = lbda = zfactor = None
        _check_classifier_init(classifier_init, classifier_checkpoint, kw.get("pretrained"))
        if in_channels % 3 or in_channels < 6:
            raise ValueError(
                "TVNetClassifier: in_channels must be 3 * (K + 1), the RGB stack of K + 1 >= 2 "
                f"frames (data.modalities: [rgb], data.new_length: K + 1), got {in_channels}"
            )
        if direction not in DIRECTIONS:
            raise ValueError(f"TVNetClassifier: direction must be one of {DIRECTIONS}, "
                             f"got {direction!r}")  # fmt: skip
        if flow_weight < 0 or tvnet_lr_div <= 0:
            raise ValueError(
                f"TVNetClassifier: need flow_weight >= 0 and tvnet_lr_div > 0, got "
                f"{flow_weight} and {tvnet_lr_div}"
            )
        flow_channels = 2 * (in_channels // 3 - 1)
        # The backbone reads the 2K flow channels; hparams keep the data's in_channels (the
        # subclass's arguments win in save_hyperparameters).
        super().__init__(in_channels=flow_channels, **kw)
        if self.image_dims != 3:
            raise ValueError("TVNetClassifier: the classifier must be a 2D backbone, got "
                             f"{self.hparams.backbone!r}")  # fmt: skip
        if old:  # the hyper-parameters (checkpoints, logs) hold the new names only
            self.hparams.update({k: None for k in old if k in self.hparams})
            self.hparams.update(nscales=nscales, iterations=iterations, lambda_=lambda_,
                                scale_step=scale_step)  # fmt: skip
        self.flow_channels = flow_channels
        self.tvnet = TVNet(
            nscales=nscales, warps=warps, iterations=iterations, tau=tau, lambda_=lambda_,
            theta=theta, scale_step=scale_step, trainable=tuple(tvnet_trainable),
            size=tuple(tvnet_size) if tvnet_size else None, preprocess=preprocess, fused=fused,
        )  # fmt: skip
        if classifier_checkpoint:
            load_flow_classifier(self.net, classifier_checkpoint, self.hparams.backbone,
                                 flow_channels)  # fmt: skip
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        self._settings = dict(bound=flow_clip, motion_std=flow_std, direction=direction,
                              channels_last=channels_last)  # fmt: skip

    @property
    def pipeline(self) -> TVNetPipeline:
        """The inference pipeline over this module's ``tvnet`` and ``net``.

        Not a registered submodule: the weights are saved once, under ``tvnet.`` and ``net.``.
        """
        p = self.__dict__.get("_pipeline")
        if p is None or p.tvnet is not self.tvnet or p.classifier is not self.net:
            p = TVNetPipeline(self.tvnet, self.net, **self._settings)
            self.__dict__["_pipeline"] = p
        return p

    def setup(self, stage: str) -> None:  # noqa: D102  (a data module of another modality)
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        for attr in ("modalities", "val_modalities"):
            mods = tuple(getattr(dm, attr, None) or ())
            if mods and mods[0] != "rgb":
                raise ValueError(
                    f"TVNetClassifier reads RGB frame stacks: data.{attr} must start with 'rgb' "
                    f"(new_length K + 1 frames for K flows), got {list(mods)}"
                )

    def inference_network(self) -> nn.Module:
        """RGB stacks ``(N*S, 3(K+1), H, W)`` -> scores: TVNet then the classifier."""
        return self.pipeline

    def forward(self, x: Tensor) -> Tensor:
        """Scores ``(N, num_classes)`` of RGB stacks ``(N, [S,] 3(K+1), H, W)``."""
        flat, s = _fold(x, 3)
        self._check_input(flat)
        return self.pipeline(flat).view(-1, s, self.hparams.num_classes).mean(1)

    def _check_input(self, flat: Tensor) -> None:
        if flat.shape[1] != self.hparams.in_channels:
            raise ValueError(
                f"TVNetClassifier: expected RGB stacks of {self.hparams.in_channels} channels "
                f"({self.hparams.in_channels // 3} frames), got {tuple(flat.shape)}"
            )

    def objective(self, batch) -> dict[str, Tensor]:
        """Eq. 13 on an ``(x, y)`` batch: ``loss = ce + flow_weight * flow`` and its parts.

        ``flow`` is :func:`mvaccel.distill.tvl1_energy` of TVNet's flow on the frame pairs in
        0..255 grey (the units TVNet solves in), averaged over pixels and pairs.
        """
        x, y = batch
        hp = self.hparams
        flat, s = _fold(x, 3)
        self._check_input(flat)
        i0, i1, u = self.pipeline.flow(flat)
        scores = self.net(self.pipeline.stack(u, flat.shape[0]))
        logits = scores.view(-1, s, hp.num_classes).mean(1)
        ce = F.cross_entropy(logits, y)
        out = {"logits": logits, "ce": ce}
        if hp.flow_weight > 0:
            out["flow"] = distill.tvl1_energy(i0 * 255.0, i1 * 255.0, u, lambda_=self.tvnet.lambda_)
            out["loss"] = ce + hp.flow_weight * out["flow"]
        else:
            out["loss"] = ce
        return out

    def training_step(self, batch, batch_idx):  # noqa: D102
        out = self.objective(batch)
        y = batch[-1]
        self.log("train/ce", out["ce"], batch_size=len(y))
        if "flow" in out:
            self.log("train/flow", out["flow"], batch_size=len(y))
        self.log("train/loss", out["loss"], prog_bar=True, batch_size=len(y))
        acc = (out["logits"].argmax(1) == y).float().mean()
        self.log("train/acc", acc, prog_bar=True, batch_size=len(y))
        return out["loss"]

    def param_groups(self) -> list[dict]:
        """The classifier's parameters at ``lr``; TVNet's at ``lr / tvnet_lr_div``."""
        hp = self.hparams
        groups = [{"params": [p for p in self.net.parameters() if p.requires_grad]}]
        tv = [p for p in self.tvnet.parameters() if p.requires_grad]
        if tv:
            groups.append({
                "params": tv, "lr": hp.lr / hp.tvnet_lr_div,
                "weight_decay": hp.tvnet_weight_decay, "name": "tvnet",
            })  # fmt: skip
        return groups


def _check_classifier_init(init: str | None, checkpoint: str | None, pretrained: str | None):
    if init is None:
        if checkpoint and pretrained:
            raise ValueError(
                "TVNetClassifier: give classifier_checkpoint (a flow-trained start) or "
                "pretrained (ImageNet weights), not both"
            )
        return
    if init not in CLASSIFIER_INITS:
        raise ValueError(
            f"TVNetClassifier: classifier_init must be one of {CLASSIFIER_INITS}, got {init!r}"
        )
    if init == "imagenet" and (not pretrained or checkpoint):
        raise ValueError(
            "TVNetClassifier: classifier_init 'imagenet' (the paper's start) needs pretrained: "
            "ImageNet BN-Inception weights (--model.init_args.pretrained FILE) and no "
            "classifier_checkpoint; for a flow-trained start set classifier_init 'flow'"
        )
    if init == "flow" and (not checkpoint or pretrained):
        raise ValueError(
            "TVNetClassifier: classifier_init 'flow' needs classifier_checkpoint (a flow-trained "
            "classifier) and no pretrained"
        )
    if init == "scratch" and (checkpoint or pretrained):
        raise ValueError(
            "TVNetClassifier: classifier_init 'scratch' takes neither pretrained nor "
            "classifier_checkpoint"
        )


def load_flow_classifier(
    net: nn.Module, path: str | Path, backbone: str | None = None, in_channels: int | None = None
) -> None:
    """Load a flow-trained classifier into ``net`` (strict).

    ``path``: a Lightning checkpoint of ``mvaccel train`` (an :class:`ActionClassifier` on
    flow, e.g. ``recipes/teacher_flow.yaml``; its ``net.*`` weights) or a plain state dict of
    the backbone (``state_dict`` / ``model`` keys and DataParallel's ``module.`` are unwrapped).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the checkpoint's backbone or input channels differ from ``backbone`` /
            ``in_channels``, or its weights do not fit ``net``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"classifier checkpoint not found: {path}")
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(ckpt, dict):
        raise ValueError(f"{path}: not a checkpoint or state dict ({type(ckpt).__name__})")
    hp = ckpt.get("hyper_parameters") or {}
    if backbone is not None and hp.get("backbone", backbone) != backbone:
        raise ValueError(
            f"{path}: a {hp['backbone']!r} classifier, this model's backbone is {backbone!r}"
        )
    if in_channels is not None and hp.get("in_channels", in_channels) != in_channels:
        raise ValueError(
            f"{path}: trained on {hp['in_channels']} input channels ({hp['in_channels'] // 2} "
            f"flow fields), TVNet gives {in_channels}: data.new_length must be "
            f"{hp['in_channels'] // 2 + 1} RGB frames"
        )
    state = ckpt
    for key in ("state_dict", "model"):
        if isinstance(state.get(key), dict):
            state = state[key]
    state = {k.removeprefix("module."): v for k, v in state.items()}
    if any(k.startswith("net.") for k in state):
        state = {k[4:]: v for k, v in state.items() if k.startswith("net.")}
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(f"{path}: the weights do not fit the classifier: {e}") from e


def train_tvnet_epe(
    tvnet: TVNet,
    pairs: Sequence,
    steps: int = 3000,
    lr: float = 0.05,
    log_every: int = 0,
) -> list[tuple[int, float]]:
    """Fan et al.'s Table 1 training: TVNet fitted to ground-truth flow with EPE (eq. 14).

    Full-batch gradient descent ("batch gradient descent ... learning rate and max-iteration
    0.05 and 3000"): every step's loss is the mean over all pairs of their EPE on the pixels
    with known flow; plain SGD (no momentum, no decay) on TVNet's trainable parameters.

    Args:
        tvnet: the network (its ``trainable`` parts are fitted in place).
        pairs: :class:`mvaccel.data.middlebury.FlowPair` (or any objects with ``i0``, ``i1``
            ``(3, H, W)`` uint8, ``flow`` ``(2, H, W)`` pixels and ``valid`` ``(H, W)``); sizes
            may differ from pair to pair.
        steps: gradient steps (3000).
        lr: learning rate (0.05).
        log_every: record the loss every that many steps (0: only before and after).

    Returns:
        ``(step, mean EPE in pixels)`` pairs, from step 0 (untrained) to ``steps``.
    """
    if not pairs:
        raise ValueError("train_tvnet_epe: no flow pairs")
    params = [p for p in tvnet.parameters() if p.requires_grad]
    if not params:
        raise ValueError("train_tvnet_epe: TVNet has no trainable parameters (trainable=[])")
    opt = torch.optim.SGD(params, lr=lr, momentum=0.0)

    def loss() -> Tensor:
        total = 0.0
        for p in pairs:
            u = tvnet(p.i0[None], p.i1[None])
            total = total + distill.epe(u, p.flow[None].to(u), p.valid[None])
        return total / len(pairs)

    history = []
    for step in range(steps + 1):
        current = loss()
        if step in (0, steps) or (log_every and step % log_every == 0):
            history.append((step, float(current)))
        if step == steps:
            break
        opt.zero_grad()
        current.backward()
        opt.step()
    return history
