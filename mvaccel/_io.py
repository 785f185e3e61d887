"""Plumbing shared by the long jobs (``flow``, ``mv``, ``prepare``, datasets, scores).

One way to do each thing:

- **atomic outputs**: :func:`atomic_path` writes a file or a folder under a hidden temporary
  name in the same folder (``.NAME.tmp-HOST-PID-RANDOM[.ext]``), fsyncs it and renames it into
  place with :func:`os.replace`; on an error the temporary is removed. A killed process leaves
  only such hidden names, which every listing of the package skips (:func:`is_hidden`) and the
  next run removes (:func:`clean_stale_temps`). A file under its final name is always whole.
- **shards**: :func:`parse_shard` gives ``(index, count)`` from ``--shard i/n``, torchrun's
  ``RANK`` / ``WORLD_SIZE``, or SLURM's array / process variables. A job sorts its *source* items
  and shard ``i`` of ``n`` takes ``items[i::n]`` (:func:`shard_items`), so any set of shard
  runs, in any order or at the same time, covers every item exactly once.
- **logging and progress**: messages go through :mod:`logging` (logger ``"mvaccel"``); the CLI's
  ``-v`` / ``-q`` set the level (:func:`setup_logging`). Progress bars are :func:`progress`
  (tqdm on stderr, shown only on a terminal and not with ``-q``), so redirected logs stay clean.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import secrets
import shutil
import socket
import sys
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

log = logging.getLogger("mvaccel")

T = TypeVar("T")

_TMP = ".tmp-"
#: A stale temporary of another host is removed only when older than this (seconds).
FOREIGN_TMP_AGE = 24 * 3600.0


def _host_id() -> str:
    return f"{zlib.crc32(socket.gethostname().encode()) & 0xFFFFFFFF:08x}"


def temp_path(path: str | os.PathLike) -> Path:
    """A fresh hidden temporary name beside ``path`` (same folder, so the rename is atomic).

    ``dir/name.ext`` -> ``dir/.name.ext.tmp-HOST-PID-RANDOM.ext``: hidden (leading dot), unique
    per process and call, and it keeps the extension so tools that pick a format from the
    name (ffmpeg, PIL, ``np.savez``) still do.
    """
    path = Path(path)
    return path.with_name(
        f".{path.name}{_TMP}{_host_id()}-{os.getpid()}-{secrets.token_hex(3)}{path.suffix}"
    )


def is_hidden(path: str | os.PathLike) -> bool:
    """True for names the package never lists as data: dot-names (temporaries included)."""
    return Path(path).name.startswith(".")


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every file system lets a folder be opened
        _fsync_file(folder)


def _fsync_tree(path: Path) -> None:
    """Flush a file, or every file of a folder, to the disk.

    A folder's files are fsynced in parallel, which lets the disk batch them (a video's few
    hundred flow JPEGs would otherwise wait for one journal commit each).
    """
    if path.is_file():
        _fsync_file(path)
        return
    files = [p for p in path.rglob("*") if p.is_file()]
    if len(files) <= 4:
        for f in files:
            _fsync_file(f)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(min(32, len(files))) as pool:
        list(pool.map(_fsync_file, files))
    for d in {f.parent for f in files}:
        _fsync_dir(d)


def _in_temp_folder(path: Path) -> bool:
    return any(part.startswith(".") and _TMP in part for part in path.parent.parts)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, folder: bool = False) -> Iterator[Path]:
    """Write ``path`` atomically: yields a hidden temporary to write, renamed on success.

    Example::

        with atomic_path("out/clip.npz") as tmp:
            np.savez(tmp, **arrays)

    Args:
        path: the final file (or folder, with ``folder=True``); its parent is created.
        folder: yield a fresh empty temporary folder instead of a file name. An existing
            folder at ``path`` is replaced (moved aside, then removed).

    Yields:
        The temporary path (not created for a file; created empty for a folder). Inside a
        folder that is itself being written by ``atomic_path(..., folder=True)``, a file is
        written in place (the folder is fsynced and renamed as a whole).

    Raises:
        Whatever the body raises; the temporary is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not folder and _in_temp_folder(path):
        # inside a folder that is itself being written atomically: that folder is fsynced and
        # renamed as a whole, so a plain write is enough (and saves an fsync per file)
        try:
            yield path
        except BaseException:
            _remove(path)
            raise
        return
    tmp = temp_path(path)
    if folder:
        tmp.mkdir()
    try:
        yield tmp
        if not (tmp.exists() or tmp.is_symlink()):
            raise FileNotFoundError(f"atomic_path: nothing was written for {path}")
        _fsync_tree(tmp)
        if folder and path.exists():
            old = temp_path(path)
            os.replace(path, old)
            os.replace(tmp, path)
            _remove(old)
        else:
            os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        _remove(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`); returns ``path``."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_path`)."""
    return atomic_write_bytes(path, text.encode())


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stale(path: Path, now: float) -> bool:
    tail = path.name.split(_TMP)[-1].split(".")[0]
    parts = tail.split("-")
    if len(parts) < 3 or not parts[1].isdigit():
        return False
    host, pid = parts[0], int(parts[1])
    try:
        old = now - path.lstat().st_mtime > FOREIGN_TMP_AGE
    except FileNotFoundError:
        return False
    if host == _host_id():
        return old or not _pid_alive(pid)  # old: the PID was reused by another process
    return old


def clean_stale_temps(root: str | os.PathLike, recursive: bool = True) -> int:
    """Remove the temporaries of :func:`atomic_path` that killed processes left under ``root``.

    A temporary is stale when its process (same host) is gone, or when it was last modified
    more than :data:`FOREIGN_TMP_AGE` ago (another host's temporary on a shared file system,
    or a reused PID). Recent temporaries of running processes are left alone.

    Returns:
        How many were removed.
    """
    root = Path(root)
    if not root.is_dir():
        return 0
    now, removed = time.time(), 0
    for cur, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            if name.startswith(".") and _TMP in name and _stale(Path(cur) / name, now):
                _remove(Path(cur) / name)
                removed += 1
        dirs[:] = [d for d in dirs if not d.startswith(".")] if recursive else []
    if removed:
        log.info("removed %d stale temporary file(s) of killed runs under %s", removed, root)
    return removed


# ---- shards ----


def parse_shard(spec: str | None = None, env: Mapping[str, str] | None = None) -> tuple[int, int]:
    """This process's shard ``(index, count)``, ``0 <= index < count``.

    The first of these that is set wins:

    1. ``spec`` ``"i/n"`` (the CLI's ``--shard``); ``None`` or ``"auto"`` reads the environment:
    2. torchrun: ``RANK`` / ``WORLD_SIZE``;
    3. a SLURM job array: ``SLURM_ARRAY_TASK_ID`` (minus ``SLURM_ARRAY_TASK_MIN``) /
       ``SLURM_ARRAY_TASK_COUNT``;
    4. SLURM tasks (``srun``): ``SLURM_PROCID`` / ``SLURM_NTASKS``;
    5. otherwise ``(0, 1)``: everything.

    Shard ``i`` of ``n`` takes items ``i, i + n, i + 2n ...`` of the job's sorted *source* list
    (:func:`shard_items`): the union of all shards is every item, whatever order they run in.

    Raises:
        ValueError: a malformed spec or variables, or not ``0 <= i < n``.
    """
    env = os.environ if env is None else env
    if spec is not None and spec != "auto":
        try:
            i, n = (int(v) for v in str(spec).split("/"))
        except ValueError:
            raise ValueError(f"--shard must look like i/n (e.g. 0/4), got {spec!r}") from None
        where = f"--shard {spec}"
    else:
        i, n, where = 0, 1, "no shard"
        for a, b in (
            ("RANK", "WORLD_SIZE"),
            ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT"),
            ("SLURM_PROCID", "SLURM_NTASKS"),
        ):
            if a in env and b in env:
                try:
                    i, n = int(env[a]), int(env[b])
                    if a == "SLURM_ARRAY_TASK_ID":
                        i -= int(env.get("SLURM_ARRAY_TASK_MIN", 0))
                except ValueError:
                    raise ValueError(f"{a}={env[a]!r} / {b}={env[b]!r} are not integers") from None
                where = f"{a}/{b}={env[a]}/{env[b]}"
                break
    if not 0 <= i < n:
        raise ValueError(f"{where}: the shard index must satisfy 0 <= i < n, got {i}/{n}")
    return i, n


def shard_items(items: Sequence[T], shard: tuple[int, int]) -> list[T]:
    """Shard ``(i, n)`` of ``items``: ``items[i::n]``.

    ``items`` must be in the same order for every shard: sort the source list, never a
    listing of outputs (which changes as shards finish).
    """
    i, n = shard
    return list(items[i::n])


# ---- logging and progress ----


def setup_logging(verbosity: int = 0) -> None:
    """Configure the ``mvaccel`` logger for the CLI: one line per message on stderr.

    Args:
        verbosity: ``0`` INFO (summaries), ``1`` or more DEBUG (``-v``), ``-1`` or less WARNING
            only (``-q``, also hides progress bars).
    """
    level = logging.DEBUG if verbosity > 0 else logging.INFO if verbosity == 0 else logging.WARNING
    log.setLevel(level)
    for h in list(log.handlers):
        if getattr(h, "_mvaccel", False):
            log.removeHandler(h)
    h = logging.StreamHandler(sys.stderr)
    h.setFormatter(logging.Formatter("%(message)s"))
    h._mvaccel = True  # type: ignore[attr-defined]
    log.addHandler(h)


def progress(items: Iterable[T], quiet: bool = False, **kwargs) -> Iterable[T]:
    """A tqdm progress bar over ``items`` on stderr (the package's one progress convention).

    Shown only when stderr is a terminal, and neither ``quiet`` nor the CLI's ``-q`` (the
    ``mvaccel`` logger above INFO) asks otherwise: redirected logs get no bar.
    """
    from tqdm import tqdm

    off = quiet or log.level > logging.INFO  # the CLI's -q (unset in library use)
    return tqdm(items, disable=True if off else None, file=sys.stderr, **kwargs)


# ---- dataset jobs: sources, resume, shards, progress ----

#: What the dataset jobs (``flow``, ``mv``, ``prepare``) take as videos.
VIDEO_SUFFIXES = (".avi", ".mp4", ".mkv", ".mov", ".webm", ".mpg", ".mpeg", ".m4v", ".flv", ".3gp")


def find_videos(
    src: str | os.PathLike,
    suffixes: Sequence[str] = VIDEO_SUFFIXES,
    *,
    folders: Callable[[Path], bool] | None = None,
) -> list[Path]:
    """Every video under ``src`` (recursively, sorted, hidden names skipped; a file: itself).

    Args:
        src: a folder or one file.
        suffixes: the video suffixes (lower case, with the dot).
        folders: a test for sub-folders that are sources of their own (folders of frames):
            those are listed in place of their contents and not searched.

    Raises:
        FileNotFoundError: ``src`` does not exist.
    """
    src = Path(src)
    if not src.exists():
        raise FileNotFoundError(f"{src}: no such file or folder")
    if src.is_file():
        return [src]
    found = []
    for cur, dirs, files in os.walk(src, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        if folders is not None:
            whole = [d for d in dirs if folders(Path(cur) / d)]
            found += [Path(cur) / d for d in whole]
            dirs[:] = [d for d in dirs if d not in whole]
        found += [Path(cur) / f for f in files if not f.startswith(".")
                  and Path(f).suffix.lower() in suffixes]  # fmt: skip
    return sorted(found)


@dataclass
class JobReport:
    """What one run of a dataset job did (its shard only).

    Attributes:
        shard: ``(index, count)``.
        done: outputs written by this run.
        skipped: outputs already present (resumed).
        failed: ``(source, message)`` of the items that raised; their outputs were not written.
        seconds: wall time.
    """

    shard: tuple[int, int]
    done: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """No item failed."""
        return not self.failed


#: Errors of one item that a dataset job records and moves past (anything else stops it).
ITEM_ERRORS = (OSError, ValueError, RuntimeError, EOFError)


def run_jobs(
    pairs: Sequence[tuple[Path, Path]],
    work: Callable[[Path, Path], object],
    *,
    shard: tuple[int, int] = (0, 1),
    overwrite: bool = False,
    quiet: bool = False,
    workers: int = 1,
    what: str = "job",
    unit: str = "video",
) -> JobReport:
    """The loop of every dataset job: shard, resume, progress, per-item errors.

    Args:
        pairs: ``(source, output)`` for the *whole* job, in the same order for every shard
            (sorted sources). An output that exists is complete (outputs are written with
            :func:`atomic_path`) and is skipped unless ``overwrite``.
        work: ``work(source, output)`` writes ``output`` atomically.
        shard: this process's ``(index, count)`` (:func:`parse_shard`).
        overwrite: redo existing outputs.
        quiet: no progress bar.
        workers: items run at the same time (threads; ``work`` should release the GIL, e.g.
            run a subprocess).
        what: name in the log lines (``"mvaccel flow"``).
        unit: progress unit.

    Returns:
        A :class:`JobReport`; the errors of :data:`ITEM_ERRORS` are logged and collected there
        (the other items go on), anything else stops the job.
    """
    report = JobReport(shard=shard)
    t0 = time.perf_counter()
    for r in sorted({out.parent for _, out in pairs}):
        clean_stale_temps(r, recursive=False)
    todo = []
    for src, out in shard_items(pairs, shard):
        if (out.exists() or out.is_symlink()) and not overwrite:
            report.skipped.append(out)
        else:
            todo.append((src, out))

    def attempt(pair: tuple[Path, Path]) -> tuple[tuple[Path, Path], str | None]:
        try:
            work(*pair)
        except ITEM_ERRORS as e:
            log.debug("%s: %s", pair[0], e, exc_info=True)
            return pair, describe_os_error(e) if isinstance(e, OSError) else str(e)
        return pair, None

    def results():
        if workers <= 1:
            yield from map(attempt, todo)
            return
        from concurrent.futures import ThreadPoolExecutor, as_completed

        pool = ThreadPoolExecutor(workers)
        try:
            for fut in as_completed([pool.submit(attempt, p) for p in todo]):
                yield fut.result()
        finally:  # an interrupt or a stopping error: drop the queued items, finish the running
            pool.shutdown(wait=True, cancel_futures=True)

    for (src, out), msg in progress(results(), quiet, total=len(todo), unit=unit, desc=what):
        if msg is None:
            report.done.append(out)
        else:
            log.error("%s: failed on %s: %s", what, src, msg)
            report.failed.append((src, msg))
    report.seconds = time.perf_counter() - t0
    i, n = shard
    log.info(
        "%s: shard %d/%d: %d done, %d already done, %d failed in %.1f s",
        what, i, n, len(report.done), len(report.skipped), len(report.failed), report.seconds,
    )  # fmt: skip
    return report


def describe_os_error(e: OSError) -> str:
    """``OSError`` -> one line naming the file: ``"path: No space left on device"``."""
    what = e.strerror or (errno.errorcode.get(e.errno or 0) if e.errno else None) or str(e)
    names = [str(f) for f in (e.filename, e.filename2) if f is not None]
    return f"{' -> '.join(names)}: {what}" if names else str(e)


__all__ = [
    "VIDEO_SUFFIXES",
    "JobReport",
    "find_videos",
    "run_jobs",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "clean_stale_temps",
    "describe_os_error",
    "is_hidden",
    "parse_shard",
    "progress",
    "setup_logging",
    "shard_items",
    "temp_path",
]
