"""The papers' test protocols and data: multi-clip testing, list readers, multi-task training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from trainkit import SPEC, tiny_dataset

from mvaccel.train import ActionClassifier
from mvaccel.train.data import MultiClipDataset, VideoDataModule, cover_clip_starts
from mvaccel.train.evaluate import evaluate

RECIPES = Path(__file__).resolve().parents[1] / "mvaccel" / "recipes"
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tiny_dataset(tmp_path_factory)


def test_cover_clip_starts_span_the_whole_video():
    assert cover_clip_starts(100, 16, 0) == [0, 16, 32, 48, 64, 80, 84]  # MARS: back to back
    assert cover_clip_starts(100, 16, 3) == [0, 42, 84]  # first frame ... last frame
    assert cover_clip_starts(100, 16, 1) == [42]  # the centred clip
    assert cover_clip_starts(10, 16, 0) == [0] and cover_clip_starts(10, 16, 4) == [0] * 4
    with pytest.raises(ValueError, match="count"):
        cover_clip_starts(10, 4, -1)


def _clip_module(root, **kw):
    return VideoDataModule(root=str(root), modalities=["rgb"], sampling="clip", new_length=4,
                           clip_stride=2, size=32, num_workers=0, cache=True, **kw)  # fmt: skip


def test_multi_clip_test_samples_cover_the_video(root):
    dm = _clip_module(root, test_clips=0)
    ds = dm.dataset("test", train=False)
    assert isinstance(ds, MultiClipDataset)
    video = ds.video(0)
    frames = ds.frames(video, None)
    n = video.num_frames()  # 16 frames, clips span 7: starts 0, 7, 9
    assert n == SPEC.frames and [f[0] for f in frames] == [0, 7, 9]
    assert frames[-1][-1] == n - 1 and frames[0][0] == 0
    x, y = ds[0]
    assert x.shape == (3, 3, 4, 32, 32)  # (S clips, C, K, H, W)
    # Without test_clips: the one centred clip, as before.
    assert _clip_module(root).dataset("test", train=False).frames(video, None) == [[4, 6, 8, 10]]
    with pytest.raises(ValueError, match="sampling='clip'"):
        MultiClipDataset(ds.items, ds.root, ["rgb"], sampling="tsn")


def test_evaluate_averages_a_clip_model_over_its_clips(root, tmp_path):
    dm = _clip_module(root)
    torch.manual_seed(0)
    model = ActionClassifier("resnet3d", num_classes=3, in_channels=3,
                             backbone_kwargs={"depth": 10, "width": 0.125}).eval()  # fmt: skip
    path = tmp_path / "clip.ckpt"
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams),
                "datamodule_hyper_parameters": dict(dm.hparams),
                "mvaccel_module": "mvaccel.train.modules.ActionClassifier"}, path)  # fmt: skip
    r = evaluate(path, clips=3, progress=False)
    assert r["clips"] == 3
    ds = dm.dataset("test", train=False, test_clips=3)
    with torch.no_grad():
        want = torch.stack([model.net(ds[i][0]).mean(0) for i in range(len(ds))]).numpy()
        one = torch.stack([model.net(ds[i][0][1:2]).mean(0) for i in range(len(ds))]).numpy()
    np.testing.assert_allclose(r["scores"], want, rtol=1e-4, atol=1e-5)
    assert not np.allclose(want, one)  # the clips differ: averaging is not one clip's score


# ---- lists: Kinetics, THUMOS14 ----


def test_kinetics_list_reads_the_released_csv(tmp_path):
    from mvaccel.data.lists import kinetics_classes, kinetics_list

    csv = tmp_path / "train.csv"
    csv.write_text("label,youtube_id,time_start,time_end,split,is_cc\n"
                   "zumba,abc123,14,24,train,0\n"
                   "air drumming,--6bJUbfpnQ,17,27,train,0\n"
                   "zumba,x_y,0,10,train,1\n")  # fmt: skip
    assert kinetics_classes(csv) == ["air drumming", "zumba"]
    items = kinetics_list(csv, folder="train")
    assert [it.label for it in items] == [1, 0, 1]
    assert items[1].path == "train/air drumming/--6bJUbfpnQ_000017_000027.mp4"
    val = tmp_path / "validate.csv"
    val.write_text("label,youtube_id,time_start,time_end,split\nyoga,q,1,11,val\n")
    with pytest.raises(ValueError, match="'yoga' is not one of the classes"):
        kinetics_list(val, kinetics_classes(csv))
    bad = tmp_path / "bad.csv"
    bad.write_text("youtube_id,label\nq,yoga\n")
    with pytest.raises(ValueError, match="missing"):
        kinetics_list(bad)
    with pytest.raises(FileNotFoundError):
        kinetics_list(tmp_path / "none.csv")


def test_kinetics_data_module_reads_train_and_validate(tmp_path):
    (tmp_path / "train.csv").write_text("label,youtube_id,time_start,time_end,split\n"
                                        "b,v1,0,10,train\na,v2,5,15,train\n")  # fmt: skip
    (tmp_path / "validate.csv").write_text("label,youtube_id,time_start,time_end,split\n"
                                           "a,v3,0,10,val\n")  # fmt: skip
    dm = VideoDataModule(root=str(tmp_path), list_format="kinetics")
    assert dm.classes == ["a", "b"] and dm.num_classes == 2
    assert [(i.path, i.label) for i in dm.items("test")] == [("val/a/v3_000000_000010.mp4", 0)]
    assert dm.items("train")[0].path == "train/b/v1_000000_000010.mp4"


def test_thumos14_list_and_its_map(tmp_path):
    from mvaccel.data.lists import thumos14_list
    from mvaccel.train.evaluate import mean_average_precision

    classes = ["Archery", "Biking", "Diving"]
    path = tmp_path / "test.txt"
    path.write_text("video_test_0000004 Biking\nvideo_test_0000006 Archery 3\nvideo_test_0000007\n")
    items, targets = thumos14_list(path, classes)
    assert [it.label for it in items] == [1, 0, -1]
    assert targets.tolist() == [[False, True, False], [True, False, True], [False] * 3]
    scores = np.array([[0.1, 0.9, 0.0], [0.8, 0.1, 0.7], [0.3, 0.2, 0.9]])
    # Archery: ranked 1, 2, 0 -> AP 1; Biking: video 0 first -> 1; Diving: ranked 2, 1 -> 1/2.
    assert mean_average_precision(scores, targets) == pytest.approx((1 + 1 + 0.5) / 3)
    path.write_text("video_test_0000004 Skiing\n")
    with pytest.raises(ValueError, match="'Skiing'"):
        thumos14_list(path, classes)


# ---- Middlebury and TVNet's Table 1 ----


def _middlebury(tmp_path, n=2, size=(20, 24)):
    from PIL import Image
    from test_nn_tvnet import _pair

    from mvaccel.flow.io import write_flo

    gen = torch.Generator().manual_seed(0)
    i0, i1, u = _pair(n, *size, gen, dtype=torch.float32)
    for k, name in enumerate(["Grove2", "RubberWhale"][:n]):
        seq = tmp_path / name
        seq.mkdir()
        for f, img in (("frame10.png", i0[k]), ("frame11.png", i1[k])):
            arr = (img.squeeze().clamp(0, 1) * 255).round().to(torch.uint8).numpy()
            Image.fromarray(np.stack([arr] * 3, -1)).save(seq / f)
        flow = u[k].clone()
        flow[:, 0, 0] = 1.7e9  # one unknown vector, as Middlebury marks occlusions
        write_flo(seq / "flow10.flo", flow)
    (tmp_path / "Army").mkdir()  # a sequence without ground truth is left out
    return tmp_path


def test_middlebury_pairs(tmp_path):
    from mvaccel.data.middlebury import middlebury_pairs

    pairs = middlebury_pairs(_middlebury(tmp_path))
    assert [p.name for p in pairs] == ["Grove2", "RubberWhale"]
    p = pairs[0]
    assert p.i0.shape == (3, 20, 24) and p.i0.dtype == torch.uint8 and p.flow.shape == (2, 20, 24)
    assert not p.valid[0, 0] and p.valid.sum() == 20 * 24 - 1 and p.flow[:, 0, 0].eq(0).all()
    with pytest.raises(FileNotFoundError, match="flow10.flo"):
        middlebury_pairs(tmp_path / "Army")
    (tmp_path / "Grove2" / "frame11.png").unlink()
    with pytest.raises(FileNotFoundError, match="frame11.png"):
        middlebury_pairs(tmp_path)


def test_tvnet_table1_recipe_lowers_the_epe(tmp_path, capsys):
    from mvaccel.train.tvnet_table1 import main as table1

    (tmp_path / "mb").mkdir()
    root = _middlebury(tmp_path / "mb")
    recipe = RECIPES / "tvnet_table1.yaml"
    text = recipe.read_text()
    assert "lr: 0.05" in text and "steps: 3000" in text and "# Run: python -m" in text
    out = tmp_path / "tv.pt"
    # The recipe as is, cut to 15 steps on the two tiny pairs.
    assert table1([str(recipe), "--root", str(root), "--steps", "15", "--out", str(out)]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "average EPE" in ln]
    before, after = (float(ln.split("EPE ")[1].split()[0]) for ln in (lines[0], lines[-1]))
    assert lines[0].startswith("step 0:") and lines[-1].startswith("step 15:")
    assert after < before
    state = torch.load(out, weights_only=True)
    assert "u0" in state
    # A missing folder or recipe: one clear line, exit status 1.
    assert table1([str(recipe), "--root", str(tmp_path / "none")]) == 1
    assert table1([str(tmp_path / "none.yaml")]) == 1
    err = capsys.readouterr().err
    assert "Middlebury: no such folder" in err and "recipe not found" in err


def test_train_tvnet_epe_is_full_batch_sgd():
    from mvaccel.data.middlebury import FlowPair
    from mvaccel.nn import TVNet
    from mvaccel.train.tvnet import train_tvnet_epe

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    pairs = [FlowPair("a", torch.randint(0, 255, (3, 12, 14), generator=g, dtype=torch.uint8),
                      torch.randint(0, 255, (3, 12, 14), generator=g, dtype=torch.uint8),
                      torch.ones(2, 12, 14), torch.ones(12, 14, dtype=torch.bool)),
             FlowPair("b", torch.randint(0, 255, (3, 10, 9), generator=g, dtype=torch.uint8),
                      torch.randint(0, 255, (3, 10, 9), generator=g, dtype=torch.uint8),
                      -torch.ones(2, 10, 9), torch.ones(10, 9, dtype=torch.bool))]  # fmt: skip
    net = TVNet(iterations=3, trainable=("u0",))
    u0 = net.u0.detach().clone()
    # One step by hand: the mean of the two pairs' EPE, gradient times 0.05.
    net.zero_grad()
    loss = sum(torch.linalg.vector_norm(net(p.i0[None], p.i1[None]) - p.flow[None], dim=1).mean()
               for p in pairs) / 2  # fmt: skip
    loss.backward()
    want = u0 - 0.05 * net.u0.grad
    hist = train_tvnet_epe(net, pairs, steps=1, lr=0.05)
    assert hist[0] == (0, pytest.approx(float(loss)))
    torch.testing.assert_close(net.u0.detach(), want)
    with pytest.raises(ValueError, match="no trainable"):
        train_tvnet_epe(TVNet(iterations=2, trainable=()), pairs, steps=1)


# ---- multi-task training: HMDB51 with UCF101 (Zhang et al.) ----


@pytest.fixture(scope="module")
def aux_root(tmp_path_factory):
    """A second tiny dataset of 2 classes (the 'UCF101' of the multi-task training)."""
    from mvaccel.data.synthetic import SyntheticSpec, write_synthetic_dataset

    spec = SyntheticSpec(classes=("MoveUp", "MoveDown"), train_per_class=2, test_per_class=1,
                         frames=12, height=48, width=64, seed=3)  # fmt: skip
    return write_synthetic_dataset(tmp_path_factory.mktemp("aux"), spec)


def _multitask_data(root, aux_root, modalities=("mv",)):
    return VideoDataModule(root=str(root), modalities=list(modalities), new_length=2, size=48,
                           batch_size=3, num_workers=0, cache=True, val_segments=1,
                           bound=5.0, flow_bound=5.0, aux={"root": str(aux_root)})  # fmt: skip


def _fit_steps(model, dm, steps=3):
    import lightning as L

    trainer = L.Trainer(max_steps=steps, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        accelerator="cpu", limit_val_batches=0, num_sanity_val_steps=0)  # fmt: skip
    trainer.fit(model, datamodule=dm)
    return trainer


def _tiny_clarifai(**kw):
    torch.manual_seed(0)
    return dict(backbone="clarifai", num_classes=3, in_channels=4, lr=0.01,
                backbone_kwargs={"width": 0.0625, "dropout": [0.1, 0.1]}, **kw)  # fmt: skip


def test_multitask_batches_train_a_shared_trunk_and_two_heads(root, aux_root, tmp_path):
    dm = _multitask_data(root, aux_root)
    assert dm.aux_module.num_classes == 2 and dm.aux_module.modalities == ("mv",)
    dm.setup("fit")
    loaders = dm.train_dataloader()
    assert set(loaders) == {"main", "aux"}
    model = ActionClassifier(**_tiny_clarifai(aux_num_classes=2, aux_weight=0.5))
    assert model.aux_head.in_features == model.net.fc8.in_features  # reads what fc8 reads
    # The loss of a multi-task batch: main CE + 0.5 * the second head's CE on the aux videos.
    main, aux = next(iter(loaders["main"])), next(iter(loaders["aux"]))
    model.eval()
    with torch.no_grad():
        got = model._with_aux({"main": main, "aux": aux}, lambda b: model._step(b, "train"))
        feats = torch.nn.functional.dropout(model.net.fc7(model.net.fc6(
            model.net.pool(model.net.conv5(model.net.conv4(model.net.conv3(model.net.conv2(
                model.net.conv1(aux[0].flatten(0, 1))))))).flatten(1))), 0.0)  # fmt: skip
        aux_logits = model.aux_head(feats).view(len(aux[-1]), -1, 2).mean(1)
        want = torch.nn.functional.cross_entropy(model(main[0]), main[1])
        want = want + 0.5 * torch.nn.functional.cross_entropy(aux_logits, aux[-1])
    torch.testing.assert_close(got, want)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _fit_steps(model, dm)
    now = model.state_dict()
    for k in ("aux_head.weight", "net.fc8.weight", "net.conv1.0.weight"):
        assert not torch.equal(before[k], now[k]), k  # both heads and the shared trunk learn
    # Evaluation keeps the main head only.
    from mvaccel.train.evaluate import module_from_checkpoint

    ckpt = {"state_dict": now, "hyper_parameters": dict(model.hparams),
            "mvaccel_module": "mvaccel.train.modules.ActionClassifier"}  # fmt: skip
    rebuilt = module_from_checkpoint(ckpt)
    assert rebuilt.aux_head is None
    assert torch.equal(rebuilt.net.fc8.weight, now["net.fc8.weight"])


def test_multitask_transfer_student_and_clear_errors(root, aux_root):
    from mvaccel.train import MotionVectorTransfer, build_backbone

    dm = _multitask_data(root, aux_root, modalities=("mv", "flow"))
    assert dm.aux_module.modalities == ("mv",)  # the aux head reads motion vectors only
    kw = _tiny_clarifai(aux_num_classes=2)
    teacher = build_backbone("clarifai", 3, 4, **kw["backbone_kwargs"])
    model = MotionVectorTransfer(teacher=teacher, connect=("fc6",), **kw)
    head = model.aux_head.weight.detach().clone()
    _fit_steps(model, dm, steps=2)
    assert not torch.equal(head, model.aux_head.weight)
    # The model's second head must fit the aux lists; aux batches need a second head.
    wrong = ActionClassifier(**_tiny_clarifai(aux_num_classes=5))
    with pytest.raises(ValueError, match="aux_num_classes is 5, the aux lists"):
        _fit_steps(wrong, _multitask_data(root, aux_root), steps=1)
    plain = ActionClassifier(**_tiny_clarifai())
    with pytest.raises(ValueError, match="no second head"):
        plain.aux_loss((torch.randn(2, 1, 4, 48, 48), torch.tensor([0, 1])))
    with pytest.raises(ValueError, match="root"):
        VideoDataModule(root=str(root), aux={"split": 2})
