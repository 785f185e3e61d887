"""Flow storage and evaluation tools, flow_video, and the ``mvaccel flow`` CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mvaccel._io import parse_shard
from mvaccel.cli import main
from mvaccel.flow import (
    TVL1Params,
    aae,
    dequantize,
    epe,
    flow_video,
    quantize,
    read_flo,
    tvl1,
    write_flo,
    write_flow_jpgs,
    write_video_flow,
)
from mvaccel.flow.video import find_flow_sources

REPO = Path(__file__).resolve().parents[1]
TINY = TVL1Params(nscales=1, warps=1, inner_iterations=5, outer_iterations=1, median=1)


def frames(t: int = 5, h: int = 24, w: int = 32) -> torch.Tensor:
    """(t, 1, h, w) uint8 texture moving right by 1 px per frame."""
    g = torch.Generator().manual_seed(0)
    base = torch.nn.functional.interpolate(
        torch.rand(1, 1, h // 3, (w + t) // 3 + 1, generator=g), size=(h, w + t), mode="bicubic"
    )
    base = (base.clamp(0, 1) * 255).round().to(torch.uint8)
    return torch.cat([base[..., t - i : t - i + w] for i in range(t)])


def test_flo_round_trip_and_errors(tmp_path):
    f = torch.randn(2, 7, 9)
    write_flo(tmp_path / "a.flo", f)
    torch.testing.assert_close(read_flo(tmp_path / "a.flo"), f)
    write_flo(tmp_path / "b.flo", f.permute(1, 2, 0).numpy())  # (H, W, 2) too
    torch.testing.assert_close(read_flo(tmp_path / "b.flo"), f)
    assert not list(tmp_path.glob(".*tmp"))
    with pytest.raises(FileNotFoundError):
        read_flo(tmp_path / "missing.flo")
    (tmp_path / "bad.flo").write_bytes(b"JUNK" + b"\0" * 20)
    with pytest.raises(ValueError, match="not a Middlebury"):
        read_flo(tmp_path / "bad.flo")
    raw = (tmp_path / "a.flo").read_bytes()
    (tmp_path / "short.flo").write_bytes(raw[:-8])
    with pytest.raises(ValueError, match="holds"):
        read_flo(tmp_path / "short.flo")
    with pytest.raises(ValueError, match=r"\(2, H, W\)"):
        write_flo(tmp_path / "c.flo", torch.zeros(3, 4, 5))


def test_epe_aae_known_values():
    gt = torch.zeros(2, 4, 4)
    f = torch.zeros(2, 4, 4)
    f[0] = 3.0
    f[1] = 4.0
    assert epe(f, gt) == pytest.approx(5.0)
    assert aae(gt, gt) == pytest.approx(0.0, abs=1e-6)
    # (1, 0, 1) vs (0, 0, 1): 45 degrees
    f = torch.zeros(2, 3, 3)
    f[0] = 1.0
    assert aae(f, torch.zeros(2, 3, 3)) == pytest.approx(45.0)
    gt_unknown = torch.zeros(2, 3, 3)
    gt_unknown[:, 0, 0] = 1e10
    f = torch.zeros(2, 3, 3)
    f[:, 0, 0] = 100.0
    assert epe(f, gt_unknown) == 0.0  # the unknown pixel is ignored
    with pytest.raises(ValueError, match="same shape"):
        epe(torch.zeros(2, 3, 3), torch.zeros(2, 3, 4))
    # one EPE: the metric is the differentiable loss of mvaccel.distill
    from mvaccel import distill

    assert distill.epe is epe
    f = torch.zeros(1, 2, 3, 3, requires_grad=True)
    e = epe(f, torch.ones(1, 2, 3, 3), valid=torch.ones(1, 3, 3, dtype=torch.bool))
    e.backward()
    assert e.dim() == 0 and float(e) == pytest.approx(2**0.5) and f.grad.abs().sum() > 0


def test_quantize_dense_flow_mapping():
    v = torch.tensor([-30.0, -20.0, 0.0, 10.0, 20.0, 25.0])
    q = quantize(v, 20)
    assert q.dtype == torch.uint8
    assert q.tolist() == [0, 0, 128, 191, 255, 255]  # round(255 (v + 20) / 40)
    x = torch.linspace(-20, 20, 1001)
    assert (dequantize(quantize(x)) - x).abs().max() <= 20 / 255 + 1e-6
    with pytest.raises(ValueError):
        quantize(v, 0)


def test_write_flow_jpgs(tmp_path):
    f = torch.zeros(3, 2, 16, 20)
    f[:, 0] = 5.0
    f[:, 1] = -20.0
    paths = write_flow_jpgs(tmp_path / "v", f, start=1)
    names = sorted(p.name for p in paths)
    assert names[0] == "flow_x_00001.jpg" and names[-1] == "flow_y_00003.jpg" and len(names) == 6
    x = np.asarray(Image.open(tmp_path / "v" / "flow_x_00002.jpg"))
    y = np.asarray(Image.open(tmp_path / "v" / "flow_y_00002.jpg"))
    assert x.shape == (16, 20) and x.dtype == np.uint8
    assert abs(int(np.median(x)) - 159) <= 1 and int(np.median(y)) <= 1


def test_flow_video_chunks_match_one_batch():
    fr = frames(7)
    whole = flow_video(fr, TINY, batch=100)
    chunks = {}
    flow_video(fr, TINY, batch=2, callback=lambda t0, f: chunks.__setitem__(t0, f))
    assert sorted(chunks) == [0, 2, 4]
    torch.testing.assert_close(torch.cat([chunks[k] for k in sorted(chunks)]), whole)
    direct = tvl1(fr[:-1], fr[1:], TINY)
    torch.testing.assert_close(whole, direct)
    back = flow_video(fr, TINY, backward=True)
    torch.testing.assert_close(back, tvl1(fr[1:], fr[:-1], TINY))
    with pytest.raises(ValueError, match="at least 2 frames"):
        flow_video(fr[:1], TINY)
    with pytest.raises(ValueError, match="batch"):
        flow_video(fr, TINY, batch=0)


def test_flow_video_reads_frame_folder_and_video(tmp_path):
    fr = frames(4)
    d = tmp_path / "frames"
    d.mkdir()
    for i, f in enumerate(fr):
        Image.fromarray(f[0].numpy()).save(d / f"img_{i:05d}.png")
    torch.testing.assert_close(flow_video(d, TINY), flow_video(fr, TINY))
    av = pytest.importorskip("av")
    path = tmp_path / "v.mp4"
    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=10)
        s.width, s.height, s.pix_fmt = 32, 24, "yuv420p"
        for f in fr:
            rgb = np.repeat(f[0].numpy()[..., None], 3, -1)
            for pkt in s.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    out = flow_video(path, TINY)
    assert out.shape == (3, 2, 24, 32) and torch.isfinite(out).all()
    with pytest.raises(FileNotFoundError):
        flow_video(tmp_path / "nope.mp4", TINY)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        flow_video(tmp_path / "empty", TINY)


def make_tree(root: Path) -> None:
    fr = frames(4)
    for cls, n in (("a", 2), ("b", 1)):
        for k in range(n):
            d = root / cls / f"v{k}"
            d.mkdir(parents=True)
            for i, f in enumerate(fr):
                Image.fromarray(f[0].numpy()).save(d / f"{i:04d}.jpg", quality=98)


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mvaccel", "flow", *args],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )  # fmt: skip


def test_cli_tree_resume_and_shards(tmp_path):
    make_tree(tmp_path / "src")
    items = find_flow_sources(tmp_path / "src")
    assert [str(r) for _, r in items] == ["a/v0", "a/v1", "b/v0"]
    r = cli(str(tmp_path / "src"), str(tmp_path / "s0"), "--preset", "tvnet", "--shard", "0/2")
    assert r.returncode == 0, r.stderr
    done = sorted(str(p.relative_to(tmp_path / "s0")) for p in (tmp_path / "s0").glob("*/*"))
    assert done == ["a/v0", "b/v0"]  # every second item from the first
    assert len(list((tmp_path / "s0" / "a" / "v0").glob("flow_x_*.jpg"))) == 3
    assert (tmp_path / "s0" / "a" / "v0" / "flow_y_00003.jpg").is_file()
    # rerun: nothing to do, and the finished files stay untouched
    stamp = (tmp_path / "s0" / "a" / "v0" / "flow_x_00001.jpg").stat().st_mtime_ns
    r = cli(str(tmp_path / "src"), str(tmp_path / "s0"), "--preset", "tvnet", "--shard", "0/2")
    assert r.returncode == 0 and "2 already done" in r.stderr, r.stderr
    assert (tmp_path / "s0" / "a" / "v0" / "flow_x_00001.jpg").stat().st_mtime_ns == stamp
    assert not list((tmp_path / "s0").rglob(".*tmp*"))


def test_find_flow_sources_walks_like_find_videos(tmp_path):
    """One walk (``find_videos``): videos and frame folders, hidden names and frame folders'
    contents skipped, outputs named by relative path."""
    from mvaccel._io import find_videos

    src = tmp_path / "src"
    for rel in ("a/v.mp4", "a/b/w.AVI", "a/f/img_00001.jpg", "a/f/img_00002.jpg", "a/f/x.mp4",
                "a/notes.txt", ".hid/h.mp4", "a/.tmp.mp4", "c/g/1.png", "c/g/.2.png"):  # fmt: skip
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(b"")
    (src / "d" / "empty").mkdir(parents=True)
    got = [(s.relative_to(src).as_posix(), r.as_posix()) for s, r in find_flow_sources(src)]
    assert got == [("a/b/w.AVI", "a/b/w"), ("a/f", "a/f"), ("a/v.mp4", "a/v"), ("c/g", "c/g")]
    assert [p.relative_to(src).as_posix() for p in find_videos(src)] == [
        "a/b/w.AVI", "a/f/x.mp4", "a/v.mp4"]  # fmt: skip
    assert find_flow_sources(src / "a" / "f") == [(src / "a" / "f", Path("f"))]
    assert find_flow_sources(src / "a" / "v.mp4") == [(src / "a" / "v.mp4", Path("v"))]
    with pytest.raises(ValueError, match="no videos"):
        find_flow_sources(src / "d")
    with pytest.raises(FileNotFoundError, match="nothing"):
        find_flow_sources(src / "nothing")


def test_cli_formats(tmp_path):
    make_tree(tmp_path / "src")
    one = tmp_path / "src" / "a" / "v0"
    r = cli(str(one), str(tmp_path / "o"), "--preset", "tvnet", "--format", "npy", "--quiet")
    assert r.returncode == 0, r.stderr
    arr = np.load(tmp_path / "o" / "v0" / "flow.npy")
    assert arr.shape == (3, 2, 24, 32) and arr.dtype == np.float32
    r = cli(str(one), str(tmp_path / "f"), "--preset", "tvnet", "--format", "flo", "--quiet")
    assert r.returncode == 0, r.stderr
    f = read_flo(tmp_path / "f" / "v0" / "flow_00002.flo")
    torch.testing.assert_close(f, torch.from_numpy(arr[1]))


def test_cli_bad_arguments(tmp_path):
    r = cli(str(tmp_path / "missing"), str(tmp_path / "o"))
    assert r.returncode != 0 and "no such file" in r.stderr
    r = cli(str(tmp_path), str(tmp_path / "o"), "--preset", "nope")
    assert r.returncode != 0 and "unknown preset" in r.stderr
    with pytest.raises(ValueError, match="i/n"):
        parse_shard("3")
    with pytest.raises(ValueError, match="0 <= i < n"):
        parse_shard("2/2")
    assert parse_shard("1/4") == (1, 4)


def test_cli_flow_is_backward_by_default_and_says_so(tmp_path):
    """Written flow follows the MVs (file k = tvl1(I_k, I_{k-1})) unless --forward is asked."""
    make_tree(tmp_path / "src")
    one = tmp_path / "src" / "a" / "v0"
    for flag, name in (([], "b"), (["--forward"], "f")):
        args = ["flow", str(one), str(tmp_path / name), "--preset", "tvnet", "--format", "flo"]
        assert main([*args, *flag]) == 0
    fr = torch.stack([torch.from_numpy(np.array(Image.open(p))) for p in sorted(one.iterdir())])
    fr = fr[:, None]
    params = TVL1Params.preset("tvnet")
    torch.testing.assert_close(read_flo(tmp_path / "b" / "v0" / "flow_00001.flo"),
                               tvl1(fr[1:2], fr[0:1], params)[0])  # fmt: skip
    torch.testing.assert_close(read_flo(tmp_path / "f" / "v0" / "flow_00001.flo"),
                               tvl1(fr[0:1], fr[1:2], params)[0])  # fmt: skip
    meta = json.loads((tmp_path / "b" / "v0" / "meta.json").read_text())
    assert meta["direction"] == "backward" and meta["file_k"] == "tvl1(I_k, I_{k-1})"
    assert meta["pairs"] == 3 and meta["preset"] == "tvnet"
    assert json.loads((tmp_path / "f" / "v0" / "meta.json").read_text())["direction"] == "forward"


def test_nan_flow_is_an_error_not_minus_bound(tmp_path):
    f = torch.zeros(1, 2, 4, 4)
    f[0, 0, 1, 1] = float("nan")
    with pytest.raises(ValueError, match="1 NaN"):
        quantize(f)
    with pytest.raises(ValueError, match="NaN"):
        write_flow_jpgs(tmp_path, f)
    assert not list(tmp_path.iterdir())
    assert quantize(torch.tensor([float("inf"), -float("inf")])).tolist() == [255, 0]


def test_unreadable_frames_name_their_file(tmp_path):
    d = tmp_path / "frames"
    d.mkdir()
    for i, f in enumerate(frames(3)):
        Image.fromarray(f[0].numpy()).save(d / f"{i:04d}.jpg", quality=98)
    bad = d / "0001.jpg"
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    with pytest.raises(ValueError, match="0001.jpg"):
        flow_video(d, TINY)
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\0" * 1000)
    with pytest.raises(ValueError, match="junk.mp4"):
        flow_video(junk, TINY)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only error")
def test_cuda_device_without_gpu_is_a_clear_error(tmp_path):
    with pytest.raises(RuntimeError, match="no GPU"):
        flow_video(frames(3), TINY, device="cuda")


def test_write_video_flow_is_atomic_and_hidden_temps_are_skipped(tmp_path, monkeypatch):
    dest = tmp_path / "out" / "v"

    def boom(*a, **k):
        raise RuntimeError("solver died")

    monkeypatch.setattr("mvaccel.flow.video.flow_video", boom)
    with pytest.raises(RuntimeError, match="solver died"):
        write_video_flow(frames(3), dest, TINY)
    assert list((tmp_path / "out").iterdir()) == []  # no half-written folder, no temporary
    monkeypatch.undo()
    # a killed run's hidden temporaries are not sources
    make_tree(tmp_path / "src")
    (tmp_path / "src" / "a" / ".v9.tmp-0-1-x").mkdir()
    (tmp_path / "src" / "a" / ".v_x.mp4.tmp-00000000-1-ab.mp4").write_bytes(b"partial")
    assert [str(r) for _, r in find_flow_sources(tmp_path / "src")] == ["a/v0", "a/v1", "b/v0"]
