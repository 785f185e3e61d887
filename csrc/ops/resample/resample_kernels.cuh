// CUDA kernels of block_upsample, mv_resize and their backward ops, compiled
// by nvcc (resample_cuda.cu launches them) and by NVRTC at run time
// (mvaccel/ops/_nvrtc.py). Device code only: no ATen, no standard library.
//
// Roofline (issue 16). The ops are pure data movement; per output element
// the forward writes sizeof(T) bytes and reads
//   nearest (block and exact): 1 source value, shared by a block of
//     bw x bh outputs (block_upsample) -> ~ sizeof(T) / (bw * bh) from DRAM;
//   bilinear: 4 source values, all shared by neighbouring outputs when
//     upsampling (L1/L2 hits) -> ~ sizeof(T) * in / out from DRAM.
// Bytes moved per output element (write + DRAM read), upsampling by 8 x 8:
//   float32 4 + 4/64, float16/bfloat16 2 + 2/64, float64 8 + 8/64.
// So the forward is bound by its writes: the target is >= 85 % of the
// device's copy_ bandwidth measured on a copy of the output's size (a copy
// moves 2 x sizeof(T) per element, this op ~1 x: counted as bytes written +
// read, the same unit as the copy). The backward reads the output-sized
// gradient once and writes the input-sized one: the same bound, reads
// instead of writes.
//
// Layout of every kernel: the grid is (x, y, image) -- blockIdx.x *
// blockDim.x + threadIdx.x is an output column (a block run of columns for
// forward_block_kernel, an input column for the backward), blockIdx.y a
// row, blockIdx.z an image, the last two strided when there are more rows or
// images than the grid holds -- and every thread loops over the channels.
// The axis maps of x are computed once per thread, of y once per row; the
// (n, c) planes are reached by adding the precomputed plane strides, so no
// thread divides per element. index_t is int32_t when every offset of the
// call fits in 31 bits (host check, fits_int32), int64_t otherwise.
// Channels_last tensors go through the same kernels (the channel stride is
// 1, the column stride C: a thread writes the C channels of its pixel, a
// warp a contiguous span).
#pragma once

#include "resample_math.cuh"

namespace mvaccel {
namespace resample {

constexpr int kThreads = 256;
constexpr int64_t kMaxGridYZ = 65535;
// Threads a launch aims at before it splits the images over blockIdx.z.
constexpr int64_t kTargetThreads = int64_t(1) << 21;

// Stores value v at dst[0, len) (unit stride). kVec: scalar stores up to
// the first 16-byte boundary, 16-byte stores, scalar tail.
template <bool kVec, typename scalar_t, typename index_t>
MVACCEL_HD void fill_run(scalar_t* dst, index_t len, scalar_t v) {
  index_t i = 0;
  if (kVec) {
    constexpr int kN = Vec16<scalar_t>::kN;
    const uint64_t mis = reinterpret_cast<uint64_t>(dst) % 16;
    index_t head =
        mis == 0 ? 0 : static_cast<index_t>((16 - mis) / sizeof(scalar_t));
    if (head > len) head = len;
    for (; i < head; ++i) dst[i] = v;
    Vec16<scalar_t> pk;
    for (int k = 0; k < kN; ++k) pk.v[k] = v;
    for (; i + kN <= len; i += kN) {
      store16(dst + i, pk);
    }
  }
  for (; i < len; ++i) dst[i] = v;
}

// Any mode, any input and output strides: one thread per V output columns
// (V = 1, or kVec: V = 16 / sizeof(T) columns written as one 16-byte store;
// host check: output rows unit stride, out_w a multiple of V, the output
// and its pitches 16-byte aligned). The x axis maps of the V columns are
// computed once per thread.
template <typename scalar_t, typename index_t, bool kVec>
__global__ void forward_kernel(const scalar_t* __restrict__ x,
                               scalar_t* __restrict__ out, const Args a) {
  using acc_t = opmath_t<scalar_t>;
  constexpr int V = kVec ? Vec16<scalar_t>::kN : 1;
  const Plan& p = a.p;
  const index_t ox0 =
      (static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x) * V;
  if (ox0 >= p.out_w) return;
  const index_t N = a.N, C = a.C, out_h = p.out_h;
  const index_t xs0 = a.src.s0, xs1 = a.src.s1, xs2 = a.src.s2;
  const index_t os0 = a.dst.s0, os1 = a.dst.s1, os2 = a.dst.s2;
  const index_t os3 = a.dst.s3;
  const auto ay = p.axis_y<acc_t>();
  const auto ax = p.axis_x<acc_t>();
  // Columns past out_w (scalar variant only) repeat the last one and are
  // not stored.
  index_t cx0[V], cx1[V];
  acc_t wx0[V], wx1[V];
  for (int k = 0; k < V; ++k) {
    const int64_t ox = ox0 + k < p.out_w ? ox0 + k : p.out_w - 1;
    int64_t i0, i1;
    acc_t w1;
    ax.src(ox, i0, i1, w1);
    cx0[k] = static_cast<index_t>(i0 * a.src.s3);
    cx1[k] = static_cast<index_t>(i1 * a.src.s3);
    wx0[k] = acc_t(1) - w1;
    wx1[k] = w1;
  }
  const acc_t f0 = channel_factor<acc_t>(p, 0);
  const acc_t f1 = channel_factor<acc_t>(p, 1);
  for (index_t oy = blockIdx.y; oy < out_h; oy += gridDim.y) {
    int64_t iy0, iy1;
    acc_t wy1;
    ay.src(oy, iy0, iy1, wy1);
    const acc_t wy0 = acc_t(1) - wy1;
    const index_t r0 = static_cast<index_t>(iy0) * xs2;
    const index_t r1 = static_cast<index_t>(iy1) * xs2;
    for (index_t n = blockIdx.z; n < N; n += gridDim.z) {
      const scalar_t* xp = x + n * xs0;
      scalar_t* op = out + n * os0 + oy * os2 + ox0 * os3;
      for (index_t c = 0; c < C; ++c, xp += xs1, op += os1) {
        const acc_t f = c == 0 ? f0 : f1;
        Vec16<scalar_t> pk;
        scalar_t* vals = kVec ? pk.v : op;  // scalar: straight to the output
        for (int k = 0; k < V; ++k) {
          acc_t v;
          if (p.mode == kLinear) {
            const acc_t top = wx0[k] * static_cast<acc_t>(xp[r0 + cx0[k]]) +
                              wx1[k] * static_cast<acc_t>(xp[r0 + cx1[k]]);
            const acc_t bot = wx0[k] * static_cast<acc_t>(xp[r1 + cx0[k]]) +
                              wx1[k] * static_cast<acc_t>(xp[r1 + cx1[k]]);
            v = wy0 * top + wy1 * bot;
          } else {
            v = static_cast<acc_t>(xp[r0 + cx0[k]]);
          }
          if (kVec) {
            vals[k] = static_cast<scalar_t>(v * f);
          } else if (ox0 + k < p.out_w) {
            vals[k * os3] = static_cast<scalar_t>(v * f);
          }
        }
        if (kVec) store16(op, pk);
      }
    }
  }
}

// Nearest block upsampling (Plan.mode == kNearestBlock, no value factors):
// one thread per run of block_w output columns sharing one source value
// (input column j -> outputs [j * block_w, min((j + 1) * block_w, out_w))),
// one load and block_w stores. kVec (host check: output rows unit stride,
// worth it): the run is written by fill_run with 16-byte stores.
template <typename scalar_t, typename index_t, bool kVec>
__global__ void forward_block_kernel(const scalar_t* __restrict__ x,
                                     scalar_t* __restrict__ out, const Args a) {
  const Plan& p = a.p;
  const index_t j = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= p.in_w) return;
  const index_t N = a.N, C = a.C, out_h = p.out_h, bw = p.block_w;
  const index_t bh = p.block_h;
  const index_t xs0 = a.src.s0, xs1 = a.src.s1, xs2 = a.src.s2;
  const index_t os0 = a.dst.s0, os1 = a.dst.s1, os2 = a.dst.s2;
  const index_t os3 = a.dst.s3;
  const index_t ox0 = j * bw;
  const index_t len = p.out_w - ox0 < bw ? p.out_w - ox0 : bw;
  const index_t cx = j * static_cast<index_t>(a.src.s3);
  // Rows: the source row changes every block_h output rows; the division is
  // once per row of a thread, amortised over its N * C * block_w stores.
  for (index_t oy = blockIdx.y; oy < out_h; oy += gridDim.y) {
    const index_t r = (oy / bh) * xs2 + cx;
    for (index_t n = blockIdx.z; n < N; n += gridDim.z) {
      const scalar_t* xp = x + n * xs0 + r;
      scalar_t* op = out + n * os0 + oy * os2 + ox0 * os3;
      for (index_t c = 0; c < C; ++c, xp += xs1, op += os1) {
        const scalar_t v = *xp;
        if (kVec) {
          fill_run<true>(op, len, v);
        } else {
          for (index_t k = 0; k < len; ++k) op[k * os3] = v;
        }
      }
    }
  }
}

// Backward (gather, no atomics): one thread per input column ix, summing
// the outputs that read it (dst_range) with their weights; gin is written
// with strides a.dst.
template <typename scalar_t, typename index_t>
__global__ void backward_kernel(const scalar_t* __restrict__ grad,
                                scalar_t* __restrict__ gin, const Args a) {
  using acc_t = opmath_t<scalar_t>;
  const Plan& p = a.p;
  const index_t ix =
      static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (ix >= p.in_w) return;
  const index_t N = a.N, C = a.C, in_h = p.in_h;
  const index_t gs0 = a.src.s0, gs1 = a.src.s1, gs2 = a.src.s2;
  const index_t gs3 = a.src.s3;
  const index_t ds0 = a.dst.s0, ds1 = a.dst.s1, ds2 = a.dst.s2;
  const index_t cix = ix * static_cast<index_t>(a.dst.s3);
  const auto ay = p.axis_y<acc_t>();
  const auto ax = p.axis_x<acc_t>();
  int64_t xlo, xhi;
  ax.dst_range(ix, xlo, xhi);
  const acc_t f0 = channel_factor<acc_t>(p, 0);
  const acc_t f1 = channel_factor<acc_t>(p, 1);
  for (index_t iy = blockIdx.y; iy < in_h; iy += gridDim.y) {
    int64_t ylo, yhi;
    ay.dst_range(iy, ylo, yhi);
    for (index_t n = blockIdx.z; n < N; n += gridDim.z) {
      const scalar_t* g = grad + n * gs0;
      scalar_t* o = gin + n * ds0 + iy * ds2 + cix;
      for (index_t c = 0; c < C; ++c, g += gs1, o += ds1) {
        acc_t sum = acc_t(0);
        for (index_t oy = ylo; oy < yhi; ++oy) {
          const acc_t wy = ay.weight(oy, iy);
          const scalar_t* row = g + oy * gs2;
          acc_t rs = acc_t(0);
          for (index_t ox = xlo; ox < xhi; ++ox) {
            rs += ax.weight(ox, ix) * static_cast<acc_t>(row[ox * gs3]);
          }
          sum += wy * rs;
        }
        *o = static_cast<scalar_t>(sum * (c == 0 ? f0 : f1));
      }
    }
  }
}

}  // namespace resample
}  // namespace mvaccel
