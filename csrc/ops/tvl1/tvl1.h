// tvl1_flow: the whole TV-L1 solve (pyramid, warps, iterations, stopping,
// median filter) for a batch of grey pairs, shared host-side pieces of the
// CPU (tvl1_cpu.cpp) and CUDA (tvl1_cuda.cu) kernels.
//
//   I0, I1  (N, H, W) float32, grey, scale 0..255
//   init    optional (N, 2, H, W) float32 initial flow in pixels
//   returns (N, 2, H, W) float32 flow u with I1(x + u(x)) ~ I0(x); channel 0
//           is x (right), channel 1 is y (down)
//
// Argument checks: tvl1_checks.h. Per-pixel math: tvl1_math.h. Python wrapper
// and reference: mvaccel/flow.
#pragma once

#include <cmath>
#include <utility>
#include <vector>

#include "../../common.h"
#include "tvl1_math.h"

namespace mvaccel {
namespace tvl1 {

enum StopCheck : int { kStopEvery = 0, kStopCuda = 1 };

struct Config {
  double tau, lambda, theta;
  int64_t nscales;
  double scale_step;
  int64_t warps;
  double epsilon;
  int64_t inner, outer, median;
  int64_t warp, stop_check, min_size;
  double dual_eps, grad_eps;

  float l_t() const { return static_cast<float>(lambda * theta); }
  float taut() const { return static_cast<float>(tau / theta); }
};

// Level sizes, finest first: each is the previous times scale_step rounded to
// nearest (ties to even, as cv::resize with factors); a level under min_size
// in either dimension ends the pyramid.
inline std::vector<std::pair<int64_t, int64_t>> pyramid_sizes(int64_t H,
                                                              int64_t W,
                                                              const Config& c) {
  std::vector<std::pair<int64_t, int64_t>> s{{H, W}};
  for (int64_t l = 1; l < c.nscales; ++l) {
    const int64_t h = static_cast<int64_t>(
        std::nearbyint(static_cast<double>(s.back().first) * c.scale_step));
    const int64_t w = static_cast<int64_t>(
        std::nearbyint(static_cast<double>(s.back().second) * c.scale_step));
    if (h < c.min_size || w < c.min_size) break;
    s.emplace_back(h, w);
  }
  return s;
}

}  // namespace tvl1
}  // namespace mvaccel
