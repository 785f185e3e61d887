"""Storage and evaluation of flow fields: Middlebury .flo, TSN JPEG pairs, EPE, AAE."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

FLO_TAG = 202021.25
#: |value| above this marks an unknown flow vector in .flo files.
FLO_UNKNOWN = 1e9


def _as_chw(flow: Tensor | np.ndarray, fn: str) -> np.ndarray:
    f = flow.detach().cpu().numpy() if isinstance(flow, Tensor) else np.asarray(flow)
    if f.ndim == 4 and f.shape[0] == 1:
        f = f[0]
    if f.ndim != 3 or (f.shape[0] != 2 and f.shape[-1] != 2):
        raise ValueError(f"{fn}: expected a (2, H, W) or (H, W, 2) flow, got shape {f.shape}")
    if f.shape[0] != 2:
        f = np.moveaxis(f, -1, 0)
    return f.astype(np.float32, copy=False)


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
    tmp.replace(path)


def write_flo(path: str | Path, flow: Tensor | np.ndarray) -> Path:
    """Write a Middlebury ``.flo`` file atomically (temp file + rename).

    Args:
        path: destination.
        flow: ``(2, H, W)``, ``(1, 2, H, W)`` or ``(H, W, 2)`` flow in pixels.

    Returns:
        The path written.
    """
    f = _as_chw(flow, "write_flo")
    _, h, w = f.shape
    header = np.array([FLO_TAG], "<f4").tobytes() + np.array([w, h], "<i4").tobytes()
    body = np.ascontiguousarray(np.moveaxis(f, 0, -1)).astype("<f4").tobytes()
    path = Path(path)
    _atomic_write_bytes(path, header + body)
    return path


def read_flo(path: str | Path) -> Tensor:
    """Read a Middlebury ``.flo`` file.

    Returns:
        ``(2, H, W)`` float32 tensor in pixels (unknown vectors keep their > 1e9 values).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a .flo file (tag, size).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"read_flo: no such file: {path}")
    raw = path.read_bytes()
    if len(raw) < 12 or np.frombuffer(raw[:4], "<f4")[0] != np.float32(FLO_TAG):
        raise ValueError(f"read_flo: {path} is not a Middlebury .flo file (bad tag)")
    w, h = (int(v) for v in np.frombuffer(raw[4:12], "<i4"))
    if w <= 0 or h <= 0 or len(raw) != 12 + 8 * w * h:
        raise ValueError(
            f"read_flo: {path} says {w}x{h} but holds {len(raw) - 12} bytes of data "
            f"(expected {8 * max(w, 0) * max(h, 0)})"
        )
    f = np.frombuffer(raw[12:], "<f4").reshape(h, w, 2)
    return torch.from_numpy(np.moveaxis(f, -1, 0).copy())


def to_color(flow: Tensor | np.ndarray, max_norm: float | None = None) -> np.ndarray:
    """Deprecated: :func:`mvaccel.viz.flow_to_image` (this returns numpy ``(H, W, 3)``)."""
    from ..viz import _deprecated, flow_to_image

    _deprecated("mvaccel.flow.to_color", "mvaccel.viz.flow_to_image")
    return flow_to_image(_as_chw(flow, "to_color"), max_norm)


def _pair(flow: Tensor, gt: Tensor, fn: str) -> tuple[Tensor, Tensor, Tensor]:
    flow, gt = torch.as_tensor(flow), torch.as_tensor(gt)
    if flow.shape != gt.shape or flow.dim() < 3 or flow.shape[-3] != 2:
        raise ValueError(
            f"{fn}: expected two flows of the same shape (..., 2, H, W), got "
            f"{tuple(flow.shape)} and {tuple(gt.shape)}"
        )
    flow, gt = flow.double(), gt.to(flow.device).double()
    valid = (gt.abs() < FLO_UNKNOWN).all(-3)
    return flow, gt, valid


def epe(flow: Tensor, gt: Tensor) -> float:
    """Average end-point error ``mean |flow - gt|`` over pixels with a known ground truth.

    Args:
        flow: ``(..., 2, H, W)`` estimate in pixels.
        gt: ground truth, same shape; vectors with a component over 1e9 are ignored.

    Returns:
        The EPE in pixels.
    """
    flow, gt, valid = _pair(flow, gt, "epe")
    d = torch.linalg.vector_norm(flow - gt, dim=-3)
    return float(d[valid].mean())


def aae(flow: Tensor, gt: Tensor) -> float:
    """Average angular error (Barron et al.) in degrees, between ``(u, v, 1)`` vectors.

    Args:
        flow: ``(..., 2, H, W)`` estimate in pixels.
        gt: ground truth, same shape; unknown vectors (> 1e9) are ignored.

    Returns:
        The AAE in degrees.
    """
    flow, gt, valid = _pair(flow, gt, "aae")
    u, v = flow.unbind(-3)
    gu, gv = gt.unbind(-3)
    cos = (u * gu + v * gv + 1) / torch.sqrt((u * u + v * v + 1) * (gu * gu + gv * gv + 1))
    return float(torch.rad2deg(torch.arccos(cos.clamp(-1, 1)))[valid].mean())


def quantize(flow: Tensor, bound: float = 20.0) -> Tensor:
    """dense_flow's storage mapping: clip to ``[-bound, bound]``, ``round(255 (v + B) / (2 B))``.

    Args:
        flow: any shape, pixels.
        bound: clipping bound B in pixels (TSN: 20).

    Returns:
        uint8 tensor of the same shape (0 <-> -B, 255 <-> +B; 0 px maps to 128).
    """
    if bound <= 0:
        raise ValueError(f"quantize: bound must be > 0, got {bound}")
    f = torch.as_tensor(flow).float().clamp(-bound, bound)
    return torch.round(255.0 * (f + bound) / (2 * bound)).to(torch.uint8)


def dequantize(q: Tensor, bound: float = 20.0) -> Tensor:
    """Inverse of :func:`quantize`: ``q / 255 * 2B - B`` (error at most ``B / 255`` px)."""
    if bound <= 0:
        raise ValueError(f"dequantize: bound must be > 0, got {bound}")
    return torch.as_tensor(q).float() / 255.0 * (2 * bound) - bound


def write_flow_jpgs(
    folder: str | Path,
    flows: Tensor,
    start: int = 1,
    bound: float = 20.0,
    quality: int = 95,
) -> list[Path]:
    """Write flows as dense_flow / TSN JPEG pairs ``flow_x_%05d.jpg``, ``flow_y_%05d.jpg``.

    Args:
        folder: output folder (created).
        flows: ``(T, 2, H, W)`` flows in pixels.
        start: number of the first pair (dense_flow counts from 1).
        bound: quantization bound in pixels (see :func:`quantize`).
        quality: JPEG quality.

    Returns:
        The paths written, x then y for each flow. Each file is written atomically.
    """
    from PIL import Image

    if flows.dim() != 4 or flows.shape[1] != 2:
        raise ValueError(f"write_flow_jpgs: expected (T, 2, H, W) flows, got {tuple(flows.shape)}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    q = quantize(flows, bound).cpu().numpy()
    paths = []
    for t in range(q.shape[0]):
        for c, axis in enumerate("xy"):
            path = folder / f"flow_{axis}_{start + t:05d}.jpg"
            tmp = path.with_name(f".{path.name}.tmp")
            Image.fromarray(q[t, c]).save(tmp, format="JPEG", quality=quality)
            tmp.replace(path)
            paths.append(path)
    return paths
