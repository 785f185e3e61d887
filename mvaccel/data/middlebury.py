"""Middlebury optical-flow pairs with ground truth (Baker et al.): TVNet's Table 1 data.

The standard layout of the ``other-data`` / ``other-gt-flow`` archives: one folder per
sequence, ``<seq>/frame10.png`` and ``<seq>/frame11.png`` (the pair), ``<seq>/flow10.flo`` (the
forward flow frame10 -> frame11, Middlebury ``.flo``; vectors above 1e9 in magnitude are
unknown). Images and flow may sit under one root or two (``other-data/`` and
``other-gt-flow/``); only sequences with ground truth are read (the eight public ones:
Dimetrodon, Grove2, Grove3, Hydrangea, RubberWhale, Urban2, Urban3, Venus).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..flow.io import read_flo

#: ``.flo`` values above this magnitude mark unknown flow.
UNKNOWN_FLOW = 1e9


@dataclass(frozen=True)
class FlowPair:
    """One image pair with its ground-truth flow.

    Attributes:
        name: the sequence (``"RubberWhale"``).
        i0: ``(3, H, W)`` uint8 first frame (frame10).
        i1: ``(3, H, W)`` uint8 second frame (frame11).
        flow: ``(2, H, W)`` float32 forward flow in pixels, ``i1(x + flow(x)) ~ i0(x)``;
            unknown vectors set to 0.
        valid: ``(H, W)`` bool, the pixels with known flow.
    """

    name: str
    i0: Tensor
    i1: Tensor
    flow: Tensor
    valid: Tensor


def _read_rgb(path: Path) -> Tensor:
    from PIL import Image

    if not path.is_file():
        raise FileNotFoundError(f"Middlebury: image not found: {path}")
    with Image.open(path) as im:
        arr = np.asarray(im.convert("RGB"))
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)


def middlebury_pairs(
    root: str | Path,
    gt_root: str | Path | None = None,
    frames: tuple[str, str] = ("frame10.png", "frame11.png"),
    flow: str = "flow10.flo",
) -> list[FlowPair]:
    """The Middlebury pairs that have ground truth, sorted by sequence name.

    Args:
        root: folder of sequence folders holding the frames (``other-data``).
        gt_root: folder of sequence folders holding ``flow`` (``other-gt-flow``); default
            ``root``.
        frames: the pair's file names in a sequence folder.
        flow: the ground truth's file name.

    Returns:
        :class:`FlowPair` per sequence with a ground-truth file.

    Raises:
        FileNotFoundError: ``root`` missing, no sequence with ground truth, or a frame missing.
        ValueError: a flow whose size differs from its frames'.
    """
    root = Path(root)
    gt_root = Path(gt_root) if gt_root is not None else root
    if not root.is_dir():
        raise FileNotFoundError(f"Middlebury: no such folder: {root}")
    seqs = sorted(p.parent.name for p in gt_root.glob(f"*/{flow}"))
    if not seqs:
        raise FileNotFoundError(
            f"Middlebury: no '<sequence>/{flow}' under {gt_root} (the ground truth: other-gt-flow)"
        )
    out = []
    for name in seqs:
        i0, i1 = (_read_rgb(root / name / f) for f in frames)
        u = read_flo(gt_root / name / flow)
        if i0.shape != i1.shape or u.shape[-2:] != i0.shape[-2:]:
            raise ValueError(
                f"Middlebury: {name}: frames {tuple(i0.shape)}, {tuple(i1.shape)} and flow "
                f"{tuple(u.shape)} differ in size"
            )
        valid = (u.abs() < UNKNOWN_FLOW).all(0)
        out.append(FlowPair(name, i0, i1, torch.where(valid, u, torch.zeros_like(u)), valid))
    return out
