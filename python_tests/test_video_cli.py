"""reencode and the `mvaccel mv` / `mvaccel prepare` commands (pictures: test_viz.py)."""

from __future__ import annotations

import numpy as np
import pytest
import videogen as vg

import mvaccel.video as mv
from mvaccel.cli import main

pytestmark = pytest.mark.skipif(vg.FFMPEG is None, reason="needs the ffmpeg CLI")


@pytest.fixture(scope="session")
def videos(tmp_path_factory):
    return vg.make_videos(tmp_path_factory.getbasetemp() / "videos")


def test_reencode_coviar_format(videos, tmp_path):
    out = mv.reencode(videos["h264_b.mp4"], tmp_path / "c.mp4", size=(96, 64))
    info = mv.probe(out)
    assert (info.codec, info.width, info.height) == ("mpeg4", 96, 64)
    assert info.gop_sizes == [12, 12, 12] and not info.has_b_frames
    assert info.frame_type_string == vg.ffprobe_frame_types(out)
    out = mv.reencode(videos["mpeg4.avi"], tmp_path / "h.mkv", codec="h264", size=None,
                      gop=18, bframes=2)  # fmt: skip
    info = mv.probe(out)
    assert (info.codec, info.width, info.height) == ("h264", 176, 144)
    assert info.has_b_frames and info.gop_sizes == [18, 18]
    assert not list(tmp_path.glob(".*tmp*"))


def test_reencode_errors_leave_nothing(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video")
    with pytest.raises(RuntimeError, match="ffmpeg failed"):
        mv.reencode(bad, tmp_path / "out.mp4")
    assert list(tmp_path.iterdir()) == [bad]
    with pytest.raises(FileNotFoundError):
        mv.reencode(tmp_path / "missing.avi", tmp_path / "out.mp4")
    with pytest.raises(ValueError, match="codec"):
        mv.reencode(bad, tmp_path / "out.mp4", codec="vp9")
    with pytest.raises(ValueError, match="size"):
        mv.reencode(bad, tmp_path / "out.mp4", size=(341, 256))


def test_cli_mv_writes_npz_and_png(videos, tmp_path, capsys):
    path = videos["h264_b.mp4"]
    npz, png = tmp_path / "clip.npz", tmp_path / "viz.png"
    assert main(["mv", str(path), "--out", str(npz), "--png", str(png), "--residual"]) == 0
    assert "36 frames (I=3 P=12 B=21)" in capsys.readouterr().out
    data = np.load(npz)
    clip = mv.read_motion(path, residual=True)
    assert np.array_equal(data["mv"], clip.mv.numpy())
    assert np.array_equal(data["residual"], clip.residual.numpy())
    assert np.array_equal(data["frame_type"], clip.frame_type.numpy())
    from PIL import Image

    w, h = Image.open(png).size  # frame + arrows | colours | key, at a readable size
    assert w > 4 * 176 and h > 2 * 144
    assert main(["mv", str(tmp_path / "missing.mp4")]) == 1
    assert "no such file" in capsys.readouterr().err


def test_cli_prepare_is_resumable_and_sharded(videos, tmp_path, capsys):
    src, out = tmp_path / "src", tmp_path / "out"
    (src / "a" / "b").mkdir(parents=True)
    (src / "c").mkdir()
    (src / "a" / "b" / "one.avi").write_bytes(videos["mpeg4.avi"].read_bytes())
    (src / "c" / "two.mp4").write_bytes(videos["h264_p.mp4"].read_bytes())
    (src / "c" / "notes.txt").write_text("skip me")
    args = ["prepare", str(src), str(out), "--reencode", "mpeg4", "--size", "96x64"]
    assert main([*args, "--shard", "1/2", "--workers", "1"]) == 0
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.mp4")) == ["c/two.mp4"]
    assert main([*args, "--workers", "2"]) == 0
    one = out / "a" / "b" / "one.mp4"
    assert one.is_file() and mv.probe(one).gop_sizes == [12, 12, 12]
    stamp = one.stat().st_mtime_ns
    capsys.readouterr()
    assert main(args) == 0
    assert "0 done, 2 already done" in capsys.readouterr().err
    assert one.stat().st_mtime_ns == stamp
    # A broken input fails alone and leaves no partial output.
    (src / "c" / "broken.mp4").write_bytes(b"\x00" * 1000)
    assert main(args) == 1
    assert not (out / "c" / "broken.mp4").exists()
    assert not list(out.rglob(".*tmp*"))
    assert main([*args, "--shard", "2/2"]) == 1
