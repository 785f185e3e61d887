"""LightningModules of the methods: a TSN-style action classifier and Zhang et al.'s DTMV-CNN.

Batches are ``(x, y)`` for a classifier and ``(mv, flow, y)`` for motion-vector transfer, with
``x`` either ``(N, C, H, W)`` or ``(N, S, C, H, W)`` (S segments / crops, whose scores are
averaged: TSN's consensus and the papers' test-time averaging).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import distill
from ..nn import backbones

BACKBONES = {
    "clarifai": backbones.ClarifaiNet,
    "resnet18": backbones.resnet18,
    "resnet50": backbones.resnet50,
    "resnet152": backbones.resnet152,
    "bninception": backbones.BNInception,
    "resnet3d": backbones.resnet3d,  # any depth and width: backbone_kwargs {depth, width}
    "resnet3d18": backbones.resnet3d18,
    "resnet3d50": backbones.resnet3d50,
    "resnet3d101": backbones.resnet3d101,
    "resnext3d": backbones.resnext3d,  # backbone_kwargs {depth, cardinality, width}
    "resnext3d101": backbones.resnext3d101,  # MARS's network
}
#: name prefixes of the clip (3D) backbones: inputs ``(N, [S,] C, T, H, W)``.
CLIP_BACKBONES = ("resnet3d", "resnext3d")


def build_backbone(name: str, num_classes: int, in_channels: int, **kw) -> nn.Module:
    """A backbone of :data:`BACKBONES` by name."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; known: {sorted(BACKBONES)}")
    return BACKBONES[name](num_classes=num_classes, in_channels=in_channels, **kw)


def last_linear(net: nn.Module) -> nn.Linear:
    """A classifier's last layer: its final ``nn.Linear`` (ResNet's ``fc``, ClarifaiNet's fc8)."""
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(net).__name__} has no nn.Linear last layer")
    return linears[-1]


def _before_dropout(module: nn.Module) -> nn.Module:
    """The submodule whose output is ``module``'s output before its trailing dropout.

    A stage such as ClarifaiNet's ``fc6 = Sequential(Linear, PReLU, Dropout)`` yields its
    ``PReLU``; a module without trailing dropout is itself.
    """
    while isinstance(module, nn.Sequential) and len(module) > 0:
        kids = list(module)
        while kids and isinstance(kids[-1], nn.modules.dropout._DropoutNd):
            kids.pop()
        if not kids:
            raise ValueError(f"{module} holds only dropout: nothing to tap before it")
        if len(kids) == len(module):
            return module
        module = kids[-1]
    return module


@contextlib.contextmanager
def tapped(model: nn.Module, names: Sequence[str], before_dropout: bool = False):
    """Record the outputs of ``model``'s submodules ``names`` while the block runs.

    Args:
        model: the network.
        names: submodule names (``model.named_modules()``).
        before_dropout: record a stage's output before its trailing dropout (the activation
            itself: the same in train and eval mode) instead of after it.

    Yields:
        A dict that fills with ``name -> output`` on every forward pass.
    """
    modules = dict(model.named_modules())
    missing = [n for n in names if n not in modules]
    if missing:
        raise ValueError(f"{type(model).__name__} has no submodules {missing}")
    store: dict[str, Tensor] = {}
    handles = []
    for n in names:
        m = _before_dropout(modules[n]) if before_dropout else modules[n]
        handles.append(m.register_forward_hook(lambda m, i, o, n=n: store.__setitem__(n, o)))
    try:
        yield store
    finally:
        for h in handles:
            h.remove()


def _fold(x: Tensor, image_dims: int) -> tuple[Tensor, int]:
    """``(N, S, *image)`` -> ``(N*S, *image)`` and S (1 when there is no segment axis)."""
    if x.dim() == image_dims + 2:
        return x.flatten(0, 1), x.shape[1]
    if x.dim() == image_dims + 1:
        return x, 1
    raise ValueError(
        f"expected input of {image_dims + 1} or {image_dims + 2} dimensions, got shape "
        f"{tuple(x.shape)}"
    )


class ActionClassifier(L.LightningModule):
    """A backbone trained with cross-entropy on one modality (RGB, flow, MV, residual).

    Args:
        backbone: a name of :data:`BACKBONES`.
        num_classes: classes.
        in_channels: input channels (3 RGB, 2K stacked flow or MV fields).
        backbone_kwargs: extra arguments of the backbone (dropout, prelu...).
        pretrained: a local weights file (cross-modality adapted when channels differ).
        optimizer: ``"sgd"`` or ``"adam"``; ``lr``, ``momentum``, ``weight_decay`` as usual.
        milestones: epochs (or steps, with ``scheduler_interval="step"``: the papers count
            iterations) at which the learning rate is multiplied by ``gamma``.
        scheduler_interval: ``"epoch"`` or ``"step"``.

        step_seed: reseed torch's generator before every training step with
            ``(step_seed, global_step, rank)``, so the step's random draws (dropout) depend only
            on the step: a resumed run repeats the uninterrupted one (with the data module's
            keyed data randomness), and DDP ranks draw differently. None: leave the generator.
        aux_num_classes / aux_weight: multi-task training (Zhang et al. on HMDB51, after
            Simonyan and Zisserman): a second classification head of ``aux_num_classes``
            (UCF101's 101) on the input of the network's last layer, trained with
            ``aux_weight`` times its cross-entropy on the data module's ``aux`` batches; the
            trunk is shared, each dataset has its own head. 0: no second head. Training only:
            evaluation keeps the main head. (:class:`ActionClassifier` and
            :class:`MotionVectorTransfer`.)

    **Methods.** Every method's module derives from this class (LightningCLI's
    ``model.class_path`` and ``mvaccel eval`` rely on it) and keeps ``num_classes`` and
    ``in_channels`` (filled in from the data). Evaluation rebuilds the module from a
    checkpoint's hyper-parameters updated with :attr:`INFERENCE_OVERRIDES` (e.g. no teacher),
    loads the weights (keys under :attr:`TRAINING_ONLY` may be absent from the rebuilt module)
    and runs :meth:`inference_network` on the data module's validation modalities.
    """

    #: hyper-parameters replaced when a checkpoint is rebuilt for inference only.
    INFERENCE_OVERRIDES: ClassVar[dict] = dict(aux_num_classes=0)
    #: state-dict prefixes of training-only parts (teachers, discriminators, second heads).
    TRAINING_ONLY: ClassVar[tuple[str, ...]] = ("aux_head.",)
    #: whether :attr:`net` reads the data's RGB / I-frame tensors, whose normalisation (the data
    #: module's ``rgb_norm``) must then be the weights' ``input_norm`` (checked at fit start).
    NET_READS_RGB: ClassVar[bool] = True

    def __init__(
        self,
        backbone: str = "resnet18",
        num_classes: int = 101,
        in_channels: int = 3,
        backbone_kwargs: dict | None = None,
        pretrained: str | None = None,
        optimizer: str = "sgd",
        lr: float = 1e-3,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        milestones: Sequence[int] = (),
        gamma: float = 0.1,
        scheduler_interval: str = "epoch",
        step_seed: int | None = None,
        aux_num_classes: int = 0,
        aux_weight: float = 1.0,
    ):
        super().__init__()
        # Collects the arguments of subclasses' __init__ too; modules are saved as weights.
        self.save_hyperparameters(ignore=["teacher"])
        if optimizer not in ("sgd", "adam"):
            raise ValueError(f"optimizer must be 'sgd' or 'adam', got {optimizer!r}")
        if scheduler_interval not in ("epoch", "step"):
            raise ValueError(
                f"scheduler_interval must be 'epoch' or 'step', got {scheduler_interval!r}"
            )
        self.net = build_backbone(backbone, num_classes, in_channels, **(backbone_kwargs or {}))
        self.image_dims = 4 if backbone.startswith(CLIP_BACKBONES) else 3
        if pretrained:
            backbones.load_weights(self.net, pretrained)
        self.aux_head = None
        if aux_num_classes < 0:
            raise ValueError(f"aux_num_classes must be >= 0, got {aux_num_classes}")
        if aux_num_classes:
            self.aux_head = nn.Linear(last_linear(self.net).in_features, aux_num_classes)

    def aux_loss(self, batch) -> Tensor:
        """Cross-entropy of the second head on an ``aux`` batch ``(x, ..., y)`` (first input).

        The trunk runs on ``x``; the head reads what the network's last layer reads.
        """
        if self.aux_head is None:
            raise ValueError(
                "the data module gives aux batches (data.aux: multi-task training) but the model "
                "has no second head: set model.init_args.aux_num_classes"
            )
        x, y = batch[0], batch[-1]
        flat, s = _fold(x, self.image_dims)
        store = {}
        hook = last_linear(self.net).register_forward_pre_hook(
            lambda m, inp: store.__setitem__("x", inp[0])
        )
        try:
            self.net(flat)
        finally:
            hook.remove()
        logits = self.aux_head(store["x"]).view(-1, s, self.aux_head.out_features).mean(1)
        return F.cross_entropy(logits, y)

    def _with_aux(self, batch, main_loss) -> Tensor:
        """The training loss of a plain batch, or of a multi-task one (``main`` + ``aux``).

        A batch ``{"main": ..., "aux": ...}`` (the data module's ``aux``) gives
        ``main_loss(main) + aux_weight * aux_loss(aux)``; a plain batch ``main_loss(batch)``.
        """
        if not isinstance(batch, dict):
            return main_loss(batch)
        loss = main_loss(batch["main"])
        aux = self.aux_loss(batch["aux"])
        self.log("train/aux_ce", aux, batch_size=len(batch["aux"][-1]))
        return loss + self.hparams.aux_weight * aux

    def setup(self, stage: str) -> None:  # noqa: D102  (the second head fits the aux lists)
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        aux = getattr(dm, "aux_module", None)
        want = self.hparams.get("aux_num_classes", 0)
        if aux is not None and want != aux.num_classes:
            raise ValueError(
                f"model.init_args.aux_num_classes is {want}, the aux lists ({aux.root}) have "
                f"{aux.num_classes} classes"
            )

    def inference_network(self) -> nn.Module:
        """What evaluation runs: one tensor per validation modality in, scores out.

        Each input is ``(N * S, ...)`` (segments folded into the batch); the output is
        ``(N * S, K)`` scores.
        """
        return self.net

    def on_fit_start(self) -> None:
        """Refuse RGB normalised otherwise than the ``pretrained`` weights expect (``input_norm``).

        Networks without pre-trained weights learn whatever convention the data has.
        """
        dm = getattr(self.trainer, "datamodule", None)
        want = getattr(self.net, "input_norm", None)
        pretrained = self.hparams.get("pretrained")
        if dm is None or want is None or not self.NET_READS_RGB or not pretrained:
            return
        mods = set(getattr(dm, "modalities", ()) or ())
        mods |= set(getattr(dm, "val_modalities", ()) or ())
        have = dm.hparams.get("rgb_norm", "imagenet") if hasattr(dm, "hparams") else "imagenet"
        if mods & {"rgb", "iframe"} and have != want:
            raise ValueError(
                f"{type(self).__name__}: the network's weights expect RGB normalised as {want!r} "
                f"(from its pretrained file) but data.rgb_norm is {have!r}: set "
                f"--data.rgb_norm {want}"
            )

    def on_save_checkpoint(self, checkpoint: dict) -> None:  # noqa: D102
        cls = type(self)
        checkpoint["mvaccel_module"] = f"{cls.__module__}.{cls.__qualname__}"

    def forward(self, x: Tensor) -> Tensor:
        """Scores ``(N, num_classes)``, averaged over the segment axis if there is one."""
        flat, s = _fold(x, self.image_dims)
        return self.net(flat).view(-1, s, self.hparams.num_classes).mean(1)

    def _step(self, batch, stage: str) -> Tensor:
        x, y = batch
        scores = self(x)
        loss = F.cross_entropy(scores, y)
        self.log(f"{stage}/loss", loss, prog_bar=True, batch_size=len(y))
        self.log(
            f"{stage}/acc", (scores.argmax(1) == y).float().mean(), prog_bar=True, batch_size=len(y)
        )
        return loss

    def training_step(self, batch, batch_idx):  # noqa: D102
        return self._with_aux(batch, lambda b: self._step(b, "train"))

    def validation_step(self, batch, batch_idx):  # noqa: D102
        return self._step(batch, "val")

    def predict_step(self, batch, batch_idx):  # noqa: D102
        x = batch[0] if isinstance(batch, list | tuple) else batch
        return self(x)

    def param_groups(self) -> list[dict]:
        """The optimizer's parameter groups: all trainable parameters in one by default.

        Methods override it for per-part learning rates (TVNet's lr / 255, CoViAR's multipliers).
        """
        return [{"params": [p for p in self.parameters() if p.requires_grad]}]

    def configure_optimizers(self):  # noqa: D102
        hp = self.hparams
        params = self.param_groups()
        if hp.optimizer == "sgd":
            opt = torch.optim.SGD(
                params, lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay
            )
        else:
            opt = torch.optim.Adam(params, lr=hp.lr, weight_decay=hp.weight_decay)
        if not hp.milestones:
            return opt
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, list(hp.milestones), hp.gamma)
        interval = hp.get("scheduler_interval", "epoch")
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": interval}}

    def on_train_batch_start(self, batch, batch_idx) -> None:  # noqa: D102
        seed = self.hparams.get("step_seed")
        if seed is not None:
            mix = np.random.SeedSequence([seed, self.global_step, self.global_rank])
            torch.manual_seed(int(mix.generate_state(1, np.uint64)[0] >> 1))


class MotionVectorTransfer(ActionClassifier):
    """Zhang et al.'s MV-CNN trained from an optical-flow teacher (DTMV-CNN).

    The strategies combine freely: Teacher Initialization (``teacher_init``: the student starts
    from the teacher's weights), Supervision Transfer (``temperature`` > 0: the teacher's soft
    target ``L_TSL`` and the ground truth ``L_GT`` weighted by ``w``, see ``st_weighting``) and
    Deeply Connected Transfer (``connect``: eq. 5-6 between the named layers of student and
    teacher, conv3 ... fc7 by default, weight ``dc_weight``). The connected layers are compared
    before their dropout: ClarifaiNet's fc6 / fc7 activations, not the 90 % / 80 % zeros that
    the student's dropout (p 0.9 / 0.8 in train mode) leaves of them; the teacher runs in eval
    mode.
    Teacher and student share the architecture. At test time the student reads only motion
    vectors: batches of ``(mv, y)``.

    Args:
        teacher: the flow CNN (frozen); or ``teacher_checkpoint``, a file this class or
            :class:`ActionClassifier` saved with Lightning, or a plain state dict of the net.
        teacher_init / temperature / st_weight / connect / dc_weight: the strategies above;
            ``temperature=0`` and ``connect=()`` with ``teacher_init=False`` is MV-CNN from
            scratch. ``st_weight`` is ``w`` (default ``Temp**2``).
        st_weighting: which term ``w`` weights (:func:`mvaccel.distill.supervision_transfer_loss`):
            ``"soft"`` (default; the paper's text and Hinton et al.: ``w * L_TSL + L_GT``) or
            ``"hard"`` (eq. 4 as printed: ``L_TSL + w * L_GT``).
        **kw: :class:`ActionClassifier`'s arguments (the student's backbone etc.).
    """

    INFERENCE_OVERRIDES: ClassVar[dict] = dict(
        teacher_checkpoint=None, teacher_init=False, temperature=0.0, connect=(),
        aux_num_classes=0,
    )  # fmt: skip
    TRAINING_ONLY: ClassVar[tuple[str, ...]] = ("teacher.", "aux_head.")

    def __init__(
        self,
        teacher: nn.Module | None = None,
        teacher_checkpoint: str | None = None,
        teacher_init: bool = True,
        temperature: float = 2.0,
        st_weight: float | None = None,
        st_weighting: str = "soft",
        connect: Sequence[str] = ("conv3", "conv4", "conv5", "fc6", "fc7"),
        dc_weight: float = 1.0,
        **kw,
    ):
        if st_weighting not in distill.ST_WEIGHTINGS:
            raise ValueError(
                f"MotionVectorTransfer: st_weighting must be one of {distill.ST_WEIGHTINGS}, "
                f"got {st_weighting!r}"
            )
        super().__init__(**kw)
        hp = self.hparams
        if teacher is None:
            teacher = build_backbone(
                hp.backbone, hp.num_classes, hp.in_channels, **(hp.backbone_kwargs or {})
            )
            if teacher_checkpoint:
                _load_net(teacher, teacher_checkpoint)
            elif teacher_init or temperature > 0 or connect:
                raise ValueError(
                    "MotionVectorTransfer: the transfer strategies need a teacher: pass "
                    "teacher=... or teacher_checkpoint=..."
                )
        self.teacher = teacher.eval().requires_grad_(False)
        if teacher_init:
            self.net.load_state_dict(self.teacher.state_dict())
        self.connect = tuple(connect)

    def train(self, mode: bool = True):  # noqa: D102  (the teacher stays in eval mode)
        super().train(mode)
        self.teacher.eval()
        return self

    def objective(self, batch) -> dict[str, Tensor]:
        """The training loss of a ``(mv, flow, y)`` batch and its parts (``loss``, ``dc``...)."""
        mv, flow, y = batch
        hp = self.hparams
        mv_flat, s = _fold(mv, self.image_dims)
        flow_flat, _ = _fold(flow, self.image_dims)
        with tapped(self.net, self.connect, before_dropout=True) as fs:
            scores = self.net(mv_flat)
        logits = scores.view(-1, s, hp.num_classes).mean(1)
        out = {"logits": logits}
        if hp.temperature > 0 or self.connect:
            with torch.no_grad(), tapped(self.teacher, self.connect, before_dropout=True) as ft:
                t_scores = self.teacher(flow_flat)
            t_logits = t_scores.view(-1, s, hp.num_classes).mean(1)
        if hp.temperature > 0:
            loss = distill.supervision_transfer_loss(
                logits,
                t_logits,
                y,
                hp.temperature,
                hp.st_weight,
                hp.get("st_weighting", "hard"),  # checkpoints from before the option: eq. 4
            )
        else:
            loss = F.cross_entropy(logits, y)
        if self.connect:
            out["dc"] = distill.deeply_connected_loss(
                [fs[n] for n in self.connect], [ft[n] for n in self.connect]
            )
            loss = loss + hp.dc_weight * out["dc"]
        out["loss"] = loss
        return out

    def training_step(self, batch, batch_idx):  # noqa: D102
        return self._with_aux(batch, self._transfer_step)

    def _transfer_step(self, batch) -> Tensor:
        out = self.objective(batch)
        y = batch[-1]
        if "dc" in out:
            self.log("train/dc", out["dc"], batch_size=len(y))
        self.log("train/loss", out["loss"], prog_bar=True, batch_size=len(y))
        acc = (out["logits"].argmax(1) == y).float().mean()
        self.log("train/acc", acc, prog_bar=True, batch_size=len(y))
        return out["loss"]


def _load_net(net: nn.Module, path: str | Path) -> None:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"teacher checkpoint not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=False)
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if any(k.startswith("net.") for k in state):
        state = {k[4:]: v for k, v in state.items() if k.startswith("net.")}
    net.load_state_dict(state)
