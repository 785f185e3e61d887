"""Datasets decode only what a sample needs, and give exactly what the whole-video decode gives.

The reference is ``read_motion(threads=1)`` of the whole video (the old dataset path); the
streams cover closed GOPs with and without B-frames, CoViAR's MPEG-4, an odd frame size, and
the streams whose GOPs do not decode on their own (open GOPs, MPEG-4 with B-frames), which
the GOP reader reads starting a GOP early, except open GOPs in AVI (no timestamps place
them): the datasets read those sequentially up to the sample's last frame.
"""

from __future__ import annotations

import multiprocessing as mp
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader
from videogen import CASES, FFMPEG, encode, texture

import mvaccel.video as mvv
from mvaccel.data.datasets import PairedTransferDataset, VideoDataset
from mvaccel.data.lists import VideoItem
from mvaccel.flow import write_flow_jpgs
from mvaccel.ops import block_upsample

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.skipif(FFMPEG is None, reason="needs the ffmpeg CLI"),
]

_H264 = ["-c:v", "libx264", "-preset", "fast", "-refs", "1", "-g", "12", "-sc_threshold", "0",
         "-pix_fmt", "yuv420p", "-crf", "12", "-threads", "1"]  # fmt: skip
# name: (height, width, frames, dx, dy, ffmpeg args); GOPs of 12 frames (the first three of
# videogen's cases, its odd size, and two streams whose GOPs depend on each other)
VIDEOS = {name: CASES[name] for name in ("h264_p.mp4", "h264_b.mp4", "mpeg4.avi", "odd.mp4")}
VIDEOS["h264_open.mp4"] = (
    144,
    176,
    36,
    1.25,
    -0.5,
    [*_H264, "-bf", "2", "-x264-params", "open-gop=1:b-pyramid=none"],
)
_MPEG4_B = ["-c:v", "mpeg4", "-g", "12", "-bf", "2", "-q:v", "1", "-pix_fmt", "yuv420p",
            "-sc_threshold", "1000000000"]  # fmt: skip
VIDEOS["mpeg4_b.avi"] = (144, 176, 36, 1.5, -0.5, _MPEG4_B)  # open GOPs, no timestamps
VIDEOS["mpeg4_b.mp4"] = (144, 176, 36, 1.5, -0.5, _MPEG4_B)  # open GOPs, timestamps
VIDEOS["mpeg4_cgop.avi"] = (144, 176, 36, 1.5, -0.5, [*_MPEG4_B, "-flags", "+cgop"])
#: GOPs that depend on the one before: placed by timestamps, read by the GOP reader; and
#: without timestamps (AVI): closed GOPs read by GOP (the reader checks the frame count),
#: open GOPs refused by the reader (nothing places their frames), so read from the start
DEPENDENT_GOPS = ("h264_open.mp4", "mpeg4_b.mp4")
UNTIMED_GOPS = ("mpeg4_b.avi", "mpeg4_cgop.avi")
# unsorted, repeated, key frames (12, 24: they carry the field before them) and GOP ends
FRAMES = [13, 1, 12, 12, 23, 24, 25, 35, 11, 2]

CONFIGS = {
    "mv": (("mv",), False),
    "mv+residual": (("mv", "residual"), False),
    "accumulated": (("mv", "residual"), True),
    "iframe": (("iframe",), False),
    "rgb": (("rgb",), False),
    "mv+rgb+iframe": (("mv", "rgb", "iframe"), False),
}


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """``videos/Class/<name>`` and ``flow/Class/<stem>/`` (random flow JPEGs)."""
    base = tmp_path_factory.mktemp("sparse")
    rng = np.random.default_rng(0)
    frames = {}  # one texture per motion, encoded several ways
    for name, (h, w, t, dx, dy, args) in VIDEOS.items():
        d = base / "videos" / "Class"
        d.mkdir(parents=True, exist_ok=True)
        if (h, w, t, dx, dy) not in frames:
            frames[h, w, t, dx, dy] = texture(h, w, t, dx, dy)
        encode(frames[h, w, t, dx, dy], d / name, args)
        if name not in ("h264_b.mp4", "mpeg4.avi"):  # the ones the flow tests read
            continue
        flows = torch.from_numpy(rng.uniform(-15, 15, (t - 1, 2, h, w)).astype(np.float32))
        write_flow_jpgs(base / "flow" / "Class" / Path(name).stem, flows, bound=20.0)
    return base


def _dataset(root: Path, name: str, modalities, **kw) -> VideoDataset:
    return VideoDataset([VideoItem(f"Class/{name}", 1)], root / "videos", modalities, **kw)


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("name", list(VIDEOS))
def test_sample_frames_equal_the_whole_video_decode(root, name, config):
    modalities, accumulate = CONFIGS[config]
    path = root / "videos" / "Class" / name
    ref = mvv.read_motion(path, threads=1, residual="residual" in modalities, rgb="all",
                          accumulate=accumulate)  # fmt: skip
    frames = [f for f in FRAMES if f < len(ref)]
    video = _dataset(root, name, modalities, accumulate=accumulate).video(0)
    assert video.num_frames() == len(ref)
    for m in modalities:
        got = getattr(video, m)(frames)
        if m == "mv":
            want = block_upsample(ref.mv[frames], ref.block, ref.size, "nearest")
            assert want.abs().sum() > 0
        elif m == "residual":
            want = ref.residual[frames]
        elif m == "rgb":
            want = ref.rgb[frames]
        else:
            keys = ref.frame_index[ref.frame_type == 0].tolist()
            want = ref.rgb[[max(k for k in keys if k <= f) for f in frames]]
        assert got.dtype == want.dtype and got.shape == want.shape
        assert torch.equal(got, want), f"{name} {m}: {(got != want).sum()} values differ"
    types = video.frame_types(frames)
    assert torch.equal(types, ref.frame_type[frames])
    if "mv" in modalities:  # a key frame alone: its field comes from a read of the GOP before
        alone = _dataset(root, name, modalities, accumulate=accumulate).video(0).mv([12])
        assert torch.equal(alone, block_upsample(ref.mv[[12]], ref.block, ref.size, "nearest"))


class _Spy:
    """Records the GOP reads and whole-stream reads of the datasets."""

    def __init__(self, monkeypatch):
        self.gops: list[tuple[int, list[int], bool]] = []
        self.streams: list[list[int] | None] = []
        read_gop, read_motion = mvv.CompressedVideo.read_gop, mvv.read_motion

        def spy_gop(cv, gop, *, frames=None, **kw):
            self.gops.append((gop, list(frames), bool(kw.get("residual"))))
            return read_gop(cv, gop, frames=frames, **kw)

        def spy_stream(path, *, frames=None, **kw):
            self.streams.append(None if frames is None else list(frames))
            return read_motion(path, frames=frames, **kw)

        monkeypatch.setattr(mvv.CompressedVideo, "read_gop", spy_gop)
        monkeypatch.setattr(mvv, "read_motion", spy_stream)


def test_a_sample_decodes_only_its_gops_up_to_its_last_frame(root, monkeypatch):
    spy = _Spy(monkeypatch)
    video = _dataset(root, "h264_b.mp4", ("mv", "residual")).video(0)
    res = video.residual([14, 13, 14, 2])
    assert res.shape == (4, 3, 144, 176) and torch.equal(res[0], res[2])
    # GOP 0 up to its frame 2 and GOP 1 up to its frame 2, each read once with residuals
    assert sorted(spy.gops) == [(0, [2], True), (1, [1, 2], True)]
    assert spy.streams == []
    spy.gops.clear()
    key = video.mv([24])  # a key frame: the field of frame 23, read without residuals
    assert spy.gops == [(2, [0], True), (1, [11], False)]
    ref = mvv.read_motion(video.video_path(), frames=[23], threads=1)
    assert torch.equal(key, block_upsample(ref.mv, ref.block, ref.size)) and key.abs().sum() > 0
    # Only the sample's frames are kept, not the video's.
    assert len(video._rows["residual"]) == 4 and len(video._rows["mv"]) == 4


@pytest.mark.parametrize("name", DEPENDENT_GOPS + UNTIMED_GOPS)
def test_dependent_gops_are_read_by_gop_where_the_reader_places_them(root, name, monkeypatch):
    path = root / "videos" / "Class" / name
    assert mvv.probe(path).has_b_frames
    ref = mvv.read_motion(path, threads=1, rgb="all")
    spy = _Spy(monkeypatch)
    video = _dataset(root, name, ("mv", "rgb")).video(0)
    got = video.rgb([26, 25, 28])  # inside the third GOP only
    assert torch.equal(got, ref.rgb[[26, 25, 28]])
    video.mv([20, 5, 20])
    if name == "mpeg4_b.avi":  # refused on the first read, from the start from then on
        assert spy.gops == [(2, [3, 4, 6], False)] and spy.streams == [[25, 26, 28], [5, 20]]
        again = video.ds.video(0)  # the dataset's next sample of it: no GOP read tried
        assert torch.equal(again.rgb([7]), ref.rgb[[7]])
        assert len(spy.gops) == 1 and spy.streams[2:] == [[7]]
    elif name == "mpeg4_cgop.avi":  # closed GOPs: placed by counting, checked by the reader
        # GOP 2 for the RGB; GOPs 0 and 2 for the vectors (20 is a key frame), 1 for its field
        assert spy.streams == [] and [g for g, _, _ in spy.gops] == [2, 0, 2, 1]
    else:  # the timestamps show a key frame elsewhere than its packet: reads placed by them
        cv = mvv.CompressedVideo(path)
        assert cv.key_packets != [cv.gop_start(g) for g in range(cv.num_gops)]
        want = [(g, [f], False) for g, f in (cv.gop_of_frame(5), cv.gop_of_frame(20))]
        assert spy.streams == [] and spy.gops[1:3] == want
    assert torch.equal(video.mv([20, 5]), block_upsample(ref.mv[[20, 5]], ref.block, ref.size))


def test_an_open_gop_avi_read_inside_a_gop_raises(root):
    """The GOP reader places frames of a stream without timestamps by counting them; from an
    open GOP's key frame the decoder drops the leading B-frames and the count would shift
    (it did: frame 25's read gave another picture). The reader checks the count and raises."""
    path = root / "videos" / "Class" / "mpeg4_b.avi"
    cv = mvv.CompressedVideo(path)
    assert cv.key_packets == [cv.gop_start(g) for g in range(cv.num_gops)]  # no timestamps
    g, f = cv.gop_of_frame(25)
    assert g == 2
    with pytest.raises(mvv.VideoError, match="cannot be read on its own"):
        cv.read_gop(g, frames=[f], rgb="all")


def test_a_gop_refused_by_the_reader_falls_back_to_a_read_from_the_start(root, monkeypatch):
    """Where the reader refuses the GOP a key frame's field comes from, the key frame is read
    from the start of the file, and so is the rest of the video's frames from then on."""
    read_gop = mvv.CompressedVideo.read_gop

    def refuse_gop_0(cv, gop, **kw):
        if gop == 0:
            raise mvv.VideoError(f"{cv.path}: GOP 0 cannot be read on its own (test)")
        return read_gop(cv, gop, **kw)

    monkeypatch.setattr(mvv.CompressedVideo, "read_gop", refuse_gop_0)
    spy = _Spy(monkeypatch)
    video = _dataset(root, "h264_b.mp4", ("mv", "residual")).video(0)
    got = video.mv([12, 13])  # key frame 12 takes frame 11's field, in GOP 0
    assert spy.gops == [(1, [0, 1], True), (0, [11], False)] and spy.streams == [[12]]
    got = torch.cat([got, video.mv([30, 3])])
    assert spy.gops[2:] == [] and spy.streams[1:] == [[3, 30]]
    ref = mvv.read_motion(video.video_path(), threads=1)
    assert torch.equal(got, block_upsample(ref.mv[[12, 13, 30, 3]], ref.block, ref.size))
    assert got[0].abs().sum() > 0
    spy.gops.clear(), spy.streams.clear()
    other = _dataset(root, "h264_b.mp4", ("mv", "residual")).video(0)
    got = other.residual([30, 3])  # a sample's read refused: the sample from the start
    assert spy.gops == [(0, [3], True)] and spy.streams == [[3, 30]]
    ref = mvv.read_motion(video.video_path(), threads=1, residual=True)
    assert torch.equal(got, ref.residual[[30, 3]])


def test_without_the_native_reader_a_sample_decodes_from_the_start(root, monkeypatch):
    monkeypatch.setattr(mvv, "native_available", lambda: False)
    spy = _Spy(monkeypatch)
    video = _dataset(root, "h264_b.mp4", ("mv", "residual")).video(0)
    assert video.num_frames() == 36
    got = video.residual([20, 5])
    assert spy.gops == [] and spy.streams == [[5, 20]]
    ref = mvv.read_motion(video.video_path(), threads=1, residual=True)
    assert torch.equal(got, ref.residual[[20, 5]])


def test_gop_sampling_reads_each_gop_once_with_the_data(root, monkeypatch):
    """``sampling="gop"`` takes the frame types from the sample's own read: no separate
    vectors-only decode; the frame after a key frame is read in the same pass."""
    spy = _Spy(monkeypatch)
    kw = dict(sampling="gop", train=False, num_segments=11, size=40)
    ds = _dataset(root, "h264_b.mp4", ("mv", "residual"), **kw)
    video = ds.video(0)
    # 11 centred segments of 35 fields land on key frames 12 and 24: moved to 13 and 25
    assert ds.frames(video, None) == [[2], [5], [8], [13], [15], [18], [21], [25], [28],
                                      [31], [34]]  # fmt: skip
    assert spy.gops == [(0, [2, 5, 8], True), (1, [0, 1, 3, 6, 9], True),
                        (2, [0, 1, 4, 7, 10], True)]  # fmt: skip
    assert spy.streams == []
    got = ds[(0, 0)]
    whole = _dataset(root, "h264_b.mp4", ("mv", "residual"), cache=True, **kw)[(0, 0)]
    assert all(torch.equal(a, b) for a, b in zip(got[:-1], whole[:-1], strict=True))


SAMPLES = {
    "tsn": dict(modalities=("mv", "residual"), new_length=3, num_segments=3),
    "gop-accumulated": dict(
        modalities=("mv", "residual"), sampling="gop", accumulate=True, num_segments=5
    ),  # fmt: skip
    "clip-rgb": dict(modalities=("rgb",), sampling="clip", new_length=6, clip_stride=2),
    "iframe+mv": dict(modalities=("iframe", "mv"), num_segments=4),
    "test-ten-crop": dict(modalities=("mv", "rgb"), train=False, test_crops=10, new_length=2),
    # lands on key frames 12 and 24 (the frames after are read in the same pass)
    "gop-test": dict(modalities=("mv", "iframe"), sampling="gop", train=False, num_segments=11),
    "gop-train": dict(modalities=("mv", "residual"), sampling="gop", num_segments=8),
}


@pytest.mark.parametrize("sample", list(SAMPLES))
@pytest.mark.parametrize("name", ["h264_b.mp4", "odd.mp4", *DEPENDENT_GOPS, *UNTIMED_GOPS])
def test_samples_equal_the_cached_whole_video_path(root, name, sample):
    kw = dict(SAMPLES[sample])
    mods = kw.pop("modalities")
    fast = _dataset(root, name, mods, size=40, **kw)
    whole = _dataset(root, name, mods, size=40, cache=True, **kw)
    for key in [(0, 0), (0, 1), (0, 2)]:
        a, b = fast[key], whole[key]
        assert len(a) == len(b) == len(mods) + 1
        for x, y in zip(a[:-1], b[:-1], strict=True):
            assert torch.equal(x, y)


def test_paired_mv_and_flow_equal_the_cached_path(root):
    items = [VideoItem(f"Class/{n}", 0) for n in ("h264_b.mp4", "mpeg4.avi")]
    kw = dict(new_length=4, num_segments=2, size=48)
    fast = PairedTransferDataset(items, root / "videos", root / "flow", **kw)
    whole = PairedTransferDataset(items, root / "videos", root / "flow", cache=True, **kw)
    for key in [(0, 0), (1, 0), (1, 3)]:
        (mv_a, fl_a, _), (mv_b, fl_b, _) = fast[key], whole[key]
        assert torch.equal(mv_a, mv_b) and torch.equal(fl_a, fl_b)


def _read_in_child(video, frames, queue):
    queue.put(video.mv(frames).numpy())  # a tensor would share memory with the exiting child


def test_a_reader_opened_before_fork_is_reopened_in_the_child(root):
    video = _dataset(root, "h264_b.mp4", ("mv",)).video(0)
    first = video.mv([5])  # opens the GOP reader in this process
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_read_in_child, args=(video, [30, 5], queue))
    child.start()
    got = torch.from_numpy(queue.get(timeout=60))
    child.join(timeout=60)
    assert child.exitcode == 0
    assert torch.equal(got, video.mv([30, 5])) and torch.equal(got[1], first[0])


@pytest.mark.parametrize("cache", [False, True])
def test_forked_dataloader_workers_give_the_same_samples(root, cache):
    items = [VideoItem(f"Class/{n}", i) for i, n in enumerate(["h264_b.mp4", "mpeg4.avi"] * 2)]
    ds = VideoDataset(items, root / "videos", ("mv", "residual"), size=32, num_segments=2,
                      cache=cache)  # fmt: skip
    keys = [(i, 0) for i in range(len(items))]
    want = [ds[k] for k in keys]  # the parent reads (and with cache keeps) first
    loader = DataLoader(ds, sampler=keys, batch_size=None, num_workers=2,
                        multiprocessing_context="fork")  # fmt: skip
    for (mv, res, y), (mv_w, res_w, y_w) in zip(loader, want, strict=True):
        assert torch.equal(mv, mv_w) and torch.equal(res, res_w) and y == y_w


def test_pickled_dataset_leaves_its_cache_behind(root):
    ds = _dataset(root, "mpeg4.avi", ("mv", "residual"), size=32, cache=True)
    want = ds[(0, 0)]
    copy = pickle.loads(pickle.dumps(ds))
    assert copy._videos == {} and len(pickle.dumps(ds)) < 100_000
    got = copy[(0, 0)]
    assert all(torch.equal(a, b) for a, b in zip(got[:-1], want[:-1], strict=True))


def test_bad_videos_name_the_file(root, tmp_path):
    (tmp_path / "Class").mkdir()
    (tmp_path / "Class" / "junk.mp4").write_bytes(b"\x00\x01not a video" * 100)
    encode(texture(32, 48, 1, 0, 0), tmp_path / "Class" / "one.mp4", _H264)
    junk = VideoDataset([VideoItem("Class/junk.mp4", 0)], tmp_path, ("mv",))
    with pytest.raises(RuntimeError, match="junk.mp4"):
        junk[(0, 0)]
    one = VideoDataset([VideoItem("Class/one.mp4", 0)], tmp_path, ("mv",))
    with pytest.raises(ValueError, match="one.mp4: 1 frame"):
        one[(0, 0)]
    video = _dataset(root, "h264_b.mp4", ("mv",)).video(0)
    with pytest.raises(IndexError, match="frame 36 out of range"):
        video.mv([3, 36])


@pytest.mark.parametrize("mods", [("mv", "residual"), ("rgb", "iframe"), ("mv", "flow")])
def test_training_crop_equals_crop_of_the_full_float_stack(root, mods):
    """Cropping each segment before the float copy (and MVs per block) changes no value."""
    from mvaccel.data import transforms as tf

    flow = {"flow_root": root / "flow"} if "flow" in mods else {}
    ds = _dataset(root, "mpeg4.avi", mods, size=40, new_length=3, num_segments=3, **flow)
    for epoch in range(3):
        rng = np.random.default_rng([ds.seed, epoch, 0])
        raw = ds.raw(0, rng)
        params = ds.cropper.sample(*next(iter(raw.values())).shape[-2:], rng=rng)
        got = ds[(0, epoch)]
        for m, x in zip(mods, got[:-1], strict=True):
            kind = "motion" if m in ("mv", "flow") else "image"
            want = ds._normalize(m, tf.apply(raw[m].float(), params, ds.size, kind))
            assert torch.equal(x, want.contiguous())


def test_training_crops_of_the_output_size_without_flip_stay_per_segment(root):
    """Segments share one float buffer for their crops; a crop that needs neither a resize
    nor a flip must still come out as its own segment's frames."""
    from mvaccel.data import transforms as tf

    ds = _dataset(root, "h264_b.mp4", ("rgb", "residual"), size=144, scales=(1.0,), flip=False,
                  num_segments=3, new_length=2)  # fmt: skip
    rng = np.random.default_rng([ds.seed, 0, 0])
    raw = ds.raw(0, rng)
    params = ds.cropper.sample(144, 176, rng=rng)
    assert (params.height, params.width, params.flip) == (144, 144, False)
    rgb, res, _ = ds[(0, 0)]
    for m, got in (("rgb", rgb), ("residual", res)):
        want = ds._normalize(m, tf.apply(raw[m].float(), params, ds.size, "image"))
        assert torch.equal(got, want) and not torch.equal(got[0], got[2])
