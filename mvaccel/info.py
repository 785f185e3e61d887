"""Facts about this installation: versions, build options, devices (``mvaccel info``)."""

from __future__ import annotations

import platform
import shutil
import subprocess


def _ffmpeg_cli_version() -> str | None:
    exe = shutil.which("ffmpeg")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "-version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.splitlines()[0] if out else None


def gpu_path_facts() -> dict[str, object]:
    """Which GPU path the ops use (nvcc-built, NVRTC or none) and why; NVRTC's version and cache."""
    from .ops import _nvrtc

    try:
        sel = _nvrtc.current_selection()
    except ValueError as e:  # a bad MVACCEL_GPU_BACKEND
        return {"GPU path": f"none ({e})"}
    facts: dict[str, object] = {"GPU path": f"{sel.path} ({sel.reason})"}
    try:
        major, minor = _nvrtc.nvrtc_version()
        facts["NVRTC"] = f"{major}.{minor} (CuPy), cache {_nvrtc.cache_dir()}"
    except ImportError:
        facts["NVRTC"] = f"not installed ({_nvrtc.INSTALL_HINT})"
    return facts


def collect() -> dict[str, object]:
    """Return a dict of what mvaccel was built with and what it runs on."""
    import torch

    from ._version import __version__

    facts: dict[str, object] = {
        "mvaccel": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch CUDA": torch.version.cuda or "none (CPU build)",
        "CUDA available": torch.cuda.is_available(),
        "CPU threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        facts["GPUs"] = ", ".join(
            torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())
        )
    try:
        from . import _build_info as b

        facts["built with CUDA kernels"] = f"{b.cuda} ({b.cuda_reason})"
        if b.cuda:
            facts["CUDA archs"] = b.cuda_archs
        facts["debug build"] = b.debug
        facts["built against torch"] = b.torch_version
    except ImportError:
        facts["build"] = "not built (no mvaccel/_build_info.py)"
    try:
        from ._ext import public_ops

        facts["ops (CPU)"] = ", ".join(public_ops("CPU")) or "none"
        facts["ops (CUDA)"] = ", ".join(public_ops("CUDA")) or "none"
        facts.update(gpu_path_facts())
    except ImportError as e:
        facts["ops"] = f"unavailable: {e}"
    try:
        from ._ext import load_video

        versions = load_video().ffmpeg_versions()
        facts["FFmpeg reader (mvaccel._video)"] = ", ".join(f"{k} {v}" for k, v in versions.items())
    except ImportError:
        facts["FFmpeg reader (mvaccel._video)"] = "not built"
    try:
        import av

        facts["PyAV"] = av.__version__
    except ImportError:
        facts["PyAV"] = "not installed"
    facts["ffmpeg CLI"] = _ffmpeg_cli_version() or "not found"
    return facts


def format_facts(facts: dict[str, object]) -> str:
    """Align ``collect()``'s facts as ``key: value`` lines."""
    width = max(len(k) for k in facts)
    return "\n".join(f"{k:<{width}} : {v}" for k, v in facts.items())
