"""Every kernel header compiles to PTX with NVRTC (what the NVRTC GPU path runs), no GPU needed.

Like test_cuda_compile.py for nvcc: the kernels are compiled for compute_80 and compute_90 with
every template instantiation the NVRTC launchers use (mvaccel/ops/_nvrtc.py UNITS), and each
kernel's parameters in the PTX are checked against the argument layout the launcher packs.
CuPy's NVRTC binding compiles without a driver (cupy.cuda.compiler would ask the driver).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mvaccel.ops import _nvrtc

REPO = Path(__file__).resolve().parents[1]
ARCHS = ("compute_80", "compute_90")

try:
    _nvrtc.nvrtc_module()
    NO_NVRTC = None
except ImportError as e:
    NO_NVRTC = str(e)

needs_nvrtc = pytest.mark.skipif(NO_NVRTC is not None, reason=f"no NVRTC: {NO_NVRTC}")


def globals_in(header: Path) -> set[str]:
    """Names of the __global__ functions a header defines."""
    pattern = r"__global__\s+void\s+(?:__launch_bounds__\([^)]*\)\s+)?(\w+)\s*\("
    return set(re.findall(pattern, header.read_text()))


def test_every_kernel_header_is_compiled_by_a_unit():
    headers = {str(p.relative_to(REPO / "csrc")) for p in REPO.glob("csrc/ops/*/*_kernels.cuh")}
    assert headers == {u.header for u in _nvrtc.UNITS.values()}
    assert len(headers) == 4


@pytest.mark.parametrize("unit", sorted(_nvrtc.UNITS))
def test_every_kernel_has_instantiations_and_a_signature(unit):
    u = _nvrtc.UNITS[unit]
    names = globals_in(REPO / "csrc" / u.header)
    assert names, u.header
    ns = "::".join(u.kernels[0].split("<")[0].split("::")[:-1])
    instantiated = {e.split("<")[0].split("::")[-1] for e in u.kernels}
    assert instantiated == names, f"{u.header}: kernels {names}, launched {instantiated}"
    for n in names:
        assert f"{ns}::{n}" in _nvrtc.SIGNATURES


def test_kernel_headers_have_no_host_only_includes():
    """Device code reaches NVRTC: no ATen, torch, c10 or standard headers in the .cuh files."""
    for p in [*REPO.glob("csrc/*.cuh"), *REPO.glob("csrc/ops/*/*.cuh")]:
        for inc in re.findall(r'^\s*#include\s+[<"]([^>"]+)[>"]', p.read_text(), re.M):
            bad = inc.startswith(("ATen", "torch", "c10")) or (
                "/" not in inc and not inc.endswith((".cuh", ".h"))
            )
            # <cstdint> / <cmath> are allowed only under #ifndef __CUDACC_RTC__ (device*.cuh)
            if inc in ("cstdint", "cmath"):
                assert p.name in ("device.cuh", "device_math.cuh"), f"{p}: <{inc}>"
                continue
            assert not bad, f"{p.relative_to(REPO)} includes {inc}"


def ptx_params(ptx: str, symbol: str) -> list[int]:
    """Byte sizes of a PTX entry's parameters."""
    m = re.search(r"\.entry\s+" + re.escape(symbol) + r"\s*\((.*?)\)", ptx, re.S)
    assert m, f"{symbol} is not an entry of the PTX"
    sizes = []
    for decl in m.group(1).split(","):
        decl = decl.strip()
        if not decl:
            continue
        arr = re.search(r"\.b8\s+\S+\[(\d+)\]", decl)
        if arr:
            sizes.append(int(arr.group(1)))
        else:
            sizes.append(int(re.search(r"\.[usfb](\d+)\s", decl + " ").group(1)) // 8)
    return sizes


@needs_nvrtc
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("unit", sorted(_nvrtc.UNITS))
def test_unit_compiles_to_ptx(unit, arch):
    u = _nvrtc.UNITS[unit]
    c = _nvrtc.compile_unit(u, arch)
    assert c.kind == "ptx"
    ptx = c.code.decode()
    assert f".target sm_{arch.split('_')[1]}" in ptx
    assert set(c.lowered) == set(u.kernels)
    for expr, symbol in c.lowered.items():
        want = [d.itemsize for d in _nvrtc.signature(expr)]
        assert ptx_params(ptx, symbol) == want, f"{expr}: PTX parameters vs launcher's packing"


@needs_nvrtc
def test_compile_error_names_the_header(tmp_path):
    (tmp_path / "device.cuh").write_text("#pragma once\n")
    (tmp_path / "bad.cuh").write_text("__global__ void k() { undeclared(); }\n")
    bad = _nvrtc.Unit("bad", "bad.cuh", ("k",))
    with pytest.raises(RuntimeError, match=r"bad\.cuh.*compute_90(.|\n)*undeclared"):
        _nvrtc.compile_unit(bad, "compute_90", root=tmp_path)
