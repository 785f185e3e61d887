"""Host checks mirroring the C++ ones: the fake (meta) kernels' and the NVRTC launchers'.

The argument checks are worded as csrc/common.h words them for the kernels; the
planned-allocation checks are those of csrc/ops/memory.h.
"""

from __future__ import annotations

import math
import os

import torch
from torch import Tensor

# c10's names of the dtypes, as TORCH_CHECK prints them in the kernels' messages.
_C10_NAMES = {
    torch.float32: "Float",
    torch.float64: "Double",
    torch.float16: "Half",
    torch.bfloat16: "BFloat16",
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


# ---- planned-allocation checks (csrc/ops/memory.h), for the host code that launches kernels
# without the C++ checks (the NVRTC path, mvaccel/ops/_nvrtc.py) ------------------------------

_GIB = 1024.0**3


def _cpu_available_bytes() -> float:
    avail = math.inf
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = float(line.split()[1]) * 1024
                    break
    except OSError:
        pages, page = os.sysconf("SC_AVPHYS_PAGES"), os.sysconf("SC_PAGESIZE")
        if pages > 0 and page > 0:
            avail = float(pages * page)
    try:  # a cgroup v2 limit ("max": none, does not parse)
        with open("/sys/fs/cgroup/memory.max") as fm, open("/sys/fs/cgroup/memory.current") as fc:
            limit, used = int(fm.read()), int(fc.read())
        if limit > used:
            avail = min(avail, float(limit - used))
    except (OSError, ValueError):
        pass
    return avail


def available_bytes(device: torch.device) -> float:
    """Bytes a call may still allocate on ``device``, as csrc/ops/memory.h counts them.

    CPU: ``MemAvailable`` of /proc/meminfo, lowered by a cgroup v2 limit. CUDA: the device's
    free memory plus what the caching allocator holds unused. ``inf`` elsewhere (meta, ...) or
    when unknown.
    """
    device = torch.device(device)
    if device.type == "cpu":
        return _cpu_available_bytes()
    if device.type == "cuda":
        try:
            free, _ = torch.cuda.mem_get_info(device)
        except RuntimeError:
            return math.inf
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return float(free + max(cached, 0))
    return math.inf


def check_fits_in_memory(op: str, device: torch.device, nbytes: float, what: str) -> None:
    """``check_fits_in_memory`` of csrc/ops/memory.h: raise before allocating too much.

    Args:
        op: the op's name, first word of the message.
        device: where the call allocates.
        nbytes: bytes the call is about to allocate.
        what: what those bytes hold, for the message.

    Raises:
        torch.OutOfMemoryError: ``nbytes`` exceeds :func:`available_bytes` of ``device``.
    """
    avail = available_bytes(device)
    if nbytes <= avail:
        return
    raise torch.OutOfMemoryError(
        f"{op}: this call needs about {nbytes / _GIB:.2f} GiB of {torch.device(device)} memory "
        f"({what}) but only {avail / _GIB:.2f} GiB is available; use smaller inputs or fewer "
        "at once"
    )


def bytes_of(t: Tensor, numel: float) -> float:
    """Bytes of ``numel`` elements of ``t``'s dtype (memory.h)."""
    return numel * t.element_size()


def copy_bytes(t: Tensor) -> float:
    """Bytes ``t.contiguous()`` allocates, 0 when ``t`` is contiguous (memory.h)."""
    return 0.0 if t.is_contiguous() else bytes_of(t, t.numel())


def row_copy_bytes(t: Tensor) -> float:
    """Bytes of a copy with unit stride along W, 0 when ``t`` has it (off_checks.h)."""
    return 0.0 if t.shape[-1] <= 1 or t.stride(-1) == 1 else bytes_of(t, t.numel())


def tvl1_planned_bytes(
    I0: Tensor, I1: Tensor, sizes: list[tuple[int, int]], cuda: bool | None = None
) -> float:
    """``tvl1_planned_bytes`` of csrc/ops/tvl1/tvl1_checks.h: what a TV-L1 solve allocates.

    Args:
        I0: ``(N, H, W)`` float32 first images.
        I1: second images, as ``I0``.
        sizes: the pyramid's level sizes, finest first.
        cuda: count the CUDA solver's planes (every pair at once, double-buffered state) or
            the CPU solver's (one per thread in flight); default: ``I0``'s device.

    Returns:
        Bytes: the output, the contiguous copies of the inputs and the solver's planes.
    """
    n, h, w = I0.shape
    if n == 0:
        return 0.0
    below = float(sum(a * b for a, b in sizes[1:]))
    hw = float(h * w)
    if I0.is_cuda if cuda is None else cuda:
        planes = n * (2.0 + 11.0 + 6.0 + 4.0) * hw + n * 2.0 * below
    else:
        threads = torch.get_num_threads()
        solvers = min(n, threads) if n > 1 and n >= threads else 1
        planes = n * 2.0 * hw + solvers * (12.0 * hw + 2.0 * (hw + below))
    return 4.0 * planes + copy_bytes(I0) + copy_bytes(I1)
