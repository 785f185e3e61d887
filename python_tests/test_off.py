"""off_gradients / off_gradients_stack: kernels against the conv2d(sobel) + sub + cat reference."""

from __future__ import annotations

import pytest
import torch

from mvaccel.ops import off

SHAPES = [(2, 3, 5, 7), (1, 1, 1, 1), (1, 2, 1, 6), (3, 2, 4, 1), (1, 4, 2, 2), (2, 5, 9, 11)]
DTYPES = [torch.float64, torch.float32]


def _tol(dtype):
    return {"atol": 1e-12, "rtol": 0} if dtype == torch.float64 else {"atol": 1e-5, "rtol": 1e-5}


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_pair_matches_reference(device, shape, dtype):
    g = torch.Generator().manual_seed(0)
    a = torch.randn(shape, generator=g, dtype=dtype).to(device)
    b = torch.randn(shape, generator=g, dtype=dtype).to(device)
    out = off.off_gradients(a, b)
    assert out.shape == (shape[0], 3 * shape[1], shape[2], shape[3])
    torch.testing.assert_close(out, off.off_gradients_reference(a, b), **_tol(dtype))


def test_known_values():
    # A ramp f(y, x) = x: interior Sobel x = 8 (1 + 2 + 1 times a step of 2), Sobel y = 0.
    f = torch.arange(5.0).repeat(4, 1).view(1, 1, 4, 5)
    out = off.off_gradients(f, f - 3)
    assert torch.equal(out[0, 0, 1:-1, 1:-1], torch.full((2, 3), 8.0))
    assert torch.equal(out[0, 1, 1:-1, 1:-1], torch.zeros(2, 3))
    assert torch.equal(out[0, 2], torch.full((4, 5), 3.0))
    # Zero padding: at the left border Sobel x sees 0 on the left, at the top Sobel y
    # sees 0 above (the paper's y kernel: row above minus row below).
    assert out[0, 0, 1, 0].item() == 4 * 1.0  # (1 + 2 + 1) * f(x=1) - 0
    assert out[0, 1, 0, 2].item() == -(1.0 + 2 * 2.0 + 3.0)  # 0 above, row y=1 below
    col = torch.arange(4.0).view(4, 1).repeat(1, 5).view(1, 1, 4, 5)  # f = y
    gy = off.off_gradients(col, col)[0, 1]
    assert torch.equal(gy[1:-1, 1:-1], torch.full((2, 3), -8.0))


@pytest.mark.parametrize("dtype", DTYPES)
def test_stack_matches_reference(device, dtype):
    g = torch.Generator().manual_seed(1)
    f = torch.randn(2, 4, 3, 6, 5, generator=g, dtype=dtype).to(device)
    out = off.off_gradients_stack(f)
    assert out.shape == (2, 3, 9, 6, 5)
    torch.testing.assert_close(out, off.off_gradients_stack_reference(f), **_tol(dtype))
    # Entry s is the pair (f[:, s + 1], f[:, s]).
    torch.testing.assert_close(out[:, 1], off.off_gradients(f[:, 2], f[:, 1]), **_tol(dtype))


def test_non_contiguous_inputs(device):
    g = torch.Generator().manual_seed(2)
    base = torch.randn(2, 6, 9, 10, generator=g, dtype=torch.float64).to(device)
    a = base[:, ::2, 1:8, 2:9]  # strided channels, cropped rows
    b = base.permute(0, 1, 3, 2)[:, 1::2, 1:8, 2:9]  # columns not unit stride
    torch.testing.assert_close(off.off_gradients(a, b), off.off_gradients_reference(a, b))
    cl = base.contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(
        off.off_gradients(cl, base), off.off_gradients_reference(cl, base), atol=1e-12, rtol=0
    )
    f = torch.randn(3, 2, 5, 4, 4, generator=g, dtype=torch.float64).to(device).transpose(0, 1)
    torch.testing.assert_close(off.off_gradients_stack(f), off.off_gradients_stack_reference(f))


def test_empty(device):
    a = torch.randn(0, 3, 4, 4, device=device)
    assert off.off_gradients(a, a).shape == (0, 9, 4, 4)
    assert off.off_gradients_stack(torch.randn(2, 3, 0, 4, 4, device=device)).shape == (
        2,
        2,
        0,
        4,
        4,
    )


def test_half_and_bfloat16(device):
    g = torch.Generator().manual_seed(3)
    a = torch.randn(2, 3, 6, 6, generator=g)
    b = torch.randn(2, 3, 6, 6, generator=g)
    ref = off.off_gradients_reference(a, b)
    for dt in (torch.float16, torch.bfloat16):
        out = off.off_gradients(a.to(device, dt), b.to(device, dt))
        assert out.dtype == dt
        torch.testing.assert_close(out.float().cpu(), ref, atol=0.1, rtol=0.02)


def test_gradcheck(device):
    g = torch.Generator().manual_seed(4)
    a = torch.randn(2, 2, 4, 5, generator=g, dtype=torch.float64).to(device).requires_grad_()
    b = torch.randn(2, 2, 4, 5, generator=g, dtype=torch.float64).to(device).requires_grad_()
    assert torch.autograd.gradcheck(off.off_gradients, (a, b))
    assert torch.autograd.gradgradcheck(off.off_gradients, (a, b))
    f = torch.randn(1, 3, 2, 4, 3, generator=g, dtype=torch.float64).to(device).requires_grad_()
    assert torch.autograd.gradcheck(off.off_gradients_stack, (f,))
    assert torch.autograd.gradgradcheck(off.off_gradients_stack, (f,))


@pytest.mark.parametrize("shape", SHAPES)
def test_pair_backward_matches_reference_on_any_shape(device, shape):
    # Rows of one pixel, columns of one pixel, 2x2: the CPU rows' borders without interior.
    g = torch.Generator().manual_seed(7)
    a, b = (torch.randn(shape, generator=g, dtype=torch.float64).to(device) for _ in range(2))
    n, c, h, w = shape
    grad = torch.randn(n, 3 * c, h, w, generator=g, dtype=torch.float64).to(device)
    x = [a.clone().requires_grad_(), b.clone().requires_grad_()]
    y = [a.clone().requires_grad_(), b.clone().requires_grad_()]
    off.off_gradients(*x).backward(grad)
    off.off_gradients_reference(*y).backward(grad)
    for u, v in zip(x, y, strict=True):
        torch.testing.assert_close(u.grad, v.grad, atol=1e-12, rtol=0)


def test_backward_matches_reference(device):
    g = torch.Generator().manual_seed(5)
    f = torch.randn(2, 3, 4, 7, 6, generator=g, dtype=torch.float64).to(device)
    grad = torch.randn(2, 2, 12, 7, 6, generator=g, dtype=torch.float64).to(device)
    f1 = f.clone().requires_grad_()
    f2 = f.clone().requires_grad_()
    off.off_gradients_stack(f1).backward(grad)
    off.off_gradients_stack_reference(f2).backward(grad)
    torch.testing.assert_close(f1.grad, f2.grad)
    # Non-contiguous incoming gradient (expanded): the backward reads strides.
    a = f[:, 0].clone().requires_grad_()
    b = f[:, 1].clone().requires_grad_()
    off.off_gradients(a, b).sum().backward()
    a2 = f[:, 0].clone().requires_grad_()
    b2 = f[:, 1].clone().requires_grad_()
    off.off_gradients_reference(a2, b2).sum().backward()
    torch.testing.assert_close(a.grad, a2.grad)
    torch.testing.assert_close(b.grad, b2.grad)


def test_opcheck(device):
    g = torch.Generator().manual_seed(6)
    a = torch.randn(2, 3, 5, 4, generator=g).to(device).requires_grad_()
    b = torch.randn(2, 3, 5, 4, generator=g).to(device).requires_grad_()
    torch.library.opcheck(torch.ops.mvaccel.off_gradients.default, (a, b))
    f = torch.randn(2, 3, 2, 5, 4, generator=g).to(device).requires_grad_()
    torch.library.opcheck(torch.ops.mvaccel.off_gradients_stack.default, (f,))
    grad = torch.randn(2, 9, 5, 4, generator=g).to(device).requires_grad_()
    torch.library.opcheck(torch.ops.mvaccel._off_gradients_backward.default, (grad,))
    grad = torch.randn(2, 2, 6, 5, 4, generator=g).to(device).requires_grad_()
    torch.library.opcheck(torch.ops.mvaccel._off_gradients_stack_backward.default, (grad,))


def test_compile_fullgraph(device):
    def fn(f):
        return off.off_gradients_stack(f).square().sum() + off.off_gradients(f[:, 0], f[:, 1]).sum()

    f = torch.randn(2, 3, 4, 6, 6, device=device, requires_grad=True)
    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    out = compiled(f)
    out.backward()
    f2 = f.detach().clone().requires_grad_()
    fn(f2).backward()
    torch.testing.assert_close(out, fn(f2.detach()))
    torch.testing.assert_close(f.grad, f2.grad)


@pytest.mark.parametrize(
    "args, match",
    [
        ((torch.randn(2, 3, 4), torch.randn(2, 3, 4)), "N, C, H, W"),
        ((torch.randn(1, 2, 4, 4), torch.randn(1, 3, 4, 4)), "same shape"),
        ((torch.randn(1, 2, 4, 4), torch.randn(1, 2, 4, 4, dtype=torch.float64)), "same dtype"),
        ((torch.ones(1, 2, 4, 4, dtype=torch.int64),) * 2, "float32"),
    ],
)
def test_bad_pair_inputs(args, match):
    with pytest.raises(RuntimeError, match=match):
        off.off_gradients(*args)


def test_bad_stack_inputs():
    with pytest.raises(RuntimeError, match="T >= 2"):
        off.off_gradients_stack(torch.randn(2, 1, 3, 4, 4))
    with pytest.raises(RuntimeError, match="N, T, C, H, W"):
        off.off_gradients_stack(torch.randn(2, 3, 4, 4))


# ---- op contracts: the same checks on every backend and on meta; memory planned first --------

BAD_PAIRS = [
    ((2, 3, 4), (2, 3, 4), torch.float32, torch.float32, "N, C, H, W"),
    ((1, 2, 4, 4), (1, 3, 4, 4), torch.float32, torch.float32, "same shape"),
    ((1, 2, 4, 4), (1, 2, 4, 4), torch.float32, torch.float64, "same dtype"),
    ((1, 2, 4, 4), (1, 2, 4, 4), torch.int64, torch.int64, "float32"),
]


@pytest.mark.parametrize("backend", ["kernel", "meta"])
@pytest.mark.parametrize("s0, s1, d0, d1, match", BAD_PAIRS)
def test_bad_pair_inputs_on_device_and_meta(device, backend, s0, s1, d0, d1, match):
    dev = "meta" if backend == "meta" else device
    a, b = torch.ones(s0, dtype=d0, device=dev), torch.ones(s1, dtype=d1, device=dev)
    with pytest.raises(RuntimeError, match=match):
        off.off_gradients(a, b)


@pytest.mark.parametrize("device_or_meta", ["cpu", "meta"])
def test_bad_backward_grads(device_or_meta):
    d = device_or_meta
    with pytest.raises(RuntimeError, match="3C channels"):
        torch.ops.mvaccel._off_gradients_backward(torch.ones(1, 4, 3, 3, device=d))
    with pytest.raises(RuntimeError, match="3C channels"):
        torch.ops.mvaccel._off_gradients_stack_backward(torch.ones(1, 2, 4, 3, 3, device=d))
    with pytest.raises(RuntimeError, match="T >= 2"):
        off.off_gradients_stack(torch.ones(2, 1, 3, 4, 4, device=d))


def test_mixed_cpu_and_meta_inputs_raise():
    # Issue 13.9: the fake kernel returned uninitialised CPU memory for a cpu/meta pair.
    cpu, meta = torch.randn(1, 2, 4, 4), torch.randn(1, 2, 4, 4, device="meta")
    for a, b in ((cpu, meta), (meta, cpu)):
        with pytest.raises(RuntimeError, match="same device"):
            off.off_gradients(a, b)


def _huge(device, *shape):
    # A full-size view of one element: no memory until an op copies or allocates.
    return torch.zeros((1,) * len(shape), device=device).expand(*shape)


def test_too_large_raises_before_allocating(device):
    # Issue 13.8: an expanded (1, 300, 6000, 6000) pair needs ~215 GB (output and row copies).
    f = _huge(device, 1, 300, 6000, 6000)
    with pytest.raises(torch.OutOfMemoryError, match=r"off_gradients: .* GiB .* available"):
        off.off_gradients(f, f)
    with pytest.raises(torch.OutOfMemoryError, match=r"off_gradients_stack: .* GiB"):
        off.off_gradients_stack(_huge(device, 1, 4, 300, 6000, 6000))
    with pytest.raises(torch.OutOfMemoryError, match=r"_off_gradients_backward: .* GiB"):
        torch.ops.mvaccel._off_gradients_backward(_huge(device, 1, 900, 6000, 6000))


# ---- channels_last in -> channels_last out (issue 16) ------------------------------------------


def _cl_frames(*shape, dtype=torch.float64, seed=0, offset=False):
    """(..., C, H, W) with each frame channels_last; offset: a view one element into its storage."""
    *lead, c, h, w = shape
    n = len(lead)
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(int(torch.tensor(shape).prod()) + 1, generator=g, dtype=dtype)
    flat = base[1:] if offset else base[:-1]
    return flat.view(*lead, h, w, c).permute(*range(n), n + 2, n, n + 1)


def _is_cl(t: torch.Tensor, cdim: int) -> bool:
    # Each frame channels_last: the channel is unit stride, then columns, then rows.
    c, h, w = t.shape[cdim:]
    return t.stride()[cdim:] == (1, w * c, c)


CL_SHAPES = [(2, 3, 5, 7), (1, 5, 1, 6), (1, 2, 4, 1), (3, 4, 2, 2), (2, 6, 9, 11)]


@pytest.mark.parametrize("shape", CL_SHAPES)
@pytest.mark.parametrize("offset", [False, True])
def test_channels_last_pair_keeps_layout(device, shape, offset):
    a = _cl_frames(*shape, offset=offset).to(device)
    b = _cl_frames(*shape, seed=1).to(device)
    out = off.off_gradients(a, b)
    assert _is_cl(out, 1)
    want = off.off_gradients(a.contiguous(), b.contiguous())
    assert want.is_contiguous()
    torch.testing.assert_close(out, want, atol=1e-12, rtol=0)
    torch.testing.assert_close(out, off.off_gradients_reference(a, b), atol=1e-12, rtol=0)
    # f_prev in another layout (contiguous, or columns not unit stride): copied, same values.
    for prev in (b.contiguous(), b.contiguous()[..., :].transpose(2, 3).contiguous().mT):
        got = off.off_gradients(a, prev)
        assert _is_cl(got, 1)
        torch.testing.assert_close(got, want, atol=1e-12, rtol=0)


@pytest.mark.parametrize("shape", [(2, 3, 4, 5, 7), (1, 2, 3, 1, 6), (2, 4, 2, 3, 3)])
@pytest.mark.parametrize("offset", [False, True])
def test_channels_last_stack_keeps_layout(device, shape, offset):
    f = _cl_frames(*shape, offset=offset).to(device)
    out = off.off_gradients_stack(f)
    assert _is_cl(out, 2)
    assert out.flatten(0, 1).is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, off.off_gradients_stack(f.contiguous()), atol=1e-12, rtol=0)
    torch.testing.assert_close(out, off.off_gradients_stack_reference(f), atol=1e-12, rtol=0)


def test_contiguous_f_t_with_channels_last_prev_stays_contiguous(device):
    a = _cl_frames(2, 3, 5, 7).to(device).contiguous()
    b = _cl_frames(2, 3, 5, 7, seed=1).to(device)
    out = off.off_gradients(a, b)
    assert out.is_contiguous()
    torch.testing.assert_close(out, off.off_gradients_reference(a, b), atol=1e-12, rtol=0)


@pytest.mark.parametrize("shape", CL_SHAPES)
def test_channels_last_pair_backward(device, shape):
    n, c, h, w = shape
    grad = _cl_frames(n, 3 * c, h, w, seed=2, offset=True).to(device)
    g_t, g_prev = torch.ops.mvaccel._off_gradients_backward(grad)
    assert _is_cl(g_t, 1) and _is_cl(g_prev, 1)
    w_t, w_prev = torch.ops.mvaccel._off_gradients_backward(grad.contiguous())
    torch.testing.assert_close(g_t, w_t, atol=1e-12, rtol=0)
    torch.testing.assert_close(g_prev, w_prev, atol=1e-12, rtol=0)
    # Against autograd of the reference, through the public op on channels_last inputs.
    a = _cl_frames(*shape).to(device).requires_grad_()
    b = _cl_frames(*shape, seed=1).to(device).requires_grad_()
    off.off_gradients(a, b).backward(grad)
    a2, b2 = (t.detach().clone().requires_grad_() for t in (a, b))
    off.off_gradients_reference(a2, b2).backward(grad)
    torch.testing.assert_close(a.grad, a2.grad, atol=1e-12, rtol=0)
    torch.testing.assert_close(b.grad, b2.grad, atol=1e-12, rtol=0)


@pytest.mark.parametrize("shape", [(2, 3, 4, 5, 7), (1, 2, 3, 1, 6), (2, 4, 2, 3, 3)])
def test_channels_last_stack_backward(device, shape):
    n, t, c, h, w = shape
    grad = _cl_frames(n, t - 1, 3 * c, h, w, seed=3, offset=True).to(device)
    gf = torch.ops.mvaccel._off_gradients_stack_backward(grad)
    assert _is_cl(gf, 2)
    want = torch.ops.mvaccel._off_gradients_stack_backward(grad.contiguous())
    torch.testing.assert_close(gf, want, atol=1e-12, rtol=0)
    f = _cl_frames(*shape).to(device).requires_grad_()
    f2 = f.detach().clone().requires_grad_()
    off.off_gradients_stack(f).backward(grad)
    off.off_gradients_stack_reference(f2).backward(grad)
    torch.testing.assert_close(f.grad, f2.grad, atol=1e-12, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_channels_last_low_precision_equals_contiguous(device, dtype):
    a = _cl_frames(2, 5, 6, 7, dtype=torch.float32).to(device, dtype)
    b = _cl_frames(2, 5, 6, 7, dtype=torch.float32, seed=1).to(device, dtype)
    out = off.off_gradients(a, b)
    assert _is_cl(out, 1) and out.dtype == dtype
    # The same fp32 accumulation in both layouts: the same rounded values.
    want = off.off_gradients(a.contiguous(), b.contiguous())
    torch.testing.assert_close(out, want, atol=0, rtol=0)
    grad = _cl_frames(2, 15, 6, 7, dtype=torch.float32, seed=2).to(device, dtype)
    for u, v in zip(
        torch.ops.mvaccel._off_gradients_backward(grad),
        torch.ops.mvaccel._off_gradients_backward(grad.contiguous()),
        strict=True,
    ):
        torch.testing.assert_close(u, v, atol=0, rtol=0)


def test_channels_last_opcheck_and_meta(device):
    # The fake kernels give the kernels' strides (opcheck compares them).
    a = _cl_frames(2, 3, 5, 4, dtype=torch.float32).to(device).requires_grad_()
    b = _cl_frames(2, 3, 5, 4, dtype=torch.float32, seed=1).to(device).requires_grad_()
    torch.library.opcheck(torch.ops.mvaccel.off_gradients.default, (a, b))
    f = _cl_frames(2, 3, 2, 5, 4, dtype=torch.float32).to(device).requires_grad_()
    torch.library.opcheck(torch.ops.mvaccel.off_gradients_stack.default, (f,))
    grad = _cl_frames(2, 9, 5, 4, dtype=torch.float32).to(device)
    torch.library.opcheck(torch.ops.mvaccel._off_gradients_backward.default, (grad,))
    grad5 = _cl_frames(2, 2, 6, 5, 4, dtype=torch.float32).to(device)
    torch.library.opcheck(torch.ops.mvaccel._off_gradients_stack_backward.default, (grad5,))
    # meta tensors (torch.compile's view of the op) get the layout of the real call.
    a_m, b_m, f_m, g_m = (t.detach().to("meta") for t in (a, b, f, grad))
    assert off.off_gradients(a_m, b_m).stride() == off.off_gradients(a, b).stride()
    assert off.off_gradients_stack(f_m).stride() == off.off_gradients_stack(f).stride()
    metas = torch.ops.mvaccel._off_gradients_backward(g_m)
    reals = torch.ops.mvaccel._off_gradients_backward(grad)
    assert [m.stride() for m in metas] == [r.stride() for r in reals]


# ---- issue 16: the CUDA tile kernels (16-byte / scalar columns, 8-row strips) against CPU ------


def _tile_cases_match_cpu(dev):
    for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        tol = {} if dtype in (torch.float32, torch.float64) else {"atol": 0.05, "rtol": 0.02}
        for h, w in ((5, 16), (9, 8), (17, 24), (8, 12), (3, 1), (1, 16), (10, 7), (28, 28)):
            g = torch.Generator().manual_seed(h * 100 + w)
            base = torch.randn(2 * 3 * 3 * h * w + 1, generator=g).to(dtype)
            f = base[:-1].view(2, 3, 3, h, w)
            fd = f.to(dev)
            for a, b in (
                (fd[:, 0], fd[:, 1]),  # aligned when w * element size is a multiple of 16
                (base.to(dev)[1:].view(2, 3, 3, h, w)[:, 0], fd[:, 1]),  # one element in
                (fd[:, 0].contiguous(memory_format=torch.channels_last), fd[:, 1]),
            ):
                got = off.off_gradients(a, b)
                want = off.off_gradients(a.cpu(), b.cpu())
                assert got.stride() == want.stride()
                torch.testing.assert_close(got.cpu(), want, **tol)
            got = off.off_gradients_stack(f.to(dev))
            torch.testing.assert_close(got.cpu(), off.off_gradients_stack(f), **tol)
            grad = torch.randn(2, 9, h, w, generator=g).to(dtype)
            for u, v in zip(
                torch.ops.mvaccel._off_gradients_backward(grad.to(dev)),
                torch.ops.mvaccel._off_gradients_backward(grad),
                strict=True,
            ):
                torch.testing.assert_close(u.cpu(), v, **tol)
            g5 = torch.randn(2, 2, 9, h, w, generator=g).to(dtype)
            got = torch.ops.mvaccel._off_gradients_stack_backward(g5.to(dev))
            want = torch.ops.mvaccel._off_gradients_stack_backward(g5)
            torch.testing.assert_close(got.cpu(), want, **tol)


@pytest.mark.cuda
def test_cuda_tiles_match_cpu():
    _tile_cases_match_cpu("cuda")
