"""Every CUDA source compiles with nvcc (sm_80 and sm_90) against torch's headers.

GPU-less machines (this project's CI) build the CPU extension only, so without this test a
broken ``.cu`` file would go unnoticed until someone with a GPU installs the package. Only the
compile to an object file is checked; running the kernels needs the ``cuda`` tests on a GPU.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sysconfig
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch.utils.cpp_extension as cpp

REPO = Path(__file__).resolve().parents[1]
CU_FILES = sorted(REPO.glob("csrc/**/*.cu"))
ARCHS = ("80", "90")


# torch's CPU wheel ships c10/cuda headers but not the one its CMake build generates; its whole
# content in a CUDA build of torch is this line.
CMAKE_MACROS = "#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n"


def nvcc_command(src: Path, obj: Path, shim: Path) -> list[str]:
    """The nvcc call setup.py's CUDA build makes for ``src`` (flags as torch's BuildExtension)."""
    includes = [REPO / "csrc", *cpp.include_paths(), sysconfig.get_paths()["include"], shim]
    cmd = [shutil.which("nvcc") or "nvcc", "-c", str(src), "-o", str(obj), "-std=c++20", "-O2"]
    cmd += [*cpp.COMMON_NVCC_FLAGS, "-DTORCH_EXTENSION_NAME=_C", "-DTORCH_API_INCLUDE_EXTENSION_H"]
    for a in ARCHS:
        cmd += ["-gencode", f"arch=compute_{a},code=sm_{a}"]
    return cmd + [f"-I{p}" for p in includes]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """Compile every .cu at once (in parallel); returns {file: (returncode, log)}."""
    if shutil.which("nvcc") is None:
        pytest.skip("nvcc is not on the PATH")
    out = tmp_path_factory.mktemp("cu")
    shim = out / "shim"
    macros = shim / "c10" / "cuda" / "impl" / "cuda_cmake_macros.h"
    macros.parent.mkdir(parents=True)
    macros.write_text(CMAKE_MACROS)

    def build(src: Path):
        obj = out / (src.stem + ".o")
        p = subprocess.run(nvcc_command(src, obj, shim), capture_output=True, text=True)
        return src, (p.returncode, p.stdout + p.stderr, obj)

    with ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1)) as pool:
        return dict(pool.map(build, CU_FILES))


def test_there_are_cuda_sources():
    assert CU_FILES, "no csrc/**/*.cu found: the CUDA kernels went missing"


@pytest.mark.parametrize("src", CU_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_cu_compiles(compiled, src):
    code, log, obj = compiled[src]
    assert code == 0, f"nvcc failed on {src.relative_to(REPO)}:\n{log[-4000:]}"
    assert obj.stat().st_size > 0
    # Both architectures made it into the object file.
    listing = (
        subprocess.run(["cuobjdump", "--list-elf", str(obj)], capture_output=True, text=True).stdout
        if shutil.which("cuobjdump")
        else ""
    )
    for a in ARCHS if listing else ():
        assert f"sm_{a}" in listing, f"{src.name}: no sm_{a} code in {listing!r}"
