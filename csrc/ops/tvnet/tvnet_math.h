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
// Backward of one iteration (three passes; states before the iteration and
// u' are inputs, the few temporaries are recomputed from them):
//   pass "p"ᵀ: from gp' and u', p (old): the gradient of ux, uy (gux, guy,
//     "g4") and gp (old) = gp' / ng; filter gradients of wf.
//   pass "g": G = gu' + ∂(ux, uy)/∂u'ᵀ (gux, guy), the whole gradient of u',
//     written over gu' (each pixel reads its own gu' only).
//   pass "u"ᵀ: gdiv = theta*G; gp (old) += ∂div/∂pᵀ gdiv (reads G at the
//     pixel and its right / lower neighbour); filter gradients of wb; gv = G,
//     through the thresholding to gu (old) and to the warp planes (rho_c,
//     I1wx, I1wy).
//
// Two layers of functions: the "value" functions below take the values of
// a pixel and of its neighbours (0 for a missing neighbour, with has_*
// flags where a term is dropped), and the "pass" functions gather those
// values with bounds checks for one pixel. The CUDA kernels run the pass
// functions per pixel; the CPU loops run them on the border pixels and call
// the value functions directly on the interior of a row (no bounds tests,
// so the loops vectorise). Both compute the same sums in the same order.
#pragma once

#include "../../device_math.cuh"
#include "../tvl1/tvl1_math.h"

namespace mvaccel {
namespace tvnet {

// Number of per-iteration filter values in wf and in wb.
constexpr int kTaps = 8;

// Sizes of a call: N pairs of H x W, K iterations. A kernel argument (a
// fixed-width POD mirrored by mvaccel/ops/_nvrtc.py).
struct Dims {
  int64_t N, H, W, K;
};
static_assert(sizeof(Dims) == 32, "see _nvrtc.py");

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

// ------------------------------------------------------------ value level

// Divergence with trainable taps from the neighbours px(x-1), px(x),
// py(y-1), py(y), each 0 where the header's rule drops it.
template <typename T>
MVACCEL_HD T div_taps(T px_left, T px_c, T py_up, T py_c, const Taps<T>& b) {
  return b.a0 * px_left + b.a1 * px_c + b.b0 * py_up + b.b1 * py_c;
}

// Primal update at one pixel: returns the new (u1, u2).
template <typename T>
MVACCEL_HD void update_u_at(T u1, T u2, T rho_c, T Ix, T Iy, T div1, T div2,
                            T l_t, T theta, T grad_eps, T& n1, T& n2) {
  const T rho = tvl1::residual_rho(rho_c, Ix, Iy, u1, u2);
  T d1, d2;
  tvl1::threshold_v(rho, Ix, Iy, Ix * Ix + Iy * Iy, l_t, grad_eps, d1, d2);
  n1 = tvl1::update_u(u1 + d1, theta, div1);
  n2 = tvl1::update_u(u2 + d2, theta, div2);
}

// Forward differences with trainable taps of u' at a pixel (value c), its
// right (value right) and lower (value down) neighbours; 0 without them.
template <typename T>
MVACCEL_HD void grad_taps(T c, T right, T down, bool has_x, bool has_y,
                          const Taps<T>& f, T& ux, T& uy) {
  ux = has_x ? f.a0 * c + f.a1 * right : T(0);
  uy = has_y ? f.b0 * c + f.b1 * down : T(0);
}

// Dual update of one component at one pixel (p1, p2 in place).
template <typename T>
MVACCEL_HD void update_p_at(T c, T right, T down, bool has_x, bool has_y,
                            const Taps<T>& f, T taut, T eps, T& p1, T& p2) {
  T ux, uy;
  grad_taps<T>(c, right, down, has_x, has_y, f, ux, uy);
  tvl1::update_p<T>(p1, p2, ux, uy, taut, eps);
}

// Backward of the thresholding v = u + d(rho(u), I1wx, I1wy): from gv (the
// gradient of v), adds the gradients of u1, u2, rho_c, I1wx, I1wy. The three
// cases of tvl1::threshold_v are chosen by selects (every candidate is
// computed, the unused ones may be inf / NaN and are dropped), so the CPU
// loop vectorises and CUDA threads do not diverge.
template <typename T>
MVACCEL_HD void threshold_backward(T u1, T u2, T rho_c, T Ix, T Iy, T l_t,
                                   T grad_eps, T gv1, T gv2, T& gu1, T& gu2,
                                   T& grho_c, T& gIx, T& gIy) {
  const T rho = tvl1::residual_rho(rho_c, Ix, Iy, u1, u2);
  const T grad = Ix * Ix + Iy * Iy;
  const T lg = l_t * grad;
  // The tests are those of tvl1::threshold_v.
  const bool lo = rho < -lg;
  const bool hi = !lo && rho > lg;
  const bool mid = !lo && !hi && grad > grad_eps;
  const T f = -rho / grad;
  const T gf = gv1 * Ix + gv2 * Iy;
  const T grho = -gf / grad;
  const T ggrad = gf * rho / (grad * grad);
  const T m1 = gv1 * f + T(2) * ggrad * Ix + grho * u1;
  const T m2 = gv2 * f + T(2) * ggrad * Iy + grho * u2;
  const T e1 = lo ? l_t * gv1 : (hi ? -(l_t * gv1) : T(0));
  const T e2 = lo ? l_t * gv2 : (hi ? -(l_t * gv2) : T(0));
  gIx += mid ? m1 : e1;
  gIy += mid ? m2 : e2;
  grho_c += mid ? grho : T(0);
  gu1 += gv1 + (mid ? grho * Ix : T(0));
  gu2 += gv2 + (mid ? grho * Iy : T(0));
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

// Pass "p" transposed for one component at one pixel: u' there (c), at the
// right / lower neighbour, the old dual values (p1, p2); g1, g2: in, the
// gradient of the new dual values; out, that of the old ones. Writes (gux,
// guy) and adds the wf gradient terms (f0, f1, g0, g1) to a0..a3.
template <typename T>
MVACCEL_HD void update_p_backward_at(T c, T right, T down, bool has_x,
                                     bool has_y, const Taps<T>& f, T p1, T p2,
                                     T taut, T eps, T& g1, T& g2, T& gux,
                                     T& guy, T& a0, T& a1, T& a2, T& a3) {
  T ux, uy;
  grad_taps<T>(c, right, down, has_x, has_y, f, ux, uy);
  const T sq = dmath::sqrt(ux * ux + uy * uy + eps);
  const T inv_ng = T(1) / (T(1) + taut * sq);
  const T p1n = (p1 + taut * ux) * inv_ng;
  const T p2n = (p2 + taut * uy) * inv_ng;
  dual_backward<T>(ux, uy, sq, inv_ng, p1n, p2n, g1, g2, taut, has_x, has_y, g1,
                   g2, gux, guy);
  if (has_x) {
    a0 += gux * c;
    a1 += gux * right;
  }
  if (has_y) {
    a2 += guy * c;
    a3 += guy * down;
  }
}

// Whole gradient of u'_k at a pixel: the incoming gu plus the part through
// the forward differences: gux, guy there and gux at the left / guy at the
// upper neighbour (0 without them).
template <typename T>
MVACCEL_HD T grad_u_total(T gu, T gux, T guy, T gux_left, T guy_up,
                          const Taps<T>& f) {
  return gu + f.a0 * gux + f.b0 * guy + f.a1 * gux_left + f.b1 * guy_up;
}

// Pass "u" transposed, divergence part, one component at one pixel: G (the
// whole gradient of u'_k) there and at the right / lower neighbours, the old
// dual values around the pixel; adds to the gradient of the old dual values
// at the pixel (gpx, gpy) and the wb gradient terms (b0, b1, c0, c1) to
// a0..a3. has_l / has_u: the pixel has a left / upper neighbour.
template <typename T>
MVACCEL_HD void div_backward_at(T G, T G_right, T G_down, T px_left, T px_c,
                                T py_up, T py_c, bool has_l, bool has_x,
                                bool has_u, bool has_y, const Taps<T>& b,
                                T theta, T& gpx, T& gpy, T& a0, T& a1, T& a2,
                                T& a3) {
  const T gd = theta * G;
  if (has_x) {
    gpx += theta * b.a0 * G_right + b.a1 * gd;
    a1 += gd * px_c;
  }
  if (has_l) a0 += gd * px_left;
  if (has_y) {
    gpy += theta * b.b0 * G_down + b.b1 * gd;
    a3 += gd * py_c;
  }
  if (has_u) a2 += gd * py_up;
}

// ----------------------------------------------------- one pixel of a pass
// The passes at pixel (y, x) of one pair with bounds checks: what the CUDA
// kernels run everywhere and the CPU loops on the borders. Plane pointers
// are those of the pair; HW = H * W.

// Pass "u": u (2 planes) updated in place from p (4 planes) and the warp
// planes w (3 planes).
template <typename T>
MVACCEL_HD void pass_u(T* u, const T* p, const T* w, int64_t H, int64_t W,
                       int64_t y, int64_t x, const Taps<T>& b1,
                       const Taps<T>& b2, T l_t, T theta, T grad_eps) {
  const int64_t HW = H * W, i = y * W + x;
  const bool l = x > 0, r = x + 1 < W, up = y > 0, dn = y + 1 < H;
  T div[2];
  for (int k = 0; k < 2; ++k) {
    const T* px = p + 2 * k * HW;
    const T* py = px + HW;
    div[k] =
        div_taps<T>(l ? px[i - 1] : T(0), r ? px[i] : T(0),
                    up ? py[i - W] : T(0), dn ? py[i] : T(0), k == 0 ? b1 : b2);
  }
  update_u_at<T>(u[i], u[HW + i], w[i], w[HW + i], w[2 * HW + i], div[0],
                 div[1], l_t, theta, grad_eps, u[i], u[HW + i]);
}

// Pass "p": p (4 planes) updated in place from the new u (2 planes).
template <typename T>
MVACCEL_HD void pass_p(const T* u, T* p, int64_t H, int64_t W, int64_t y,
                       int64_t x, const Taps<T>& f1, const Taps<T>& f2, T taut,
                       T eps) {
  const int64_t HW = H * W, i = y * W + x;
  const bool r = x + 1 < W, dn = y + 1 < H;
  for (int k = 0; k < 2; ++k) {
    const T* uk = u + k * HW;
    update_p_at<T>(uk[i], r ? uk[i + 1] : T(0), dn ? uk[i + W] : T(0), r, dn,
                   k == 0 ? f1 : f2, taut, eps, p[2 * k * HW + i],
                   p[(2 * k + 1) * HW + i]);
  }
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
  const bool r = x + 1 < W, dn = y + 1 < H;
  for (int k = 0; k < 2; ++k) {
    const T* uc = ucur + k * HW;
    update_p_backward_at<T>(
        uc[i], r ? uc[i + 1] : T(0), dn ? uc[i + W] : T(0), r, dn, f[k],
        pold[2 * k * HW + i], pold[(2 * k + 1) * HW + i], taut, eps,
        gp[2 * k * HW + i], gp[(2 * k + 1) * HW + i], g4[2 * k * HW + i],
        g4[(2 * k + 1) * HW + i], acc[4 * k], acc[4 * k + 1], acc[4 * k + 2],
        acc[4 * k + 3]);
  }
}

// Pass "g": gu (2 planes) in place, from the gradient of u' to G, the whole
// gradient of u' (g4 from pass_p_backward).
template <typename T>
MVACCEL_HD void pass_g(T* gu, const T* g4, int64_t H, int64_t W, int64_t y,
                       int64_t x, const Taps<T>* f) {
  const int64_t HW = H * W, i = y * W + x;
  const bool l = x > 0, up = y > 0;
  for (int k = 0; k < 2; ++k) {
    const T* gx = g4 + 2 * k * HW;
    const T* gy = gx + HW;
    gu[k * HW + i] =
        grad_u_total<T>(gu[k * HW + i], gx[i], gy[i], l ? gx[i - 1] : T(0),
                        up ? gy[i - W] : T(0), f[k]);
  }
}

// Pass "u" transposed, divergence part: adds the gradient of the old p
// (gp, 4 planes) through the divergence from G (the whole gradient of u',
// 2 planes, from pass_g) and the wb gradient terms to acc[0..8).
template <typename T>
MVACCEL_HD void pass_div_backward(const T* pold, const T* G, T* gp, int64_t H,
                                  int64_t W, int64_t y, int64_t x,
                                  const Taps<T>* b, T theta, T* acc) {
  const int64_t HW = H * W, i = y * W + x;
  const bool l = x > 0, r = x + 1 < W, up = y > 0, dn = y + 1 < H;
  for (int k = 0; k < 2; ++k) {
    const T* Gk = G + k * HW;
    const T* px = pold + 2 * k * HW;
    const T* py = px + HW;
    div_backward_at<T>(Gk[i], r ? Gk[i + 1] : T(0), dn ? Gk[i + W] : T(0),
                       l ? px[i - 1] : T(0), r ? px[i] : T(0),
                       up ? py[i - W] : T(0), dn ? py[i] : T(0), l, r, up, dn,
                       b[k], theta, gp[2 * k * HW + i],
                       gp[(2 * k + 1) * HW + i], acc[4 * k], acc[4 * k + 1],
                       acc[4 * k + 2], acc[4 * k + 3]);
  }
}

// Pass "u" transposed. uold, pold: state before the iteration; w: warp
// planes; G: the whole gradient of u' (2 planes, from pass_g). Adds to gp
// (old p) and gw (warp planes), writes gu_old (2 planes) and adds the wb
// gradient terms to acc[0..8).
template <typename T>
MVACCEL_HD void pass_u_backward(const T* uold, const T* pold, const T* w,
                                const T* G, T* gp, T* gw, T* gu_old, int64_t H,
                                int64_t W, int64_t y, int64_t x,
                                const Taps<T>* b, T l_t, T theta, T grad_eps,
                                T* acc) {
  const int64_t HW = H * W, i = y * W + x;
  pass_div_backward<T>(pold, G, gp, H, W, y, x, b, theta, acc);
  T gu1 = T(0), gu2 = T(0);
  threshold_backward<T>(uold[i], uold[HW + i], w[i], w[HW + i], w[2 * HW + i],
                        l_t, grad_eps, G[i], G[HW + i], gu1, gu2, gw[i],
                        gw[HW + i], gw[2 * HW + i]);
  gu_old[i] = gu1;
  gu_old[HW + i] = gu2;
}

}  // namespace tvnet
}  // namespace mvaccel
