"""Flow losses of TVNet (Fan et al., CVPR 2018): the TV-L1 energy (eq. 1, 13) and EPE (eq. 14)."""

from __future__ import annotations

import torch
from torch import Tensor

from ..flow.io import epe  # noqa: F401  (the one EPE, eq. 14 as a loss: re-exported here)


def _grey(x: Tensor, name: str) -> Tensor:
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"tvl1_energy: {name} must be (N, 1 or 3, H, W), got {tuple(x.shape)}")
    if x.shape[1] == 3:
        w = torch.tensor((0.299, 0.587, 0.114), dtype=x.dtype, device=x.device)
        x = (x * w.view(1, 3, 1, 1)).sum(1, keepdim=True)
    return x


def tvl1_energy(
    I0: Tensor, I1: Tensor, u: Tensor, lambda_: float = 0.15, eps: float = 1e-12, **deprecated
) -> Tensor:
    """TV-L1 energy of a flow, with the exact data term: TVNet's unsupervised flow loss.

    ``E(u) = mean_x( |grad u_x| + |grad u_y| + lambda_ * |I1(x + u(x)) - I0(x)| )`` (eq. 1 with
    ``rho`` computed by warping instead of its Taylor expansion, as eq. 13's ``L_f`` asks),
    averaged over pixels and the batch so it does not grow with the image size.
    ``|grad u_d| = sqrt(ux^2 + uy^2 + eps)`` with forward differences (0 on the last column /
    row); the warp is bilinear with a clamped border. Use it beside the classification loss:
    ``L = L_c + 0.1 * tvl1_energy(...)`` (the paper's weight).

    Args:
        I0: ``(N, C, H, W)`` first frames, C = 1 or 3 (RGB to BT.601 grey), any scale (the
            energy is in the images' units: the flow solver works in 0..255).
        I1: ``(N, C, H, W)`` second frames.
        u: ``(N, 2, H, W)`` flow in pixels with ``I1(x + u(x)) ~ I0(x)``.
        lambda_: weight of the data term (:class:`mvaccel.flow.TVL1Params`'s name; ``lbda`` is
            accepted with a ``DeprecationWarning``).
        eps: under the square roots (defined gradient at 0).
        **deprecated: old spellings (``lbda``).

    Returns:
        Scalar tensor; differentiable in ``u`` (and the images).
    """
    from ..nn.tvnet import renamed_kwargs, warp_bilinear

    if deprecated:
        given = {} if lambda_ == 0.15 else {"lambda_": lambda_}
        lambda_ = renamed_kwargs("tvl1_energy", deprecated, {"lbda": "lambda_"}, given)["lambda_"]
    if u.dim() != 4 or u.shape[1] != 2:
        raise ValueError(f"tvl1_energy: u must be (N, 2, H, W), got {tuple(u.shape)}")
    g0, g1 = _grey(I0, "I0"), _grey(I1, "I1")
    if g0.shape != g1.shape or g0.shape[-2:] != u.shape[-2:] or g0.shape[0] != u.shape[0]:
        raise ValueError(
            f"tvl1_energy: I0 {tuple(I0.shape)}, I1 {tuple(I1.shape)} and u {tuple(u.shape)} "
            "must agree in N, H, W"
        )
    rho = warp_bilinear(g1.to(u.dtype), u) - g0.to(u.dtype)
    ux = torch.nn.functional.pad(u[..., 1:] - u[..., :-1], (0, 1))
    uy = torch.nn.functional.pad(u[..., 1:, :] - u[..., :-1, :], (0, 0, 0, 1))
    tv = torch.sqrt(ux * ux + uy * uy + eps).sum(1)
    return (tv + lambda_ * rho.abs()[:, 0]).mean()
