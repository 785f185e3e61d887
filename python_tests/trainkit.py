"""Tiny prepared datasets shared by the data / training / evaluation tests (built once)."""

from __future__ import annotations

from pathlib import Path

import torch

from mvaccel.cli import main as cli_main
from mvaccel.data.synthetic import SyntheticSpec, write_synthetic_dataset

CLASSES = ("MoveRight", "MoveLeft", "RotateCW")
SPEC = SyntheticSpec(
    classes=CLASSES, train_per_class=2, test_per_class=1, frames=16, height=48, width=64
)
FLOW_BOUND = 5.0
_CACHE: dict[str, Path] = {}


def tiny_dataset(tmp_path_factory) -> Path:
    """Synthetic videos prepared like UCF101: ``videos/``, ``flow/`` (fast TV-L1), ``lists/``."""
    if "root" not in _CACHE:
        base = tmp_path_factory.mktemp("tinyset")
        src = write_synthetic_dataset(base / "src", SPEC)
        out = base / "prepared"
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            rc = cli_main(["prepare", "ucf101", str(src), str(out), "--reencode", "none",
                           "--flow-preset", "fast", "--flow-bound", str(FLOW_BOUND)])  # fmt: skip
        finally:
            torch.set_num_threads(threads)
        assert rc == 0
        _CACHE["root"] = out
    return _CACHE["root"]


def tiny_overrides(root: Path, teacher: Path | None = None) -> list[str]:
    """LightningCLI arguments that shrink a paper recipe to the tiny data (CPU, seconds)."""
    args = [
        f"--data.root={root}", "--data.new_length=2", "--data.size=48", "--data.batch_size=3",
        "--data.num_workers=0", "--data.cache=true", "--data.val_segments=1",
        f"--data.bound={FLOW_BOUND}", f"--data.flow_bound={FLOW_BOUND}", "--data.motion_std=0.05",
        "--model.init_args.backbone_kwargs={width: 0.0625, dropout: [0.1, 0.1], prelu: true}",
        "--trainer.accelerator=cpu", "--trainer.devices=1", "--trainer.logger=false",
        "--trainer.enable_checkpointing=false", "--trainer.callbacks=[]",
        "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
        "--trainer.num_sanity_val_steps=0", "--trainer.limit_val_batches=0",
        # LightningCLI saves its config.yaml there (the working directory otherwise).
        f"--trainer.default_root_dir={Path(root).parent / 'runs'}",
    ]  # fmt: skip
    if teacher is not None:
        args.append(f"--model.init_args.teacher_checkpoint={teacher}")
    return args
