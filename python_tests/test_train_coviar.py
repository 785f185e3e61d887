"""CoViAR's streams: the I-frame modality, the recipes through LightningCLI, evaluation, fusion."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, default_collate
from trainkit import tiny_dataset, tiny_overrides

from mvaccel.cli import main as cli_main
from mvaccel.data.datasets import VideoDataset, num_channels
from mvaccel.data.lists import ucf101_split
from mvaccel.train import ActionClassifier, CoViARStream
from mvaccel.train.cli import MvaccelCLI
from mvaccel.train.data import VideoDataModule
from mvaccel.train.evaluate import evaluate, load_scores, save_scores
from mvaccel.video import read_motion

NAMES = ["coviar_iframe", "coviar_mv", "coviar_residual"]
RECIPE_DIR = Path(__file__).resolve().parents[1] / "mvaccel" / "recipes"
RECIPES = {n: RECIPE_DIR / f"{n}.yaml" for n in NAMES}

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def plain_argv(monkeypatch):
    monkeypatch.setattr("sys.argv", ["mvaccel"])


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tiny_dataset(tmp_path_factory)


def build(recipe: Path, args: list[str]) -> MvaccelCLI:
    return MvaccelCLI(
        ActionClassifier, VideoDataModule, subclass_mode_model=True, run=False,
        args=["--config", str(recipe), *args], save_config_callback=None,
        auto_configure_optimizers=False,
    )  # fmt: skip


def tiny(root: Path) -> list[str]:
    """The shared tiny overrides on a ResNet-18 (the recipes' backbones, but small inputs)."""
    args = [a for a in tiny_overrides(root) if "backbone_kwargs" not in a]
    return [*args, "--model.init_args.backbone=resnet18", "--data.new_length=1",
            "--data.block=8", "--model.init_args.backbone_lr_mult=1.0"]  # fmt: skip


# ---- the I-frame modality ----


def test_iframe_modality_reads_the_gop_key_frame(root):
    items = ucf101_split(root / "lists", 1, "train")
    path = root / "videos" / items[0].path
    clip = read_motion(path, rgb="all")
    keys = clip.frame_index[clip.frame_type == 0].tolist()
    assert len(keys) >= 2, "the tiny videos have GOPs of 12 frames"
    ds = VideoDataset(items[:1], root / "videos", ("rgb", "iframe"), num_segments=1, train=False)
    video = ds.video(0)
    frames = list(range(len(clip)))
    got = video.iframe(frames)
    want = torch.stack([clip.rgb[max(k for k in keys if k <= f)] for f in frames])
    assert torch.equal(got, want)
    # ... and differs from the frame itself inside a GOP (the synthetic videos move).
    assert not torch.equal(got[keys[0] + 5], clip.rgb[keys[0] + 5])
    # Only the I-frames are decoded to RGB when the dataset reads I-frames alone.
    ds = VideoDataset(items[:1], root / "videos", ("iframe",), num_segments=4, size=32)
    x, y = ds[(0, 0)]
    assert x.shape == (4, 3, 32, 32) and y == items[0].label
    assert ds.video(0).clip().rgb.shape[0] == len(keys)
    assert num_channels("iframe", 1) == 3


def test_iframe_sampling_spans_the_whole_video(root):
    """Alone, the I-frame modality samples frames 0 .. T-1 (not the motion fields 1 .. T-1)."""
    items = ucf101_split(root / "lists", 1, "train")
    ds = VideoDataset(items[:1], root / "videos", ("iframe",), num_segments=16, train=False)
    segs = ds.frames(ds.video(0), None)
    assert segs[0] == [0]
    ds = VideoDataset(items[:1], root / "videos", ("iframe", "mv"), num_segments=16, train=False)
    assert ds.frames(ds.video(0), None)[0] == [1]


# ---- the module ----


def test_param_groups_follow_coviar():
    m = CoViARStream(representation="mv", backbone="resnet18", num_classes=5, in_channels=2,
                     lr=0.01)  # fmt: skip
    by_param = {}
    for g in m.param_groups():
        for p in g["params"]:
            by_param[id(p)] = (g["lr"], g["weight_decay"])
    named = dict(m.named_parameters())
    assert by_param[id(named["net.fc.weight"])] == (0.01, 1e-4)
    assert by_param[id(named["net.fc.bias"])] == (0.01, 0.0)
    assert by_param[id(named["net.conv1.weight"])] == pytest.approx((1e-3, 1e-4))
    assert by_param[id(named["data_bn.weight"])] == pytest.approx((1e-3, 1e-4))
    assert by_param[id(named["net.layer3.0.conv1.weight"])] == pytest.approx((1e-4, 1e-4))
    assert len(by_param) == len(named)
    # I-frames: no data_bn, conv1 with the backbone.
    m = CoViARStream(representation="iframe", backbone="resnet18", num_classes=5, in_channels=3,
                     lr=0.01)  # fmt: skip
    assert m.data_bn is None
    lrs = {id(p): g["lr"] for g in m.param_groups() for p in g["params"]}
    assert lrs[id(m.net.conv1.weight)] == pytest.approx(1e-4)


def test_bad_arguments_fail_clearly():
    with pytest.raises(ValueError, match="representation must be one of"):
        CoViARStream(representation="rgb", backbone="resnet18", num_classes=3, in_channels=3)
    with pytest.raises(ValueError, match="Adam"):
        CoViARStream(representation="mv", optimizer="sgd", num_classes=3, in_channels=2)
    m = CoViARStream(representation="mv", backbone="resnet18", num_classes=3, in_channels=2)
    with pytest.raises(ValueError, match="expected"):
        m(torch.zeros(2, 3))


# ---- recipes, evaluation, fusion ----


def _batch(cli, n=3):
    dm = cli.datamodule
    dm.setup("fit")
    return default_collate([dm.train_set[(i, 0)] for i in range(n)])


def _loss(model, batch) -> float:
    model.eval()
    with torch.no_grad():
        x, y = batch
        return float(F.cross_entropy(model(x), y))


@pytest.fixture(scope="module")
def trained(root, tmp_path_factory):
    """Each recipe trained a few steps on one fixed batch: name -> (checkpoint, before, after)."""
    out = {}
    base = tmp_path_factory.mktemp("coviar")
    import _pytest.monkeypatch

    mp = _pytest.monkeypatch.MonkeyPatch()
    mp.setattr("sys.argv", ["mvaccel"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # module fixtures run before the tests' one_thread
    try:
        for name in NAMES:
            torch.manual_seed(0)
            cli = build(RECIPES[name], [*tiny(root), "--trainer.max_steps=6"])
            model, dm = cli.model, cli.datamodule
            batch = _batch(cli)
            before = _loss(model, batch)
            # The fixed batch through the data module (its settings go into the checkpoint).
            mp.setattr(dm, "train_dataloader", lambda b=batch: DataLoader([b] * 6, batch_size=None))
            cli.trainer.fit(model, datamodule=dm)
            after = _loss(model, batch)
            path = base / f"{name}.ckpt"
            cli.trainer.save_checkpoint(path)
            out[name] = (path, before, after, cli)
    finally:
        mp.undo()
        torch.set_num_threads(threads)
    return out


@pytest.mark.parametrize("name", NAMES)
def test_recipe_trains_and_lowers_the_loss(name, trained):
    path, before, after, cli = trained[name]
    model, dm = cli.model, cli.datamodule
    rep = name.removeprefix("coviar_")
    assert isinstance(model, CoViARStream) and model.hparams.representation == rep
    assert dm.modalities == (rep,)
    assert model.hparams.in_channels == (2 if rep == "mv" else 3)
    assert dm.hparams.accumulate == (rep != "iframe")
    assert (model.data_bn is None) == (rep == "iframe")
    assert model.hparams.optimizer == "adam" and model.hparams.adam_eps == 1e-3
    assert cli.trainer.global_step == 6
    assert after < before, (name, before, after)


def test_evaluate_and_fuse_the_streams(trained, tmp_path, capsys):
    scores = {}
    for name in NAMES:
        r = evaluate(trained[name][0], segments=2, crops=1, progress=False)
        assert r["scores"].shape == (3, 3) and np.isfinite(r["scores"]).all()
        assert r["modality"] == name.removeprefix("coviar_")
        scores[name] = save_scores(tmp_path / f"{name}.npz", r)
    # CoViAR's fusion: I 2 : MV 1 : R 1 on the averaged scores (combine.py adds raw scores).
    out = tmp_path / "fused.npz"
    rc = cli_main(["fuse", *(str(scores[n]) for n in NAMES), "--weights", "2", "1", "1",
                   "--logits", "--out", str(out)])  # fmt: skip
    assert rc == 0
    assert "2 : 1 : 1" in capsys.readouterr().out
    s = [load_scores(scores[n])["scores"] for n in NAMES]
    want = (2 * s[0] + s[1] + s[2]) / 4
    np.testing.assert_allclose(load_scores(out)["scores"], want, rtol=1e-5, atol=1e-6)


def test_checkpoint_with_data_bn_evaluates_with_it(trained):
    """The evaluated network applies data_bn (scores differ when its statistics change)."""
    from mvaccel.train.evaluate import load_checkpoint, network_from_checkpoint

    ckpt = load_checkpoint(trained["coviar_mv"][0])
    net = network_from_checkpoint(ckpt)
    x = torch.randn(2, 2, 48, 48)
    a = net(x)
    ckpt["state_dict"]["data_bn.running_mean"] += 3.0
    b = network_from_checkpoint(ckpt)(x)
    assert not torch.allclose(a, b)
