"""Evaluation and fusion: known scores give known accuracies; ``mvaccel eval`` / ``fuse``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from trainkit import tiny_dataset, tiny_overrides

from mvaccel.cli import main
from mvaccel.train.cli import run
from mvaccel.train.evaluate import (
    accuracy,
    average_precision,
    confusion_matrix,
    evaluate,
    evaluate_splits,
    fuse,
    fusion_table,
    limit_subset,
    load_scores,
    mean_average_precision,
    mean_class_accuracy,
    mean_over_splits,
    module_from_checkpoint,
    network_from_checkpoint,
    save_scores,
    thumos14_map,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _result(scores, labels, videos=None):
    scores = np.asarray(scores, np.float32)
    n = len(labels)
    return {
        "scores": scores,
        "labels": np.asarray(labels),
        "videos": np.asarray(videos if videos is not None else [f"v{i}" for i in range(n)]),
        "classes": np.asarray([f"c{k}" for k in range(scores.shape[1])]),
    }


def test_accuracy_confusion_mean_class():
    scores = np.array([[3, 1, 0], [0, 2, 1], [0, 1, 2], [2, 0, 1], [1, 0, 3]], np.float32)
    labels = np.array([0, 1, 1, 0, 2])
    assert accuracy(scores, labels) == pytest.approx(4 / 5)
    cm = confusion_matrix(scores, labels, 3)
    assert cm.tolist() == [[2, 0, 0], [0, 1, 1], [0, 0, 1]]
    assert mean_class_accuracy(scores, labels) == pytest.approx((1 + 0.5 + 1) / 3)
    with pytest.raises(ValueError, match="disagree"):
        accuracy(scores, labels[:3])


def test_fusion_on_known_scores():
    # A is right on videos 0-2 with logit margin 3 and wrong on 3-4 with margin 1 (unsure);
    # B is right on 2-4 with margin 3 and wrong on 0-1 with margin 1.
    labels = [0, 1, 2, 0, 1]
    a, b = np.zeros((5, 3)), np.zeros((5, 3))
    for i, y in enumerate(labels):
        a[i, y if i <= 2 else (y + 1) % 3] = 3.0 if i <= 2 else 1.0
        b[i, y if i >= 2 else (y + 2) % 3] = 3.0 if i >= 2 else 1.0
    ra, rb = _result(a, labels), _result(b, labels)
    assert accuracy(ra["scores"], ra["labels"]) == pytest.approx(0.6)
    assert accuracy(rb["scores"], rb["labels"]) == pytest.approx(0.6)
    # softmax: margin 3 -> (p3, q3, q3), margin 1 -> (p1, q1, q1).
    p3, q3 = np.e**3 / (np.e**3 + 2), 1 / (np.e**3 + 2)
    p1, q1 = np.e / (np.e + 2), 1 / (np.e + 2)
    # 1 : 1: where one stream is sure and right it wins (p3 + q1 > q3 + p1): all 5 right.
    assert p3 + q1 > q3 + p1
    f11 = fuse([ra, rb], [1, 1])
    assert accuracy(f11["scores"], f11["labels"]) == pytest.approx(1.0)
    # 1 : 5: B outweighs A even where B is unsure (q3 + 5 p1 > p3 + 5 q1): B's 3 of 5.
    assert q3 + 5 * p1 > p3 + 5 * q1
    f15 = fuse([ra, rb], [1, 5])
    assert accuracy(f15["scores"], f15["labels"]) == pytest.approx(0.6)
    np.testing.assert_allclose(
        f15["scores"][0], (np.array([p3, q3, q3]) + 5 * np.array([q1, q1, p1])) / 6, rtol=1e-5
    )
    rows = fusion_table([ra, rb], ["a", "b"], [1, 5])
    assert [r[0] for r in rows] == ["a", "b", "fused"] and rows[-1][1] == "1 : 5"
    assert rows[-1][2] == pytest.approx(0.6) and rows[0][2] == pytest.approx(0.6)
    # Raw scores instead of probabilities: 1 : 1 sums logits, B's 3 beats A's 1 on 3-4.
    assert accuracy(fuse([ra, rb], softmax=False)["scores"], ra["labels"]) == pytest.approx(1.0)


def test_fusion_matches_videos_by_name_and_checks_them():
    labels = [0, 1, 2]
    s = np.eye(3, dtype=np.float32) * 2
    ra = _result(s, labels)
    perm = [2, 0, 1]
    rb = _result(s[perm], np.asarray(labels)[perm], [f"v{i}" for i in perm])
    f = fuse([ra, rb])
    assert accuracy(f["scores"], f["labels"]) == 1.0
    np.testing.assert_allclose(f["scores"], fuse([ra, ra])["scores"], rtol=1e-6)
    with pytest.raises(ValueError, match="different videos"):
        fuse([ra, _result(s, labels, ["x", "y", "z"])])
    with pytest.raises(ValueError, match="weights"):
        fuse([ra, ra], [1])
    bad = _result(s, [1, 1, 2])
    with pytest.raises(ValueError, match="labels"):
        fuse([ra, bad])


def test_score_files_and_fuse_cli(tmp_path, capsys):
    labels = [0, 1, 1, 2]
    a = _result(np.eye(3)[[0, 1, 2, 2]] * 2, labels)  # 3 of 4 right
    b = _result(np.eye(3)[[1, 1, 1, 2]] * 2, labels)  # 3 of 4 right
    pa, pb = save_scores(tmp_path / "rgb.npz", a), save_scores(tmp_path / "mv.npz", b)
    back = load_scores(pa)
    np.testing.assert_array_equal(back["scores"], a["scores"])
    assert list(back["videos"]) == list(a["videos"])
    assert main(["fuse", str(pa), str(pb), "--weights", "1", "2", "--out",
                 str(tmp_path / "f.npz")]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "| rgb | 1 | 75.0 |" in out and "| mv | 2 | 75.0 |" in out
    # Fused 1 : 2, equal margins: B decides where they differ (video 0 wrong, video 2 right).
    assert "| fused | 1 : 2 | 75.0 |" in out
    f = load_scores(tmp_path / "f.npz")
    assert accuracy(f["scores"], f["labels"]) == 0.75
    assert main(["fuse", str(tmp_path / "missing.npz")]) == 1
    (tmp_path / "junk.npz").write_bytes(b"no")
    assert main(["fuse", str(tmp_path / "junk.npz")]) == 1


@pytest.fixture(scope="module")
def trained(tmp_path_factory, request):
    root = tiny_dataset(tmp_path_factory)
    mp = pytest.MonkeyPatch()
    mp.setattr("sys.argv", ["mvaccel"])
    cli = run(["--config", "recipes/mv_cnn_scratch.yaml", *tiny_overrides(root),
               "--trainer.max_steps=4"])  # fmt: skip
    mp.undo()
    path = tmp_path_factory.mktemp("ckpt") / "mv.ckpt"
    cli.trainer.save_checkpoint(path)
    return path, cli


def test_evaluate_is_the_mean_of_the_network_over_segments(trained):
    path, cli = trained
    r = evaluate(path, segments=4, crops=1, progress=False)
    assert r["scores"].shape == (3, 3) and list(r["labels"]) == [0, 1, 2]
    assert r["modality"] == "mv" and r["frames_per_s"] > 0
    # By hand: the same test view through the trained network, averaged over the 4 segments.
    ds = cli.datamodule.dataset("test", train=False, num_segments=4, test_crops=1)
    net = network_from_checkpoint(torch.load(path, weights_only=False))
    with torch.no_grad():
        want = torch.stack([net(ds[i][0]).mean(0) for i in range(3)]).numpy()
    np.testing.assert_allclose(r["scores"], want, rtol=1e-4, atol=1e-5)
    assert r["top1"] == accuracy(want, r["labels"])
    ten = evaluate(path, segments=2, crops=10, progress=False, limit=2)
    assert ten["scores"].shape == (2, 3) and ten["crops"] == 10


def test_eval_cli_writes_scores(trained, tmp_path, capsys):
    path, _ = trained
    out = tmp_path / "s.npz"
    assert main(["eval", str(path), "--segments", "3", "--out", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "3 videos, mv, 3 segments x 1 crop(s): top-1" in text and "frames/s" in text
    s = load_scores(out)
    assert s["scores"].shape == (3, 3) and len(s["classes"]) == 3
    assert main(["eval", str(tmp_path / "none.ckpt")]) == 1


def test_checkpoint_names_its_module_class_and_bad_ones_are_refused(trained, tmp_path):
    path, _ = trained
    ckpt = torch.load(path, weights_only=False)
    assert ckpt["mvaccel_module"] == "mvaccel.train.modules.ActionClassifier"
    assert type(module_from_checkpoint(ckpt)).__name__ == "ActionClassifier"
    with pytest.raises(ValueError, match="unknown module class"):
        module_from_checkpoint({**ckpt, "mvaccel_module": "mvaccel.train.modules.Nope"})
    with pytest.raises(ValueError, match="not an mvaccel.train module"):
        module_from_checkpoint({**ckpt, "mvaccel_module": "torch.nn.Linear"})
    state = {k: v for k, v in ckpt["state_dict"].items() if not k.endswith("weight")}
    with pytest.raises(ValueError, match="does not fit ActionClassifier: missing"):
        module_from_checkpoint({**ckpt, "state_dict": state})


def test_limit_takes_a_seeded_stratified_subset_not_the_first_class():
    labels = [0] * 10 + [1] * 10 + [2] * 10  # a class-sorted list, as UCF101's
    chosen = limit_subset(labels, 10, seed=0)
    counts = np.bincount(np.asarray(labels)[chosen], minlength=3)
    assert len(chosen) == 10 and sorted(counts) == [3, 3, 4]  # every class, at most one apart
    assert chosen == sorted(chosen) and len(set(chosen)) == 10
    assert limit_subset(labels, 10, seed=0) == chosen  # seeded
    assert limit_subset(labels, 10, seed=1) != chosen
    assert limit_subset(labels, 99) == list(range(30))
    # A net at chance that always answers class 0 no longer scores 100 %.
    scores = np.tile([1.0, 0.0, 0.0], (30, 1))
    sub = np.asarray(chosen)
    assert accuracy(scores[sub], np.asarray(labels)[sub]) < 0.5
    with pytest.raises(ValueError, match="limit"):
        limit_subset(labels, 0)


def test_evaluate_limit_reads_every_class(trained):
    path, _ = trained
    # The training list holds 2 videos per class: its first two are one class.
    r = evaluate(path, subset="train", segments=1, progress=False, limit=2, limit_seed=3)
    assert len(r["labels"]) == 2 and len(set(r["labels"].tolist())) == 2
    assert len(set(r["videos"].tolist())) == 2


def test_average_precision_by_hand():
    # Ranked: pos, neg, pos, neg -> precisions at the positives 1/1 and 2/3.
    assert average_precision([0.9, 0.8, 0.7, 0.1], [1, 0, 1, 0]) == pytest.approx((1 + 2 / 3) / 2)
    assert average_precision([0.1, 0.9], [1, 1]) == 1.0
    assert np.isnan(average_precision([0.1, 0.9], [0, 0]))
    scores = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    # Class 0: videos 0, 2 positive, ranked 0, 2, 1: AP 1; class 1: video 1, ranked first: 1.
    assert mean_average_precision(scores, np.array([0, 1, 0])) == 1.0
    # Multi-label rows (untrimmed videos) and a background video (no class).
    t = np.array([[1, 1], [0, 0], [0, 1]])
    want = (average_precision(scores[:, 0], t[:, 0]) + average_precision(scores[:, 1], t[:, 1])) / 2
    assert mean_average_precision(scores, t) == pytest.approx(want)
    with pytest.raises(ValueError, match="targets"):
        mean_average_precision(scores, t[:2])


def test_mean_over_the_three_splits():
    rs = [_result(np.eye(2)[[0, 1]], [0, 1]), _result(np.eye(2)[[0, 0]], [0, 1]),
          _result(np.eye(2)[[1, 1]], [0, 1])]  # fmt: skip
    m = mean_over_splits(rs)
    assert m["top1"] == pytest.approx((1 + 0.5 + 0.5) / 3)
    assert [p[0] for p in m["per_split"]] == [1.0, 0.5, 0.5]
    with pytest.raises(ValueError):
        mean_over_splits([])


def test_evaluate_splits_averages_one_checkpoint_per_split(trained, tmp_path):
    import shutil

    path, cli = trained
    lists = tmp_path / "lists"
    shutil.copytree(cli.datamodule.list_dir, lists)
    # Split 2: the same training list, a test list of two videos.
    shutil.copy(lists / "trainlist01.txt", lists / "trainlist02.txt")
    test = (lists / "testlist01.txt").read_text().splitlines()
    (lists / "testlist02.txt").write_text("\n".join(test[:2]) + "\n")
    out = evaluate_splits([path, path], segments=1, progress=False, list_dir=str(lists))
    r1, r2 = out["results"]
    assert len(r1["labels"]) == 3 and len(r2["labels"]) == 2
    assert out["top1"] == pytest.approx((r1["top1"] + r2["top1"]) / 2)
    with pytest.raises(ValueError, match="1 to 3"):
        evaluate_splits([path] * 4)


def test_thumos14_map_matches_videos_by_name(tmp_path):
    r = _result(
        [[0.9, 0.5], [0.2, 0.8], [0.6, 0.4]],
        [0, 1, 0],
        videos=["test/video_test_3.mp4", "test/video_test_1.mp4", "test/video_test_2.mp4"],
    )
    r["classes"] = np.asarray(["Archery", "Biking"])
    lst = tmp_path / "test.txt"
    # List order differs from the score order; video 2 shows both classes.
    lst.write_text("video_test_1 Biking\nvideo_test_2 Archery Biking\nvideo_test_3 Archery\n")
    # Archery: positives 3 (0.9), 2 (0.6), ranked first and second: AP 1. Biking: 1 (0.8),
    # then negative 3 (0.5), then 2 (0.4): positives at ranks 1 and 3 -> (1 + 2/3) / 2.
    assert thumos14_map(r, lst) == pytest.approx((1 + (1 + 2 / 3) / 2) / 2)
    lst.write_text("video_test_1 Biking\n")
    with pytest.raises(ValueError, match="different videos"):
        thumos14_map(r, lst)


# ---- mvaccel eval: several checkpoints / --splits, --map, --clips ----


def _split_lists(cli, tmp_path):
    """A copy of the tiny lists with a split 2: the same training list, two test videos."""
    import shutil

    lists = tmp_path / "lists"
    shutil.copytree(cli.datamodule.list_dir, lists)
    shutil.copy(lists / "trainlist01.txt", lists / "trainlist02.txt")
    test = (lists / "testlist01.txt").read_text().splitlines()
    (lists / "testlist02.txt").write_text("\n".join(test[:2]) + "\n")
    return lists


def test_eval_cli_splits_prints_each_split_and_their_mean(trained, tmp_path, capsys):
    import json

    path, cli = trained
    lists = _split_lists(cli, tmp_path)
    out = tmp_path / "s.npz"
    args = ["eval", "--splits", str(path), str(path), "--segments", "1", "--list-dir", str(lists)]
    assert main([*args, "--out", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    r1, r2 = load_scores(tmp_path / "s_split1.npz"), load_scores(tmp_path / "s_split2.npz")
    assert len(r1["labels"]) == 3 and len(r2["labels"]) == 2  # each on its own split's videos
    assert f"split 1: {path}: 3 videos" in text and f"split 2: {path}: 2 videos" in text
    m = mean_over_splits([r1, r2])
    assert (f"mean over the 2 splits: top-1 {100 * m['top1']:.2f} %, mean class "
            f"{100 * m['mean_class']:.2f} %") in text  # fmt: skip
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["mean"]["top1"] == pytest.approx(m["top1"])
    assert [row["split"] for row in summary["inputs"]] == [1, 2]
    # Several inputs without --splits: the same settings for each; a saved score file is
    # scored as saved (here split 2's), and the mean is over them.
    assert main(["eval", str(path), str(tmp_path / "s_split2.npz"), "--segments", "1",
                 "--quiet"]) == 0  # fmt: skip
    text = capsys.readouterr().out
    assert "2 videos (saved scores)" in text and "mean over 2 checkpoints" in text
    assert main([*args, "--split", "2"]) == 1
    assert "leave out --split" in capsys.readouterr().err
    assert main(["eval", "--splits", *[str(path)] * 4]) == 1
    assert "1 to 3 checkpoints" in capsys.readouterr().err


def test_eval_cli_prints_thumos14_map(trained, tmp_path, capsys):
    path, _ = trained
    out = tmp_path / "s.npz"
    assert main(["eval", str(path), "--segments", "1", "--out", str(out), "--quiet"]) == 0
    r = load_scores(out)
    classes = [str(c) for c in r["classes"]]
    # A multi-label list of the same videos in reverse order: the first also shows class 2.
    lines, targets = [], np.zeros(r["scores"].shape, bool)
    for i, (v, y) in enumerate(zip(r["videos"], r["labels"], strict=True)):
        names = [classes[y]] + ([classes[2]] if i == 0 and y != 2 else [])
        targets[i, [classes.index(n) for n in names]] = True
        lines.append(f"{Path(str(v)).stem} {' '.join(names)}")
    lst = tmp_path / "thumos.txt"
    lst.write_text("\n".join(reversed(lines)) + "\n")
    want = mean_average_precision(r["scores"], targets)
    assert want != mean_average_precision(r["scores"], r["labels"])  # the extra label counts
    capsys.readouterr()
    assert main(["eval", str(out), "--map", str(lst)]) == 0  # the saved scores
    assert f"THUMOS14 mAP {100 * want:.2f} %" in capsys.readouterr().out
    assert main(["eval", str(path), "--segments", "1", "--map", str(lst), "--quiet"]) == 0
    assert f"THUMOS14 mAP {100 * want:.2f} %" in capsys.readouterr().out
    lst.write_text(lines[0] + "\n")
    assert main(["eval", str(out), "--map", str(lst)]) == 1
    assert "different videos" in capsys.readouterr().err
    assert main(["eval", str(out), "--map", str(tmp_path / "none.txt")]) == 1


@pytest.fixture(scope="module")
def clip_checkpoint(tmp_path_factory):
    from mvaccel.train import ActionClassifier
    from mvaccel.train.data import VideoDataModule

    root = tiny_dataset(tmp_path_factory)
    dm = VideoDataModule(root=str(root), modalities=["rgb"], sampling="clip", new_length=4,
                         clip_stride=2, size=32, num_workers=0, cache=True)  # fmt: skip
    torch.manual_seed(0)
    model = ActionClassifier("resnet3d", num_classes=3, in_channels=3,
                             backbone_kwargs={"depth": 10, "width": 0.125}).eval()  # fmt: skip
    path = tmp_path_factory.mktemp("clipckpt") / "clip.ckpt"
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams),
                "datamodule_hyper_parameters": dict(dm.hparams),
                "mvaccel_module": "mvaccel.train.modules.ActionClassifier"}, path)  # fmt: skip
    return path


def test_eval_cli_clips_for_clip_models_only(clip_checkpoint, trained, tmp_path, capsys):
    out = tmp_path / "c.npz"
    assert main(["eval", str(clip_checkpoint), "--clips", "3", "--out", str(out), "--quiet"]) == 0
    assert "3 videos, rgb, 3 clips x 1 crop(s): top-1" in capsys.readouterr().out
    got = load_scores(out)["scores"]
    np.testing.assert_allclose(got, evaluate(clip_checkpoint, clips=3, progress=False)["scores"],
                               rtol=1e-5, atol=1e-6)  # fmt: skip
    assert not np.allclose(got, evaluate(clip_checkpoint, progress=False)["scores"])  # 1 clip
    assert main(["eval", str(clip_checkpoint), "--clips", "0", "--quiet"]) == 0
    assert "every non-overlapping clip x 1 crop(s)" in capsys.readouterr().out
    path, _ = trained  # a 2D CNN over segments: refused, not silently one view
    assert main(["eval", str(path), "--clips", "2"]) == 1
    assert "is for clip models" in capsys.readouterr().err
    assert main(["eval", str(clip_checkpoint), "--clips", "-1"]) == 1
