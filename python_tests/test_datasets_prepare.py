"""``mvaccel prepare ucf101|hmdb51 SRC OUT``: re-encoded videos, backward TV-L1 flow, lists."""

from __future__ import annotations

import pytest

from mvaccel import video
from mvaccel.cli import main
from mvaccel.data import hmdb51_split, ucf101_split
from mvaccel.data.synthetic import SyntheticSpec, write_synthetic_dataset
from mvaccel.train.data import VideoDataModule

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    spec = SyntheticSpec(classes=("MoveUp", "ZoomOut"), train_per_class=1, test_per_class=1,
                         frames=8, height=48, width=64)  # fmt: skip
    return write_synthetic_dataset(tmp_path_factory.mktemp("src"), spec)


def test_prepare_ucf101_reencodes_flows_and_lists(src, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["prepare", "ucf101", str(src), str(out), "--size", "64x48", "--workers", "1",
            "--flow-preset", "fast"]  # fmt: skip
    assert main(args) == 0
    items = ucf101_split(out / "lists", 1, "train")
    assert [it.path for it in items] == ["MoveUp/v_MoveUp_g01_c01.mp4",
                                         "ZoomOut/v_ZoomOut_g01_c01.mp4"]  # fmt: skip
    v = out / "videos" / items[0].path
    info = video.probe(v)
    assert info.codec == "mpeg4" and (info.width, info.height) == (64, 48)
    assert not info.has_b_frames
    flow = out / "flow" / "MoveUp" / "v_MoveUp_g01_c01"
    assert sorted(p.name for p in flow.glob("flow_x_*.jpg"))[-1] == "flow_x_00007.jpg"
    # Resumes: nothing re-encoded, no flow recomputed.
    stamp = v.stat().st_mtime_ns, (flow / "flow_x_00001.jpg").stat().st_mtime_ns
    capsys.readouterr()
    assert main(args) == 0
    text = capsys.readouterr().err
    assert "re-encode: shard 0/1: 0 done, 4 already done" in text
    assert "mvaccel flow: shard 0/1: 0 done, 4 already done" in text
    assert (v.stat().st_mtime_ns, (flow / "flow_x_00001.jpg").stat().st_mtime_ns) == stamp
    # The data module reads the folder as is.
    dm = VideoDataModule(str(out), modalities=["mv", "flow"], new_length=2, size=40,
                         num_workers=0)  # fmt: skip
    dm.setup("fit")
    mv, fl, y = dm.train_set[(0, 0)]
    assert mv.shape == fl.shape == (3, 4, 40, 40) and dm.num_classes == 2


def test_prepare_hmdb51_lists_and_no_reencode(src, tmp_path):
    lists = tmp_path / "splits"
    lists.mkdir()
    for cls in ("MoveUp", "ZoomOut"):
        for s in (1, 2, 3):
            (lists / f"{cls}_test_split{s}.txt").write_text(
                f"v_{cls}_g01_c01.avi 1 \nv_{cls}_g01_c02.avi 2 \n"
            )
    out = tmp_path / "out"
    args = ["prepare", "hmdb51", str(src), str(out), "--reencode", "none", "--lists",
            str(lists), "--flow-preset", "none"]  # fmt: skip
    assert main(args) == 0
    assert (out / "videos" / "MoveUp" / "v_MoveUp_g01_c01.avi").is_symlink()
    assert not (out / "flow").exists()
    for s in (1, 2, 3):
        got = ucf101_split(out / "lists", s, "test")
        assert got == hmdb51_split(lists, s, "test")


def test_prepare_errors(src, tmp_path):
    assert main(["prepare", "ucf101", str(tmp_path / "none"), str(tmp_path / "o")]) == 1
    assert main(["prepare", str(src), str(tmp_path / "o")]) == 1  # no --reencode
    assert main(["prepare", "a", "b", "c", "d"]) == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (
        main(
            [
                "prepare",
                "hmdb51",
                str(empty),
                str(tmp_path / "o"),
                "--reencode",
                "none",
                "--flow-preset",
                "none",
            ]
        )
        == 1
    )  # fmt: skip  (no split lists found)


def test_prepare_checks_flow_settings_before_reencoding(src, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["prepare", "ucf101", str(src), str(out), "--size", "64x48", "--workers", "1"]
    assert main([*args, "--flow-preset", "nope"]) == 1
    assert "unknown preset" in capsys.readouterr().err
    assert not (out / "videos").exists()
