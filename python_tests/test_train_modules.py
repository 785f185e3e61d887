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


def _clarifai_pair(dropout=(0.9, 0.8)):
    """A tiny ClarifaiNet teacher and a student that is its exact copy (TI), both 3 classes."""
    kw = dict(num_classes=3, in_channels=4, width=0.0625, prelu=True)
    torch.manual_seed(0)
    teacher = build_backbone("clarifai", dropout=(0.9, 0.8), **kw)
    m = MotionVectorTransfer(
        teacher=teacher, backbone="clarifai", num_classes=3, in_channels=4, teacher_init=True,
        temperature=0.0, connect=("conv3", "conv4", "conv5", "fc6", "fc7"),
        backbone_kwargs=dict(dropout=dropout, width=0.0625, prelu=True),
    )  # fmt: skip
    return m.train()


def test_deeply_connected_transfer_compares_activations_before_dropout():
    x = torch.randn(4, 4, 64, 64, generator=torch.Generator().manual_seed(0))
    batch = (x, x, torch.tensor([0, 1, 2, 0]))
    # The student is the teacher (TI, same input), in train mode; fc6's dropout is off, so
    # every tapped activation before dropout is the teacher's: the DC loss is exactly 0 even
    # with fc7's dropout at 0.8 (the old taps, after dropout, saw 80 % zeros there).
    m = _clarifai_pair(dropout=(0.0, 0.8))
    assert m.net.training and not m.teacher.training
    assert m.objective(batch)["dc"].item() == 0.0
    # fc7's own dropout ratio never reaches its tap: same draws, same DC loss.
    losses = []
    for p7 in (0.0, 0.5, 0.8):
        m = _clarifai_pair(dropout=(0.9, p7))
        torch.manual_seed(1)
        losses.append(m.objective(batch)["dc"].item())
    assert losses[0] > 0  # fc6's dropout still feeds fc7's input in train mode
    assert losses[1] == losses[0] and losses[2] == losses[0]


def test_tapped_before_dropout_records_the_activation():
    net = build_backbone("clarifai", 3, 4, width=0.0625, dropout=(0.9, 0.8)).train()
    x = torch.randn(2, 4, 64, 64)
    with tapped(net, ["fc6", "conv3"], before_dropout=True) as pre, torch.no_grad():
        net(x)
    with tapped(net, ["fc6"]) as post, torch.no_grad():
        net(x)
    assert (pre["fc6"] == 0).float().mean() < 0.2  # PReLU output: dense
    assert (post["fc6"] == 0).float().mean() > 0.7  # after p = 0.9 dropout: mostly zeros
    assert pre["conv3"].dim() == 4  # stages without dropout: their own output


@pytest.mark.parametrize("weighting", ["soft", "hard"])
def test_supervision_transfer_weighting_reaches_the_objective(weighting):
    from mvaccel import distill

    x, y = _data(n=6)
    teacher = build_backbone("resnet18", 3, 4).eval()
    m = MotionVectorTransfer(
        teacher=teacher, backbone="resnet18", num_classes=3, in_channels=4, teacher_init=True,
        temperature=2.0, connect=(), st_weighting=weighting,
    ).eval()  # fmt: skip
    with torch.no_grad():
        got = m.objective((x, x, y))["loss"]
        logits = m.net(x.flatten(0, 1)).view(6, 2, 3).mean(1)
        want = distill.supervision_transfer_loss(logits, logits, y, 2.0, None, weighting)
    torch.testing.assert_close(got, want)
    assert m.hparams.st_weighting == weighting
    with pytest.raises(ValueError, match="st_weighting"):
        MotionVectorTransfer(teacher=teacher, backbone="resnet18", num_classes=3,
                             in_channels=4, st_weighting="both")  # fmt: skip


def test_datamodule_reads_motion_vectors_from_mv_files(tmp_path_factory):
    """``data.mv_root`` (what recipes set) reaches the datasets: the samples are those of
    decoding the videos."""
    from trainkit import tiny_dataset

    from mvaccel.train.data import VideoDataModule
    from mvaccel.video import motion_tree

    root = tiny_dataset(tmp_path_factory)
    mv_root = root.parent / f"{root.name}_mv"
    assert not motion_tree(root / "videos", mv_root, quiet=True).failed
    kw = dict(root=str(root), modalities=["mv"], new_length=2, num_segments=2, num_workers=0)
    from_files = VideoDataModule(mv_root=str(mv_root), **kw).dataset("test", train=False)
    decoded = VideoDataModule(**kw).dataset("test", train=False)
    assert from_files.mv_root == mv_root and decoded.mv_root is None
    for i in range(2):
        torch.testing.assert_close(from_files[i][0], decoded[i][0], rtol=0, atol=0)
