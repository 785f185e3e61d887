"""CompressedVideo (GOP random access, CoViAR's load) and GOP-parallel reading."""

from __future__ import annotations

import pickle

import pytest
import torch
import videogen as vg

import mvaccel.video as mv

pytestmark = pytest.mark.skipif(vg.FFMPEG is None, reason="needs the ffmpeg CLI")
NATIVE = pytest.param(
    "native",
    marks=pytest.mark.skipif(not mv.native_available(), reason="mvaccel._video not built"),
)
BACKENDS = [NATIVE, "pyav"]
needs_native = pytest.mark.skipif(not mv.native_available(), reason="mvaccel._video not built")


@pytest.fixture(scope="session")
def videos(tmp_path_factory):
    return vg.make_videos(tmp_path_factory.getbasetemp() / "videos")


FIELDS = ("mv", "mask", "frame_type", "pts", "frame_index", "gop_index", "residual", "rgb")


def _eq(a, b, fields=FIELDS):
    for f in fields:
        x, y = getattr(a, f), getattr(b, f)
        assert (x is None) == (y is None), f
        if x is not None:
            assert torch.equal(x, y), f


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["h264_p.mp4", "h264_b.mp4", "mpeg4.avi"])
def test_gops_equal_the_sequential_read(videos, name, backend):
    path = videos[name]
    vid = mv.CompressedVideo(path, backend=backend)
    assert vid.num_gops == 3 and [vid.gop_length(g) for g in range(3)] == [12, 12, 12]
    assert vid.num_frames == 36
    full = mv.read_motion(path, residual=True, rgb="all", backend="pyav")
    acc = mv.read_motion(path, residual=True, accumulate=True, backend="pyav")
    for g in (2, 0, 1):  # out of order: each load seeks
        s = vid.gop_start(g)
        clip = vid.read_gop(g, residual=True, rgb="all")
        part = slice(s, s + 12)
        # The GOP's first frame has no previous frame to fill from: zeros.
        assert clip.mv[0].abs().sum() == 0
        assert torch.equal(clip.mv[1:], full.mv[part][1:])
        for f in ("residual", "rgb", "frame_type", "frame_index", "gop_index", "pts"):
            assert torch.equal(getattr(clip, f), getattr(full, f)[part]), f
        ca = vid.read_gop(g, residual=True, accumulate=True)
        assert torch.equal(ca.mv, acc.mv[part]) and torch.equal(ca.residual, acc.residual[part])
    assert vid.gop_of_frame(25) == (2, 1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_load_has_coviar_semantics(videos, backend):
    path = videos["mpeg4.avi"]
    dx, dy = vg.CASES["mpeg4.avi"][3:5]
    vid = mv.CompressedVideo(path, backend=backend)
    h, w = vid.height, vid.width
    for k in (0, 1, 5, 11):
        m = vid.load(1, k, "mv")
        r = vid.load(1, k, "residual")
        assert m.shape == (2, h, w) and m.dtype == torch.float32
        assert r.shape == (3, h, w) and r.dtype == torch.int16
        inner = m[:, 16:-16, 16:-16].flatten(1).median(dim=1).values
        assert torch.equal(inner, torch.tensor([k * dx, k * dy])), (k, inner)
        if k == 0:
            assert m.abs().sum() == 0 and r.abs().sum() == 0
    own = vid.load(1, 5, "mv", accumulate=False)
    assert torch.equal(own[:, 16:-16, 16:-16].flatten(1).median(dim=1).values,
                       torch.tensor([dx, dy]))  # fmt: skip
    frame = vid.load(2, 3, "iframe")
    ref = mv.read_motion(path, frames=[27], rgb="all", backend=backend).rgb[0]
    assert frame.dtype == torch.uint8 and torch.equal(frame, ref)
    assert torch.equal(vid.iframe(2), mv.read_motion(path, frames=[24], rgb="all").rgb[0])
    with pytest.raises(IndexError):
        vid.load(3, 0)
    with pytest.raises(IndexError):
        vid.load(0, 12)
    with pytest.raises(ValueError, match="representation"):
        vid.load(0, 1, "flow")


@needs_native
def test_pickle_and_dataloader_workers(videos):
    path = videos["h264_p.mp4"]
    vid = mv.CompressedVideo(path)
    copy = pickle.loads(pickle.dumps(vid))
    assert copy.num_gops == vid.num_gops
    assert torch.equal(copy.load(1, 4, "mv"), vid.load(1, 4, "mv"))

    class DS(torch.utils.data.Dataset):
        def __len__(self):
            return 6

        def __getitem__(self, i):
            return vid.load(i % 3, 1 + i, "residual")

    dl = torch.utils.data.DataLoader(DS(), batch_size=None, num_workers=2)
    got = list(dl)
    for i, r in enumerate(got):
        assert torch.equal(r, vid.load(i % 3, 1 + i, "residual"))


@needs_native
@pytest.mark.parametrize("name", ["h264_p.mp4", "h264_b.mp4", "mpeg4.avi"])
def test_gop_parallel_equals_one_thread(videos, name):
    from mvaccel import _video

    path = str(videos[name])
    for kw in ({}, {"residual": True, "rgb": 2}, {"accumulate": True, "residual": True},
               {"frames": [30, 2, 13], "rgb": 1, "residual": True}):  # fmt: skip
        one = _video.read(path, threads=1, **kw)
        two = _video.read(path, threads=3, **kw)
        assert two["parallel"], kw
        for k in ("mv", "mask", "frame_type", "pts", "gop_index", "frame_index", "rgb",
                  "rgb_index"):  # fmt: skip
            assert (one[k] == two[k]).all(), (kw, k)
        if kw.get("residual"):
            assert (one["residual"] == two["residual"]).all()


@needs_native
def test_gop_parallel_falls_back_when_gops_are_not_independent(shared_data):
    from mvaccel import _video

    path = str(shared_data / "videos" / "v_ApplyEyeMakeup_g01_c01.avi")  # one key frame
    one, two = _video.read(path), _video.read(path, threads=2)
    assert not two["parallel"]
    assert (one["mv"] == two["mv"]).all()
    path = str(shared_data / "videos" / "h264_bframes_340x256.mp4")  # two GOPs
    one, two = _video.read(path, residual=True), _video.read(path, residual=True, threads=2)
    assert two["parallel"]
    assert (one["mv"] == two["mv"]).all() and (one["residual"] == two["residual"]).all()
