"""tvnet_iterations: a fused block of TVNet's unrolled TV-L1 iterations, with trainable filters.

The compiled op runs ``k`` iterations of the dual TV-L1 scheme (thresholding, primal update with
a trainable divergence, dual update with trainable forward differences; see
``csrc/ops/tvnet/tvnet_math.h``) in two passes per iteration, and a hand-written backward that
keeps only the ``(u, p)`` state before each iteration (6 planes) and recomputes the rest.
:func:`tvnet_iterations_reference` is the same block in plain PyTorch (autograd through every
step): the oracle of the tests and the baseline of the benchmark.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

#: Filters of one iteration that make the iteration plain TV-L1: forward differences
#: ``(f0, f1, g0, g1) = (-1, 1, -1, 1)`` for u1 and u2 (``wf``), backward-difference divergence
#: ``(b0, b1, c0, c1) = (-1, 1, -1, 1)`` for p1 and p2 (``wb``).
TVL1_TAPS = (-1.0, 1.0, -1.0, 1.0, -1.0, 1.0, -1.0, 1.0)


def tvnet_iterations(
    u: Tensor,
    p: Tensor,
    warped: Tensor,
    wf: Tensor,
    wb: Tensor,
    l_t: float,
    theta: float,
    taut: float,
    eps: float = 1e-12,
    grad_eps: float = 1e-12,
) -> tuple[Tensor, Tensor]:
    """Run ``k = wf.shape[0]`` TVNet iterations of one warp.

    Args:
        u: ``(N, 2, H, W)`` flow in pixels (channel 0 x, 1 y), float32 or float64.
        p: ``(N, 4, H, W)`` dual fields ``(p11, p12, p21, p22)`` (zeros at the start of a scale).
        warped: ``(N, 3, H, W)`` planes of the warp: ``rho_c = I1w - I1wx*u0_x - I1wy*u0_y - I0``,
            ``I1wx``, ``I1wy`` (the second image and its centred gradients warped by ``u0``).
        wf: ``(k, 8)`` forward-difference taps of each iteration, ``(f0, f1, g0, g1)`` of u1 then
            of u2: ``ux = f0*u(x) + f1*u(x+1)``, ``uy = g0*u(y) + g1*u(y+1)``, 0 on the last
            column / row. :data:`TVL1_TAPS` is TV-L1.
        wb: ``(k, 8)`` divergence taps, ``(b0, b1, c0, c1)`` of p1 then p2:
            ``div = b0*px(x-1) + b1*px(x) + c0*py(y-1) + c1*py(y)`` with the paper's boundary
            rules (eq. 5).
        l_t: ``lambda * theta``.
        theta: coupling of u and v.
        taut: ``tau / theta``.
        eps: added under the square root of the dual update (eq. 11).
        grad_eps: the thresholding divides by ``|grad I1w|^2`` only above this.

    Returns:
        ``(u, p)`` after the ``k`` iterations. Differentiable in ``u``, ``p``, ``warped``, ``wf``
        and ``wb`` (hand-written backward); double backward is not supported (differentiating
        the gradient raises a ``RuntimeError``; use :func:`tvnet_iterations_reference` for
        higher-order gradients).

    Raises:
        RuntimeError: shapes, dtypes or devices that do not fit (the same message on every
            backend and on meta tensors).
        torch.OutOfMemoryError: the call needs more memory than the device has available
            (checked before anything is allocated).
    """
    save = torch.is_grad_enabled() and any(t.requires_grad for t in (u, p, warped, wf, wb))
    u_out, p_out, _ = torch.ops.mvaccel.tvnet_iterations.default(
        u, p, warped, wf, wb, l_t, theta, taut, eps, grad_eps, save
    )
    return u_out, p_out


def _shift_prev(x: Tensor, dim: int) -> Tensor:
    # x(i - 1) along dim, 0 at i = 0.
    pad = [0, 0] * (x.dim() - 1 - dim) + [1, 0]
    return F.pad(x.narrow(dim, 0, x.shape[dim] - 1), pad)


def _drop_last(x: Tensor, dim: int) -> Tensor:
    # x(i) for i < n - 1, 0 at the last index.
    pad = [0, 0] * (x.dim() - 1 - dim) + [0, 1]
    return F.pad(x.narrow(dim, 0, x.shape[dim] - 1), pad)


def _next(x: Tensor, dim: int) -> Tensor:
    # x(i + 1) along dim for i < n - 1, 0 at the last index.
    pad = [0, 0] * (x.dim() - 1 - dim) + [0, 1]
    return F.pad(x.narrow(dim, 1, x.shape[dim] - 1), pad)


def tvnet_iterations_reference(
    u: Tensor,
    p: Tensor,
    warped: Tensor,
    wf: Tensor,
    wb: Tensor,
    l_t: float,
    theta: float,
    taut: float,
    eps: float = 1e-12,
    grad_eps: float = 1e-12,
) -> tuple[Tensor, Tensor]:
    """Reference of :func:`tvnet_iterations` in plain PyTorch (autograd through every step)."""
    rho_c, ix, iy = warped.unbind(1)
    grad = ix * ix + iy * iy
    lg = l_t * grad
    big = grad > grad_eps
    safe_grad = torch.where(big, grad, torch.ones_like(grad))
    u1, u2 = u.unbind(1)
    ps = list(p.unbind(1))
    for i in range(wf.shape[0]):
        rho = rho_c + ix * u1 + iy * u2
        fi = torch.where(big, -rho / safe_grad, torch.zeros_like(rho))
        s = torch.where(rho < -lg, torch.full_like(rho, l_t), torch.where(rho > lg, -l_t, fi))
        new_u = []
        for k, comp in enumerate((u1, u2)):
            b0, b1, c0, c1 = wb[i, 4 * k : 4 * k + 4].unbind()
            px, py = ps[2 * k], ps[2 * k + 1]
            div = (
                b0 * _shift_prev(px, 2)
                + b1 * _drop_last(px, 2)
                + c0 * _shift_prev(py, 1)
                + c1 * _drop_last(py, 1)
            )
            new_u.append(comp + s * (ix if k == 0 else iy) + theta * div)
        u1, u2 = new_u
        for k, comp in enumerate((u1, u2)):
            f0, f1, g0, g1 = wf[i, 4 * k : 4 * k + 4].unbind()
            ux = _drop_last(f0 * comp, 2) + f1 * _next(comp, 2)
            uy = _drop_last(g0 * comp, 1) + g1 * _next(comp, 1)
            ng = 1 + taut * torch.sqrt(ux * ux + uy * uy + eps)
            ps[2 * k] = (ps[2 * k] + taut * ux) / ng
            ps[2 * k + 1] = (ps[2 * k + 1] + taut * uy) / ng
    return torch.stack([u1, u2], 1), torch.stack(ps, 1)


# ---- fake kernels -------------------------------------------------------------------------------


# The same checks and messages as csrc/ops/tvnet/tvnet_checks.h (a meta or FakeTensor call
# fails where the compiled kernel would, and never returns memory of a device it was not given).


def _check_same(op: str, ref, t, name: str) -> None:
    torch._check(
        t.dtype == ref.dtype,
        lambda: f"{op}: {name} must have the dtype of u ({ref.dtype}), got {t.dtype}",
    )
    torch._check(
        t.device == ref.device,
        lambda: f"{op}: {name} must be on the device of u ({ref.device}), got {t.device}",
    )


def _check_forward(u, p, warped, wf, wb) -> tuple[int, int, int, int]:
    op = "mvaccel.tvnet_iterations"
    torch._check(
        u.dim() == 4,
        lambda: f"{op}: expected u of shape (N, 2, H, W) (4 dimensions), got {tuple(u.shape)}",
    )
    torch._check(
        u.dtype in (torch.float32, torch.float64),
        lambda: f"{op}: expected float32 or float64 tensors, got {u.dtype}",
    )
    n, c, h, w = u.shape
    torch._check(c == 2, lambda: f"{op}: expected u of shape (N, 2, H, W), got {tuple(u.shape)}")
    torch._check(
        tuple(p.shape) == (n, 4, h, w),
        lambda: (
            f"{op}: expected p of shape {(n, 4, h, w)} (p11, p12, p21, p22), got {tuple(p.shape)}"
        ),
    )
    torch._check(
        tuple(warped.shape) == (n, 3, h, w),
        lambda: (
            f"{op}: expected warped of shape {(n, 3, h, w)} (rho_c, I1wx, I1wy), "
            f"got {tuple(warped.shape)}"
        ),
    )
    torch._check(
        wf.dim() == 2 and wf.shape[1] == 8,
        lambda: f"{op}: expected wf of shape (k, 8), got {tuple(wf.shape)}",
    )
    torch._check(
        wb.dim() == 2 and wb.shape[1] == 8 and wb.shape[0] == wf.shape[0],
        lambda: f"{op}: expected wb of shape ({wf.shape[0]}, 8), got {tuple(wb.shape)}",
    )
    for name, t in (("p", p), ("warped", warped), ("wf", wf), ("wb", wb)):
        _check_same(op, u, t, name)
    return n, h, w, wf.shape[0]


@torch.library.register_fake("mvaccel::tvnet_iterations")
def _tvnet_iterations_fake(u, p, warped, wf, wb, l_t, theta, taut, eps, grad_eps, save_states):
    n, h, w, k = _check_forward(u, p, warped, wf, wb)
    states = u.new_empty((k, n, 6, h, w)) if save_states else u.new_empty((0,))
    return (
        torch.empty_like(u, memory_format=torch.contiguous_format),
        p.new_empty((n, 4, h, w)),
        states,
    )


@torch.library.register_fake("mvaccel::_tvnet_iterations_backward")
def _tvnet_iterations_backward_fake(
    grad_u, grad_p, states, u_out, warped, wf, wb, l_t, theta, taut, eps, grad_eps
):
    op = "mvaccel._tvnet_iterations_backward"
    n, h, w, k = _check_forward(u_out, grad_p, warped, wf, wb)
    torch._check(
        grad_u.shape == u_out.shape,
        lambda: f"{op}: grad_u must have the shape of u, got {tuple(grad_u.shape)}",
    )
    _check_same(op, u_out, grad_u, "grad_u")
    _check_same(op, u_out, states, "states")
    torch._check(
        tuple(states.shape) == (k, n, 6, h, w),
        lambda: (
            f"{op}: expected states of shape {(k, n, 6, h, w)} as "
            f"tvnet_iterations(save_states=True) returns, got {tuple(states.shape)}"
        ),
    )
    return (
        grad_u.new_empty((n, 2, h, w)),
        grad_u.new_empty((n, 4, h, w)),
        grad_u.new_empty((n, 3, h, w)),
        grad_u.new_empty(wf.shape),
        grad_u.new_empty(wb.shape),
    )


# ---- autograd -----------------------------------------------------------------------------------


def _setup(ctx, inputs, output):
    u, p, warped, wf, wb, l_t, theta, taut, eps, grad_eps, save = inputs
    u_out, _, states = output
    # No zero gradient for the unused `states` output (it would double the peak memory).
    ctx.set_materialize_grads(False)
    ctx.coeffs = (l_t, theta, taut, eps, grad_eps)
    ctx.saved = save
    ctx.save_for_backward(states, u_out, warped, wf, wb)


def _backward(ctx, grad_u, grad_p, _grad_states):
    if not ctx.saved:
        raise RuntimeError(
            "tvnet_iterations: the forward ran with save_states=False (no gradient was "
            "required then); call mvaccel.ops.tvnet_iterations with grad mode on"
        )
    states, u_out, warped, wf, wb = ctx.saved_tensors
    if grad_u is None:
        grad_u = torch.zeros_like(u_out)
    if grad_p is None:
        n, _, h, w = u_out.shape
        grad_p = u_out.new_zeros((n, 4, h, w))
    gu, gp, gw, gwf, gwb = torch.ops.mvaccel._tvnet_iterations_backward.default(
        grad_u.contiguous(), grad_p.contiguous(), states, u_out, warped, wf, wb, *ctx.coeffs
    )
    return gu, gp, gw, gwf, gwb, None, None, None, None, None, None


def _no_double_backward(ctx, *grads):
    raise RuntimeError(
        "mvaccel.tvnet_iterations: double backward is not supported (the hand-written backward "
        "has no derivative of its own); use mvaccel.ops.tvnet.tvnet_iterations_reference for "
        "higher-order gradients"
    )


torch.library.register_autograd("mvaccel::tvnet_iterations", _backward, setup_context=_setup)
# Registered so that differentiating the backward raises instead of PyTorch's fallback silently
# returning wrong second derivatives (gradgradcheck found a Jacobian mismatch).
torch.library.register_autograd("mvaccel::_tvnet_iterations_backward", _no_double_backward)
