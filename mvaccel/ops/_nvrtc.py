"""The NVRTC GPU path: mvaccel's CUDA kernels compiled at first use through CuPy's NVRTC.

A build of ``mvaccel._C`` without nvcc (a CPU wheel, a node with only the driver) has no CUDA
kernels. When CuPy (``pip install mvaccel[cupy]``) and a GPU are present, this module compiles the
same kernel headers the nvcc build uses (``csrc/**/*_kernels.cuh``: device code only, no ATen)
for the device's architecture, caches the binary on disk and registers Python CUDA kernels for
every op (forward and the private backward ops) with ``torch.library``. Autograd formulas and fake
kernels are the ops' own (``mvaccel/ops/*.py``), so ``backward`` and ``torch.compile`` work as on
an nvcc build.

Backend selection (``MVACCEL_GPU_BACKEND``):

- ``auto`` (default): the nvcc-built kernels when ``mvaccel._C`` has them, else NVRTC.
- ``nvrtc``: NVRTC even on an nvcc build (to test and compare the two paths).
- ``nvcc``: never NVRTC; a build without nvcc kernels then has no CUDA path.

Launches run on torch's current stream; tensors reach the kernels as their device pointers
(zero copy, what ``__cuda_array_interface__`` or DLPack would hand over). The host side of each
op (checks, planning, the launch grid) mirrors the op's ``.cu`` launcher line by line; kernel
arguments are numpy structured scalars whose layout mirrors the C structs (``*_math.cuh``),
which ``python_tests/test_nvrtc_compile.py`` checks against the compiled layout.

The cache lives in ``$MVACCEL_NVRTC_CACHE`` (default ``~/.cache/mvaccel/nvrtc``); an entry's key
hashes the kernel sources, the compile options, the architecture and the NVRTC version.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import json
import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .. import _io
from ._checks import (
    bytes_of,
    check_dim,
    check_fits_in_memory,
    check_floating,
    copy_bytes,
    dtype_name,
    row_copy_bytes,
    tvl1_planned_bytes,
)
from .off import _channels_last, _empty_frames

ENV_BACKEND = "MVACCEL_GPU_BACKEND"
ENV_CACHE = "MVACCEL_NVRTC_CACHE"
BACKENDS = ("auto", "nvcc", "nvrtc")
NVRTC_OPTIONS = ("-std=c++17", "--fmad=true", "-lineinfo")
INSTALL_HINT = "pip install 'mvaccel[cupy]' (CuPy for CUDA 12: cupy-cuda12x)"

# ---- kernel sources -------------------------------------------------------------------------


def source_dir() -> Path:
    """The directory holding ``device.cuh`` and ``ops/*/*.cuh`` (the repo's ``csrc``).

    Raises:
        FileNotFoundError: neither the source tree nor the packaged copy has the kernel headers.
    """
    pkg = Path(__file__).resolve().parents[1]
    for d in (pkg.parent / "csrc", pkg / "_csrc"):
        if (d / "device.cuh").is_file():
            return d
    raise FileNotFoundError(
        f"mvaccel's kernel headers (csrc/device.cuh) are in neither {pkg.parent / 'csrc'} nor "
        f"{pkg / '_csrc'}; the NVRTC path compiles them at run time"
    )


def device_headers(root: Path | None = None) -> list[Path]:
    """Every header device code may include (what a cache key hashes), sorted."""
    root = root or source_dir()
    found = {root / "device.cuh", root / "device_math.cuh"}
    found |= set(root.glob("ops/*/*.cuh")) | set(root.glob("ops/*/*_math.h"))
    return sorted(p for p in found if p.is_file())


@dataclass(frozen=True)
class Unit:
    """One NVRTC program: a kernel header and the instantiations the launchers use."""

    name: str
    header: str  # relative to source_dir()
    kernels: tuple[str, ...]  # name expressions


# torch dtype -> the kernels' scalar type (half_t / bfloat16_t: device.cuh, same bits as torch's)
SCALAR_TYPES = {
    torch.float32: "float",
    torch.float64: "double",
    torch.float16: "mvaccel::half_t",
    torch.bfloat16: "mvaccel::bfloat16_t",
}
NP_SCALARS = {"float": np.dtype("<f4"), "double": np.dtype("<f8")}


def _templated(ns: str, names: tuple[str, ...], types) -> tuple[str, ...]:
    return tuple(f"{ns}::{k}<{t}>" for k in names for t in types)


TVNET_KERNELS = (
    "pass_u_kernel",
    "pass_p_kernel",
    "pass_p_backward_kernel",
    "pass_g_kernel",
    "pass_u_backward_kernel",
)
RESAMPLE_INDEX_TYPES = ("int32_t", "int64_t")  # resample_cuda.cu fits_int32 picks one
OFF_KERNELS = ("forward_cl_kernel", "backward_cl_kernel")  # + the tiles' <T, kVec> kernels
TVL1_KERNELS = (
    "resize_kernel",
    "centred_grad_kernel",
    "warp_kernel",
    "median5_kernel",
    "tvl1_iterate_tiled",
)
UNITS = {
    "resample": Unit(
        "resample",
        "ops/resample/resample_kernels.cuh",
        tuple(
            f"mvaccel::resample::{k}<{t}, {i}{v}>"
            for k, variants in (
                ("forward_kernel", (", false", ", true")),
                ("backward_kernel", ("",)),
                ("forward_block_kernel", (", false", ", true")),
            )
            for t in SCALAR_TYPES.values()
            for i in RESAMPLE_INDEX_TYPES
            for v in variants
        ),
    ),
    "off": Unit(
        "off",
        "ops/off/off_kernels.cuh",
        tuple(
            f"mvaccel::off::{k}<{t}, {v}>"
            for k in ("forward_kernel", "backward_kernel")
            for t in SCALAR_TYPES.values()
            for v in ("false", "true")
        )
        + _templated("mvaccel::off", OFF_KERNELS, SCALAR_TYPES.values()),
    ),
    "tvnet": Unit(
        "tvnet",
        "ops/tvnet/tvnet_kernels.cuh",
        _templated("mvaccel::tvnet", TVNET_KERNELS, ("float", "double")),
    ),
    "tvl1": Unit(
        "tvl1",
        "ops/tvl1/tvl1_kernels.cuh",
        tuple(f"mvaccel::tvl1::{k}" for k in TVL1_KERNELS),
    ),
}

# ---- kernel arguments: numpy mirrors of the C structs ----------------------------------------


def _struct(fields) -> np.dtype:
    return np.dtype(fields, align=True)


PTR = np.dtype("<u8")
I32 = np.dtype("<i4")
I64 = np.dtype("<i8")
F32 = np.dtype("<f4")
F64 = np.dtype("<f8")
T = "T"  # the kernel's scalar type (float / double), per instantiation

RESAMPLE_PLAN = _struct(
    [(n, I64) for n in ("in_h", "in_w", "out_h", "out_w", "block_h", "block_w")]
    + [(n, F64) for n in ("scale_h", "scale_w", "factor_x", "factor_y")]
    + [("mode", I32), ("scale_values", I32)]
)
RESAMPLE_STRIDES = _struct([(n, I64) for n in ("s0", "s1", "s2", "s3")])
RESAMPLE_ARGS = _struct(
    [
        ("p", RESAMPLE_PLAN),
        ("src", RESAMPLE_STRIDES),
        ("dst", RESAMPLE_STRIDES),
        ("C", I64),
        ("N", I64),
    ]
)
OFF_VIEW = _struct([(n, I64) for n in ("sb", "ss", "sc", "sh")])
OFF_PLAN = _struct(
    [(n, I64) for n in ("B", "S", "C", "H", "W")] + [("cur", OFF_VIEW), ("prev", OFF_VIEW)]
)
OFF_FRAME_OUT = _struct(
    [("first", PTR), ("rest", PTR), ("sb_first", I64), ("sb_rest", I64), ("st_rest", I64)]
)
TVNET_DIMS = _struct([(n, I64) for n in ("N", "H", "W", "K")])
TVL1_TILE_STATE = _struct([(n, PTR) for n in ("u1", "u2", "p11", "p12", "p21", "p22")])

# C struct name (for the layout probe) -> its mirror
STRUCTS = {
    "mvaccel::resample::Plan": RESAMPLE_PLAN,
    "mvaccel::resample::Strides": RESAMPLE_STRIDES,
    "mvaccel::resample::Args": RESAMPLE_ARGS,
    "mvaccel::off::View": OFF_VIEW,
    "mvaccel::off::Plan": OFF_PLAN,
    "mvaccel::off::FrameOut<float>": OFF_FRAME_OUT,
    "mvaccel::tvnet::Dims": TVNET_DIMS,
}

# Each kernel's parameters, in order (the .cuh signatures).
SIGNATURES: dict[str, tuple] = {
    "mvaccel::resample::forward_kernel": (PTR, PTR, RESAMPLE_ARGS),
    "mvaccel::resample::backward_kernel": (PTR, PTR, RESAMPLE_ARGS),
    "mvaccel::resample::forward_block_kernel": (PTR, PTR, RESAMPLE_ARGS),
    "mvaccel::off::forward_kernel": (PTR, PTR, PTR, OFF_PLAN, I64),
    "mvaccel::off::backward_kernel": (PTR, OFF_VIEW, OFF_PLAN, OFF_FRAME_OUT, I64),
    "mvaccel::off::forward_cl_kernel": (PTR, PTR, PTR, OFF_PLAN, I64, I64, I64),
    "mvaccel::off::backward_cl_kernel": (PTR, OFF_VIEW, I64, OFF_PLAN, OFF_FRAME_OUT, I64),
    "mvaccel::tvnet::pass_u_kernel": (PTR, PTR, PTR, PTR, TVNET_DIMS, T, T, T),
    "mvaccel::tvnet::pass_p_kernel": (PTR, PTR, PTR, TVNET_DIMS, T, T),
    "mvaccel::tvnet::pass_p_backward_kernel": (
        *(PTR, I64, PTR, PTR, PTR, PTR, PTR),
        *(TVNET_DIMS, T, T),
    ),
    "mvaccel::tvnet::pass_g_kernel": (PTR, PTR, PTR, TVNET_DIMS),
    "mvaccel::tvnet::pass_u_backward_kernel": (
        *(PTR, PTR, PTR, PTR, PTR, PTR, PTR, PTR),
        *(TVNET_DIMS, T, T, T),
    ),
    "mvaccel::tvl1::resize_kernel": (PTR, I32, I32, PTR, I32, I32, F32, F32, F32),
    "mvaccel::tvl1::centred_grad_kernel": (PTR, I32, I32, PTR, PTR),
    "mvaccel::tvl1::warp_kernel": (PTR, PTR, PTR, PTR, PTR, PTR, I32, I32, I32, PTR, PTR, PTR),
    "mvaccel::tvl1::median5_kernel": (PTR, PTR, I32, I32, PTR, PTR, PTR),
    "mvaccel::tvl1::tvl1_iterate_tiled": (
        *(PTR, PTR, PTR, TVL1_TILE_STATE, TVL1_TILE_STATE),
        *(I32, I32, PTR),
        *(F32,) * 5,
        PTR,
    ),
}


def signature(expr: str) -> tuple[np.dtype, ...]:
    """The parameter dtypes of the kernel named by a name expression (``ns::k<float>``)."""
    base, _, targ = expr.partition("<")
    sig = SIGNATURES[base]
    scalar = NP_SCALARS.get(targ.rstrip(">"))
    if T in sig and scalar is None:
        raise ValueError(f"{expr}: a scalar parameter needs float or double")
    return tuple(scalar if d is T else d for d in sig)


def _pointer(v) -> int:
    if isinstance(v, torch.Tensor):
        return v.data_ptr()
    return int(v)


def pack_args(expr: str, args) -> list[np.ndarray]:
    """Kernel arguments as 0-d numpy arrays of the parameters' dtypes (their bytes are launched).

    Tensors become their device pointers; structs take a tuple (nested tuples for nested
    structs), as ``np.array(value, dtype)`` does.

    Raises:
        TypeError: the number of arguments is not the kernel's.
    """
    sig = signature(expr)
    if len(args) != len(sig):
        raise TypeError(f"{expr} takes {len(sig)} arguments, got {len(args)}")
    out = []
    for d, v in zip(sig, args, strict=True):
        if d is PTR:
            out.append(np.array(_pointer(v), dtype=PTR))
        else:
            out.append(np.array(v, dtype=d))
    return out


# ---- compile and cache -----------------------------------------------------------------------


@functools.cache
def nvrtc_module():
    """CuPy's NVRTC binding (compiles without a GPU or a driver).

    Raises:
        ImportError: CuPy or its NVRTC library is missing, naming the install command.
    """
    try:
        from cupy_backends.cuda.libs import nvrtc

        nvrtc.getVersion()
    except Exception as e:  # ImportError, or a missing libnvrtc (RuntimeError / OSError)
        raise ImportError(f"NVRTC through CuPy is unavailable ({e}); {INSTALL_HINT}") from e
    return nvrtc


def nvrtc_version() -> tuple[int, int]:
    return tuple(nvrtc_module().getVersion())


@dataclass(frozen=True)
class Compiled:
    """A unit's binary: CUBIN (``sm_XY``) or PTX (``compute_XY``), and the kernels' symbols."""

    code: bytes
    kind: str  # "cubin" or "ptx"
    lowered: dict  # name expression -> mangled symbol


def compile_unit(unit: Unit, arch: str, root: Path | None = None) -> Compiled:
    """Compile a unit with NVRTC for ``arch`` (``sm_90``: CUBIN; ``compute_90``: PTX).

    Raises:
        RuntimeError: NVRTC rejected the source, with its log.
    """
    nvrtc = nvrtc_module()
    root = root or source_dir()
    src = f'#include "{unit.header}"\n'
    prog = nvrtc.createProgram(src, f"mvaccel_{unit.name}.cu", [], [])
    try:
        for e in unit.kernels:
            nvrtc.addNameExpression(prog, e)
        opts = [f"--gpu-architecture={arch}", *NVRTC_OPTIONS, f"-I{root}"]
        try:
            nvrtc.compileProgram(prog, opts)
        except nvrtc.NVRTCError as e:
            raise RuntimeError(
                f"NVRTC could not compile {unit.header} for {arch}: {e}\n"
                f"{nvrtc.getProgramLog(prog)}"
            ) from e
        lowered = {e: nvrtc.getLoweredName(prog, e) for e in unit.kernels}
        if arch.startswith("sm_"):
            return Compiled(bytes(nvrtc.getCUBIN(prog)), "cubin", lowered)
        return Compiled(bytes(nvrtc.getPTX(prog)), "ptx", lowered)
    finally:
        nvrtc.destroyProgram(prog)


def cache_dir() -> Path:
    env = os.environ.get(ENV_CACHE)
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mvaccel" / "nvrtc"


def cache_key(unit: Unit, arch: str, version: tuple[int, int], root: Path | None = None) -> str:
    """Hash of everything the binary depends on: sources, kernels, options, arch, NVRTC version."""
    root = root or source_dir()
    h = hashlib.sha256()
    for p in device_headers(root):
        h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes() + b"\0")
    meta = [unit.header, list(unit.kernels), list(NVRTC_OPTIONS), arch, list(version)]
    h.update(json.dumps(meta).encode())
    return f"{unit.name}-{arch}-nvrtc{version[0]}.{version[1]}-{h.hexdigest()[:24]}"


def load_or_compile(unit: Unit, arch: str, directory: Path | None = None) -> Compiled:
    """The unit's binary from the disk cache, compiling (and caching) it on a miss."""
    root = source_dir()
    key = cache_key(unit, arch, nvrtc_version(), root)
    path = (directory or cache_dir()) / f"{key}.bin"
    try:
        head, _, code = path.read_bytes().partition(b"\n")
        meta = json.loads(head)
        if meta.get("kernels") == list(unit.kernels) and code:
            return Compiled(code, meta["kind"], meta["lowered"])
    except (OSError, ValueError, KeyError):
        pass  # no entry, or a damaged one: compile again
    c = compile_unit(unit, arch, root)
    meta = {"kind": c.kind, "lowered": c.lowered, "kernels": list(unit.kernels)}
    try:
        # readers see the old entry or the whole new one, never a partial write
        _io.atomic_write_bytes(path, json.dumps(meta).encode() + b"\n" + c.code)
    except OSError:
        pass  # a read-only cache costs a compile per process, nothing else
    return c


def arch_for(capability: tuple[int, int], supported: tuple[int, ...]) -> str:
    """NVRTC target for a device of compute capability ``capability``.

    Its own ``sm_XY`` (CUBIN) when NVRTC knows the architecture, else PTX for the newest one
    NVRTC knows below it (the driver JIT-compiles it).
    """
    cc = capability[0] * 10 + capability[1]
    if cc in supported:
        return f"sm_{cc}"
    older = [a for a in supported if a <= cc]
    if not older:
        raise RuntimeError(f"NVRTC supports {supported}, nothing for compute capability {cc}")
    return f"compute_{max(older)}"


# ---- backend selection -----------------------------------------------------------------------


@dataclass(frozen=True)
class Selection:
    """Which GPU path the ops use: ``nvcc``, ``nvrtc`` or ``none``, and why."""

    path: str
    reason: str


def select_backend(
    env: str | None, nvcc_kernels: bool, torch_cuda: bool, gpus: int, cupy_error: str | None
) -> Selection:
    """Decide the GPU path from the facts (pure, so tests can feed any combination).

    Args:
        env: the value of ``MVACCEL_GPU_BACKEND`` (None: unset, as "auto").
        nvcc_kernels: ``mvaccel._C`` was built with CUDA kernels.
        torch_cuda: torch is a CUDA build.
        gpus: visible GPUs.
        cupy_error: why CuPy/NVRTC cannot be used, or None when it can.

    Raises:
        ValueError: ``env`` is not one of ``BACKENDS``.
    """
    want = (env or "auto").strip().lower()
    if want not in BACKENDS:
        raise ValueError(f"{ENV_BACKEND}={env!r}: expected one of {', '.join(BACKENDS)}")
    if not torch_cuda:
        return Selection("none", "torch is a CPU-only build")
    if want == "nvcc" or (want == "auto" and nvcc_kernels):
        if nvcc_kernels:
            return Selection("nvcc", "mvaccel._C was built with CUDA kernels")
        return Selection("none", f"{ENV_BACKEND}=nvcc but mvaccel._C has no CUDA kernels")
    why = f"{ENV_BACKEND}=nvrtc" if want == "nvrtc" else "mvaccel._C has no CUDA kernels"
    if cupy_error is not None:
        return Selection("none", f"{why}, and the NVRTC path is unavailable: {cupy_error}")
    if gpus == 0:
        return Selection("nvrtc", f"{why}; CuPy's NVRTC compiles at first use (no GPU visible now)")
    return Selection("nvrtc", f"{why}; kernels compiled at first use by CuPy's NVRTC")


def _cupy_error() -> str | None:
    try:
        v = nvrtc_version()
    except ImportError as e:
        return str(e)
    try:
        from cupy_backends.cuda.api import driver  # noqa: F401
    except Exception as e:
        return f"CuPy's CUDA driver binding failed to load ({e}); {INSTALL_HINT}"
    return None if v else "no NVRTC version"


def _nvcc_kernels() -> bool:
    try:
        from .._build_info import cuda
    except ImportError:
        return torch._C._dispatch_has_kernel_for_dispatch_key("mvaccel::block_upsample", "CUDA")
    return bool(cuda)


def current_selection() -> Selection:
    """The GPU path of this process (what ``mvaccel info`` prints)."""
    return select_backend(
        os.environ.get(ENV_BACKEND),
        _nvcc_kernels(),
        torch.version.cuda is not None,
        torch.cuda.device_count() if torch.version.cuda else 0,
        _cupy_error(),
    )


# ---- runtime: modules per device, launches ---------------------------------------------------

_lock = threading.Lock()
_functions: dict[tuple[str, int], dict[str, int]] = {}


def _no_path_error(op: str, t: torch.Tensor, cause: Exception) -> RuntimeError:
    return RuntimeError(
        f"{op} on {t.device}: this build of mvaccel._C has no CUDA kernels (built without nvcc) "
        f"and the NVRTC path cannot run ({cause}). Install CuPy: {INSTALL_HINT}; or rebuild "
        "mvaccel where nvcc is on the PATH; or move the tensors to the CPU."
    )


def _ensure_context(stream: int, device: int) -> None:
    from cupy_backends.cuda.api import driver, runtime

    ctx = driver.streamGetCtx(stream) if stream else 0
    if ctx and driver.ctxGetCurrent() != ctx:
        driver.ctxSetCurrent(ctx)
    elif not ctx and driver.ctxGetCurrent() == 0:
        runtime.setDevice(device)  # binds the device's primary context (torch's) to the thread


def _kernels(unit_name: str, device: int) -> dict[str, int]:
    key = (unit_name, device)
    fns = _functions.get(key)
    if fns is not None:
        return fns
    with _lock:
        fns = _functions.get(key)
        if fns is None:
            from cupy_backends.cuda.api import driver

            unit = UNITS[unit_name]
            nvrtc = nvrtc_module()
            arch = arch_for(
                torch.cuda.get_device_capability(device), tuple(nvrtc.getSupportedArchs())
            )
            c = load_or_compile(unit, arch)
            torch.cuda.init()
            _ensure_context(torch.cuda.current_stream(device).cuda_stream, device)
            mod = driver.moduleLoadData(c.code)
            fns = {e: driver.moduleGetFunction(mod, c.lowered[e]) for e in unit.kernels}
            _functions[key] = fns
    return fns


def launch(unit: str, expr: str, grid, block, args, ref: torch.Tensor, shared: int = 0) -> None:
    """Launch kernel ``expr`` of ``unit`` on ``ref``'s device and torch's current stream."""
    device = ref.device.index if ref.device.index is not None else torch.cuda.current_device()
    fn = _kernels(unit, device)[expr]
    from cupy_backends.cuda.api import driver

    stream = torch.cuda.current_stream(device).cuda_stream
    _ensure_context(stream, device)
    params, _keep = kernel_params(expr, args)
    driver.launchKernel(fn, *dim3(grid), *dim3(block), shared, stream, ctypes.addressof(params), 0)


def dim3(v) -> tuple[int, int, int]:
    """A launch dimension padded to (x, y, z)."""
    return tuple(int(x) for x in v) + (1,) * (3 - len(v))


def kernel_params(expr: str, args):
    """The ``kernelParams`` array of a launch: a pointer to each packed argument.

    Returns:
        (params, buffers): keep ``buffers`` alive until the launch returns.
    """
    bufs = pack_args(expr, args)
    return (ctypes.c_void_p * len(bufs))(*[b.ctypes.data for b in bufs]), bufs


def _ceil(a: int, b: int) -> int:
    return (a + b - 1) // b


def _scalar(t: torch.Tensor, op: str) -> str:
    try:
        return SCALAR_TYPES[t.dtype]
    except KeyError:
        raise RuntimeError(
            f"{op}: expected float32, float64, float16 or bfloat16, got {dtype_name(t.dtype)}"
        ) from None


# ---- host checks (the messages of the C++ checks) --------------------------------------------


def _shape(t: torch.Tensor) -> str:
    return str(list(t.shape))


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise RuntimeError(msg)


# ---- resample (resample_cuda.cu) -------------------------------------------------------------

_NEAREST_BLOCK, _NEAREST_EXACT, _LINEAR = 0, 1, 2
_RESAMPLE_THREADS, _MAX_GRID_Y = 256, 65535


def _check_mode(op: str, mode: str) -> None:
    _check(
        mode in ("nearest", "bilinear"), f"{op}: mode must be 'nearest' or 'bilinear', got '{mode}'"
    )


def block_upsample_plan(op, in_h, in_w, block_h, block_w, out_h, out_w, mode) -> dict:
    """resample.h's block_upsample_plan: checks and the Plan (a dict of RESAMPLE_PLAN fields)."""
    _check_mode(op, mode)
    _check(
        block_h >= 1 and block_w >= 1,
        f"{op}: block size must be positive, got ({block_h}, {block_w})",
    )
    _check(out_h >= 1 and out_w >= 1, f"{op}: output size must be positive, got ({out_h}, {out_w})")
    need_h, need_w = _ceil(out_h, block_h), _ceil(out_w, block_w)
    _check(
        in_h == need_h and in_w == need_w,
        f"{op}: a ({out_h}, {out_w}) output with ({block_h}, {block_w}) blocks needs a "
        f"({need_h}, {need_w}) block grid (ceil(out / block)), got ({in_h}, {in_w})",
    )
    return dict(
        in_h=in_h, in_w=in_w, out_h=out_h, out_w=out_w, block_h=block_h, block_w=block_w,
        scale_h=1.0 / block_h, scale_w=1.0 / block_w, factor_x=1.0, factor_y=1.0,
        mode=_NEAREST_BLOCK if mode == "nearest" else _LINEAR, scale_values=0,
    )  # fmt: skip


def mv_resize_plan(op, in_h, in_w, out_h, out_w, mode) -> dict:
    """resample.h's mv_resize_plan."""
    _check_mode(op, mode)
    _check(out_h >= 1 and out_w >= 1, f"{op}: output size must be positive, got ({out_h}, {out_w})")
    _check(
        in_h >= 1 and in_w >= 1,
        f"{op}: input field must have a positive size, got ({in_h}, {in_w})",
    )
    return dict(
        in_h=in_h, in_w=in_w, out_h=out_h, out_w=out_w, block_h=1, block_w=1,
        scale_h=in_h / out_h, scale_w=in_w / out_w, factor_x=out_w / in_w, factor_y=out_h / in_h,
        mode=_NEAREST_EXACT if mode == "nearest" else _LINEAR, scale_values=1,
    )  # fmt: skip


def _plan_tuple(plan: dict) -> tuple:
    return tuple(plan[n] for n in RESAMPLE_PLAN.names)


_RESAMPLE_TARGET_THREADS = 1 << 21
_INT32_MAX = 2**31 - 1


def _resample_grid(width: int, height: int, images: int) -> tuple[int, int, int]:
    """resample_cuda.cu grid_for: (x, y, image), images split to reach the target threads."""
    gx = _ceil(width, _RESAMPLE_THREADS)
    per_image = max(1, gx * _RESAMPLE_THREADS * height)
    gz = min(max(_ceil(_RESAMPLE_TARGET_THREADS, per_image), 1), min(max(images, 1), _MAX_GRID_Y))
    return (gx, min(height, _MAX_GRID_Y), gz)


def _offset_span(t: torch.Tensor) -> int:
    return 1 + sum((n - 1) * s for n, s in zip(t.shape, t.stride(), strict=True))


def _index_type(a: torch.Tensor, b: torch.Tensor) -> str:
    """resample_cuda.cu fits_int32: 32-bit offsets when every offset of the call fits."""
    fits = all(t.numel() <= _INT32_MAX and _offset_span(t) <= _INT32_MAX for t in (a, b))
    return "int32_t" if fits else "int64_t"


def _vector_stores(out: torch.Tensor, plan: dict) -> bool:
    """resample_cuda.cu vector_stores: rows unit stride, 16-byte aligned, a run holds a vector."""
    e = out.element_size()
    return (
        out.stride(3) == 1
        and out.data_ptr() % 16 == 0
        and all(out.stride(d) * e % 16 == 0 for d in (0, 1, 2))
        and plan["block_w"] * e >= 16
    )


def _vector_rows(out: torch.Tensor, plan: dict) -> bool:
    """resample_cuda.cu vector_rows: rows unit stride, out_w and pitches 16-byte multiples."""
    e = out.element_size()
    return (
        out.stride(3) == 1
        and out.data_ptr() % 16 == 0
        and plan["out_w"] * e % 16 == 0
        and all(out.stride(d) * e % 16 == 0 for d in (0, 1, 2))
    )


def _output_fits(op: str, ref: torch.Tensor, h: int, w: int) -> None:
    # resample_checks.h's check_output_fits: the output is the only large allocation
    numel = float(ref.shape[0]) * ref.shape[1] * h * w
    check_fits_in_memory(op, ref.device, bytes_of(ref, numel), "the output")


def _resample_forward(x: torch.Tensor, plan: dict, op: str) -> torch.Tensor:
    from torch._prims_common import suggest_memory_format

    t = _scalar(x, op)
    n, c = x.shape[0], x.shape[1]
    _output_fits(op, x, plan["out_h"], plan["out_w"])
    out = torch.empty(
        (n, c, plan["out_h"], plan["out_w"]),
        dtype=x.dtype,
        device=x.device,
        memory_format=suggest_memory_format(x),
    )
    if out.numel() == 0:
        return out
    args = (_plan_tuple(plan), tuple(x.stride()), tuple(out.stride()), c, n)
    i = _index_type(x, out)
    if plan["mode"] == _NEAREST_BLOCK:
        vec = "true" if _vector_stores(out, plan) else "false"
        name = f"forward_block_kernel<{t}, {i}, {vec}>"
        grid = _resample_grid(plan["in_w"], plan["out_h"], n)
    else:
        vec = _vector_rows(out, plan)
        v = 16 // out.element_size() if vec else 1
        name = f"forward_kernel<{t}, {i}, {'true' if vec else 'false'}>"
        grid = _resample_grid(plan["out_w"] // v, plan["out_h"], n)
    launch("resample", f"mvaccel::resample::{name}", grid, (_RESAMPLE_THREADS,), (x, out, args), x)
    return out


def _resample_backward(grad: torch.Tensor, plan: dict, op: str) -> torch.Tensor:
    t = _scalar(grad, op)
    n, c = grad.shape[0], grad.shape[1]
    _output_fits(op, grad, plan["in_h"], plan["in_w"])
    gin = torch.empty((n, c, plan["in_h"], plan["in_w"]), dtype=grad.dtype, device=grad.device)
    if gin.numel() == 0:
        return gin
    args = (_plan_tuple(plan), tuple(grad.stride()), tuple(gin.stride()), c, n)
    launch(
        "resample",
        f"mvaccel::resample::backward_kernel<{t}, {_index_type(grad, gin)}>",
        _resample_grid(plan["in_w"], plan["in_h"], n),
        (_RESAMPLE_THREADS,),
        (grad, gin, args),
        grad,
    )
    return gin


def block_upsample(x, block_h, block_w, out_h, out_w, mode="nearest"):
    op = "mvaccel.block_upsample"
    check_dim(op, "x", x, 4, "(N, C, Hb, Wb)")
    check_floating(op, "x", x)
    plan = block_upsample_plan(op, x.shape[2], x.shape[3], block_h, block_w, out_h, out_w, mode)
    return _resample_forward(x, plan, op)


def block_upsample_backward(grad, in_h, in_w, block_h, block_w, mode):
    op = "mvaccel._block_upsample_backward"
    check_dim(op, "grad", grad, 4, "(N, C, H, W)")
    check_floating(op, "grad", grad)
    plan = block_upsample_plan(op, in_h, in_w, block_h, block_w, grad.shape[2], grad.shape[3], mode)
    return _resample_backward(grad, plan, op)


def mv_resize(mv, out_h, out_w, mode="bilinear"):
    op = "mvaccel.mv_resize"
    check_dim(op, "mv", mv, 4, "(N, 2, H, W)")
    check_floating(op, "mv", mv)
    _check(
        mv.shape[1] == 2,
        f"{op}: expected mv of shape (N, 2, H, W) (channel 0 = x, 1 = y), got shape {_shape(mv)}",
    )
    plan = mv_resize_plan(op, mv.shape[2], mv.shape[3], out_h, out_w, mode)
    return _resample_forward(mv, plan, op)


def mv_resize_backward(grad, in_h, in_w, mode):
    op = "mvaccel._mv_resize_backward"
    check_dim(op, "grad", grad, 4, "(N, 2, H, W)")
    check_floating(op, "grad", grad)
    _check(
        grad.shape[1] == 2, f"{op}: expected grad of shape (N, 2, H, W), got shape {_shape(grad)}"
    )
    plan = mv_resize_plan(op, in_h, in_w, grad.shape[2], grad.shape[3], mode)
    return _resample_backward(grad, plan, op)


# ---- OFF (off_cuda.cu) -----------------------------------------------------------------------

_OFF_THREADS = 128


def _rows_contiguous(t: torch.Tensor) -> torch.Tensor:
    return t if t.shape[-1] <= 1 or t.stride(-1) == 1 else t.contiguous()


def _off_grid(width: int, rows: int) -> tuple[int, int]:
    return (_ceil(width, _OFF_THREADS), min(rows, _MAX_GRID_Y))


_OFF_ROWS, _OFF_MAX_BLOCKS = 8, 2**31 - 1  # off_kernels.cuh kRows, kMaxBlocks


def _vector_tiles(cur_ptr: int, prev: torch.Tensor, plan: tuple) -> bool:
    """off_cuda.cu vector_tiles: W a multiple of V, pointers and strides 16-byte aligned."""
    e = prev.element_size()
    strides = (*plan[5], *plan[6])
    return (
        plan[4] * e % 16 == 0
        and cur_ptr % 16 == 0
        and prev.data_ptr() % 16 == 0
        and all(s * e % 16 == 0 for s in strides)
    )


def _off_forward(cur, prev, plan: tuple, cur_offset: int, shape, sw=None):
    """Forward launch; ``sw`` = (cur_sw, prev_sw) runs the channels_last kernel."""
    B, S, C, H, W = plan[:5]
    t = _scalar(cur, "mvaccel.off_gradients")
    out = _empty_frames(cur, shape, sw is not None)
    if out.numel() == 0:
        return out
    cur_ptr = cur.data_ptr() + cur_offset * cur.element_size()
    if sw is None:
        vec = _vector_tiles(cur_ptr, prev, plan)
        v = 16 // cur.element_size() if vec else 1
        total = B * S * C * _ceil(H, _OFF_ROWS) * _ceil(W, v)
        kernel = f"forward_kernel<{t}, {'true' if vec else 'false'}>"
        grid = (min(_ceil(total, _OFF_THREADS), _OFF_MAX_BLOCKS),)
        args = (cur_ptr, prev, out, plan, total)
    else:
        rows = B * S * H
        kernel, grid = f"forward_cl_kernel<{t}>", _off_grid(W * C, rows)
        args = (cur_ptr, prev, out, plan, *sw, rows)
    launch("off", f"mvaccel::off::{kernel}", grid, (_OFF_THREADS,), args, cur)
    return out


def off_gradients(f_t_in, f_prev_in):
    op = "mvaccel.off_gradients"
    check_dim(op, "f_t", f_t_in, 4, "(N, C, H, W)")
    check_dim(op, "f_prev", f_prev_in, 4, "(N, C, H, W)")
    check_floating(op, "f_t", f_t_in)
    _check(
        f_t_in.shape == f_prev_in.shape,
        f"{op}: f_t and f_prev must have the same shape, got {_shape(f_t_in)} and "
        f"{_shape(f_prev_in)}",
    )
    _check(
        f_t_in.dtype == f_prev_in.dtype,
        f"{op}: f_t and f_prev must have the same dtype, got {dtype_name(f_t_in.dtype)} and "
        f"{dtype_name(f_prev_in.dtype)}",
    )
    _check(
        f_t_in.device == f_prev_in.device,
        f"{op}: f_t and f_prev must be on the same device, got {f_t_in.device} and "
        f"{f_prev_in.device}",
    )
    cl = _channels_last(f_t_in, 1)
    n = float(f_t_in.numel())
    copies = (
        (0.0 if f_prev_in.stride(1) == 1 else bytes_of(f_prev_in, n))
        if cl
        else row_copy_bytes(f_t_in) + row_copy_bytes(f_prev_in)
    )
    check_fits_in_memory(
        op,
        f_t_in.device,
        bytes_of(f_t_in, 3 * n) + copies,
        "the (N, 3C, H, W) output and input copies",
    )
    if cl:
        f_t = f_t_in
        f_prev = (
            f_prev_in
            if f_prev_in.stride(1) == 1
            else f_prev_in.contiguous(memory_format=torch.channels_last)
        )
    else:
        f_t, f_prev = _rows_contiguous(f_t_in), _rows_contiguous(f_prev_in)
    B, C, H, W = f_t.shape
    plan = (
        B, 1, C, H, W,
        (f_t.stride(0), 0, f_t.stride(1), f_t.stride(2)),
        (f_prev.stride(0), 0, f_prev.stride(1), f_prev.stride(2)),
    )  # fmt: skip
    sw = (f_t.stride(3), f_prev.stride(3)) if cl else None
    return _off_forward(f_t, f_prev, plan, 0, (B, 3 * C, H, W), sw)


def off_gradients_stack(f_in):
    op = "mvaccel.off_gradients_stack"
    check_dim(op, "f", f_in, 5, "(N, T, C, H, W)")
    check_floating(op, "f", f_in)
    _check(
        f_in.shape[1] >= 2,
        f"{op}: the stack needs at least 2 frames (T >= 2), got shape {_shape(f_in)}",
    )
    cl = _channels_last(f_in, 2)
    pairs = f_in.numel() / f_in.shape[1] * (f_in.shape[1] - 1)
    check_fits_in_memory(
        op,
        f_in.device,
        bytes_of(f_in, 3 * pairs) + (0.0 if cl else row_copy_bytes(f_in)),
        "the (N, T - 1, 3C, H, W) output and a row-contiguous copy",
    )
    f = f_in if cl else _rows_contiguous(f_in)
    B, T1, C, H, W = f.shape
    view = (f.stride(0), f.stride(1), f.stride(2), f.stride(3))
    plan = (B, T1 - 1, C, H, W, view, view)
    sw = (f.stride(4), f.stride(4)) if cl else None
    return _off_forward(f, f, plan, f.stride(1), (B, T1 - 1, 3 * C, H, W), sw)


def _off_backward(grad, gv, plan, frame_out, t, g_sw=None):
    """Backward launch; ``g_sw`` (grad's column stride) runs the channels_last kernel."""
    B, S, C, H, W = plan[:5]
    if g_sw is None:
        e = grad.element_size()
        vec = (
            W * e % 16 == 0
            and grad.data_ptr() % 16 == 0
            and all(s * e % 16 == 0 for s in gv)
            and all(q % 16 == 0 for q in frame_out[:2])
            and all(s * e % 16 == 0 for s in frame_out[2:])
        )  # off_cuda.cu launch_backward's check
        v = 16 // e if vec else 1
        total = B * (S + 1) * C * _ceil(H, _OFF_ROWS) * _ceil(W, v)
        kernel = f"backward_kernel<{t}, {'true' if vec else 'false'}>"
        grid = (min(_ceil(total, _OFF_THREADS), _OFF_MAX_BLOCKS),)
        args = (grad, gv, plan, frame_out, total)
    else:
        rows = B * (S + 1) * H
        kernel, grid = f"backward_cl_kernel<{t}>", _off_grid(W * C, rows)
        args = (grad, gv, g_sw, plan, frame_out, rows)
    launch("off", f"mvaccel::off::{kernel}", grid, (_OFF_THREADS,), args, grad)


def off_gradients_backward(grad_in):
    op = "mvaccel._off_gradients_backward"
    check_dim(op, "grad", grad_in, 4, "(N, 3C, H, W)")
    check_floating(op, "grad", grad_in)
    _check(
        grad_in.shape[1] % 3 == 0,
        f"{op}: grad must have 3C channels (Fx, Fy, Ft), got shape {_shape(grad_in)}",
    )
    cl = _channels_last(grad_in, 1)
    check_fits_in_memory(
        op,
        grad_in.device,
        bytes_of(grad_in, 2.0 / 3.0 * grad_in.numel()) + (0.0 if cl else row_copy_bytes(grad_in)),
        "the two (N, C, H, W) gradients",
    )
    grad = grad_in if cl else _rows_contiguous(grad_in)
    B, C3, H, W = grad.shape
    C = C3 // 3
    g_t = _empty_frames(grad, (B, C, H, W), cl)
    g_prev = _empty_frames(grad, (B, C, H, W), cl)
    if g_t.numel() == 0:
        return g_t, g_prev
    zero = (0, 0, 0, 0)
    plan = (B, 1, C, H, W, zero, zero)
    gv = (grad.stride(0), 0, grad.stride(1), grad.stride(2))
    chw = C * H * W
    fo = (g_prev.data_ptr(), g_t.data_ptr(), chw, chw, 0)
    _off_backward(grad, gv, plan, fo, _scalar(grad, op), grad.stride(3) if cl else None)
    return g_t, g_prev


def off_gradients_stack_backward(grad_in):
    op = "mvaccel._off_gradients_stack_backward"
    check_dim(op, "grad", grad_in, 5, "(N, T - 1, 3C, H, W)")
    check_floating(op, "grad", grad_in)
    _check(
        grad_in.shape[2] % 3 == 0,
        f"{op}: grad must have 3C channels (Fx, Fy, Ft), got shape {_shape(grad_in)}",
    )
    cl = _channels_last(grad_in, 2)
    s1 = grad_in.shape[1]
    frames = grad_in.numel() / 3.0 / s1 * (s1 + 1) if s1 > 0 else 0.0
    check_fits_in_memory(
        op,
        grad_in.device,
        bytes_of(grad_in, frames) + (0.0 if cl else row_copy_bytes(grad_in)),
        "the (N, T, C, H, W) gradient",
    )
    grad = grad_in if cl else _rows_contiguous(grad_in)
    B, S, C3, H, W = grad.shape
    C = C3 // 3
    gf = _empty_frames(grad, (B, S + 1, C, H, W), cl)
    if gf.numel() == 0 or S == 0:
        return gf.zero_()
    zero = (0, 0, 0, 0)
    plan = (B, S, C, H, W, zero, zero)
    chw = C * H * W
    tchw = (S + 1) * chw
    base = gf.data_ptr()
    fo = (base, base + chw * gf.element_size(), tchw, tchw, chw)
    g_sw = grad.stride(4) if cl else None
    _off_backward(grad, tuple(grad.stride()[:4]), plan, fo, _scalar(grad, op), g_sw)
    return gf


# ---- TVNet (tvnet_cuda.cu) -------------------------------------------------------------------

_TVNET_THREADS, _TAPS = 256, 8


def _check_same(ref, t, op, name):
    _check(
        t.dtype == ref.dtype,
        f"{op}: {name} must have the dtype of u ({dtype_name(ref.dtype)}), got "
        f"{dtype_name(t.dtype)}",
    )
    _check(
        t.device == ref.device,
        f"{op}: {name} must be on the device of u ({ref.device}), got {t.device}",
    )


def _tvnet_check_forward(u, p, warped, wf, wb) -> tuple[int, int, int, int]:
    op = "mvaccel.tvnet_iterations"
    check_dim(op, "u", u, 4, "(N, 2, H, W)")
    _check(
        u.dtype in (torch.float32, torch.float64),
        f"{op}: expected float32 or float64 tensors, got {dtype_name(u.dtype)}",
    )
    N, _, H, W = u.shape
    _check(u.shape[1] == 2, f"{op}: expected u of shape (N, 2, H, W), got {_shape(u)}")
    _check(
        tuple(p.shape) == (N, 4, H, W),
        f"{op}: expected p of shape ({N}, 4, {H}, {W}) (p11, p12, p21, p22), got {_shape(p)}",
    )
    _check(
        tuple(warped.shape) == (N, 3, H, W),
        f"{op}: expected warped of shape ({N}, 3, {H}, {W}) (rho_c, I1wx, I1wy), got "
        f"{_shape(warped)}",
    )
    _check(
        wf.dim() == 2 and wf.shape[1] == _TAPS,
        f"{op}: expected wf of shape (k, 8), got {_shape(wf)}",
    )
    _check(
        wb.dim() == 2 and wb.shape[1] == _TAPS and wb.shape[0] == wf.shape[0],
        f"{op}: expected wb of shape ({wf.shape[0]}, 8), got {_shape(wb)}",
    )
    for t, name in ((p, "p"), (warped, "warped"), (wf, "wf"), (wb, "wb")):
        _check_same(u, t, op, name)
    return N, H, W, wf.shape[0]


def tvnet_iterations(u_in, p_in, warped_in, wf_in, wb_in, l_t, theta, taut, eps, grad_eps, save):
    d = _tvnet_check_forward(u_in, p_in, warped_in, wf_in, wb_in)
    N, H, W, K = d
    # tvnet_checks.h: u and p cloned (6 planes), the saved states (6 planes per iteration)
    planes = 6.0 + (6.0 * K if save else 0.0)
    check_fits_in_memory(
        "mvaccel.tvnet_iterations",
        u_in.device,
        bytes_of(u_in, planes * N * H * W)
        + copy_bytes(u_in)
        + copy_bytes(p_in)
        + copy_bytes(warped_in),
        "u, p and the saved states of every iteration" if save else "u and p",
    )
    u = u_in.contiguous().clone()
    p = p_in.contiguous().clone()
    warped, wf, wb = warped_in.contiguous(), wf_in.contiguous(), wb_in.contiguous()
    states = (
        torch.empty((K, N, 6, H, W), dtype=u.dtype, device=u.device)
        if save
        else torch.empty((0,), dtype=u.dtype, device=u.device)
    )
    if u.numel() == 0 or K == 0:
        return u, p, states
    t = SCALAR_TYPES[u.dtype]
    grid = (_ceil(N * H * W, _TVNET_THREADS),)
    blk = (_TVNET_THREADS,)
    es = wf.element_size()
    for it in range(K):
        if save:
            states[it].narrow(1, 0, 2).copy_(u)
            states[it].narrow(1, 2, 4).copy_(p)
        launch(
            "tvnet",
            f"mvaccel::tvnet::pass_u_kernel<{t}>",
            grid,
            blk,
            (u, p, warped, wb.data_ptr() + it * _TAPS * es, d, l_t, theta, grad_eps),
            u,
        )
        launch(
            "tvnet",
            f"mvaccel::tvnet::pass_p_kernel<{t}>",
            grid,
            blk,
            (u, p, wf.data_ptr() + it * _TAPS * es, d, taut, eps),
            u,
        )
    return u, p, states


def tvnet_iterations_backward(
    grad_u_in, grad_p_in, states_in, u_out_in, warped_in, wf_in, wb_in,
    l_t, theta, taut, eps, grad_eps,
):  # fmt: skip
    op = "mvaccel._tvnet_iterations_backward"
    d = _tvnet_check_forward(u_out_in, grad_p_in, warped_in, wf_in, wb_in)
    N, H, W, K = d
    _check(
        grad_u_in.shape == u_out_in.shape,
        f"{op}: grad_u must have the shape of u, got {_shape(grad_u_in)}",
    )
    _check_same(u_out_in, grad_u_in, op, "grad_u")
    _check_same(u_out_in, states_in, op, "states")
    _check(
        tuple(states_in.shape) == (K, N, 6, H, W),
        f"{op}: expected states of shape ({K}, {N}, 6, {H}, {W}) as "
        f"tvnet_iterations(save_states=True) returns, got {_shape(states_in)}",
    )
    # tvnet_checks.h: the gradients of u (two), p, warped and a 4-plane scratch, the copies
    check_fits_in_memory(
        op,
        u_out_in.device,
        bytes_of(u_out_in, 15.0 * N * H * W)
        + copy_bytes(states_in)
        + copy_bytes(u_out_in)
        + copy_bytes(warped_in),
        "the gradients of u, p and warped",
    )
    gu = grad_u_in.contiguous().clone()
    gu_next = torch.empty_like(gu)
    gp = grad_p_in.contiguous().clone()
    gw = torch.zeros_like(warped_in, memory_format=torch.contiguous_format)
    gwf = torch.zeros((K, _TAPS), dtype=wf_in.dtype, device=wf_in.device)
    gwb = torch.zeros((K, _TAPS), dtype=wb_in.dtype, device=wb_in.device)
    if gu.numel() == 0 or K == 0:
        return gu, gp, gw, gwf, gwb
    states, u_out = states_in.contiguous(), u_out_in.contiguous()
    warped, wf, wb = warped_in.contiguous(), wf_in.contiguous(), wb_in.contiguous()
    g4 = torch.empty((N, 4, H, W), dtype=gu.dtype, device=gu.device)
    t = SCALAR_TYPES[gu.dtype]
    grid = (_ceil(N * H * W, _TVNET_THREADS),)
    blk = (_TVNET_THREADS,)
    es = gu.element_size()
    state_bytes = N * 6 * H * W * es
    tap_bytes = _TAPS * es
    a, b = gu, gu_next
    st0 = states.data_ptr()
    for it in range(K - 1, -1, -1):
        st = st0 + it * state_bytes
        ucur = u_out.data_ptr() if it == K - 1 else st0 + (it + 1) * state_bytes
        ucur_planes = 2 if it == K - 1 else 6
        launch(
            "tvnet",
            f"mvaccel::tvnet::pass_p_backward_kernel<{t}>",
            grid,
            blk,
            (
                ucur, ucur_planes, st, gp, g4, wf.data_ptr() + it * tap_bytes,
                gwf.data_ptr() + it * tap_bytes, d, taut, eps,
            ),
            gu,
        )  # fmt: skip
        launch(
            "tvnet",
            f"mvaccel::tvnet::pass_g_kernel<{t}>",
            grid,
            blk,
            (a, g4, wf.data_ptr() + it * tap_bytes, d),
            gu,
        )
        launch(
            "tvnet",
            f"mvaccel::tvnet::pass_u_backward_kernel<{t}>",
            grid,
            blk,
            (
                st, warped, a, gp, gw, b, wb.data_ptr() + it * tap_bytes,
                gwb.data_ptr() + it * tap_bytes, d, l_t, theta, grad_eps,
            ),
            gu,
        )  # fmt: skip
        a, b = b, a
    return (gu_next if K % 2 == 1 else gu), gp, gw, gwf, gwb


# ---- TV-L1 (tvl1_cuda.cu) --------------------------------------------------------------------

_TVL1_THREADS = 256
_TX, _TY, _STEPS = 32, 16, 6
_STOP_EVERY = 0


@dataclass(frozen=True)
class _Tvl1Config:
    tau: float
    lambda_: float
    theta: float
    nscales: int
    scale_step: float
    warps: int
    epsilon: float
    inner: int
    outer: int
    median: int
    warp: int
    stop_check: int
    min_size: int
    dual_eps: float
    grad_eps: float


def _tvl1_check(I0, I1, init, *args) -> _Tvl1Config:
    """tvl1.h's check_inputs, message for message."""
    c = _Tvl1Config(*args)
    check_dim("tvl1_flow", "I0", I0, 3, "(N, H, W)")
    _check(
        I1.shape == I0.shape,
        f"tvl1_flow: I0 and I1 must have the same shape, got {_shape(I0)} and {_shape(I1)}",
    )
    _check(
        I0.dtype == torch.float32 and I1.dtype == torch.float32,
        f"tvl1_flow: expected float32 I0 and I1, got {dtype_name(I0.dtype)} and "
        f"{dtype_name(I1.dtype)}",
    )
    _check(I0.device == I1.device, "tvl1_flow: I0 and I1 on different devices")
    _check(
        I0.shape[1] >= 2 and I0.shape[2] >= 2,
        f"tvl1_flow: images must be at least 2x2, got {_shape(I0)}",
    )
    if init is not None:
        N, H, W = I0.shape
        _check(
            tuple(init.shape) == (N, 2, H, W),
            f"tvl1_flow: init must be (N, 2, H, W) = ({N}, 2, {H}, {W}), got {_shape(init)}",
        )
        _check(
            init.dtype == torch.float32 and init.device == I0.device,
            "tvl1_flow: init must be float32 on the images' device",
        )
    _check(
        c.tau > 0 and c.lambda_ > 0 and c.theta > 0, "tvl1_flow: tau, lambda and theta must be > 0"
    )
    _check(
        c.nscales >= 1 and c.warps >= 1 and c.inner >= 1 and c.outer >= 1,
        "tvl1_flow: nscales, warps and iteration counts must be >= 1",
    )
    _check(0 < c.scale_step < 1, f"tvl1_flow: scale_step must be in (0, 1), got {c.scale_step}")
    _check(c.median in (1, 5), f"tvl1_flow: median must be 1 (off) or 5, got {c.median}")
    _check(0 <= c.warp <= 2, f"tvl1_flow: bad warp mode {c.warp}")
    _check(c.stop_check in (0, 1), f"tvl1_flow: bad stop_check {c.stop_check}")
    _check(c.min_size >= 2, "tvl1_flow: min_size must be >= 2")
    _check(
        c.epsilon >= 0 and c.dual_eps >= 0 and c.grad_eps >= 0,
        "tvl1_flow: epsilon, dual_eps and grad_eps must be >= 0",
    )
    return c


def pyramid_sizes(H: int, W: int, nscales: int, scale_step: float, min_size: int):
    """tvl1.h's pyramid_sizes: level sizes, finest first (round half to even, as nearbyint)."""
    s = [(H, W)]
    for _ in range(1, nscales):
        h, w = round(s[-1][0] * scale_step), round(s[-1][1] * scale_step)
        if h < min_size or w < min_size:
            break
        s.append((h, w))
    return s


def _until_check(c: _Tvl1Config, prev: float, it: int, eps2: float, cap: int) -> int:
    if c.epsilon <= 0:
        return cap
    if c.stop_check == _STOP_EVERY:
        return 1
    for m in range(it, it + cap):
        if (m & 1) and prev - (m - it) * eps2 < eps2:
            return m - it + 1
    return cap


def _ptrs(tensors) -> tuple[int, ...]:
    return tuple(t.data_ptr() for t in tensors)


def _grid2d(W: int, H: int, N: int, bx: int, by: int) -> tuple[int, int, int]:
    return (_ceil(W, bx), _ceil(H, by), N)


class _Tvl1Solver:
    """tvl1_cuda.cu's BatchSolver, statement for statement."""

    def __init__(self, c: _Tvl1Config, I0: torch.Tensor, I1: torch.Tensor):
        self.c, self.N = c, I0.shape[0]
        self.sizes = pyramid_sizes(I0.shape[1], I0.shape[2], c.nscales, c.scale_step, c.min_size)
        inv = 1.0 / c.scale_step
        self.I0s, self.I1s = [I0], [I1]
        for size in self.sizes[1:]:
            self.I0s.append(self._resize(self.I0s[-1], size, inv, inv, 1.0))
            self.I1s.append(self._resize(self.I1s[-1], size, inv, inv, 1.0))
        hw = I0.shape[1] * I0.shape[2]
        names = ("I1x", "I1y", "wx", "wy", "rc", "t1", "t2")
        self.buf = {
            k: torch.empty(self.N * hw, dtype=torch.float32, device=I0.device) for k in names
        }
        # p11, p12, p21, p22 (u is the caller's), and the spare state the tiled launches write
        self.p = [torch.empty(self.N * hw, dtype=torch.float32, device=I0.device) for _ in range(4)]
        self.spare = [torch.empty_like(self.p[0]) for _ in range(6)]
        self.n_iter_dev = torch.empty(self.N, dtype=torch.int32, device=I0.device)
        self.err_dev = torch.empty(self.N, dtype=torch.float64, device=I0.device)
        self.n_iter_host: list[int] | None = None

    def _launch(self, name, grid, block, args, shared=0):
        launch("tvl1", f"mvaccel::tvl1::{name}", grid, block, args, self.I0s[0], shared)

    def _resize(self, src, to, sy, sx, mul):
        dst = torch.empty((self.N, *to), dtype=src.dtype, device=src.device)
        self._launch(
            "resize_kernel",
            _grid2d(to[1], to[0], self.N, 32, 8),
            (32, 8),
            (src, src.shape[1], src.shape[2], dst, to[0], to[1], sy, sx, mul),
        )
        return dst

    def solve(self, init):
        c, L = self.c, len(self.sizes)
        inv = 1.0 / c.scale_step
        if init is not None:
            u1 = init.select(1, 0).clone(memory_format=torch.contiguous_format)
            u2 = init.select(1, 1).clone(memory_format=torch.contiguous_format)
            for size in self.sizes[1:]:
                u1 = self._resize(u1, size, inv, inv, c.scale_step)
                u2 = self._resize(u2, size, inv, inv, c.scale_step)
        else:
            u1 = torch.zeros(
                (self.N, *self.sizes[-1]), dtype=torch.float32, device=self.I0s[0].device
            )
            u2 = torch.zeros_like(u1)
        for lvl in range(L - 1, -1, -1):
            self._level(lvl, u1, u2)
            if lvl == 0:
                break
            (h, w), (hn, wn) = self.sizes[lvl], self.sizes[lvl - 1]
            u1 = self._resize(u1, self.sizes[lvl - 1], h / hn, w / wn, inv)
            u2 = self._resize(u2, self.sizes[lvl - 1], h / hn, w / wn, inv)
        return torch.stack([u1, u2], 1)

    def _set_n_iter(self, v: list[int]) -> None:
        if v == self.n_iter_host:
            return
        self.n_iter_host = list(v)
        self.n_iter_dev.copy_(torch.tensor(v, dtype=torch.int32))

    def _level(self, lvl: int, u1: torch.Tensor, u2: torch.Tensor) -> None:
        c, N, b = self.c, self.N, self.buf
        H, W = self.sizes[lvl]
        HW = H * W
        grid, block = _grid2d(W, H, N, 32, 8), (32, 8)
        I0, I1 = self.I0s[lvl], self.I1s[lvl]
        self._launch("centred_grad_kernel", grid, block, (I1, H, W, b["I1x"], b["I1y"]))
        # the state in `cur`, written to `alt` by each tiled launch, then swapped
        cur = [u1.view(-1), u2.view(-1), *(t.narrow(0, 0, N * HW).zero_() for t in self.p)]
        alt = [t.narrow(0, 0, N * HW) for t in self.spare]
        eps2 = c.epsilon * c.epsilon * HW
        tgrid = _grid2d(W, H, N, _TX, _TY)
        l_t, taut = c.lambda_ * c.theta, c.tau / c.theta  # rounded to float32 when packed
        for _ in range(c.warps):
            self._launch(
                "warp_kernel",
                grid,
                block,
                (I0, I1, b["I1x"], b["I1y"], *cur[:2], H, W, c.warp, b["wx"], b["wy"], b["rc"]),
            )
            err = [math.inf] * N
            prev = [0.0] * N
            done = [False] * N
            it = 0
            for _ in range(c.outer):
                if all(done):
                    break
                n_iter = [0 if d else 1 for d in done]
                if c.median == 5:
                    self._set_n_iter(n_iter)
                    self._launch(
                        "median5_kernel",
                        grid,
                        block,
                        (*cur[:2], H, W, self.n_iter_dev, b["t1"], b["t2"]),
                    )
                    cur[0].copy_(b["t1"].narrow(0, 0, N * HW))
                    cur[1].copy_(b["t2"].narrow(0, 0, N * HW))
                i = 0
                while i < c.inner:
                    k = min(_STEPS, c.inner - i)
                    active = [n for n in range(N) if not done[n]]
                    if not active:
                        break
                    for n in active:
                        k = min(k, _until_check(c, prev[n], it, eps2, k))
                    self._set_n_iter([0 if d else k for d in done])
                    self.err_dev.zero_()
                    self._launch(
                        "tvl1_iterate_tiled",
                        tgrid,
                        (_TVL1_THREADS,),
                        (
                            b["wx"], b["wy"], b["rc"], _ptrs(cur), _ptrs(alt), H, W,
                            self.n_iter_dev, l_t, c.theta, taut, c.grad_eps, c.dual_eps,
                            self.err_dev,
                        ),
                    )  # fmt: skip
                    cur, alt = alt, cur
                    last = it + k - 1
                    check = [False] * N
                    for n in active:
                        if c.epsilon <= 0:
                            continue
                        check[n] = _until_check(c, prev[n], it, eps2, k) == k and (
                            c.stop_check == _STOP_EVERY
                            or (bool(last & 1) and prev[n] - (k - 1) * eps2 < eps2)
                        )
                    errs = self.err_dev.cpu().tolist() if any(check) else None
                    for n in active:
                        if c.epsilon <= 0:
                            continue
                        if check[n]:
                            err[n] = prev[n] = errs[n]
                            done[n] = errs[n] <= eps2
                        else:
                            err[n] = math.inf
                            prev[n] -= k * eps2
                    it += k
                    i += k
        if cur[0].data_ptr() != u1.data_ptr():  # an odd number of launches
            u1.view(-1).copy_(cur[0])
            u2.view(-1).copy_(cur[1])


def tvl1_flow(I0, I1, init, *args):
    c = _tvl1_check(I0, I1, init, *args)
    N, H, W = I0.shape
    # tvl1_checks.h: the CUDA solver's planes, whatever the device the host code runs on
    sizes = pyramid_sizes(H, W, c.nscales, c.scale_step, c.min_size)
    check_fits_in_memory(
        "tvl1_flow",
        I0.device,
        tvl1_planned_bytes(I0, I1, sizes, cuda=True),
        "the flow, the image pyramids and the solver's planes",
    )
    if N == 0:
        return torch.empty((0, 2, H, W), dtype=I0.dtype, device=I0.device)
    _check(N <= 65535, "tvl1_flow: at most 65535 pairs per call on CUDA")
    return _Tvl1Solver(c, I0.contiguous(), I1.contiguous()).solve(init)


# ---- registration ----------------------------------------------------------------------------

# op name -> (its NVRTC implementation, the name of the tensor argument it runs on)
OPS = {
    "block_upsample": (block_upsample, "x"),
    "_block_upsample_backward": (block_upsample_backward, "grad"),
    "mv_resize": (mv_resize, "mv"),
    "_mv_resize_backward": (mv_resize_backward, "grad"),
    "off_gradients": (off_gradients, "f_t"),
    "_off_gradients_backward": (off_gradients_backward, "grad"),
    "off_gradients_stack": (off_gradients_stack, "f"),
    "_off_gradients_stack_backward": (off_gradients_stack_backward, "grad"),
    "tvnet_iterations": (tvnet_iterations, "u"),
    "_tvnet_iterations_backward": (tvnet_iterations_backward, "grad_u"),
    "tvl1_flow": (tvl1_flow, "I0"),
}

_library: torch.library.Library | None = None


def _guarded(name: str, fn):
    """``fn`` with the op's clear error when the NVRTC path cannot run."""

    def kernel(*args):
        ref = args[0]
        try:
            nvrtc_module()
        except ImportError as e:
            raise _no_path_error(f"mvaccel.{name}", ref, e) from None
        with torch.cuda.device(ref.device):
            return fn(*args)

    kernel.__name__ = f"{name}_nvrtc"
    return kernel


def register(lib: torch.library.Library) -> None:
    """Register the NVRTC kernels as the CUDA implementations of every op on ``lib``."""
    import warnings

    with warnings.catch_warnings():
        # Forcing NVRTC on an nvcc build overrides the C++ kernels on purpose.
        warnings.filterwarnings("ignore", message=".*[Oo]verrid.*")
        for name, (fn, _) in OPS.items():
            lib.impl(name, _guarded(name, fn), "CUDA")


def install() -> Selection | None:
    """Register the NVRTC kernels when this process should use them (called by ``load_ops``).

    Registers when torch is a CUDA build and either ``mvaccel._C`` has no CUDA kernels (then a
    missing CuPy becomes a clear error at the first CUDA call; with ``MVACCEL_GPU_BACKEND=nvcc``
    every CUDA call raises a clear error instead) or ``MVACCEL_GPU_BACKEND=nvrtc``. Imports no
    CuPy; nothing is compiled before the first launch.

    Raises:
        ValueError: ``MVACCEL_GPU_BACKEND`` has an unknown value.
    """
    global _library
    env = (os.environ.get(ENV_BACKEND) or "auto").strip().lower()
    if env not in BACKENDS:
        raise ValueError(
            f"{ENV_BACKEND}={os.environ.get(ENV_BACKEND)!r}: expected one of {', '.join(BACKENDS)}"
        )
    if _library is not None or torch.version.cuda is None:
        return None
    nvcc = _nvcc_kernels()
    if nvcc and env != "nvrtc":
        return None
    _library = torch.library.Library("mvaccel", "IMPL")
    if env == "nvcc":  # no nvcc kernels and NVRTC ruled out: say so on a CUDA tensor
        for name in OPS:
            _library.impl(name, _refusing(name), "CUDA")
    else:
        register(_library)
    return current_selection()


def _refusing(name: str):
    def kernel(*args):
        raise RuntimeError(
            f"mvaccel.{name} on {args[0].device}: {ENV_BACKEND}=nvcc, but this build of "
            "mvaccel._C has no CUDA kernels (built without nvcc). Unset it to use the NVRTC "
            f"path ({INSTALL_HINT}), or rebuild mvaccel where nvcc is on the PATH."
        )

    kernel.__name__ = f"{name}_no_gpu_path"
    return kernel
