// Per-pixel math of the Zach-Pock-Bischof duality TV-L1 optical flow,
// written once for the C++ CPU kernel, the CUDA kernel and TVNet's unrolled
// layers (csrc/ops/tvnet). The semantics follow OpenCV's DualTVL1
// (modules/video/src/tvl1flow.cpp and its CUDA twin):
//
//   one inner iteration, per pixel, for each flow component k in {1, 2}:
//     rho  = rho_c + I1wx * u1 + I1wy * u2              (linearised residual)
//     v    = u + threshold_v(rho, I1wx, I1wy, grad, l_t) (l_t = lambda*theta)
//     u    = v + theta * div(p_k)                        (update_u)
//     p_k  = (p_k + taut * grad(u_k)) /
//            (1 + taut * sqrt(|grad(u_k)|^2 + eps))      (update_p, taut =
//                                                          tau / theta)
//
// where I1wx, I1wy are the centred gradients of I1 warped by the flow u0 of
// the current warp, grad = I1wx^2 + I1wy^2, rho_c = I1w - I1wx*u0_1 -
// I1wy*u0_2 - I0, grad(u) are forward differences that are zero on the last
// column (x) / last row (y), and div is the backward-difference divergence
// whose first column / first row read the missing neighbour as 0.
//
// Planes are row-major with a row stride `ld` (elements), indices (y, x) with
// 0 <= y < H and 0 <= x < W. Everything is a template on the scalar type T
// (float, double) and the index type I (int, int64_t), so CUDA kernels can
// use 32-bit indices and shared-memory tiles with their own stride.
//
// The signatures of the functions above the line "Additions" are frozen:
// TVNet includes this header.
#pragma once

#include <cmath>

#include "../../common.h"

namespace mvaccel {
namespace tvl1 {

// Thresholding step TH of the dual TV-L1 scheme (the three cases of Zach et
// al.). Given the linearised residual rho at the current u (rho = rho_c +
// I1wx*u1 + I1wy*u2), the warped gradients I1wx, I1wy, grad = I1wx^2 +
// I1wy^2 and l_t = lambda * theta, writes the update (d1, d2) such that
// v = u + d:
//   rho < -l_t*grad:  d =  l_t * (I1wx, I1wy)
//   rho >  l_t*grad:  d = -l_t * (I1wx, I1wy)
//   otherwise:        d = -rho/grad * (I1wx, I1wy), or 0 when grad <=
//                     grad_eps (OpenCV: FLT_EPSILON; TVNet: 1e-12).
template <typename T>
MVACCEL_HD void threshold_v(T rho, T I1wx, T I1wy, T grad, T l_t, T grad_eps,
                            T& d1, T& d2) {
  const T lg = l_t * grad;
  if (rho < -lg) {
    d1 = l_t * I1wx;
    d2 = l_t * I1wy;
  } else if (rho > lg) {
    d1 = -l_t * I1wx;
    d2 = -l_t * I1wy;
  } else if (grad > grad_eps) {
    const T fi = -rho / grad;
    d1 = fi * I1wx;
    d2 = fi * I1wy;
  } else {
    d1 = T(0);
    d2 = T(0);
  }
}

// Linearised data residual at flow (u1, u2): rho_c + I1wx*u1 + I1wy*u2.
template <typename T>
MVACCEL_HD T residual_rho(T rho_c, T I1wx, T I1wy, T u1, T u2) {
  return rho_c + I1wx * u1 + I1wy * u2;
}

// Constant part of the residual for the current warp, from the warped image
// I1w, its warped gradients, the flow u0 it was warped with, and I0:
// rho_c = I1w - I1wx*u0_1 - I1wy*u0_2 - I0.
template <typename T>
MVACCEL_HD T residual_rho_c(T I1w, T I1wx, T I1wy, T u01, T u02, T I0) {
  return I1w - I1wx * u01 - I1wy * u02 - I0;
}

// Primal update u = v + theta * div p (one flow component).
template <typename T>
MVACCEL_HD T update_u(T v, T theta, T div_p) {
  return v + theta * div_p;
}

// Dual update of one flow component's (px, py) from the forward differences
// (ux, uy) of that component, with taut = tau / theta:
//   p = (p + taut * (ux, uy)) / (1 + taut * sqrt(ux^2 + uy^2 + eps)).
// OpenCV uses eps = 0; TVNet adds a small eps so the gradient of the norm is
// defined at 0.
template <typename T>
MVACCEL_HD void update_p(T& px, T& py, T ux, T uy, T taut, T eps) {
  const T ng = T(1) + taut * std::sqrt(ux * ux + uy * uy + eps);
  px = (px + taut * ux) / ng;
  py = (py + taut * uy) / ng;
}

// Forward differences of plane u at (y, x): ux = u(y, x+1) - u(y, x), 0 on
// the last column; uy = u(y+1, x) - u(y, x), 0 on the last row.
template <typename T, typename I>
MVACCEL_HD void forward_grad(const T* u, I ld, I y, I x, I H, I W, T& ux,
                             T& uy) {
  const T c = u[y * ld + x];
  ux = x + 1 < W ? u[y * ld + x + 1] - c : T(0);
  uy = y + 1 < H ? u[(y + 1) * ld + x] - c : T(0);
}

// Backward-difference divergence of the dual field (px, py) at (y, x):
// div = (px(y, x) - px(y, x-1)) + (py(y, x) - py(y-1, x)), where the missing
// neighbour on the first column / first row reads as 0 (OpenCV's rule; on the
// last column / row the difference is taken as is, and p stays 0 there
// because the forward differences are 0).
template <typename T, typename I>
MVACCEL_HD T divergence(const T* px, const T* py, I ld, I y, I x) {
  const I i = y * ld + x;
  const T dx = x > 0 ? px[i] - px[i - 1] : px[i];
  const T dy = y > 0 ? py[i] - py[i - ld] : py[i];
  return dx + dy;
}

// ---------------------------------------------------------------- Additions

}  // namespace tvl1
}  // namespace mvaccel
