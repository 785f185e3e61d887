"""Loading of the compiled extensions, with errors that say how to build them."""

from __future__ import annotations

import importlib
from types import ModuleType

BUILD_HINT = (
    "build it from the source tree with `pip install -e . --no-build-isolation` "
    "(or `make setup`, which also installs the system packages)"
)


def load_ops() -> ModuleType:
    """Import ``mvaccel._C``, which registers ``torch.ops.mvaccel.*``.

    Raises:
        ImportError: the extension is not built, naming the command that builds it.
    """
    import torch  # noqa: F401  (the extension links against libtorch)

    try:
        mod = importlib.import_module("mvaccel._C")
    except ImportError as e:
        raise ImportError(
            f"mvaccel's compiled ops (mvaccel._C) could not be loaded: {e}. "
            f"mvaccel.ops needs them; {BUILD_HINT}."
        ) from e
    _install_gpu_path()
    return mod


_gpu_path_installed = False


def _install_gpu_path() -> None:
    """Register the NVRTC CUDA kernels where this process uses them (mvaccel/ops/_nvrtc.py)."""
    global _gpu_path_installed
    if _gpu_path_installed:
        return
    _gpu_path_installed = True  # first: importing mvaccel.ops calls load_ops again
    from .ops import _nvrtc

    _nvrtc.install()


def load_video() -> ModuleType:
    """Import ``mvaccel._video``, the FFmpeg reader.

    Raises:
        ImportError: the extension is not built (no FFmpeg at build time), naming the fix.
    """
    import torch  # noqa: F401  (the extension links against libc10)

    try:
        return importlib.import_module("mvaccel._video")
    except ImportError as e:
        raise ImportError(
            f"mvaccel's FFmpeg reader (mvaccel._video) could not be loaded: {e}. It is built "
            "when pkg-config finds libavformat, libavcodec, libavutil and libswscale "
            "(Debian: apt-get install pkg-config libavformat-dev libavcodec-dev "
            f"libavutil-dev libswscale-dev); then {BUILD_HINT}. Or use backend='pyav'."
        ) from e


def has_kernel(op: str, dispatch_key: str) -> bool:
    """Whether ``torch.ops.mvaccel.<op>`` has a kernel for ``dispatch_key`` ("CPU", "CUDA")."""
    import torch

    load_ops()
    return torch._C._dispatch_has_kernel_for_dispatch_key(f"mvaccel::{op}", dispatch_key)


def public_ops(dispatch_key: str) -> list[str]:
    """Names of the public ``torch.ops.mvaccel`` ops with a ``dispatch_key`` kernel, sorted."""
    import torch

    load_ops()
    names = torch._C._dispatch_get_registrations_for_dispatch_key(dispatch_key)
    return sorted(
        n.split("::", 1)[1]
        for n in names
        if n.startswith("mvaccel::") and not n.split("::", 1)[1].startswith("_")
    )


def cuda_ops_ready() -> bool:
    """A GPU is visible and the ops have a working CUDA path, nvcc or NVRTC (CUDA tests need it)."""
    import torch

    if not (torch.cuda.is_available() and has_kernel("block_upsample", "CUDA")):
        return False
    from .ops._nvrtc import current_selection

    return current_selection().path != "none"
