"""mvaccel.viz: the colouring function, arrows, keyed figures, ``mvaccel viz`` and the demo report.

Figures are checked on the rendered array (panels, colour-wheel key, arrows, hatching), not on
the mere existence of a file.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import videogen as vg
from PIL import Image

from mvaccel import viz
from mvaccel.cli import main

pytest.importorskip("matplotlib")


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    if vg.FFMPEG is None:
        pytest.skip("needs the ffmpeg CLI")
    return vg.make_videos(tmp_path_factory.getbasetemp() / "videos")


@pytest.fixture(scope="module")
def video_340(tmp_path_factory):
    """A 340x256 H.264 video (340 = 8k + 4: the size that crashed the old arrows)."""
    if vg.FFMPEG is None:
        pytest.skip("needs the ffmpeg CLI")
    path = tmp_path_factory.mktemp("v340") / "pan_340x256.mp4"
    return vg.encode(vg.texture(256, 340, 6, 2.0, 1.0), path, vg.X264_P)


def _saturated_hues(img: np.ndarray) -> int:
    """How many of 12 hue bins hold strongly saturated pixels (a colour wheel holds them all)."""
    a = img.astype(np.float64) / 255
    mx, mn = a.max(-1), a.min(-1)
    sat = (mx - mn) > 0.6
    if not sat.any():
        return 0
    r, g, b = (a[..., i][sat] for i in range(3))
    hue = np.degrees(np.arctan2(np.sqrt(3) * (g - b), 2 * r - g - b)) % 360
    return len(np.unique((hue // 30).astype(int)))


# ---------------------------------------------------------------- colours


def test_flow_to_image_tensor_convention_and_numpy():
    f = torch.zeros(2, 5, 7)
    f[0, :, 4:] = 2.0  # right
    f[1, 0, 0] = -1.0  # up
    img = viz.flow_to_image(f)
    assert isinstance(img, torch.Tensor) and img.dtype == torch.uint8 and img.shape == (3, 5, 7)
    assert (img[:, 1:, :4] == 255).all()  # zero motion is white
    right = img[:, 2, 5].int()
    assert right[0] > 200 and right[2] < 60  # right is red
    batch = viz.flow_to_image(torch.stack([f, 2 * f]))
    assert batch.shape == (2, 3, 5, 7)
    # One scale for the batch: the half-length field is paler than alone.
    assert torch.equal(batch[1], viz.flow_to_image(2 * f))
    assert (batch[0, 1:, 2, 5] > img[1:, 2, 5]).all()
    # numpy in: (H, W, 3) out, whether given (2, H, W) or (H, W, 2).
    a = viz.flow_to_image(f.numpy())
    b = viz.flow_to_image(np.moveaxis(f.numpy(), 0, -1))
    assert isinstance(a, np.ndarray) and a.shape == (5, 7, 3)
    assert np.array_equal(a, b) and np.array_equal(a, img.permute(1, 2, 0).numpy())
    # max_norm: longer vectors than the key are darkened, not wrapped.
    dark = viz.flow_to_image(f, max_norm=1.0)[:, 2, 5].int()
    assert dark.max() < 200 and dark[0] > dark[2]
    nan = f.clone()
    nan[0, 0, 1] = float("nan")
    assert (viz.flow_to_image(nan)[:, 0, 1] == 0).all()
    assert viz.flow_to_image(torch.zeros(2, 0, 3)).shape == (3, 0, 3)
    assert (viz.flow_to_image(torch.zeros(1, 2, 3, 3)) == 255).all()  # an empty (still) field


def test_flow_to_image_directions_and_errors():
    flow = np.zeros((2, 3, 3), np.float32)
    flow[0, 0, 0] = 1.0  # right
    flow[0, 0, 1] = -1.0  # left
    flow[1, 0, 2] = 1.0  # down
    img = viz.flow_to_image(flow)
    right, left, down = (img[0, i].astype(int) for i in range(3))
    assert right[0] > 200 and right[2] < 60
    assert left[0] < 60 and left[1] > 150 and left[2] > 150
    assert down[1] > 150 and down[2] < 60
    for bad in (torch.zeros(3, 4, 4), torch.zeros(4, 4), np.zeros((3, 4, 4)), np.zeros(5)):
        with pytest.raises(ValueError, match="flow_to_image"):
            viz.flow_to_image(bad)
    with pytest.raises(ValueError, match="max_norm"):
        viz.flow_to_image(torch.zeros(2, 4, 4), max_norm=0)


def test_old_colouring_names_forward_with_a_warning():
    import mvaccel.flow as flow
    import mvaccel.video as video

    f = torch.zeros(2, 4, 6)
    f[0, 1, 2] = 3.0
    want = viz.flow_to_image(f).permute(1, 2, 0).numpy()
    with pytest.warns(DeprecationWarning, match="flow_to_image"):
        assert np.array_equal(flow.to_color(f), want)
    with pytest.warns(DeprecationWarning, match="flow_to_image"):
        assert np.array_equal(video.to_color(f), want)
    with pytest.warns(DeprecationWarning, match="flow_to_image"):
        assert np.array_equal(viz.flow_to_color(f), want)
    with pytest.warns(DeprecationWarning, match="flow_to_image"):
        assert video.to_color(torch.stack([f, -f])).shape == (2, 4, 6, 3)
    img = np.full((32, 48, 3), 128, np.uint8)
    with pytest.warns(DeprecationWarning, match="mvaccel.viz.draw_arrows"):
        assert video.draw_arrows(img, f, 8, scale=1.0).shape == img.shape


def test_color_wheel_key_is_a_disc_of_every_hue():
    key = viz.color_wheel_key(65, max_norm=3.0)
    assert key.shape == (65, 65, 4)
    assert key[0, 0, 3] == 0 and key[32, 32, 3] == 255  # transparent corners, opaque centre
    assert tuple(key[32, 32, :3]) == (255, 255, 255)  # zero motion at the centre
    assert _saturated_hues(key[..., :3][key[..., 3] > 0]) == 12


# ---------------------------------------------------------------- arrows


@pytest.mark.parametrize("hw", [(256, 340), (13, 17), (8, 8), (252, 324)])
def test_draw_arrows_any_size(hw):
    # 340 and 324 are 8k + 4: the old pixel drawer indexed past the edge there.
    h, w = hw
    hb, wb = -(-h // 8), -(-w // 8)
    img = np.full((h, w, 3), 128, np.uint8)
    mv = torch.zeros(2, hb, wb)
    mv[0, :, -1] = -6.0  # the last column's content came from beyond the right edge
    mv[:, 0, 0] = torch.tensor([5.0, 3.0])
    out = viz.draw_arrows(img, mv, 8)
    assert out.shape == (h, w, 3) and out.dtype == np.uint8
    assert not np.array_equal(out, img)
    if min(h, w) >= 64:  # room for an arrow's white body and dark outline
        assert (out > 230).all(-1).any() and (out < 60).all(-1).any()


def test_draw_arrows_only_where_there_is_motion():
    img = np.full((128, 192, 3), 128, np.uint8)
    mv = torch.zeros(2, 8, 12)
    mv[:, 1, 1] = torch.tensor([6.0, 0.0])  # content came from the right: arrow points left
    out = viz.draw_arrows(img, mv, 16, step=1, gain=2.0)
    changed = (out.astype(int) - 128).any(-1)
    ys, xs = np.nonzero(changed)
    assert 16 <= ys.min() and ys.max() < 32  # block (1, 1), centre (23.5, 23.5)
    # From centre + 2 mv (x = 35.5) to the centre, the head (wider than the shaft) there.
    assert 22 <= xs.min() <= 25 and 34 <= xs.max() <= 38
    assert changed[:, 24:31].sum(0).max() > changed[:, 32:36].sum(0).max()
    assert not changed[40:, :].any() and not changed[:, 48:].any()  # still blocks: no arrow
    # Default layout: arrows at least 16 px apart, a group's vectors averaged.
    out = viz.draw_arrows(img[:64, :96], mv[:, :4, :6] / 2, 8)
    assert (out.astype(int) - 128).any(-1)[:32, :32].any()


def test_intra_blocks_are_grey_and_hatched_not_white():
    field = np.zeros((2, 4, 6))
    field[0, :, :3] = 2.0
    mask = np.ones((4, 6), bool)
    mask[:, 3:] = False  # intra on the right
    fig = viz.new_figure(1.2, 0.8, 100)
    ax = fig.add_axes((0, 0, 1, 1))
    info = viz.draw_motion(ax, field, block=20, max_norm=2.0, mask=mask, arrows=False)
    assert info["intra"] == 12
    img = viz.figure_to_array(fig).astype(int)
    left, right = img[10:70, 5:55], img[10:70, 65:115]
    assert (left[..., 0] > 200).all() and (left[..., 2] < 80).all()  # moving right: red
    grey = (np.abs(right - right.mean(-1, keepdims=True)) < 12).all(-1)
    assert grey.all() and right.mean() < 200  # grey, not white like zero motion
    assert right.min() < 90 and np.percentile(right, 90) > 120  # with hatching strokes


# ---------------------------------------------------------------- figures


@pytest.mark.parametrize("hw,block", [((13, 17), 8), ((256, 340), 8), ((6, 5), 8), ((8, 8), 8)])
def test_mv_figure_has_panels_and_key(hw, block):
    h, w = hw
    hb, wb = -(-h // block), -(-w // block)
    image = np.zeros((3, h, w), np.uint8)
    image[2] = 255  # a blue frame: its panel must show up as blue
    mv = torch.zeros(2, hb, wb)
    mv[0, 0, 0] = 3.0
    mask = torch.ones(hb, wb, dtype=torch.bool)
    fig = viz.mv_figure(image, mv, block, mask=mask, frame=7, frame_type="P", title="t")
    titles = [ax.get_title() for ax in fig.axes]
    assert any("frame 7 (P)" in t for t in titles) and any("colour key" in t for t in titles)
    assert any("px" in t for t in titles)
    arr = viz.figure_to_array(fig)
    assert arr.shape[0] > 300 and arr.shape[1] > 800  # readable, whatever the frame size
    blue = (arr[..., 2] > 200) & (arr[..., 0] < 60) & (arr[..., 1] < 60)
    assert blue[:, : arr.shape[1] // 3].sum() > 1000  # the frame panel
    assert _saturated_hues(arr[:, 2 * arr.shape[1] // 3 :]) >= 10  # the wheel in the key column


def test_mv_figure_i_frame_and_empty_field():
    image = np.full((48, 64, 3), 90, np.uint8)
    mv = torch.zeros(2, 6, 8)
    fig = viz.mv_figure(image, mv, 8, mask=torch.ones(6, 8, dtype=torch.bool), frame=0,
                        frame_type="I")  # fmt: skip
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert any("I-frame" in t for t in texts)
    arr = viz.figure_to_array(fig)
    assert _saturated_hues(arr) >= 10  # the key is still there
    # An empty (still) field: white colours, no arrows, a finite key.
    fig = viz.mv_figure(image, mv, 8, frame=3, frame_type="P")
    assert viz.figure_to_array(fig).shape[-1] == 3
    assert viz.robust_max([mv]) == 0.5


def test_motion_figure_one_key_many_panels_and_notes():
    f = torch.zeros(2, 30, 40)
    f[0] = 2.0
    panels = [viz.Panel(f"p{i}", field=f * (i + 1)) for i in range(5)]
    fig = viz.motion_figure(panels, 4.0, notes=["MV vs TV-L1: mean cos 0.99"], title="five")
    keys = [ax for ax in fig.axes if "colour key" in ax.get_title()]
    assert len(keys) == 1 and "4.00 px" in keys[0].get_title()
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert any("mean cos 0.99" in t for t in texts) and any("length x" in t for t in texts)
    assert len([ax for ax in fig.axes if ax.get_title().startswith("p")]) == 5
    with pytest.raises(ValueError, match="no panels"):
        viz.motion_figure([], 1.0)


def test_agreement_direction_and_intra():
    mv = torch.zeros(2, 3, 4)
    mv[0] = 2.0
    flow = torch.zeros(2, 24, 32)
    flow[0] = 2.0
    mask = torch.ones(3, 4, dtype=torch.bool)
    mask[0, 0] = False
    a = viz.agreement(mv, flow, 8, mask)
    assert a["blocks"] == 11 and a["moving"] == 11
    assert a["cosine"] == pytest.approx(1.0) and a["epe"] == pytest.approx(0.0)
    a = viz.agreement(mv, -flow, 8, mask)
    assert a["cosine"] == pytest.approx(-1.0) and a["epe"] == pytest.approx(4.0)
    # Partial cells at the edges average the pixels they hold (17x13 frame, 3x2 grid).
    flow = torch.zeros(2, 13, 17)
    flow[1] = -1.0
    a = viz.agreement(torch.tensor([[[0.0] * 3] * 2, [[-1.0] * 3] * 2]), flow, 8)
    assert a["epe"] == pytest.approx(0.0) and a["blocks"] == 6
    none = viz.agreement(mv, flow[:, :24, :32].new_zeros(2, 24, 32), 8, torch.zeros(3, 4) > 0)
    assert none["blocks"] == 0 and np.isnan(none["epe"])
    assert "no blocks" in viz.format_agreement("MV vs TV-L1", none)


def test_confusion_and_accuracy_figures():
    cm = np.array([[5, 1, 0], [0, 6, 0], [2, 0, 4]])
    fig = viz.confusion_figure(cm, ["MoveRight", "RotateCW", "ZoomIn"])
    ax = fig.axes[0]
    assert ax.get_xlabel() == "predicted class" and ax.get_ylabel() == "true class"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["MoveRight", "RotateCW", "ZoomIn"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["MoveRight", "RotateCW", "ZoomIn"]
    assert {t.get_text() for t in ax.texts} == {"5", "1", "6", "2", "4"}
    assert viz.figure_to_array(fig).std() > 10
    with pytest.raises(ValueError, match="3 classes"):
        viz.confusion_figure(np.zeros((2, 2)), ["a", "b", "c"])
    pts = [("MV-CNN", 0.6, 900.0), ("OF-CNN", 0.9, 40.0), ("DMC-Net", 0.82, 300.0)]
    fig = viz.accuracy_fps_figure(pts)
    ax = fig.axes[0]
    assert "frames/s" in ax.get_xlabel() and "accuracy" in ax.get_ylabel()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["MV-CNN", "OF-CNN", "DMC-Net"]


# ---------------------------------------------------------------- videos


def test_compare_frame_p_b_and_i_frames(videos):
    # h264_b: a texture panned by (1.25, -0.5) px per frame, IBBP...: vectors src - dst are
    # (1.25, -0.5) per frame of distance to the reference, and TV-L1 in the same direction.
    path = videos["h264_b.mp4"]
    from mvaccel.video import read_motion

    types = read_motion(path, frames=range(12)).frame_type.tolist()
    p = next(i for i, t in enumerate(types) if t == 1)
    b = next(i for i, t in enumerate(types) if t == 2 and i > p)
    fig, info = viz.compare_frame(path, p, preset="fast")
    assert info["frame_type"] == "P" and info["ref"] == max(i for i in range(p) if types[i] < 2)
    a = info["agreement"]
    assert a["cosine"] > 0.95 and a["epe"] < 0.5 * (p - info["ref"]) and a["blocks"] > 100
    titles = " | ".join(ax.get_title() for ax in fig.axes)
    for what in ("decoded frame", "motion vectors", "accumulated MV", "accumulated residual",
                 "TV-L1", "colour key", f"frame {p} (P)"):  # fmt: skip
        assert what in titles, what
    arr = viz.figure_to_array(fig)
    assert _saturated_hues(arr[:, -arr.shape[1] // 5 :]) >= 10
    fig, info = viz.compare_frame(path, b, preset="fast")
    assert info["frame_type"] == "B" and types[info["ref"]] in (0, 1) and info["ref"] < b
    assert info["agreement"]["cosine"] > 0.9
    fig, info = viz.compare_frame(path, 0, preset="fast")
    assert info["frame_type"] == "I" and info["agreement"] is None and info["ref"] is None
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert any("I-frame: no motion vectors" in t for t in texts)


def test_compare_frame_tvnet_and_dmc_panels(videos, tmp_path):
    from mvaccel.nn.dmcnet import DMCGenerator

    g = DMCGenerator()
    torch.nn.init.zeros_(g.predict_flow.weight)
    torch.nn.init.zeros_(g.predict_flow.bias)  # DMC = MV exactly
    ckpt = tmp_path / "dmc.ckpt"
    torch.save({"state_dict": {f"generator.{k}": v for k, v in g.state_dict().items()},
                "hyper_parameters": {}, "datamodule_hyper_parameters": {"bound": 5.0,
                                                                        "motion_std": 0.5}},
               ckpt)  # fmt: skip
    mv = torch.zeros(2, 2, 3)
    mv[0] = 1.5
    mv[1, 0, 0] = -9.0  # clipped to the bound the model was trained with
    d = viz.dmc_flow(ckpt, mv, torch.zeros(3, 13, 17, dtype=torch.int16), 8)
    assert d.shape == (2, 13, 17)
    assert torch.allclose(d[0], torch.full((13, 17), 1.5), atol=1e-4)
    assert d[1, 0, 0] == pytest.approx(-5.0, abs=1e-4) and d[1, 12, 16] == pytest.approx(0.0)
    fig, info = viz.compare_frame(videos["h264_p.mp4"], 5, tvnet=True, dmc=ckpt)
    titles = " | ".join(ax.get_title() for ax in fig.axes)
    assert "TVNet" in titles and "DMC-Net generator" in titles
    texts = " ".join(t.get_text() for ax in fig.axes for t in ax.texts)
    assert "TVNet vs TV-L1: EPE" in texts and "DMC vs TV-L1: EPE" in texts
    bad = tmp_path / "bad.ckpt"
    torch.save({"state_dict": {"net.w": torch.zeros(1)}}, bad)
    with pytest.raises(ValueError, match="generator"):
        viz.load_dmc_generator(bad)


def test_cli_viz_writes_one_figure_per_frame(videos, tmp_path, capsys):
    path = videos["h264_b.mp4"]
    assert main(["viz", str(path), "--frame", "4", "--frame", "0", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "frame 4 (" in out and "MV vs TV-L1: mean cos" in out and "frame 0 (I)" in out
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert pngs == ["h264_b_frame00000.png", "h264_b_frame00004.png"]
    img = np.asarray(Image.open(tmp_path / "h264_b_frame00004.png").convert("RGB"))
    assert img.shape[1] > 1200 and _saturated_hues(img) >= 10
    assert main(["viz", str(tmp_path / "missing.mp4")]) == 1
    assert "no such file" in capsys.readouterr().err
    assert main(["viz", str(path), "--frame", "36"]) == 1
    assert "no frame 36 (the video has 36 frames" in capsys.readouterr().err


def test_compare_frame_odd_size(videos):
    # 322x238: neither a multiple of 8 nor of 16; panned by (2, 1) px per frame.
    fig, info = viz.compare_frame(videos["odd.mp4"], 3, preset="fast")
    assert info["frame_type"] == "P" and info["ref"] == 2
    assert info["agreement"]["cosine"] > 0.95 and info["agreement"]["epe"] < 1.0
    assert viz.figure_to_array(fig).shape[1] > 1200


def test_cli_mv_png_at_8k_plus_4(video_340, tmp_path, capsys):
    png = tmp_path / "mv.png"
    assert main(["mv", str(video_340), "--png", str(png)]) == 0
    assert "wrote" in capsys.readouterr().out
    img = np.asarray(Image.open(png).convert("RGB"))
    assert img.shape[0] > 300 and _saturated_hues(img) >= 10
    assert not list(tmp_path.glob(".*tmp*"))


def test_cli_flow_preview(videos, tmp_path):
    src = videos["h264_p.mp4"]
    out = tmp_path / "flow"
    args = ["flow", str(src), str(out), "--preset", "fast", "--format", "npy", "--backward",
            "--preview", "--quiet"]  # fmt: skip
    assert main(args) == 0
    img = np.asarray(Image.open(out / "h264_p" / "preview.png").convert("RGB"))
    assert img.shape[1] > 800 and _saturated_hues(img) >= 10
    assert (out / "h264_p" / "flow.npy").is_file()


@pytest.mark.slow
def test_cli_viz_on_the_shared_videos(shared_data, tmp_path, capsys):
    videos = shared_data / "videos"
    for name, frame in (("v_ApplyEyeMakeup_g01_c01.avi", 75), ("h264_bframes_340x256.mp4", 74)):
        assert main(["viz", str(videos / name), "--frame", str(frame), "--out",
                     str(tmp_path)]) == 0  # fmt: skip
        out = capsys.readouterr().out
        assert "MV vs TV-L1: mean cos" in out
        img = np.asarray(Image.open(next(tmp_path.glob(f"{name.split('.')[0]}_*.png"))))
        assert _saturated_hues(img[..., :3]) >= 10


# ---------------------------------------------------------------- demo


def test_demo_report_links_tables_and_figures(tmp_path):
    from mvaccel.demo import write_report

    fig = viz.confusion_figure(np.eye(2, dtype=int), ["a", "b"])
    png = viz.save_figure(fig, tmp_path / "cm.png")
    report = write_report(tmp_path, [("first table", "| a | b |\n| --- | --- |\n| 1 | 2 |")],
                          {"confusion matrix": png}, "intro")  # fmt: skip
    text = report.read_text()
    assert text.startswith("# mvaccel demo report") and "## first table" in text
    assert "| 1 | 2 |" in text and "![confusion matrix](cm.png)" in text
    assert Image.open(tmp_path / "cm.png").size[0] >= 450


def test_dmc_flow_feeds_the_generator_the_datasets_residual_input():
    from mvaccel.data.datasets import RESIDUAL_STD
    from mvaccel.data.transforms import normalize_residual

    seen = {}

    def gen(x, r):
        seen["x"], seen["r"] = x, r
        return torch.zeros(1, 2, *x.shape[-2:])

    res = torch.randint(
        -300, 300, (3, 13, 17), dtype=torch.int16, generator=torch.Generator().manual_seed(0)
    )
    d = viz.dmc_flow("unused.ckpt", torch.zeros(2, 2, 3), res, 8, loaded=(gen, 20.0, 1.0, 0, False))
    assert torch.equal(seen["r"], normalize_residual(res[None], RESIDUAL_STD))
    want = (res[None].float() + 128).clamp(0, 255) / 255 - 0.5
    torch.testing.assert_close(seen["r"] * RESIDUAL_STD, want)
    assert d.shape == (2, 13, 17) and float(d.abs().max()) < 0.1  # zero output: ~0 px
