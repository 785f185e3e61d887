"""The pipelined ``mvaccel flow`` (decoders, one solver batching across videos, writers):
byte-equal to the sequential path, resumable, sharded, and a failing video loses only itself."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mvaccel.cli import main
from mvaccel.flow import TVL1Params, flow_tree
from mvaccel.flow import pipeline as pl

av = pytest.importorskip("av")

# per-pair stopping on (epsilon reached at different iterations for different pairs)
PARAMS = TVL1Params(nscales=2, warps=2, inner_iterations=4, outer_iterations=3, epsilon=0.02)
#: (relative path, frames, height, width): 4, 5 and 7 frames, two frame sizes, so batch 3
#: splits videos across batches and batches hold several videos.
VIDEOS = [("a/v4.mp4", 4, 24, 32), ("a/v5.mp4", 5, 24, 32), ("b/v7.mp4", 7, 32, 40),
          ("b/w6.mp4", 6, 24, 32), ("c/x5.mp4", 5, 32, 40)]  # fmt: skip


def write_video(path: Path, t: int, h: int, w: int, seed: int) -> None:
    """A textured clip moving by (seed % 3 + 1, 1) px per frame (mpeg4, grey content)."""
    g = torch.Generator().manual_seed(seed)
    base = torch.nn.functional.interpolate(
        torch.rand(1, 1, h // 4 + 4, w // 4 + 4, generator=g), size=(h + 4 * t, w + 4 * t),
        mode="bicubic",
    )  # fmt: skip
    base = (base.clamp(0, 1) * 255).round().to(torch.uint8)[0, 0].numpy()
    dx = seed % 3 + 1
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=10)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.options = {"qscale": "2"}
        for i in range(t):
            fr = np.repeat(base[i : i + h, dx * i : dx * i + w, None], 3, -1)
            for pkt in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(fr), "rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("videos")
    for k, (rel, t, h, w) in enumerate(VIDEOS):
        write_video(root / rel, t, h, w, k)
    return root


@pytest.fixture(scope="module")
def sequential(tree, tmp_path_factory) -> dict[str, Path]:
    """The reference: one video after the other through write_video_flow, per format."""
    outs = {}
    for fmt in ("jpg", "npy", "flo"):
        out = tmp_path_factory.mktemp(f"seq_{fmt}")
        r = flow_tree(tree, out, PARAMS, format=fmt, batch=2, pipeline=False, quiet=True)
        assert r.ok and len(r.done) == len(VIDEOS)
        outs[fmt] = out
    return outs


def files(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file()}  # fmt: skip


def assert_same(out: Path, ref: Path) -> None:
    got, want = files(out), files(ref)
    assert sorted(got) == sorted(want)
    diff = [k for k in want if got[k] != want[k]]
    assert not diff, f"differ from the sequential output: {diff[:5]}"


@pytest.mark.parametrize("fmt,batch,decoders,writers",
                         [("jpg", 3, 2, 2), ("jpg", 1, 1, 1), ("jpg", 64, 3, 1),
                          ("npy", 3, 2, 3), ("flo", 2, 3, 2)])  # fmt: skip
def test_pipeline_files_equal_sequential_bytes(tree, sequential, tmp_path, fmt, batch, decoders,
                                               writers):  # fmt: skip
    out = tmp_path / "out"
    r = flow_tree(tree, out, PARAMS, format=fmt, batch=batch, decoders=decoders,
                  writers=writers, quiet=True)  # fmt: skip
    assert r.ok and len(r.done) == len(VIDEOS)
    assert_same(out, sequential[fmt])
    n = len(list((out / "b" / "v7").glob("flow_x_*.jpg"))) if fmt == "jpg" else None
    assert n in (None, 6)


def test_previews_equal_sequential(tree, tmp_path):
    """``--preview``: the pipeline picks the same pair as the one-video path (pairs arrive in
    any order there) and writes the same figure."""
    outs = []
    for pipeline in (False, True):
        out = tmp_path / f"p{int(pipeline)}"
        r = flow_tree(tree, out, PARAMS, batch=3, pipeline=pipeline, preview=True, quiet=True)
        assert r.ok
        outs.append(out)
    previews = sorted(p.relative_to(outs[0]) for p in outs[0].rglob("preview.png"))
    assert len(previews) == len(VIDEOS)
    for rel in previews:
        assert (outs[1] / rel).read_bytes() == (outs[0] / rel).read_bytes(), rel


def test_batches_mix_videos_and_split_them(tree, tmp_path, monkeypatch):
    """Batch 3 over 4+5+6 (24x32) and 7+5 (32x40) frame videos: each solver call holds at most
    3 pairs of one frame size, calls mix videos, videos span calls, every pair is solved once."""
    calls = []
    real = pl.FlowPipeline._tvl1

    def spy(self, pieces):
        calls.append([(v.src.name, t0, fr.shape[0] - 1, fr.shape[1:]) for v, t0, fr in pieces])
        return real(self, pieces)

    monkeypatch.setattr(pl.FlowPipeline, "_tvl1", spy)
    r = flow_tree(tree, tmp_path / "o", PARAMS, batch=3, decoders=1, quiet=True)
    assert r.ok
    assert all(sum(k for _, _, k, _ in c) <= 3 and len({s for *_, s in c}) == 1 for c in calls)
    assert any(len({name for name, *_ in c}) > 1 for c in calls), calls  # across videos
    spans = {}
    for i, c in enumerate(calls):
        for name, _, _, _ in c:
            spans.setdefault(name, set()).add(i)
    assert max(len(v) for v in spans.values()) > 1, calls  # a video split across calls
    solved = sorted((name, t0 + j) for c in calls for name, t0, k, _ in c for j in range(k))
    want = sorted((Path(rel).name, j) for rel, t, _, _ in VIDEOS for j in range(t - 1))
    assert solved == want


def test_failing_videos_lose_only_themselves(tree, sequential, tmp_path, monkeypatch):
    src = tmp_path / "src"
    for rel, *_ in VIDEOS:
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).symlink_to(tree / rel)
    (src / "b" / "junk.mp4").write_bytes(b"\0" * 500)  # not a video at all
    real = pl.iter_frames

    def breaks_midway(path):  # a/v5 decodes 3 frames, then its stream is broken
        for i, fr in enumerate(real(path)):
            if path.name == "v5.mp4" and i == 3:
                raise ValueError(f"flow_video: cannot decode {path}: Invalid data found")
            yield fr

    monkeypatch.setattr(pl, "iter_frames", breaks_midway)
    out = tmp_path / "out"
    r = flow_tree(src, out, PARAMS, batch=3, quiet=True)
    failed = {p.name: msg for p, msg in r.failed}
    assert sorted(failed) == ["junk.mp4", "v5.mp4"]
    assert "junk.mp4" in failed["junk.mp4"] and "v5.mp4" in failed["v5.mp4"]
    assert len(r.done) == len(VIDEOS) - 1
    assert not (out / "a" / "v5").exists() and not (out / "b" / "junk").exists()
    assert not list(out.rglob(".*")), "temporaries left"
    for rel in ("a/v4", "b/v7", "b/w6", "c/x5"):
        ref = files(sequential["jpg"] / rel)
        got = files(out / rel)
        assert {k: v for k, v in got.items() if k != "meta.json"} == {
            k: v for k, v in ref.items() if k != "meta.json"
        }, rel
    # a writer that fails (disk full) on one video: that video only
    monkeypatch.undo()
    real_write = pl.write_flows

    def disk_full(folder, t0, flows, *a):
        if ".v7" in folder.name:
            raise OSError(28, "No space left on device", str(folder / "flow_x_00001.jpg"))
        return real_write(folder, t0, flows, *a)

    monkeypatch.setattr(pl, "write_flows", disk_full)
    out2 = tmp_path / "out2"
    r = flow_tree(tree, out2, PARAMS, batch=3, quiet=True)
    assert [p.name for p, _ in r.failed] == ["v7.mp4"] and "No space" in r.failed[0][1]
    assert len(r.done) == len(VIDEOS) - 1 and not list(out2.rglob(".*"))
    monkeypatch.undo()
    r = flow_tree(tree, out2, PARAMS, batch=3, quiet=True)  # resume: only v7 is left
    assert len(r.done) == 1 and len(r.skipped) == len(VIDEOS) - 1
    assert_same(out2, sequential["jpg"])


def test_a_solver_error_names_the_video(tree, tmp_path, monkeypatch):
    real = pl.tvl1

    def fails_on_big(a, b, params):
        if a.shape[-1] == 40:
            raise RuntimeError("CUDA error: out of memory")
        return real(a, b, params)

    monkeypatch.setattr(pl, "tvl1", fails_on_big)
    r = flow_tree(tree, tmp_path / "o", PARAMS, batch=4, quiet=True)
    assert sorted(p.name for p, _ in r.failed) == ["v7.mp4", "x5.mp4"]
    assert all(str(p) in m and "out of memory" in m for p, m in r.failed)
    assert len(r.done) == 3 and not list((tmp_path / "o").rglob(".*"))


def test_cli_shards_and_kill_resume(tree, sequential, tmp_path):
    from test_jobs import _run_and_kill

    out = tmp_path / "s"
    args = ["flow", str(tree), str(out), "--batch", "3", "--preset", "fast", "-q"]
    for i in (1, 0):
        assert main([*args, "--shard", f"{i}/2"]) == 0
        done = sorted(p.parent.relative_to(out).as_posix() for p in out.rglob("meta.json"))
        assert done == (["a/v5", "b/w6"] if i == 1 else ["a/v4", "a/v5", "b/v7", "b/w6", "c/x5"])
    killed = tmp_path / "k"
    cmd = [sys.executable, "-m", "mvaccel", *args[:2], str(killed), *args[3:]]
    # killed while writing its first video (again after 2 if the first try ended by itself)
    assert _run_and_kill(cmd, killed, 0) or _run_and_kill(cmd, killed, 2)
    assert len([m for m in killed.rglob("meta.json") if ".tmp-" not in str(m)]) < len(VIDEOS)
    assert main([*args[:2], str(killed), *args[3:]]) == 0
    assert not list(killed.rglob(".*"))
    assert_same(killed, out)
    # the same files as the sequential path
    seq = tmp_path / "seq"
    assert main([*args[:2], str(seq), *args[3:], "--sequential"]) == 0
    assert_same(out, seq)


def test_bad_pipeline_arguments(tree, tmp_path):
    with pytest.raises(ValueError, match="decoders"):
        flow_tree(tree, tmp_path / "o", PARAMS, decoders=0)


def test_a_broken_solver_thread_stops_the_job_without_hanging(tree, tmp_path, monkeypatch):
    def bug(self, pieces):
        raise KeyError("bug in the solver loop")

    monkeypatch.setattr(pl.FlowPipeline, "_solve", bug)
    out = tmp_path / "o"
    with pytest.raises(RuntimeError, match="flow pipeline failed: 'bug in the solver loop'"):
        flow_tree(tree, out, PARAMS, batch=2, quiet=True)
    assert not list(out.rglob("meta.json")) and not list(out.rglob(".*")), "outputs or temps left"
