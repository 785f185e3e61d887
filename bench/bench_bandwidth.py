"""Bandwidth of the bandwidth-bound ops (issue 16): GB/s, % of the same run's ``copy_`` and the
ratio to the torch alternative, per op, shape, dtype and layout.

Every workload (a pytest-benchmark group) has three rows: ``mvaccel``, the torch code a user
would write otherwise, and ``copy_`` of a tensor of the op's output size (the roof, measured in
the same run). Bytes are the minimum the op must move: its inputs read once plus its output
written once (a ``copy_`` moves 2 x the output). At the end of the module a table is printed:

    workload | impl | median | GB/s | % of copy_ GB/s | torch median / mvaccel median

CUDA workloads are the issue's sizes (float32, bfloat16, float16; contiguous and channels_last);
CPU workloads are small (``make test`` runs this module once with ``--benchmark-disable``).
Targets (issue 16, CUDA): block_upsample and mv_resize >= 85 % of copy_, off_gradients forward
>= 70 %, every op faster than its torch alternative at every size.

Run: ``python -m pytest bench/bench_bandwidth.py --benchmark-only -s`` (``-k cuda`` on a GPU).
"""

from __future__ import annotations

import math
from collections import defaultdict

import pytest
import torch
import torch.nn.functional as F
from conftest import timed

import mvaccel.ops as ops
from mvaccel.ops import off

CUDA_DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def _nbytes(*tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def _block_input(n, c, h, w, b, dtype, device, cl):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, c, math.ceil(h / b), math.ceil(w / b), generator=g).to(device, dtype)
    return x.contiguous(memory_format=torch.channels_last) if cl else x


def _torch_mv_resize(mv, size, mode):
    kw = {"align_corners": False} if mode == "bilinear" else {}
    out = F.interpolate(mv, size=size, mode="nearest-exact" if mode == "nearest" else mode, **kw)
    scale = torch.tensor([size[1] / mv.shape[3], size[0] / mv.shape[2]], device=mv.device)
    return out * scale.to(mv.dtype).view(1, 2, 1, 1)


# (op, mode, N, C, H, W, block or input size); H x W is the output of the resample ops, the
# feature map of OFF.
CUDA_WORKLOADS = [
    ("block_upsample", "nearest", 64, 2, 1080, 1920, 8),
    ("block_upsample", "bilinear", 64, 2, 1080, 1920, 8),
    ("block_upsample", "nearest", 64, 2, 224, 224, 16),  # small: launch overhead rules
    ("block_upsample", "nearest", 1, 2, 224, 224, 16),
    ("mv_resize", "bilinear", 64, 2, 224, 224, (540, 960)),
    ("mv_resize", "nearest", 64, 2, 1080, 1920, (135, 240)),
    ("off_gradients", "forward", 224, 128, 28, 28, None),
    ("off_gradients", "forward", 224, 128, 56, 56, None),
    ("off_gradients", "fwd+bwd", 224, 128, 28, 28, None),
    ("off_gradients", "fwd+bwd", 224, 128, 56, 56, None),
]
CPU_WORKLOADS = [
    ("block_upsample", "nearest", 2, 2, 270, 480, 8),
    ("block_upsample", "bilinear", 2, 2, 270, 480, 8),
    ("mv_resize", "bilinear", 2, 2, 224, 224, (270, 480)),
    ("off_gradients", "forward", 8, 32, 28, 28, None),
    ("off_gradients", "fwd+bwd", 8, 32, 28, 28, None),
]


def _params():
    out = []
    for device, workloads, dtypes in (
        ("cpu", CPU_WORKLOADS, [torch.float32]),
        ("cuda", CUDA_WORKLOADS, CUDA_DTYPES),
    ):
        marks = [pytest.mark.cuda] if device == "cuda" else []
        for w in workloads:
            for dtype in dtypes:
                for cl in (False, True):
                    name = f"{device}-{w[0]}-{w[1]}-{w[2]}x{w[3]}x{w[4]}x{w[5]}-"
                    name += f"{str(dtype)[6:]}-{'cl' if cl else 'nchw'}"
                    out.append(pytest.param(device, w, dtype, cl, marks=marks, id=name))
    return out


def _workload(device, w, dtype, cl):
    """(mvaccel fn, torch fn, bytes moved, output-sized tensor)."""
    op, mode, n, c, h, wd, extra = w
    if op == "block_upsample":
        x = _block_input(n, c, h, wd, extra, dtype, device, cl)

        def ours():
            return ops.block_upsample(x, extra, (h, wd), mode)

        if mode == "nearest":

            def theirs():
                return x.repeat_interleave(extra, 2).repeat_interleave(extra, 3)[..., :h, :wd]
        else:

            def theirs():
                y = F.interpolate(x, scale_factor=extra, mode="bilinear", align_corners=False)
                return y[..., :h, :wd]

        out = ours()
        return ours, theirs, _nbytes(x, out), out
    if op == "mv_resize":
        g = torch.Generator().manual_seed(1)
        mv = torch.randn(n, c, *extra, generator=g).to(device, dtype)
        mv = mv.contiguous(memory_format=torch.channels_last) if cl else mv
        out = ops.mv_resize(mv, (h, wd), mode)
        return (
            lambda: ops.mv_resize(mv, (h, wd), mode),
            lambda: _torch_mv_resize(mv, (h, wd), mode),
            _nbytes(mv, out),
            out,
        )
    g = torch.Generator().manual_seed(2)
    fmt = torch.channels_last if cl else torch.contiguous_format
    a, b = (
        torch.randn(n, c, h, wd, generator=g).to(device, dtype).contiguous(memory_format=fmt)
        for _ in range(2)
    )
    out = off.off_gradients(a, b)
    if mode == "forward":
        return (
            lambda: off.off_gradients(a, b),
            lambda: off.off_gradients_reference(a, b),
            _nbytes(a, b, out),
            out,
        )
    ga, gb = a.detach().requires_grad_(), b.detach().requires_grad_()
    grad = torch.randn_like(out)

    def step(fn):
        def run():
            ga.grad = gb.grad = None
            fn(ga, gb).backward(grad)
            return ga.grad

        return run

    # forward: 2 reads + 3 writes; backward: 3 reads + 2 writes (element counts of a).
    return step(off.off_gradients), step(off.off_gradients_reference), 2 * _nbytes(a, b, out), out


RESULTS: dict[str, dict[str, tuple[float, int]]] = defaultdict(dict)


@pytest.fixture(scope="module", autouse=True)
def _table(request):
    """Print the workload table (GB/s, % of copy_, ratio) once the module's benchmarks ran."""
    yield
    rows = []
    for group, impls in RESULTS.items():
        if "mvaccel" not in impls or "copy_" not in impls:
            continue
        copy_t, copy_b = impls["copy_"]
        copy_bw = copy_b / copy_t / 1e9
        ours_t = impls["mvaccel"][0]
        for impl, (t, nb) in impls.items():
            bw = nb / t / 1e9
            rows.append(
                f"| {group} | {impl} | {t * 1e3:.3f} ms | {bw:.1f} | "
                f"{100 * bw / copy_bw:.0f} % | {t / ours_t:.2f} |"
            )
    if rows:
        tr = request.config.pluginmanager.get_plugin("terminalreporter")
        tr.write_line("\n| workload | impl | median | GB/s | % of copy_ | ratio to mvaccel |")
        tr.write_line("| --- | --- | ---: | ---: | ---: | ---: |")
        for r in rows:
            tr.write_line(r)


@pytest.mark.parametrize("impl", ["mvaccel", "torch", "copy_"])
@pytest.mark.parametrize("device, w, dtype, cl", _params())
def test_bandwidth(benchmark, device, w, dtype, cl, impl):
    ours, theirs, nbytes, out = _workload(device, w, dtype, cl)
    group = f"{w[0]} {w[1]} N={w[2]} C={w[3]} {w[4]}x{w[5]} {str(dtype)[6:]} "
    group += f"{'channels_last' if cl else 'nchw'} {device}"
    if impl == "copy_":
        src = torch.empty_like(out).copy_(out)
        dst = torch.empty_like(out)
        fn, nbytes = (lambda: dst.copy_(src)), 2 * _nbytes(out)
    else:
        fn = ours if impl == "mvaccel" else theirs
        if impl == "mvaccel" and w[1] == "forward":
            torch.testing.assert_close(ours(), theirs(), atol=0.1, rtol=0.02)
    benchmark.group = group
    benchmark.extra_info["bytes"] = nbytes
    benchmark(timed(fn, device))
    if benchmark.stats is not None:
        RESULTS[group][impl] = (benchmark.stats.stats.median, nbytes)
