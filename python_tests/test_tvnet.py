"""tvnet_iterations: fused kernels and hand-written backward against the unrolled PyTorch block."""

from __future__ import annotations

import pytest
import torch

from mvaccel.ops import tvnet as T

COEFFS = (0.15 * 0.3, 0.3, 0.25 / 0.3)


def _inputs(n, h, w, k, dtype=torch.float64, device="cpu", seed=0, perturb=0.2):
    g = torch.Generator().manual_seed(seed)

    def r(*s):
        return torch.randn(*s, generator=g, dtype=dtype)

    u = r(n, 2, h, w)
    p = 0.3 * r(n, 4, h, w)
    # Image-like scales: residual in grey levels, gradients of a few levels per pixel, so
    # all three thresholding cases occur.
    warped = r(n, 3, h, w) * torch.tensor([20.0, 3.0, 3.0], dtype=dtype).view(1, 3, 1, 1)
    taps = torch.tensor(T.TVL1_TAPS, dtype=dtype)
    wf = taps.repeat(k, 1) + perturb * r(k, 8)
    wb = taps.repeat(k, 1) + perturb * r(k, 8)
    return [t.to(device) for t in (u, p, warped, wf, wb)]


@pytest.mark.parametrize("n, h, w, k", [(2, 5, 6, 3), (1, 1, 1, 2), (1, 1, 7, 1), (2, 6, 1, 4)])
def test_forward_matches_reference(device, n, h, w, k):
    args = _inputs(n, h, w, k, device=device)
    for a, b in zip(
        T.tvnet_iterations(*args, *COEFFS),
        T.tvnet_iterations_reference(*args, *COEFFS),
        strict=True,
    ):
        torch.testing.assert_close(a, b, atol=1e-11, rtol=0)


def test_float32(device):
    args = _inputs(2, 9, 8, 5, dtype=torch.float32, device=device)
    ref = T.tvnet_iterations_reference(*[a.double() for a in args], *COEFFS)
    for a, b in zip(T.tvnet_iterations(*args, *COEFFS), ref, strict=True):
        torch.testing.assert_close(a.double(), b, atol=1e-3, rtol=1e-4)


def test_tvl1_taps_are_tvl1(device):
    # With TVL1_TAPS the divergence is the backward difference, the gradient the forward one.
    u, p, warped, wf, wb = _inputs(1, 6, 7, 1, device=device, perturb=0.0)
    u1, p1 = T.tvnet_iterations(u, p, warped, wf, wb, *COEFFS)
    px, py = p[:, 0], p[:, 1]
    pxl = torch.nn.functional.pad(px[..., :-1], (1, 0))
    pyl = torch.nn.functional.pad(py[..., :-1, :], (0, 0, 1, 0))
    pxd = torch.nn.functional.pad(px[..., :-1], (0, 1))
    pyd = torch.nn.functional.pad(py[..., :-1, :], (0, 0, 0, 1))
    div = pxd - pxl + pyd - pyl
    # Recover v from the reference thresholding and check u' = v + theta div exactly.
    u_ref, _ = T.tvnet_iterations_reference(u, p, warped, wf, wb, *COEFFS)
    torch.testing.assert_close(u1, u_ref, atol=1e-12, rtol=0)
    v = u1[:, 0] - COEFFS[1] * div
    rho = warped[:, 0] + warped[:, 1] * u[:, 0] + warped[:, 2] * u[:, 1]
    grad = warped[:, 1] ** 2 + warped[:, 2] ** 2
    lt = COEFFS[0]
    d = torch.where(
        rho < -lt * grad,
        lt * warped[:, 1],
        torch.where(rho > lt * grad, -lt * warped[:, 1], -rho / grad * warped[:, 1]),
    )
    torch.testing.assert_close(v, u[:, 0] + d, atol=1e-10, rtol=0)
    ux = torch.nn.functional.pad(u1[:, 0, :, 1:] - u1[:, 0, :, :-1], (0, 1))
    uy = torch.nn.functional.pad(u1[:, 0, 1:] - u1[:, 0, :-1], (0, 0, 0, 1))
    ng = 1 + COEFFS[2] * torch.sqrt(ux**2 + uy**2 + 1e-12)
    torch.testing.assert_close(p1[:, 0], (p[:, 0] + COEFFS[2] * ux) / ng, atol=1e-12, rtol=0)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_gradcheck(device, k):
    args = [a.requires_grad_() for a in _inputs(1, 4, 5, k, device=device, seed=k)]
    assert torch.autograd.gradcheck(lambda *a: T.tvnet_iterations(*a, *COEFFS), args)


@pytest.mark.parametrize(
    "k, h, w",
    # Thin and tiny images: the CPU rows have no interior (borders only) or no row below.
    [(1, 7, 6), (4, 7, 6), (3, 1, 5), (3, 4, 1), (3, 2, 2), (2, 3, 19)],
)
def test_backward_matches_autograd_reference(device, k, h, w):
    base = _inputs(2, h, w, k, device=device, seed=10 + k)
    g = torch.Generator().manual_seed(3)
    gu = torch.randn(2, 2, h, w, generator=g, dtype=torch.float64).to(device)
    gp = torch.randn(2, 4, h, w, generator=g, dtype=torch.float64).to(device)
    a = [t.clone().requires_grad_() for t in base]
    b = [t.clone().requires_grad_() for t in base]
    torch.autograd.backward(T.tvnet_iterations(*a, *COEFFS), [gu, gp])
    torch.autograd.backward(T.tvnet_iterations_reference(*b, *COEFFS), [gu, gp])
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x.grad, y.grad, atol=1e-10, rtol=1e-10)
    # Only u used downstream (grad of p is None).
    a = [t.clone().requires_grad_() for t in base]
    b = [t.clone().requires_grad_() for t in base]
    T.tvnet_iterations(*a, *COEFFS)[0].mul(gu).sum().backward()
    T.tvnet_iterations_reference(*b, *COEFFS)[0].mul(gu).sum().backward()
    for x, y in zip(a, b, strict=True):
        # The last iteration's filters wf do not reach u: autograd leaves None there.
        ref = y.grad if y.grad is not None else torch.zeros_like(y)
        torch.testing.assert_close(x.grad, ref, atol=1e-10, rtol=1e-10)


def test_non_contiguous_inputs(device):
    u, p, warped, wf, wb = _inputs(2, 5, 6, 2, device=device)
    u_t = u.transpose(2, 3).contiguous().transpose(2, 3)  # same values, other strides
    wf_t = wf.t().contiguous().t()
    out = T.tvnet_iterations(u_t, p, warped, wf_t, wb, *COEFFS)
    for a, b in zip(out, T.tvnet_iterations_reference(u, p, warped, wf, wb, *COEFFS), strict=True):
        torch.testing.assert_close(a, b, atol=1e-11, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_same_result_on_any_thread_count(dtype):
    # The CPU kernel splits work by pair (pairs >= threads) or by rows (fewer pairs, large
    # images): both give bit-identical outputs and gradients, filter gradients included.
    # One 190x180 pair: on 2 threads its rows are split in two tasks.
    base = _inputs(1, 190, 180, 2, dtype=dtype, seed=5)
    g = torch.Generator().manual_seed(4)
    gu = torch.randn(1, 2, 190, 180, generator=g, dtype=dtype)
    gp = torch.randn(1, 4, 190, 180, generator=g, dtype=dtype)
    results = []
    old = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            a = [t.clone().requires_grad_() for t in base]
            out = T.tvnet_iterations(*a, *COEFFS)
            torch.autograd.backward(out, [gu, gp])
            results.append([o.detach() for o in out] + [t.grad for t in a])
    finally:
        torch.set_num_threads(old)
    for x, y in zip(*results, strict=True):
        assert torch.equal(x, y)


def test_states_only_when_grad_is_needed():
    args = _inputs(1, 4, 4, 3)
    out = torch.ops.mvaccel.tvnet_iterations.default(*args, *COEFFS, 1e-12, 1e-12, False)
    assert out[2].numel() == 0
    out = torch.ops.mvaccel.tvnet_iterations.default(*args, *COEFFS, 1e-12, 1e-12, True)
    assert out[2].shape == (3, 1, 6, 4, 4)
    torch.testing.assert_close(out[2][0, :, :2], args[0])  # state before iteration 0 is u


def test_opcheck(device):
    args = [a.float().requires_grad_() for a in _inputs(2, 5, 4, 2, device=device)]
    torch.library.opcheck(
        torch.ops.mvaccel.tvnet_iterations.default, (*args, *COEFFS, 1e-12, 1e-12, True)
    )


def test_compile_fullgraph(device):
    args = [a.float().requires_grad_() for a in _inputs(1, 6, 5, 3, device=device)]

    def fn(*a):
        u, p = T.tvnet_iterations(*a, *COEFFS)
        return u.square().sum() + p.sum()

    out = torch.compile(fn, fullgraph=True, backend="aot_eager")(*args)
    out.backward()
    ref_args = [a.detach().clone().requires_grad_() for a in args]
    ref = fn(*ref_args)
    ref.backward()
    torch.testing.assert_close(out, ref)
    for a, b in zip(args, ref_args, strict=True):
        torch.testing.assert_close(a.grad, b.grad)


def test_bad_inputs():
    u, p, warped, wf, wb = _inputs(1, 4, 4, 2, dtype=torch.float32)
    with pytest.raises(RuntimeError, match="u of shape"):
        T.tvnet_iterations(u[:, :1], p, warped, wf, wb, *COEFFS)
    with pytest.raises(RuntimeError, match="p of shape"):
        T.tvnet_iterations(u, p[:, :3], warped, wf, wb, *COEFFS)
    with pytest.raises(RuntimeError, match="wb of shape"):
        T.tvnet_iterations(u, p, warped, wf, wb[:1], *COEFFS)
    with pytest.raises(RuntimeError, match="dtype of u"):
        T.tvnet_iterations(u, p.double(), warped, wf, wb, *COEFFS)
    with pytest.raises(RuntimeError, match="float32 or float64"):
        T.tvnet_iterations(u.half(), p.half(), warped.half(), wf.half(), wb.half(), *COEFFS)


# ---- op contracts ---------------------------------------------------------------------------


def test_double_backward_raises_instead_of_wrong_values():
    # gradgradcheck found a silent Jacobian mismatch: the backward op had no derivative.
    args = [t.requires_grad_() for t in _inputs(1, 3, 4, 2)]
    u_out, p_out = T.tvnet_iterations(*args, *COEFFS)
    (gu,) = torch.autograd.grad((u_out * u_out).sum() + p_out.sum(), args[0], create_graph=True)
    with pytest.raises(RuntimeError, match="double backward is not supported"):
        torch.autograd.grad(gu.sum(), args[0])
    with pytest.raises(RuntimeError, match="double backward is not supported"):
        torch.autograd.gradgradcheck(lambda *a: T.tvnet_iterations(*a, *COEFFS), args)


@pytest.mark.parametrize("where", ["meta", "mixed"])
def test_bad_inputs_on_meta_and_mixed_devices(where):
    u, p, warped, wf, wb = _inputs(1, 4, 4, 2, dtype=torch.float32)
    if where == "meta":
        u, p, warped, wf, wb = (t.to("meta") for t in (u, p, warped, wf, wb))
        with pytest.raises(RuntimeError, match="p of shape"):
            T.tvnet_iterations(u, p[:, :3], warped, wf, wb, *COEFFS)
        with pytest.raises(RuntimeError, match="dtype of u"):
            T.tvnet_iterations(u, p.double(), warped, wf, wb, *COEFFS)
        with pytest.raises(RuntimeError, match="float32 or float64"):
            T.tvnet_iterations(u.half(), p.half(), warped.half(), wf.half(), wb.half(), *COEFFS)
    else:
        # Issue 13.9: the fake kernel returned uninitialised CPU memory for cpu/meta inputs.
        with pytest.raises(RuntimeError, match="device of u"):
            T.tvnet_iterations(u, p.to("meta"), warped, wf, wb, *COEFFS)
        with pytest.raises(RuntimeError, match="device of u"):
            T.tvnet_iterations(u.to("meta"), p, warped, wf, wb, *COEFFS)


def test_too_large_raises_before_allocating(device):
    # Issue 13.8: 60000^2 needs ~200 GB (u, p clones and contiguous copies of the views).
    n = 60000

    def big(c):
        return torch.zeros(1, 1, 1, 1, device=device).expand(1, c, n, n)

    wf = torch.tensor([T.TVL1_TAPS], device=device)
    with pytest.raises(torch.OutOfMemoryError, match=r"tvnet_iterations: .* GiB .* available"):
        T.tvnet_iterations(big(2), big(4), big(3), wf, wf, *COEFFS)
