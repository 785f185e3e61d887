// sqrt and floor for kernel headers: std:: on the host and under nvcc,
// CUDA's built-in overloads under NVRTC (which has no <cmath>).
#pragma once

#include "device.cuh"

#ifndef __CUDACC_RTC__
#include <cmath>
#endif

namespace mvaccel {
namespace dmath {

#ifdef __CUDACC_RTC__
MVACCEL_HD float sqrt(float x) { return ::sqrtf(x); }
MVACCEL_HD double sqrt(double x) { return ::sqrt(x); }
MVACCEL_HD float floor(float x) { return ::floorf(x); }
MVACCEL_HD double floor(double x) { return ::floor(x); }
#else
using std::floor;
using std::sqrt;
#endif

}  // namespace dmath
}  // namespace mvaccel
