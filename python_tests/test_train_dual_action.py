"""Lu et al.'s Dual-action Stream: recipes train through LightningCLI, the loss is eq. 4 on the
tapped features, the teacher stays frozen, evaluation reads RGB only, the attention fusion is a
softmax over the two frozen streams, and bad inputs fail clearly."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset, default_collate
from trainkit import tiny_dataset, tiny_overrides

from mvaccel import distill
from mvaccel.nn import AttentionFusion, FeatureTaps
from mvaccel.nn.backbones import resnet3d
from mvaccel.train import ActionClassifier, ClipClassifier, DualActionFusion, DualActionStream
from mvaccel.train.cli import MvaccelCLI
from mvaccel.train.data import VideoDataModule
from mvaccel.train.dual_action import CLIP_LEVELS, load_stream
from mvaccel.train.evaluate import evaluate, load_checkpoint, network_from_checkpoint

RECIPES = Path(__file__).resolve().parents[1] / "mvaccel" / "recipes"
#: the paper's ResNet-101 shrunk to a 1/8-width ResNet-10 on 4-frame clips
TINY = ["--model.init_args.backbone=resnet3d",
        "--model.init_args.backbone_kwargs={depth: 10, width: 0.125}",
        "--data.new_length=4", "--model.init_args.lr=0.01"]  # fmt: skip
TINY_NET = dict(backbone="resnet3d", backbone_kwargs=dict(depth=10, width=0.125), num_classes=3)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def plain_argv(monkeypatch):
    monkeypatch.setattr("sys.argv", ["mvaccel"])  # LightningCLI warns about pytest's arguments


def build(recipe: str, args: list[str]) -> MvaccelCLI:
    return MvaccelCLI(
        ActionClassifier, VideoDataModule, subclass_mode_model=True, run=False,
        args=["--config", str(RECIPES / f"{recipe}.yaml"), *args], save_config_callback=None,
        auto_configure_optimizers=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tiny_dataset(tmp_path_factory)


def _fit(cli, steps: int, path: Path | None = None) -> Path | None:
    cli.trainer.fit(cli.model, cli.datamodule)
    assert cli.trainer.global_step == steps
    if path is not None:
        cli.trainer.save_checkpoint(path)
    return path


@pytest.fixture(scope="module")
def teacher(root, tmp_path_factory):
    """The flow stream, trained for a few steps with its recipe."""
    cli = build("dual_action_flow_teacher", [*tiny_overrides(root), *TINY, "--trainer.max_steps=4"])
    assert type(cli.model) is ClipClassifier and cli.model.hparams.clip_channels == 2
    return _fit(cli, 4, tmp_path_factory.mktemp("teacher") / "teacher.ckpt")


@pytest.fixture(scope="module")
def student(root, teacher, tmp_path_factory):
    """The Dual-action Stream trained for a few steps with its recipe."""
    cli = build("dual_action_stream", [*tiny_overrides(root, teacher), *TINY,
                                       "--trainer.max_steps=3"])  # fmt: skip
    return _fit(cli, 3, tmp_path_factory.mktemp("student") / "student.ckpt")


def _batch(cli, n=3):
    """A fixed training batch (keyed samples: the same clips and crops every time)."""
    dm = cli.datamodule
    dm.setup("fit")
    return default_collate([dm.train_set[(i, 0)] for i in range(n)])


def _datamodule(ckpt: dict) -> VideoDataModule:
    """The data module a checkpoint was trained with."""
    hp = ckpt["datamodule_hyper_parameters"]
    return VideoDataModule(**{k: v for k, v in hp.items() if not k.startswith("_")})


def _objective(model, batch) -> float:
    model.train()  # batch statistics: a few steps barely move BatchNorm's running averages
    with torch.no_grad():
        if isinstance(model, DualActionStream):
            return float(model.objective(batch)["loss"])
        if isinstance(model, DualActionFusion):
            return float(F.cross_entropy(model(batch[0], batch[1]), batch[-1]))
        return float(F.cross_entropy(model(batch[0]), batch[-1]))


@pytest.mark.parametrize(
    "recipe", ["dual_action_flow_teacher", "dual_action_stream", "mar", "dual_action_fusion"]
)
def test_recipe_steps_lower_the_loss(recipe, root, teacher, student):
    args = [*tiny_overrides(root), *TINY, "--trainer.max_steps=6"]
    if recipe in ("dual_action_stream", "mar"):
        args.append(f"--model.init_args.teacher_checkpoint={teacher}")
    if recipe == "dual_action_fusion":
        args += [f"--model.init_args.rgb_checkpoint={student}",
                 f"--model.init_args.flow_checkpoint={teacher}"]  # fmt: skip
    cli = build(recipe, args)
    model, hp, dm = cli.model, cli.model.hparams, cli.datamodule
    # What the recipe says reaches the module: the paper's settings, the clips' channels.
    assert dm.hparams.sampling == "clip" and hp.optimizer == "sgd" and hp.weight_decay == 5e-4
    if recipe in ("dual_action_stream", "mar"):
        assert isinstance(model, DualActionStream) and hp.alpha == 50.0
        assert dm.modalities == ("rgb", "flow") and dm.val_modalities == ("rgb",)
        assert hp.loss == ("mar" if recipe == "mar" else "dual_action")
        assert model.levels == (("avgpool",) if recipe == "mar" else CLIP_LEVELS)
    batch = _batch(cli)
    assert batch[0].shape == (3, 1, 2 if recipe.endswith("teacher") else 3, 4, 48, 48)
    before = _objective(model, batch)
    cli.trainer.fit(model, train_dataloaders=DataLoader([batch] * 6, batch_size=None))
    assert cli.trainer.global_step == 6
    after = _objective(model, batch)
    assert after < before, (recipe, before, after)


def _module(loss="dual_action", **kw):
    torch.manual_seed(0)
    teacher = resnet3d(10, 0.125, num_classes=3, in_channels=2)
    return DualActionStream(teacher=teacher, loss=loss, **TINY_NET, **kw)


def _clips(n=2, k=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    rgb = torch.randn(n, 1, 3, k, 32, 32, generator=g)
    flow = torch.randn(n, 1, 2, k, 32, 32, generator=g)
    return rgb, flow, torch.arange(n) % 3


def _gram_eq3(fs, ft, reduction):
    """Eq. 3 written out: sum_i || (G_DS(i) - G_FLOW(i)) / ((n-1) C T H W) ||_1, batch mean;
    the norm sums or averages the C x C entries."""
    total = 0.0
    for s, t in zip(fs, ft, strict=True):
        c = s.shape[1]
        a, b = s.reshape(len(s), c, -1), t.reshape(len(t), c, -1)
        g = torch.einsum("ncx,ndx->ncd", a, a) - torch.einsum("ncx,ndx->ncd", b, b)
        norm = (g / (len(fs) * a.shape[1] * a.shape[2])).abs().sum((1, 2))
        total = total + (norm / (c * c) if reduction == "mean" else norm).mean()
    return total


@pytest.mark.parametrize(
    "loss, reduction",
    [("dual_action", "mean"), ("dual_action", "sum"), ("mae", "mean"), ("gram", "mean"),
     ("gram", "sum"), ("mar", "mean"), ("ce", "mean")],
)  # fmt: skip
def test_loss_is_eq4_on_the_tapped_features(loss, reduction):
    m = _module(loss, gram_reduction=reduction).eval()
    rgb, flow, y = _clips()
    out = m.objective((rgb, flow, y))
    levels = [[n] for n in (("avgpool",) if loss == "mar" else CLIP_LEVELS)]
    with torch.no_grad():
        logits = m.net(rgb[:, 0])
        fs = FeatureTaps(m.net, levels)(rgb[:, 0])
        ft = FeatureTaps(m.teacher, levels)(flow[:, 0])
    assert [f.shape[1] for f in fs] == ([64] if loss == "mar" else [8, 16, 32, 64, 64])
    ce = F.cross_entropy(logits, y)
    if loss == "mar":
        want = ce + 50 * F.mse_loss(fs[0].flatten(1), ft[0].flatten(1))
    elif loss == "ce":
        want = ce
    else:
        mae = sum((s - t).abs().mean() for s, t in zip(fs, ft, strict=True)) / len(fs)
        gram = _gram_eq3(fs, ft, reduction)
        want = ce + 50 * ((mae if loss != "gram" else 0) + (gram if loss != "mae" else 0))
        if reduction == "sum":  # mvaccel.distill's eq. 4
            terms = dict(use_mae=loss != "gram", use_gram=loss != "mae")
            lib = distill.dual_action_loss(logits, y, fs, ft, alpha=50.0, **terms)
            torch.testing.assert_close(lib, want, rtol=1e-5, atol=1e-5)
        elif loss != "mae":  # every level has 8 or more channels
            assert float(out["gram"].detach()) * 8 * 8 < float(distill.gram_loss(fs, ft))
    torch.testing.assert_close(out["loss"].detach(), want, rtol=1e-5, atol=1e-5)
    assert float(out["loss"].detach()) > float(ce) or loss == "ce"


def test_teacher_is_frozen_while_the_student_trains():
    m = _module()
    before = {k: v.clone() for k, v in m.teacher.state_dict().items()}
    student = m.net.conv1.weight.clone()
    trainer = L.Trainer(max_steps=3, logger=False, enable_checkpointing=False, accelerator="cpu",
                        enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    trainer.fit(m, DataLoader(TensorDataset(*_clips(4)), batch_size=2))
    assert m.training and not m.teacher.training
    assert not any(p.requires_grad for p in m.teacher.parameters())
    assert all(p.grad is None for p in m.teacher.parameters())
    assert all(torch.equal(v, before[k]) for k, v in m.teacher.state_dict().items())  # BN too
    assert not torch.equal(m.net.conv1.weight, student)


def test_student_checkpoint_evaluates_on_rgb_only(student, root):
    ckpt = load_checkpoint(student)
    assert any(k.startswith("teacher.") for k in ckpt["state_dict"])
    net = network_from_checkpoint(ckpt)  # rebuilt without its teacher
    r = evaluate(student, progress=False)
    assert r["modality"] == "rgb" and r["scores"].shape == (3, 3) and 0 <= r["top1"] <= 1
    # The scores are the student's on each video's centred RGB clip.
    ds = _datamodule(ckpt).dataset("test", modalities=["rgb"], train=False)
    x, _ = ds[0]
    with torch.no_grad():
        torch.testing.assert_close(net(x)[0].numpy(), r["scores"][0], rtol=1e-4, atol=1e-4)


def test_attention_fusion_is_a_softmax_weighted_sum():
    torch.manual_seed(0)
    f = AttentionFusion(num_classes=5)
    assert f.fc1.in_features == 10 and f.fc1.out_features == 5 and f.fc2.out_features == 2
    a, b = torch.randn(4, 5) * 3, torch.randn(4, 5)
    w = f.weights(a, b)
    assert w.shape == (4, 2) and (w >= 0).all()
    torch.testing.assert_close(w.sum(1), torch.ones(4))
    torch.testing.assert_close(w, F.softmax(f.fc2(f.fc1(torch.cat([a, b], 1))), 1))
    torch.testing.assert_close(f(a, b), w[:, :1] * a + w[:, 1:] * b)
    p = AttentionFusion(num_classes=5, inputs="softmax", activation="relu")
    out = p(a, b)  # log of the weighted probabilities
    torch.testing.assert_close(out.exp().sum(1), torch.ones(4))
    wp = p.weights(a, b)
    want = wp[:, :1] * F.softmax(a, 1) + wp[:, 1:] * F.softmax(b, 1)
    torch.testing.assert_close(out.exp(), want)


def test_fusion_trains_only_the_fusion_and_evaluates(root, teacher, student, tmp_path):
    cli = build("dual_action_fusion", [*tiny_overrides(root), *TINY, "--trainer.max_steps=4",
                                       f"--model.init_args.rgb_checkpoint={student}",
                                       f"--model.init_args.flow_checkpoint={teacher}"])  # fmt: skip
    m = cli.model
    ds_net = load_checkpoint(student)["state_dict"]
    assert all(torch.equal(v, ds_net[f"net.{k}"]) for k, v in m.net.state_dict().items())
    streams = {k: v.clone() for k, v in m.state_dict().items() if not k.startswith("fusion.")}
    fusion = {k: v.clone() for k, v in m.fusion.state_dict().items()}
    trainable = [n for n, p in m.named_parameters() if p.requires_grad]
    assert trainable and all(n.startswith("fusion.") for n in trainable)
    ckpt = _fit(cli, 4, tmp_path / "fusion.ckpt")
    assert all(torch.equal(v, streams[k]) for k, v in m.state_dict().items() if k in streams)
    assert any(not torch.equal(v, fusion[k]) for k, v in m.fusion.state_dict().items())
    assert not m.net.training and not m.flow_net.training
    r = evaluate(ckpt, progress=False)
    assert r["modality"] == "rgb+flow" and r["scores"].shape == (3, 3)
    # The fused scores are the weighted sum of the two streams' scores of the same clips.
    saved = load_checkpoint(ckpt)
    net = network_from_checkpoint(saved)
    rgb, flow, _ = _datamodule(saved).dataset("test", train=False)[1]
    with torch.no_grad():
        a, b = net.stream_scores(rgb, flow)
        w = net.fusion.weights(a, b)
        torch.testing.assert_close(net(rgb, flow), w[:, :1] * a + w[:, 1:] * b)
    torch.testing.assert_close(net(rgb, flow)[0].detach().numpy(), r["scores"][1], rtol=1e-4,
                               atol=1e-4)  # fmt: skip


def test_bad_inputs_fail_clearly(root, teacher, tmp_path):
    with pytest.raises(ValueError, match="needs the flow teacher"):
        DualActionStream(**TINY_NET)
    with pytest.raises(FileNotFoundError, match="teacher checkpoint not found"):
        DualActionStream(teacher_checkpoint=str(tmp_path / "none.ckpt"), **TINY_NET)
    with pytest.raises(ValueError, match="does not fit"):  # another width than the teacher's
        DualActionStream(teacher_checkpoint=str(teacher), backbone="resnet3d",
                         backbone_kwargs=dict(depth=10, width=0.25), num_classes=3)  # fmt: skip
    with pytest.raises(ValueError, match="must be a 3D network .*got 'resnet18'"):
        ClipClassifier(backbone="resnet18", num_classes=3)
    with pytest.raises(ValueError, match="loss must be one of"):
        _module("kd")
    with pytest.raises(ValueError, match="gram_reduction must be one of"):
        _module(gram_reduction="max")
    with pytest.raises(ValueError, match="no submodules"):
        _module(levels=["layer1", "layer9"])
    with pytest.raises(ValueError, match="depth must be"):
        resnet3d(12)
    m = _module()
    rgb, flow, y = _clips()
    with pytest.raises(ValueError, match="sampling='clip'"):  # a 2D stack, not a clip
        m.objective((rgb[:, :, :, 0], flow, y))
    with pytest.raises(ValueError, match=r"\(rgb, flow, y\)"):
        m.objective((rgb, y))
    with pytest.raises(ValueError, match="same frames"):
        m.objective((rgb, flow[..., :16, :16], y))
    with pytest.raises(ValueError, match="expected 2 score tensors"):
        AttentionFusion(3)(torch.randn(2, 3))
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        AttentionFusion(3)(torch.randn(2, 3), torch.randn(2, 4))
    with pytest.raises(ValueError, match="inputs must be"):
        AttentionFusion(3, inputs="logits")
    net = resnet3d(10, 0.125, num_classes=3, in_channels=3)
    with pytest.raises(FileNotFoundError, match="flow stream checkpoint not found"):
        load_stream(net, tmp_path / "x.ckpt", "flow stream")
    # Through the recipe: jsonargparse reports the module's error.
    with pytest.raises((ValueError, FileNotFoundError), match="teacher checkpoint not found"):
        build("dual_action_stream", [*tiny_overrides(root, tmp_path / "none.ckpt"), *TINY])


def test_demo_part_rows(root, tmp_path):
    from mvaccel.demo import DemoConfig
    from mvaccel.demo_parts import DemoContext
    from mvaccel.demo_parts import dual_action as part
    from mvaccel.train.evaluate import fuse, load_scores

    cfg = DemoConfig(size=48, bound=5.0, motion_std=0.05)
    ctx = DemoContext(cfg, root, tmp_path / "runs", tmp_path / "scores")
    rows = part.run(ctx, clip_len=4, epochs=2, fusion_epochs=1, batch_size=3)
    assert [r.inputs for r in rows] == ["flow", "rgb", "rgb", "rgb + flow", "rgb + flow"]
    for r in rows:
        assert 0 <= r.mean_class <= 1 and r.top1 in (0, 1 / 3, 2 / 3, 1), r  # 3 test videos
        assert all(v > 0 for v in r.stage_fps.values()) and r.total_fps > 0
        assert ("flow" in r.stage_fps) == ("flow" in r.inputs)
    # the RGB-only rows skip TV-L1: faster end to end than the flow stream
    assert rows[2].total_fps > rows[0].total_fps
    saved = {n: load_scores(ctx.scores / f"dual_action_{n}.npz")
             for n in ("flow_teacher", "dual_action")}  # fmt: skip
    avg = fuse([saved["dual_action"], saved["flow_teacher"]], [1, 1])
    assert rows[3].top1 == pytest.approx(float((avg["scores"].argmax(1) == avg["labels"]).mean()))


def test_channels_last_gives_the_same_scores():
    torch.manual_seed(0)
    a = ClipClassifier(clip_channels=2, **TINY_NET).eval()
    b = ClipClassifier(clip_channels=2, channels_last=True, **TINY_NET).eval()
    b.load_state_dict(a.state_dict())
    assert b.net.conv1.weight.is_contiguous(memory_format=torch.channels_last_3d)
    x = torch.randn(2, 1, 2, 4, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(b(x), a(x), rtol=1e-4, atol=1e-5)


# ---- MARS's route: ResNeXt-101 3D from MARS's checkpoints, the last block fine-tuned ----

#: the ResNeXt-101 of the MARS recipes shrunk: ResNeXt-50, cardinality 8, 1/4 width
TINY_RESNEXT = dict(depth=50, width=0.25, cardinality=8)


def _mars_file(path: Path, in_channels: int, seed: int) -> Path:
    """A MARS-style checkpoint (arch, DataParallel keys, 400 Kinetics classes) of the tiny net."""
    from mvaccel.nn.backbones import resnext3d

    torch.manual_seed(seed)
    net = resnext3d(**TINY_RESNEXT, num_classes=400, in_channels=in_channels)
    for m in net.modules():  # BN statistics that differ from a fresh network's
        if isinstance(m, torch.nn.BatchNorm3d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    state = {f"module.{k}": v for k, v in net.state_dict().items()}
    torch.save({"arch": "resnext-101", "epoch": 1, "state_dict": state}, path)
    return path


def test_finetune_last_block_trains_layer4_and_fc_only(tmp_path):
    mars = _mars_file(tmp_path / "Flow_Kinetics_16f.pth", 2, seed=0)
    model = ClipClassifier(backbone="resnext3d", backbone_kwargs=TINY_RESNEXT, num_classes=3,
                           clip_channels=2, pretrained=str(mars), finetune="last_block",
                           lr=0.1)  # fmt: skip
    src = {k.removeprefix("module."): v for k, v in torch.load(mars)["state_dict"].items()}
    assert torch.equal(model.net.layer2[0].conv2.weight, src["layer2.0.conv2.weight"])
    assert model.net.layer2[0].conv2.groups == 8 and model.net.fc.out_features == 3
    trainable = {n.split(".")[0] for n, p in model.net.named_parameters() if p.requires_grad}
    assert trainable == {"layer4", "fc"}
    before = {k: v.clone() for k, v in model.net.state_dict().items()}
    opt = model.configure_optimizers()
    model.train()
    assert not model.net.layer3.training and model.net.layer4.training
    x = torch.randn(2, 1, 2, 4, 32, 32)
    for _ in range(2):
        opt.zero_grad()
        F.cross_entropy(model(x), torch.tensor([0, 2])).backward()
        opt.step()
    after = model.net.state_dict()
    moved = {k.split(".")[0] for k in after if not torch.equal(after[k], before[k])}
    # layer4's weights and BN statistics move; stem, layer1-3 and their BN statistics do not
    assert moved == {"layer4", "fc"}, moved
    assert not torch.equal(after["layer4.0.bn1.running_mean"], before["layer4.0.bn1.running_mean"])
    with pytest.raises(ValueError, match="finetune must be one of"):
        ClipClassifier(backbone="resnext3d", backbone_kwargs=TINY_RESNEXT, finetune="layer4")


def test_mars_recipes_train_from_mars_checkpoints(root, tmp_path):
    flow = _mars_file(tmp_path / "Flow_Kinetics_16f.pth", 2, seed=0)
    rgb = _mars_file(tmp_path / "RGB_Kinetics_16f.pth", 3, seed=1)
    net = ["--model.init_args.backbone=resnext3d",
           f"--model.init_args.backbone_kwargs={TINY_RESNEXT}".replace("'", ""),
           "--data.new_length=4", "--model.init_args.lr=0.01"]  # fmt: skip
    cli = build("dual_action_flow_teacher_mars", [*tiny_overrides(root), *net,
                f"--model.init_args.pretrained={flow}", "--trainer.max_steps=2"])  # fmt: skip
    assert cli.model.hparams.finetune == "last_block" and cli.model.net.input_norm == "activitynet"
    assert cli.model.net.layer1[0].conv2.groups == 8
    teacher = _fit(cli, 2, tmp_path / "teacher_mars.ckpt")
    args = [*tiny_overrides(root, teacher), *net, f"--model.init_args.pretrained={rgb}"]
    cli = build("dual_action_stream_mars", [*args, "--trainer.max_steps=3"])
    model = cli.model
    assert isinstance(model, DualActionStream) and model.net.input_norm == "activitynet"
    assert cli.datamodule.hparams.rgb_norm == "activitynet"
    src = {k.removeprefix("module."): v for k, v in torch.load(rgb)["state_dict"].items()}
    assert torch.equal(model.net.layer3[1].conv1.weight, src["layer3.1.conv1.weight"])
    batch = _batch(cli)
    before = _objective(model, batch)
    cli.trainer.fit(model, train_dataloaders=DataLoader([batch] * 3, batch_size=None))
    assert cli.trainer.global_step == 3 and _objective(model, batch) < before
    cli.trainer.save_checkpoint(tmp_path / "student_mars.ckpt")
    # the RGB convention is the weights': another one is refused when training starts
    cli = build("dual_action_stream_mars", [*args, "--data.rgb_norm=imagenet",
                                            "--trainer.max_steps=1"])  # fmt: skip
    with pytest.raises(ValueError, match="expect RGB normalised as 'activitynet'"):
        cli.trainer.fit(cli.model, cli.datamodule)
    # evaluation rebuilds from the checkpoint alone: MARS's files are not read again
    rgb.unlink()
    flow.unlink()
    net = network_from_checkpoint(load_checkpoint(tmp_path / "student_mars.ckpt"))
    assert torch.equal(net.layer4[0].conv3.weight, model.net.layer4[0].conv3.weight)


def test_mars_route_recipes_agree():
    import yaml

    names = ["dual_action_flow_teacher_mars", "dual_action_stream_mars", "dual_action_fusion_mars"]
    t, s, f = (yaml.safe_load((RECIPES / f"{n}.yaml").read_text()) for n in names)
    assert {c["model"]["init_args"]["backbone"] for c in (t, s, f)} == {"resnext3d101"}
    assert t["model"]["init_args"]["finetune"] == "last_block"
    assert "Flow_Kinetics" in t["model"]["init_args"]["pretrained"]
    assert "RGB_Kinetics" in s["model"]["init_args"]["pretrained"]
    # MARS's inputs everywhere: RGB minus the ActivityNet mean, flow JPEG value - 127.5
    assert s["data"]["rgb_norm"] == f["data"]["rgb_norm"] == "activitynet"
    assert {c["data"]["motion_std"] for c in (t, s, f)} == {1 / 255}
    assert "teacher_mars" in s["model"]["init_args"]["teacher_checkpoint"]
    assert "stream_mars" in f["model"]["init_args"]["rgb_checkpoint"]
    assert "teacher_mars" in f["model"]["init_args"]["flow_checkpoint"]
