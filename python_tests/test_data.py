"""Split lists, frame sampling, and transforms that keep images and motion consistent."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mvaccel.data import hmdb51_split, read_class_index, sampling, ucf101_split
from mvaccel.data import transforms as T


@pytest.fixture
def ucf_lists(tmp_path):
    (tmp_path / "classInd.txt").write_text("1 ApplyEyeMakeup\n2 Archery\n3 YoYo\n")
    (tmp_path / "trainlist01.txt").write_text(
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\nYoYo/v_YoYo_g09_c02.avi 3\n"
    )
    (tmp_path / "testlist01.txt").write_text("Archery/v_Archery_g01_c01.avi\n")
    return tmp_path


def test_ucf101_lists(ucf_lists):
    assert read_class_index(ucf_lists / "classInd.txt") == ["ApplyEyeMakeup", "Archery", "YoYo"]
    train = ucf101_split(ucf_lists, 1, "train")
    assert [(i.path, i.label) for i in train] == [
        ("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi", 0),
        ("YoYo/v_YoYo_g09_c02.avi", 2),
    ]
    assert train[1].stem == "v_YoYo_g09_c02"
    test = ucf101_split(ucf_lists, 1, "test")
    assert [(i.path, i.label) for i in test] == [("Archery/v_Archery_g01_c01.avi", 1)]


def test_ucf101_bad_lists(ucf_lists):
    with pytest.raises(FileNotFoundError, match="trainlist02"):
        ucf101_split(ucf_lists, 2)
    with pytest.raises(ValueError, match="subset"):
        ucf101_split(ucf_lists, 1, "val")
    (ucf_lists / "trainlist01.txt").write_text("Archery/v_Archery_g01_c01.avi 3\n")
    with pytest.raises(ValueError, match="disagrees"):
        ucf101_split(ucf_lists, 1)
    (ucf_lists / "trainlist01.txt").write_text("Bowling/v_Bowling_g01_c01.avi 1\n")
    with pytest.raises(ValueError, match="Bowling"):
        ucf101_split(ucf_lists, 1)


def test_hmdb51_lists(tmp_path):
    (tmp_path / "wave_test_split1.txt").write_text("a.avi 1\nb.avi 2\nc.avi 0\n")
    (tmp_path / "brush_hair_test_split1.txt").write_text("d.avi 2\ne.avi 1\n")
    train = hmdb51_split(tmp_path, 1, "train")
    test = hmdb51_split(tmp_path, 1, "test")
    assert [(i.path, i.label) for i in train] == [("brush_hair/e.avi", 0), ("wave/a.avi", 1)]
    assert [(i.path, i.label) for i in test] == [("brush_hair/d.avi", 0), ("wave/b.avi", 1)]
    (tmp_path / "wave_test_split1.txt").write_text("a.avi 7\n")
    with pytest.raises(ValueError, match="wave_test_split1"):
        hmdb51_split(tmp_path, 1)


def test_tsn_segments():
    rng = np.random.default_rng(0)
    # Test: the middle of each of 3 equal segments of 30 frames (span 30 - 5 + 1 = 26).
    assert sampling.tsn_segments(30, 3, length=5, train=False) == [4, 13, 21]
    for _ in range(50):
        idx = sampling.tsn_segments(100, 4, length=10, train=True, rng=rng)
        span = (100 - 10 + 1) // 4
        assert all(i * span <= s < (i + 1) * span for i, s in enumerate(idx))
    # Short video: still num_segments entries, snippets inside the video.
    idx = sampling.tsn_segments(6, 8, length=2, rng=rng)
    assert len(idx) == 8 and idx == sorted(idx) and max(idx) <= 4
    assert sampling.tsn_segments(3, 2, length=5) == [0, 0]
    with pytest.raises(ValueError, match="num_segments"):
        sampling.tsn_segments(10, 0)


def test_fixed_interval_keeps_test_interval_in_training():
    rng = np.random.default_rng(1)
    test = sampling.fixed_interval(100, 25, test_samples=25, train=False)
    assert test == list(range(0, 100, 4))
    for _ in range(20):
        tr = sampling.fixed_interval(100, 5, test_samples=25, train=True, rng=rng)
        assert np.all(np.diff(tr) == 4) and 0 <= tr[0] <= 100 - 17


def test_clip_sampling():
    rng = np.random.default_rng(2)
    assert sampling.clip(100, 16, stride=2, train=False) == list(range(34, 66, 2))
    c = sampling.clip(100, 16, train=True, rng=rng)
    assert np.all(np.diff(c) == 1)
    assert sampling.clip(5, 8) == [0, 1, 2, 3, 4, 0, 1, 2]  # loops


def test_flip_negates_motion_x_only():
    mv = torch.randn(3, 4, 6, 8)  # 2 stacked (x, y) fields, 3 samples
    out = T.hflip(mv, "motion")
    torch.testing.assert_close(out[:, 0::2], -mv[:, 0::2].flip(-1))
    torch.testing.assert_close(out[:, 1::2], mv[:, 1::2].flip(-1))
    img = torch.rand(3, 6, 8)
    torch.testing.assert_close(T.hflip(img, "image"), img.flip(-1))
    # Flipping a rightward field gives a leftward one, pixel for pixel.
    right = torch.zeros(2, 5, 5)
    right[0] = 1.0
    assert torch.all(T.hflip(right, "motion")[0] == -1.0)


def test_resize_scales_motion_values():
    mv = torch.zeros(4, 32, 48)
    mv[0::2] = 6.0
    mv[1::2] = -3.0
    out = T.resize(mv, (16, 96), "motion")
    assert torch.allclose(out[0::2], torch.full_like(out[0::2], 12.0))
    assert torch.allclose(out[1::2], torch.full_like(out[1::2], -1.5))
    img = torch.full((3, 32, 48), 7.0)
    assert torch.allclose(T.resize(img, (16, 96), "image"), torch.full((3, 16, 96), 7.0))
    u8 = torch.full((3, 32, 48), 200, dtype=torch.uint8)
    assert T.resize(u8, (10, 10), "image").dtype == torch.uint8


def test_multiscale_crop_same_box_for_teacher_and_student():
    rng = np.random.default_rng(3)
    h, w = 256, 340
    # The student's field is the teacher's with a known per-pixel tag, so any difference in
    # crop or flip between the two shows.
    yy, xx = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    teacher = torch.stack([xx, yy] * 3)  # 3 stacked fields
    student = teacher[:2].clone()
    rgb = torch.stack([xx, yy, xx + yy])
    crop = T.MultiScaleCrop(size=112, flip=True)
    flips = 0
    for _ in range(30):
        out = crop(
            {"flow": (teacher, "motion"), "mv": (student, "motion"), "rgb": (rgb, "image")},
            rng=rng,
        )
        assert out["flow"].shape == (6, 112, 112) and out["mv"].shape == (2, 112, 112)
        torch.testing.assert_close(out["flow"][:2], out["mv"])
        flips += bool(out["mv"][0, 0, 0] < 0)
    assert 5 < flips < 25  # both flipped and unflipped crops occur


def test_multiscale_crop_sizes_and_positions():
    crop = T.MultiScaleCrop(size=224, more_fix_crop=False, flip=False)
    rng = np.random.default_rng(4)
    seen = set()
    for _ in range(200):
        p = crop.sample(256, 340, rng)
        assert p.height in (256, 224, 192, 168) and p.width in (256, 224, 192, 168)
        assert p.top + p.height <= 256 and p.left + p.width <= 340
        seen.add((p.height, p.width))
    assert (256, 256) in seen and (168, 192) in seen and (256, 168) not in seen


def test_center_and_ten_crop():
    x = torch.arange(2 * 10 * 12, dtype=torch.float32).reshape(2, 10, 12)
    c = T.center_crop(x, 4, "motion")
    torch.testing.assert_close(c, x[:, 3:7, 4:8])
    ten = T.ten_crop(x, (4, 6), "motion")
    assert ten.shape == (10, 2, 4, 6)
    torch.testing.assert_close(ten[0], x[:, :4, :6])
    torch.testing.assert_close(ten[5], T.hflip(x[:, :4, :6], "motion"))
    with pytest.raises(ValueError, match="does not fit"):
        T.center_crop(x, 11)


def test_normalize_motion():
    v = torch.tensor([-50.0, -20.0, 0.0, 20.0, 50.0])
    u = T.normalize_motion(v)
    torch.testing.assert_close(u, torch.tensor([0.5 / 255 - 0.5, 0.5 / 255 - 0.5, 128 / 255 - 0.5,
                                                255.5 / 255 - 0.5, 255.5 / 255 - 0.5]))  # fmt: skip
    torch.testing.assert_close(T.normalize_motion(v, std=0.226), u / 0.226)


def test_normalize_residual_is_the_datasets_and_the_dmc_views():
    """One residual mapping: CoViAR/DMC-Net's ``(clip(r + 128) / 255 - 0.5) / std``, used by
    the datasets (in place on their float crops) and by ``viz.dmc_flow``."""
    from mvaccel.data.datasets import RESIDUAL_STD

    r = torch.tensor([-300, -128, -1, 0, 1, 127, 200], dtype=torch.int16)
    want = (torch.tensor([0, 0, 127, 128, 129, 255, 255.0]) / 255 - 0.5) / RESIDUAL_STD
    got = T.normalize_residual(r, RESIDUAL_STD)
    assert got.dtype == torch.float32 and r.dtype == torch.int16
    torch.testing.assert_close(got, want)
    x = r.float()
    assert T.normalize_residual(x, RESIDUAL_STD, inplace=True) is x and torch.equal(x, got)
    with pytest.raises(ValueError, match="float32"):
        T.normalize_residual(r, RESIDUAL_STD, inplace=True)


def test_inplace_normalisation_gives_the_same_values():
    """The datasets normalise their fresh float crops in place: bit for bit the same values."""
    g = torch.Generator().manual_seed(0)
    mv = torch.randn(2, 4, 9, 7, generator=g) * 30  # beyond the bound too
    for bound, std in [(20.0, 1.0), (15.0, 0.226)]:
        want = T.normalize_motion(mv, bound, std)
        x = mv.clone()
        assert T.normalize_motion(x, bound, std, inplace=True) is x
        assert torch.equal(x, want)
    rgb = torch.randint(0, 256, (2, 6, 5, 4), generator=g, dtype=torch.uint8)
    for conv in T.RGB_NORMS:
        want = T.normalize_rgb(rgb, conv)
        assert torch.equal(T.normalize_rgb(rgb.float(), conv, inplace=True), want), conv
    with pytest.raises(ValueError, match="float32"):
        T.normalize_motion(mv.double(), inplace=True)
    with pytest.raises(ValueError, match="float32"):
        T.normalize_rgb(rgb, inplace=True)
    # a motion flip writes its own copy: the input is left alone
    before = mv.clone()
    T.hflip(mv, "motion")
    assert torch.equal(mv, before)


def test_bad_kinds_and_shapes():
    with pytest.raises(ValueError, match="kind"):
        T.hflip(torch.zeros(2, 3, 3), "flow")
    with pytest.raises(ValueError, match="even"):
        T.hflip(torch.zeros(3, 4, 4), "motion")
    with pytest.raises(ValueError, match="share H and W"):
        T.MultiScaleCrop()(
            {"a": (torch.zeros(2, 8, 8), "motion"), "b": (torch.zeros(3, 9, 8), "image")}
        )
