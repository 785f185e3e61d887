"""LightningModules: training lowers the loss; transfer strategies wire teacher and student."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from mvaccel.train import ActionClassifier, MotionVectorTransfer, build_backbone, tapped


def _data(n=12, c=4, k=3, s=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % k
    # Class-dependent means make the task learnable in a few steps.
    x = torch.randn(n, s, c, 16, 16, generator=g) + y.view(-1, 1, 1, 1, 1).float()
    return x, y


def _fit(module, dataset, steps=10):
    L.seed_everything(0, verbose=False)
    module.train()
    trainer = L.Trainer(
        max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, accelerator="cpu", log_every_n_steps=1,
    )  # fmt: skip
    trainer.fit(module, DataLoader(dataset, batch_size=6, shuffle=True))
    return trainer


def _loss(module, x, y):
    # Batch statistics (train mode): a few steps barely move BatchNorm's running averages.
    module.train()
    with torch.no_grad():
        return torch.nn.functional.cross_entropy(module(x), y).item()


def test_classifier_training_lowers_loss():
    x, y = _data()
    m = ActionClassifier("resnet18", num_classes=3, in_channels=4, lr=0.01)
    before = _loss(m, x, y)
    _fit(m, TensorDataset(x, y))
    assert _loss(m, x, y) < before
    assert m(x).shape == (12, 3) and m(x[:, 0]).shape == (12, 3)  # segments or not


def test_segment_consensus_is_mean_of_scores():
    m = ActionClassifier("resnet18", num_classes=3, in_channels=4).eval()
    x, _ = _data(n=2, s=3)
    with torch.no_grad():
        per = torch.stack([m(x[:, i]) for i in range(3)], 1).mean(1)
        torch.testing.assert_close(m(x), per)


@pytest.mark.parametrize(
    "strategy",
    [
        dict(teacher_init=False, temperature=0.0, connect=()),  # MV-CNN from scratch
        dict(teacher_init=True, temperature=0.0, connect=()),  # TI
        dict(teacher_init=False, temperature=2.0, connect=()),  # ST
        dict(teacher_init=True, temperature=2.0, connect=("layer3", "layer4")),  # ST+TI+DC
    ],
    ids=["scratch", "TI", "ST", "ST+TI+DC"],
)
def test_transfer_strategies_train(strategy):
    x, y = _data()
    flow = x + 0.1 * torch.randn_like(x)
    teacher = build_backbone("resnet18", 3, 4)
    m = MotionVectorTransfer(
        teacher=teacher, backbone="resnet18", num_classes=3, in_channels=4, lr=5e-4, **strategy
    )
    if strategy["teacher_init"]:
        torch.testing.assert_close(m.net.conv1.weight, teacher.conv1.weight)

    def objective():  # the strategy's own training loss on the whole (fixed) data
        m.train()
        with torch.no_grad():
            return m.objective((x, flow, y))["loss"].item()

    before = objective()
    _fit(m, TensorDataset(x, flow, y))
    assert objective() < before
    # The teacher is frozen and unchanged.
    assert not any(p.requires_grad for p in m.teacher.parameters())
    assert not m.teacher.training


def test_transfer_needs_a_teacher():
    with pytest.raises(ValueError, match="teacher"):
        MotionVectorTransfer(backbone="resnet18", num_classes=3, in_channels=4)
    with pytest.raises(FileNotFoundError, match="missing.ckpt"):
        MotionVectorTransfer(
            teacher_checkpoint="missing.ckpt", backbone="resnet18", num_classes=3, in_channels=4
        )


def test_teacher_from_classifier_checkpoint(tmp_path):
    x, y = _data()
    teacher = ActionClassifier("resnet18", num_classes=3, in_channels=4, lr=0.01)
    trainer = _fit(teacher, TensorDataset(x, y), steps=2)
    ckpt = tmp_path / "teacher.ckpt"
    trainer.save_checkpoint(ckpt)
    m = MotionVectorTransfer(
        teacher_checkpoint=str(ckpt), backbone="resnet18", num_classes=3, in_channels=4
    )
    torch.testing.assert_close(m.teacher.layer1[0].conv1.weight, teacher.net.layer1[0].conv1.weight)


def test_tapped_records_and_cleans_up():
    net = build_backbone("resnet18", 3, 4).eval()
    with tapped(net, ["layer2", "fc"]) as store:
        out = net(torch.randn(1, 4, 32, 32))
    assert store["layer2"].shape == (1, 128, 4, 4)
    torch.testing.assert_close(store["fc"], out)
    assert not net.layer2._forward_hooks
    with pytest.raises(ValueError, match="layer9"):
        with tapped(net, ["layer9"]):
            pass


def test_unknown_backbone():
    with pytest.raises(ValueError, match="unknown backbone"):
        ActionClassifier("vgg16")


def test_datamodule_channels_of_clips_and_the_fixed_interval_count(tmp_path_factory):
    from trainkit import tiny_dataset

    from mvaccel.train.data import VideoDataModule

    assert VideoDataModule.in_channels(["rgb"], 16, "clip") == 3  # (3, 16, H, W) clips
    assert VideoDataModule.in_channels(["flow"], 10) == 20  # a stack of 10 fields
    root = tiny_dataset(tmp_path_factory)
    dm = VideoDataModule(root=str(root), modalities=["rgb"], sampling="fixed", num_segments=3,
                         test_segments=7, val_segments=5, num_workers=0)  # fmt: skip
    assert dm.dataset("train").test_segments == 7  # OFF's beta fixes the training interval
    assert dm.dataset("test", train=False).test_segments == 5  # at test: the count sampled
