"""Checks of the fake (meta) kernels, worded as csrc/common.h words them for the kernels."""

from __future__ import annotations

import torch
from torch import Tensor

# c10's names of the dtypes a user may pass by mistake (the kernels' messages print these).
_C10_NAMES = {
    torch.bool: "Bool",
    torch.uint8: "Byte",
    torch.int8: "Char",
    torch.int16: "Short",
    torch.int32: "Int",
    torch.int64: "Long",
    torch.complex64: "ComplexFloat",
    torch.complex128: "ComplexDouble",
}


def dtype_name(dtype: torch.dtype) -> str:
    """The dtype as a kernel's error message names it (``torch.int32`` -> ``"Int"``)."""
    return _C10_NAMES.get(dtype, str(dtype).removeprefix("torch."))


def check_dim(op: str, name: str, t: Tensor, dim: int, layout: str) -> None:
    """``check_dim`` of csrc/common.h."""
    torch._check(
        t.dim() == dim,
        lambda: (
            f"{op}: expected {name} of shape {layout} ({dim} dimensions), got shape {list(t.shape)}"
        ),
    )


def check_floating(op: str, name: str, t: Tensor) -> None:
    """``check_floating`` of csrc/common.h."""
    torch._check(
        t.is_floating_point(),
        lambda: (
            f"{op}: expected {name} to be float32, float64, float16 or bfloat16, got "
            f"{dtype_name(t.dtype)}"
        ),
    )
