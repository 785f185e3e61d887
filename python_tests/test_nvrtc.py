"""The NVRTC GPU path (mvaccel/ops/_nvrtc.py): what runs without a GPU, and GPU checks.

On CPU: kernel-argument layouts against the C structs (a compiled probe), argument packing, cache
keys and the disk cache, backend selection, registration and the clear error when no GPU path
exists, and the host checks against the C++ ones (same messages). On a GPU (``cuda``): every op
forward and backward through NVRTC equals the C++ CPU op, and the nvcc kernels where built.
"""

from __future__ import annotations

import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

import mvaccel.ops  # noqa: F401  (loads the extension and the ops' autograd / fakes)
from mvaccel.ops import _nvrtc

REPO = Path(__file__).resolve().parents[1]
CSRC = REPO / "csrc"
PROBE_HEADERS = (
    "ops/resample/resample_math.cuh",
    "ops/off/off_math.cuh",
    "ops/tvnet/tvnet_math.h",
)


def _fields(dtype: np.dtype, prefix: str = "", base: int = 0):
    """(C member designator, byte offset) of every leaf field of a structured dtype."""
    for name in dtype.names:
        sub, off = dtype.fields[name][:2]
        if sub.names:
            yield from _fields(sub, f"{prefix}{name}.", base + off)
        else:
            yield f"{prefix}{name}", base + off


@pytest.fixture(scope="module")
def probe(tmp_path_factory) -> dict[str, int]:
    """sizeof / offsetof of every mirrored struct, from the host compiler (the nvcc / NVRTC
    layout of these fixed-width PODs is the same on x86-64 and aarch64 Linux)."""
    cxx = shutil.which("c++") or shutil.which("g++")
    if cxx is None:
        pytest.skip("no C++ compiler")
    lines = [f'#include "{h}"' for h in PROBE_HEADERS]
    lines += ["#include <cstddef>", "#include <cstdio>", "int main() {"]
    for cname, dtype in _nvrtc.STRUCTS.items():
        lines.append(f'std::printf("%s %zu\\n", "{cname}", sizeof({cname}));')
        for field, _ in _fields(dtype):
            lines.append(
                f'std::printf("%s %zu\\n", "{cname}.{field}", offsetof({cname}, {field}));'
            )
    lines.append("}")
    d = tmp_path_factory.mktemp("probe")
    (d / "probe.cpp").write_text("\n".join(lines))
    exe = d / "probe"
    subprocess.run(
        [
            cxx,
            "-std=c++17",
            "-Wno-invalid-offsetof",
            f"-I{CSRC}",
            str(d / "probe.cpp"),
            "-o",
            str(exe),
        ],
        check=True,
        capture_output=True,
    )
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    return {k: int(v) for k, v in (line.rsplit(" ", 1) for line in out.splitlines())}


@pytest.mark.parametrize("cname", sorted(_nvrtc.STRUCTS))
def test_struct_mirrors_match_the_c_layout(probe, cname):
    dtype = _nvrtc.STRUCTS[cname]
    assert probe[cname] == dtype.itemsize
    for field, off in _fields(dtype):
        assert probe[f"{cname}.{field}"] == off, f"{cname}.{field}"


def test_pack_args_bytes_and_count():
    plan = _nvrtc.mv_resize_plan("op", 3, 5, 7, 11, "bilinear")
    x = torch.zeros(2, 2, 3, 5)
    args = (_nvrtc._plan_tuple(plan), (30, 15, 5, 1), (154, 77, 11, 1), 2, 28)
    name = "mvaccel::resample::forward_kernel<float, int32_t, false>"
    bufs = _nvrtc.pack_args(name, (x, 1234, args))
    assert [b.dtype for b in bufs] == [_nvrtc.PTR, _nvrtc.PTR, _nvrtc.RESAMPLE_ARGS]
    assert int(bufs[0]) == x.data_ptr() and int(bufs[1]) == 1234
    a = bufs[2]
    assert a["p"]["scale_h"] == 3 / 7 and a["p"]["factor_x"] == 11 / 5
    assert a["p"]["mode"] == 2 and a["p"]["scale_values"] == 1
    assert a["src"]["s1"] == 15 and a["dst"]["s0"] == 154 and a["N"] == 28
    # the bytes a launch hands over: little-endian fields at the C offsets
    raw = a.tobytes()
    assert len(raw) == 168
    assert np.frombuffer(raw[152:168], "<i8").tolist() == [2, 28]
    with pytest.raises(TypeError, match="takes 3 arguments, got 2"):
        _nvrtc.pack_args("mvaccel::resample::forward_kernel<float, int32_t, false>", (x, x))


def test_scalar_parameters_follow_the_template_type():
    f = _nvrtc.signature("mvaccel::tvnet::pass_p_kernel<float>")
    d = _nvrtc.signature("mvaccel::tvnet::pass_p_kernel<double>")
    assert f[-2:] == (np.dtype("<f4"),) * 2 and d[-2:] == (np.dtype("<f8"),) * 2
    bufs = _nvrtc.pack_args(
        "mvaccel::tvnet::pass_p_kernel<float>", (0, 0, 0, (1, 2, 3, 4), 0.1, 1e-12)
    )
    assert bufs[4] == np.float32(0.1)


def test_cache_key_covers_sources_arch_and_version(tmp_path):
    root = tmp_path / "csrc"
    shutil.copytree(CSRC, root, ignore=shutil.ignore_patterns("video", "*.cpp", "*.cu"))
    u = _nvrtc.UNITS["off"]
    k = _nvrtc.cache_key(u, "sm_90", (12, 9), root)
    assert k == _nvrtc.cache_key(u, "sm_90", (12, 9), root)
    assert k != _nvrtc.cache_key(u, "sm_80", (12, 9), root)
    assert k != _nvrtc.cache_key(u, "sm_90", (12, 8), root)
    assert k != _nvrtc.cache_key(_nvrtc.UNITS["resample"], "sm_90", (12, 9), root)
    # any device header, also one the unit includes indirectly
    (root / "device.cuh").write_text((root / "device.cuh").read_text() + "\n// edit\n")
    assert k != _nvrtc.cache_key(u, "sm_90", (12, 9), root)


def test_disk_cache_compiles_once_and_survives_damage(tmp_path, monkeypatch):
    calls = []

    def fake_compile(unit, arch, root=None):
        calls.append(arch)
        return _nvrtc.Compiled(
            b"\x7fELF binary\n\x00bytes", "cubin", {e: f"_Z{i}" for i, e in enumerate(unit.kernels)}
        )

    monkeypatch.setattr(_nvrtc, "compile_unit", fake_compile)
    monkeypatch.setattr(_nvrtc, "nvrtc_version", lambda: (12, 9))
    u = _nvrtc.UNITS["tvl1"]
    a = _nvrtc.load_or_compile(u, "sm_90", tmp_path)
    b = _nvrtc.load_or_compile(u, "sm_90", tmp_path)
    assert calls == ["sm_90"] and a == b
    files = list(tmp_path.iterdir())
    assert len(files) == 1 and files[0].suffix == ".bin"  # no temporary files left behind
    files[0].write_bytes(b"{not json")
    assert _nvrtc.load_or_compile(u, "sm_90", tmp_path) == a
    assert calls == ["sm_90", "sm_90"]
    _nvrtc.load_or_compile(u, "sm_80", tmp_path)
    assert calls[-1] == "sm_80" and len(list(tmp_path.iterdir())) == 2


def test_cache_dir_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(_nvrtc.ENV_CACHE, str(tmp_path))
    assert _nvrtc.cache_dir() == tmp_path
    monkeypatch.delenv(_nvrtc.ENV_CACHE)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert _nvrtc.cache_dir() == tmp_path / "x" / "mvaccel" / "nvrtc"


def test_arch_for_device():
    assert _nvrtc.arch_for((9, 0), (75, 80, 86, 89, 90)) == "sm_90"
    assert _nvrtc.arch_for((12, 0), (80, 90)) == "compute_90"  # newer GPU: PTX, driver JITs
    with pytest.raises(RuntimeError, match="compute capability 70"):
        _nvrtc.arch_for((7, 0), (80, 90))


@pytest.mark.parametrize(
    ("env", "nvcc", "torch_cuda", "gpus", "cupy", "path", "why"),
    [
        (None, True, True, 1, None, "nvcc", "built with CUDA kernels"),
        ("auto", False, True, 1, None, "nvrtc", "no CUDA kernels"),
        ("nvrtc", True, True, 1, None, "nvrtc", "MVACCEL_GPU_BACKEND=nvrtc"),
        ("NVRTC ", True, True, 0, None, "nvrtc", "no GPU visible"),
        (None, False, True, 1, "no cupy", "none", "no cupy"),
        ("nvcc", False, True, 1, None, "none", "MVACCEL_GPU_BACKEND=nvcc but"),
        (None, True, False, 0, None, "none", "CPU-only"),
    ],
)
def test_select_backend(env, nvcc, torch_cuda, gpus, cupy, path, why):
    s = _nvrtc.select_backend(env, nvcc, torch_cuda, gpus, cupy)
    assert s.path == path and why in s.reason


def test_select_backend_rejects_unknown_value():
    with pytest.raises(ValueError, match="MVACCEL_GPU_BACKEND='cuda'.*auto, nvcc, nvrtc"):
        _nvrtc.select_backend("cuda", True, True, 1, None)


@pytest.fixture
def fresh_install(monkeypatch):
    """install() in a pretend CUDA torch; the registrations are removed afterwards."""
    monkeypatch.setattr(_nvrtc, "_library", None)
    monkeypatch.setattr(torch.version, "cuda", "12.9")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    yield
    if _nvrtc._library is not None:
        _nvrtc._library._destroy()


def _has_cuda_kernel(op="block_upsample") -> bool:
    return torch._C._dispatch_has_kernel_for_dispatch_key(f"mvaccel::{op}", "CUDA")


@pytest.mark.skipif(_has_cuda_kernel(), reason="this build has nvcc CUDA kernels")
@pytest.mark.parametrize(
    ("env", "nvcc", "registers"),
    [(None, False, True), ("nvrtc", True, True), ("auto", True, False), ("nvcc", True, False)],
)
def test_install_registers_cuda_kernels_for_every_op(
    fresh_install, monkeypatch, env, nvcc, registers
):
    if env is None:
        monkeypatch.delenv(_nvrtc.ENV_BACKEND, raising=False)
    else:
        monkeypatch.setenv(_nvrtc.ENV_BACKEND, env)
    monkeypatch.setattr(_nvrtc, "_nvcc_kernels", lambda: nvcc)
    sel = _nvrtc.install()
    assert (sel is not None) == registers
    for op in _nvrtc.OPS:
        assert _has_cuda_kernel(op) == registers, op
    if registers:
        assert sel.path in ("nvrtc", "none")


@pytest.mark.skipif(_has_cuda_kernel(), reason="this build has nvcc CUDA kernels")
def test_nvcc_forced_without_nvcc_kernels_raises_clearly(fresh_install, monkeypatch):
    monkeypatch.setenv(_nvrtc.ENV_BACKEND, "nvcc")
    monkeypatch.setattr(_nvrtc, "_nvcc_kernels", lambda: False)
    assert _nvrtc.install().path == "none"
    assert all(_has_cuda_kernel(op) for op in _nvrtc.OPS)
    with pytest.raises(RuntimeError, match=r"off_gradients on cpu: MVACCEL_GPU_BACKEND=nvcc, but"):
        _nvrtc._refusing("off_gradients")(torch.zeros(1), torch.zeros(1))


def test_install_rejects_unknown_backend(fresh_install, monkeypatch):
    monkeypatch.setenv(_nvrtc.ENV_BACKEND, "hip")
    with pytest.raises(ValueError, match="MVACCEL_GPU_BACKEND='hip'"):
        _nvrtc.install()


def test_every_op_has_an_nvrtc_kernel():
    schemas = {
        s.name.split("::", 1)[1]
        for s in torch._C._jit_get_all_schemas()
        if s.name.startswith("mvaccel::")
    }
    assert set(_nvrtc.OPS) == schemas


def test_clear_error_without_any_gpu_path(monkeypatch):
    def no_cupy():
        raise ImportError(
            f"NVRTC through CuPy is unavailable (No module named 'cupy'); {_nvrtc.INSTALL_HINT}"
        )

    monkeypatch.setattr(_nvrtc, "nvrtc_module", no_cupy)
    kernel = _nvrtc._guarded("mv_resize", _nvrtc.mv_resize)
    with pytest.raises(RuntimeError) as e:
        kernel(torch.zeros(1, 2, 4, 4), 8, 8, "bilinear")
    msg = str(e.value)
    assert msg.startswith("mvaccel.mv_resize on cpu: this build of mvaccel._C has no CUDA kernels")
    assert "pip install 'mvaccel[cupy]'" in msg and "nvcc" in msg


# Bad inputs: the NVRTC host checks raise the C++ checks' messages (they run before any launch).
BAD_CALLS = [
    ("block_upsample", lambda: (torch.zeros(2, 3), 4, 4, 8, 8, "nearest")),
    ("block_upsample", lambda: (torch.zeros(1, 1, 2, 2), 4, 4, 8, 8, "cubic")),
    ("block_upsample", lambda: (torch.zeros(1, 1, 2, 2), 0, 4, 8, 8, "nearest")),
    ("block_upsample", lambda: (torch.zeros(1, 1, 3, 2), 4, 4, 8, 8, "nearest")),
    ("block_upsample", lambda: (torch.zeros(1, 1, 2, 2, dtype=torch.int32), 4, 4, 8, 8, "nearest")),
    ("_block_upsample_backward", lambda: (torch.zeros(1, 1, 8, 8), 3, 2, 4, 4, "nearest")),
    ("mv_resize", lambda: (torch.zeros(1, 3, 4, 4), 8, 8, "bilinear")),
    ("mv_resize", lambda: (torch.zeros(1, 2, 4, 4), 0, 8, "bilinear")),
    ("_mv_resize_backward", lambda: (torch.zeros(1, 3, 4, 4), 2, 2, "bilinear")),
    ("off_gradients", lambda: (torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 5))),
    (
        "off_gradients",
        lambda: (torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4, dtype=torch.float64)),
    ),
    ("off_gradients", lambda: (torch.zeros(2, 4, 4), torch.zeros(2, 4, 4))),
    ("off_gradients_stack", lambda: (torch.zeros(1, 1, 2, 4, 4),)),
    ("_off_gradients_backward", lambda: (torch.zeros(1, 4, 4, 4),)),
    ("_off_gradients_stack_backward", lambda: (torch.zeros(1, 2, 4, 4, 4),)),
    (
        "tvnet_iterations",
        lambda: (
            torch.zeros(1, 2, 4, 4),
            torch.zeros(1, 3, 4, 4),
            torch.zeros(1, 3, 4, 4),
            torch.zeros(2, 8),
            torch.zeros(2, 8),
            0.1,
            0.3,
            0.8,
            1e-12,
            1e-12,
            False,
        ),
    ),
    (
        "tvnet_iterations",
        lambda: (
            torch.zeros(1, 2, 4, 4),
            torch.zeros(1, 4, 4, 4),
            torch.zeros(1, 3, 4, 4),
            torch.zeros(2, 8),
            torch.zeros(3, 8),
            0.1,
            0.3,
            0.8,
            1e-12,
            1e-12,
            False,
        ),
    ),
    (
        "tvnet_iterations",
        lambda: (
            torch.zeros(1, 2, 4, 4, dtype=torch.float16),
            torch.zeros(1, 4, 4, 4),
            torch.zeros(1, 3, 4, 4),
            torch.zeros(2, 8),
            torch.zeros(2, 8),
            0.1,
            0.3,
            0.8,
            1e-12,
            1e-12,
            False,
        ),
    ),
    (
        "_tvnet_iterations_backward",
        lambda: (
            torch.zeros(1, 2, 4, 4),
            torch.zeros(1, 4, 4, 4),
            torch.zeros(1, 1, 6, 4, 4),
            torch.zeros(1, 2, 4, 4),
            torch.zeros(1, 3, 4, 4),
            torch.zeros(2, 8),
            torch.zeros(2, 8),
            0.1,
            0.3,
            0.8,
            1e-12,
            1e-12,
        ),
    ),
    ("tvl1_flow", lambda: (torch.zeros(1, 8, 8), torch.zeros(1, 8, 9), None, *TVL1_ARGS)),
    (
        "tvl1_flow",
        lambda: (torch.zeros(1, 8, 8), torch.zeros(1, 8, 8), torch.zeros(1, 2, 8, 7), *TVL1_ARGS),
    ),
    (
        "tvl1_flow",
        lambda: (
            torch.zeros(1, 8, 8),
            torch.zeros(1, 8, 8),
            None,
            *TVL1_ARGS[:4],
            1.5,
            *TVL1_ARGS[5:],
        ),
    ),
    (
        "tvl1_flow",
        lambda: (
            torch.zeros(1, 8, 8),
            torch.zeros(1, 8, 8),
            None,
            *TVL1_ARGS[:9],
            3,
            *TVL1_ARGS[10:],
        ),
    ),
]
# tau, lambda, theta, nscales, scale_step, warps, epsilon, inner, outer, median, warp,
# stop_check, min_size, dual_eps, grad_eps
TVL1_ARGS = (0.25, 0.15, 0.3, 3, 0.5, 2, 0.01, 5, 2, 5, 1, 0, 4, 0.0, 1e-7)


@pytest.mark.parametrize(
    ("op", "make"), BAD_CALLS, ids=[f"{o}-{i}" for i, (o, _) in enumerate(BAD_CALLS)]
)
def test_host_checks_match_the_cpp_checks(op, make):
    args = make()
    with pytest.raises(RuntimeError) as cpp:
        getattr(torch.ops.mvaccel, op).default(*args)
    with pytest.raises(RuntimeError) as py:
        _nvrtc.OPS[op][0](*args)
    assert str(py.value) == str(cpp.value).split("\n")[0]


def test_pyramid_sizes_round_half_to_even():
    assert _nvrtc.pyramid_sizes(100, 75, 5, 0.5, 10) == [(100, 75), (50, 38), (25, 19), (12, 10)]
    assert _nvrtc.pyramid_sizes(9, 9, 3, 0.5, 2) == [(9, 9), (4, 4), (2, 2)]


# ---- GPU: NVRTC results equal the C++ CPU op (and the nvcc kernels where built) ---------------


def _cases():
    g = torch.Generator().manual_seed(0)

    def r(*s, dtype=torch.float32):
        return torch.randn(*s, generator=g, dtype=dtype)

    k = 3
    wf, wb = r(k, 8, dtype=torch.float64), r(k, 8, dtype=torch.float64)
    tv = (
        r(2, 2, 9, 13, dtype=torch.float64),
        r(2, 4, 9, 13, dtype=torch.float64),
        r(2, 3, 9, 13, dtype=torch.float64),
        wf,
        wb,
        0.05,
        0.3,
        0.8,
        1e-12,
        1e-12,
        True,
    )
    cl = r(2, 3, 5, 7).contiguous(memory_format=torch.channels_last)
    coarse = torch.rand(2, 1, 10, 13, generator=g) * 255
    smooth = torch.nn.functional.interpolate(coarse, size=(40, 52), mode="bilinear")[:, 0]
    return [
        ("block_upsample", (r(2, 3, 5, 7), 4, 4, 17, 27, "nearest")),
        ("block_upsample", (cl.half(), 4, 4, 17, 27, "bilinear")),
        (
            "_block_upsample_backward",
            (r(2, 3, 17, 27, dtype=torch.float64), 5, 7, 4, 4, "bilinear"),
        ),
        ("mv_resize", (r(2, 2, 6, 9).bfloat16(), 13, 5, "bilinear")),
        ("mv_resize", (r(2, 2, 6, 9), 13, 5, "nearest")),
        ("_mv_resize_backward", (r(2, 2, 13, 5), 6, 9, "bilinear")),
        ("off_gradients", (r(2, 3, 7, 11), r(2, 3, 7, 11))),
        ("off_gradients_stack", (r(2, 4, 3, 7, 11)[..., ::2],)),
        ("_off_gradients_backward", (r(2, 9, 7, 11),)),
        ("_off_gradients_stack_backward", (r(2, 3, 9, 7, 11).half(),)),
        ("tvnet_iterations", tv),
        ("tvl1_flow", (smooth, smooth.roll(1, -1), None, *TVL1_ARGS)),
    ]


def _tvnet_backward_case():
    u, p, w, wf, wb, *coef, _ = _cases()[10][1]
    u_out, p_out, states = torch.ops.mvaccel.tvnet_iterations.default(u, p, w, wf, wb, *coef, True)
    return (torch.randn_like(u_out), torch.randn_like(p_out), states, u_out, w, wf, wb, *coef)


def _to(v, device):
    return v.to(device) if isinstance(v, torch.Tensor) else v


def _as_tuple(v):
    return (v,) if isinstance(v, torch.Tensor) else tuple(v)


def _assert_same(a, b):
    for x, y in zip(_as_tuple(a), _as_tuple(b), strict=True):
        assert x.shape == y.shape and x.dtype == y.dtype and x.stride() == y.stride()
        torch.testing.assert_close(x.cpu(), y.cpu())


@pytest.mark.cuda
@pytest.mark.parametrize("i", range(13))
def test_nvrtc_equals_cpu_and_nvcc(i):
    cases = [*_cases(), ("_tvnet_iterations_backward", _tvnet_backward_case())]
    op, args = cases[i]
    fn = _nvrtc.OPS[op][0]
    got = fn(*[_to(a, "cuda") for a in args])
    torch.cuda.synchronize()
    cpu = getattr(torch.ops.mvaccel, op).default(*args)
    if op == "tvl1_flow":  # float32 sums in another order: compare as test_flow's CUDA test
        assert (got.cpu() - cpu).abs().mean() < 2e-2
    else:
        _assert_same(got, cpu)
    if _nvrtc._nvcc_kernels() and _nvrtc._library is None:
        nvcc = getattr(torch.ops.mvaccel, op).default(*[_to(a, "cuda") for a in args])
        if op == "tvl1_flow":
            assert (got - nvcc).abs().mean() < 1e-3
        else:
            _assert_same(got, nvcc)


def test_wheels_ship_every_header_nvrtc_compiles():
    """setup.py copies into wheels (mvaccel/_csrc) the headers _nvrtc compiles and hashes."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("mvaccel_setup", REPO / "setup.py")
    setup_py = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(setup_py)  # defines functions only; main() runs under __main__
    assert setup_py.kernel_headers() == _nvrtc.device_headers(CSRC)
    assert {str(p.relative_to(CSRC)) for p in setup_py.kernel_headers()} >= {
        u.header for u in _nvrtc.UNITS.values()
    }


def test_info_names_the_gpu_path(capsys, monkeypatch):
    from mvaccel.cli import main
    from mvaccel.info import gpu_path_facts

    sel = _nvrtc.current_selection()
    assert main(["info"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("GPU path"))
    assert line.split(":", 1)[1].strip() == f"{sel.path} ({sel.reason})"
    why = "mvaccel._C has no CUDA kernels; kernels compiled at first use by CuPy's NVRTC"
    monkeypatch.setattr(_nvrtc, "current_selection", lambda: _nvrtc.Selection("nvrtc", why))
    assert gpu_path_facts()["GPU path"] == f"nvrtc ({why})"


@pytest.mark.parametrize("i", range(13))
def test_launchers_pack_what_the_kernels_take(monkeypatch, i):
    """Every op's NVRTC host side runs on CPU tensors with the launch recorded: each launch names
    a compiled kernel, packs to its parameters and has a legal grid; outputs have the op's
    shapes (the kernels themselves need a GPU: test_nvrtc_equals_cpu_and_nvcc)."""
    calls = []

    def fake_launch(unit, expr, grid, block, args, ref, shared=0):
        assert expr in _nvrtc.UNITS[unit].kernels
        _nvrtc.pack_args(expr, args)
        assert 1 <= len(grid) <= 3 and all(1 <= g < 2**31 for g in grid)
        assert len(grid) < 2 or grid[1] <= 65535
        assert 1 <= math.prod(block) <= 1024
        calls.append(expr)

    monkeypatch.setattr(_nvrtc, "launch", fake_launch)
    cases = [*_cases(), ("_tvnet_iterations_backward", _tvnet_backward_case())]
    op, args = cases[i]
    got = _nvrtc.OPS[op][0](*args)
    want = getattr(torch.ops.mvaccel, op).default(*args)
    got, want = (
        (got,) if isinstance(got, torch.Tensor) else got,
        (want,) if isinstance(want, torch.Tensor) else want,
    )
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape and g.dtype == w.dtype and g.stride() == w.stride()
    assert calls


def test_off_stack_reads_frame_one_on():
    """off_gradients_stack passes the current frames as the tensor's pointer + one frame."""
    f = torch.zeros(2, 3, 4, 5, 6, dtype=torch.float16)
    seen = {}

    def fake_launch(unit, expr, grid, block, args, ref, shared=0):
        seen["cur"], seen["prev"] = args[0], args[1]

    with pytest.MonkeyPatch.context() as m:
        m.setattr(_nvrtc, "launch", fake_launch)
        _nvrtc.off_gradients_stack(f)
    assert seen["cur"] == f.data_ptr() + f.stride(1) * 2 and seen["prev"] is f


def test_resample_block_kernel_emits_16_byte_stores():
    """forward_block_kernel<..., true> stores 16-byte vectors (v4 x 32 / v2 x 64 bit), every dtype;
    the scalar variant none (issue 16: the nearest-block kernel's vector stores)."""
    import re

    try:
        c = _nvrtc.compile_unit(_nvrtc.UNITS["resample"], "compute_90")
    except ImportError as e:
        pytest.skip(f"no NVRTC: {e}")
    entries = dict(
        (m.split("(")[0].strip(), m) for m in re.split(r"\.entry\s+", c.code.decode())[1:]
    )
    block = {
        k: v for k, v in entries.items() if "forward_block_kernel" in k or "14forward_kernel" in k
    }
    assert len(block) == 32  # 2 kernels x 4 dtypes x 2 index types x 2 store variants
    for name, body in block.items():
        vec = "Lb1EEEv" in name  # mangled template argument `true`
        wide = re.search(r"st\.global\.(v4\.[bfsu]32|v2\.[bfsu]64)", body) is not None
        assert wide == vec, name


def test_off_forward_tiles_use_16_byte_loads_and_stores():
    """off forward/backward_kernel<T, true> load and store 16-byte vectors; <T, false> not."""
    import re

    try:
        c = _nvrtc.compile_unit(_nvrtc.UNITS["off"], "compute_90")
    except ImportError as e:
        pytest.skip(f"no NVRTC: {e}")
    bodies = [m for m in re.split(r"\.entry\s+", c.code.decode())[1:]]
    tiles = ("14forward_kernel", "15backward_kernel")
    fwd = {b.split("(")[0].strip(): b for b in bodies if any(k in b.split("(")[0] for k in tiles)}
    assert len(fwd) == 16  # (forward, backward) x 4 dtypes x (scalar, vector)
    for name, body in fwd.items():
        vec = "Lb1EEEv" in name
        for op in ("ld", "st"):
            wide = re.search(op + r"\.global(\.nc)?\.(v4\.[bfsu]32|v2\.[bfsu]64)", body)
            assert (wide is not None) == vec, (name, op)


def test_disk_cache_writes_through_the_package_atomic_writer(tmp_path, monkeypatch):
    # One atomic writer for the package (mvaccel._io): the cache must not carry its own.
    from mvaccel import _io

    written = []
    real = _io.atomic_write_bytes

    def recording(path, data):
        written.append(Path(path))
        return real(path, data)

    monkeypatch.setattr(_io, "atomic_write_bytes", recording)
    monkeypatch.setattr(
        _nvrtc, "compile_unit", lambda unit, arch, root=None: _nvrtc.Compiled(b"bin", "cubin", {})
    )
    monkeypatch.setattr(_nvrtc, "nvrtc_version", lambda: (12, 9))
    _nvrtc.load_or_compile(_nvrtc.UNITS["off"], "sm_90", tmp_path / "cache")
    assert written == list((tmp_path / "cache").iterdir()) and written[0].suffix == ".bin"


@pytest.mark.parametrize("i", range(13))
def test_launchers_run_the_memory_check_first(monkeypatch, i):
    """The NVRTC host side runs the planned-memory check of the nvcc entries (memory.h, mirrored
    in mvaccel.ops._checks): a call that does not fit raises torch.OutOfMemoryError naming the
    op before any allocation or launch, as the compiled kernels do."""
    from mvaccel.ops import _checks

    calls = []
    monkeypatch.setattr(_nvrtc, "launch", lambda *a, **k: calls.append(a))
    cases = [*_cases(), ("_tvnet_iterations_backward", _tvnet_backward_case())]
    op, args = cases[i]
    monkeypatch.setattr(_checks, "available_bytes", lambda device: 64.0)
    name = "tvl1_flow" if op == "tvl1_flow" else f"mvaccel.{op}"
    with pytest.raises(torch.OutOfMemoryError, match=rf"^{name}: this call needs about .* GiB of"):
        _nvrtc.OPS[op][0](*args)
    assert not calls


def _needs(msg: str) -> str:
    return msg.split(" but only ")[0]


def test_memory_check_mirror_matches_the_kernels():
    # The same planned bytes and message as the C++ checks (CPU: the CPU kernel's own check).
    from mvaccel.flow.params import TVL1Params
    from mvaccel.flow.tvl1 import _op_args
    from mvaccel.ops import _checks

    x = torch.zeros(1, 1, 1, 1).expand(2, 3, 100_000, 100_000)
    with pytest.raises(torch.OutOfMemoryError) as cpp:
        torch.ops.mvaccel.block_upsample.default(x, 1, 1, 100_000, 100_000, "nearest")
    with pytest.raises(torch.OutOfMemoryError) as py:
        _nvrtc.block_upsample(x, 1, 1, 100_000, 100_000, "nearest")
    assert _needs(str(py.value)) == _needs(str(cpp.value))

    f = torch.zeros(1, 1, 1, 1).expand(4, 3, 60_000, 60_000)
    with pytest.raises(torch.OutOfMemoryError) as cpp:
        torch.ops.mvaccel.off_gradients.default(f, f)
    with pytest.raises(torch.OutOfMemoryError) as py:
        _nvrtc.off_gradients(f, f)
    assert _needs(str(py.value)) == _needs(str(cpp.value))

    big = torch.zeros(1, 1, 1).expand(1, 60_000, 60_000)
    p = TVL1Params(nscales=3)
    with pytest.raises(torch.OutOfMemoryError) as cpp:
        torch.ops.mvaccel.tvl1_flow.default(big, big, None, *_op_args(p))
    sizes = _nvrtc.pyramid_sizes(60_000, 60_000, 3, p.scale_step, p.min_size)
    want = _checks.tvl1_planned_bytes(big, big, sizes, cuda=False) / 1024**3
    assert f"needs about {want:.2f} GiB of cpu memory" in str(cpp.value)


@pytest.mark.cuda
def test_tvl1_cuda_memory_check_counts_the_double_buffered_state():
    # The CUDA solver holds 6 spare planes per pair (tvl1_cuda.cu); tvl1_planned_bytes counts them.
    from mvaccel.flow.params import TVL1Params
    from mvaccel.flow.tvl1 import _op_args
    from mvaccel.ops import _checks

    big = torch.zeros(1, 1, 1, device="cuda").expand(8, 40_000, 40_000)
    p = TVL1Params(nscales=3)
    with pytest.raises(torch.OutOfMemoryError) as cpp:
        torch.ops.mvaccel.tvl1_flow.default(big, big, None, *_op_args(p))
    sizes = _nvrtc.pyramid_sizes(40_000, 40_000, 3, p.scale_step, p.min_size)
    want = _checks.tvl1_planned_bytes(big, big, sizes, cuda=True) / 1024**3
    assert f"needs about {want:.2f} GiB of cuda:0 memory" in str(cpp.value)
