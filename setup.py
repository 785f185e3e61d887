"""Build mvaccel: the ops extension ``mvaccel._C`` and the FFmpeg reader ``mvaccel._video``.

Environment:
    FORCE_CUDA=1          build the CUDA kernels even where torch/nvcc detection says no.
    MVACCEL_FORCE_CPU=1   never build CUDA kernels.
    TORCH_CUDA_ARCH_LIST  CUDA architectures (default "7.5;8.0;8.6;8.9;9.0").
    DEBUG=1               -O0 -g instead of -O3.
    MVACCEL_NO_VIDEO=1    skip mvaccel._video even where FFmpeg is found.
    MAX_JOBS              parallel compile jobs (ninja).
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
FFMPEG_LIBS = ["libavformat", "libavcodec", "libavutil", "libswscale"]
DEFAULT_ARCHS = "7.5;8.0;8.6;8.9;9.0"


def _say(msg: str) -> None:
    print(f"[mvaccel setup] {msg}", file=sys.stderr, flush=True)


def _flag(name: str) -> bool:
    return os.environ.get(name, "0").lower() in ("1", "true", "yes", "on")


def _rel(paths):
    return sorted(os.path.relpath(p, ROOT) for p in paths)


def _want_cuda(torch, cuda_home) -> tuple[bool, str]:
    if _flag("MVACCEL_FORCE_CPU"):
        return False, "MVACCEL_FORCE_CPU=1"
    if _flag("FORCE_CUDA"):
        return True, "FORCE_CUDA=1"
    if torch.version.cuda is None:
        return False, f"torch {torch.__version__} is a CPU build"
    if cuda_home is None:
        return False, "no CUDA toolkit (nvcc) found; set CUDA_HOME"
    return True, f"torch {torch.__version__} has CUDA {torch.version.cuda}, nvcc in {cuda_home}"


def _pkg_config(libs: list[str]) -> dict | None:
    if shutil.which("pkg-config") is None:
        return None
    try:
        version = {
            lib: subprocess.check_output(["pkg-config", "--modversion", lib], text=True).strip()
            for lib in libs
        }
        cflags = subprocess.check_output(
            ["pkg-config", "--cflags-only-I", *libs], text=True
        ).split()
        ldirs = subprocess.check_output(["pkg-config", "--libs-only-L", *libs], text=True).split()
        lnames = subprocess.check_output(["pkg-config", "--libs-only-l", *libs], text=True).split()
    except subprocess.CalledProcessError:
        return None
    return {
        "version": version,
        "include_dirs": [f[2:] for f in cflags],
        "library_dirs": [f[2:] for f in ldirs],
        "libraries": [f[2:] for f in lnames],
    }


def kernel_headers() -> list[Path]:
    """The device headers the NVRTC path compiles at run time (as _nvrtc.device_headers)."""
    csrc = ROOT / "csrc"
    found = [csrc / "device.cuh", csrc / "device_math.cuh"]
    found += [*csrc.glob("ops/*/*.cuh"), *csrc.glob("ops/*/*_math.h")]
    return sorted(p for p in found if p.is_file())


class BuildPyWithKernels(build_py):
    """build_py that also ships the kernel headers as mvaccel/_csrc (wheels have no csrc/)."""

    def run(self):
        """Build the Python package, then copy the kernel headers into it."""
        super().run()
        for src in kernel_headers():
            dst = Path(self.build_lib) / "mvaccel" / "_csrc" / src.relative_to(ROOT / "csrc")
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)


def _write_build_info(info: dict) -> None:
    lines = ['"""Facts about this build, written by setup.py (do not edit)."""', ""]
    for key, value in info.items():
        lines.append(f"{key} = {value!r}")
    (ROOT / "mvaccel" / "_build_info.py").write_text("\n".join(lines) + "\n")


def _extensions():
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, CppExtension, CUDAExtension

    debug = _flag("DEBUG")
    opt = ["-O0", "-g"] if debug else ["-O3"]
    # -fno-math-errno -fno-trapping-math change no result (no -ffast-math): they let GCC vectorise
    # loops with std::sqrt and with branches that it turns into selects (clang's defaults).
    fp = ["-fno-math-errno", "-fno-trapping-math"]
    cxx = [*opt, *fp, "-fopenmp", "-Wall", "-Wno-unused-function"]
    with_cuda, why = _want_cuda(torch, CUDA_HOME)

    cpp = glob.glob(str(ROOT / "csrc" / "*.cpp")) + glob.glob(
        str(ROOT / "csrc" / "ops" / "**" / "*.cpp"), recursive=True
    )
    cu = glob.glob(str(ROOT / "csrc" / "ops" / "**" / "*.cu"), recursive=True)
    archs = os.environ.get("TORCH_CUDA_ARCH_LIST", DEFAULT_ARCHS)
    extra = {"cxx": cxx}
    sources = _rel(cpp)
    if with_cuda:
        os.environ["TORCH_CUDA_ARCH_LIST"] = archs
        sources += _rel(cu)
        extra["nvcc"] = [*opt, "--expt-relaxed-constexpr", "-lineinfo"]
        ext_cls = CUDAExtension
        _say(f"building mvaccel._C with CUDA kernels ({why}); archs {archs}; {len(cu)} .cu files")
    else:
        ext_cls = CppExtension
        _say(f"building mvaccel._C for CPU only ({why}); {len(cu)} .cu files left out")
    _say(f"{len(cpp)} C++ files; {'DEBUG (-O0 -g)' if debug else 'release (-O3)'}")
    exts = [
        ext_cls(
            "mvaccel._C",
            sources,
            include_dirs=[str(ROOT / "csrc")],
            extra_compile_args=extra,
            extra_link_args=["-fopenmp"],
            py_limited_api=False,
        )
    ]

    video_sources = glob.glob(str(ROOT / "csrc" / "video" / "*.cpp"))
    ffmpeg = None
    if _flag("MVACCEL_NO_VIDEO"):
        _say("skipping mvaccel._video (MVACCEL_NO_VIDEO=1)")
    elif not video_sources:
        _say("no csrc/video sources: mvaccel._video not built")
    else:
        ffmpeg = _pkg_config(FFMPEG_LIBS)
        if ffmpeg is None:
            _say(
                "FFmpeg development libraries not found through pkg-config "
                f"({', '.join(FFMPEG_LIBS)}): mvaccel._video not built, the PyAV backend "
                "remains. On Debian/Ubuntu: apt-get install pkg-config libavformat-dev "
                "libavcodec-dev libavutil-dev libswscale-dev"
            )
        else:
            versions = ", ".join(f"{k} {v}" for k, v in ffmpeg["version"].items())
            _say(f"building mvaccel._video against FFmpeg ({versions})")
            exts.append(
                CppExtension(
                    "mvaccel._video",
                    _rel(video_sources),
                    include_dirs=[str(ROOT / "csrc"), *ffmpeg["include_dirs"]],
                    library_dirs=ffmpeg["library_dirs"],
                    libraries=ffmpeg["libraries"],
                    extra_compile_args={"cxx": [*opt, "-Wall"]},
                )
            )
    _write_build_info(
        {
            "cuda": with_cuda,
            "cuda_reason": why,
            "cuda_archs": archs if with_cuda else "",
            "debug": debug,
            "torch_version": torch.__version__,
            "video": ffmpeg is not None,
            "ffmpeg_build_versions": ffmpeg["version"] if ffmpeg else {},
        }
    )
    return exts


def main() -> None:
    from torch.utils.cpp_extension import BuildExtension

    setup(
        ext_modules=_extensions(),
        cmdclass={
            "build_ext": BuildExtension.with_options(use_ninja=True),
            "build_py": BuildPyWithKernels,
        },
    )


if __name__ == "__main__":
    main()
