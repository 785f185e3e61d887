// Resampling math of block_upsample and mv_resize (the axis maps and the
// plan of a call), shared by the C++ loops, the nvcc kernels and NVRTC. See
// resample.h for the formulas.
#pragma once

#include "../../device.cuh"

namespace mvaccel {
namespace resample {

enum Mode : int { kNearestBlock = 0, kNearestExact = 1, kLinear = 2 };

template <typename acc_t>
struct AxisMap {
  int64_t in;     // input size along the axis
  int64_t out;    // output size along the axis
  int64_t block;  // block size (kNearestBlock only)
  acc_t scale;    // in / out, or 1 / block
  int mode;

  MVACCEL_HD void src(int64_t d, int64_t& i0, int64_t& i1, acc_t& w1) const {
    if (mode == kNearestBlock) {
      i0 = i1 = d / block;
      w1 = acc_t(0);
    } else if (mode == kNearestExact) {
      // (d + 0.5) * scale >= 0, so the cast is a floor.
      const int64_t s =
          static_cast<int64_t>((static_cast<acc_t>(d) + acc_t(0.5)) * scale);
      i0 = i1 = s < in - 1 ? s : in - 1;
      w1 = acc_t(0);
    } else {
      acc_t r = scale * (static_cast<acc_t>(d) + acc_t(0.5)) - acc_t(0.5);
      if (r < acc_t(0)) r = acc_t(0);
      i0 = static_cast<int64_t>(r);
      if (i0 > in - 1) i0 = in - 1;
      i1 = i0 < in - 1 ? i0 + 1 : i0;
      w1 = r - static_cast<acc_t>(i0);
    }
  }

  // Weight with which output d reads input i (0 when it does not).
  MVACCEL_HD acc_t weight(int64_t d, int64_t i) const {
    int64_t i0, i1;
    acc_t w1;
    src(d, i0, i1, w1);
    acc_t w = acc_t(0);
    if (i0 == i) w += acc_t(1) - w1;
    if (i1 == i) w += w1;
    return w;
  }

  // First output index whose i0 is >= k (out if none). i0 is monotone in d,
  // so an estimate from the inverse formula is corrected by a few steps of
  // the exact forward formula: the ranges agree with the forward bit for bit.
  MVACCEL_HD int64_t first_dst(int64_t k) const {
    if (k <= 0) return 0;
    if (k > in - 1) return out;
    if (mode == kNearestBlock) return k * block < out ? k * block : out;
    const acc_t est =
        mode == kNearestExact
            ? static_cast<acc_t>(k) / scale - acc_t(0.5)
            : (static_cast<acc_t>(k) + acc_t(0.5)) / scale - acc_t(0.5);
    int64_t d = est <= acc_t(0) ? 0 : static_cast<int64_t>(est);
    if (d > out) d = out;
    int64_t i0, i1;
    acc_t w1;
    while (d > 0) {
      src(d - 1, i0, i1, w1);
      if (i0 < k) break;
      --d;
    }
    while (d < out) {
      src(d, i0, i1, w1);
      if (i0 >= k) break;
      ++d;
    }
    return d;
  }

  // Outputs [lo, hi) that read input index i.
  MVACCEL_HD void dst_range(int64_t i, int64_t& lo, int64_t& hi) const {
    lo = first_dst(mode == kLinear ? i - 1 : i);
    hi = first_dst(i + 1);
  }
};

// Everything a backend needs to run one call, checked and derived on the
// host by the same code for every backend.
// A fixed-width POD: it is a kernel argument (NVRTC launches mirror it with
// a numpy dtype, mvaccel/ops/_nvrtc.py).
struct Plan {
  int64_t in_h, in_w, out_h, out_w;
  int64_t block_h, block_w;
  double scale_h, scale_w;    // in / out (or 1 / block)
  double factor_x, factor_y;  // value factors of channel 0 and 1
  int32_t mode;               // Mode
  int32_t scale_values;       // mv_resize: multiply channel 0/1 values (0/1)

  template <typename acc_t>
  MVACCEL_HD AxisMap<acc_t> axis_y() const {
    return {in_h, out_h, block_h, static_cast<acc_t>(scale_h), mode};
  }
  template <typename acc_t>
  MVACCEL_HD AxisMap<acc_t> axis_x() const {
    return {in_w, out_w, block_w, static_cast<acc_t>(scale_w), mode};
  }
};
static_assert(sizeof(Plan) == 88, "mirrored by mvaccel/ops/_nvrtc.py");

// Value factor of channel c (channels >= 1 take factor_y: mv_resize has 2).
template <typename acc_t>
MVACCEL_HD acc_t channel_factor(const Plan& p, int64_t c) {
  if (!p.scale_values) return acc_t(1);
  return static_cast<acc_t>(c == 0 ? p.factor_x : p.factor_y);
}

// Strides (elements) of an (N, C, H, W) tensor.
struct Strides {
  int64_t s0, s1, s2, s3;
};

// Everything a launch needs besides the two pointers. The forward reads x
// with strides `src` and writes out with strides `dst`; the backward reads
// grad with strides `src` and writes gin with strides `dst`.
struct Args {
  Plan p;
  Strides src, dst;
  int64_t C, N;  // channels and images
};
static_assert(sizeof(Strides) == 32 && sizeof(Args) == 168,
              "mirrored by mvaccel/ops/_nvrtc.py");

}  // namespace resample
}  // namespace mvaccel
