// Resampling of block-level maps and motion fields: the math behind
// block_upsample and mv_resize (device-safe code in resample_math.cuh, shared
// by the C++ loops, nvcc and NVRTC) and the host-side planning of a call.
//
// Both ops map an input plane (Hin, Win) to an output plane (Hout, Wout) one
// axis at a time. Along an axis an output index d reads input indices i0, i1
// with weights (1 - w1, w1):
//
//   kNearestBlock  i0 = i1 = d / block                     (codec semantics)
//   kNearestExact  i0 = i1 = min(floor((d + 0.5) * s), in - 1)
//   kLinear        r = max(s * (d + 0.5) - 0.5, 0); i0 = floor(r);
//                  i1 = min(i0 + 1, in - 1); w1 = r - i0    (pixel centres)
//
// where s = in / out (or 1 / block). These are the formulas of
// F.interpolate(mode="nearest-exact" / "bilinear", align_corners=False), so
// the pure-torch references in mvaccel/ops/reference.py are one call each.
//
// The backward gathers instead of scattering (deterministic, no atomics):
// input index i receives from the contiguous output range returned by
// dst_range(i), with the weight given by weight(d, i).
//
// Argument checks and planning of a call: resample_checks.h.
#pragma once

#include <cmath>
#include <string>

#include "../../common.h"
#include "resample_math.cuh"

namespace mvaccel {
namespace resample {

// Outputs follow the memory format of their input (channels_last in,
// channels_last out), as F.interpolate does.
inline at::Tensor empty_like_format(const at::Tensor& ref, int64_t n, int64_t c,
                                    int64_t h, int64_t w) {
  return at::empty({n, c, h, w},
                   ref.options().memory_format(ref.suggest_memory_format()));
}

}  // namespace resample
}  // namespace mvaccel
