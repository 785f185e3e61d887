"""Storage and evaluation of flow fields: Middlebury .flo, TSN JPEG pairs, EPE, AAE."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .._io import atomic_path, atomic_write_bytes

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
    atomic_write_bytes(path, header + body)
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
            f"{fn}: expected two flows of the same shape (..., 2, H, W), e.g. (N, 2, H, W); got "
            f"{tuple(flow.shape)} and {tuple(gt.shape)}"
        )
    gt = gt.to(device=flow.device, dtype=flow.dtype if flow.is_floating_point() else None)
    valid = (gt.abs() < FLO_UNKNOWN).all(-3)
    return flow, gt, valid


def epe(flow: Tensor, gt: Tensor, valid: Tensor | None = None) -> Tensor:
    """Average end-point error ``mean |flow - gt|`` over the pixels with a known ground truth.

    The package's one EPE: the evaluation metric (``float(epe(...))``) and TVNet's training
    loss (eq. 14; :func:`mvaccel.distill.epe` is this function).

    Args:
        flow: ``(..., 2, H, W)`` estimate in pixels.
        gt: ground truth, same shape; vectors with a component over 1e9 (Middlebury's unknown)
            are ignored.
        valid: optional ``(..., H, W)`` bool mask of the pixels to count.

    Returns:
        0-dim tensor in pixels, differentiable in ``flow``.

    Raises:
        ValueError: shapes that differ or are not ``(..., 2, H, W)``; a ``valid`` of another
            shape.
    """
    flow, gt, known = _pair(flow, gt, "epe")
    if valid is not None:
        if valid.shape != known.shape:
            raise ValueError(
                f"epe: valid must be (..., H, W) = {tuple(known.shape)}, got {tuple(valid.shape)}"
            )
        known = known & valid.to(known.device, torch.bool)
    d = torch.linalg.vector_norm(flow - gt, dim=-3)
    return d[known].mean()


def aae(flow: Tensor, gt: Tensor) -> float:
    """Average angular error (Barron et al.) in degrees, between ``(u, v, 1)`` vectors.

    Args:
        flow: ``(..., 2, H, W)`` estimate in pixels.
        gt: ground truth, same shape; unknown vectors (> 1e9) are ignored.

    Returns:
        The AAE in degrees.
    """
    flow, gt, valid = _pair(flow, gt, "aae")
    flow, gt = flow.double(), gt.double()
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
        uint8 tensor of the same shape (0 <-> -B, 255 <-> +B; 0 px maps to 128; infinities
        clip to 0 / 255).

    Raises:
        ValueError: ``bound <= 0``, or NaN values (a NaN has no storage value: clamping would
            silently store it as ``-bound``).
    """
    if bound <= 0:
        raise ValueError(f"quantize: bound must be > 0, got {bound}")
    f = torch.as_tensor(flow).float()
    nan = torch.isnan(f)
    if bool(nan.any()):
        raise ValueError(
            f"quantize: the flow holds {int(nan.sum())} NaN value(s) of {f.numel()}; "
            "a NaN cannot be stored as a JPEG level (fix the source or torch.nan_to_num it)"
        )
    f = f.clamp(-bound, bound)
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

    Raises:
        ValueError: not ``(T, 2, H, W)``, or NaN values (see :func:`quantize`).
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
            with atomic_path(path) as tmp:
                Image.fromarray(q[t, c]).save(tmp, format="JPEG", quality=quality)
            paths.append(path)
    return paths
