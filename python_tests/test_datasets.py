"""Datasets over compressed video, flow JPEGs, RGB frames and teacher/student pairs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from trainkit import FLOW_BOUND, SPEC, tiny_dataset

from mvaccel import video
from mvaccel.data import transforms as tf
from mvaccel.data import ucf101_split
from mvaccel.data.datasets import (
    CompressedVideoDataset,
    EpochSampler,
    FlowDataset,
    PairedTransferDataset,
    RGBDataset,
    SyntheticMotionDataset,
    VideoDataset,
)
from mvaccel.flow import dequantize, write_flow_jpgs
from mvaccel.ops import block_upsample

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tiny_dataset(tmp_path_factory)


@pytest.fixture(scope="module")
def items(root):
    return ucf101_split(root / "lists", 1, "train")


def kw(root, **extra):
    base = dict(new_length=3, num_segments=2, size=40, bound=FLOW_BOUND, flow_bound=FLOW_BOUND)
    base.update(extra)
    return base


def test_lists_and_layout(root, items):
    assert len(items) == 6 and sorted({it.label for it in items}) == [0, 1, 2]
    assert (root / "videos" / items[0].path).is_file()
    n_fields = len(list((root / "flow" / items[0].path).with_suffix("").glob("flow_x_*.jpg")))
    assert n_fields == SPEC.frames - 1  # field t = tvl1(I_t, I_{t-1}), t = 1 .. T-1


def test_mv_stack_is_the_codec_field_interleaved(root, items):
    ds = CompressedVideoDataset(items, root / "videos", **kw(root, train=False))
    v = ds.video(0)
    segs = ds.frames(v, None)
    assert len(segs) == 2 and all(len(s) == 3 for s in segs)
    assert min(min(s) for s in segs) >= 1  # field 0 (the first I-frame) has no motion
    raw = ds.raw(0)["mv"]
    assert raw.shape == (2, 6, SPEC.height, SPEC.width)
    clip = video.read_motion(root / "videos" / items[0].path)
    want = block_upsample(clip.mv[segs[1]], clip.block, clip.size)  # (3, 2, H, W)
    torch.testing.assert_close(raw[1], want.reshape(6, SPEC.height, SPEC.width))
    # Interleaved x, y: channel 2 is the x of the second field.
    torch.testing.assert_close(raw[1, 2], want[1, 0])


def test_iframe_takes_previous_field(root, items):
    # 16 frames, GOP 12: frame 12 is an I-frame and carries frame 11's vectors (Zhang et al.).
    clip = video.read_motion(root / "videos" / items[0].path)
    assert int(clip.frame_type[12]) == 0
    ds = CompressedVideoDataset(items, root / "videos", **kw(root, new_length=1))
    torch.testing.assert_close(ds.video(0).mv([12]), ds.video(0).mv([11]))
    assert ds.video(0).mv([12]).abs().sum() > 0


def test_gop_sampling_avoids_iframes_with_accumulation(root, items):
    ds = CompressedVideoDataset(
        items,
        root / "videos",
        **kw(root, sampling="gop", accumulate=True, new_length=1, num_segments=15),  # fmt: skip
    )
    types = ds.video(0).frame_types()
    rng = np.random.default_rng(0)
    for _ in range(5):
        frames = [f for seg in ds.frames(ds.video(0), rng) for f in seg]
        assert all(int(types[f]) != 0 for f in frames)
    assert ds[0][0].shape == (15, 2, 40, 40)


def test_flow_dataset_dequantizes_jpegs(root, items):
    ds = FlowDataset(items, root / "flow", **kw(root, train=False, new_length=1, num_segments=1))
    (f,) = ds.frames(ds.video(0), None)[0]
    raw = ds.raw(0)["flow"][0]
    from PIL import Image

    d = (root / "flow" / items[0].path).with_suffix("")
    q = np.stack([np.asarray(Image.open(d / f"flow_{a}_{f:05d}.jpg")) for a in "xy"])
    torch.testing.assert_close(raw, dequantize(torch.from_numpy(q), FLOW_BOUND))
    # prepare's flow is backward (meta.json): reading it as dense_flow's forward flow would
    # flip its sign silently, so it is refused (negation itself: test_datasets_disk.py).
    neg = FlowDataset(items, root / "flow", **kw(root, train=False, new_length=1,
                                                 num_segments=1, flow_negate=True))  # fmt: skip
    with pytest.raises(ValueError, match="holds backward flow.*set flow_negate=False"):
        neg.raw(0)


def test_teacher_flow_and_student_mv_agree_in_direction(root, items):
    # MoveRight / MoveLeft: the P-frame vectors and tvl1(I_t, I_{t-1}) point the same way.
    ds = PairedTransferDataset(items, root / "videos", root / "flow",
                               **kw(root, train=False, new_length=10, num_segments=1))  # fmt: skip
    for i, it in enumerate(items[:4]):
        raw = ds.raw(i)
        mv, fl = raw["mv"][:, 0::2], raw["flow"][:, 0::2]  # x channels
        moving = fl.abs() > 0.3
        corr = torch.corrcoef(torch.stack([mv[moving], fl[moving]]))[0, 1]
        assert corr > 0.3, (it.path, corr)
        sign = 1 if "MoveRight" in it.path else -1
        # Content moves right: it sits to the left in the previous frame, x < 0 (src - dst).
        assert sign * float(mv[moving].mean()) < 0 and sign * float(fl[moving].mean()) < 0


@pytest.fixture(scope="module")
def mv_as_flow(root, items, tmp_path_factory):
    """A flow root whose JPEGs hold the quantised motion vectors themselves."""
    out = tmp_path_factory.mktemp("mvflow")
    for it in items:
        clip = video.read_motion(root / "videos" / it.path)
        write_flow_jpgs(out / it.path.rsplit(".", 1)[0], clip.dense()[1:], bound=FLOW_BOUND,
                        quality=100)  # fmt: skip
    return out


def test_paired_sample_has_the_same_crop_and_flip(root, items, mv_as_flow):
    # With the teacher's "flow" equal to the student's vectors, any crop or flip that differed
    # between the two would show; they agree to the JPEG quantisation.
    ds = PairedTransferDataset(items, root / "videos", mv_as_flow, **kw(root, size=32))
    step = 2 * FLOW_BOUND / 255 * 0.5 / FLOW_BOUND  # one uint8 step in normalised units
    flips = set()
    for epoch in range(6):
        mv, fl, y = ds[(epoch % len(items), epoch)]
        assert mv.shape == fl.shape == (2, 6, 32, 32) and y == items[epoch % len(items)].label
        err = (mv - fl).abs()
        assert float(err.mean()) < 2 * step and float(err.max()) < 10 * step, float(err.max())
        flips.add(bool(ds.cropper.sample(48, 64, np.random.default_rng([0, epoch, 0])).flip))
    assert flips == {True, False}


def test_flip_negates_x_in_a_sample(root, items, monkeypatch):
    ds = CompressedVideoDataset(items, root / "videos", **kw(root, scales=(1.0,)))
    box = tf.CropParams(0, 8, 48, 48, flip=False)
    monkeypatch.setattr(ds.cropper, "sample", lambda h, w, rng=None: box)
    plain = ds[(0, 0)][0]
    monkeypatch.setattr(
        ds.cropper, "sample", lambda h, w, rng=None: tf.CropParams(0, 8, 48, 48, flip=True)
    )
    flipped = ds[(0, 0)][0]
    centre = tf.normalize_motion(torch.zeros(()), FLOW_BOUND)
    torch.testing.assert_close(flipped[:, 0::2] - centre, -(plain[:, 0::2] - centre).flip(-1))
    torch.testing.assert_close(flipped[:, 1::2], plain[:, 1::2].flip(-1))


def test_keyed_samples_are_reproducible(root, items):
    ds = CompressedVideoDataset(items, root / "videos", **kw(root))
    a, b, c = ds[(1, 3)][0], ds[(1, 3)][0], ds[(1, 4)][0]
    torch.testing.assert_close(a, b)
    assert not torch.equal(a, c)
    s = EpochSampler(6, seed=1)
    s.set_epoch(2)
    first = list(s)
    s.set_epoch(3)
    assert list(EpochSampler(6, seed=1, epoch=2)) == first != list(s)
    assert sorted(i for i, _ in first) == list(range(6)) and {e for _, e in first} == {2}


def test_test_views_center_and_ten_crops(root, items):
    one = CompressedVideoDataset(items, root / "videos", **kw(root, train=False, num_segments=4))
    ten = CompressedVideoDataset(
        items, root / "videos", **kw(root, train=False, num_segments=4, test_crops=10)
    )
    x1, x10 = one[0][0], ten[0][0]
    assert x1.shape == (4, 6, 40, 40) and x10.shape == (40, 6, 40, 40)
    torch.testing.assert_close(x1, one[0][0])  # deterministic
    # Crops 5..9 are 0..4 mirrored, with x negated (about the normalised zero).
    v = x10.view(10, 4, 6, 40, 40)
    centre = tf.normalize_motion(torch.zeros(()), FLOW_BOUND)
    torch.testing.assert_close(v[5:, :, 1::2], v[:5, :, 1::2].flip(-1))
    torch.testing.assert_close(v[5:, :, 0::2] - centre, -(v[:5, :, 0::2] - centre).flip(-1))


def test_rgb_from_video_and_from_frame_folders(root, items, tmp_path):
    from PIL import Image

    clip = video.read_motion(root / "videos" / items[0].path, rgb="all")
    d = tmp_path / items[0].path.rsplit(".", 1)[0]
    d.mkdir(parents=True)
    for i, fr in enumerate(clip.rgb.permute(0, 2, 3, 1).numpy()):
        Image.fromarray(fr).save(d / f"img_{i + 1:05d}.jpg", quality=100)
    a = RGBDataset(items[:1], root / "videos", train=False, num_segments=3, size=40)
    b = RGBDataset(items[:1], root / "videos", frame_root=tmp_path, train=False,
                   num_segments=3, size=40)  # fmt: skip
    xa, xb = a[0][0], b[0][0]
    assert xa.shape == xb.shape == (3, 3, 40, 40)
    assert float((xa - xb).abs().mean()) < 0.05  # JPEG at quality 100
    assert a.frames(a.video(0), None)[0][0] >= 0


def test_residual_and_clip_layouts(root, items):
    ds = VideoDataset(items, root / "videos", ("mv", "residual"), **kw(root, train=False))
    mv, res, y = ds[0]
    assert mv.shape == (2, 6, 40, 40) and res.shape == (2, 9, 40, 40)
    clip = VideoDataset(items, root / "videos", ("mv",), **kw(root, sampling="clip",
                                                                new_length=8))  # fmt: skip
    x = clip[(0, 0)][0]
    assert x.shape == (1, 2, 8, 40, 40)
    fixed = VideoDataset(items, root / "videos", ("mv",),
                         **kw(root, sampling="fixed", new_length=1, num_segments=3))  # fmt: skip
    f = fixed.frames(fixed.video(0), np.random.default_rng(0))
    gaps = {f[i + 1][0] - f[i][0] for i in range(2)}
    assert len(gaps) == 1  # OFF: a fixed interval


def test_bad_inputs(root, items, tmp_path):
    with pytest.raises(ValueError, match="modalities"):
        VideoDataset(items, root / "videos", ("depth",))
    with pytest.raises(ValueError, match="flow_root"):
        VideoDataset(items, root / "videos", ("flow",))
    with pytest.raises(ValueError, match="sampling"):
        VideoDataset(items, root / "videos", sampling="dense")
    with pytest.raises(ValueError, match="test_crops"):
        VideoDataset(items, root / "videos", test_crops=5)
    ds = CompressedVideoDataset(items, tmp_path)
    with pytest.raises(FileNotFoundError, match="video not found"):
        ds[0]
    fl = FlowDataset(items, tmp_path)
    with pytest.raises(FileNotFoundError, match="no flow folder"):
        fl[0]
    with pytest.raises(IndexError):
        CompressedVideoDataset(items, root / "videos")[(99, 0)]


def test_synthetic_motion_dataset(tmp_path):
    from mvaccel.data.synthetic import SyntheticSpec

    spec = SyntheticSpec(classes=("ZoomIn", "Oscillate"), train_per_class=1, test_per_class=1,
                         frames=8, height=48, width=64)  # fmt: skip
    ds = SyntheticMotionDataset(tmp_path, "test", spec, new_length=2, num_segments=2, size=40,
                                train=False)  # fmt: skip
    assert ds.classes == ["ZoomIn", "Oscillate"] and len(ds) == 2
    x, y = ds[1]
    assert x.shape == (2, 4, 40, 40) and y == 1
