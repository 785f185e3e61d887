"""``mvaccel train``: LightningCLI over :mod:`mvaccel.train`'s modules and data module.

A recipe (``recipes/<name>.yaml``) is a LightningCLI config: ``model`` (a ``class_path`` of
:mod:`mvaccel.train` and its ``init_args``), ``data`` (the data module) and ``trainer``
(precision for AMP, strategy/devices for DDP, loggers, checkpoints). Two values are filled in
from the data and must not be set by hand: ``model.init_args.in_channels`` (from
``data.modalities`` and ``data.new_length``) and ``model.init_args.num_classes`` (from the
lists).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from lightning.pytorch.cli import LightningCLI

from .data import VideoDataModule
from .modules import ActionClassifier

SUBCOMMANDS = ("fit", "validate", "test", "predict")


def _in_channels(modalities, new_length, sampling="tsn") -> int:
    return VideoDataModule.in_channels(modalities, new_length, sampling)


class MvaccelCLI(LightningCLI):
    """LightningCLI with the data -> model links of mvaccel."""

    def add_arguments_to_parser(self, parser) -> None:  # noqa: D102
        parser.link_arguments(
            ("data.modalities", "data.new_length", "data.sampling"),
            "model.init_args.in_channels",
            compute_fn=_in_channels,
        )
        parser.link_arguments(
            "data.num_classes", "model.init_args.num_classes", apply_on="instantiate"
        )


def run(args: Sequence[str] | None = None) -> MvaccelCLI:
    """Run ``mvaccel train`` with ``args`` (``fit`` is implied when no subcommand is given).

    Examples:
        ``run(["--config", "recipes/mv_cnn_dtmv.yaml", "--trainer.max_steps", "100"])``;
        resume: add ``["--ckpt_path", "last"]`` (or a checkpoint file).
    """
    args = list(args or [])
    if not args or args[0] not in SUBCOMMANDS + ("-h", "--help"):
        args = ["fit", *args]
    argv, sys.argv = sys.argv, sys.argv[:1]  # the arguments are in args, not on argv
    try:
        return MvaccelCLI(
            ActionClassifier,
            VideoDataModule,
            subclass_mode_model=True,
            args=args,
            save_config_kwargs={"overwrite": True},
            auto_configure_optimizers=False,
        )
    finally:
        sys.argv = argv
