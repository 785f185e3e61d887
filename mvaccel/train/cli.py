"""``mvaccel train``: LightningCLI over :mod:`mvaccel.train`'s modules and data module.

A recipe is a LightningCLI config installed with the package (``mvaccel/recipes/<name>.yaml``,
listed by :func:`recipe_names`); ``--config`` takes a recipe's name (``dmc_net``), the
source tree's spelling ``recipes/dmc_net.yaml`` (found in the package when no such file is
here), or any YAML path. A recipe: ``model`` (a ``class_path`` of
:mod:`mvaccel.train` and its ``init_args``), ``data`` (the data module) and ``trainer``
(precision for AMP, strategy/devices for DDP, loggers, checkpoints). Two values are filled in
from the data and must not be set by hand: ``model.init_args.in_channels`` (from
``data.modalities`` and ``data.new_length``) and ``model.init_args.num_classes`` (from the
lists).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.plugins.io import TorchCheckpointIO

from .data import VideoDataModule
from .modules import ActionClassifier

SUBCOMMANDS = ("fit", "validate", "test", "predict")


def recipes_dir() -> Path:
    """The folder of the recipes installed with the package."""
    return Path(str(resources.files("mvaccel") / "recipes"))


def recipe_names() -> list[str]:
    """Names of the installed recipes (``mvaccel train --config NAME``)."""
    return sorted(p.stem for p in recipes_dir().glob("*.yaml"))


def recipe_path(spec: str) -> Path:
    """The YAML file ``--config spec`` means.

    An existing file is itself; otherwise a bare name (``dmc_net``) or ``recipes/<name>.yaml``
    is the installed recipe of that name.

    Raises:
        FileNotFoundError: neither a file nor a recipe name (the names are listed).
    """
    p = Path(spec)
    if p.is_file():
        return p
    name = p.stem if (p.suffix in (".yaml", ".yml") and p.parent.name in ("recipes", "")) else None
    if p.suffix == "" and len(p.parts) == 1:
        name = p.name
    if name is not None and (recipes_dir() / f"{name}.yaml").is_file():
        return recipes_dir() / f"{name}.yaml"
    raise FileNotFoundError(
        f"--config {spec}: no such file, and not a recipe name; recipes: "
        f"{', '.join(recipe_names())}"
    )


def _resolve_args(args: list[str]) -> list[str]:
    """``--config`` names -> recipe files; a ``--ckpt_path`` file is checked whole.

    (LightningCLI reads the checkpoint while parsing, before :meth:`MvaccelCLI.before_fit`.)
    """
    out, it = [], iter(args)
    for a in it:
        key, eq, value = a.partition("=")
        if key in ("--config", "--ckpt_path"):
            value = value if eq else next(it, "")
            if key == "--config":
                value = str(recipe_path(value))
            elif value not in ("last", "best", "hpc", "null", "None"):
                value = resolve_checkpoint(value, [])
            out += [key, value]
        else:
            out.append(a)
    return out


def _in_channels(modalities, new_length, sampling="tsn") -> int:
    return VideoDataModule.in_channels(modalities, new_length, sampling)


def checkpoint_ok(path: str | Path) -> bool:
    """True when ``path`` is a whole checkpoint file (torch's zip format, every CRC right)."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            return z.testzip() is None
    except (OSError, zipfile.BadZipFile, EOFError):
        return False


def resolve_checkpoint(spec: str, dirs: Sequence[str | Path]) -> str:
    """The checkpoint ``--ckpt_path spec`` resumes from, checked before training starts.

    Args:
        spec: a path, ``"last"`` (the ``last.ckpt`` of the ModelCheckpoint folders ``dirs``), or
            another of Lightning's names (``"best"``, ``"hpc"``: passed through).
        dirs: the ``dirpath`` of every ModelCheckpoint callback.

    Returns:
        The path (or Lightning name) to pass on. A truncated or unreadable ``last.ckpt`` falls
        back to the newest whole ``*.ckpt`` beside it, with a warning naming both.

    Raises:
        FileNotFoundError: ``"last"`` with no checkpoint to resume from (Lightning would
            silently start from scratch), or a path that does not exist.
        ValueError: a truncated / unreadable checkpoint file with no fallback (named).
    """
    import logging

    log = logging.getLogger(__name__)
    if spec != "last":
        if spec in ("best", "hpc", "registry") or spec.startswith("registry:"):
            return spec
        if not Path(spec).is_file():
            raise FileNotFoundError(f"--ckpt_path {spec}: no such checkpoint file")
        if not checkpoint_ok(spec):
            raise ValueError(f"--ckpt_path {spec}: the checkpoint is truncated or unreadable")
        return spec
    folders = [Path(d) for d in dirs if d]
    if not folders:
        raise FileNotFoundError(
            "--ckpt_path last: no ModelCheckpoint callback with a dirpath to look in"
        )
    for d in folders:
        last = d / "last.ckpt"
        if last.exists() and checkpoint_ok(last):
            return str(last)
        others = sorted(
            (p for p in d.glob("*.ckpt") if p.name != "last.ckpt" and not p.name.startswith(".")),
            key=lambda p: p.stat().st_mtime,
            reverse=True,
        )
        good = next((p for p in others if checkpoint_ok(p)), None)
        if last.exists() and good is None:
            raise ValueError(
                f"--ckpt_path last: {last} is truncated or unreadable and {d} holds no other "
                "whole checkpoint"
            )
        if good is not None:
            if last.exists():
                log.warning("--ckpt_path last: %s is truncated or unreadable; resuming from %s "
                            "instead", last, good)  # fmt: skip
            return str(good)
    where = ", ".join(str(d) for d in folders)
    raise FileNotFoundError(
        f"--ckpt_path last: no checkpoint in {where}: nothing to resume (drop --ckpt_path to "
        "start from scratch)"
    )


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer through :func:`mvaccel._io.atomic_path`.

    A checkpoint (``last.ckpt`` included) is written under a hidden temporary name, fsynced and
    renamed, so a run killed while saving never leaves a truncated checkpoint under a real
    name. Remote paths (``s3://`` ...) go to Lightning's writer unchanged.
    """

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:  # noqa: D102
        from .._io import atomic_path

        if "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        with atomic_path(path) as tmp:
            super().save_checkpoint(checkpoint, tmp, storage_options)


class MvaccelCLI(LightningCLI):
    """LightningCLI with the data -> model links of mvaccel, checked resumes, atomic saves."""

    def before_fit(self) -> None:
        """Check ``--ckpt_path`` and make checkpoint saves atomic, before training starts.

        ``--ckpt_path`` goes through :func:`resolve_checkpoint`; checkpoints are written with
        :class:`AtomicCheckpointIO` unless another checkpoint writer is configured.
        """
        strategy = self.trainer.strategy
        if type(strategy.checkpoint_io) is TorchCheckpointIO:
            strategy.checkpoint_io = AtomicCheckpointIO()
        cfg = self.config_init[self.subcommand]
        spec = cfg.get("ckpt_path")
        if spec is not None:
            dirs = [getattr(cb, "dirpath", None) for cb in self.trainer.checkpoint_callbacks]
            cfg["ckpt_path"] = resolve_checkpoint(str(spec), dirs)

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
        ``run(["--config", "mv_cnn_st_ti_dc", "--trainer.max_steps", "100"])``;
        resume: add ``["--ckpt_path", "last"]`` (or a checkpoint file).

    Raises:
        FileNotFoundError: a ``--config`` that is neither a file nor a recipe name.
    """
    args = _resolve_args(list(args or []))
    if not args or args[0] not in SUBCOMMANDS + ("-h", "--help"):
        args = ["fit", *args]
    # the arguments are in args, not on argv; argv[0] names the command in LightningCLI's hints
    argv, sys.argv = sys.argv, ["mvaccel train"]
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
