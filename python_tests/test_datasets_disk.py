"""The datasets read what the CLIs write (#12.3, #12.4): ``mvaccel mv DIR --out`` motion files
(``mv_root``, exactly the decoded values), ``mvaccel flow``'s ``meta.json`` (direction, bound,
format checked, never a silent sign flip) and damaged JPEGs named in the error.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from videogen import FFMPEG, MPEG4, X264_B, encode, texture

from mvaccel.data.datasets import VideoDataset
from mvaccel.data.lists import VideoItem
from mvaccel.flow import dequantize, write_flow_jpgs
from mvaccel.flow.video import write_video_flow
from mvaccel.video.extract import extract_motion, motion_tree

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.skipif(FFMPEG is None, reason="needs the ffmpeg CLI"),
]

NAMES = ("b.mp4", "m.avi")  # H.264 with B-frames and GOPs of 12; MPEG-4 part 2


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """``videos/Class/{b.mp4, m.avi}`` and their ``mvaccel mv`` files under ``mv/``."""
    base = tmp_path_factory.mktemp("disk")
    frames = texture(64, 80, 26, 1.25, -0.5)
    (base / "videos" / "Class").mkdir(parents=True)
    encode(frames, base / "videos" / "Class" / "b.mp4", X264_B)
    encode(frames, base / "videos" / "Class" / "m.avi", MPEG4)
    report = motion_tree(base / "videos", base / "mv", quiet=True)
    assert not report.failed
    motion_tree(base / "videos", base / "mv16", quiet=True, block=16)
    return base


def _items():
    return [VideoItem(f"Class/{n}", i) for i, n in enumerate(NAMES)]


@pytest.mark.parametrize(
    "kw",
    [
        dict(modalities=("mv",), new_length=3, num_segments=3),
        dict(modalities=("mv",), sampling="gop", new_length=1, num_segments=4),
        dict(modalities=("mv", "residual"), new_length=2, num_segments=2, train=False),
        dict(modalities=("mv",), new_length=4, num_segments=2, train=False, test_crops=10),
    ],
)
def test_mv_root_equals_decoding(root, kw):
    kw = dict(kw, size=40)
    mods = kw.pop("modalities")
    decoded = VideoDataset(_items(), root / "videos", mods, **kw)
    files = VideoDataset(_items(), root / "videos", mods, mv_root=root / "mv", **kw)
    for key in [(0, 0), (0, 1), (1, 0), (1, 2)]:
        a, b = decoded[key], files[key]
        for x, y in zip(a, b, strict=True):
            assert torch.equal(torch.as_tensor(x), torch.as_tensor(y))
    raw_a = decoded.raw(1, np.random.default_rng(3))["mv"]
    raw_b = files.raw(1, np.random.default_rng(3))["mv"]
    assert raw_a.abs().sum() > 0 and torch.equal(raw_a, raw_b)


def test_mv_root_does_not_need_the_videos(root, tmp_path, monkeypatch):
    import mvaccel.video as mvv

    def no_decoding(*a, **k):
        raise AssertionError("decoded a video")

    monkeypatch.setattr(mvv, "read_motion", no_decoding)
    monkeypatch.setattr(mvv, "CompressedVideo", no_decoding)
    ds = VideoDataset(_items(), tmp_path, ("mv",), mv_root=root / "mv", size=32, new_length=2)
    x, label = ds[(1, 0)]
    assert x.shape == (3, 4, 32, 32) and label == 1


def test_mv_root_refuses_other_options_and_missing_files(root, tmp_path):
    ds = VideoDataset(_items(), root / "videos", ("mv",), mv_root=root / "mv16", size=32)
    with pytest.raises(ValueError, match=r"mv16/Class/b\.npz.*'block': 16"):
        ds[(0, 0)]
    ds = VideoDataset(_items(), root / "videos", ("mv",), mv_root=root / "mv", size=32,
                      accumulate=True)  # fmt: skip
    with pytest.raises(ValueError, match="accumulate"):
        ds[(0, 0)]
    ds = VideoDataset(_items(), root / "videos", ("mv",), mv_root=tmp_path, size=32)
    with pytest.raises(FileNotFoundError, match=r"Class/b\.mp4: no motion file .*b\.npz"):
        ds[(0, 0)]
    (tmp_path / "Class").mkdir()
    (tmp_path / "Class" / "b.npz").write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(ValueError, match=r"unreadable motion file .*b\.npz"):
        ds[(0, 0)]
    extract_motion(root / "videos" / "Class" / "b.mp4", tmp_path / "Class" / "b.npz", frames=[0, 1])
    with pytest.raises(ValueError, match=r"Class/b\.mp4: .*b\.npz holds only some frames"):
        ds[(0, 0)]


# ---- flow written by `mvaccel flow` ----


@pytest.fixture(scope="module")
def flows(root, tmp_path_factory) -> Path:
    """``backward/Class/b`` and ``forward/Class/b``: TV-L1 (fast preset) of 5 small frames."""
    base = tmp_path_factory.mktemp("flows")
    src = root / "small.mp4"
    encode(texture(32, 40, 5, 1.5, 0.5), src, X264_B)
    for direction in ("backward", "forward"):
        write_video_flow(src, base / direction / "Class" / "b", "fast",
                         backward=direction == "backward")  # fmt: skip
    return base


def _flow_ds(flows, direction, **kw):
    kw = dict(dict(new_length=4, num_segments=1, size=(32, 40), train=False), **kw)
    item = [VideoItem("Class/b.mp4", 0)]
    return VideoDataset(item, flows, ("flow",), flow_root=flows / direction, **kw)


def _stored(folder: Path) -> torch.Tensor:
    from PIL import Image

    q = [[np.asarray(Image.open(folder / f"flow_{a}_{t:05d}.jpg")) for a in "xy"]
         for t in range(1, 5)]  # fmt: skip
    return dequantize(torch.from_numpy(np.asarray(q)), 20.0)


@pytest.mark.parametrize("direction", ["backward", "forward"])
def test_flow_direction_is_checked_against_meta_json(flows, direction):
    meta = json.loads((flows / direction / "Class" / "b" / "meta.json").read_text())
    assert meta["direction"] == direction
    negate = direction == "forward"
    ok = _flow_ds(flows, direction, flow_negate=negate).raw(0)["flow"]
    want = _stored(flows / direction / "Class" / "b")
    assert want.abs().sum() > 0
    assert torch.equal(ok.reshape(4, 2, 32, 40), -want if negate else want)
    wrong = _flow_ds(flows, direction, flow_negate=not negate)
    with pytest.raises(ValueError, match=f"holds {direction} flow.*flow_negate={negate}"):
        wrong.raw(0)


def test_flow_bound_and_format_are_checked(flows, tmp_path):
    with pytest.raises(ValueError, match=r"bound 20\.0.*flow_bound=20\.0"):
        _flow_ds(flows, "backward", flow_bound=10.0).raw(0)
    d = tmp_path / "npy" / "Class" / "b"
    shutil.copytree(flows / "backward" / "Class" / "b", d)
    meta = json.loads((d / "meta.json").read_text())
    (d / "meta.json").write_text(json.dumps(dict(meta, format="npy")))
    with pytest.raises(ValueError, match="'npy' flow"):
        _flow_ds(tmp_path, "npy").raw(0)


def test_flow_without_meta_json_is_read_as_the_options_say(tmp_path):
    flow = torch.linspace(-15, 15, 4 * 2 * 8 * 8).reshape(4, 2, 8, 8)
    write_flow_jpgs(tmp_path / "f" / "Class" / "b", flow, bound=20.0)
    item = [VideoItem("Class/b.mp4", 0)]
    kw = dict(new_length=4, num_segments=1, size=8, train=False)
    for negate in (False, True):
        ds = VideoDataset(item, tmp_path, ("flow",), flow_root=tmp_path / "f", flow_negate=negate,
                          **kw)  # fmt: skip
        got = ds.raw(0)["flow"].reshape(4, 2, 8, 8)
        assert (got - (-flow if negate else flow)).abs().max() < 0.2


def test_truncated_flow_jpeg_names_its_path(tmp_path):
    d = tmp_path / "f" / "Class" / "b"
    write_flow_jpgs(d, torch.randn(3, 2, 16, 16) * 5, bound=20.0)
    p = d / "flow_y_00002.jpg"
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    ds = VideoDataset([VideoItem("Class/b.mp4", 0)], tmp_path, ("flow",), flow_root=tmp_path / "f",
                      new_length=3, num_segments=1, size=16, train=False)  # fmt: skip
    with pytest.raises(ValueError, match=r"unreadable image .*flow_y_00002\.jpg"):
        ds.raw(0)
