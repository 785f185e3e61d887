"""DMC-Net: the networks, the two-stage schedule through the recipes, evaluation, the ablations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, default_collate
from trainkit import tiny_dataset, tiny_overrides

from mvaccel.nn import DMCDiscriminator, DMCGenerator, DMCNetwork
from mvaccel.nn.backbones import resnet18
from mvaccel.nn.dmcnet import block_average, class_activation_map, smooth_mv
from mvaccel.ops import block_upsample
from mvaccel.train import ActionClassifier, CoViARStream, DMCNet
from mvaccel.train.cli import MvaccelCLI
from mvaccel.train.data import VideoDataModule
from mvaccel.train.evaluate import evaluate, load_checkpoint, network_from_checkpoint

RECIPES = Path(__file__).resolve().parents[1] / "mvaccel" / "recipes"

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def plain_argv(monkeypatch):
    monkeypatch.setattr("sys.argv", ["mvaccel"])


# ---- networks ----


def test_generator_is_the_papers_dense_network():
    g = DMCGenerator()
    convs = [s[0] for s in g.convs]
    assert [c.out_channels for c in convs] == [8, 8, 6, 4, 2]
    assert [c.in_channels for c in convs] == [5, 13, 21, 27, 31]  # densely connected
    assert g.predict_flow.in_channels == 33 and g.predict_flow.out_channels == 2
    assert all(c.kernel_size == (3, 3) and c.padding == (1, 1) for c in [*convs, g.predict_flow])
    assert all(s[1].negative_slope == 0.1 for s in g.convs)
    # 0.23 GFLOPs (multiply-adds) at 224x224: one MAC per weight per pixel.
    macs = sum(m.weight.numel() for m in g.modules() if isinstance(m, torch.nn.Conv2d)) * 224**2
    assert macs / 1e9 == pytest.approx(0.23, abs=0.005)
    # The output is the MV plus the refinement: zero refinement gives the MV back.
    torch.manual_seed(0)
    mv, r = torch.randn(2, 2, 20, 24), torch.randn(2, 3, 20, 24)
    out = g(mv, r)
    torch.testing.assert_close(out, mv + g.refinement(mv, r))
    with torch.no_grad():
        g.predict_flow.weight.zero_()
        g.predict_flow.bias.zero_()
    torch.testing.assert_close(g(mv, r), mv)
    with pytest.raises(ValueError, match="residual channels"):
        g(mv, torch.randn(2, 2, 20, 24))
    with pytest.raises(ValueError, match="one size"):
        g(mv, torch.randn(2, 3, 20, 22))


def test_discriminator_is_the_authors():
    d = DMCDiscriminator()  # Discriminator3
    convs = [m for m in d.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [16] * 3 + [32] * 3 + [64] * 3 + [128] * 3
    assert [c.stride[0] for c in convs] == [2, 1, 1] * 4
    bns = [m for m in d.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(bns) == 11 and all(b.eps == 0.8 for b in bns)  # none in the first block
    assert d.adv_layer.in_features == 128 * 14 * 14 and d.adv_layer.out_features == 2
    assert len([m for m in DMCDiscriminator(extra_blocks=0).modules()
                if isinstance(m, torch.nn.Conv2d)]) == 4  # fmt: skip
    d.eval()
    assert d(torch.randn(2, 2, 224, 224)).shape == (2, 2)
    assert d(torch.randn(3, 2, 48, 40)).shape == (3, 2)


def test_block_average_matches_a_loop():
    torch.manual_seed(1)
    x = torch.randn(2, 2, 37, 29, dtype=torch.float64)
    got = block_average(x, 16)
    want = torch.empty_like(x)
    for i in range(0, 37, 16):
        for j in range(0, 29, 16):
            cell = x[..., i : i + 16, j : j + 16]
            want[..., i : i + 16, j : j + 16] = cell.mean((-1, -2), keepdim=True)
    torch.testing.assert_close(got, want)
    assert block_average(x, 0) is x


def test_smooth_mv_is_bilinear_between_cell_means():
    torch.manual_seed(2)
    cells = torch.randn(1, 2, 3, 4, dtype=torch.float64)
    blocky = block_upsample(cells, 16, (48, 64), "nearest")
    torch.testing.assert_close(smooth_mv(blocky, 16), block_upsample(cells, 16, (48, 64),
                                                                     "bilinear"))  # fmt: skip
    flat = torch.full((1, 2, 32, 32), 3.0)
    torch.testing.assert_close(smooth_mv(flat, 16), flat)


def test_cam_is_the_class_score_per_position():
    """On a 1x1 layer4 map the CAM is the class logit minus its bias (ReLU'd), everywhere."""
    torch.manual_seed(3)
    net = resnet18(num_classes=4, in_channels=2).eval()
    x = torch.randn(3, 2, 32, 32)
    y = torch.tensor([0, 2, 3])
    with torch.no_grad():
        logits = net(x)
        cam = class_activation_map(net, x, y, upscale=1.0, relu=False)
        pos = class_activation_map(net, x, y, upscale=1.0)
    want = logits.gather(1, y[:, None]) - net.fc.bias[y][:, None]
    assert cam.shape == (3, 1, 32, 32)
    torch.testing.assert_close(cam, want[:, :, None, None].expand(3, 1, 32, 32))
    torch.testing.assert_close(pos, cam.clamp_min(0))
    with pytest.raises(ValueError, match="ResNet"):
        class_activation_map(torch.nn.Conv2d(2, 2, 1), x, y)


# ---- the recipes ----


def build(recipe: Path, args: list[str]) -> MvaccelCLI:
    return MvaccelCLI(
        ActionClassifier, VideoDataModule, subclass_mode_model=True, run=False,
        args=["--config", str(recipe), *args], save_config_callback=None,
        auto_configure_optimizers=False,
    )  # fmt: skip


def tiny(root: Path) -> list[str]:
    args = [a for a in tiny_overrides(root) if "backbone_kwargs" not in a]
    return [*args, "--data.new_length=1", "--data.val_batch_size=3"]


def _fixed_fit(cli, batch, n_batches: int, epochs: int, monkeypatch):
    """Fit on ``batch`` repeated, through the data module (its settings reach the checkpoint)."""
    dm = cli.datamodule
    monkeypatch.setattr(dm, "train_dataloader",
                        lambda: DataLoader([batch] * n_batches, batch_size=None))  # fmt: skip
    cli.trainer.fit_loop.max_epochs = epochs
    cli.trainer.fit(cli.model, datamodule=dm)


def _batch(cli, n=3):
    dm = cli.datamodule
    dm.setup("fit")
    return default_collate([dm.train_set[(i, 0)] for i in range(n)])


def _objective(model: DMCNet, batch) -> float:
    """CE + alpha * MSE of a fixed batch, in eval mode."""
    model.eval()
    mv, r, flow, y = batch
    with torch.no_grad():
        net = model.inference_network()
        s = mv.shape[1]
        dmc = net.dmc(mv.flatten(0, 1), r.flatten(0, 1))
        ce = F.cross_entropy(model.net(dmc).view(-1, s, 3).mean(1), y)
        mse = model.reconstruction_loss(dmc, flow.flatten(0, 1), y.repeat_interleave(s))
    return float(ce + model.hparams.alpha * mse)


def _params(module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def _changed(before: dict, module) -> bool:
    return any(not torch.equal(before[k], v) for k, v in module.named_parameters())


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tiny_dataset(tmp_path_factory)


@pytest.fixture(scope="module")
def flow_teacher(root, tmp_path_factory):
    """The flow ResNet-18 (recipe dmc_flow_resnet18) after a few steps."""
    import _pytest.monkeypatch

    mp = _pytest.monkeypatch.MonkeyPatch()
    mp.setattr("sys.argv", ["mvaccel"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cli = build(RECIPES / "dmc_flow_resnet18.yaml",
                    [*tiny(root), "--trainer.max_steps=3",
                     "--model.init_args.backbone_lr_mult=1.0"])  # fmt: skip
        assert isinstance(cli.model, CoViARStream) and cli.model.data_bn is None
        assert cli.datamodule.modalities == ("flow",) and cli.model.hparams.in_channels == 2
        cli.trainer.fit(cli.model, cli.datamodule)
        path = tmp_path_factory.mktemp("dmc") / "flow.ckpt"
        cli.trainer.save_checkpoint(path)
    finally:
        mp.undo()
        torch.set_num_threads(threads)
    return path


@pytest.fixture(scope="module")
def stage1(root, flow_teacher, tmp_path_factory):
    """Stage 1 from the recipe: 2 epochs of 2 steps on a fixed batch; records what changed."""
    import _pytest.monkeypatch

    mp = _pytest.monkeypatch.MonkeyPatch()
    mp.setattr("sys.argv", ["mvaccel"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        cli = build(
            RECIPES / "dmc_net.yaml",
            [*tiny(root), f"--model.init_args.flow_checkpoint={flow_teacher}"],
        )
        model = cli.model
        info = {"cli": cli}
        teacher = load_checkpoint(flow_teacher)["state_dict"]
        info["init_from_flow"] = all(torch.equal(v, teacher[f"net.{k}"])
                                     for k, v in model.net.state_dict().items())  # fmt: skip
        batch = _batch(cli)
        info["batch"] = batch
        info["before"] = _objective(model, batch)
        cls0, gen0 = _params(model.net), _params(model.generator)
        _fixed_fit(cli, batch, 2, 1, mp)  # epoch 0: MSE only, the classifier fixed
        info["epoch0"] = (_changed(cls0, model.net), _changed(gen0, model.generator))
        cls1, gen1 = _params(model.net), _params(model.generator)
        _fixed_fit(cli, batch, 2, 3, mp)  # epochs 1-2: CE + alpha * MSE, both train
        info["epoch1"] = (_changed(cls1, model.net), _changed(gen1, model.generator))
        info["after"] = _objective(model, batch)
        path = tmp_path_factory.mktemp("dmc") / "stage1.ckpt"
        cli.trainer.save_checkpoint(path)
        info["path"] = path
    finally:
        mp.undo()
        torch.set_num_threads(threads)
    return info


def test_stage1_schedule(stage1):
    model = stage1["cli"].model
    hp = model.hparams
    assert isinstance(model, DMCNet) and hp.stage == "reconstruction" and hp.in_channels == 2
    assert hp.alpha == 10 and hp.flow_block == 16 and hp.cls_lr_mult == 0.01
    assert hp.classifier_lr == "authors"  # the recipe states the reading it follows
    assert model.discriminator is None
    dm = stage1["cli"].datamodule
    assert dm.modalities == ("mv", "residual", "flow")
    assert dm.val_modalities == ("mv", "residual") and dm.hparams.accumulate is False
    assert stage1["init_from_flow"], "the classifier starts as the flow ResNet-18"
    assert stage1["epoch0"] == (False, True), "epoch 0: only the generator trains"
    assert stage1["epoch1"] == (True, True), "then generator and classifier"
    assert stage1["after"] < stage1["before"], (stage1["before"], stage1["after"])
    lrs = [o.param_groups[0]["lr"] for o in model.optimizers()]
    assert lrs == pytest.approx([1e-4, 1e-2])  # classifier x0.01, generator x1


def test_stage2_alternates_and_lowers_the_loss(root, stage1, monkeypatch, tmp_path):
    torch.manual_seed(0)
    cli = build(
        RECIPES / "dmc_net_gan.yaml",
        [*tiny(root), f"--model.init_args.init_checkpoint={stage1['path']}"],
    )
    model = cli.model
    hp = model.hparams
    assert hp.stage == "adversarial" and hp.flow_block == 0 and hp.adv_weight == 1
    assert hp.d_adv_weight == 0.01 and isinstance(model.discriminator, DMCDiscriminator)
    assert hp.alternation == "authors" and hp.classifier_lr == "authors"
    s1 = stage1["cli"].model
    assert all(torch.equal(v, s1.generator.state_dict()[k])
               for k, v in model.generator.state_dict().items())  # fmt: skip
    batch = stage1["batch"]
    before = _objective(model, batch)
    snaps = []

    class Spy:
        def __init__(self):
            self.prev = None

        def on_train_batch_end(self, *a):
            parts = (model.net, model.generator, model.discriminator)
            now = [_params(m) for m in parts]
            if self.prev is not None:
                snaps.append(tuple(_changed(p, m) for p, m in zip(self.prev, parts, strict=True)))
            self.prev = now

    spy = Spy()
    spy.prev = [_params(m) for m in (model.net, model.generator, model.discriminator)]
    monkeypatch.setattr(model, "on_train_batch_end", lambda *a: spy.on_train_batch_end())
    _fixed_fit(cli, batch, 6, 1, monkeypatch)
    # even batches: classifier + discriminator; odd batches: generator only.
    assert snaps[:4] == [(True, False, True), (False, True, False)] * 2
    assert len(model.optimizers()) == 3
    after = _objective(model, batch)
    assert after < before, (before, after)
    path = tmp_path / "stage2.ckpt"
    cli.trainer.save_checkpoint(path)
    # Evaluation rebuilds it without the discriminator and reads only MV + residual.
    r = evaluate(path, segments=2, crops=1, progress=False)
    assert r["modality"] == "mv+residual" and r["scores"].shape == (3, 3)
    assert np.isfinite(r["scores"]).all()
    net = network_from_checkpoint(load_checkpoint(path))
    assert isinstance(net, DMCNetwork)
    assert not any(k.startswith("discriminator") for k in net.state_dict())


def test_evaluate_stage1_checkpoint_matches_the_module(stage1):
    model = stage1["cli"].model.eval()
    r = evaluate(stage1["path"], segments=2, crops=1, progress=False)
    dm = stage1["cli"].datamodule
    ds = dm.dataset("test", modalities=("mv", "residual"), train=False, num_segments=2)
    mv, res, _ = ds[0]
    with torch.no_grad():
        want = model(mv[None], res[None])[0].numpy()
    np.testing.assert_allclose(r["scores"][0], want, rtol=1e-4, atol=1e-5)


# ---- ablations and errors ----


def test_smoothed_mv_option_feeds_the_generator_smoothed_mv():
    torch.manual_seed(4)
    m = DMCNet(num_classes=3, in_channels=2, smooth_block=16)
    mv, r = torch.randn(2, 2, 32, 48), torch.randn(2, 3, 32, 48)
    net = m.inference_network()
    torch.testing.assert_close(net.dmc(mv, r), m.generator(smooth_mv(mv, 16), r))
    assert not torch.allclose(net.dmc(mv, r), m.generator(mv, r))


def test_cam_attention_weights_the_mse(flow_teacher):
    torch.manual_seed(5)
    m = DMCNet(num_classes=3, in_channels=2, attention="cam", flow_checkpoint=str(flow_teacher),
               flow_block=0)  # fmt: skip
    assert not m.cam_net.training and not any(p.requires_grad for p in m.cam_net.parameters())
    m.train()
    assert not m.cam_net.training
    dmc, flow = torch.randn(4, 2, 32, 32), torch.randn(4, 2, 32, 32)
    y = torch.tensor([0, 1, 2, 1])
    with torch.no_grad():
        att = class_activation_map(m.cam_net, flow, y, 2.0)
    want = (att * (dmc - flow) ** 2).mean()
    torch.testing.assert_close(m.reconstruction_loss(dmc, flow, y), want)
    assert att.min() >= 0 and att.max() > 0
    plain = DMCNet(num_classes=3, in_channels=2, flow_block=0)
    torch.testing.assert_close(plain.reconstruction_loss(dmc, flow, y), F.mse_loss(dmc, flow))


def test_bad_settings_fail_clearly(tmp_path):
    with pytest.raises(ValueError, match="stage must be"):
        DMCNet(num_classes=3, in_channels=2, stage="gan")
    with pytest.raises(ValueError, match="new_length 1"):
        DMCNet(num_classes=3, in_channels=4)
    with pytest.raises(ValueError, match="flow_checkpoint"):
        DMCNet(num_classes=3, in_channels=2, attention="cam")
    with pytest.raises(FileNotFoundError, match="init_checkpoint"):
        DMCNet(num_classes=3, in_channels=2, init_checkpoint=str(tmp_path / "none.ckpt"))
    with pytest.raises(FileNotFoundError, match="teacher checkpoint not found"):
        DMCNet(num_classes=3, in_channels=2, flow_checkpoint=str(tmp_path / "none.ckpt"))
    m = DMCNet(num_classes=3, in_channels=2)
    x = torch.randn(1, 1, 2, 16, 16)
    with pytest.raises(ValueError, match=r"\(mv, residual, flow, y\)"):
        m.training_step((x, torch.randn(1, 1, 3, 16, 16), torch.tensor([0])), 0)


# ---- the demo part ----


def test_demo_part_rows(root, tmp_path):
    from mvaccel.demo import DemoConfig
    from mvaccel.demo_parts import DemoContext
    from mvaccel.demo_parts.dmcnet import DMCDemoConfig, run
    from mvaccel.train.evaluate import fuse, load_scores

    cfg = DemoConfig(size=48, batch_size=3, test_segments=2, bound=5.0)
    ctx = DemoContext(cfg=cfg, root=root, runs=tmp_path / "runs", scores=tmp_path / "scores")
    small = DMCDemoConfig(coviar_epochs=1, flow_epochs=1, stage1_epochs=2, stage2_epochs=1,
                          timing_videos=1)  # fmt: skip
    rows = run(ctx, small)
    names = [r.name for r in rows]
    assert names[:4] == ["CoViAR I-frame", "CoViAR MV (accumulated)",
                         "CoViAR residual (accumulated)", "DMC-Net (MV + R -> DMC)"]  # fmt: skip
    assert names[4].endswith("(2:1:1)") and names[5].endswith("(2:1:1:1)")
    for r in rows:
        assert 0 <= r.top1 <= 1 and 0 <= r.mean_class <= 1
        assert all(v > 0 and np.isfinite(v) for v in r.stage_fps.values()), r
        assert r.total_fps < min(r.stage_fps.values())
    assert rows[3].inputs == "mv + residual" and set(rows[3].stage_fps) == {
        "read", "generator", "classifier"}  # fmt: skip
    # The fusion rows are the weighted sums of the saved score files.
    files = {n: load_scores(ctx.scores / f"{n}.npz") for n in
             ("coviar_iframe", "coviar_mv", "coviar_residual", "dmc_net")}  # fmt: skip
    f = fuse(list(files.values()), [2, 1, 1, 1], softmax=False)
    assert rows[5].top1 == pytest.approx(float((f["scores"].argmax(1) == f["labels"]).mean()))


# ---- where the paper and the authors' code disagree ----


def _spy_fit(model, batch, n_batches=4):
    """Fit ``n_batches`` of ``batch``; which of (classifier, generator, discriminator) moved."""
    import lightning as L

    parts = (model.net, model.generator, model.discriminator)
    prev = [_params(m) for m in parts]
    moved = []

    def spy(*a):
        nonlocal prev
        moved.append(tuple(_changed(p, m) for p, m in zip(prev, parts, strict=True)))
        prev = [_params(m) for m in parts]

    model.on_train_batch_end = spy
    trainer = L.Trainer(max_epochs=1, limit_train_batches=n_batches, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu")  # fmt: skip
    trainer.fit(model, DataLoader([batch] * n_batches, batch_size=None))
    return moved


def _toy_batch(n=2, hw=32):
    g = torch.Generator().manual_seed(0)
    return (torch.randn(n, 1, 2, hw, hw, generator=g), torch.randn(n, 1, 3, hw, hw, generator=g),
            torch.randn(n, 1, 2, hw, hw, generator=g), torch.tensor([0, 1][:n]))  # fmt: skip


@pytest.mark.parametrize(
    ("alternation", "want"),
    [("authors", [(True, False, True), (False, True, False)]),  # D + classifier | G
     ("paper", [(False, False, True), (True, True, False)])],  # D alone | G + classifier
)  # fmt: skip
def test_stage2_alternation_readings(alternation, want):
    torch.manual_seed(0)
    m = DMCNet(num_classes=3, in_channels=2, stage="adversarial", flow_block=0,
               alternation=alternation, milestones=())  # fmt: skip
    assert _spy_fit(m, _toy_batch()) == want * 2
    with pytest.raises(ValueError, match="alternation must be one of"):
        DMCNet(num_classes=3, in_channels=2, alternation="both")


def test_classifier_lr_readings():
    authors = DMCNet(num_classes=3, in_channels=2, milestones=())
    groups = authors.configure_optimizers()[0].param_groups
    assert all(g["lr"] == pytest.approx(1e-4) for g in groups)  # the whole classifier x 0.01
    paper = DMCNet(num_classes=3, in_channels=2, milestones=(), classifier_lr="paper")
    groups = paper.configure_optimizers()[0].param_groups
    fc = {id(p) for p in paper.net.fc.parameters()}
    for g in groups:
        last = {id(p) for p in g["params"]} <= fc
        assert g["lr"] == pytest.approx(1e-2 if last else 1e-4), g["lr"]  # fc at the base lr
    assert sum(len(g["params"]) for g in groups if g["lr"] == pytest.approx(1e-2)) == 2
    with pytest.raises(ValueError, match="classifier_lr must be one of"):
        DMCNet(num_classes=3, in_channels=2, classifier_lr="half")
