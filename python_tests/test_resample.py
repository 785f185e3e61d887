"""block_upsample and mv_resize: references, dtypes, strides, autograd, compile, bad input."""

from __future__ import annotations

import math

import pytest
import torch

import mvaccel.ops as ops
from mvaccel.ops import reference as ref

TOL = {
    torch.float64: dict(atol=1e-12, rtol=1e-12),
    torch.float32: dict(atol=1e-4, rtol=1e-4),  # float32 source coordinates
    torch.float16: dict(atol=2e-3, rtol=2e-3),
    torch.bfloat16: dict(atol=2e-2, rtol=2e-2),
}
DTYPES = list(TOL)
MODES = ["nearest", "bilinear"]

# (N, C, block_h, block_w, out_h, out_w): odd sizes, partial last blocks, 1x1 grids.
BLOCK_CASES = [
    (2, 3, 8, 8, 37, 45),
    (1, 2, 16, 16, 256, 340),
    (3, 1, 4, 6, 9, 13),
    (1, 2, 8, 8, 8, 8),
    (2, 5, 3, 7, 1, 30),
]
# (N, H, W, out_h, out_w): up, down, mixed, identity.
RESIZE_CASES = [
    (2, 13, 17, 30, 41),
    (1, 64, 48, 17, 9),
    (3, 7, 11, 7, 11),
    (1, 5, 40, 23, 3),
]


def grid(out_h, out_w, bh, bw):
    return math.ceil(out_h / bh), math.ceil(out_w / bw)


def rand(shape, dtype, device, seed):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=torch.float64) * 4).to(device, dtype)


def layouts(x):
    """The same values as contiguous, channels_last, and two non-contiguous views."""
    yield "contiguous", x
    yield "channels_last", x.contiguous(memory_format=torch.channels_last)
    big = torch.zeros(
        x.shape[0], x.shape[1], x.shape[2] * 2, x.shape[3] + 3, dtype=x.dtype, device=x.device
    )
    big[:, :, ::2, 1 : x.shape[3] + 1] = x
    yield "strided", big[:, :, ::2, 1 : x.shape[3] + 1]
    yield "transposed", x.transpose(2, 3).contiguous().transpose(2, 3)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", BLOCK_CASES, ids=str)
def test_block_upsample_matches_reference(device, dtype, mode, case):
    n, c, bh, bw, oh, ow = case
    hb, wb = grid(oh, ow, bh, bw)
    x = rand((n, c, hb, wb), dtype, device, seed=hash(case) % 1000)
    expected = ref.block_upsample(x.double(), bh, bw, oh, ow, mode)
    for name, xv in layouts(x):
        out = ops.block_upsample(xv, (bh, bw), (oh, ow), mode)
        assert out.shape == (n, c, oh, ow), name
        assert out.dtype == dtype, name
        torch.testing.assert_close(out.double(), expected, **TOL[dtype], msg=name)
    cl = ops.block_upsample(x.contiguous(memory_format=torch.channels_last), (bh, bw), (oh, ow))
    if c > 1 and hb * wb > 1:  # a 1x1 grid has no distinguishable channels_last strides
        assert cl.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", RESIZE_CASES, ids=str)
def test_mv_resize_matches_reference(device, dtype, mode, case):
    n, h, w, oh, ow = case
    mv = rand((n, 2, h, w), dtype, device, seed=sum(case))
    expected = ref.mv_resize(mv.double(), oh, ow, mode)
    for name, mvv in layouts(mv):
        out = ops.mv_resize(mvv, (oh, ow), mode)
        assert out.shape == (n, 2, oh, ow), name
        torch.testing.assert_close(out.double(), expected, **TOL[dtype], msg=name)


def test_block_nearest_is_codec_exact(device):
    # Every pixel of a block carries the block's value bit for bit, the partial last block too.
    x = rand((1, 2, 4, 5), torch.float32, device, seed=3)
    out = ops.block_upsample(x, 8, (27, 35), "nearest")
    for by in range(4):
        for bx in range(5):
            tile = out[0, :, by * 8 : by * 8 + 8, bx * 8 : bx * 8 + 8]
            assert torch.equal(tile, x[0, :, by, bx, None, None].expand_as(tile))


def test_block_bilinear_samples_block_centres(device):
    # With an even block the centre falls between pixels (i*b + b/2 - 0.5): the 2x2 pixels
    # around it sit 1/8 block from it on each axis (weight 7/8 each), far blocks do not leak.
    x = torch.zeros(1, 1, 3, 3, device=device, dtype=torch.float64)
    x[0, 0, 1, 1] = 1.0
    out = ops.block_upsample(x, 4, (12, 12), "bilinear")[0, 0]
    torch.testing.assert_close(out[5:7, 5:7], torch.full_like(out[5:7, 5:7], 0.875**2))
    assert torch.all(out[0, :] == 0)
    # A constant field stays constant everywhere, edges included (clamped borders).
    const = torch.full((2, 2, 5, 6), 3.25, device=device)
    assert torch.all(ops.block_upsample(const, 8, (37, 45), "bilinear") == 3.25)


@pytest.mark.parametrize("mode", MODES)
def test_mv_resize_scales_values(device, mode):
    mv = torch.empty(2, 2, 24, 32, device=device)
    mv[:, 0] = 3.0  # 3 px right on a 32-wide field
    mv[:, 1] = -2.0  # 2 px up on a 24-high field
    out = ops.mv_resize(mv, (48, 8), mode)
    torch.testing.assert_close(out[:, 0], torch.full_like(out[:, 0], 3.0 * 8 / 32))
    torch.testing.assert_close(out[:, 1], torch.full_like(out[:, 1], -2.0 * 48 / 24))


@pytest.mark.parametrize("op", ["block", "resize"])
def test_empty_batch(device, op):
    if op == "block":
        out = ops.block_upsample(torch.empty(0, 2, 4, 4, device=device), 8, (30, 32))
        assert out.shape == (0, 2, 30, 32)
    else:
        out = ops.mv_resize(torch.empty(0, 2, 4, 4, device=device), (9, 7))
        assert out.shape == (0, 2, 9, 7)
    assert out.device.type == device


@pytest.mark.parametrize("mode", MODES)
def test_gradcheck_block_upsample(device, mode):
    x = rand((2, 2, 3, 4), torch.float64, device, seed=7).requires_grad_()
    f = lambda t: ops.block_upsample(t, (3, 5), (8, 18), mode)  # noqa: E731
    assert torch.autograd.gradcheck(f, (x,))
    assert torch.autograd.gradgradcheck(f, (x,))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("size", [(11, 23), (4, 3), (6, 9)], ids=str)
def test_gradcheck_mv_resize(device, mode, size):
    mv = rand((2, 2, 6, 9), torch.float64, device, seed=11).requires_grad_()
    f = lambda t: ops.mv_resize(t, size, mode)  # noqa: E731
    assert torch.autograd.gradcheck(f, (mv,))
    assert torch.autograd.gradgradcheck(f, (mv,))


@pytest.mark.parametrize("mode", MODES)
def test_backward_matches_reference_autograd(device, mode):
    # Larger than gradcheck can afford, with a channels_last input and a strided gradient.
    x = rand((2, 3, 10, 6), torch.float64, device, seed=5)
    g = rand((2, 3, 100, 70), torch.float64, device, seed=6)[:, :, :, ::2]
    xa = x.clone().requires_grad_()
    xb = x.clone().contiguous(memory_format=torch.channels_last).requires_grad_()
    ref.block_upsample(xa, 11, 6, 100, 35, mode).backward(g)
    ops.block_upsample(xb, (11, 6), (100, 35), mode).backward(g)
    torch.testing.assert_close(xb.grad, xa.grad)
    mv = rand((2, 2, 31, 17), torch.float64, device, seed=8)
    ma, mb = mv.clone().requires_grad_(), mv.clone().requires_grad_()
    ref.mv_resize(ma, 100, 35, mode).backward(g[:, :2])
    ops.mv_resize(mb, (100, 35), mode).backward(g[:, :2])
    torch.testing.assert_close(mb.grad, ma.grad)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_opcheck(device, dtype):
    x = rand((2, 3, 4, 5), dtype, device, seed=1)
    mv = rand((2, 2, 7, 6), dtype, device, seed=2)
    g = rand((2, 2, 13, 19), dtype, device, seed=3)
    req = dtype == torch.float32
    samples = [
        (
            torch.ops.mvaccel.block_upsample.default,
            (x.requires_grad_(req), 8, 8, 30, 40, "nearest"),
        ),
        (
            torch.ops.mvaccel.block_upsample.default,
            (x.contiguous(memory_format=torch.channels_last), 4, 9, 13, 41, "bilinear"),
        ),
        (torch.ops.mvaccel._block_upsample_backward.default, (g, 4, 5, 4, 4, "bilinear")),
        (torch.ops.mvaccel.mv_resize.default, (mv.requires_grad_(req), 13, 19, "bilinear")),
        (torch.ops.mvaccel.mv_resize.default, (mv, 3, 4, "nearest")),
        (torch.ops.mvaccel._mv_resize_backward.default, (g, 7, 6, "nearest")),
    ]
    for op, args in samples:
        torch.library.opcheck(op, args)


def test_compile_fullgraph(device):
    def pipeline(mv_blocks):
        dense = ops.block_upsample(mv_blocks, 8, (60, 76), "bilinear")
        return ops.mv_resize(dense, (32, 32), "bilinear").square().sum()

    x = rand((2, 2, 8, 10), torch.float32, device, seed=4).requires_grad_()
    compiled = torch.compile(pipeline, fullgraph=True)
    out = compiled(x)
    (grad,) = torch.autograd.grad(out, x)
    (expected_grad,) = torch.autograd.grad(pipeline(x), x)
    torch.testing.assert_close(out, pipeline(x))
    torch.testing.assert_close(grad, expected_grad)


@pytest.mark.cuda
def test_cuda_matches_cpu():
    for mode in MODES:
        x = rand((2, 2, 17, 23), torch.float32, "cpu", seed=9)
        cpu = ops.block_upsample(x, 8, (130, 180), mode)
        gpu = ops.block_upsample(x.cuda(), 8, (130, 180), mode)
        torch.testing.assert_close(gpu.cpu(), cpu)
        cpu = ops.mv_resize(x, (51, 77), mode)
        gpu = ops.mv_resize(x.cuda(), (51, 77), mode)
        torch.testing.assert_close(gpu.cpu(), cpu)


# Issue 16's kernel variants on the inputs that make them hard: run widths around the 16-byte
# vector (nearest-block runs with a scalar head / tail), odd widths, an input one element into
# its storage, strided and channels_last inputs, every floating dtype.
HARD_BLOCK = [(4, 4, 4, 8), (3, 5, 7, 16), (2, 12, 5, 40), (1, 16, 3, 33), (8, 8, 130, 180)]


def _hard_inputs(shape, dtype, dev, seed):
    n = math.prod(shape)
    base = rand((n + 1,), torch.float32, "cpu", seed=seed).to(dtype)
    yield base[:-1].view(shape).to(dev)
    yield base.to(dev)[1:].view(shape)  # one element into the storage
    yield base[:-1].view(shape).to(dev).contiguous(memory_format=torch.channels_last)
    wide = rand((shape[0], shape[1], shape[2], 2 * shape[3]), torch.float32, "cpu", seed=seed)
    yield wide.to(dtype).to(dev)[..., 1::2]


def _kernels_match_cpu(dev):
    for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        tol = {} if dtype in (torch.float32, torch.float64) else {"atol": 1e-2, "rtol": 1e-2}
        for bh, bw, h, w in HARD_BLOCK:
            shape = (2, 3, -(-h // bh), -(-w // bw))
            for x in _hard_inputs(shape, dtype, dev, seed=bw):
                for mode in MODES:
                    got = ops.block_upsample(x, (bh, bw), (h, w), mode)
                    want = ops.block_upsample(x.cpu(), (bh, bw), (h, w), mode)
                    assert got.stride() == want.stride()
                    torch.testing.assert_close(got.cpu(), want, **tol)
                    g = rand(tuple(got.shape), torch.float32, "cpu", seed=1).to(dtype)
                    args = (shape[2], shape[3], bh, bw, mode)
                    gb = torch.ops.mvaccel._block_upsample_backward(g.to(dev), *args)
                    want_b = torch.ops.mvaccel._block_upsample_backward(g, *args)
                    torch.testing.assert_close(gb.cpu(), want_b, **tol)
        for x in _hard_inputs((2, 2, 9, 13), dtype, dev, seed=3):
            for mode in MODES:
                got = ops.mv_resize(x, (20, 31), mode)
                torch.testing.assert_close(got.cpu(), ops.mv_resize(x.cpu(), (20, 31), mode), **tol)


@pytest.mark.cuda
def test_cuda_kernel_variants_match_cpu():
    """Vector / scalar, 32-bit index, channels_last and strided launches equal the CPU op."""
    _kernels_match_cpu("cuda")


BAD_BLOCK = [
    (lambda d: torch.zeros(2, 4, 4, device=d), (8, (32, 32), "nearest"), "shape"),
    (lambda d: torch.zeros(1, 2, 4, 4, device=d), (8, (40, 32), "nearest"), r"block grid"),
    (lambda d: torch.zeros(1, 2, 4, 4, device=d), (8, (32, 32), "bicubic"), "mode"),
    (lambda d: torch.zeros(1, 2, 4, 4, device=d), (0, (32, 32), "nearest"), "block size"),
    (
        lambda d: torch.zeros(1, 2, 4, 4, dtype=torch.int32, device=d),
        (8, (32, 32), "nearest"),
        "Int",
    ),
]
BAD_RESIZE = [
    (lambda d: torch.zeros(1, 3, 4, 4, device=d), ((8, 8), "bilinear"), r"\(N, 2, H, W\)"),
    (lambda d: torch.zeros(2, 4, 4, device=d), ((8, 8), "bilinear"), "shape"),
    (lambda d: torch.zeros(1, 2, 4, 4, device=d), ((0, 8), "bilinear"), "positive"),
    (lambda d: torch.zeros(1, 2, 4, 4, device=d), ((8, 8), "area"), "mode"),
    (lambda d: torch.zeros(1, 2, 0, 4, device=d), ((8, 8), "bilinear"), "positive"),
]


@pytest.mark.parametrize("make,args,msg", BAD_BLOCK)
def test_block_upsample_bad_input(device, make, args, msg):
    with pytest.raises(RuntimeError, match=msg) as info:
        ops.block_upsample(make(device), *args)
    assert "block_upsample" in str(info.value)


@pytest.mark.parametrize("make,args,msg", BAD_RESIZE)
def test_mv_resize_bad_input(device, make, args, msg):
    with pytest.raises(RuntimeError, match=msg) as info:
        ops.mv_resize(make(device), *args)
    assert "mv_resize" in str(info.value)


def test_bad_input_message_names_shape():
    with pytest.raises(RuntimeError, match=r"\[1, 3, 4, 4\]"):
        ops.mv_resize(torch.zeros(1, 3, 4, 4), (8, 8))
    with pytest.raises(ValueError, match="pair"):
        ops.block_upsample(torch.zeros(1, 2, 4, 4), (8, 8, 8), (32, 32))


# ---- op contracts: the fake (meta) kernels check what the kernels check; memory first --------


@pytest.mark.parametrize("make,args,msg", BAD_BLOCK)
def test_block_upsample_bad_input_meta(make, args, msg):
    with pytest.raises(RuntimeError, match=msg) as info:
        ops.block_upsample(make("meta"), *args)
    assert "block_upsample" in str(info.value)


@pytest.mark.parametrize("make,args,msg", BAD_RESIZE)
def test_mv_resize_bad_input_meta(make, args, msg):
    with pytest.raises(RuntimeError, match=msg) as info:
        ops.mv_resize(make("meta"), *args)
    assert "mv_resize" in str(info.value)


@pytest.mark.parametrize("d", ["cpu", "meta"])
def test_backward_ops_bad_input(d):
    g = torch.zeros(1, 2, 32, 32, device=d)
    with pytest.raises(RuntimeError, match="block grid"):
        torch.ops.mvaccel._block_upsample_backward(g, 5, 4, 8, 8, "nearest")
    with pytest.raises(RuntimeError, match="positive"):
        torch.ops.mvaccel._mv_resize_backward(g, 0, 4, "bilinear")
    with pytest.raises(RuntimeError, match=r"\(N, 2, H, W\)"):
        torch.ops.mvaccel._mv_resize_backward(g[:, :1], 4, 4, "bilinear")


def test_too_large_output_raises_before_allocating(device):
    # A (1, 1000) block grid of 1000 x 1000 blocks of 8 px: a 256 GB output.
    x = torch.zeros(1, 1, 1, 1, device=device).expand(1, 1000, 1000, 1000)
    with pytest.raises(torch.OutOfMemoryError, match=r"block_upsample: .* GiB .* available"):
        ops.block_upsample(x, 8, (8000, 8000))
    with pytest.raises(torch.OutOfMemoryError, match=r"mv_resize: .* GiB .* available"):
        ops.mv_resize(x[:, :2], (200000, 200000))
