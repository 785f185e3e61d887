"""Dataset-scale TV-L1: decoding, solving and writing overlapped (``mvaccel flow`` on a tree).

:func:`mvaccel.flow.flow_tree` runs every video through one :class:`FlowPipeline`:

- **decoders**: the job's worker threads (:func:`mvaccel._io.run_jobs`) decode videos
  (:func:`~mvaccel.flow.video.iter_frames`, PyAV releases the GIL) into segments of at most
  ``batch`` consecutive pairs, put on a bounded queue;
- **solver**: one thread groups the pairs of *all* videos by frame size and runs one
  :func:`~mvaccel.flow.tvl1` call per ``batch`` pairs (a video can span batches, a batch can
  hold many videos); a partial batch runs only when no decoder has anything left to give.
  On CUDA the frames are staged in pinned host memory and copied, solved and copied back on a
  dedicated stream with non-blocking copies; on CPU the same code runs on plain tensors;
- **writers**: a thread pool encodes and writes the flows
  (:func:`~mvaccel.flow.video.write_flows`) into each video's hidden temporary folder.

A video's folder is renamed into place (:func:`mvaccel._io.atomic_path`) only once all its
pairs are written; the job thread that decoded it waits for that, so resume, shards, progress
and the per-video error report of :func:`~mvaccel._io.run_jobs` are the sequential path's.
TV-L1 solves each pair of a batch independently, so the files are byte for byte those of
:func:`~mvaccel.flow.write_video_flow` (tested).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import defaultdict, deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .._io import ITEM_ERRORS, atomic_path
from .params import TVL1Params
from .tvl1 import tvl1
from .video import PreviewPick, finish_flow_folder, iter_frames, write_flows

log = logging.getLogger(__name__)

_STOP = object()


class _Video:
    """One video in flight: its temporary folder and how many of its pairs are settled."""

    def __init__(self, src: Path, dest: Path, preview: bool = False) -> None:
        self.src, self.dest = src, dest
        self.preview = PreviewPick() if preview else None
        self.lock = threading.Lock()
        self.queued = 0  # pairs handed to the solver
        self.settled = 0  # pairs written, or dropped after an error
        self.decoded = False
        self.closing = False
        self.error: BaseException | None = None
        self.done = threading.Event()
        self.parts: dict[int, np.ndarray] = {}
        self._cm = atomic_path(dest, folder=True)
        self.tmp: Path = self._cm.__enter__()

    def close(self) -> None:
        """Rename the folder into place, or remove the temporary after an error."""
        if self.error is None:
            self._cm.__exit__(None, None, None)
        else:
            e = self.error
            self._cm.__exit__(type(e), e, e.__traceback__)


class FlowPipeline:
    """Decode, solve and write the flow of many videos at once (see the module's doc).

    Use as a context manager; :meth:`work` is the ``work(source, output)`` of
    :func:`mvaccel._io.run_jobs`, run from :attr:`threads` threads.

    Args:
        params: the solver's parameters.
        preset: the preset name recorded in ``meta.json`` (or None).
        format: ``"jpg"``, ``"flo"`` or ``"npy"`` (see :func:`~mvaccel.flow.write_video_flow`).
        bound: JPEG quantization bound in pixels.
        batch: pairs per solver call (pairs of any videos with the same frame size).
        device: solver device; ``"cuda"`` uses pinned buffers and a stream of its own.
        backward: file k = ``tvl1(I_k, I_{k-1})`` (else the forward order).
        decoders: videos decoded at the same time.
        writers: threads that encode and write the flow files.
        preview: also write each video's ``preview.png``
            (:class:`~mvaccel.flow.video.PreviewPick`).
    """

    def __init__(
        self,
        params: TVL1Params,
        preset: str | None,
        *,
        format: str = "jpg",
        bound: float = 20.0,
        batch: int = 16,
        device: str | torch.device = "cpu",
        backward: bool = True,
        decoders: int = 2,
        writers: int = 2,
        preview: bool = False,
    ) -> None:
        if batch < 1 or decoders < 1 or writers < 1:
            raise ValueError(
                f"flow pipeline: batch, decoders and writers must be >= 1, "
                f"got {batch}, {decoders}, {writers}"
            )
        self.params, self.preset = params, preset
        self.format, self.bound, self.batch, self.backward = format, bound, batch, backward
        self.preview = preview
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.stream = torch.cuda.Stream(self.device) if self.cuda else None
        #: Job threads: the decoders, plus threads whose video is decoded and waits to be
        #: written (they keep enough videos in flight to fill a batch across videos).
        self.threads = decoders + 2 + batch // 32
        self._decode_slots = threading.BoundedSemaphore(decoders)
        self._queue: queue.Queue = queue.Queue(maxsize=2 * decoders + 2)
        self._write_slots = threading.BoundedSemaphore(4 * writers)
        self._writers = ThreadPoolExecutor(writers, thread_name_prefix="mvaccel-flow-writer")
        self._lock = threading.Lock()
        self._decoding = 0  # job threads that may still put segments on the queue
        self._videos: set[_Video] = set()
        self._fatal: BaseException | None = None
        self._solver = threading.Thread(
            target=self._solve_loop, name="mvaccel-flow-solver", daemon=True
        )
        self._solver.start()

    # ---- the job threads: decode, then wait for the video to be written ----

    def work(self, src: Path, dest: Path) -> None:
        """Decode ``src``, hand its pairs to the solver and return once ``dest`` is complete.

        Raises:
            ValueError: the video cannot be decoded, has fewer than 2 frames or changes size.
            RuntimeError: the solver failed on its pairs (the video is named).
            OSError: its files could not be written.
        """
        self._check_fatal()
        with self._lock:
            self._decoding += 1
        v = None
        try:
            with self._decode_slots:
                v = _Video(Path(src), Path(dest), self.preview)
                with self._lock:
                    self._videos.add(v)
                self._decode(v)
        except BaseException as e:
            if v is None:
                raise
            self._settle(v, 0, error=e, decoded=True)
        else:
            self._settle(v, 0, decoded=True)
        finally:
            with self._lock:
                self._decoding -= 1
        while not v.done.wait(0.1):
            self._check_fatal()
        with self._lock:
            self._videos.discard(v)
        if v.error is not None:
            raise v.error

    def _decode(self, v: _Video) -> None:
        frames: list[np.ndarray] = []
        n, t0 = 0, 0
        for fr in iter_frames(v.src):
            if frames and fr.shape != frames[0].shape:
                raise ValueError(
                    f"flow_video: {v.src}: frame {n} is {fr.shape}, earlier frames "
                    f"{frames[0].shape}"
                )
            frames.append(fr)
            n += 1
            if len(frames) == self.batch + 1:
                self._put(v, t0, np.stack(frames))
                t0 += self.batch
                frames = frames[-1:]
            if v.error is not None:  # the solver or a writer already failed on it
                return
        if n < 2:
            raise ValueError(f"flow_video: {v.src}: need at least 2 frames, got {n}")
        if len(frames) >= 2:
            self._put(v, t0, np.stack(frames))

    def _put(self, v: _Video, t0: int, frames: np.ndarray) -> None:
        with v.lock:
            v.queued += frames.shape[0] - 1
        while True:
            self._check_fatal()
            try:
                self._queue.put((v, t0, frames), timeout=0.1)
                return
            except queue.Full:
                continue

    def _check_fatal(self) -> None:
        if self._fatal is not None:
            raise RuntimeError(f"flow pipeline stopped: {self._fatal}") from self._fatal

    # ---- bookkeeping: a video is finished when decoded and all its pairs are settled ----

    def _settle(
        self, v: _Video, pairs: int, error: BaseException | None = None, decoded: bool = False
    ) -> None:
        with v.lock:
            v.settled += pairs
            if error is not None and v.error is None:
                v.error = error
            v.decoded |= decoded
            if not v.decoded or v.settled != v.queued or v.closing:
                return
            v.closing = True
        try:
            if v.error is None:
                finish_flow_folder(v.tmp, v.src, self.params, self.preset, self.format,
                                   self.bound, self.backward, v.queued, v.parts,
                                   v.preview)  # fmt: skip
            v.close()
        except ITEM_ERRORS as e:
            v.error = e
            v.close()
        finally:
            v.parts.clear()
            v.done.set()

    # ---- the solver thread ----

    def _solve_loop(self) -> None:
        groups: dict[tuple[int, int], deque] = defaultdict(deque)
        counts: dict[tuple[int, int], int] = defaultdict(int)

        def take(key: tuple[int, int], n: int) -> list[tuple[_Video, int, np.ndarray]]:
            out, got, g = [], 0, groups[key]
            while got < n:
                v, t0, fr = g.popleft()
                k = fr.shape[0] - 1
                if got + k > n:  # split: the rest (sharing one frame) stays for the next batch
                    m = n - got
                    g.appendleft((v, t0 + m, fr[m:]))
                    v, fr, k = v, fr[: m + 1], m
                out.append((v, t0, fr))
                got += k
            counts[key] -= got
            return out

        try:
            if self.cuda and self.device.index is not None:
                torch.cuda.set_device(self.device)  # a thread starts on device 0
            while True:
                try:
                    item = self._queue.get(timeout=0.02)
                except queue.Empty:
                    item = None
                if item is _STOP:
                    break
                if item is not None:
                    key = item[2].shape[1:]
                    groups[key].append(item)
                    counts[key] += item[2].shape[0] - 1
                    while counts[key] >= self.batch:
                        self._solve(take(key, self.batch))
                elif self._decoding == 0:  # nothing more is coming soon: run partial batches
                    for key in list(groups):
                        while counts[key] > 0:
                            self._solve(take(key, min(self.batch, counts[key])))
        except BaseException as e:  # a bug here must not leave the job threads waiting
            log.debug("flow pipeline solver failed", exc_info=True)
            self._fatal = e

    def _solve(self, pieces: list[tuple[_Video, int, np.ndarray]]) -> None:
        live = []
        for v, t0, fr in pieces:
            if v.error is None:
                live.append((v, t0, fr))
            else:
                self._settle(v, fr.shape[0] - 1)
        if not live:
            return
        try:
            flows = self._tvl1(live)
        except Exception as e:  # noqa: BLE001 - attributed to the videos of the batch
            if len({id(v) for v, _, _ in live}) > 1:
                for piece in live:  # find which video fails
                    self._solve([piece])
                return
            v, _, fr = live[0]
            err = RuntimeError(f"{v.src}: TV-L1 failed on {self.device}: {e}")
            err.__cause__ = e
            self._settle(v, fr.shape[0] - 1, error=err)
            return
        j = 0
        for v, t0, fr in live:
            k = fr.shape[0] - 1
            self._write_slots.acquire()
            self._writers.submit(self._write, v, t0, flows[j : j + k])
            j += k

    def _tvl1(self, pieces: list[tuple[_Video, int, np.ndarray]]) -> Tensor:
        """Flows ``(B, 2, H, W)`` on the CPU of all pairs of ``pieces``, in order."""
        h, w = pieces[0][2].shape[1:]
        n = sum(fr.shape[0] - 1 for _, _, fr in pieces)
        a = torch.empty((n, 1, h, w), dtype=torch.uint8, pin_memory=self.cuda)
        b = torch.empty((n, 1, h, w), dtype=torch.uint8, pin_memory=self.cuda)
        j = 0
        for _, _, fr in pieces:
            x = torch.from_numpy(fr)
            k = fr.shape[0] - 1
            a[j : j + k, 0], b[j : j + k, 0] = (x[1:], x[:-1]) if self.backward else (x[:-1], x[1:])
            j += k
        if not self.cuda:
            return tvl1(a, b, self.params)
        with torch.cuda.stream(self.stream):
            da = a.to(self.device, non_blocking=True)
            db = b.to(self.device, non_blocking=True)
            f = tvl1(da, db, self.params)
            out = torch.empty(f.shape, dtype=f.dtype, pin_memory=True)
            out.copy_(f, non_blocking=True)
        self.stream.synchronize()
        return out

    # ---- the writer threads ----

    def _write(self, v: _Video, t0: int, flows: Tensor) -> None:
        try:
            if v.error is None:
                write_flows(v.tmp, t0, flows, self.format, self.bound, v.parts)
                if v.preview is not None:
                    v.preview.see(t0, flows)
        except Exception as e:  # noqa: BLE001 - recorded against the video, the job goes on
            if not isinstance(e, ITEM_ERRORS):
                e = RuntimeError(f"{v.src}: writing its flow failed: {type(e).__name__}: {e}")
            self._settle(v, flows.shape[0], error=e)
        else:
            self._settle(v, flows.shape[0])
        finally:
            self._write_slots.release()

    # ---- life cycle ----

    def close(self) -> None:
        """Stop the threads; remove the temporaries of videos that did not finish."""
        while self._solver.is_alive():
            try:
                self._queue.put(_STOP, timeout=0.1)
                break
            except queue.Full:
                continue
        self._solver.join()
        self._writers.shutdown(wait=True)
        with self._lock:
            left = [v for v in self._videos if not v.done.is_set()]
        for v in left:
            v.error = v.error or RuntimeError(f"{v.src}: flow pipeline stopped")
            v.close()
            v.done.set()

    def __enter__(self) -> FlowPipeline:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
        if self._fatal is not None and exc[0] is None:
            raise RuntimeError(f"flow pipeline failed: {self._fatal}") from self._fatal
