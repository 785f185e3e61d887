"""The DTMV-CNN recipes (Zhang et al.) build through LightningCLI and their step lowers the loss.

The other methods' recipes are tested beside their modules (test_train_<method>.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, default_collate
from trainkit import tiny_dataset, tiny_overrides

from mvaccel.train import ActionClassifier, MotionVectorTransfer
from mvaccel.train.cli import MvaccelCLI
from mvaccel.train.data import VideoDataModule

NAMES = ["mv_cnn_scratch", "mv_cnn_st", "mv_cnn_st_ti", "mv_cnn_st_ti_dc", "mv_cnn_ti",
         "mv_cnn_ti_dc", "rgb_cnn", "teacher_flow"]  # fmt: skip
RECIPES = [Path(__file__).resolve().parents[1] / "mvaccel" / "recipes" / f"{n}.yaml" for n in NAMES]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def plain_argv(monkeypatch):
    monkeypatch.setattr("sys.argv", ["mvaccel"])  # LightningCLI warns about pytest's arguments


def build(recipe: Path, args: list[str]) -> MvaccelCLI:
    return MvaccelCLI(
        ActionClassifier, VideoDataModule, subclass_mode_model=True, run=False,
        args=["--config", str(recipe), *args], save_config_callback=None,
        auto_configure_optimizers=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tiny_dataset(tmp_path_factory)


@pytest.fixture(scope="module")
def teacher(root, tmp_path_factory):
    """A flow CNN trained for a few steps with the teacher recipe (the students' teacher)."""
    cli = build(
        RECIPES[NAMES.index("teacher_flow")], [*tiny_overrides(root), "--trainer.max_steps=4"]
    )
    cli.trainer.fit(cli.model, cli.datamodule)
    path = tmp_path_factory.mktemp("teacher") / "teacher.ckpt"
    cli.trainer.save_checkpoint(path)
    return path


def test_recipes_are_there():
    assert all(p.is_file() for p in RECIPES)


def _batch(cli, n=3):
    """A fixed training batch (keyed samples: the same crops every time)."""
    dm = cli.datamodule
    dm.setup("fit")
    return default_collate([dm.train_set[(i, 0)] for i in range(n)])


def _loss(model, batch) -> float:
    model.eval()
    with torch.no_grad():
        if isinstance(model, MotionVectorTransfer):
            return float(model.objective(batch)["loss"])
        x, y = batch
        return float(F.cross_entropy(model(x), y))


@pytest.mark.parametrize("name", NAMES)
def test_recipe_training_step_lowers_loss(name, root, teacher):
    recipe = RECIPES[NAMES.index(name)]
    needs_teacher = "teacher_checkpoint" in recipe.read_text()
    cli = build(recipe, [*tiny_overrides(root, teacher if needs_teacher else None),
                         "--trainer.max_steps=6"])  # fmt: skip
    model, hp = cli.model, cli.model.hparams
    mods = cli.datamodule.modalities
    # What the recipe says reaches the module (in_channels and num_classes are linked).
    assert hp.num_classes == 3 and hp.in_channels == (2 if mods[0] != "rgb" else 3) * 2
    assert hp.backbone == "clarifai" and hp.scheduler_interval == "step"
    if name.startswith("mv_cnn") and name != "mv_cnn_scratch":
        assert isinstance(model, MotionVectorTransfer) and mods == ("mv", "flow")
        assert hp.teacher_init == ("ti" in name.split("_"))
        assert (hp.temperature == 2.0) == ("st" in name.split("_"))
        assert bool(hp.connect) == name.endswith("dc")
        if hp.teacher_init:  # eq. 1: the student starts as the teacher
            t = model.teacher.state_dict()
            assert all(torch.equal(v, t[k]) for k, v in model.net.state_dict().items())
    else:
        assert type(model) is ActionClassifier
    batch = _batch(cli)
    before = _loss(model, batch)
    cli.trainer.fit(model, train_dataloaders=DataLoader([batch] * 6, batch_size=None))
    assert cli.trainer.global_step == 6
    after = _loss(model, batch)
    assert after < before, (name, before, after)


def test_transfer_recipe_without_teacher_fails_clearly(root, tmp_path):
    recipe = RECIPES[NAMES.index("mv_cnn_st_ti_dc")]
    missing = tmp_path / "none.ckpt"
    # jsonargparse wraps the module's FileNotFoundError in a ValueError with its message.
    with pytest.raises((ValueError, FileNotFoundError), match="teacher checkpoint not found"):
        build(recipe, [*tiny_overrides(root, missing)])


ZHANG = [*NAMES]
MPEG4 = ["coviar_iframe", "coviar_mv", "coviar_residual", "dmc_flow_resnet18", "dmc_net",
         "dmc_net_gan"]  # fmt: skip


@pytest.mark.parametrize("name", ZHANG + MPEG4)
def test_recipe_data_route_is_its_papers(name):
    """Zhang et al. read UCF101's original videos; CoViAR / DMC-Net the MPEG-4 re-encode."""
    import yaml

    text = (RECIPES[0].parent / f"{name}.yaml").read_text()
    root = yaml.safe_load(text)["data"]["root"]
    assert "# Data route" in text
    if name in ZHANG:
        assert root == "data/ucf101_original" and "--reencode none" in text
        assert "ORIGINAL UCF101" in text
    else:
        assert root == "data/ucf101" and "MPEG-4" in text
        assert "--reencode mpeg4" in text or "as recipes/dmc_net.yaml" in text


@pytest.mark.parametrize("name", ["mv_cnn_st", "mv_cnn_st_ti", "mv_cnn_st_ti_dc"])
def test_supervision_transfer_recipes_record_the_weighting(name, root):
    # Built without a teacher (strategies off): the recipe's st_weighting is a real argument.
    cli = build(RECIPES[NAMES.index(name)], [*tiny_overrides(root),
                                             "--model.init_args.teacher_checkpoint=null",
                                             "--model.init_args.teacher_init=false",
                                             "--model.init_args.temperature=0",
                                             "--model.init_args.connect=[]"])  # fmt: skip
    assert cli.model.hparams.st_weighting == "soft"  # the paper's text, as Hinton et al.


@pytest.mark.parametrize("name", ["teacher_flow_hmdb51", "mv_cnn_st_ti_dc_hmdb51"])
def test_hmdb51_multitask_recipes_train_two_heads(name, root, teacher):
    """HMDB51 with UCF101 (Zhang et al.): the recipe's data.aux and second head, real loaders."""
    aux = root  # the tiny set again as the second dataset (it has flow, the teacher reads it)
    recipe = RECIPES[0].parent / f"{name}.yaml"
    text = recipe.read_text()
    assert "--reencode mpeg4" in text and "data/ucf101_original" in text
    args = [*tiny_overrides(root, teacher if "teacher_checkpoint" in text else None),
            f"--data.aux={{root: {aux}}}", "--model.init_args.aux_num_classes=3",
            "--trainer.max_steps=2"]  # fmt: skip
    cli = build(recipe, args)
    assert cli.datamodule.aux_module.num_classes == 3
    head = cli.model.aux_head.weight.detach().clone()
    cli.trainer.fit(cli.model, cli.datamodule)
    assert cli.trainer.global_step == 2 and not torch.equal(head, cli.model.aux_head.weight)
