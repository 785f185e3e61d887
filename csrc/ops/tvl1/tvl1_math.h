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

#include "../../device_math.cuh"

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
  const T ng = T(1) + taut * dmath::sqrt(ux * ux + uy * uy + eps);
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

// threshold_v as one scale factor: d = s * (I1wx, I1wy) with s = l_t, -l_t or
// -rho/grad (0 when grad <= grad_eps). The same numbers as threshold_v, in a
// branch-free form that vectorizes.
template <typename T>
MVACCEL_HD T threshold_scale(T rho, T grad, T l_t, T grad_eps) {
  const T lg = l_t * grad;
  const T fi = grad > grad_eps ? -rho / (grad > grad_eps ? grad : T(1)) : T(0);
  return rho < -lg ? l_t : (rho > lg ? -l_t : fi);
}

// Centred differences of plane src at (y, x) with a replicated border:
// dx = (src(y, x+1) - src(y, x-1)) / 2, indices clamped to the plane, which
// is OpenCV's one-sided rule on the first/last row and column.
template <typename T, typename I>
MVACCEL_HD void centred_grad(const T* src, I ld, I y, I x, I H, I W, T& dx,
                             T& dy) {
  const I xl = x > 0 ? x - 1 : x, xr = x + 1 < W ? x + 1 : x;
  const I yu = y > 0 ? y - 1 : y, yd = y + 1 < H ? y + 1 : y;
  dx = T(0.5) * (src[y * ld + xr] - src[y * ld + xl]);
  dy = T(0.5) * (src[yd * ld + x] - src[yu * ld + x]);
}

// Warping modes of the images I1, I1x, I1y at x + u.
enum WarpMode : int {
  // cv::remap INTER_CUBIC with a float map (OpenCV CPU DualTVL1): Keys cubic
  // with a = -0.75, taps outside the image read 0 (BORDER_CONSTANT). OpenCV 5
  // samples at the exact position (OpenCV 4 rounded it to 1/32 pixel).
  kWarpCubicOpenCV = 0,
  // OpenCV CUDA DualTVL1 (dense_flow): Keys cubic with a = -0.5, exact
  // position, indices clamped to the image, weights normalised by their sum.
  kWarpCubicClamp = 1,
  // Bilinear with clamped indices (TVNet).
  kWarpBilinear = 2,
};

// Keys cubic convolution weights of the four taps floor(x)-1 .. floor(x)+2
// for the fraction f = x - floor(x) in [0, 1) and the parameter a.
template <typename T>
MVACCEL_HD void cubic_weights(T f, T a, T w[4]) {
  const T x0 = f + T(1), x1 = f, x2 = T(1) - f;
  w[0] = ((a * x0 - T(5) * a) * x0 + T(8) * a) * x0 - T(4) * a;
  w[1] = ((a + T(2)) * x1 - (a + T(3))) * x1 * x1 + T(1);
  w[2] = ((a + T(2)) * x2 - (a + T(3))) * x2 * x2 + T(1);
  w[3] = T(1) - w[0] - w[1] - w[2];
}

// Samples the three planes a, b, c (row stride ld, size H x W) at the real
// position (X, Y) with the given WarpMode and writes the three values. One
// weight computation serves the three planes (I1, I1x, I1y of TV-L1).
template <typename T, typename I>
MVACCEL_HD void warp_sample3(const T* a, const T* b, const T* c, I ld, I H, I W,
                             T X, T Y, int mode, T& ra, T& rb, T& rc) {
  ra = rb = rc = T(0);
  if (mode == kWarpBilinear) {
    T fx = X < T(0) ? T(0) : (X > T(W - 1) ? T(W - 1) : X);
    T fy = Y < T(0) ? T(0) : (Y > T(H - 1) ? T(H - 1) : Y);
    I x0 = static_cast<I>(fx), y0 = static_cast<I>(fy);
    const I x1 = x0 + 1 < W ? x0 + 1 : x0, y1 = y0 + 1 < H ? y0 + 1 : y0;
    const T wx = fx - T(x0), wy = fy - T(y0);
    const T w00 = (T(1) - wx) * (T(1) - wy), w01 = wx * (T(1) - wy);
    const T w10 = (T(1) - wx) * wy, w11 = wx * wy;
    const I i00 = y0 * ld + x0, i01 = y0 * ld + x1;
    const I i10 = y1 * ld + x0, i11 = y1 * ld + x1;
    ra = w00 * a[i00] + w01 * a[i01] + w10 * a[i10] + w11 * a[i11];
    rb = w00 * b[i00] + w01 * b[i01] + w10 * b[i10] + w11 * b[i11];
    rc = w00 * c[i00] + w01 * c[i01] + w10 * c[i10] + w11 * c[i11];
    return;
  }
  T wx[4], wy[4];
  I ix, iy;
  const T flx = dmath::floor(X), fly = dmath::floor(Y);
  const T ka = mode == kWarpCubicOpenCV ? T(-0.75) : T(-0.5);
  ix = static_cast<I>(flx);
  iy = static_cast<I>(fly);
  cubic_weights(X - flx, ka, wx);
  cubic_weights(Y - fly, ka, wy);
  T wsum = T(0);
  for (int j = 0; j < 4; ++j) {
    I yy = iy - 1 + j;
    if (mode == kWarpCubicOpenCV) {
      if (yy < 0 || yy >= H) continue;
    } else {
      yy = yy < 0 ? 0 : (yy >= H ? H - 1 : yy);
    }
    T sa = T(0), sb = T(0), sc = T(0), sw = T(0);
    for (int i = 0; i < 4; ++i) {
      I xx = ix - 1 + i;
      if (mode == kWarpCubicOpenCV) {
        if (xx < 0 || xx >= W) continue;
      } else {
        xx = xx < 0 ? 0 : (xx >= W ? W - 1 : xx);
      }
      const I k = yy * ld + xx;
      sa += wx[i] * a[k];
      sb += wx[i] * b[k];
      sc += wx[i] * c[k];
      sw += wx[i];
    }
    ra += wy[j] * sa;
    rb += wy[j] * sb;
    rc += wy[j] * sc;
    wsum += wy[j] * sw;
  }
  if (mode == kWarpCubicClamp && wsum != T(0)) {
    const T inv = T(1) / wsum;
    ra *= inv;
    rb *= inv;
    rc *= inv;
  }
}

// cv::resize INTER_LINEAR along one axis: output index d of a plane resized
// with source/destination ratio `scale` reads taps i0, i1 = i0 + 1 with
// weights (1 - f, f); positions before the first / after the last pixel
// clamp to it (f = 0).
template <typename T, typename I>
MVACCEL_HD void linear_taps(I d, I in, T scale, I& i0, I& i1, T& f) {
  const T s = (T(d) + T(0.5)) * scale - T(0.5);
  const T fl = dmath::floor(s);
  i0 = static_cast<I>(fl);
  f = s - fl;
  if (i0 < 0) {
    i0 = 0;
    f = T(0);
  }
  if (i0 >= in - 1) {
    i0 = in - 1;
    f = T(0);
  }
  i1 = i0 + 1 < in ? i0 + 1 : i0;
}

template <typename T>
MVACCEL_HD void median_exchange(T& a, T& b) {
  const T lo = a < b ? a : b;
  b = a < b ? b : a;
  a = lo;
}

// Median of 25 values by a selection network: Batcher's odd-even merge sort
// on 32 wires (7 of them +inf), with every comparator that cannot reach the
// middle output pruned (checked exhaustively on all 2^25 0/1 inputs, which
// the 0-1 principle extends to all inputs). Leaves the median in p[12];
// 113 comparators, 89 of them full exchanges.
template <typename T>
MVACCEL_HD T median25(T* p) {
  median_exchange(p[0], p[1]);
  median_exchange(p[2], p[3]);
  median_exchange(p[4], p[5]);
  median_exchange(p[6], p[7]);
  median_exchange(p[8], p[9]);
  median_exchange(p[10], p[11]);
  median_exchange(p[12], p[13]);
  median_exchange(p[14], p[15]);
  median_exchange(p[16], p[17]);
  median_exchange(p[18], p[19]);
  median_exchange(p[20], p[21]);
  median_exchange(p[22], p[23]);
  median_exchange(p[0], p[2]);
  median_exchange(p[1], p[3]);
  median_exchange(p[4], p[6]);
  median_exchange(p[5], p[7]);
  median_exchange(p[8], p[10]);
  median_exchange(p[9], p[11]);
  median_exchange(p[12], p[14]);
  median_exchange(p[13], p[15]);
  median_exchange(p[16], p[18]);
  median_exchange(p[17], p[19]);
  median_exchange(p[20], p[22]);
  median_exchange(p[21], p[23]);
  median_exchange(p[1], p[2]);
  median_exchange(p[5], p[6]);
  median_exchange(p[9], p[10]);
  median_exchange(p[13], p[14]);
  median_exchange(p[17], p[18]);
  median_exchange(p[21], p[22]);
  median_exchange(p[0], p[4]);
  median_exchange(p[1], p[5]);
  median_exchange(p[2], p[6]);
  median_exchange(p[3], p[7]);
  median_exchange(p[8], p[12]);
  median_exchange(p[9], p[13]);
  median_exchange(p[10], p[14]);
  median_exchange(p[11], p[15]);
  median_exchange(p[16], p[20]);
  median_exchange(p[17], p[21]);
  median_exchange(p[18], p[22]);
  median_exchange(p[19], p[23]);
  median_exchange(p[2], p[4]);
  median_exchange(p[3], p[5]);
  median_exchange(p[10], p[12]);
  median_exchange(p[11], p[13]);
  median_exchange(p[18], p[20]);
  median_exchange(p[19], p[21]);
  median_exchange(p[1], p[2]);
  median_exchange(p[3], p[4]);
  median_exchange(p[5], p[6]);
  median_exchange(p[9], p[10]);
  median_exchange(p[11], p[12]);
  median_exchange(p[13], p[14]);
  median_exchange(p[17], p[18]);
  median_exchange(p[19], p[20]);
  median_exchange(p[21], p[22]);
  median_exchange(p[0], p[8]);
  median_exchange(p[1], p[9]);
  median_exchange(p[2], p[10]);
  median_exchange(p[3], p[11]);
  median_exchange(p[4], p[12]);
  median_exchange(p[5], p[13]);
  median_exchange(p[6], p[14]);
  p[7] = p[7] < p[15] ? p[7] : p[15];
  median_exchange(p[16], p[24]);
  median_exchange(p[4], p[8]);
  median_exchange(p[5], p[9]);
  median_exchange(p[6], p[10]);
  median_exchange(p[7], p[11]);
  median_exchange(p[20], p[24]);
  median_exchange(p[2], p[4]);
  median_exchange(p[3], p[5]);
  median_exchange(p[6], p[8]);
  median_exchange(p[7], p[9]);
  median_exchange(p[10], p[12]);
  median_exchange(p[11], p[13]);
  median_exchange(p[18], p[20]);
  median_exchange(p[19], p[21]);
  median_exchange(p[22], p[24]);
  median_exchange(p[1], p[2]);
  median_exchange(p[3], p[4]);
  median_exchange(p[5], p[6]);
  median_exchange(p[7], p[8]);
  median_exchange(p[9], p[10]);
  median_exchange(p[11], p[12]);
  p[13] = p[13] < p[14] ? p[13] : p[14];
  median_exchange(p[17], p[18]);
  median_exchange(p[19], p[20]);
  median_exchange(p[21], p[22]);
  median_exchange(p[23], p[24]);
  p[16] = p[0] < p[16] ? p[16] : p[0];
  p[17] = p[1] < p[17] ? p[17] : p[1];
  p[18] = p[2] < p[18] ? p[18] : p[2];
  p[19] = p[3] < p[19] ? p[19] : p[3];
  p[20] = p[4] < p[20] ? p[20] : p[4];
  p[21] = p[5] < p[21] ? p[21] : p[5];
  p[6] = p[6] < p[22] ? p[6] : p[22];
  p[7] = p[7] < p[23] ? p[7] : p[23];
  p[8] = p[8] < p[24] ? p[8] : p[24];
  p[16] = p[8] < p[16] ? p[16] : p[8];
  p[17] = p[9] < p[17] ? p[17] : p[9];
  p[10] = p[10] < p[18] ? p[10] : p[18];
  p[11] = p[11] < p[19] ? p[11] : p[19];
  p[12] = p[12] < p[20] ? p[12] : p[20];
  p[13] = p[13] < p[21] ? p[13] : p[21];
  p[10] = p[6] < p[10] ? p[10] : p[6];
  p[11] = p[7] < p[11] ? p[11] : p[7];
  p[12] = p[12] < p[16] ? p[12] : p[16];
  p[13] = p[13] < p[17] ? p[13] : p[17];
  p[12] = p[10] < p[12] ? p[12] : p[10];
  p[11] = p[11] < p[13] ? p[11] : p[13];
  p[12] = p[11] < p[12] ? p[12] : p[11];
  return p[12];
}

// The same network as a table of (kind, a, b): kind 0 exchanges so that
// p[a] <= p[b], kind 1 keeps only p[a] = min, kind 2 only p[b] = max. The
// CPU kernel runs it on rows of lanes so that each step vectorizes.
constexpr int kMedian25Steps = 113;
constexpr unsigned char kMedian25[kMedian25Steps][3] = {
    {0, 0, 1},   {0, 2, 3},   {0, 4, 5},   {0, 6, 7},   {0, 8, 9},
    {0, 10, 11}, {0, 12, 13}, {0, 14, 15}, {0, 16, 17}, {0, 18, 19},
    {0, 20, 21}, {0, 22, 23}, {0, 0, 2},   {0, 1, 3},   {0, 4, 6},
    {0, 5, 7},   {0, 8, 10},  {0, 9, 11},  {0, 12, 14}, {0, 13, 15},
    {0, 16, 18}, {0, 17, 19}, {0, 20, 22}, {0, 21, 23}, {0, 1, 2},
    {0, 5, 6},   {0, 9, 10},  {0, 13, 14}, {0, 17, 18}, {0, 21, 22},
    {0, 0, 4},   {0, 1, 5},   {0, 2, 6},   {0, 3, 7},   {0, 8, 12},
    {0, 9, 13},  {0, 10, 14}, {0, 11, 15}, {0, 16, 20}, {0, 17, 21},
    {0, 18, 22}, {0, 19, 23}, {0, 2, 4},   {0, 3, 5},   {0, 10, 12},
    {0, 11, 13}, {0, 18, 20}, {0, 19, 21}, {0, 1, 2},   {0, 3, 4},
    {0, 5, 6},   {0, 9, 10},  {0, 11, 12}, {0, 13, 14}, {0, 17, 18},
    {0, 19, 20}, {0, 21, 22}, {0, 0, 8},   {0, 1, 9},   {0, 2, 10},
    {0, 3, 11},  {0, 4, 12},  {0, 5, 13},  {0, 6, 14},  {1, 7, 15},
    {0, 16, 24}, {0, 4, 8},   {0, 5, 9},   {0, 6, 10},  {0, 7, 11},
    {0, 20, 24}, {0, 2, 4},   {0, 3, 5},   {0, 6, 8},   {0, 7, 9},
    {0, 10, 12}, {0, 11, 13}, {0, 18, 20}, {0, 19, 21}, {0, 22, 24},
    {0, 1, 2},   {0, 3, 4},   {0, 5, 6},   {0, 7, 8},   {0, 9, 10},
    {0, 11, 12}, {1, 13, 14}, {0, 17, 18}, {0, 19, 20}, {0, 21, 22},
    {0, 23, 24}, {2, 0, 16},  {2, 1, 17},  {2, 2, 18},  {2, 3, 19},
    {2, 4, 20},  {2, 5, 21},  {1, 6, 22},  {1, 7, 23},  {1, 8, 24},
    {2, 8, 16},  {2, 9, 17},  {1, 10, 18}, {1, 11, 19}, {1, 12, 20},
    {1, 13, 21}, {2, 6, 10},  {2, 7, 11},  {1, 12, 16}, {1, 13, 17},
    {2, 10, 12}, {1, 11, 13}, {2, 11, 12}};

}  // namespace tvl1
}  // namespace mvaccel
