// TVNet (Fan et al., CVPR 2018): unrolled TV-L1 iterations with trainable
// gradient / divergence filters, forward and hand-written backward, per pixel.
// The TV-L1 steps themselves (thresholding, u and p updates) come from the
// shared ../tvl1/tvl1_math.h; this header adds the trainable filters and the
// derivatives.
//
// State of one pair: u = (u1, u2) (flow, 2 planes) and p = (p11, p12, p21,
// p22) (dual fields, 4 planes); per warp the constant planes w = (rho_c,
// I1wx, I1wy) (3 planes): rho_c = I1w - I1wx*u0_1 - I1wy*u0_2 - I0.
//
// One iteration i, for each component d in {1, 2} (taps of iteration i):
//
//   rho  = rho_c + I1wx*u1 + I1wy*u2                  (old u)
//   v    = u + threshold_v(rho, I1wx, I1wy, ...)      (tvl1_math.h)
//   u'_d = v_d + theta * div_d                         pass "u"
//   div_d(y,x) = b0*pd1(y,x-1)[x>0] + b1*pd1(y,x)[x<W-1]
//              + c0*pd2(y-1,x)[y>0] + c1*pd2(y,x)[y<H-1]   (old p)
//   ux_d(y,x) = f0*u'_d(y,x) + f1*u'_d(y,x+1), 0 on the last column
//   uy_d(y,x) = g0*u'_d(y,x) + g1*u'_d(y+1,x), 0 on the last row
//   p'_d = (p_d + taut*(ux_d, uy_d)) / (1 + taut*sqrt(ux^2 + uy^2 + eps))
//                                                      pass "p"
//
// With (f0, f1) = (g0, g1) = (b0, b1) = (c0, c1) = (-1, 1) these are the
// forward differences and the backward-difference divergence of TV-L1
// (paper eq. 4, 5, 8, 9; the divergence drops pd(W-1) on the last column as
// eq. 5 does, which changes nothing there because ux is 0 on the last
// column, so p stays 0). Filter layout: wf[i] = (f0, f1, g0, g1) of u1, then
// of u2 (8 values); wb[i] = (b0, b1, c0, c1) of p1, then of p2.
//
// Backward of one iteration (two passes; states before the iteration and u'
// are inputs, the few temporaries are recomputed from them):
//   pass "p"ᵀ: from gp' and u', p (old): the gradient of ux, uy (gux, guy)
//     and gp (old) = gp' / ng; filter gradients of wf.
//   pass "u"ᵀ: G = gu' + ∂(ux, uy)/∂u'ᵀ (gux, guy); gdiv = theta*G;
//     gp (old) += ∂div/∂pᵀ gdiv; filter gradients of wb; gv = G, through
//     the thresholding to gu (old) and to the warp planes (rho_c, I1wx,
//     I1wy).
#pragma once

#include <cmath>

#include "../../common.h"
#include "../tvl1/tvl1_math.h"

namespace mvaccel {
namespace tvnet {

// Number of per-iteration filter values in wf and in wb.
constexpr int kTaps = 8;

// Taps of one component: forward grad (f0, f1, g0, g1) or divergence
// (b0, b1, c0, c1).
template <typename T>
struct Taps {
  T a0, a1, b0, b1;
};

template <typename T, typename S>
MVACCEL_HD Taps<T> taps_of(const S* w, int d) {
  return {static_cast<T>(w[4 * d]), static_cast<T>(w[4 * d + 1]),
          static_cast<T>(w[4 * d + 2]), static_cast<T>(w[4 * d + 3])};
}

// Forward differences with trainable taps (zero on the last column / row).
template <typename T, typename S>
MVACCEL_HD void grad_w(const S* u, int64_t W, int64_t H, int64_t y, int64_t x,
                       const Taps<T>& f, T& ux, T& uy) {
  const int64_t i = y * W + x;
  const T c = static_cast<T>(u[i]);
  ux = x + 1 < W ? f.a0 * c + f.a1 * static_cast<T>(u[i + 1]) : T(0);
  uy = y + 1 < H ? f.b0 * c + f.b1 * static_cast<T>(u[i + W]) : T(0);
}

// Divergence with trainable taps (see the header comment).
template <typename T, typename S>
MVACCEL_HD T div_w(const S* px, const S* py, int64_t W, int64_t H, int64_t y,
                   int64_t x, const Taps<T>& b) {
  const int64_t i = y * W + x;
  T d = T(0);
  if (x > 0) d += b.a0 * static_cast<T>(px[i - 1]);
  if (x + 1 < W) d += b.a1 * static_cast<T>(px[i]);
  if (y > 0) d += b.b0 * static_cast<T>(py[i - W]);
  if (y + 1 < H) d += b.b1 * static_cast<T>(py[i]);
  return d;
}

// Pass "u" at one pixel: returns the new (u1, u2).
template <typename T>
MVACCEL_HD void update_u_at(T u1, T u2, T rho_c, T Ix, T Iy, T div1, T div2,
                            T l_t, T theta, T grad_eps, T& n1, T& n2) {
  const T rho = tvl1::residual_rho(rho_c, Ix, Iy, u1, u2);
  T d1, d2;
  tvl1::threshold_v(rho, Ix, Iy, Ix * Ix + Iy * Iy, l_t, grad_eps, d1, d2);
  n1 = tvl1::update_u(u1 + d1, theta, div1);
  n2 = tvl1::update_u(u2 + d2, theta, div2);
}

// Backward of the thresholding v = u + d(rho(u), I1wx, I1wy): from gv (the
// gradient of v), adds the gradients of u1, u2, rho_c, I1wx, I1wy.
template <typename T>
MVACCEL_HD void threshold_backward(T u1, T u2, T rho_c, T Ix, T Iy, T l_t,
                                   T grad_eps, T gv1, T gv2, T& gu1, T& gu2,
                                   T& grho_c, T& gIx, T& gIy) {
  gu1 += gv1;
  gu2 += gv2;
  const T rho = tvl1::residual_rho(rho_c, Ix, Iy, u1, u2);
  const T grad = Ix * Ix + Iy * Iy;
  const T lg = l_t * grad;
  // The branch tests are those of tvl1::threshold_v.
  if (rho < -lg) {
    gIx += l_t * gv1;
    gIy += l_t * gv2;
  } else if (rho > lg) {
    gIx -= l_t * gv1;
    gIy -= l_t * gv2;
  } else if (grad > grad_eps) {
    const T f = -rho / grad;
    const T gf = gv1 * Ix + gv2 * Iy;
    const T grho = -gf / grad;
    const T ggrad = gf * rho / (grad * grad);
    gIx += gv1 * f + T(2) * ggrad * Ix + grho * u1;
    gIy += gv2 * f + T(2) * ggrad * Iy + grho * u2;
    grho_c += grho;
    gu1 += grho * Ix;
    gu2 += grho * Iy;
  }
}

// Backward of the dual update of one component at one pixel. Inputs: the
// forward differences (ux, uy) of u' there, s = sqrt(ux^2 + uy^2 + eps) and
// inv_ng = 1 / (1 + taut * s), the new dual values (p1n, p2n), the incoming
// gradients (gp1, gp2) of the new dual values, whether ux / uy exist there
// (not on the last column / row). Outputs: gradient of the old dual values
// (gp1 / ng, gp2 / ng) and of (ux, uy).
template <typename T>
MVACCEL_HD void dual_backward(T ux, T uy, T s, T inv_ng, T p1n, T p2n, T gp1,
                              T gp2, T taut, bool has_x, bool has_y, T& gp1_old,
                              T& gp2_old, T& gux, T& guy) {
  gp1_old = gp1 * inv_ng;
  gp2_old = gp2 * inv_ng;
  // d p'/d ng = -p'/ng; d ng/d ux = taut * ux / s.
  const T q = s > T(0) ? -(gp1 * p1n + gp2 * p2n) * inv_ng * taut / s : T(0);
  gux = has_x ? gp1 * taut * inv_ng + q * ux : T(0);
  guy = has_y ? gp2 * taut * inv_ng + q * uy : T(0);
}

// ----------------------------------------------------- one pixel of a pass
// The four passes at pixel (y, x) of one pair, shared by the CPU loops and
// the CUDA kernels. Plane pointers are those of the pair; HW = H * W.

// Pass "u": u (2 planes) updated in place from p (4 planes) and the warp
// planes w (3 planes).
template <typename T>
MVACCEL_HD void pass_u(T* u, const T* p, const T* w, int64_t H, int64_t W,
                       int64_t y, int64_t x, const Taps<T>& b1,
                       const Taps<T>& b2, T l_t, T theta, T grad_eps) {
  const int64_t HW = H * W, i = y * W + x;
  const T div1 = div_w<T>(p, p + HW, W, H, y, x, b1);
  const T div2 = div_w<T>(p + 2 * HW, p + 3 * HW, W, H, y, x, b2);
  update_u_at<T>(u[i], u[HW + i], w[i], w[HW + i], w[2 * HW + i], div1, div2,
                 l_t, theta, grad_eps, u[i], u[HW + i]);
}

// Pass "p": p (4 planes) updated in place from the new u (2 planes).
template <typename T>
MVACCEL_HD void pass_p(const T* u, T* p, int64_t H, int64_t W, int64_t y,
                       int64_t x, const Taps<T>& f1, const Taps<T>& f2, T taut,
                       T eps) {
  const int64_t HW = H * W, i = y * W + x;
  T ux, uy;
  grad_w<T>(u, W, H, y, x, f1, ux, uy);
  tvl1::update_p<T>(p[i], p[HW + i], ux, uy, taut, eps);
  grad_w<T>(u + HW, W, H, y, x, f2, ux, uy);
  tvl1::update_p<T>(p[2 * HW + i], p[3 * HW + i], ux, uy, taut, eps);
}

// Pass "p" transposed. ucur: u after the iteration (2 planes); pold: p
// before it (4 planes); gp (4 planes): in, the gradient of the new p; out,
// the first part of the gradient of the old p. Writes g4 = (gux1, guy1,
// gux2, guy2) at the pixel and adds the wf gradient terms to acc[0..8).
template <typename T>
MVACCEL_HD void pass_p_backward(const T* ucur, const T* pold, T* gp, T* g4,
                                int64_t H, int64_t W, int64_t y, int64_t x,
                                const Taps<T>* f, T taut, T eps, T* acc) {
  const int64_t HW = H * W, i = y * W + x;
  const bool has_x = x + 1 < W, has_y = y + 1 < H;
  for (int k = 0; k < 2; ++k) {
    const T* uc = ucur + k * HW;
    T ux, uy;
    grad_w<T>(uc, W, H, y, x, f[k], ux, uy);
    const T sq = std::sqrt(ux * ux + uy * uy + eps);
    const T inv_ng = T(1) / (T(1) + taut * sq);
    const T p1n = (pold[2 * k * HW + i] + taut * ux) * inv_ng;
    const T p2n = (pold[(2 * k + 1) * HW + i] + taut * uy) * inv_ng;
    T& g1 = gp[2 * k * HW + i];
    T& g2 = gp[(2 * k + 1) * HW + i];
    T gux, guy;
    dual_backward<T>(ux, uy, sq, inv_ng, p1n, p2n, g1, g2, taut, has_x, has_y,
                     g1, g2, gux, guy);
    g4[2 * k * HW + i] = gux;
    g4[(2 * k + 1) * HW + i] = guy;
    if (has_x) {
      acc[4 * k] += gux * uc[i];
      acc[4 * k + 1] += gux * uc[i + 1];
    }
    if (has_y) {
      acc[4 * k + 2] += guy * uc[i];
      acc[4 * k + 3] += guy * uc[i + W];
    }
  }
}

// Gradient of u'_k at (y, x): the incoming gu plus the part through the
// forward differences (from g4 of pass_p_backward).
template <typename T>
MVACCEL_HD T grad_ucur(const T* gu, const T* g4, int64_t H, int64_t W,
                       int64_t y, int64_t x, int k, const Taps<T>& f) {
  const int64_t HW = H * W, j = y * W + x;
  const T* gx = g4 + 2 * k * HW;
  const T* gy = gx + HW;
  T g = gu[k * HW + j] + f.a0 * gx[j] + f.b0 * gy[j];
  if (x > 0) g += f.a1 * gx[j - 1];
  if (y > 0) g += f.b1 * gy[j - W];
  return g;
}

// Pass "u" transposed. uold, pold: state before the iteration; w: warp
// planes; gu: gradient of u'; g4: from pass_p_backward. Adds to gp (old p)
// and gw (warp planes), writes gu_old (2 planes) and adds the wb gradient
// terms to acc[0..8).
template <typename T>
MVACCEL_HD void pass_u_backward(const T* uold, const T* pold, const T* w,
                                const T* gu, const T* g4, T* gp, T* gw,
                                T* gu_old, int64_t H, int64_t W, int64_t y,
                                int64_t x, const Taps<T>* f, const Taps<T>* b,
                                T l_t, T theta, T grad_eps, T* acc) {
  const int64_t HW = H * W, i = y * W + x;
  T gv[2];
  for (int k = 0; k < 2; ++k) {
    const T g = grad_ucur<T>(gu, g4, H, W, y, x, k, f[k]);
    gv[k] = g;
    const T gd = theta * g;
    const T* px = pold + 2 * k * HW;
    const T* py = px + HW;
    if (x + 1 < W) {
      gp[2 * k * HW + i] +=
          theta * b[k].a0 * grad_ucur<T>(gu, g4, H, W, y, x + 1, k, f[k]) +
          b[k].a1 * gd;
      acc[4 * k + 1] += gd * px[i];
    }
    if (x > 0) acc[4 * k] += gd * px[i - 1];
    if (y + 1 < H) {
      gp[(2 * k + 1) * HW + i] +=
          theta * b[k].b0 * grad_ucur<T>(gu, g4, H, W, y + 1, x, k, f[k]) +
          b[k].b1 * gd;
      acc[4 * k + 3] += gd * py[i];
    }
    if (y > 0) acc[4 * k + 2] += gd * py[i - W];
  }
  T gu1 = T(0), gu2 = T(0);
  threshold_backward<T>(uold[i], uold[HW + i], w[i], w[HW + i], w[2 * HW + i],
                        l_t, grad_eps, gv[0], gv[1], gu1, gu2, gw[i],
                        gw[HW + i], gw[2 * HW + i]);
  gu_old[i] = gu1;
  gu_old[HW + i] = gu2;
}

}  // namespace tvnet
}  // namespace mvaccel
