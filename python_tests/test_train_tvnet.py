"""TVNet end to end (Fan et al.) and the TSN two-stream baseline, through their recipes.

Tiny synthetic data (trainkit); BN-Inception at 64x64 (its smallest working input), TVNet-50 as
the recipe has it. Each recipe's steps lower the loss; eq. 13 is checked by hand; the TVNet
parameter group has lr / 255; the checkpoints evaluate; RGB and TVNet scores fuse 1 : 2 with
``mvaccel fuse``; bad settings fail with clear messages.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, default_collate
from trainkit import FLOW_BOUND, tiny_dataset, tiny_overrides

from mvaccel.cli import main as cli_main
from mvaccel.distill import tvl1_energy
from mvaccel.train import ActionClassifier, TVNetClassifier
from mvaccel.train.cli import MvaccelCLI
from mvaccel.train.data import VideoDataModule
from mvaccel.train.evaluate import evaluate, load_checkpoint, network_from_checkpoint, save_scores
from mvaccel.train.tvnet import frame_pairs, load_flow_classifier, rgb_stack_frames

RECIPES = Path(__file__).resolve().parents[1] / "mvaccel" / "recipes"
MOTION_STD = 0.05
# BN-Inception needs 64x64 or more; a lighter dropout so six steps show.
SMALL = ["--data.size=64", "--model.init_args.backbone_kwargs={dropout: 0.1}"]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module", autouse=True)
def plain_argv():
    with pytest.MonkeyPatch.context() as mp:  # LightningCLI warns about pytest's arguments
        mp.setattr("sys.argv", ["mvaccel"])
        yield


def build(name: str, args: list[str], steps: int = 6) -> MvaccelCLI:
    """The recipe with ``args``, stopping after ``steps`` (a fit over one repeated batch)."""
    args = [*args, f"--trainer.max_steps={steps}"]
    return MvaccelCLI(
        ActionClassifier, VideoDataModule, subclass_mode_model=True, run=False,
        args=["--config", str(RECIPES / f"{name}.yaml"), *args], save_config_callback=None,
        auto_configure_optimizers=False,
    )  # fmt: skip


def tvnet_args(root, teacher=None, frames: int = 3, init: str | None = None) -> list[str]:
    args = [*tiny_overrides(root), *SMALL, f"--data.new_length={frames}",
            f"--model.init_args.flow_clip={FLOW_BOUND}",
            f"--model.init_args.flow_std={MOTION_STD}"]  # fmt: skip
    if teacher is not None:  # the flow-trained start (the recipe's option)
        args += ["--model.init_args.classifier_init=flow",
                 f"--model.init_args.classifier_checkpoint={teacher}"]  # fmt: skip
    elif init is not None:
        args.append(f"--model.init_args.classifier_init={init}")
    return args


def data_settings(cli) -> dict:
    """The data module's arguments (what a checkpoint of a data-module fit would hold)."""
    return {k: v for k, v in cli.datamodule.hparams.items() if not k.startswith("_")}


def _batch(cli, n=3):
    dm = cli.datamodule
    dm.setup("fit")
    return default_collate([dm.train_set[(i, 0)] for i in range(n)])


def _fit(cli, batch, steps=6):
    cli.trainer.fit(cli.model, train_dataloaders=DataLoader([batch] * steps, batch_size=None))
    assert cli.trainer.global_step == steps


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tiny_dataset(tmp_path_factory)


@pytest.fixture(scope="module")
def flow_net(root, tmp_path_factory):
    """The TSN flow stream (two_stream_flow.yaml) on 2 fields: the TVNet classifier's init."""
    cli = build("two_stream_flow", [*tiny_overrides(root), *SMALL, "--data.new_length=2"])
    batch = _batch(cli)
    model = cli.model
    model.eval()
    with torch.no_grad():
        before = float(F.cross_entropy(model(batch[0]), batch[1]))
    _fit(cli, batch)
    model.eval()
    with torch.no_grad():
        after = float(F.cross_entropy(model(batch[0]), batch[1]))
    path = tmp_path_factory.mktemp("flow") / "flow.ckpt"
    cli.trainer.save_checkpoint(path)
    return {"path": path, "before": before, "after": after, "hp": model.hparams}


@pytest.fixture(scope="module")
def tvnet_run(root, flow_net, tmp_path_factory):
    """TVNet-50 + BN-Inception from the flow net, 6 steps of the recipe; its checkpoint."""
    cli = build("tvnet_e2e", [*tvnet_args(root, flow_net["path"])])
    model = cli.model
    init = {k: v.clone() for k, v in model.state_dict().items()}
    batch = _batch(cli)
    model.eval()
    with torch.no_grad():
        before = model.objective(batch)
    opt = model.configure_optimizers()
    _fit(cli, batch)
    model.eval()
    with torch.no_grad():
        after = model.objective(batch)
    path = tmp_path_factory.mktemp("tvnet") / "tvnet.ckpt"
    cli.trainer.save_checkpoint(path)
    # Trained on one batch, not the data module: evaluate() gets its settings explicitly.
    data = data_settings(cli)
    return dict(cli=cli, model=model, batch=batch, before=before, after=after, init=init,
                opt=opt, path=path, data=data)  # fmt: skip


def test_recipes_are_there_and_say_how_to_run():
    for name in ("tvnet_e2e", "two_stream_rgb", "two_stream_flow"):
        text = (RECIPES / f"{name}.yaml").read_text()
        assert "# Run: mvaccel train --config recipes/" + name in text
        assert "mvaccel fuse" in text and "# Data:" in text


def test_two_stream_flow_recipe_lowers_loss(flow_net):
    hp = flow_net["hp"]
    assert hp.backbone == "bninception" and hp.in_channels == 4 and hp.lr == 0.005
    assert list(hp.milestones) == [12000, 18000]
    assert flow_net["after"] < flow_net["before"]


def test_two_stream_rgb_recipe_lowers_loss(root):
    cli = build("two_stream_rgb", [*tiny_overrides(root), *SMALL, "--data.new_length=1"])
    model, dm = cli.model, cli.datamodule
    assert type(model) is ActionClassifier and model.hparams.backbone == "bninception"
    assert model.hparams.in_channels == 3 and dm.hparams.num_segments == 3
    assert cli.trainer.gradient_clip_val == 20
    batch = _batch(cli)
    assert batch[0].shape == (3, 3, 3, 64, 64)  # TSN: 3 segments of one frame
    model.eval()
    with torch.no_grad():
        before = float(F.cross_entropy(model(batch[0]), batch[1]))
    _fit(cli, batch)
    model.eval()
    with torch.no_grad():
        after = float(F.cross_entropy(model(batch[0]), batch[1]))
    assert after < before


def test_tvnet_recipe_builds_the_paper_model(tvnet_run, flow_net):
    model = tvnet_run["model"]
    hp = model.hparams
    assert isinstance(model, TVNetClassifier)
    assert (hp.nscales, hp.warps, hp.iterations) == (1, 1, 50)  # TVNet-50
    assert hp.flow_weight == 0.1 and hp.tvnet_lr_div == 255.0
    assert hp.in_channels == 9 and model.flow_channels == 4  # 3 RGB frames -> 2 flows
    assert model.tvnet.wf.requires_grad and model.tvnet.u0.shape == (1, 2, 224, 224)
    # The classifier started as the flow network.
    teacher = torch.load(flow_net["path"], map_location="cpu", weights_only=False)["state_dict"]
    init = tvnet_run["init"]
    assert all(torch.equal(init[k], v) for k, v in teacher.items() if k.startswith("net."))


def test_tvnet_recipe_lowers_loss_and_trains_tvnet(tvnet_run):
    before, after = tvnet_run["before"], tvnet_run["after"]
    assert float(after["loss"]) < float(before["loss"]), (before["loss"], after["loss"])
    init, now = tvnet_run["init"], tvnet_run["model"].state_dict()
    assert not torch.equal(init["tvnet.wf"], now["tvnet.wf"])
    assert not torch.equal(init["tvnet.u0"], now["tvnet.u0"])


def test_tvnet_param_group_has_lr_over_255(tvnet_run):
    model, opt = tvnet_run["model"], tvnet_run["opt"]
    opt = opt["optimizer"] if isinstance(opt, dict) else opt
    groups = {g.get("name", "classifier"): g for g in opt.param_groups}
    assert set(groups) == {"classifier", "tvnet"}
    assert groups["classifier"]["lr"] == pytest.approx(0.005)
    assert groups["tvnet"]["lr"] == pytest.approx(0.005 / 255)
    assert {id(p) for p in groups["tvnet"]["params"]} == {id(p) for p in model.tvnet.parameters()}
    assert {id(p) for p in groups["classifier"]["params"]} == {
        id(p) for p in model.net.parameters()
    }
    # After training (MultiStepLR scales both groups), the ratio holds.
    trained = tvnet_run["cli"].trainer.optimizers[0].param_groups
    assert trained[1]["lr"] * 255 == pytest.approx(trained[0]["lr"])


def test_loss_is_ce_plus_tenth_of_tvl1_energy_by_hand(tvnet_run):
    model, (x, y) = tvnet_run["model"], tvnet_run["batch"]
    model.eval()
    with torch.no_grad():
        out = model.objective((x, y))
        # By hand: undo the ImageNet normalisation, pair (I_t, I_{t-1}), TVNet, stack, CNN.
        n, s, c, h, w = x.shape
        mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        frames = [(x[:, 0, 3 * t : 3 * t + 3] * std + mean).clamp(0, 1) for t in range(c // 3)]
        flows, i0s, i1s = [], [], []
        for t in range(1, c // 3):
            i0s.append(frames[t])
            i1s.append(frames[t - 1])
            flows.append(model.tvnet(frames[t], frames[t - 1]))
        stack = torch.cat(flows, 1)  # x1, y1, x2, y2
        q = stack.clamp(-FLOW_BOUND, FLOW_BOUND) * (127.5 / FLOW_BOUND) + 128
        logits = model.net((q / 255 - 0.5) / MOTION_STD)
        ce = F.cross_entropy(logits, y)
        energies = [
            tvl1_energy(a * 255, b * 255, u) for a, b, u in zip(i0s, i1s, flows, strict=True)
        ]
        energy = torch.stack(energies).mean()  # equal pixel counts: the mean of the means
    assert float(out["ce"]) == pytest.approx(float(ce), rel=1e-5)
    assert float(out["flow"]) == pytest.approx(float(energy), rel=1e-5)
    assert float(out["loss"]) == pytest.approx(float(ce + 0.1 * energy), rel=1e-5)
    assert float(out["flow"]) > 0.05  # a real energy, not a zero term


def test_untrained_tvnet_flow_stack_is_tvl1(root):
    """The pipeline's fields are the `tvnet` TV-L1 preset of the frame pairs, in order."""
    from mvaccel.flow import tvl1

    model = TVNetClassifier(in_channels=9, num_classes=3, backbone="clarifai",
                            backbone_kwargs={"width": 0.0625}, flow_clip=5.0)  # fmt: skip
    dm = VideoDataModule(root=str(root), modalities=["rgb"], new_length=3, size=48,
                         num_workers=0, cache=True)  # fmt: skip
    x = dm.dataset("train")[(0, 0)][0]  # (1, 9, 48, 48)
    i0, i1, u = model.pipeline.flow(x)
    frames = rgb_stack_frames(x)
    a, b = frame_pairs(frames, "backward")
    assert torch.equal(a, i0) and torch.equal(b, i1)
    assert torch.equal(a[1], frames[0, 2]) and torch.equal(b[1], frames[0, 1])
    ref = tvl1(a, b, "tvnet")
    assert (u - ref).abs().max() < 1e-3
    assert u.abs().max() > 0.1  # the videos move


def test_evaluate_runs_on_the_checkpoint_without_training_files(tvnet_run, flow_net, tmp_path):
    path = tvnet_run["path"]
    ckpt = load_checkpoint(path)
    assert ckpt["mvaccel_module"] == "mvaccel.train.tvnet.TVNetClassifier"
    assert not any(k.startswith("pipeline.") for k in ckpt["state_dict"])
    # The flow net it started from is not needed at test time.
    moved = tmp_path / "moved.ckpt"
    shutil.move(flow_net["path"], moved)
    try:
        net = network_from_checkpoint(ckpt)
        x = tvnet_run["batch"][0].flatten(0, 1)
        model = tvnet_run["model"].eval()
        with torch.no_grad():
            assert torch.allclose(net(x), model.pipeline(x), atol=1e-5)
        r = evaluate(path, segments=2, progress=False, **tvnet_run["data"])
    finally:
        shutil.move(moved, flow_net["path"])
    assert r["scores"].shape == (3, 3) and r["modality"] == "rgb"
    assert 0 <= r["top1"] <= 1 and r["frames_per_s"] > 0


def test_fusion_one_to_two_on_real_score_files(tvnet_run, root, tmp_path, capsys):
    rgb = build("two_stream_rgb", [*tiny_overrides(root), *SMALL, "--data.new_length=1"], 2)
    _fit(rgb, _batch(rgb), steps=2)
    rgb_ckpt = tmp_path / "rgb.ckpt"
    rgb.trainer.save_checkpoint(rgb_ckpt)
    ra = evaluate(rgb_ckpt, segments=2, progress=False, **data_settings(rgb))
    rb = evaluate(tvnet_run["path"], segments=2, progress=False, **tvnet_run["data"])
    a, b = save_scores(tmp_path / "rgb.npz", ra), save_scores(tmp_path / "tvnet.npz", rb)
    out = tmp_path / "fused.npz"
    assert cli_main(["fuse", str(a), str(b), "--weights", "1", "2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| fused | 1 : 2 |" in printed
    za, zb, zf = (np.load(p) for p in (a, b, out))

    def soft(s):
        e = np.exp(s - s.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    order = [list(zb["videos"]).index(v) for v in za["videos"]]
    by_hand = (soft(za["scores"]) + 2 * soft(zb["scores"][order])) / 3
    np.testing.assert_allclose(zf["scores"], by_hand, rtol=1e-5)
    acc = float((by_hand.argmax(1) == za["labels"]).mean())
    assert f"| fused | 1 : 2 | {100 * acc:.1f} |" in printed


def test_frozen_tvnet_and_no_flow_loss_options():
    kw = dict(in_channels=9, num_classes=3, backbone="clarifai", backbone_kwargs={"width": 0.0625})
    frozen = TVNetClassifier(tvnet_trainable=[], **kw)
    assert not list(frozen.tvnet.parameters())
    opt = frozen.configure_optimizers()
    assert len(opt.param_groups) == 1
    x, y = torch.rand(2, 9, 64, 64), torch.tensor([0, 2])
    no_flow = TVNetClassifier(flow_weight=0.0, **kw).eval()
    out = no_flow.objective((x, y))
    assert "flow" not in out and torch.equal(out["loss"], out["ce"])


def test_clear_errors(root, flow_net, tmp_path):
    kw = dict(num_classes=3, backbone="clarifai", backbone_kwargs={"width": 0.0625})
    with pytest.raises(ValueError, match="3 \\* \\(K \\+ 1\\)"):
        TVNetClassifier(in_channels=10, **kw)
    with pytest.raises(ValueError, match="direction"):
        TVNetClassifier(in_channels=9, direction="sideways", **kw)
    with pytest.raises(ValueError, match="2D backbone"):
        TVNetClassifier(in_channels=9, num_classes=3, backbone="resnet3d18")
    model = TVNetClassifier(in_channels=9, **kw)
    with pytest.raises(ValueError, match="expected RGB stacks of 9 channels"):
        model(torch.rand(2, 6, 32, 32))
    with pytest.raises(FileNotFoundError, match="classifier checkpoint not found"):
        TVNetClassifier(in_channels=9, classifier_checkpoint=str(tmp_path / "no.ckpt"), **kw)
    # The flow net has 2 fields (4 channels): a 5-frame TVNet (8 channels) does not fit.
    bn = dict(num_classes=3, backbone="bninception")
    with pytest.raises(ValueError, match="data.new_length must be 3"):
        TVNetClassifier(in_channels=15, classifier_checkpoint=str(flow_net["path"]), **bn)
    with pytest.raises(ValueError, match="'bninception' classifier"):
        TVNetClassifier(in_channels=9, classifier_checkpoint=str(flow_net["path"]), **kw)
    sd = tmp_path / "bad_state.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, sd)
    with pytest.raises(ValueError, match="do not fit the classifier"):
        load_flow_classifier(model.net, sd)
    # A flow data module under the TVNet recipe: named, not a shape error deep inside.
    with pytest.raises(ValueError, match="must start with 'rgb'"):
        cli = build("tvnet_e2e", [*tvnet_args(root, init="scratch"), "--data.modalities=[flow]"],
                    1)  # fmt: skip
        cli.trainer.fit(cli.model, cli.datamodule)


def test_recipe_trains_from_the_data_module_with_its_loggers(root, tmp_path):
    """A real fit: data module batches, CSV + TensorBoard loggers (hparams of model and data
    are logged together, so their names must not clash), a checkpoint evaluate() reads."""
    logger = ("--trainer.logger=[{class_path: lightning.pytorch.loggers.CSVLogger, init_args: "
              f"{{save_dir: {tmp_path}}}}}, {{class_path: lightning.pytorch.loggers."
              f"TensorBoardLogger, init_args: {{save_dir: {tmp_path}}}}}]")  # fmt: skip
    cli = build("tvnet_e2e", [*tvnet_args(root, init="scratch"), logger], 2)
    cli.trainer.fit(cli.model, cli.datamodule)
    assert cli.trainer.global_step == 2
    path = tmp_path / "e2e.ckpt"
    cli.trainer.save_checkpoint(path)
    r = evaluate(path, segments=1, progress=False)  # data settings from the checkpoint
    assert r["scores"].shape == (3, 3)


@pytest.fixture(scope="module")
def demo_ctx(tmp_path_factory):
    """A micro version of the demo's first table: prepared data, flow CNN, RGB CNN, scores."""
    from mvaccel.demo import DemoConfig, _motion_fps, _prepare, _train
    from mvaccel.demo_parts import DemoContext

    cfg = DemoConfig(
        classes=("MoveRight", "MoveLeft", "RotateCW"), train_per_class=2, test_per_class=1,
        frames=10, height=48, width=64, size=48, new_length=2, epochs=2, rgb_epochs=1,
        test_segments=2,
    )  # fmt: skip
    out = tmp_path_factory.mktemp("demo")
    root = _prepare(cfg, out)
    ctx = DemoContext(cfg=cfg, root=root, runs=out / "runs", scores=out / "scores")
    for name in ("teacher_flow", "rgb_cnn"):
        ctx.checkpoints[name] = _train(cfg, root, name, ctx.runs, ctx.checkpoints.get(
            "teacher_flow"))  # fmt: skip
        ctx.results[name] = evaluate(ctx.checkpoints[name], segments=2, progress=False)
    ctx.motion_fps.update(_motion_fps(cfg, root))
    return ctx


def test_demo_part_rows(demo_ctx, monkeypatch):
    from mvaccel.demo_parts import tvnet as part
    from mvaccel.train.evaluate import fuse, load_scores

    monkeypatch.setattr(part, "EPOCHS", 2)
    rows = part.run(demo_ctx)
    names = [r.name for r in rows]
    assert names == [
        "TVNet-50 + OF-CNN, no training", "TVNet-50 end to end (L_c + 0.1 L_f)",
        "TVNet-50 e2e + RGB (1 : 2)", "Two-stream RGB + TV-L1 flow (1 : 1.5)",
        "Two-stream RGB + TV-L1 flow (1 : 2)",
    ]  # fmt: skip
    for r in rows:
        assert 0 <= r.top1 <= 1 and 0 <= r.mean_class <= 1
        assert all(v > 0 for v in r.stage_fps.values()) and r.total_fps > 0
    e2e = rows[1]
    assert "initialised from the TV-L1 flow CNN" in e2e.note and e2e.train_s > 0
    assert set(e2e.stage_fps) == {"decode", "tvnet", "network"}
    # The fused rows are the fusions of the score files.
    tv = load_scores(demo_ctx.scores / "tvnet_e2e.npz")
    rgb, flow = demo_ctx.results["rgb_cnn"], demo_ctx.results["teacher_flow"]
    for row, parts, w in ((rows[2], [rgb, tv], 2), (rows[3], [rgb, flow], 1.5),
                          (rows[4], [rgb, flow], 2)):  # fmt: skip
        f = fuse(parts, [1, w])
        assert row.top1 == pytest.approx(float((f["scores"].argmax(1) == f["labels"]).mean()))


def test_demo_part_without_a_fitting_flow_cnn_trains_from_scratch(demo_ctx, monkeypatch):
    from dataclasses import replace

    from mvaccel.demo_parts import tvnet as part

    monkeypatch.setattr(part, "EPOCHS", 1)
    # A flow CNN on 2 fields cannot start a 3-field TVNet classifier: said, not crashed.
    ctx = replace(demo_ctx, cfg=replace(demo_ctx.cfg, new_length=3), results={},
                  runs=demo_ctx.runs / "scratch", scores=demo_ctx.scores / "scratch")  # fmt: skip
    rows = part.run(ctx)
    assert [r.name for r in rows] == ["TVNet-50 end to end (L_c + 0.1 L_f)"]
    assert "classifier from scratch" in rows[0].note and "new_length must be 3" in rows[0].note


def test_tvnet_recipe_starts_from_imagenet_bninception_cross_modality(root, tmp_path):
    """The paper's route (the recipe's default): ImageNet BN-Inception, TSN cross-modality."""
    from mvaccel.nn import backbones

    torch.manual_seed(0)
    imagenet = backbones.BNInception(num_classes=1000, in_channels=3)
    path = tmp_path / "bninception_imagenet.pth"
    torch.save(imagenet.state_dict(), path)
    cli = build("tvnet_e2e", [*tvnet_args(root), f"--model.init_args.pretrained={path}"])
    model = cli.model
    assert model.hparams.classifier_init == "imagenet"
    from mvaccel.nn.backbones.common import first_conv

    name, conv = first_conv(model.net)
    rgb = dict(imagenet.named_modules())[name].weight
    assert conv.weight.shape[1] == 4  # 3 RGB frames -> 2 flows -> 4 channels
    want = rgb.mean(1, keepdim=True).expand(-1, 4, -1, -1)
    torch.testing.assert_close(conv.weight.detach(), want)
    # The rest of the trunk is ImageNet's (fc is for 1000 classes: left out).
    own = model.net.state_dict()
    same = [k for k, v in imagenet.state_dict().items() if k in own and own[k].shape == v.shape]
    assert len(same) > 100 and all(torch.equal(own[k], imagenet.state_dict()[k]) for k in same)
    # Without the weights the paper's route refuses to start silently from random weights.
    with pytest.raises(ValueError, match="pretrained"):
        build("tvnet_e2e", tvnet_args(root))


def test_classifier_init_options_are_checked():
    kw = dict(in_channels=9, backbone="resnet18", num_classes=3)
    with pytest.raises(ValueError, match="classifier_init must be one of"):
        TVNetClassifier(classifier_init="kinetics", **kw)
    with pytest.raises(ValueError, match="'flow' needs classifier_checkpoint"):
        TVNetClassifier(classifier_init="flow", **kw)
    with pytest.raises(ValueError, match="not both"):
        TVNetClassifier(classifier_checkpoint="a.ckpt", pretrained="b.pth", **kw)
    model = TVNetClassifier(classifier_init="scratch", iterations=2, **kw)
    assert model.hparams.classifier_init == "scratch"


def test_old_parameter_spellings_in_a_recipe_still_load_with_a_warning(root, tmp_path):
    # A recipe written before the rename (tvnet_scales / iters / lbda / zfactor keys).
    text = (RECIPES / "tvnet_e2e.yaml").read_text()
    for new, old in [("nscales: 1", "tvnet_scales: 2"), ("iterations: 50", "iters: 3"),
                     ("lambda_: 0.15", "lbda: 0.2")]:  # fmt: skip
        assert f"    {new}" in text
        text = text.replace(f"    {new}", f"    {old}")
    old = tmp_path / "old.yaml"
    old.write_text(text)
    args = [*tvnet_args(root, init="scratch"), "--model.init_args.zfactor=0.6"]
    with pytest.warns(DeprecationWarning, match="'iters' is deprecated, use 'iterations'"):
        cli = MvaccelCLI(
            ActionClassifier, VideoDataModule, subclass_mode_model=True, run=False,
            args=["--config", str(old), *args], save_config_callback=None,
            auto_configure_optimizers=False,
        )  # fmt: skip
    net, hp = cli.model.tvnet, cli.model.hparams
    assert (net.nscales, net.iterations, net.lambda_, net.scale_step) == (2, 3, 0.2, 0.6)
    # the checkpoint records the new names only
    assert (hp.nscales, hp.iterations, hp.lambda_, hp.scale_step) == (2, 3, 0.2, 0.6)
    assert hp.iters is None and hp.lbda is None
    kw = dict(in_channels=9, backbone="clarifai", num_classes=3, classifier_init="scratch")
    with pytest.raises(TypeError, match="both 'iters' .* and 'iterations'"):
        TVNetClassifier(iters=3, iterations=7, **kw)
