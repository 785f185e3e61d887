// CUDA kernels of off_gradients, off_gradients_stack and their backward ops,
// compiled by nvcc (off_cuda.cu launches them) and by NVRTC at run time
// (mvaccel/ops/_nvrtc.py). Device code only: no ATen, no standard library.
//
// forward_kernel and backward_kernel: tiles of kRows x V pixels per thread
// (below); neighbouring threads take neighbouring column groups, so the
// stencil loads coalesce and the halo columns hit L1.
//
// channels_last (forward_cl_kernel, backward_cl_kernel: the channel is the
// fastest dimension of the inputs, unit stride, and of the outputs): one
// thread per (pixel, channel) of an image row, channel fastest
// (blockIdx.x * blockDim.x + threadIdx.x = x * C + c), so neighbouring
// threads read and write neighbouring channels of one pixel.
#pragma once

#include "off_math.cuh"

namespace mvaccel {
namespace off {

constexpr int kThreads = 128;
constexpr int64_t kMaxGridY = 65535;
constexpr int64_t kMaxBlocks = 2147483647;  // gridDim.x

// Forward, rows unit stride: a thread computes a tile of kRows rows x V
// columns of one (pair, channel) plane, walking down with a 3-row register
// window (rows y - 1, y, y + 1, columns x0 - 1 .. x0 + V, zero outside):
// each input row is loaded once per tile (+ 2 halo rows per kRows), the
// halo columns from L1. kVec (host check: W a multiple of V = 16 /
// sizeof(T), the planes' pointers and every stride 16-byte aligned): the V
// columns are one 16-byte load of cur and of prev and one 16-byte store per
// output plane; otherwise V = 1 (scalar). fp32 accumulation (opmath_t).
// The flat index i = (plane * strips + strip) * groups + group runs over
// `total` tiles (grid-stride), divided once per tile, not per element.
//
// Roofline: per output element (3 per input pixel) the kernel reads 2/3
// input elements (cur, prev) and writes 1: 5 * sizeof(T) bytes per pixel,
// the minimum; the target is >= 70 % of HBM bandwidth (issue 16).
constexpr int kRows = 8;

// The tile of flat index i: its plane, first row and first column.
struct Tile {
  int64_t plane, y0, x0;
};
template <int V>
MVACCEL_HD Tile tile_of(int64_t i, int64_t groups, int64_t strips) {
  const int64_t rest = i / groups;
  const int64_t plane = rest / strips;
  return {plane, (rest - plane * strips) * kRows, (i - rest * groups) * V};
}

// Columns x0 - 1 .. x0 + V of row y of a plane into w[0 .. V + 1], 0
// outside the image.
template <int V, bool kVec, typename acc_t, typename scalar_t>
MVACCEL_HD void load_window_row(const scalar_t* plane, int64_t sh, int64_t H,
                                int64_t W, int64_t y, int64_t x0, acc_t* w) {
  if (y < 0 || y >= H) {
    for (int k = 0; k < V + 2; ++k) w[k] = acc_t(0);
    return;
  }
  const scalar_t* row = plane + y * sh;
  w[0] = x0 > 0 ? static_cast<acc_t>(row[x0 - 1]) : acc_t(0);
  w[V + 1] = x0 + V < W ? static_cast<acc_t>(row[x0 + V]) : acc_t(0);
  if (kVec) {
    const Vec16<scalar_t> pk = load16(row + x0);
    for (int k = 0; k < V; ++k) w[k + 1] = static_cast<acc_t>(pk.v[k]);
  } else {
    for (int k = 0; k < V; ++k) {
      w[k + 1] = x0 + k < W ? static_cast<acc_t>(row[x0 + k]) : acc_t(0);
    }
  }
}

// V values at dst[0 .. V) (those inside the row: x0 + k < W).
template <int V, bool kVec, typename scalar_t>
MVACCEL_HD void store_tile_row(scalar_t* dst, const scalar_t* v, int64_t x0,
                               int64_t W) {
  if (kVec) {
    Vec16<scalar_t> pk;
    for (int k = 0; k < V; ++k) pk.v[k] = v[k];
    store16(dst, pk);
  } else {
    for (int k = 0; k < V; ++k) {
      if (x0 + k < W) dst[k] = v[k];
    }
  }
}

template <typename scalar_t, bool kVec>
__global__ void forward_kernel(const scalar_t* __restrict__ cur0,
                               const scalar_t* __restrict__ prev0,
                               scalar_t* __restrict__ out, Plan p,
                               int64_t total) {
  using acc_t = opmath_t<scalar_t>;
  constexpr int V = kVec ? Vec16<scalar_t>::kN : 1;
  const int64_t H = p.H, W = p.W, C = p.C, HW = p.H * p.W;
  const int64_t groups = (W + V - 1) / V;
  const int64_t strips = (H + kRows - 1) / kRows;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
       i < total; i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const Tile tl = tile_of<V>(i, groups, strips);
    const int64_t plane = tl.plane, y0 = tl.y0, x0 = tl.x0;
    const int64_t bs = plane / C, c = plane - bs * C;
    const int64_t b = bs / p.S, s = bs - b * p.S;
    const scalar_t* cur = cur0 + b * p.cur.sb + s * p.cur.ss + c * p.cur.sc;
    const scalar_t* prev =
        prev0 + b * p.prev.sb + s * p.prev.ss + c * p.prev.sc;
    scalar_t* ox = out + (bs * 3 * C + c) * HW + x0;
    acc_t m[V + 2], cc[V + 2], pp[V + 2];
    load_window_row<V, kVec>(cur, p.cur.sh, H, W, y0 - 1, x0, m);
    load_window_row<V, kVec>(cur, p.cur.sh, H, W, y0, x0, cc);
    for (int r = 0; r < kRows && y0 + r < H; ++r) {
      const int64_t y = y0 + r;
      load_window_row<V, kVec>(cur, p.cur.sh, H, W, y + 1, x0, pp);
      acc_t pv[V + 2];
      load_window_row<V, kVec>(prev, p.prev.sh, H, W, y, x0, pv);
      scalar_t fx[V], fy[V], ft[V];
      for (int k = 0; k < V; ++k) {
        fx[k] = static_cast<scalar_t>(sobel_x_of<acc_t>(
            m[k], m[k + 2], cc[k], cc[k + 2], pp[k], pp[k + 2]));
        fy[k] = static_cast<scalar_t>(sobel_y_of<acc_t>(
            m[k], m[k + 1], m[k + 2], pp[k], pp[k + 1], pp[k + 2]));
        ft[k] = static_cast<scalar_t>(cc[k + 1] - pv[k + 1]);
      }
      scalar_t* o = ox + y * W;
      store_tile_row<V, kVec>(o, fx, x0, W);
      store_tile_row<V, kVec>(o + C * HW, fy, x0, W);
      store_tile_row<V, kVec>(o + 2 * C * HW, ft, x0, W);
      for (int k = 0; k < V + 2; ++k) {
        m[k] = cc[k];
        cc[k] = pp[k];
      }
    }
  }
}

// Backward, rows unit stride: the tiles of forward_kernel over the (B, S + 1)
// frames. Frame t's gradient at (y, x) (frame_grad in off_math.cuh) is
// Gt - Kx (x) Gx - Ky (x) Gy of pair t - 1 (t >= 1) minus Gt of pair t
// (t <= S - 1): two 3-row register windows (Gx, Gy) and two centre rows.
// kVec: W a multiple of V, grad's pointer and strides 16-byte aligned.
template <typename scalar_t, bool kVec>
__global__ void backward_kernel(const scalar_t* __restrict__ g, View gv, Plan p,
                                FrameOut<scalar_t> fo, int64_t total) {
  using acc_t = opmath_t<scalar_t>;
  constexpr int V = kVec ? Vec16<scalar_t>::kN : 1;
  const int64_t H = p.H, W = p.W, C = p.C, T = p.S + 1;
  const int64_t groups = (W + V - 1) / V;
  const int64_t strips = (H + kRows - 1) / kRows;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
       i < total; i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const Tile tl = tile_of<V>(i, groups, strips);
    const int64_t plane = tl.plane, y0 = tl.y0, x0 = tl.x0;
    const int64_t bt = plane / C, c = plane - bt * C;
    const int64_t b = bt / T, t = bt - b * T;
    const bool cur = t >= 1, prev = t <= p.S - 1;
    // Gx, Gy, Gt of pair t - 1 and Gt of pair t (unused when absent).
    const scalar_t* gx = g + b * gv.sb + (cur ? t - 1 : 0) * gv.ss + c * gv.sc;
    const scalar_t* gy = gx + C * gv.sc;
    const scalar_t* gt = gy + C * gv.sc;
    const scalar_t* gn =
        g + b * gv.sb + (prev ? t : 0) * gv.ss + (2 * C + c) * gv.sc;
    scalar_t* o = fo.frame(b, t) + c * H * W + x0;
    acc_t xm[V + 2], xc[V + 2], xp[V + 2], ym[V + 2], yc[V + 2], yp[V + 2];
    const int64_t absent = cur ? 0 : H + 2;  // rows outside: zero windows
    load_window_row<V, kVec>(gx, gv.sh, H, W, y0 - 1 - absent, x0, xm);
    load_window_row<V, kVec>(gx, gv.sh, H, W, y0 - absent, x0, xc);
    load_window_row<V, kVec>(gy, gv.sh, H, W, y0 - 1 - absent, x0, ym);
    load_window_row<V, kVec>(gy, gv.sh, H, W, y0 - absent, x0, yc);
    for (int r = 0; r < kRows && y0 + r < H; ++r) {
      const int64_t y = y0 + r;
      load_window_row<V, kVec>(gx, gv.sh, H, W, y + 1 - absent, x0, xp);
      load_window_row<V, kVec>(gy, gv.sh, H, W, y + 1 - absent, x0, yp);
      acc_t ct[V + 2], cn[V + 2];
      load_window_row<V, kVec>(gt, gv.sh, H, W, y - absent, x0, ct);
      load_window_row<V, kVec>(gn, gv.sh, H, W, prev ? y : -2, x0, cn);
      scalar_t v[V];
      for (int k = 0; k < V; ++k) {
        acc_t a = acc_t(0);
        if (cur) {
          a = ct[k + 1] -
              sobel_x_of<acc_t>(xm[k], xm[k + 2], xc[k], xc[k + 2], xp[k],
                                xp[k + 2]) -
              sobel_y_of<acc_t>(ym[k], ym[k + 1], ym[k + 2], yp[k], yp[k + 1],
                                yp[k + 2]);
        }
        if (prev) a -= cn[k + 1];
        v[k] = static_cast<scalar_t>(a);
      }
      store_tile_row<V, kVec>(o + y * W, v, x0, W);
      for (int k = 0; k < V + 2; ++k) {
        xm[k] = xc[k];
        xc[k] = xp[k];
        ym[k] = yc[k];
        yc[k] = yp[k];
      }
    }
  }
}

// channels_last forward: inputs with unit channel stride (View.sc is not
// read), columns cur_sw / prev_sw apart; the output (B, S, 3C, H, W) has the
// channel fastest: pair bs, pixel (y, x) at ((bs * H + y) * W + x) * 3C,
// Fx at + c, Fy at + C + c, Ft at + 2C + c. rows = B * S * H.
template <typename scalar_t>
__global__ void forward_cl_kernel(const scalar_t* __restrict__ cur0,
                                  const scalar_t* __restrict__ prev0,
                                  scalar_t* __restrict__ out, Plan p,
                                  int64_t cur_sw, int64_t prev_sw,
                                  int64_t rows) {
  using acc_t = opmath_t<scalar_t>;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t H = p.H, W = p.W, C = p.C;
  if (i >= W * C) return;
  const int64_t x = i / C, c = i - x * C;
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
    const int64_t y = r % H;
    const int64_t bs = r / H;
    const int64_t s = bs % p.S, b = bs / p.S;
    const scalar_t* cur = cur0 + b * p.cur.sb + s * p.cur.ss + c;
    const scalar_t* prev = prev0 + b * p.prev.sb + s * p.prev.ss + c;
    scalar_t* o = out + ((bs * H + y) * W + x) * 3 * C + c;
    o[0] = static_cast<scalar_t>(
        sobel_x<acc_t>(cur, p.cur.sh, cur_sw, H, W, y, x));
    o[C] = static_cast<scalar_t>(
        sobel_y<acc_t>(cur, p.cur.sh, cur_sw, H, W, y, x));
    o[2 * C] = static_cast<scalar_t>(
        static_cast<acc_t>(cur[y * p.cur.sh + x * cur_sw]) -
        static_cast<acc_t>(prev[y * p.prev.sh + x * prev_sw]));
  }
}

// channels_last backward: the gradient g has unit channel stride (gv.sc ==
// 1) and columns g_sw apart; frame t's gradient is written channel fastest
// (pixel (y, x), channel c at fo.frame(b, t) + (y * W + x) * C + c).
// rows = B * (S + 1) * H.
template <typename scalar_t>
__global__ void backward_cl_kernel(const scalar_t* __restrict__ g, View gv,
                                   int64_t g_sw, Plan p, FrameOut<scalar_t> fo,
                                   int64_t rows) {
  using acc_t = opmath_t<scalar_t>;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t H = p.H, W = p.W, C = p.C, T = p.S + 1;
  if (i >= W * C) return;
  const int64_t x = i / C, c = i - x * C;
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
    const int64_t y = r % H;
    const int64_t bt = r / H;
    const int64_t t = bt % T, b = bt / T;
    const acc_t v = frame_grad<acc_t>(g, gv, g_sw, p.S, C, H, W, b, t, c, y, x);
    fo.frame(b, t)[(y * W + x) * C + c] = static_cast<scalar_t>(v);
  }
}

}  // namespace off
}  // namespace mvaccel
