"""Checkpoints: a run stopped after an epoch and resumed takes the uninterrupted run's steps;
DDP on 2 CPU processes (gloo, through torchrun) runs; AMP (bf16-mixed) runs a step."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from trainkit import tiny_dataset, tiny_overrides

from mvaccel.train.cli import run

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "mvaccel" / "recipes" / "mv_cnn_st_ti_dc.yaml"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tiny_dataset(tmp_path_factory)


@pytest.fixture(scope="module")
def teacher(root, tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher")
    cli = run([
        "--config", str(REPO / "mvaccel" / "recipes" / "teacher_flow.yaml"), *tiny_overrides(root),
        "--trainer.max_steps=2",
    ])  # fmt: skip
    path = out / "teacher.ckpt"
    cli.trainer.save_checkpoint(path)
    return path


def _args(root, teacher, ckpt_dir: Path, epochs: int) -> list[str]:
    cfg = ckpt_dir / "ckpt.yaml"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    cfg.write_text(
        "trainer:\n  enable_checkpointing: true\n  callbacks:\n"
        "    - class_path: lightning.pytorch.callbacks.ModelCheckpoint\n"
        f"      init_args: {{dirpath: {ckpt_dir}, save_top_k: -1, every_n_train_steps: 2, "
        "save_last: true}\n"
    )
    return ["--config", str(RECIPE), *tiny_overrides(root, teacher), "--config", str(cfg),
            f"--trainer.max_epochs={epochs}", "--model.init_args.lr=0.01"]  # fmt: skip


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    return env


def test_resume_repeats_the_uninterrupted_run(root, teacher, tmp_path):
    # The uninterrupted run: 3 epochs of 2 steps, with dropout (step-seeded) and random crops
    # (keyed by seed, epoch and video).
    full = run(_args(root, teacher, tmp_path / "full", 3))
    assert full.trainer.global_step == 6
    want = {k: v.clone() for k, v in full.model.net.state_dict().items()}
    # The interrupted run: its own process, stopped after 2 epochs; then resumed from its
    # checkpoint in a fresh trainer and module, to 3 epochs.
    cmd = [sys.executable, "-m", "mvaccel", "train", *_args(root, teacher, tmp_path / "cut", 2)]
    p = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    ckpt = tmp_path / "cut" / "epoch=1-step=4.ckpt"  # saved after the epoch's last step
    assert ckpt.is_file(), sorted(os.listdir(tmp_path / "cut"))
    resumed = run([*_args(root, teacher, tmp_path / "cut", 3), f"--ckpt_path={ckpt}"])
    assert resumed.trainer.global_step == 6
    got = resumed.model.net.state_dict()
    for k, v in want.items():
        torch.testing.assert_close(got[k], v, rtol=1e-5, atol=1e-6, msg=k)
    # ... and the resumed run did train: its weights moved away from the checkpoint's.
    saved = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    assert not torch.equal(saved["net.fc8.weight"], got["fc8.weight"])


@pytest.mark.slow
def test_ddp_two_cpu_processes(root, teacher, tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "mvaccel", "train", *_args(root, teacher, tmp_path / "ddp", 1),
           "--trainer.strategy=ddp", "--trainer.devices=2", "--trainer.max_steps=1"]  # fmt: skip
    p = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=300)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-3000:]
    assert "MEMBER: 1/2" in out and "MEMBER: 2/2" in out
    assert (tmp_path / "ddp" / "last.ckpt").is_file()


def test_amp_flag_runs_a_step(root, teacher):
    cli = run(["--config", str(RECIPE), *tiny_overrides(root, teacher),
               "--trainer.precision=bf16-mixed", "--trainer.max_steps=1"])  # fmt: skip
    assert cli.trainer.global_step == 1
    assert "bf16" in str(cli.trainer.precision)


def test_ckpt_path_last_needs_a_whole_checkpoint(root, teacher, tmp_path):
    d = tmp_path / "ck"
    # nothing to resume: an error, not a silent fresh start
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        run([*_args(root, teacher, d, 1), "--ckpt_path=last"])
    first = run(_args(root, teacher, d, 1))
    assert first.trainer.global_step == 2 and (d / "epoch=0-step=2.ckpt").is_file()
    assert type(first.trainer.strategy.checkpoint_io).__name__ == "AtomicCheckpointIO"
    assert not [p for p in d.iterdir() if p.name.startswith(".")]  # saved atomically
    last = d / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # killed while saving
    with pytest.raises(ValueError, match="last.ckpt: the checkpoint is truncated"):
        run([*_args(root, teacher, d, 2), f"--ckpt_path={last}"])
    # "last" falls back to the newest whole checkpoint and goes on from its step
    resumed = run([*_args(root, teacher, d, 2), "--ckpt_path=last"])
    assert resumed.trainer.global_step == 4
