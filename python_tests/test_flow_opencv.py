"""TV-L1 against OpenCV's DualTVL1 (opencv-contrib) on the FlyingChairs pairs in ../shared/data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mvaccel.flow import TVL1Params, epe, read_flo, tvl1, write_flo
from mvaccel.flow.reference import resize_linear, warp3

cv2 = pytest.importorskip("cv2")
if not hasattr(cv2, "optflow"):
    pytest.skip("needs opencv-contrib-python-headless (cv2.optflow)", allow_module_level=True)


def cv_tvl1(p: TVL1Params):
    # OpenCV's CPU solver can express everything but the CUDA warp and stopping schedule.
    return cv2.optflow.DualTVL1OpticalFlow_create(
        tau=p.tau, lambda_=p.lambda_, theta=p.theta, nscales=p.nscales, warps=p.warps,
        epsilon=p.epsilon, innnerIterations=p.inner_iterations,
        outerIterations=p.outer_iterations, scaleStep=p.scale_step, gamma=0.0,
        medianFiltering=p.median, useInitialFlow=False,
    )  # fmt: skip


def load_pair(root, i: int, shrink: int = 1):
    d = root / "flyingchairs"
    a = cv2.imread(str(d / f"000000{i}-img0.png"), cv2.IMREAD_GRAYSCALE)
    b = cv2.imread(str(d / f"000000{i}-img1.png"), cv2.IMREAD_GRAYSCALE)
    gt = read_flo(d / f"000000{i}-gt.flo")
    if shrink > 1:  # fewer pixels keep the suite fast; the flow shrinks with the image
        size = (512 // shrink, 384 // shrink)
        a = cv2.resize(a, size, interpolation=cv2.INTER_AREA)
        b = cv2.resize(b, size, interpolation=cv2.INTER_AREA)
        g = cv2.resize(gt.permute(1, 2, 0).numpy(), size, interpolation=cv2.INTER_AREA)
        gt = torch.from_numpy(g).permute(2, 0, 1) / shrink
    return a, b, gt


@pytest.fixture(scope="module", autouse=True)
def threads():
    n = torch.get_num_threads()
    cv2.setNumThreads(n)
    yield


# Image sizes are cut (shrink) to keep the suite fast; the fast preset's 0.5 pyramid step
# needs 256x192 (at 128x96 its coarsest level is 24x32 and the warps' borders dominate).
# bench/RESULTS.md has the same comparison at full size for every preset.
@pytest.mark.parametrize(
    ("preset", "shrink"), [("opencv", 4), ("opencv_cuda", 4), ("fast", 2), ("tvnet", 4)]
)
def test_epe_within_2_percent_of_opencv(shared_data, preset, shrink):
    p = TVL1Params.preset(preset)
    ours, theirs, still = [], [], []
    for i in range(3):
        a, b, gt = load_pair(shared_data, i, shrink)
        f_cv = torch.from_numpy(cv_tvl1(p).calc(a, b, None)).permute(2, 0, 1)
        f = tvl1(torch.from_numpy(a)[None, None], torch.from_numpy(b)[None, None], p)[0]
        theirs.append(epe(f_cv, gt))
        ours.append(epe(f, gt))
        still.append(epe(torch.zeros_like(gt), gt))
    ours_m, theirs_m = float(np.mean(ours)), float(np.mean(theirs))
    assert abs(ours_m - theirs_m) <= 0.02 * theirs_m, (preset, ours, theirs)
    # and the flow is a real estimate, better than no motion
    assert ours_m < float(np.mean(still))


def test_same_flow_as_opencv(shared_data):
    # with OpenCV's own parameters the fields agree pixel by pixel almost everywhere
    a, b, gt = load_pair(shared_data, 1, shrink=2)
    p = TVL1Params.preset("opencv")
    f_cv = torch.from_numpy(cv_tvl1(p).calc(a, b, None)).permute(2, 0, 1)
    f = tvl1(torch.from_numpy(a)[None, None], torch.from_numpy(b)[None, None], p)[0]
    d = (f - f_cv).norm(dim=0)
    assert d.median() < 0.01, d.median()
    assert abs(epe(f, gt) - epe(f_cv, gt)) < 0.02 * epe(f_cv, gt)


def test_warp_and_resize_match_opencv():
    rng = np.random.default_rng(0)
    img = cv2.GaussianBlur((rng.random((40, 53)) * 255).astype(np.float32), (5, 5), 1.5)
    u = (rng.random((40, 53)) * 8 - 4).astype(np.float32)
    v = (rng.random((40, 53)) * 8 - 4).astype(np.float32)
    gy, gx = np.mgrid[0:40, 0:53].astype(np.float32)
    t = torch.from_numpy
    want = cv2.remap(img, gx + u, gy + v, cv2.INTER_CUBIC)
    got = warp3(t(img)[None, None], t(u)[None], t(v)[None], "cubic_opencv")[0, 0].numpy()
    np.testing.assert_allclose(got, want, atol=1e-3)
    want = cv2.resize(img, None, fx=0.8, fy=0.8, interpolation=cv2.INTER_LINEAR)
    got = resize_linear(t(img)[None], want.shape, (1 / 0.8, 1 / 0.8))[0].numpy()
    np.testing.assert_allclose(got, want, atol=1e-3)
    want = cv2.resize(img, (71, 33), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(resize_linear(t(img)[None], (33, 71))[0].numpy(), want, atol=1e-3)


def test_read_flo_reads_flyingchairs_and_round_trips(shared_data, tmp_path):
    gt = read_flo(shared_data / "flyingchairs" / "0000000-gt.flo")
    assert gt.shape == (2, 384, 512) and gt.dtype == torch.float32
    assert 1 < gt.norm(dim=0).mean() < 50
    write_flo(tmp_path / "x.flo", gt)
    assert torch.equal(read_flo(tmp_path / "x.flo"), gt)
    raw = (shared_data / "flyingchairs" / "0000000-gt.flo").read_bytes()
    assert (tmp_path / "x.flo").read_bytes() == raw
