"""Long jobs: the atomic writer, the shard parser, ``mvaccel mv`` over a tree, sharded and
interrupted ``prepare`` / ``flow`` runs, checked re-encodes, one-line CLI errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import videogen as vg

from mvaccel import video
from mvaccel._io import (
    atomic_path,
    atomic_write_text,
    clean_stale_temps,
    find_videos,
    parse_shard,
    run_jobs,
    shard_items,
    temp_path,
)
from mvaccel.cli import main
from mvaccel.data.synthetic import SyntheticSpec, write_synthetic_dataset
from mvaccel.flow import read_flo

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")


# ---- the atomic writer ----


def test_atomic_path_file_and_folder(tmp_path):
    dest = tmp_path / "sub" / "a.txt"
    with pytest.raises(RuntimeError, match="boom"), atomic_path(dest) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert list((tmp_path / "sub").iterdir()) == []  # nothing, not even the temporary
    atomic_write_text(dest, "whole")
    assert dest.read_text() == "whole"
    folder = tmp_path / "d"
    for text in ("one", "two"):  # an existing folder is replaced whole
        with atomic_path(folder, folder=True) as tmp:
            assert tmp.is_dir() and tmp.name.startswith(".")
            (tmp / "x").write_text(text)
    assert [p.name for p in tmp_path.iterdir() if p.name != "sub"] == ["d"]
    assert (folder / "x").read_text() == "two"
    t = temp_path(tmp_path / "v.mp4")
    assert t.name.startswith(".v.mp4.tmp-") and t.suffix == ".mp4" and t != temp_path(t)


def test_clean_stale_temps_removes_only_dead_writers(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live = temp_path(tmp_path / "live.npz")  # this process: running
    live.write_bytes(b"x")
    stale = Path(str(temp_path(tmp_path / "v")).replace(f"-{os.getpid()}-", f"-{dead.pid}-"))
    stale.mkdir()
    (stale / "flow_x_00001.jpg").write_bytes(b"x")
    other = tmp_path / ".foreign.tmp-deadbeef-1-abcdef"  # another host's, recent: kept
    other.write_bytes(b"x")
    keep = tmp_path / ".hidden_but_mine"
    keep.write_bytes(b"x")
    assert clean_stale_temps(tmp_path) == 1
    assert not stale.exists() and live.exists() and other.exists() and keep.exists()
    old = time.time() - 2 * 24 * 3600
    os.utime(other, (old, old))
    assert clean_stale_temps(tmp_path) == 1 and not other.exists()


# ---- shards ----


def test_parse_shard_sources_and_semantics():
    assert parse_shard("1/4", env={"RANK": "3", "WORLD_SIZE": "8"}) == (1, 4)
    assert parse_shard(None, env={}) == (0, 1)
    assert parse_shard("auto", env={"RANK": "3", "WORLD_SIZE": "8"}) == (3, 8)
    array = {"SLURM_ARRAY_TASK_ID": "6", "SLURM_ARRAY_TASK_MIN": "5",
             "SLURM_ARRAY_TASK_COUNT": "3", "SLURM_PROCID": "0", "SLURM_NTASKS": "1"}  # fmt: skip
    assert parse_shard(None, env=array) == (1, 3)
    assert parse_shard(None, env={"SLURM_PROCID": "2", "SLURM_NTASKS": "4"}) == (2, 4)
    for bad, match in (("3", "i/n"), ("2/2", "0 <= i < n"), ("-1/2", "0 <= i < n")):
        with pytest.raises(ValueError, match=match):
            parse_shard(bad, env={})
    with pytest.raises(ValueError, match="RANK"):
        parse_shard(None, env={"RANK": "x", "WORLD_SIZE": "2"})
    items = list(range(10))
    for n in (1, 2, 3, 7):
        parts = [shard_items(items, (i, n)) for i in range(n)]
        assert sorted(sum(parts, [])) == items


# ---- mvaccel mv over a tree ----


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("mvtree")
    for i, (rel, args) in enumerate(
        (("a/p.mp4", vg.X264_P), ("a/b.mp4", vg.X264_B), ("c/m.avi", vg.MPEG4))
    ):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        vg.encode(vg.texture(48, 64, 10, 1.0, 0.0, seed=i), root / rel, args)
    (root / "a" / "notes.txt").write_text("not a video")
    (root / "a" / ".x.mp4.tmp-00000000-1-abcdef.mp4").write_bytes(b"partial")  # killed run's
    return root


def test_mv_tree_cli_resume_shards_and_layout(tree, tmp_path, capsys):
    out = tmp_path / "mv"
    assert main(["mv", str(tree), "--out", str(out), "--shard", "1/2"]) == 0
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.npz")) == ["a/p.npz"]
    assert main(["mv", str(tree), "--out", str(out), "--residual", "--shard", "1/2"]) == 0
    assert "0 done, 1 already done" in capsys.readouterr().err
    assert main(["mv", str(tree), "--out", str(out), "--shard", "0/2", "--workers", "2"]) == 0
    got = sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))
    assert got == ["a", "a/b.npz", "a/p.npz", "c", "c/m.npz"]
    for rel in ("a/b", "c/m"):
        clip = video.load_motion(out / f"{rel}.npz")
        ref = video.read_motion(tree / f"{rel}{'.avi' if rel == 'c/m' else '.mp4'}")
        assert np.array_equal(clip.mv.numpy(), ref.mv.numpy())
        assert np.array_equal(clip.frame_type.numpy(), ref.frame_type.numpy())
        assert clip.block == 8 and clip.size == (48, 64)
        meta = json.loads(str(np.load(out / f"{rel}.npz")["meta"][()]))
        assert meta["backend"] in ("native", "pyav") and meta["versions"]
        assert meta["source"].endswith(rel + (".avi" if rel == "c/m" else ".mp4"))
    # a broken video fails alone, is named, and leaves nothing
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.mp4").write_bytes(b"\0" * 500)
    (bad / "y.mp4").write_bytes((tree / "a" / "p.mp4").read_bytes())
    assert main(["mv", str(bad), "--out", str(tmp_path / "o2")]) == 1
    assert "x.mp4" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "o2").iterdir()] == ["y.npz"]
    assert main(["mv", str(tree)]) == 1  # a folder needs --out
    assert "--out" in capsys.readouterr().err


def test_load_motion_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        video.load_motion(tmp_path / "none.npz")
    (tmp_path / "t.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ValueError, match="t.npz"):
        video.load_motion(tmp_path / "t.npz")


def test_motion_file_round_trip(tree, tmp_path):
    """The one writer (``MotionClip.save``) and the one reader (``load_motion``) agree on every
    field; files without ``meta`` (``clip.save(path)``) still load."""
    import torch

    clip = video.read_motion(tree / "a" / "b.mp4", residual=True)
    p = clip.save(tmp_path / "x" / "c.npz", {"source": "v.mp4", "options": {"block": 8}})
    back = video.load_motion(p)
    for f in ("mv", "mask", "frame_type", "pts", "gop_index", "frame_index", "residual",
              "corrupt"):  # fmt: skip
        assert torch.equal(getattr(back, f), getattr(clip, f)), f
    assert (back.block, back.size, back.fps, back.time_base) == (
        clip.block, clip.size, clip.fps, clip.time_base)  # fmt: skip
    assert (back.backend, back.ffmpeg, back.path) == (clip.backend, clip.ffmpeg, "v.mp4")
    assert back.backend in ("native", "pyav") and back.ffmpeg.startswith("libavcodec")
    assert video.load_motion(p, residual=False).residual is None
    plain = clip.save(tmp_path / "plain.npz")
    assert "meta" not in np.load(plain).files
    assert torch.equal(video.load_motion(plain).mv, clip.mv)


def test_load_motion_checks_options_and_frames(tree, tmp_path):
    out = tmp_path / "part.npz"
    video.extract_motion(tree / "a" / "p.mp4", out, frames=[0, 1, 2], accumulate=True)
    with pytest.raises(ValueError, match=r"part\.npz was written with \{'accumulate': True\}"):
        video.load_motion(out, options={"block": 8, "accumulate": False})
    with pytest.raises(ValueError, match=r"part\.npz .*'block': 8\}.*wants \{'block': 16\}"):
        video.load_motion(out, options={"block": 16})
    with pytest.raises(ValueError, match=r"part\.npz holds only some frames"):
        video.load_motion(out, whole=True)
    clip = video.load_motion(out, options={"block": 8, "accumulate": True, "b_list": 0})
    assert len(clip) == 3 and clip.frame_index.tolist() == [0, 1, 2]
    np.savez(tmp_path / "bare.npz", mv=np.zeros((2, 2, 1, 1), np.float32))
    with pytest.raises(ValueError, match=r"bare\.npz lacks \['mask'"):
        video.load_motion(tmp_path / "bare.npz")


def test_resolve_backend_is_read_motions_choice(tree, monkeypatch):
    import warnings

    from mvaccel.video import core

    with pytest.raises(ValueError, match="backend"):
        video.extract.resolve_backend("gpu")
    got = video.extract.resolve_backend("pyav")
    assert got["backend"] == "pyav" and got["versions"]["libavcodec"]

    def missing():
        raise ImportError("mvaccel._video not built")

    monkeypatch.setattr(core, "_native", missing)
    monkeypatch.setattr(core, "_FALLBACK_WARNED", False)
    with pytest.warns(RuntimeWarning, match="falls back to PyAV"):
        assert video.extract.resolve_backend("auto")["backend"] == "pyav"
    with pytest.raises(ImportError, match="not built"):
        video.extract.resolve_backend("native")
    with warnings.catch_warnings():  # once per process, shared with read_motion
        warnings.simplefilter("error")
        assert video.extract.resolve_backend("auto")["backend"] == "pyav"
        assert video.read_motion(tree / "a" / "p.mp4").backend == "pyav"


# ---- prepare: shards in any order, checked re-encodes ----


@pytest.fixture(scope="module")
def ucf(tmp_path_factory):
    spec = SyntheticSpec(classes=("MoveUp", "ZoomOut"), train_per_class=2, test_per_class=1,
                         frames=6, height=32, width=48)  # fmt: skip
    return write_synthetic_dataset(tmp_path_factory.mktemp("ucf"), spec)


def prepare_args(src, out, *extra):
    return ["prepare", "ucf101", str(src), str(out), "--size", "48x32", "--workers", "1",
            "--flow-preset", "tvnet", *extra]  # fmt: skip


def assert_complete(src, out):
    sources = sorted(p.relative_to(src).with_suffix("") for p in find_videos(src))
    assert len(sources) == 6
    for rel in sources:
        info = video.probe(out / "videos" / rel.with_suffix(".mp4"))
        assert info.num_frames == 6, rel
        flow = out / "flow" / rel
        assert len(list(flow.glob("flow_x_*.jpg"))) == 5, rel
        assert json.loads((flow / "meta.json").read_text())["direction"] == "backward"
    assert not [p for p in out.rglob(".*")], "temporaries left"


@pytest.mark.parametrize("n,order", [(2, (1, 0)), (3, (2, 0, 1)), (3, (1, 2, 0))])
def test_sharded_prepare_is_complete_in_any_order(ucf, tmp_path, n, order):
    out = tmp_path / "out"
    for i in order:
        assert main(prepare_args(ucf, out, "--shard", f"{i}/{n}", "-q")) == 0
    assert_complete(ucf, out)


def test_truncated_reencode_is_never_kept(ucf, tmp_path, monkeypatch):
    import mvaccel.video.encode as enc

    real = subprocess.run

    def disk_full(cmd, *a, **k):  # ffmpeg exits 0 but the file is cut short
        p = real(cmd, *a, **k)
        if cmd[0].endswith("ffmpeg"):
            out = Path(cmd[-1])
            out.write_bytes(out.read_bytes()[: out.stat().st_size // 3])
        return p

    monkeypatch.setattr(enc.subprocess, "run", disk_full)
    src = find_videos(ucf)[0]
    with pytest.raises(RuntimeError, match="disk full"):
        video.reencode(src, tmp_path / "v.mp4", size=(48, 32))
    assert list(tmp_path.iterdir()) == []
    out = tmp_path / "out"
    assert main(prepare_args(ucf, out, "--flow-preset", "none", "-q")) == 1
    assert not list((out / "videos").rglob("*.mp4"))
    monkeypatch.undo()  # the disk has room again: the rerun completes
    assert main(prepare_args(ucf, out, "-q")) == 0
    assert_complete(ucf, out)


# ---- kill and resume ----


def _run_and_kill(cmd, out: Path, after: int) -> bool:
    """Start ``cmd``; SIGKILL its process group once ``after`` outputs are done and a
    temporary is being written (or when it ends by itself)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    p = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + 60
    while p.poll() is None and time.time() < deadline:
        try:  # the job renames its temporaries while this walks the tree
            names = [q.name for q in out.rglob("*")] if out.exists() else []
        except FileNotFoundError:
            continue
        if names:
            done = sum(n.endswith((".npz", ".mp4", "meta.json")) and not n.startswith(".")
                       for n in names)  # fmt: skip
            if done >= after and any(".tmp-" in n for n in names):
                break
        time.sleep(0.005)
    killed = p.poll() is None
    if killed:
        os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    return killed


def test_kill_and_resume_flow_and_prepare(ucf, tmp_path):
    cli = [sys.executable, "-m", "mvaccel"]
    out = tmp_path / "flow"
    kills = [_run_and_kill([*cli, "flow", str(ucf), str(out), "--preset", "tvnet", "--format",
                            "flo"], out, after) for after in (0, 2)]  # fmt: skip
    assert any(kills)
    assert main(["flow", str(ucf), str(out), "--preset", "tvnet", "--format", "flo", "-q"]) == 0
    folders = sorted(p.relative_to(out).as_posix() for p in out.glob("*/*"))
    assert len(folders) == 6 and not [p for p in out.rglob(".*")]
    for d in out.glob("*/*"):
        assert [read_flo(f).shape for f in sorted(d.glob("*.flo"))] == [(2, 32, 48)] * 5
    prep = tmp_path / "prep"
    assert any([_run_and_kill([*cli, *prepare_args(ucf, prep)], prep, a) for a in (0, 3)])
    assert main(prepare_args(ucf, prep, "-q")) == 0
    assert_complete(ucf, prep)


# ---- the CLI's errors ----


def test_cli_errors_are_one_line_naming_the_file(tmp_path, capsys):
    out = tmp_path / "taken"
    out.write_text("a file where the output folder should be")
    src = tmp_path / "v"
    src.mkdir()
    vg.encode(vg.texture(32, 48, 4, 1.0, 0.0), src / "a.mp4", vg.MPEG4)
    args = ["mv", str(src / "a.mp4"), "--out", str(out / "a.npz")]  # OSError: not a folder
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and str(out) in err.splitlines()[0]
    assert err.splitlines()[0].startswith("mvaccel mv: error: ")
    assert main(["-v", *args]) == 1
    assert "Traceback" in capsys.readouterr().err
    assert main([*args, "-v"]) == 1  # after the command too
    assert "Traceback" in capsys.readouterr().err
    # in a tree, a failing video is one line naming it, and the run's exit code is 1
    assert main(["mv", str(src), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "a.mp4" in err and str(out) in err


# ---- recipes by name, installed as package data ----


def test_recipes_by_name_from_anywhere(tmp_path, monkeypatch):
    from fnmatch import fnmatch

    from mvaccel.train.cli import recipe_names, recipe_path, recipes_dir

    monkeypatch.chdir(tmp_path)  # outside the source tree
    assert "dmc_net" in recipe_names() and len(recipe_names()) >= 20
    assert recipe_path("dmc_net") == recipes_dir() / "dmc_net.yaml"
    assert recipe_path("recipes/dmc_net.yaml") == recipes_dir() / "dmc_net.yaml"
    mine = tmp_path / "mine.yaml"
    mine.write_text("trainer: {}\n")
    assert recipe_path(str(mine)) == mine
    with pytest.raises(FileNotFoundError, match="recipes: .*dmc_net"):
        recipe_path("recipes/nope.yaml")
    # the wheel carries them: package data of mvaccel
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    globs = cfg["package-data"]["mvaccel"]
    for p in recipes_dir().glob("*.yaml"):
        assert any(fnmatch(p.relative_to(REPO / "mvaccel").as_posix(), g) for g in globs)


def test_train_errors_name_the_command(tmp_path, capsys):
    assert main(["train", "--config", "nope"]) == 1
    assert "no such file, and not a recipe name" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # LightningCLI's own usage error
        main(["train", "--config", "mv_cnn_scratch", "--bogus", "1"])
    err = capsys.readouterr().err
    assert "mvaccel train fit --help" in err and "mvaccel fit" not in err


def test_fuse_weights_must_match_the_files(tmp_path, capsys):
    from mvaccel.train.evaluate import save_scores

    rng = np.random.default_rng(0)
    paths = []
    for name in ("rgb", "mv"):
        r = {
            "scores": rng.normal(size=(4, 3)),
            "labels": np.array([0, 1, 2, 0]),
            "videos": np.array(["a", "b", "c", "d"]),
            "classes": np.array(["x", "y", "z"]),
        }
        paths.append(str(save_scores(tmp_path / f"{name}.npz", r)))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert main(["fuse", *paths, "--weights", "1"]) == 1
    err = capsys.readouterr().err
    assert "2 score files but 1 weight" in err and "zip()" not in err
    assert main(["fuse", *paths, "--weights", "1", "2"]) == 0
    assert "| fused | 1 : 2 |" in capsys.readouterr().out


def test_redirected_logs_get_no_progress_bar(tree, tmp_path, capsys):
    assert main(["mv", str(tree), "--out", str(tmp_path / "a")]) == 0
    err = capsys.readouterr().err
    assert "%|" not in err and "\r" not in err  # stderr is not a terminal here
    assert "mvaccel mv: shard 0/1: 3 done" in err
    assert main(["-q", "mv", str(tree), "--out", str(tmp_path / "b")]) == 0
    assert capsys.readouterr().err == ""


def test_run_jobs_stops_queued_items_on_an_interrupt(tmp_path):
    """Ctrl-C (or any error that stops the job) with several workers: the queued items are
    dropped, not run to the end before the interrupt surfaces."""
    started = []

    def work(src: Path, out: Path) -> None:
        started.append(src)
        if src.name == "v000":
            raise KeyboardInterrupt
        time.sleep(0.05)
        out.write_text("x")

    pairs = [(tmp_path / f"v{i:03d}", tmp_path / "out" / f"v{i:03d}") for i in range(40)]
    (tmp_path / "out").mkdir()
    with pytest.raises(KeyboardInterrupt):
        run_jobs(pairs, work, workers=2, quiet=True)
    assert len(started) < 10
