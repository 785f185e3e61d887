"""The PyAV backend: the same results as ``mvaccel._video``, in Python and numpy.

It is the fallback where the native reader is not built, and the tests' oracle: the native
reader's rasterization, residuals and accumulation are re-implemented here independently.
Decoding is single-threaded (frame threads make H.264 B-frame vectors non-deterministic).
PyAV's wheels bundle their own, newer FFmpeg; see the README for where its vectors differ.
"""

from __future__ import annotations

import os
from fractions import Fraction

import numpy as np

from .core import VideoError

_I, _P, _B = 0, 1, 2
# PyAV names the decoder; the reader reports FFmpeg's codec name, as the native one does.
_DECODER_TO_CODEC = {"flv": "flv1", "msmpeg4": "msmpeg4v3"}
_MV_CODECS = {
    "h264",
    "mpeg4",
    "mpeg1video",
    "mpeg2video",
    "h263",
    "h263p",
    "flv1",
    "msmpeg4v2",
    "msmpeg4v3",
    "wmv1",
    "wmv2",
}


_FORK_HOOK = []


def _av():
    """PyAV, imported for decoding (every mvaccel decode through PyAV imports it here).

    On first use this registers ``gc.collect`` to run before every ``os.fork``: PyAV frames and
    scalers hold FFmpeg objects with worker threads (swscale slice threads), and when such an
    object sits in a reference cycle it is freed by whoever collects that cycle. In a forked
    child (a DataLoader worker) the threads do not exist and FFmpeg's cleanup waits for them
    forever; collecting in the parent before the fork leaves no such garbage to the child.
    """
    try:
        import av
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the PyAV backend needs PyAV: pip install av (or build mvaccel._video)"
        ) from e
    if not _FORK_HOOK:
        import gc
        import os

        os.register_at_fork(before=gc.collect)
        _FORK_HOOK.append(True)
    return av


def ffmpeg_version() -> str:
    """``"libavcodec X.Y.Z"`` of the FFmpeg PyAV's wheel bundles."""
    v = _av().library_versions.get("libavcodec", ())
    return "libavcodec " + ".".join(str(x) for x in v)


def _type_code(pict_type) -> int:
    v = int(pict_type)  # AVPictureType: 1 I, 2 P, 3 B, 4 S, 5 SI, 6 SP, 7 BI
    if v in (3, 7):
        return _B
    if v in (2, 4, 6):
        return _P
    return _I


# What PyAV raises on damaged input besides av.FFmpegError: metadata that is not UTF-8, a
# stream without a decoder (codec_context None), values out of range.
_DAMAGE = (UnicodeDecodeError, AttributeError, ValueError, TypeError, IndexError, KeyError)


def _open(path: str):
    av = _av()
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    try:
        container = av.open(path, metadata_errors="replace")
    except (av.FFmpegError, *_DAMAGE) as e:
        raise VideoError(f"{path}: cannot open as a video: {type(e).__name__}: {e}") from e
    try:
        streams = [s for s in container.streams.video if not s.disposition & 1024]
        if not streams:
            n = len(container.streams)
            raise VideoError(f"{path}: no video stream ({n} streams, none of them video)")
        stream = streams[0]
        cc = stream.codec_context
        if cc is None or cc.codec is None:
            raise VideoError(f"{path}: this FFmpeg (PyAV's) has no decoder for the video stream")
        if not cc.width or not cc.height:
            raise VideoError(f"{path}: video stream has no frame size ({cc.width}x{cc.height})")
    except BaseException:
        container.close()
        raise
    return container, stream


def _stream_info(container, stream) -> dict:
    cc = stream.codec_context
    rate = stream.average_rate or stream.base_rate
    tb = stream.time_base or Fraction(1, 1)
    if stream.duration:
        duration = float(stream.duration * tb)
    elif container.duration:
        duration = container.duration / 1e6
    else:
        duration = 0.0
    name = _DECODER_TO_CODEC.get(cc.name, cc.name)
    intra = name in ("mjpeg", "png", "rawvideo", "ffv1", "prores", "dnxhd", "huffyuv")
    desc = getattr(cc.codec, "long_name", name)
    return {
        "codec": name,
        "codec_long": desc,
        "width": cc.width,
        "height": cc.height,
        "fps": float(rate) if rate else 0.0,
        "time_base": (tb.numerator, tb.denominator),
        "duration": duration,
        "exports_mvs": name in _MV_CODECS,
        "intra_only": intra,
    }


def _check_complete(path: str, stream, seen: int) -> None:
    declared = stream.frames
    # One frame of slack: muxers count a leading timestamp gap as a frame (the native
    # reader checks the container's index instead where it has one).
    if declared and seen + 1 < declared:
        raise VideoError(
            f"{path}: the file is truncated: the container declares {declared} video frames, "
            f"the file holds {seen}"
        )


class _PtsGuess:
    """FFmpeg's guess_correct_pts (what the native reader's best_effort_timestamp is)."""

    def __init__(self):
        self.faulty_pts = self.faulty_dts = 0
        self.last_pts = self.last_dts = -(2**63)

    def __call__(self, pts, dts):
        if dts is not None:
            self.faulty_dts += dts <= self.last_dts
            self.last_dts = dts
        elif pts is not None:
            self.last_dts = pts
        if pts is not None:
            self.faulty_pts += pts <= self.last_pts
            self.last_pts = pts
        elif dts is not None:
            self.last_pts = dts
        if (self.faulty_pts <= self.faulty_dts or dts is None) and pts is not None:
            return pts
        return dts if dts is not None else -(2**63)


def _decoded_frames(path: str, *, mvs: bool, fast: bool, pixels: bool):
    """Yield ``(type, pts, frame)`` in display order.

    :func:`_rows` and :func:`_rgb` read a frame's vectors and pixels (only for the frames
    that need them).

    Raises:
        RuntimeError: decoding failed, or the frame size changed mid-stream (the message
            names the file).
    """
    av = _av()
    container, stream = _open(path)
    try:
        cc = stream.codec_context
        opts = {}
        if mvs:
            opts["flags2"] = "+export_mvs"
        if fast and not pixels:
            opts["skip_loop_filter"] = "all"
            opts["skip_idct"] = "all"
        cc.options = opts
        cc.thread_count = 1
        cc.thread_type = "NONE"
        guess = _PtsGuess()
        n = 0
        w, h = cc.width, cc.height
        try:
            for frame in container.decode(stream):
                if (frame.width, frame.height) != (w, h):
                    raise VideoError(
                        f"{path}: frame {n} is {frame.width}x{frame.height}, the stream "
                        f"{w}x{h}: size changes are not supported"
                    )
                yield _type_code(frame.pict_type), guess(frame.pts, frame.dts), frame
                n += 1
        except (av.FFmpegError, *_DAMAGE) as e:
            raise VideoError(
                f"{path}: decoding failed after frame {n}: {type(e).__name__}: {e}"
            ) from e
    finally:
        container.close()


def _rows(frame):
    sd = frame.side_data.get("MOTION_VECTORS")
    return sd.to_ndarray() if sd is not None else None


def _rgb(frame) -> np.ndarray:
    return frame.to_ndarray(format="rgb24")


def _key_frames(pkts: list, keys: list[int]) -> list[int]:
    """Display-order frame of each key packet, as the native index computes it.

    The rank of its pts where every packet has a distinct pts, else its packet number; GOP 0
    starts at 0.
    """
    pts = [p for p, _ in pkts]
    if pts and None not in pts and len(set(pts)) == len(pts):
        rank = {p: i for i, p in enumerate(sorted(pts))}
        out = [0] + [rank[pts[k]] for k in keys[1:]]
        if all(a < b for a, b in zip(out, out[1:], strict=False)):
            return out
    return [0] + list(keys[1:]) if keys else []


def probe(path: str, decode: bool = True) -> dict:
    """Stream facts (the same dict as ``mvaccel._video.probe``)."""
    container, stream = _open(path)
    try:
        info = _stream_info(container, stream)
        keys, n, pts_ok, pkts, seen = [], 0, True, [], 0
        try:
            for pkt in container.demux(stream):
                seen += pkt.dts is not None or pkt.size > 0  # not the demuxer's final flush
                if pkt.size == 0:
                    continue
                if pkt.is_keyframe or n == 0:
                    keys.append(n)
                pkts.append((pkt.pts, pkt.dts))
                pts_ok &= pkt.pts is not None and pkt.dts is not None
                n += 1
        except (_av().FFmpegError, *_DAMAGE) as e:
            raise VideoError(f"{path}: read error after packet {n}: {type(e).__name__}: {e}") from e
        _check_complete(path, stream, seen)
    finally:
        container.close()
    if n == 0:
        raise VideoError(f"{path}: the video stream has no packets")
    info.update(
        num_packets=n,
        key_packets=keys,
        key_frames=_key_frames(pkts, keys),
        chunks_independent=pts_ok,
        decoded=decode,
    )
    types, pts = [], []
    if decode:
        for t, p, _ in _decoded_frames(path, mvs=False, fast=True, pixels=False):
            types.append(t)
            pts.append(p)
        if not types:
            raise VideoError(f"{path}: no video frame could be decoded")
    info["frame_types"] = np.asarray(types, np.uint8)
    info["pts"] = np.asarray(pts, np.int64)
    return info


def _pixel_motion(rows, h: int, w: int):
    """Per-pixel vectors of both lists: ``v (2, 2, H, W)``, ``has (2, H, W)``."""
    v = np.zeros((2, 2, h, w), np.float32)
    has = np.zeros((2, h, w), bool)
    if rows is None:
        return v, has
    for r in rows:
        lst = 1 if r["source"] > 0 else 0
        bx, by = int(r["dst_x"]) - int(r["w"]) // 2, int(r["dst_y"]) - int(r["h"]) // 2
        x0, x1 = max(0, bx), min(w, bx + int(r["w"]))
        y0, y1 = max(0, by), min(h, by + int(r["h"]))
        if x1 <= x0 or y1 <= y0:
            continue
        s = int(r["motion_scale"])
        if s > 0:
            vx, vy = np.float32(r["motion_x"]) / s, np.float32(r["motion_y"]) / s
        else:
            vx, vy = r["src_x"] - r["dst_x"], r["src_y"] - r["dst_y"]
        v[lst, 0, y0:y1, x0:x1] = vx
        v[lst, 1, y0:y1, x0:x1] = vy
        has[lst, y0:y1, x0:x1] = True
    return v, has


def _cell_sums(a: np.ndarray, b: int, hb: int, wb: int) -> np.ndarray:
    """Sum ``(..., H, W)`` over ``b x b`` cells (the last ones partial)."""
    h, w = a.shape[-2:]
    pad = [(0, 0)] * (a.ndim - 2) + [(0, hb * b - h), (0, wb * b - w)]
    a = np.pad(a, pad)
    return a.reshape(*a.shape[:-2], hb, b, wb, b).sum(axis=(-3, -1))


def _grid(v, has, b: int, hb: int, wb: int):
    """Area-weighted mean of the covered pixels of each cell, and the mask."""
    cnt = _cell_sums(has.astype(np.float64), b, hb, wb)
    s = _cell_sums(v.astype(np.float64) * has, b, hb, wb)
    mv = np.where(cnt > 0, s / np.maximum(cnt, 1), 0).astype(np.float32)
    return mv, cnt > 0


def _bilinear(img: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    x = np.clip(x, 0, w - 1).astype(np.float32)
    y = np.clip(y, 0, h - 1).astype(np.float32)
    x0, y0 = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    fx, fy = (x - x0)[..., None], (y - y0)[..., None]
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    im = img.astype(np.float32)
    top = im[y0, x0] + fx * (im[y0, x1] - im[y0, x0])
    bot = im[y1, x0] + fx * (im[y1, x1] - im[y1, x0])
    return top + fy * (bot - top)


def _nearest(a: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``a[..., round(y), round(x)]`` with edges clamped (round half up)."""
    h, w = a.shape[-2:]
    xi = np.clip(np.floor(x + np.float32(0.5)).astype(np.int64), 0, w - 1)
    yi = np.clip(np.floor(y + np.float32(0.5)).astype(np.int64), 0, h - 1)
    return a[..., yi, xi]


def read(
    path: str,
    block: int = 8,
    residual: bool = False,
    rgb: int = 0,
    accumulate: bool = False,
    fill_iframe: int = 0,
    b_list: int = 0,
    threads: int = 1,
    fast: bool = True,
    frames=(),
    _hint: bool = True,
) -> dict:
    """Decode a video like ``mvaccel._video.read`` (same arguments and result dict)."""
    info = probe(path, decode=False)  # also rejects truncated files
    if info["intra_only"]:
        raise ValueError(f"{path}: codec '{info['codec']}' is intra-only: it has no motion vectors")
    if not info["exports_mvs"]:
        raise ValueError(
            f"{path}: FFmpeg does not export motion vectors for codec '{info['codec']}'"
        )
    frames = [int(f) for f in frames]
    if any(f < 0 for f in frames):
        raise ValueError(f"{path}: frame index {min(frames)} is negative")
    h, w = info["height"], info["width"]
    hb, wb = -(-h // block), -(-w // block)
    pixels = residual or rgb != 0
    stop_after = max(frames) if frames else None
    want = set(frames) if frames else None
    types, pts, grids, masks, pms, rgbs = [], [], [], [], [], []
    need_pm = residual or accumulate
    # Memory and work bounded by the frames asked for: frames before the I-frame that
    # starts the first asked frame's GOP keep only their type (their pixels and per-pixel
    # motion are dropped), vectors are rasterized only where a result needs them, and
    # decoding stops at the first anchor at or after the last asked frame (B-frames before
    # it use it).
    lo = min(frames) if frames else 0
    # The index's key frames say where the first asked frame's GOP starts before decoding
    # (checked below: the frame there must be an I-frame).
    keep_from = max([k for k in info["key_frames"] if k <= lo], default=0) if _hint else 0
    zero_grid = np.zeros((2, hb, wb), np.float32), np.zeros((hb, wb), bool)
    for t, p, frame in _decoded_frames(path, mvs=True, fast=fast, pixels=pixels):
        i = len(types)
        if _hint and i == keep_from and t != _I:
            return read(path, block, residual, rgb, accumulate, fill_iframe, b_list, threads,
                        fast, frames, _hint=False)  # fmt: skip
        if t == _I and keep_from <= i <= lo:
            for j in range(keep_from, i):
                pms[j] = rgbs[j] = None
            keep_from = i
        live = i >= keep_from
        if want is None or i in want or i + 1 in want or (live and need_pm):
            v, has = _pixel_motion(_rows(frame), h, w)
            lst = b_list if t == _B else 0
            g, m = _grid(v[lst], has[lst], block, hb, wb)
        else:
            v = has = None
            g, m = zero_grid
        types.append(t)
        pts.append(p)
        grids.append(g)
        masks.append(m)
        pms.append((v, has) if need_pm and live else None)
        rgbs.append(_rgb(frame) if pixels and live else None)
        # Later frames change nothing before them unless a B-frame waits on its next anchor.
        if stop_after is not None and i >= stop_after and (not need_pm or t != _B):
            break
    total = len(types)
    if total == 0:
        raise VideoError(f"{path}: no video frame could be decoded")
    for f in frames:
        if f >= total:
            raise ValueError(f"{path}: frame {f} is out of range: the video has {total} frames")
    types_a = np.asarray(types, np.uint8)
    # Per-frame grids stay a list (frames nobody asked for share one zero grid): stacking
    # every frame at block=1 would hold the whole video's per-pixel field.
    mv = grids
    res = {} if residual else None
    if need_pm:
        anchors = [i for i in range(total) if types[i] != _B]
        prev_anchor = [None] * total
        next_anchor = [None] * total
        last = None
        for i in range(total):
            prev_anchor[i] = last
            if types[i] != _B:
                last = i
        nxt = None
        for i in range(total - 1, -1, -1):
            next_anchor[i] = nxt
            if types[i] != _B:
                nxt = i
        acc = {}
        iframe_of = {}
        cur_i = None
        for i in range(total):
            if types[i] == _I:
                cur_i = i
            iframe_of[i] = cur_i
        order = [i for i in anchors + [i for i in range(total) if types[i] == _B] if pms[i]]
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        for i in order:
            v, has = pms[i]
            r0 = prev_anchor[i]
            r1 = next_anchor[i] if types[i] == _B else None
            if accumulate:
                if types[i] == _I:
                    a = np.zeros((2, h, w), np.float32)
                else:
                    a = np.zeros((2, h, w), np.float32)
                    if r0 is not None:
                        a[:] = acc[r0]
                    r1m = r1 if (r1 is not None and types[r1] != _I) else None
                    if r1m is not None:
                        u1 = has[1] & ~(has[0] & (r0 is not None))
                        t1 = v[1] + _nearest(acc[r1m], xs + v[1][0], ys + v[1][1])
                        a = np.where(u1, t1, a)
                    if r0 is not None:
                        t0 = v[0] + _nearest(acc[r0], xs + v[0][0], ys + v[0][1])
                        a = np.where(has[0], t0, a)
                    s = _cell_sums(a.astype(np.float64), block, hb, wb)
                    n = _cell_sums(np.ones((h, w)), block, hb, wb)
                    mv[i] = (s / n).astype(np.float32)
                acc[i] = a
                if types[i] == _I:
                    mv[i] = zero_grid[0]
            if residual and (want is None or i in want):
                cur = rgbs[i].astype(np.int32)
                if accumulate:
                    ir = rgbs[iframe_of[i]] if iframe_of[i] is not None else None
                    if ir is None:
                        pred = np.zeros_like(cur)
                    else:
                        pred = np.moveaxis(
                            _nearest(np.moveaxis(ir, -1, 0), xs + acc[i][0], ys + acc[i][1]),
                            0,
                            -1,
                        ).astype(np.int32)
                    res[i] = cur - pred
                elif types[i] == _I:
                    res[i] = np.zeros_like(cur)
                else:
                    u0 = has[0] & (r0 is not None)
                    u1 = has[1] & (r1 is not None)
                    pred = np.zeros(cur.shape, np.float32)
                    if r0 is not None:
                        pred[:] = rgbs[r0]
                        p0 = _bilinear(rgbs[r0], xs + v[0][0], ys + v[0][1])
                        pred = np.where(u0[..., None], p0, pred)
                    if r1 is not None:
                        p1 = _bilinear(rgbs[r1], xs + v[1][0], ys + v[1][1])
                        pred = np.where((u1 & ~u0)[..., None], p1, pred)
                        if r0 is not None:
                            both = np.float32(0.5) * (p0 + p1)
                            pred = np.where((u0 & u1)[..., None], both, pred)
                    res[i] = cur - np.floor(pred + np.float32(0.5)).astype(np.int32)
    if not accumulate:
        for i in range(total):
            if types[i] == _I:
                mv[i] = mv[i - 1] if (fill_iframe == 0 and i > 0) else zero_grid[0]
    gop = np.cumsum([(i > 0 and types[i] == _I) for i in range(total)]).astype(np.int64)
    sel = frames if frames else list(range(total))
    out = {
        "mv": np.stack([mv[i] for i in sel]),
        "mask": np.stack([masks[i] for i in sel]).astype(np.uint8),
        "frame_type": types_a[sel],
        "pts": np.asarray(pts, np.int64)[sel],
        "gop_index": gop[sel],
        "frame_index": np.asarray(sel, np.int64),
        "residual": None,
        "total_decoded": total,
        "parallel": False,
        "block": block,
        "width": w,
        "height": h,
        "fps": info["fps"],
        "time_base": info["time_base"],
    }
    if residual:
        out["residual"] = np.stack([np.moveaxis(res[i], -1, 0) for i in sel]).astype(np.int16)
    if rgb == 2:
        out["rgb"] = np.stack([np.moveaxis(rgbs[i], -1, 0) for i in sel])
        out["rgb_index"] = np.asarray(sel, np.int64)
    elif rgb == 1:
        idx = []
        for g in sorted({int(gop[i]) for i in sel}):
            firsts = [i for i in range(total) if gop[i] == g and types[i] == _I]
            if firsts:
                idx.append(firsts[0])
        out["rgb"] = (
            np.stack([np.moveaxis(rgbs[i], -1, 0) for i in idx])
            if idx
            else np.zeros((0, 3, h, w), np.uint8)
        )
        out["rgb_index"] = np.asarray(idx, np.int64)
    else:
        out["rgb"] = np.zeros((0, 3, h, w), np.uint8)
        out["rgb_index"] = np.zeros(0, np.int64)
    return out


__all__ = ["probe", "read"]
