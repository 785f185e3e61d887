"""Sun et al.'s OFF networks: the three stages through their recipes, the losses, evaluation.

Tiny data (trainkit), a ClarifaiNet at 1/16 width on 48x48 crops instead of BN-Inception at 224
(the recipes' own backbone is checked to build at its real size), tiny OFF units.
"""

from __future__ import annotations

import copy
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, default_collate
from trainkit import tiny_dataset, tiny_overrides

from mvaccel.nn import FeatureTaps
from mvaccel.train import ActionClassifier, OFFNetwork
from mvaccel.train.cli import MvaccelCLI
from mvaccel.train.data import VideoDataModule
from mvaccel.train.evaluate import evaluate, load_checkpoint, module_from_checkpoint
from mvaccel.train.off import DEFAULT_TAPS

RECIPES_DIR = Path(__file__).resolve().parents[1] / "mvaccel" / "recipes"
RGB = ["off_stage1_tsn", "off_stage2", "off_stage3"]
RAW = ["off_rawoff_stage1", "off_rawoff_stage2", "off_rawoff_stage3"]
FLOW = ["off_flow_stage2", "off_flow_stage3"]  # stage 1: recipes/two_stream_flow.yaml (TSN)
BETA = 4  # test_segments of the tiny runs (16-frame videos: interval 4)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def plain_argv(monkeypatch):
    monkeypatch.setattr("sys.argv", ["mvaccel"])  # LightningCLI warns about pytest's arguments


def recipe(name: str) -> Path:
    return RECIPES_DIR / f"{name}.yaml"


def off_overrides(root: Path, raw: bool = False, init: Path | None = None) -> list[str]:
    """The recipes shrunk to the tiny data: a 1/16 ClarifaiNet and 8/16-channel OFF units."""
    args = [
        *tiny_overrides(root),
        f"--data.new_length={2 if raw else 1}",
        "--data.num_segments=3",
        f"--data.val_segments={BETA}",
        "--model.init_args.backbone=clarifai",
        "--model.init_args.backbone_kwargs={width: 0.0625, dropout: [0.1, 0.1], prelu: false}",
        "--model.init_args.taps=null",
        "--data.rgb_norm=imagenet",
        "--model.init_args.off_architecture=resnet20",  # the authors' needs BN-Inception's levels
        "--model.init_args.off_widths=[8, 16]",
        "--model.init_args.off_blocks=1",
        "--model.init_args.off_reduce=8",
        "--model.init_args.off_spatial_channels=4",
        "--model.init_args.off_dropout=0.1",
        f"--model.init_args.test_segments={BETA}",
        "--trainer.accumulate_grad_batches=1",
    ]
    if init is not None:
        args.append(f"--model.init_args.init_checkpoint={init}")
    return args


def build(name: str, args: list[str]) -> MvaccelCLI:
    return MvaccelCLI(
        ActionClassifier, VideoDataModule, subclass_mode_model=True, run=False,
        args=["--config", str(recipe(name)), *args], save_config_callback=None,
        auto_configure_optimizers=False,
    )  # fmt: skip


def fit_checkpoint(name, args, path: Path, steps: int = 2) -> Path:
    """Train ``steps`` steps on the data module (its settings go into the checkpoint)."""
    with mock.patch("sys.argv", ["mvaccel"]):  # module fixtures run outside plain_argv
        cli = build(name, [*args, f"--trainer.max_steps={steps}"])
    cli.trainer.fit(cli.model, cli.datamodule)
    cli.trainer.save_checkpoint(path)
    return path


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tiny_dataset(tmp_path_factory)


@pytest.fixture(scope="module")
def ckpts(root, tmp_path_factory):
    """Stage-1 and stage-2 checkpoints of both variants, each stage from the one before."""
    d = tmp_path_factory.mktemp("off_ckpts")
    out = {}
    for variant, names in (("rgb", RGB), ("raw", RAW)):
        raw = variant == "raw"
        s1 = fit_checkpoint(names[0], off_overrides(root, raw), d / f"{variant}1.ckpt")
        s2 = fit_checkpoint(names[1], off_overrides(root, raw, s1), d / f"{variant}2.ckpt")
        out[variant] = (s1, s2)
    return out


def _batch(cli, n=3):
    """A fixed training batch (keyed samples: the same frames and crops every time)."""
    dm = cli.datamodule
    dm.setup("fit")
    return default_collate([dm.train_set[(i, 0)] for i in range(n)])


def _loss(model, batch) -> float:
    model.eval()
    with torch.no_grad():
        return float(model.objective(batch)["loss"])


def test_recipes_hold_the_papers_settings():
    import yaml

    cfg = {n: yaml.safe_load(recipe(n).read_text()) for n in RGB + RAW}
    for n, c in cfg.items():
        m, d = c["model"]["init_args"], c["data"]
        assert c["model"]["class_path"] == "mvaccel.train.OFFNetwork"
        assert m["backbone"] == "bninception" and m["test_segments"] == 25
        assert c["trainer"]["gradient_clip_val"] == 40
        assert m.get("raw_off", False) == (n in RAW)
        assert d["new_length"] == (6 if n in RAW else 1)
        assert d["rgb_norm"] == "caffe_bgr"  # TSN's Caffe BN-Inception weights
        stage = m["stage"]
        assert n.endswith(str(stage)) or (stage == 1 and n.endswith("tsn"))
        if stage == 1:
            assert d["sampling"] == "tsn" and d["num_segments"] == 3
        else:  # alpha 7 in training, beta 25 at test; batch 32 x 4 = 128
            assert d["sampling"] == "fixed" and d["num_segments"] == 7
            assert d["val_segments"] == 25 and d["batch_size"] * 4 == 128
            assert c["trainer"]["accumulate_grad_batches"] == 4
            assert m["off_architecture"] == "authors" and "off_widths" not in m
            assert m["off_reduce"] == 128 and m["fusion_weights"] == [1.0, 1.0]
            assert m["off_mode"] == ("temporal" if n in RAW else "rgb")
    s2, s3 = cfg["off_stage2"]["model"]["init_args"], cfg["off_stage3"]["model"]["init_args"]
    assert s2["lr"] == 0.02 and s2["milestones"] == [10000, 15000, 18000]
    assert cfg["off_stage2"]["trainer"]["max_steps"] == 20000
    assert s3["lr"] == 0.0002 and "off_stage2" in s3["init_checkpoint"]
    assert "off_stage1" in s2["init_checkpoint"]


def test_off_flow_recipes_hold_the_papers_settings():
    import yaml

    f2, f3 = (yaml.safe_load(recipe(n).read_text()) for n in FLOW)
    for c in (f2, f3):
        m, d = c["model"]["init_args"], c["data"]
        assert m["off_architecture"] == "authors" and m["off_mode"] == "temporal"
        assert d["modalities"] == ["flow"] and d["new_length"] == 5
        assert d["sampling"] == "fixed" and d["num_segments"] == 7 and d["val_segments"] == 25
        assert m["off_dropout"] == 0.8 and m["test_segments"] == 25
    # section 5.1: flow lr 0.05 (stage 2) and 0.0005 (stage 3); stage 2 starts from TSN's flow net
    assert f2["model"]["init_args"]["lr"] == 0.05 and f3["model"]["init_args"]["lr"] == 0.0005
    assert "two_stream_flow" in f2["model"]["init_args"]["init_checkpoint"]
    assert "off_flow_stage2" in f3["model"]["init_args"]["init_checkpoint"]


def test_recipe_backbone_builds_at_the_papers_size():
    # BN-Inception at 224: the authors' three levels, 28 / 14 / 7, feed the OFF units, a 1x1
    # conv per inception block (3a, 3b | 3c, 4a-4d | 5a, 5b).
    model = OFFNetwork(stage=2, backbone="bninception", num_classes=5, in_channels=3,
                       off_mode="rgb", test_segments=25)  # fmt: skip
    taps = [[t.reduce.in_channels for t in u.layer.taps] for u in model.off.units]
    assert taps == [[256, 320], [576, 576, 576, 608, 608], [1024, 1024]]
    assert [u.width for u in model.off.units] == [256, 512, 1024]
    assert not any(p.requires_grad for p in model.net.parameters())
    flow = OFFNetwork(stage=2, backbone="bninception", num_classes=5, in_channels=10,
                      off_mode="temporal", test_segments=25)  # fmt: skip
    assert flow.off.units[1].transition.in_channels == 5 * 128 + 256
    old = OFFNetwork(stage=2, backbone="bninception", num_classes=5, in_channels=3,
                     off_architecture="resnet20", test_segments=25)  # fmt: skip
    assert [u.layer.reduce.in_channels for u in old.off.units] == [576, 2944, 2048]
    assert [u.width for u in old.off.units] == [128, 192, 256]


@pytest.mark.parametrize("name", RGB + RAW)
def test_stage_trains_through_its_recipe(name, root, ckpts, tmp_path):
    raw = name in RAW
    stage = (RGB if not raw else RAW).index(name) + 1
    init = None if stage == 1 else ckpts["raw" if raw else "rgb"][stage - 2]
    cli = build(name, [*off_overrides(root, raw, init), "--trainer.max_steps=6"])
    model = cli.model
    assert isinstance(model, OFFNetwork) and model.hparams.stage == stage
    assert model.hparams.in_channels == (6 if raw else 3) and model.hparams.num_classes == 3
    assert (model.off is None) == (stage == 1) and (model.raw is not None) == raw
    if stage == 2:  # initialised from the stage-1 backbone
        s1 = load_checkpoint(init)["state_dict"]
        assert all(torch.equal(v, s1[f"net.{k}"]) for k, v in model.net.state_dict().items())
    if stage == 3:  # initialised from everything of stage 2
        s2 = load_checkpoint(init)["state_dict"]
        assert all(torch.equal(v, s2[k]) for k, v in model.state_dict().items())
    net_before = copy.deepcopy(model.net.state_dict())
    batch = _batch(cli)
    assert batch[0].shape[:3] == (3, 3, 6 if raw else 3)
    before = _loss(model, batch)
    model.train()
    cli.trainer.fit(model, train_dataloaders=DataLoader([batch] * 6, batch_size=None))
    assert cli.trainer.global_step == 6
    after = _loss(model, batch)
    assert after < before, (name, before, after)
    same = [torch.equal(v, net_before[k]) for k, v in model.net.state_dict().items()]
    if stage == 2:  # the backbone is frozen
        assert all(same)
    else:  # stage 1 trains it, stage 3 fine-tunes it
        assert not all(same)


def test_off_flow_stage2_trains_through_its_recipe(root, tmp_path):
    # Stage 1 is TSN's flow network (an ActionClassifier); OFF(Flow) freezes it.
    tsn = ActionClassifier(backbone="clarifai", num_classes=3, in_channels=2,
                           backbone_kwargs={"width": 0.0625, "prelu": False})  # fmt: skip
    init = tmp_path / "tsn_flow.ckpt"
    torch.save({"state_dict": {f"net.{k}": v for k, v in tsn.net.state_dict().items()}}, init)
    cli = build("off_flow_stage2", [*off_overrides(root, init=init), "--trainer.max_steps=4"])
    model = cli.model
    assert model.hparams.in_channels == 2 and model.off.units[0].layer.mode == "temporal"
    assert all(torch.equal(v, tsn.net.state_dict()[k]) for k, v in model.net.state_dict().items())
    batch = _batch(cli)
    assert batch[0].shape[:3] == (3, 3, 2)  # 3 videos x 3 segments x one (x, y) flow field
    before = _loss(model, batch)
    model.train()
    cli.trainer.fit(model, train_dataloaders=DataLoader([batch] * 4, batch_size=None))
    assert _loss(model, batch) < before
    assert all(torch.equal(v, tsn.net.state_dict()[k]) for k, v in model.net.state_dict().items())


def test_stage2_freezes_backbone_batchnorm_and_dropout():
    # A BatchNorm backbone: stage 2 leaves its running statistics alone too.
    model = OFFNetwork(stage=2, backbone="resnet18", num_classes=3, in_channels=3,
                       backbone_kwargs={"dropout": 0.5}, off_architecture="resnet20",
                       off_widths=[8, 8, 8], off_blocks=1,
                       off_reduce=8, test_segments=3, lr=0.1)  # fmt: skip
    before = copy.deepcopy(model.net.state_dict())
    opt = model.configure_optimizers()
    model.train()
    assert not model.net.training and model.off.training
    x, y = torch.randn(2, 3, 3, 48, 48), torch.tensor([0, 2])
    for _ in range(2):
        opt.zero_grad()
        model.objective((x, y))["loss"].backward()
        opt.step()
    assert all(torch.equal(v, before[k]) for k, v in model.net.state_dict().items())
    assert {id(p) for g in opt.param_groups for p in g["params"]} == {
        id(p) for p in model.off.parameters()
    }


def _tiny(stage: int, **kw) -> OFFNetwork:
    args = dict(backbone="clarifai", num_classes=3, in_channels=3,
                backbone_kwargs={"width": 0.0625, "prelu": False}, off_architecture="resnet20",
                off_widths=[8, 16],
                off_blocks=1, off_reduce=8, off_spatial_channels=4, test_segments=BETA)  # fmt: skip
    args.update(kw)
    return OFFNetwork(stage=stage, **args)


def _ce(scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Eq. 9: -sum_c y_c (G_c - log sum_j exp G_j), averaged over the batch."""
    lse = scores.exp().sum(1).log()
    return (lse - scores.gather(1, y[:, None])[:, 0]).mean()


@pytest.mark.parametrize("stage", [2, 3])
@pytest.mark.parametrize("mode", ["off", "rgb", "temporal"])
def test_intermediate_supervision_is_the_sum_of_level_losses(stage, mode):
    torch.manual_seed(0)
    model = _tiny(stage, off_mode=mode, level_weights=[0.5, 2.0], backbone_weight=0.25,
                  fusion_weights=[0.3, 2.0]).eval()  # fmt: skip
    n, s = 2, BETA
    x, y = torch.randn(n, s, 3, 48, 48), torch.tensor([0, 2])
    with torch.no_grad():
        out = model.objective((x, y))
        # By hand: a separate FeatureTaps on a copy of the backbone, each unit and head in turn,
        # the average over the S - 1 pairs, eq. 9 per level.
        taps = FeatureTaps(copy.deepcopy(model.net), DEFAULT_TAPS["clarifai"])
        feats = [f.view(n, s, *f.shape[1:]) for f in taps(x.flatten(0, 1))]
        prev, levels = None, []
        for f, unit, head in zip(feats, model.off.units, model.off.heads, strict=True):
            prev = unit(f, prev)
            levels.append(head(prev).view(n, s - 1, -1).mean(1))
        backbone = model.net(x.flatten(0, 1)).view(n, s, -1).mean(1)
    expected = 0.5 * _ce(levels[0], y) + 2.0 * _ce(levels[1], y)
    if stage == 3:
        expected = expected + 0.25 * _ce(backbone, y)
    torch.testing.assert_close(out["loss"], expected)
    torch.testing.assert_close(out["levels"][0], levels[0])
    torch.testing.assert_close(out["fused"], 0.3 * backbone + 2.0 * levels[1])
    torch.testing.assert_close(model(x), out["fused"])


def test_stage1_loss_is_the_tsn_loss():
    model = _tiny(1).eval()
    x, y = torch.randn(2, 3, 3, 48, 48), torch.tensor([1, 2])
    with torch.no_grad():
        out = model.objective((x, y))
        expected = _ce(model.net(x.flatten(0, 1)).view(2, 3, -1).mean(1), y)
    torch.testing.assert_close(out["loss"], expected)
    assert out["levels"] == [] and model.off is None


def test_raw_off_feeds_the_backbone_the_frames_off():
    from mvaccel.ops.off import off_gradients_reference

    model = _tiny(2, in_channels=9, raw_off=True).eval()  # 3 frames per segment -> 2 pairs
    assert model.net.conv1[0].in_channels == 18
    x = torch.randn(2, 4, 9, 48, 48)
    seen = {}
    model.net.conv1.register_forward_pre_hook(lambda m, a: seen.setdefault("x", a[0]))
    with torch.no_grad():
        model(x)
    frames = x.flatten(0, 1).view(8, 3, 3, 48, 48)
    pairs = [off_gradients_reference(frames[:, k + 1], frames[:, k]) for k in range(2)]
    torch.testing.assert_close(seen["x"], torch.cat(pairs, 1))


def test_fixed_interval_of_beta_reaches_the_data(root, ckpts):
    cli = build("off_stage2", [*off_overrides(root, init=ckpts["rgb"][0]), "--trainer.max_steps=1"])
    cli.trainer.fit(cli.model, cli.datamodule)
    ds = cli.datamodule.train_set
    assert ds.sampling == "fixed" and ds.num_segments == 3 and ds.test_segments == BETA
    frames = ds.frames(ds.video(0), np.random.default_rng(0))
    starts = [seg[0] for seg in frames]
    n = ds.video(0).num_frames()
    assert np.all(np.diff(starts) == n // BETA)  # floor(L / beta), as at test time


@pytest.mark.parametrize("variant", ["rgb", "raw"])
def test_evaluate_runs_the_fused_network(variant, ckpts):
    s1, s2 = ckpts[variant]
    r = evaluate(s2, segments=BETA, progress=False)
    assert r["scores"].shape == (3, 3) and len(r["labels"]) == 3 and 0 <= r["top1"] <= 1
    model = module_from_checkpoint(load_checkpoint(s2))
    assert model.hparams.stage == 2 and model.hparams.init_checkpoint is None
    dm = VideoDataModule(**{k: v for k, v in load_checkpoint(s2)["datamodule_hyper_parameters"]
                            .items() if not k.startswith("_")})  # fmt: skip
    ds = dm.dataset("test", train=False, num_segments=BETA)
    x, y = ds[1]
    with torch.no_grad():
        h = model.heads(x[None])
    torch.testing.assert_close(torch.from_numpy(r["scores"][1]), h["fused"][0], atol=1e-5, rtol=0)
    torch.testing.assert_close(h["fused"], h["backbone"] + h["levels"][-1])
    ten = evaluate(s2, segments=BETA, crops=10, progress=False, limit=1)
    assert ten["scores"].shape == (1, 3)
    r1 = evaluate(s1, segments=BETA, progress=False)  # stage 1: the TSN backbone alone
    assert r1["scores"].shape == (3, 3)
    with pytest.raises(ValueError, match="test_segments=4"):
        evaluate(s2, segments=BETA - 1, progress=False, limit=1)


def test_clear_errors(root, ckpts, tmp_path):
    s1, s2 = ckpts["rgb"]
    # Stage 2 without its stage-1 checkpoint: when fitting starts.
    cli = build("off_stage2", [*off_overrides(root), "--model.init_args.init_checkpoint=null",
                               "--trainer.max_steps=1"])  # fmt: skip
    with pytest.raises(ValueError, match="stage 2 starts from a stage-1"):
        cli.trainer.fit(cli.model, cli.datamodule)
    # A stage-1 checkpoint cannot start stage 3 (no OFF sub-network in it).
    with pytest.raises(ValueError, match="stage-1 checkpoint"):
        build("off_stage3", off_overrides(root, init=s1))
    with pytest.raises((ValueError, FileNotFoundError), match="init_checkpoint not found"):
        build("off_stage2", off_overrides(root, init=tmp_path / "none.ckpt"))
    with pytest.raises(ValueError, match="does not fit"):  # another backbone's checkpoint
        _tiny(2, backbone="resnet18", backbone_kwargs={}, init_checkpoint=str(s1))
    with pytest.raises(ValueError, match="stage must be 1, 2 or 3"):
        _tiny(4)
    with pytest.raises(ValueError, match="new_length >= 2"):
        _tiny(2, raw_off=True)
    with pytest.raises(ValueError, match="no submodules"):
        _tiny(2, taps=[["conv2.1"], ["nope"]])
    with pytest.raises(ValueError, match=">= 2 segments"):
        _tiny(2)(torch.randn(1, 1, 3, 48, 48))


def test_demo_part_runs_on_tiny_data(root, tmp_path):
    from mvaccel.demo import DemoConfig
    from mvaccel.demo_parts import DemoContext, MethodResult
    from mvaccel.demo_parts import off as part

    cfg = DemoConfig(size=48, epochs=2, rgb_epochs=3, batch_size=3, width_mult=0.0625)
    ctx = DemoContext(cfg=cfg, root=root, runs=tmp_path / "runs", scores=tmp_path / "scores")
    rows = part.run(ctx)
    assert [r.name for r in rows] == [
        "TSN RGB (OFF stage 1)", "OFF(RGB), stage 2", "OFF(RGB), stage 3",
        "RGB + OFF(RGB) 1 : 1, stage 3",
    ]  # fmt: skip
    assert all(isinstance(r, MethodResult) and r.inputs == "rgb" for r in rows)
    assert all(0 <= r.top1 <= 1 and 0 <= r.mean_class <= 1 for r in rows)
    assert set(rows[0].stage_fps) == {"decode", "backbone"}
    assert all(set(r.stage_fps) == {"decode", "backbone", "off"} for r in rows[1:])
    assert all(v > 0 for r in rows for v in r.stage_fps.values())
    assert rows[1].total_fps < rows[0].total_fps  # OFF adds a stage
    assert all(r.train_s > 0 for r in rows[:3]) and rows[3].train_s == 0
    files = sorted(p.name for p in (tmp_path / "scores").iterdir())
    assert files == ["off_s1_backbone.npz", "off_s2_off.npz", "off_s3_fused.npz", "off_s3_off.npz"]
    from mvaccel.train.evaluate import accuracy, load_scores

    fused = load_scores(tmp_path / "scores" / "off_s3_fused.npz")
    assert fused["scores"].shape == (3, 3)
    assert accuracy(fused["scores"], fused["labels"]) == rows[3].top1
