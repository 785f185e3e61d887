// Planned-allocation check shared by the ops' argument checks (host only).
//
// An op that allocates several full-size buffers (outputs, contiguous copies,
// solver workspaces) checks their total against the memory the device has
// available BEFORE it allocates anything, and raises torch.OutOfMemoryError
// naming the op, the size and what is available. Without it a too large call
// either grows into the OOM killer (CPU: Linux overcommits, the pages fail
// when written) or fails midway on a CUDA allocation.
#pragma once

#include <ATen/ATen.h>
#include <c10/core/CachingDeviceAllocator.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>

namespace mvaccel {

// Bytes a process may still allocate on the CPU: MemAvailable of
// /proc/meminfo, lowered by a cgroup v2 memory limit when there is one;
// sysconf's free pages where /proc is unreadable. Max value when unknown.
inline uint64_t cpu_available_bytes() {
  uint64_t avail = std::numeric_limits<uint64_t>::max();
  if (FILE* f = std::fopen("/proc/meminfo", "r")) {
    char line[256];
    unsigned long long kb = 0;
    while (std::fgets(line, sizeof line, f)) {
      if (std::sscanf(line, "MemAvailable: %llu kB", &kb) == 1) {
        avail = static_cast<uint64_t>(kb) * 1024;
        break;
      }
    }
    std::fclose(f);
  } else {
    const long pages = sysconf(_SC_AVPHYS_PAGES);
    const long page = sysconf(_SC_PAGESIZE);
    if (pages > 0 && page > 0)
      avail = static_cast<uint64_t>(pages) * static_cast<uint64_t>(page);
  }
  unsigned long long limit = 0, used = 0;
  FILE* fm = std::fopen("/sys/fs/cgroup/memory.max", "r");
  FILE* fc = std::fopen("/sys/fs/cgroup/memory.current", "r");
  if (fm && fc && std::fscanf(fm, "%llu", &limit) == 1 &&
      std::fscanf(fc, "%llu", &used) == 1 && limit > used &&
      limit - used < avail) {
    avail = limit - used;  // "max" (no limit) does not parse as a number
  }
  if (fm) std::fclose(fm);
  if (fc) std::fclose(fc);
  return avail;
}

// Bytes the caching allocator of an accelerator can still hand out: the
// device's free memory plus what the cache holds unused.
inline uint64_t device_available_bytes(const c10::Device& device) {
  try {
    c10::DeviceAllocator* alloc = c10::getDeviceAllocator(device.type());
    const auto info = alloc->getMemoryInfo(device.index());
    const auto stats = alloc->getDeviceStats(device.index());
    const auto agg =
        static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE);
    const int64_t cached =
        stats.reserved_bytes[agg].current - stats.allocated_bytes[agg].current;
    return static_cast<uint64_t>(info.first) +
           static_cast<uint64_t>(cached > 0 ? cached : 0);
  } catch (const c10::Error&) {
    // An allocator that cannot say (not implemented for it): no check.
    return std::numeric_limits<uint64_t>::max();
  }
}

// Raises torch.OutOfMemoryError when `bytes` (what the call is about to
// allocate, `what` says on what) exceed the memory available on `device`.
// CPU and CUDA are checked; other devices (meta, ...) allocate nothing real.
inline void check_fits_in_memory(const char* op, const c10::Device& device,
                                 double bytes, const char* what) {
  // Probing costs a /proc read or a driver call: not for the small calls of
  // a training loop, which cannot be what exhausts a machine.
  constexpr double kProbeFrom = 64.0 * 1024.0 * 1024.0;
  if (bytes < kProbeFrom) return;
  uint64_t avail;
  if (device.is_cpu()) {
    avail = cpu_available_bytes();
  } else if (device.is_cuda()) {
    avail = device_available_bytes(device);
  } else {
    return;
  }
  if (bytes <= static_cast<double>(avail)) return;
  constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;
  char msg[512];
  std::snprintf(msg, sizeof msg,
                "%s: this call needs about %.2f GiB of %s memory (%s) but "
                "only %.2f GiB is available; use smaller inputs or fewer at "
                "once",
                op, bytes / kGiB, device.str().c_str(), what,
                static_cast<double>(avail) / kGiB);
  TORCH_CHECK_WITH(OutOfMemoryError, false, msg);
}

// Bytes of `numel` elements of `t`'s dtype.
inline double bytes_of(const at::Tensor& t, double numel) {
  return numel * static_cast<double>(t.element_size());
}

// Bytes `t.contiguous()` allocates (0 when t is already contiguous).
inline double copy_bytes(const at::Tensor& t) {
  return t.is_contiguous() ? 0.0 : bytes_of(t, static_cast<double>(t.numel()));
}

}  // namespace mvaccel
