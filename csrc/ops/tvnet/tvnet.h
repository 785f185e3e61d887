// Host side of tvnet_iterations and its backward: the numbers a backend
// needs (argument checks: tvnet_checks.h; per-pixel math: tvnet_math.h).
//
// tvnet_iterations(u, p, warped, wf, wb, l_t, theta, taut, eps, grad_eps,
//                  save_states) -> (u_out, p_out, states)
//   u       (N, 2, H, W)  flow before the block of iterations (pixels)
//   p       (N, 4, H, W)  dual fields (p11, p12, p21, p22)
//   warped  (N, 3, H, W)  (rho_c, I1wx, I1wy) of the current warp
//   wf, wb  (k, 8)        filters of each of the k iterations
//   states  (k, N, 6, H, W) (u, p) before each iteration when save_states,
//           else an empty tensor: what the backward reads (6 planes per
//           iteration instead of the dozens autograd would keep).
// float32 or float64; every tensor on one device.
#pragma once

#include "../../common.h"
#include "tvnet_math.h"

namespace mvaccel {
namespace tvnet {

struct Coeffs {
  double l_t, theta, taut, eps, grad_eps;
};

}  // namespace tvnet
}  // namespace mvaccel
