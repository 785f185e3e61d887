"""DMC-Net (Shou et al., CVPR 2019): a generator of discriminative motion cues and its classifier.

Training reads ``(mv, residual, flow, y)`` batches (``data.modalities: [mv, residual, flow]``),
testing ``(mv, residual, y)`` only (``val_modalities: [mv, residual]``): the network never needs
flow or decoded frames at inference. The schedule is the authors' (``facebookresearch/dmc-net``,
``code/dmcnet`` then ``code/dmcnet_GAN``, ``exp_my/*/run.sh``):

- **Stage 1** (``stage="reconstruction"``, recipe ``dmc_net.yaml``): the classifier (ResNet-18)
  starts from a flow-trained one (``flow_checkpoint``); for the first ``mse_only_epochs`` (1)
  epochs only the generator trains, on ``alpha * MSE`` (the classifier is fixed); then
  ``CE + alpha * MSE`` trains both. The flow target is averaged over 16x16 blocks
  (``flow_block``).
- **Stage 2** (``stage="adversarial"``, recipe ``dmc_net_gan.yaml``): from stage 1's weights
  (``init_checkpoint``), steps alternate: even batches train the discriminator and the
  classifier on ``CE + d_adv_weight * L_adv^D`` (0.01, generator fixed), odd batches the
  generator on ``CE + adv_weight * L_adv^G + alpha * MSE`` (lambda = 1, alpha = 10) against the
  full-resolution flow.

Separate Adam optimizers (``eps = 1e-3``, weight decay 1e-4 except biases) for classifier,
generator and discriminator, base lr 0.01 with multipliers 0.01 (classifier), 1 (generator),
1 (discriminator), divided by 10 at epochs 20, 35, 45 of 50.

**Where the paper and the authors' code disagree**, both readings are options; the default is
the authors' code (what produced their tables):

- ``alternation``: ``"authors"`` (default) as above; ``"paper"`` (Sec. 3.3.2 and eq. 4: "D is
  trained while G_DMC and the downstream action classifier are fixed"): even batches train the
  discriminator alone on ``L_adv^D``, odd batches the generator *and the classifier* on
  ``CE + lambda * L_adv^G + alpha * MSE``.
- ``classifier_lr``: ``"authors"`` (default): the whole classifier at ``lr * cls_lr_mult``;
  ``"paper"`` (supplementary, both stages: "all layers in the classification network except
  its last layer have the learning rate set to be 100x smaller"): its last layer (the final
  ``nn.Linear``) at ``lr``, the rest at ``lr * cls_lr_mult``.

The two ablations of the supplementary are options: ``smooth_block=16`` feeds the generator
the bilinear-smoothed MV (7.8), ``attention="cam"`` weights the MSE by the flow classifier's
class activation map of the true class (7.4).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from ..nn.dmcnet import (
    GROWTH,
    DMCDiscriminator,
    DMCGenerator,
    DMCNetwork,
    block_average,
    class_activation_map,
)
from .modules import ActionClassifier, _fold, _load_net, last_linear

STAGES = ("reconstruction", "adversarial")
READINGS = ("authors", "paper")


def _adam(
    params, lr: float, weight_decay: float, eps: float, full_lr: Sequence = (), base_lr=None
) -> torch.optim.Adam:
    """Adam with no weight decay on biases (the authors' ``decay_mult``).

    Parameters in ``full_lr`` (by identity) get ``base_lr`` instead of ``lr``.
    """
    params = [p for p in params if p.requires_grad]
    full = {id(p) for p in full_lr}
    groups = []
    for rate, chosen in ((lr, [p for p in params if id(p) not in full]),
                         (base_lr, [p for p in params if id(p) in full])):  # fmt: skip
        decay = [p for p in chosen if p.dim() > 1]
        plain = [p for p in chosen if p.dim() <= 1]
        groups += [dict(g, lr=rate) for g in ({"params": decay, "weight_decay": weight_decay},
                                              {"params": plain, "weight_decay": 0.0})
                   if g["params"]]  # fmt: skip
    return torch.optim.Adam(groups, lr=lr, eps=eps)


class DMCNet(ActionClassifier):
    """DMC-Net: :class:`~mvaccel.nn.dmcnet.DMCGenerator` + a flow classifier, trained as above.

    Args:
        stage: ``"reconstruction"`` (stage 1) or ``"adversarial"`` (stage 2).
        flow_checkpoint: a checkpoint of a flow classifier with this backbone on one flow field
            (:class:`ActionClassifier` or :class:`~mvaccel.train.CoViARStream`, recipe
            ``dmc_flow_resnet18.yaml``) whose weights start the classifier; also the frozen
            network of the CAM attention.
        init_checkpoint: a DMCNet checkpoint (stage 1) whose generator and classifier start
            stage 2.
        alpha: weight of the flow reconstruction MSE (10).
        adv_weight: lambda, weight of the generator's adversarial loss (1).
        d_adv_weight: weight of the discriminator's adversarial loss in its step (0.01).
        cls_weight: weight of the classification loss (1).
        mse_only_epochs: epochs of stage 1 that train the generator on the MSE alone (1).
        flow_block: average the flow target over ``flow_block`` x ``flow_block`` cells (16 in
            stage 1, 0 = full resolution in stage 2).
        smooth_block: 0, or feed the generator the MV smoothed over cells of this size (16).
        attention: None, or ``"cam"``: weight the MSE per pixel by the flow classifier's CAM.
        cam_upscale: input magnification of the CAM (2: 224 -> 448 gives 14x14 maps).
        growth / disc_extra_blocks: generator widths; discriminator depth (2: the authors'
            ``Discriminator3``).
        cls_lr_mult / gen_lr_mult / disc_lr_mult: learning-rate multipliers (0.01, 1, 1).
        alternation: stage 2's alternating steps, ``"authors"`` or ``"paper"`` (module
            docstring).
        classifier_lr: ``"authors"`` (all of the classifier at ``cls_lr_mult``) or ``"paper"``
            (its last layer at the base lr).
        adam_eps: Adam's epsilon (1e-3).
        backbone / lr / weight_decay / milestones / gamma / **kw: :class:`ActionClassifier`'s
            (the classifier: ResNet-18; the lr schedule counts epochs).
    """

    INFERENCE_OVERRIDES: ClassVar[dict] = dict(
        stage="reconstruction", flow_checkpoint=None, init_checkpoint=None, attention=None
    )
    TRAINING_ONLY: ClassVar[tuple[str, ...]] = ("discriminator.", "cam_net.")

    def __init__(
        self,
        stage: str = "reconstruction",
        flow_checkpoint: str | None = None,
        init_checkpoint: str | None = None,
        alpha: float = 10.0,
        adv_weight: float = 1.0,
        d_adv_weight: float = 0.01,
        cls_weight: float = 1.0,
        mse_only_epochs: int = 1,
        flow_block: int = 16,
        smooth_block: int = 0,
        attention: str | None = None,
        cam_upscale: float = 2.0,
        growth: Sequence[int] = GROWTH,
        disc_extra_blocks: int = 2,
        cls_lr_mult: float = 0.01,
        gen_lr_mult: float = 1.0,
        disc_lr_mult: float = 1.0,
        alternation: str = "authors",
        classifier_lr: str = "authors",
        adam_eps: float = 1e-3,
        backbone: str = "resnet18",
        optimizer: str = "adam",
        lr: float = 0.01,
        weight_decay: float = 1e-4,
        milestones: Sequence[int] = (20, 35, 45),
        **kw,
    ):
        super().__init__(backbone=backbone, optimizer=optimizer, lr=lr,
                         weight_decay=weight_decay, milestones=milestones, **kw)  # fmt: skip
        hp = self.hparams
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
        for name, value in (("alternation", alternation), ("classifier_lr", classifier_lr)):
            if value not in READINGS:
                raise ValueError(f"{name} must be one of {READINGS}, got {value!r}")
        if attention not in (None, "cam"):
            raise ValueError(f"attention must be None or 'cam', got {attention!r}")
        if optimizer != "adam":
            raise ValueError("DMCNet trains with Adam (optimizer='adam')")
        if hp.in_channels != 2:
            raise ValueError(
                f"DMCNet reads one motion field per segment (in_channels 2, data.new_length 1), "
                f"got in_channels {hp.in_channels}"
            )
        if self.image_dims != 3:
            raise ValueError("DMCNet's classifier is a 2D (frame-level) network")
        self.automatic_optimization = False
        self.generator = DMCGenerator(2, 3, tuple(growth))
        if flow_checkpoint:
            _load_net(self.net, flow_checkpoint)
        self.cam_net = None
        if attention == "cam":
            if not flow_checkpoint:
                raise ValueError("attention='cam' needs the flow classifier: flow_checkpoint=...")
            self.cam_net = copy.deepcopy(self.net).eval().requires_grad_(False)
        self.discriminator = None
        if stage == "adversarial":
            self.discriminator = DMCDiscriminator(2, extra_blocks=disc_extra_blocks)
        if init_checkpoint:
            self._load_stage1(init_checkpoint)

    def _load_stage1(self, path: str | Path) -> None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"DMCNet init_checkpoint not found: {path}")
        state = torch.load(path, map_location="cpu", weights_only=False)
        state = state.get("state_dict", state)
        for prefix, module in (("generator.", self.generator), ("net.", self.net)):
            sub = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            if not sub:
                raise ValueError(f"{path}: no {prefix[:-1]} weights (not a DMCNet checkpoint)")
            module.load_state_dict(sub)

    def train(self, mode: bool = True):  # noqa: D102  (the CAM network stays in eval mode)
        super().train(mode)
        if self.cam_net is not None:
            self.cam_net.eval()
        return self

    def inference_network(self) -> DMCNetwork:
        """Generator then classifier: ``(mv, residual)`` ``(N*S, ...)`` -> ``(N*S, K)``."""
        return DMCNetwork(self.generator, self.net, self.hparams.smooth_block)

    def forward(self, mv: Tensor, residual: Tensor) -> Tensor:
        """Scores ``(N, num_classes)`` of ``(N, S, C, H, W)`` (or ``(N, C, H, W)``) inputs."""
        mv_f, s = _fold(mv, 3)
        res_f, _ = _fold(residual, 3)
        return self.inference_network()(mv_f, res_f).view(-1, s, self.hparams.num_classes).mean(1)

    # ---- losses ----

    def reconstruction_loss(self, dmc: Tensor, flow: Tensor, labels: Tensor) -> Tensor:
        """MSE of the DMC to the (block-averaged) flow, CAM-weighted with ``attention``.

        With ``attention="cam"``: the mean over pixels and both channels of
        ``A * (dmc - flow)^2`` (the supplementary's eq. 5 up to its factor 2 from summing x and
        y), ``A`` from the full-resolution flow and the true classes ``labels`` (per frame).
        """
        target = block_average(flow, self.hparams.flow_block)
        if self.cam_net is None:
            return F.mse_loss(dmc, target)
        with torch.no_grad():
            att = class_activation_map(self.cam_net, flow, labels, self.hparams.cam_upscale)
        return (att * (dmc - target) ** 2).mean()

    def _batch(self, batch):
        if len(batch) != 4:
            raise ValueError(
                "DMCNet trains on (mv, residual, flow, y) batches: set data.modalities to "
                f"[mv, residual, flow]; got {len(batch)} tensors"
            )
        mv, residual, flow, y = batch
        mv_f, s = _fold(mv, 3)
        res_f, _ = _fold(residual, 3)
        flow_f, _ = _fold(flow, 3)
        if flow_f.shape != mv_f.shape:
            raise ValueError(f"flow {tuple(flow.shape)} and mv {tuple(mv.shape)} differ in shape")
        return mv_f, res_f, flow_f, y, s

    def _scores(self, dmc: Tensor, s: int) -> Tensor:
        return self.net(dmc).view(-1, s, self.hparams.num_classes).mean(1)

    def _step_opts(self, loss: Tensor, opts, step) -> None:
        for o in opts:
            o.zero_grad()
        self.manual_backward(loss)
        for o in step:
            o.step()

    def training_step(self, batch, batch_idx):  # noqa: D102
        hp = self.hparams
        mv, res, flow, y, s = self._batch(batch)
        frame_labels = y.repeat_interleave(s)
        opts = self.optimizers()
        opts = opts if isinstance(opts, list) else [opts]
        cls_opt, gen_opt = opts[0], opts[1]
        net = self.inference_network()
        log = {}
        if hp.stage == "reconstruction":
            dmc = net.dmc(mv, res)
            logits = self._scores(dmc, s)
            ce = F.cross_entropy(logits, y)
            mse = self.reconstruction_loss(dmc, flow, frame_labels)
            if self.current_epoch < hp.mse_only_epochs:  # the classifier is fixed
                loss = hp.alpha * mse
                self._step_opts(loss, opts, [gen_opt])
            else:
                loss = hp.cls_weight * ce + hp.alpha * mse
                self._step_opts(loss, opts, [gen_opt, cls_opt])
            log.update(ce=ce, mse=mse)
        elif hp.get("alternation", "authors") == "paper":
            loss, logits = self._paper_step(batch_idx, net, mv, res, flow, y, s, frame_labels,
                                            opts, log)  # fmt: skip
        elif batch_idx % 2 == 0:  # discriminator + classifier, generator fixed
            disc_opt = opts[2]
            with torch.no_grad():
                dmc = net.dmc(mv, res)
            logits = self._scores(dmc, s)
            ce = F.cross_entropy(logits, y)
            validity = self.discriminator(torch.cat((dmc, flow)))  # first fake, then real
            truth = torch.cat((torch.zeros_like(frame_labels), torch.ones_like(frame_labels)))
            adv = F.cross_entropy(validity, truth)
            loss = hp.cls_weight * ce + hp.d_adv_weight * adv
            self._step_opts(loss, opts, [cls_opt, disc_opt])
            d_acc = (validity.argmax(1) == truth).float().mean()
            log.update(ce=ce, adv_d=adv, d_acc=d_acc)
        else:  # generator, classifier and discriminator fixed
            dmc = net.dmc(mv, res)
            logits = self._scores(dmc, s)
            ce = F.cross_entropy(logits, y)
            adv = F.cross_entropy(self.discriminator(dmc), torch.ones_like(frame_labels))
            mse = self.reconstruction_loss(dmc, flow, frame_labels)
            loss = hp.cls_weight * ce + hp.adv_weight * adv + hp.alpha * mse
            self._step_opts(loss, opts, [gen_opt])
            log.update(ce=ce, adv_g=adv, mse=mse)
        n = len(y)
        for k, v in log.items():
            self.log(f"train/{k}", v, batch_size=n)
        self.log("train/loss", loss, prog_bar=True, batch_size=n)
        self.log("train/acc", (logits.argmax(1) == y).float().mean(), prog_bar=True, batch_size=n)
        return loss.detach()

    def _paper_step(self, batch_idx, net, mv, res, flow, y, s, frame_labels, opts, log):
        """Stage 2 as the paper reads: D alone, then generator + classifier."""
        hp = self.hparams
        cls_opt, gen_opt, disc_opt = opts[0], opts[1], opts[2]
        if batch_idx % 2 == 0:  # the discriminator, generator and classifier fixed
            with torch.no_grad():
                dmc = net.dmc(mv, res)
                logits = self._scores(dmc, s)
            validity = self.discriminator(torch.cat((dmc, flow)))  # first fake, then real
            truth = torch.cat((torch.zeros_like(frame_labels), torch.ones_like(frame_labels)))
            loss = F.cross_entropy(validity, truth)
            self._step_opts(loss, opts, [disc_opt])
            log.update(adv_d=loss, d_acc=(validity.argmax(1) == truth).float().mean())
            return loss, logits
        dmc = net.dmc(mv, res)  # generator and classifier, the discriminator fixed
        logits = self._scores(dmc, s)
        ce = F.cross_entropy(logits, y)
        adv = F.cross_entropy(self.discriminator(dmc), torch.ones_like(frame_labels))
        mse = self.reconstruction_loss(dmc, flow, frame_labels)
        loss = hp.cls_weight * ce + hp.adv_weight * adv + hp.alpha * mse
        self._step_opts(loss, opts, [gen_opt, cls_opt])
        log.update(ce=ce, adv_g=adv, mse=mse)
        return loss, logits

    def validation_step(self, batch, batch_idx):  # noqa: D102
        *xs, y = batch
        if len(xs) < 2:
            raise ValueError("DMCNet validates on (mv, residual, y): data.val_modalities "
                             "[mv, residual]")  # fmt: skip
        scores = self(xs[0], xs[1])
        loss = F.cross_entropy(scores, y)
        self.log("val/loss", loss, prog_bar=True, batch_size=len(y))
        self.log("val/acc", (scores.argmax(1) == y).float().mean(), prog_bar=True,
                 batch_size=len(y))  # fmt: skip
        return loss

    def predict_step(self, batch, batch_idx):  # noqa: D102
        return self(batch[0], batch[1])

    # ---- optimisation ----

    def configure_optimizers(self):  # noqa: D102
        hp = self.hparams
        full = ()
        if hp.get("classifier_lr", "authors") == "paper":
            full = tuple(last_linear(self.net).parameters())
        opts = [
            _adam(self.net.parameters(), hp.lr * hp.cls_lr_mult, hp.weight_decay, hp.adam_eps,
                  full, hp.lr),  # fmt: skip
            _adam(self.generator.parameters(), hp.lr * hp.gen_lr_mult, hp.weight_decay,
                  hp.adam_eps),
        ]  # fmt: skip
        if self.discriminator is not None:
            opts.append(_adam(self.discriminator.parameters(), hp.lr * hp.disc_lr_mult,
                              hp.weight_decay, hp.adam_eps))  # fmt: skip
        if not hp.milestones:
            return opts
        scheds = [
            torch.optim.lr_scheduler.MultiStepLR(o, list(hp.milestones), hp.gamma) for o in opts
        ]
        return opts, scheds

    def on_train_epoch_end(self) -> None:  # noqa: D102  (manual optimisation: epoch schedules)
        scheds = self.lr_schedulers()
        if scheds is None:
            return
        for sch in scheds if isinstance(scheds, list) else [scheds]:
            sch.step()
