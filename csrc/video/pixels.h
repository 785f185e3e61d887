// Pixel buffers of the reader (decoded RGB frames, residuals, predictions,
// the arrays handed to numpy) and the process-wide cache they come from.
//
// Why a cache: glibc hands blocks of a megabyte and more straight back to the
// kernel when they are freed, and each new one then costs a page fault per
// 4 KiB on first touch. A loop of GOP reads (720p, 5 residual frames each)
// spent about a third of its time in those faults. Blocks freed into the
// cache are reused instead: best fit, at most twice the size asked. It is
// opt-in (MVACCEL_READER_CACHE_MB, default 0 = off): in a training sample
// the freed blocks of one read rarely fit the next, and the blocks held
// raised the peak memory more than they saved time (bench/RESULTS.md). The
// oldest are freed first once the free blocks held pass the limit, and when
// no block fits a request, as many bytes as it asks are freed first. Blocks
// under 256 KiB come from malloc directly. Thread-safe; a forked child starts
// with a fresh lock and keeps the parent's free blocks (its own copy-on-write
// pages).
#pragma once

#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <mutex>
#include <new>
#include <string>
#include <utility>

namespace mvaccel::video {

struct CacheStats {
  size_t held = 0;      // bytes of free blocks kept
  size_t limit = 0;     // the most it keeps
  uint64_t hits = 0;    // blocks served from the cache
  uint64_t misses = 0;  // cacheable blocks that had to be allocated
};

class BlockCache {
 public:
  static constexpr size_t kMinCached = size_t{256} << 10;

  // A block of at least `bytes`; *got is its real size (give it back to
  // release()).
  static void* acquire(size_t bytes, size_t* got) {
    if (bytes < kMinCached) return raw(bytes, got);
    BlockCache& c = get();
    if (c.limit_ == 0) return raw(bytes, got);  // off: no lock (set once)
    {
      std::lock_guard<std::mutex> lock(*c.mutex_);
      auto it = c.free_.lower_bound(bytes);
      if (it != c.free_.end() && it->first <= 2 * bytes) {
        void* p = it->second.first;
        *got = it->first;
        c.held_ -= it->first;
        c.free_.erase(it);
        ++c.hits_;
        return p;
      }
      ++c.misses_;
      // No block fits: give back as much of the oldest ones first, so the
      // cache never makes the process larger than its blocks in use were.
      size_t freed = 0;
      while (freed < bytes && !c.free_.empty()) freed += c.drop_oldest();
    }
    return raw(bytes, got);
  }

  static void release(void* p, size_t bytes) {
    if (p == nullptr) return;
    if (bytes < kMinCached) {
      std::free(p);
      return;
    }
    BlockCache& c = get();
    if (bytes > c.limit_) {  // also: the cache is off
      std::free(p);
      return;
    }
    std::unique_lock<std::mutex> lock(*c.mutex_);
    // Drop the oldest free blocks until this one fits under the limit.
    while (c.held_ + bytes > c.limit_ && !c.free_.empty()) c.drop_oldest();
    c.free_.emplace(bytes, std::make_pair(p, ++c.clock_));
    c.held_ += bytes;
  }

  static CacheStats stats() {
    BlockCache& c = get();
    std::lock_guard<std::mutex> lock(*c.mutex_);
    return {c.held_, c.limit_, c.hits_, c.misses_};
  }

  // Frees every cached block (the limit stays).
  static void clear() {
    BlockCache& c = get();
    std::lock_guard<std::mutex> lock(*c.mutex_);
    for (auto& e : c.free_) std::free(e.second.first);
    c.free_.clear();
    c.held_ = 0;
  }

 private:
  BlockCache() : mutex_(new std::mutex) {
    const char* env = std::getenv("MVACCEL_READER_CACHE_MB");
    size_t mb = 0;
    if (env != nullptr && *env != '\0') {
      char* end = nullptr;
      long long v = std::strtoll(env, &end, 10);
      if (end != env && *end == '\0' && v >= 0) mb = static_cast<size_t>(v);
    }
    limit_ = mb << 20;
    pthread_atfork(nullptr, nullptr, [] {
      // The lock may have been held by a thread the fork did not copy.
      get().mutex_ = new std::mutex;  // the old one is left (never unlocked)
    });
  }

  static BlockCache& get() {
    static BlockCache* c = new BlockCache;  // never destroyed: outlives numpy
    return *c;
  }

  // Frees the least recently cached block (call with the lock held).
  size_t drop_oldest() {
    auto oldest = free_.begin();
    for (auto it = free_.begin(); it != free_.end(); ++it)
      if (it->second.second < oldest->second.second) oldest = it;
    const size_t n = oldest->first;
    held_ -= n;
    std::free(oldest->second.first);
    free_.erase(oldest);
    return n;
  }

  static void* raw(size_t bytes, size_t* got) {
    void* p = std::malloc(std::max<size_t>(bytes, 1));
    if (p == nullptr) throw std::bad_alloc();
    *got = bytes;
    return p;
  }

  std::mutex* mutex_;
  std::multimap<size_t, std::pair<void*, uint64_t>> free_;  // size -> block
  size_t held_ = 0, limit_ = 0;
  uint64_t clock_ = 0, hits_ = 0, misses_ = 0;
};

// A move-only array of T from BlockCache. reset(n) gives n elements with
// unspecified values (the buffers are written whole right after, no memset);
// assign(n, v) fills.
template <class T>
class Pixels {
 public:
  using value_type = T;
  Pixels() = default;
  explicit Pixels(size_t n) { reset(n); }
  Pixels(const Pixels&) = delete;
  Pixels& operator=(const Pixels&) = delete;
  Pixels(Pixels&& o) noexcept : p_(o.p_), n_(o.n_), bytes_(o.bytes_) {
    o.p_ = nullptr;
    o.n_ = o.bytes_ = 0;
  }
  Pixels& operator=(Pixels&& o) noexcept {
    if (this != &o) {
      drop();
      std::swap(p_, o.p_);
      std::swap(n_, o.n_);
      std::swap(bytes_, o.bytes_);
    }
    return *this;
  }
  ~Pixels() { drop(); }

  void reset(size_t n) {
    if (n * sizeof(T) > bytes_) {
      drop();
      p_ = static_cast<T*>(BlockCache::acquire(n * sizeof(T), &bytes_));
    }
    n_ = n;
  }
  void assign(size_t n, T v) {
    reset(n);
    std::fill_n(p_, n, v);
  }
  T* data() { return p_; }
  const T* data() const { return p_; }
  size_t size() const { return n_; }
  bool empty() const { return n_ == 0; }
  T* begin() { return p_; }
  T* end() { return p_ + n_; }
  const T* begin() const { return p_; }
  const T* end() const { return p_ + n_; }
  T& operator[](size_t i) { return p_[i]; }
  const T& operator[](size_t i) const { return p_[i]; }

 private:
  void drop() {
    BlockCache::release(p_, bytes_);
    p_ = nullptr;
    n_ = bytes_ = 0;
  }
  T* p_ = nullptr;
  size_t n_ = 0, bytes_ = 0;
};

}  // namespace mvaccel::video
