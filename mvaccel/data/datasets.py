"""Datasets over compressed video, precomputed flow, RGB frames, and teacher/student pairs.

One class, :class:`VideoDataset`, reads any combination of *modalities* of a video at the same
positions and crops and flips all of them the same way; the named classes fix the modalities:

- ``"mv"``: motion vectors from the bitstream (:func:`mvaccel.video.read_motion`), or from the
  ``.npz`` files of ``mvaccel mv VIDEOS --out MV_ROOT`` with ``mv_root`` (the same values),
  spread to pixels with the codec's block semantics (``block_upsample``, nearest), ``K`` fields
  stacked as ``2K`` interleaved channels ``x_1, y_1, x_2, y_2, ...`` (TSN's flow layout).
  I-frames carry the previous frame's vectors (Zhang et al.); with ``accumulate`` they are
  CoViAR's vectors traced back to the GOP's I-frame.
- ``"residual"``: the frames' residuals (``3K`` channels; CoViAR's accumulated residual with
  ``accumulate``).
- ``"flow"``: precomputed TV-L1 flow stored as TSN/dense_flow JPEGs (``flow_x_%05d.jpg``,
  ``flow_y_%05d.jpg``), dequantised back to pixels.
- ``"rgb"``: decoded frames, from the video or from a folder of ``img_%05d.jpg``.
- ``"iframe"``: CoViAR's I-frame stream: for every sampled frame, the decoded I-frame of the
  GOP holding it (the GOP's key frame, as CoViAR's ``load(..., representation=0)`` returns
  for ``gop_pos = 0``); read from the bitstream, only the I-frames are converted to RGB.

**Positions and directions.** A video of ``T`` frames has ``T - 1`` motion fields. Field ``t``
(``t = 1 .. T-1``) is the motion of frame ``t`` relative to frame ``t - 1``: the P-frame's
vectors (``src - dst``, content of frame ``t`` at ``x`` sits at ``x + mv`` in frame ``t - 1``) and
the flow file ``flow_x_%05d.jpg`` numbered ``t`` written by ``mvaccel flow --backward``
(``tvl1(I_t, I_{t-1})``, the same direction; README, "Conventions"). So the teacher's flow and
the student's motion vectors of one sample describe the same motion in the same sign. Flow made
in dense_flow's forward order (``tvl1(I_{t-1}, I_t)``, file ``t`` on frame ``t - 1``'s grid, what
``mvaccel flow --forward`` writes) can be read with ``flow_negate=True``, which flips its sign (an
approximation: it stays on the grid of the earlier frame). A flow folder's ``meta.json`` (written
by ``mvaccel flow``) must agree: its ``direction`` with ``flow_negate`` (``"forward"`` needs
``flow_negate=True``, ``"backward"`` needs False), its ``bound`` with ``flow_bound``, its format
JPEG; otherwise ``ValueError`` names the folder and the option to set. RGB (and I-frames) alone
sample frames ``0 .. T-1``; beside a motion modality frame ``t``.

**Values.** Motion in pixels is scaled with every resize (:func:`transforms.resize`), negated in
x by flips, then clipped to ``±bound`` and mapped by :func:`transforms.normalize_motion`
(``clip(v) * 127.5 / bound + 128`` then ``(u / 255 - 0.5) / motion_std``: what the flow JPEGs
hold, centred), the same for teacher and student. RGB: ``/255`` then ImageNet mean and std.
Residual: ``(r + 128)`` clipped to ``[0, 255]``, ``/255``, minus 0.5, divided by 0.226 (DMC-Net).

**Randomness.** A training sample's positions, crop and flip come from a generator seeded by
``(seed, epoch, index)`` when the dataset is indexed with ``(index, epoch)`` pairs, as
:class:`EpochSampler` yields them: the data of a step depends only on the step, not on worker
processes or on how a run was interrupted and resumed. Indexed with a plain ``int``, a sample
draws its seed from torch's generator.

**Sample layout.** Every modality comes out as ``(S, C, H, W)`` float32 (``S`` segments, or
``S * 10`` with ten crops, segment-major within each crop); with ``sampling="clip"`` as
``(S, C, K, H, W)`` for 3D CNNs. ``__getitem__`` returns ``(*tensors, label)`` in the order of
``modalities``.

**Decoding.** A sample decodes only the GOPs holding its frames, each from its key frame (one
GOP earlier where decoder state crosses key frames: open GOPs, MPEG-4 B-frames) up to the last
frame it needs there, and keeps only its own frames (the same values as decoding the whole
video; a video with a GOP the reader refuses, open GOPs in AVI, and the PyAV backend are read
from the start up to the sample's last frame). ``cache=True`` decodes every video whole once
and keeps it instead.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, Sampler

from . import sampling as smp
from . import transforms as tf
from .lists import VideoItem, read_class_index, ucf101_split
from .transforms import CropParams

MODALITIES = ("mv", "residual", "flow", "rgb", "iframe")
MOTION = ("mv", "flow")
#: modalities defined on motion fields (frames 1 .. T-1): they shift the sampling by one frame
FIELDS = ("mv", "residual", "flow")
SAMPLINGS = ("tsn", "gop", "fixed", "clip")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIDUAL_STD = 0.226


def _kind(modality: str) -> str:
    return "motion" if modality in MOTION else "image"


class _Cells(NamedTuple):
    """Motion vectors per codec block, spread to pixels on demand.

    ``cells`` is ``(..., 2k, Hb, Wb)`` for frames of ``size = (H, W)`` pixels; pixel ``(y, x)``
    takes the vector of cell ``(y // block, x // block)`` (:func:`mvaccel.ops.block_upsample`,
    nearest). A training crop reads only the pixels of its box.
    """

    cells: Tensor
    block: int
    size: tuple[int, int]

    def reshape(self, *shape: int) -> _Cells:
        return _Cells(self.cells.reshape(*shape[:-2], *self.cells.shape[-2:]), self.block,
                      self.size)  # fmt: skip

    @property
    def shape(self) -> tuple[int, ...]:
        return (*self.cells.shape[:-2], *self.size)

    def dense(self, box: tuple[int, int, int, int] | None = None) -> Tensor:
        """``(..., 2k, H, W)`` pixels, or the ``(top, left, height, width)`` box of them."""
        from ..ops import block_upsample

        b, cells = self.block, self.cells
        if box is None:
            flat = cells.reshape(-1, *cells.shape[-3:])
            out = block_upsample(flat, b, self.size, "nearest")
            return out.reshape(*cells.shape[:-3], -1, *self.size)
        t, left, h, w = box  # spread only the cells under the box, then cut the box out
        r0, c0, r1, c1 = t // b, left // b, (t + h - 1) // b + 1, (left + w - 1) // b + 1
        win = cells[..., r0:r1, c0:c1].reshape(-1, *cells.shape[-3:-2], r1 - r0, c1 - c0)
        up = block_upsample(win.contiguous(), b, ((r1 - r0) * b, (c1 - c0) * b), "nearest")
        up = up.reshape(*cells.shape[:-2], *up.shape[-2:])
        return up[..., t - r0 * b : t - r0 * b + h, left - c0 * b : left - c0 * b + w]

    def segment(self, i: int, box: tuple[int, int, int, int]) -> Tensor:
        """``(1, 2k, h, w)``: the ``box`` of segment ``i``."""
        return _Cells(self.cells[i : i + 1], self.block, self.size).dense(box)


class _Rows(NamedTuple):
    """A sample's frames ``(c, H, W)`` (views of what the reader gave), stacked on demand.

    ``(S, K * c, H, W)`` for ``S = segments``; a training crop copies only its box.
    """

    rows: list[Tensor]
    segments: int = 1

    @property
    def shape(self) -> tuple[int, ...]:
        c, h, w = self.rows[0].shape
        return (self.segments, len(self.rows) // self.segments * c, h, w)

    def dense(self) -> Tensor:
        return torch.stack(self.rows).reshape(self.shape)

    def segment(
        self, i: int, box: tuple[int, int, int, int], out: np.ndarray | None = None
    ) -> Tensor:
        """``(1, K * c, h, w)`` float32: the ``box`` of segment ``i`` (one pass, crop to float).

        ``out``: a float32 ``(K, c, h, w)`` array to write into (a view of it is returned).
        """
        t, left, h, w = box
        k = len(self.rows) // self.segments
        rows = self.rows[i * k : (i + 1) * k]
        if out is None:
            out = np.empty((k, rows[0].shape[0], h, w), dtype=np.float32)
        # NumPy's cast of a strided int16 / uint8 box is 2-4x faster than torch's copy_ here.
        for j, r in enumerate(rows):
            out[j] = r.numpy()[:, t : t + h, left : left + w]
        return torch.from_numpy(out).view(1, -1, h, w)


class _Video:
    """What one video gives to a dataset's samples.

    Frames of the video itself (motion vectors, residuals, RGB, I-frames) come one of two ways,
    with the same values:

    - ``cache``: the whole video is decoded once (:func:`read_motion`) and kept, for small
      datasets that visit every video many times (the demo, the tests);
    - otherwise only what a sample needs: the GOPs holding its frames, each decoded from its
      key frame up to the last frame asked in it (:meth:`CompressedVideo.read_gop`, which
      starts a GOP early where decoder state crosses key frames), so time and memory follow
      the sample, not the video. The index of that reader (one demux pass) gives the frame
      count. A video with a GOP the reader refuses (it checks every read and raises where
      frames cannot be placed exactly: open GOPs in AVI), or the PyAV backend, decodes from
      the first frame up to the sample's last one instead (``read_motion(frames=...)``); the
      dataset remembers such a video for the samples after.

    No decoder stays open across a DataLoader's fork: the cached path holds tensors only,
    and the GOP reader re-opens its file in a forked or unpickled copy.
    """

    def __init__(self, ds: VideoDataset, item: VideoItem):
        self.ds, self.item = ds, item
        self._clip = None
        self._flow = None
        self._flow_dir = None
        self._mv_file: tuple[Tensor, Tensor, tuple[int, int]] | None = None
        # sparse path: the frame count, the GOP reader (its index), what was read
        self._frames: int | None = None
        self._reader = None
        self._sequential = False  # a GOP read was refused: from the start of the file
        self._size: tuple[int, int] | None = None
        self._types: dict[int, int] = {}
        self._unfilled: set[int] = set()  # key frames read by GOP, the previous field not yet
        self._rows: dict[str, dict[int, Tensor]] = {m: {} for m in ("mv", "residual", "rgb",
                                                                    "iframe")}  # fmt: skip

    # ---- files ----

    def video_path(self) -> Path:
        p = self.ds.root / self.item.path
        if self.ds.video_ext:
            p = p.with_suffix(self.ds.video_ext)
        if not p.is_file():
            raise FileNotFoundError(f"{self.item.path}: video not found at {p}")
        return p

    def _under(self, root: Path, suffix: str = "") -> Path:
        """``root/<item path without suffix><suffix>`` (tree) or ``root/<name><suffix>`` (flat)."""
        rel = Path(self.item.path).with_suffix(suffix)
        return root / (rel if self.ds.layout == "tree" else rel.name)

    def _folder(self, root: Path | None, what: str) -> Path:
        if root is None:
            raise ValueError(f"modality {what!r} needs its root folder (flow_root / frame_root)")
        d = self._under(root)
        if not d.is_dir():
            raise FileNotFoundError(f"{self.item.path}: no {what} folder at {d}")
        return d

    # ---- compressed domain: the whole video (cache) ----

    def _rgb_mode(self) -> str | None:
        mods = self.ds.modalities
        if "rgb" in mods and self.ds.frame_root is None:
            return "all"
        return "iframes" if "iframe" in mods else None

    def clip(self):
        """The whole video decoded for the dataset's modalities (what ``cache`` keeps)."""
        if self._clip is None:
            from ..video import read_motion

            self._clip = read_motion(
                self.video_path(),
                block=self.ds.block,
                residual="residual" in self.ds.modalities,
                rgb=self._rgb_mode(),
                accumulate=self.ds.accumulate,
            )
            if len(self._clip) < 2:
                raise ValueError(f"{self.item.path}: {len(self._clip)} frame(s), need 2 or more")
        return self._clip

    # ---- compressed domain: only the sample's frames ----

    def _scan(self) -> int:
        """Frames in the video, from the index of the GOP reader (one demux pass, no decoding)."""
        if self._frames is None:
            from ..video import CompressedVideo, native_available, probe

            path = self.video_path()
            if native_available():  # the reader's index: frame count and GOP starts
                self._reader = CompressedVideo(path, backend="native")
                n = self._reader.num_frames
                self._sequential = self.item.path in self.ds._refused_gops
            else:  # PyAV decodes from the start for any GOP: one pass is cheapest
                n = probe(path, count_frames=False).num_frames
            if n < 2:
                raise ValueError(f"{self.item.path}: {n} frame(s), need 2 or more")
            self._frames = n
        return self._frames

    def _refuse(self) -> None:
        """Read this video from its start from now on (and in the dataset's later samples)."""
        self._sequential = True
        self.ds._refused_gops.add(self.item.path)

    def _gop_reader(self):
        """The video's :class:`CompressedVideo` (None: decode from the start of the file).

        It re-opens its file in a forked or unpickled copy (:meth:`CompressedVideo.read_gop`).
        """
        self._scan()
        return None if self._sequential else self._reader

    def _reads(self, frames: list[int], **kw) -> tuple[list, bool]:
        """``(clips, by GOP)``: the clips holding ``frames`` (sorted, distinct).

        One clip per GOP touched (True), or one read from the start of the file up to the
        last of ``frames`` (False): with the PyAV backend, and from the first GOP the reader
        refuses on (for the dataset's later samples of the video too).
        """
        from ..video import VideoError, read_motion

        cv = self._gop_reader()
        if cv is not None:
            by_gop: dict[int, list[int]] = {}
            for f in frames:
                g, local = cv.gop_of_frame(f)
                by_gop.setdefault(g, []).append(local)
            try:
                return [cv.read_gop(g, frames=fr, block=self.ds.block, **kw)
                        for g, fr in by_gop.items()], True  # fmt: skip
            except VideoError:  # a damaged file raises again below, naming itself
                self._refuse()
        return [read_motion(self.video_path(), frames=frames, block=self.ds.block, threads=1,
                            **kw)], False  # fmt: skip

    def _fetch(self, frames: list[int]) -> None:
        """Read what the dataset's modalities need at ``frames`` and was not read yet."""
        need = sorted({int(f) for f in frames} - self._rows["mv"].keys())
        if not need:
            return
        mods = self.ds.modalities
        residual, rgb = "residual" in mods, self._rgb_mode()
        clips, by_gop = self._reads(need, residual=residual, rgb=rgb,
                                    accumulate=self.ds.accumulate)  # fmt: skip
        for c in clips:
            self._size = c.size
            index, types = c.frame_index.tolist(), c.frame_type.tolist()
            for i, f in enumerate(index):
                self._types[f] = types[i]
                # A GOP read starts at its key frame, with no previous frame to fill it from.
                if by_gop and types[i] == 0 and f > 0 and not self.ds.accumulate:
                    if self._reader.gop_of_frame(f)[1] == 0:
                        self._unfilled.add(f)
                self._rows["mv"][f] = c.mv[i]
                if residual:
                    self._rows["residual"][f] = c.residual[i]
                if rgb == "all":
                    self._rows["rgb"][f] = c.rgb[i]
            if rgb == "iframes":
                self._keep_iframes(c)
        if rgb == "all" and "iframe" in mods:  # a second, RGB-less pass gives the I-frames
            for c in self._reads(need, rgb="iframes")[0]:
                self._keep_iframes(c)

    def _keep_iframes(self, c) -> None:
        keys = c.rgb_index.tolist()
        for f in c.frame_index.tolist():
            j = bisect.bisect_right(keys, f) - 1
            if j < 0:  # a stream that does not start with a key frame
                raise ValueError(f"{self.item.path}: frame {f} comes before the first I-frame")
            self._rows["iframe"][f] = c.rgb[j]

    def _fill_key_frames(self, frames: list[int]) -> None:
        """Give the GOP key frames among ``frames`` the previous frame's field.

        As the whole-video decode does (``fill_iframe="previous"``). A GOP read starts at its
        key frame, which has no previous frame there (zeros); the previous one is the end of
        the GOP before, read here in the fast vectors-only mode. Done when the vectors are
        asked for, not when a frame is read (``sampling="gop"`` reads key frames it then
        moves off).
        """
        from ..video import VideoError, read_motion

        for f in sorted(self._unfilled.intersection(frames)):  # ascending: a row is final
            self._unfilled.discard(f)  # before the next key frame's row copies it
            prev = f - 1
            if prev in self._rows["mv"]:  # read for the sample already
                self._fill_key_frames([prev])
                self._rows["mv"][f] = self._rows["mv"][prev]
                continue
            try:
                while True:  # a GOP of one I-frame carries the field before it
                    g, local = self._reader.gop_of_frame(prev)
                    c = self._reader.read_gop(g, frames=[local], block=self.ds.block)
                    if int(c.frame_type[0]) == 0 and local == 0 and prev > 0:
                        prev -= 1
                        continue
                    self._rows["mv"][f] = c.mv[0]
                    break
            except VideoError:  # a GOP the reader cannot place: the key frame from the start
                self._refuse()
                c = read_motion(self.video_path(), frames=[f], block=self.ds.block, threads=1)
                self._rows["mv"][f] = c.mv[0]

    def rows(self, what: str, frames: list[int]) -> _Rows:
        """One ``(3, H, W)`` view per frame of ``frames``: read now, or of the cached video.

        ``what``: ``"residual"``, ``"rgb"`` (decoded from the video) or ``"iframe"``.
        """
        if not self.ds.cache:
            self._fetch(frames)
            return _Rows([self._rows[what][int(f)] for f in frames])
        clip = self.clip()
        if what == "residual":
            return _Rows([clip.residual[f] for f in frames])
        row = {int(v): i for i, v in enumerate(clip.rgb_index)}
        if what == "rgb":
            return _Rows([clip.rgb[row[int(f)]] for f in frames])
        keys = clip.frame_index[clip.frame_type == 0].numpy()
        pos = np.searchsorted(keys, np.asarray(frames), side="right") - 1
        if len(keys) == 0 or (pos < 0).any():  # a stream that does not start with a key frame
            bad = [f for f, p in zip(frames, pos, strict=True) if p < 0]
            raise ValueError(f"{self.item.path}: frames {bad} come before the first I-frame")
        return _Rows([clip.rgb[row[int(k)]] for k in keys[pos]])

    def num_frames(self) -> int:
        """Frames every source of the dataset's modalities has (flow: fields + 1)."""
        mods = self.ds.modalities
        counts = []
        from_video = ("residual", "iframe") + (() if self.ds.mv_root else ("mv",))
        if any(m in mods for m in from_video) or ("rgb" in mods and self.ds.frame_root is None):
            counts.append(len(self.clip()) if self.ds.cache else self._scan())
        if "mv" in mods and self.ds.mv_root is not None:
            counts.append(len(self.motion_file()[0]))
        if "flow" in mods:
            counts.append(self.num_flow() + 1)
        if "rgb" in mods and self.ds.frame_root is not None:
            counts.append(len(self._frame_files()))
        return min(counts)

    def frame_types(self, frames: list[int] | None = None, *, with_next: bool = False) -> Tensor:
        """``(n,)`` uint8 picture types (``0 = I, 1 = P, 2 = B``) of ``frames`` (None: all).

        Without ``cache`` the types come from reading the dataset's modalities at ``frames``
        (kept for the sample, so a frame is decoded once); ``with_next`` reads the frame after
        each GOP key frame among them too, in the same decode (where ``sampling="gop"`` moves
        a sample off an I-frame).
        """
        if self.ds.mv_root is not None and "mv" in self.ds.modalities:
            types = self.motion_file()[1]
            return types if frames is None else types[list(frames)]
        if self.ds.cache:
            types = self.clip().frame_type
            return types if frames is None else types[list(frames)]
        if frames is None:
            from ..video import probe

            return torch.from_numpy(probe(self.video_path()).frame_types)
        frames = [int(f) for f in frames]
        self._scan()
        cv, more = self._reader, []
        if with_next and cv is not None:
            n = cv.num_frames
            more = [f + 1 for f in frames if f + 1 < n and cv.gop_of_frame(f)[1] == 0]
        self._fetch(frames + more)  # the types come with the data: frames are read once
        return torch.tensor([self._types[int(f)] for f in frames], dtype=torch.uint8)

    # ---- flow JPEGs ----

    def flow_dir(self) -> Path:
        if self._flow_dir is None:
            d = self._folder(self.ds.flow_root, "flow")
            self._check_flow_meta(d)
            self._flow_dir = d
        return self._flow_dir

    def _check_flow_meta(self, d: Path) -> None:
        """Refuse a flow folder whose ``meta.json`` contradicts how the dataset reads it.

        ``mvaccel flow`` records the direction, format and bound of what it wrote; a folder
        without ``meta.json`` (dense_flow's, TSN's) is taken as the options say.
        """
        import json

        from ..flow.video import META_NAME

        p = d / META_NAME
        if not p.is_file():
            return
        try:
            meta = json.loads(p.read_text())
        except (OSError, ValueError) as e:
            raise ValueError(f"{self.item.path}: unreadable flow metadata {p}: {e}") from e
        ds, direction = self.ds, meta.get("direction")
        want = "forward" if ds.flow_negate else "backward"
        if direction in ("forward", "backward") and direction != want:
            raise ValueError(
                f"{self.item.path}: {d} holds {direction} flow ({meta.get('file_k', '')}, "
                f"{META_NAME}) but the dataset reads {want} flow (flow_negate={ds.flow_negate}): "
                f"set flow_negate={not ds.flow_negate}, or rewrite the flow "
                f"({'without' if direction == 'backward' else 'with'} --forward)"
            )
        if meta.get("format", "jpg") != "jpg":
            raise ValueError(
                f"{self.item.path}: {d} holds {meta['format']!r} flow; the dataset reads "
                "flow_x/flow_y JPEGs (mvaccel flow --format jpg)"
            )
        bound = meta.get("bound")
        if bound is not None and float(bound) != float(ds.flow_bound):
            raise ValueError(
                f"{self.item.path}: {d} was quantised with bound {bound} ({META_NAME}) but the "
                f"dataset dequantises with flow_bound={ds.flow_bound}: set flow_bound={bound}"
            )

    def num_flow(self) -> int:
        n = sum(1 for p in os.listdir(self.flow_dir()) if p.startswith("flow_x_"))
        if n < 1:
            raise FileNotFoundError(f"{self.item.path}: no flow_x_*.jpg in {self.flow_dir()}")
        return n

    def _read_flow(self, t: int) -> np.ndarray:
        d = self.flow_dir()
        planes = []
        for axis in "xy":
            p = d / f"flow_{axis}_{t:05d}.jpg"
            if not p.is_file():
                raise FileNotFoundError(f"{self.item.path}: flow field {t} missing ({p})")
            planes.append(_read_image(p, "L", self.item.path))
        if planes[0].shape != planes[1].shape:
            raise ValueError(f"{self.item.path}: flow x and y of field {t} differ in size")
        return np.stack(planes)

    def flow(self, frames: list[int]) -> Tensor:
        """``(n, 2, H, W)`` pixels for frame numbers ``frames`` (field t = file t)."""
        if self.ds.cache:
            if self._flow is None:
                n = self.num_flow()
                self._flow = np.stack([self._read_flow(t) for t in range(1, n + 1)])
            q = torch.from_numpy(self._flow[[f - 1 for f in frames]])
        else:
            q = torch.from_numpy(np.stack([self._read_flow(f) for f in frames]))
        from ..flow import dequantize

        f = dequantize(q, self.ds.flow_bound)
        return -f if self.ds.flow_negate else f

    # ---- RGB ----

    def _frame_files(self) -> list[str]:
        d = self._folder(self.ds.frame_root, "frame")
        files = sorted(p for p in os.listdir(d) if p.startswith("img_"))
        if not files:
            raise FileNotFoundError(f"{self.item.path}: no img_*.jpg in {d}")
        return files

    def rgb(self, frames: list[int]) -> Tensor:
        """``(n, 3, H, W)`` uint8 frames ``frames`` (0-based)."""
        if self.ds.frame_root is None:
            return torch.stack(self.rows("rgb", frames).rows)
        d = self._folder(self.ds.frame_root, "frame")
        out = []
        for f in frames:
            p = d / f"img_{f + 1:05d}.jpg"
            if not p.is_file():
                raise FileNotFoundError(f"{self.item.path}: frame {f} missing ({p})")
            out.append(_read_image(p, "RGB", self.item.path))
        return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2)

    def iframe(self, frames: list[int]) -> Tensor:
        """``(n, 3, H, W)`` uint8: the I-frame of the GOP of each frame in ``frames``."""
        return torch.stack(self.rows("iframe", frames).rows)

    # ---- motion vectors and residuals ----

    def mv_file(self) -> Path:
        """The ``.npz`` of ``mvaccel mv DIR --out MV_ROOT`` for this video."""
        p = self._under(self.ds.mv_root, ".npz")
        if not p.is_file():
            raise FileNotFoundError(
                f"{self.item.path}: no motion file at {p} (written by `mvaccel mv VIDEOS --out "
                f"{self.ds.mv_root}`)"
            )
        return p

    def motion_file(self) -> tuple[Tensor, Tensor, tuple[int, int]]:
        """``(mv (T, 2, h, w), frame_type (T,), (H, W))`` of :meth:`mv_file`, checked.

        The file must hold every frame, read with the dataset's ``block`` and ``accumulate``
        and the defaults ``b_list=0``, ``fill_iframe="previous"`` (what decoding gives), as
        :func:`mvaccel.video.extract.read_motion_file` checks (the vectors and frame types are
        all it decompresses); otherwise ``ValueError`` names the file and the difference.
        """
        if self._mv_file is None:
            from ..video.extract import read_motion_file

            p, ds = self.mv_file(), self.ds
            want = {"block": ds.block, "accumulate": ds.accumulate, "b_list": 0,
                    "fill_iframe": "previous"}  # fmt: skip
            try:
                d, _ = read_motion_file(p, ("mv", "frame_type", "size"), options=want, whole=True)
            except ValueError as e:
                raise ValueError(f"{self.item.path}: {e}") from e
            if len(d["mv"]) < 2:
                raise ValueError(f"{self.item.path}: {p} has {len(d['mv'])} frame(s), need 2+")
            size = (int(d["size"][0]), int(d["size"][1]))
            self._mv_file = (torch.from_numpy(d["mv"]), torch.from_numpy(d["frame_type"]), size)
        return self._mv_file

    def mv_cells(self, frames: list[int]) -> _Cells:
        """The vectors of ``frames`` per codec block (:class:`_Cells`, ``n`` fields)."""
        if self.ds.mv_root is not None:
            mv, _, size = self.motion_file()
            bad = [f for f in frames if not 0 <= f < len(mv)]
            if bad:
                raise ValueError(f"{self.item.path}: frames {bad} out of range: the motion file "
                                 f"has {len(mv)} frames")  # fmt: skip
            return _Cells(mv[list(frames)], self.ds.block, size)
        if not self.ds.cache:
            self._fetch(frames)
            self._fill_key_frames(frames)
            mv = torch.stack([self._rows["mv"][int(f)] for f in frames])
            return _Cells(mv, self.ds.block, self._size)
        clip = self.clip()
        return _Cells(clip.mv[frames], clip.block, clip.size)

    def mv(self, frames: list[int]) -> Tensor:
        """``(n, 2, H, W)`` per-pixel vectors in pixels (codec block semantics)."""
        return self.mv_cells(frames).dense()

    def residual(self, frames: list[int]) -> Tensor:
        """``(n, 3, H, W)`` int16 RGB residuals."""
        return torch.stack(self.rows("residual", frames).rows)


def _read_image(path: Path, mode: str, item: str) -> np.ndarray:
    """``(H, W)`` (``mode="L"``) or ``(H, W, 3)`` uint8 of an image file; damage names it."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert(mode))
    except (OSError, SyntaxError, ValueError) as e:  # PIL: truncated / not an image
        raise ValueError(f"{item}: unreadable image {path} (truncated or damaged?): {e}") from e


class VideoDataset(Dataset):
    """Samples of one or more modalities of the videos of a split, cropped alike.

    Args:
        items: the videos (:func:`mvaccel.data.ucf101_split`, :func:`hmdb51_split`...).
        root: folder the items' paths are relative to (the videos).
        modalities: any of ``"mv"``, ``"residual"``, ``"flow"``, ``"rgb"``, ``"iframe"``, in
            output order.
        flow_root: folder of flow JPEG folders (``<root>/<Class>/<video>/flow_x_00001.jpg``
            with ``layout="tree"``, the layout ``mvaccel flow`` writes; ``<root>/<video>/`` with
            ``"flat"``, TSN's).
        frame_root: folder of RGB frame folders (``img_00001.jpg`` ...); None: decode the video.
        mv_root: the output folder of ``mvaccel mv VIDEOS --out MV_ROOT``
            (``<mv_root>/<Class>/<video>.npz``, or ``<mv_root>/<video>.npz`` with ``"flat"``):
            the ``"mv"`` input reads these files instead of decoding the videos (the same
            values; the files must have been written with the dataset's ``block`` and
            ``accumulate``). Other modalities still read the videos. None: decode.
        layout: ``"tree"`` or ``"flat"`` (see ``flow_root``).
        video_ext: replaces the list's extension (``".mp4"`` after ``mvaccel prepare``).
        num_segments: TSN segments ``S`` (3 to train, 25 to test in the papers).
        new_length: frames per segment ``K`` (10 stacked motion fields in Zhang et al.; the
            clip length with ``sampling="clip"``).
        train: random positions, crops and flips (True) or the test protocol (False).
        sampling: ``"tsn"`` (segments), ``"gop"`` (TSN segments moved off I-frames, for
            CoViAR's accumulated motion), ``"fixed"`` (OFF: ``S`` frames at the interval of
            ``test_segments``), ``"clip"`` (one clip of ``K`` frames ``clip_stride`` apart).
        test_segments: OFF's ``beta`` for ``"fixed"`` (default ``num_segments``).
        clip_stride: frame step of ``"clip"``.
        size: network input ``(H, W)`` or side.
        scales: multi-scale crop fractions of the short side (TSN: 1, .875, .75, .66;
            Zhang et al.: 1, .875, .75).
        flip: random horizontal flips in training (x of motion negated).
        test_crops: 1 (centre crop) or 10 (corners + centre, and flipped).
        test_scale: short side the test frames are resized to before cropping (default
            ``size * 256 / 224``, TSN's 256 for 224).
        block: motion-vector grid cell in pixels (8: every block H.264/MPEG-4 export).
        accumulate: CoViAR's accumulated motion / residual.
        bound: motion clipping bound in pixels (20).
        motion_std: the last divisor of :func:`transforms.normalize_motion`.
        flow_bound: the bound the flow JPEGs were quantised with (20).
        flow_negate: read dense_flow's forward-order flow (see the module docstring).
        rgb_norm: RGB (and I-frame) input convention of the network's weights, a key of
            :data:`transforms.RGB_NORMS` (its backbone's ``input_norm``): ``"imagenet"``,
            ``"caffe_bgr"`` (TSN's BN-Inception, Caffe ClarifaiNets) or ``"activitynet"``
            (3D-ResNets / MARS).
        cache: decode each video whole once and keep it in memory (small datasets, the
            demo and the tests; per DataLoader worker). Without it (the default) a sample
            decodes only the GOPs holding its frames, up to the last frame it needs there:
            time and memory follow the sample, not the video, and the values are the same.
        seed: with ``(index, epoch)`` keys, the seed of the training randomness.
    """

    def __init__(
        self,
        items: Sequence[VideoItem],
        root: str | Path,
        modalities: Sequence[str] = ("mv",),
        *,
        flow_root: str | Path | None = None,
        frame_root: str | Path | None = None,
        mv_root: str | Path | None = None,
        layout: str = "tree",
        video_ext: str | None = None,
        num_segments: int = 3,
        new_length: int = 1,
        train: bool = True,
        sampling: str = "tsn",
        test_segments: int | None = None,
        clip_stride: int = 1,
        size: int | Sequence[int] = 224,
        scales: Sequence[float] = tf.TSN_SCALES,
        flip: bool = True,
        test_crops: int = 1,
        test_scale: int | None = None,
        block: int = 8,
        accumulate: bool = False,
        bound: float = 20.0,
        motion_std: float = 1.0,
        flow_bound: float = 20.0,
        flow_negate: bool = False,
        rgb_norm: str = "imagenet",
        cache: bool = False,
        seed: int = 0,
    ):
        modalities = tuple(modalities)
        if rgb_norm not in tf.RGB_NORMS:
            raise ValueError(f"rgb_norm must be one of {sorted(tf.RGB_NORMS)}, got {rgb_norm!r}")
        bad = [m for m in modalities if m not in MODALITIES]
        if not modalities or bad or len(set(modalities)) != len(modalities):
            raise ValueError(f"modalities must be distinct names of {MODALITIES}, got {modalities}")
        if sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}")
        if layout not in ("tree", "flat"):
            raise ValueError(f"layout must be 'tree' or 'flat', got {layout!r}")
        if test_crops not in (1, 10):
            raise ValueError(f"test_crops must be 1 or 10, got {test_crops}")
        if num_segments < 1 or new_length < 1:
            raise ValueError(f"num_segments and new_length must be >= 1, got {num_segments}, "
                             f"{new_length}")  # fmt: skip
        if "flow" in modalities and flow_root is None:
            raise ValueError("modality 'flow' needs flow_root")
        if not items:
            raise ValueError("no videos: the list is empty")
        self.items = list(items)
        self.root = Path(root)
        self.modalities = modalities
        self.flow_root = Path(flow_root) if flow_root is not None else None
        self.frame_root = Path(frame_root) if frame_root is not None else None
        self.mv_root = Path(mv_root) if mv_root is not None else None
        self.layout, self.video_ext = layout, video_ext
        self.num_segments, self.new_length = num_segments, new_length
        self.train, self.sampling = train, sampling
        self.test_segments = test_segments or num_segments
        self.clip_stride = clip_stride
        self.size = (size, size) if isinstance(size, int) else tuple(size)
        self.test_crops = test_crops
        self.test_scale = test_scale or round(min(self.size) * 256 / 224)
        self.cropper = tf.MultiScaleCrop(self.size, tuple(scales), flip=flip)
        self.block, self.accumulate = block, accumulate
        self.bound, self.motion_std = bound, motion_std
        self.flow_bound, self.flow_negate = flow_bound, flow_negate
        self.rgb_norm = rgb_norm
        self.cache = cache
        self.seed = seed
        self._videos: dict[int, _Video] = {}
        self._refused_gops: set[str] = set()  # videos whose GOP reads the reader refused

    def __getstate__(self):
        # A worker started by spawn/forkserver gets the settings, not the parent's cache.
        state = self.__dict__.copy()
        state["_videos"] = {}
        return state

    def __len__(self) -> int:
        return len(self.items)

    @property
    def labels(self) -> list[int]:
        """The label of every item, in order."""
        return [it.label for it in self.items]

    def video(self, index: int) -> _Video:
        """The reader of item ``index`` (kept across samples with ``cache``)."""
        if not self.cache:
            return _Video(self, self.items[index])
        if index not in self._videos:
            self._videos[index] = _Video(self, self.items[index])
        return self._videos[index]

    # ---- positions ----

    def frames(self, video: _Video, rng: np.random.Generator | None) -> list[list[int]]:
        """Frame numbers per segment: ``S`` lists of ``K`` frames (one list for clips)."""
        motion = any(m in FIELDS for m in self.modalities)
        total = video.num_frames()
        n = total - 1 if motion else total
        first = 1 if motion else 0
        k, s = self.new_length, self.num_segments
        if self.sampling in ("tsn", "gop"):
            starts = smp.tsn_segments(n, s, k, self.train, rng)
        elif self.sampling == "fixed":
            starts = smp.fixed_interval(max(1, n - k + 1), s, self.test_segments, self.train, rng)
        else:
            pos = smp.clip(n, k, self.clip_stride, self.train, rng)
            return [[first + p for p in pos]]
        out = [[first + min(st + j, n - 1) for j in range(k)] for st in starts]
        if self.sampling == "gop":
            flat = sorted({f for seg in out for f in seg})
            types = video.frame_types(flat, with_next=True).tolist()
            types = dict(zip(flat, types, strict=True))
            out = [[f + 1 if types[f] == 0 and f + 1 < total else f for f in seg] for seg in out]
        return out

    # ---- reading and transforming ----

    def _read(self, video: _Video, modality: str, frames: list[int]) -> Tensor:
        if modality == "mv":
            return video.mv_cells(frames)
        if modality == "flow":
            return video.flow(frames)
        if modality in ("residual", "iframe") or self.frame_root is None:
            return video.rows(modality, frames)
        return video.rgb(frames)

    def _stacks(self, index: int, rng: np.random.Generator | None):
        """Yield ``(modality, (S, K * c, H, W))`` one modality at a time, all one size.

        Motion vectors come as :class:`_Cells` (per block, ``.dense()`` gives the pixels).
        """
        video = self.video(index)
        segs = self.frames(video, rng)
        flat = [f for seg in segs for f in seg]
        hw = None
        for m in self.modalities:
            x = self._read(video, m, flat)  # (S*K, c, H, W)
            if isinstance(x, _Rows):
                x = x._replace(segments=len(segs))
            else:
                x = x.reshape(len(segs), -1, *x.shape[-2:])
            if hw is None:
                hw = tuple(x.shape[-2:])
            elif tuple(x.shape[-2:]) != hw:  # e.g. flow of the original, MV of the re-encode
                x = x.dense() if isinstance(x, _Cells | _Rows) else x
                x = tf.resize(x.float() if m in MOTION else x, hw, _kind(m))
            yield m, x
            del x  # before the next modality is read

    def raw(self, index: int, rng: np.random.Generator | None = None) -> dict[str, Tensor]:
        """Uncropped stacks ``(S, K * c, H, W)`` per modality, motion in pixels, all one size."""
        stacks = self._stacks(index, rng)
        return {m: x.dense() if isinstance(x, _Cells | _Rows) else x for m, x in stacks}

    def _normalize(self, modality: str, x: Tensor, inplace: bool = False) -> Tensor:
        """The network's input values of ``x``.

        ``inplace``: ``x`` is float32 and the caller's to overwrite (the same values, without
        full-size temporaries).
        """
        if modality in MOTION:
            return tf.normalize_motion(x, self.bound, self.motion_std, inplace=inplace)
        if modality == "residual":
            return tf.normalize_residual(x, RESIDUAL_STD, inplace=inplace)
        return tf.normalize_rgb(x, self.rgb_norm, inplace=inplace)

    def _train_view(self, x: Tensor | _Cells | _Rows, params: tf.CropParams, kind: str) -> Tensor:
        """``tf.apply(x.float(), params, ...)``, a segment at a time, cropped before the copy.

        The same values; the float copy is of one segment's crop, not of the whole sample, and
        the segments of frames share one buffer for it (fresh memory costs page faults).
        """
        box = (params.top, params.left, params.height, params.width)
        one = CropParams(0, 0, params.height, params.width, params.flip)
        buf = None
        if isinstance(x, _Rows):
            k = len(x.rows) // x.segments
            buf = np.empty((k, x.rows[0].shape[0], box[2], box[3]), dtype=np.float32)
        out = []
        for i in range(x.shape[0]):
            if isinstance(x, _Cells | _Rows):
                xi = x.segment(i, box) if buf is None else x.segment(i, box, buf)
            else:
                xi = x[i : i + 1, ..., box[0] : box[0] + box[2], box[1] : box[1] + box[3]].float()
            y = tf.apply(xi, one, self.size, kind)
            if buf is not None and y.untyped_storage().data_ptr() == buf.ctypes.data:
                y = y.clone()  # neither resized nor flipped: the buffer itself
            out.append(y)
        return torch.cat(out)

    def _test_view(self, x: Tensor, kind: str) -> Tensor:
        h, w = x.shape[-2:]
        r = self.test_scale / min(h, w)
        x = tf.resize(x, (max(1, round(h * r)), max(1, round(w * r))), kind)
        if self.test_crops == 1:
            return tf.center_crop(x, self.size, kind)
        crops = tf.ten_crop(x, self.size, kind)  # (10, S, C, h, w)
        return crops.flatten(0, 1)

    def __getitem__(self, key: int | tuple[int, int]):
        if isinstance(key, tuple | list):
            index, epoch = int(key[0]), int(key[1])
            seed = [self.seed, epoch, index]
        else:
            index, seed = int(key), int(torch.randint(2**62, (1,)))
        if not 0 <= index < len(self.items):
            raise IndexError(f"index {index} out of range for {len(self.items)} videos")
        rng = np.random.default_rng(seed) if self.train else None
        clip = self.sampling == "clip"
        k = self.new_length
        params = None
        outs = []
        # One modality at a time, cropped before it becomes float: a sample's memory is one
        # full-size stack, not all of them in float32.
        for m, x in self._stacks(index, rng):
            kind = _kind(m)
            if self.train:
                if params is None:
                    params = self.cropper.sample(*x.shape[-2:], rng=rng)
                x = self._normalize(m, self._train_view(x, params, kind), inplace=True)
            else:
                x = x.dense() if isinstance(x, _Cells | _Rows) else x
                x = self._normalize(m, self._test_view(x.float(), kind))
            if clip:  # (S, K*c, H, W) -> (S, c, K, H, W)
                s, kc, h, w = x.shape
                x = x.view(s, k, kc // k, h, w).transpose(1, 2)
            outs.append(x.contiguous())
            del x
        return (*outs, self.items[index].label)


class EpochSampler(Sampler):
    """Yields ``(index, epoch)`` keys, shuffled by ``(seed, epoch)``.

    With :class:`VideoDataset`'s keyed randomness, what a training step sees is a function of
    the seed and the step (Lightning calls :meth:`set_epoch` before each epoch).
    """

    def __init__(self, num_items: int, shuffle: bool = True, seed: int = 0, epoch: int = 0):
        self.num_items, self.shuffle, self.seed, self.epoch = num_items, shuffle, seed, epoch

    def set_epoch(self, epoch: int) -> None:
        """Use the order and the randomness of ``epoch``."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_items

    def __iter__(self):
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(self.num_items)
        else:
            order = np.arange(self.num_items)
        epoch = self.epoch
        return iter([(int(i), epoch) for i in order])


class CompressedVideoDataset(VideoDataset):
    """Motion vectors (and, with ``residual=True``, residuals) read from the bitstream."""

    def __init__(self, items, root, *, residual: bool = False, **kw):
        super().__init__(items, root, ("mv", "residual") if residual else ("mv",), **kw)


class FlowDataset(VideoDataset):
    """Precomputed flow JPEGs (TSN / dense_flow storage); ``root`` is the flow root."""

    def __init__(self, items, root, **kw):
        super().__init__(items, root, ("flow",), flow_root=root, **kw)


class RGBDataset(VideoDataset):
    """RGB frames decoded from the videos under ``root`` or read from ``frame_root``."""

    def __init__(self, items, root, **kw):
        super().__init__(items, root, ("rgb",), **kw)


class PairedTransferDataset(VideoDataset):
    """``(mv, flow, label)``: the student's motion vectors and the teacher's flow.

    The same fields (flow file ``t`` with frame ``t``'s vectors) and the same crop and flip.
    """

    def __init__(self, items, root, flow_root, **kw):
        super().__init__(items, root, ("mv", "flow"), flow_root=flow_root, **kw)


class SyntheticMotionDataset(VideoDataset):
    """The synthetic motion-class videos (:mod:`mvaccel.data.synthetic`) as a dataset.

    Writes the videos under ``root`` first (resumable: existing files are kept), then reads
    the ``subset`` of split 1 like UCF101.

    Args:
        root: where the videos and lists go.
        subset: ``"train"`` or ``"test"``.
        spec: what to write (:class:`mvaccel.data.synthetic.SyntheticSpec`).
        modalities, **kw: as :class:`VideoDataset`.
    """

    def __init__(self, root, subset: str = "train", spec=None, modalities=("mv",), **kw):
        from .synthetic import SyntheticSpec, write_synthetic_dataset

        root = write_synthetic_dataset(root, spec or SyntheticSpec())
        self.classes = read_class_index(Path(root) / "classInd.txt")
        super().__init__(ucf101_split(root, 1, subset), root, modalities, **kw)


def num_channels(modality: str, new_length: int) -> int:
    """Input channels of a stack of ``new_length`` frames of ``modality`` (2D networks)."""
    per = 2 if modality in MOTION else 3
    return per * new_length


__all__ = [
    "MODALITIES",
    "CompressedVideoDataset",
    "EpochSampler",
    "FlowDataset",
    "PairedTransferDataset",
    "RGBDataset",
    "SyntheticMotionDataset",
    "VideoDataset",
    "num_channels",
]
