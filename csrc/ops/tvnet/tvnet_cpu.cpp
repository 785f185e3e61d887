// CPU kernels of tvnet_iterations and its backward.
//
// Each iteration is two in-place passes over the image rows forward and
// three backward (see tvnet_math.h): pass "u" reads u at the pixel and p at
// its neighbours, pass "p" reads u at its neighbours and p at the pixel, so
// neither needs a second buffer. The backward runs the iterations in
// reverse from the saved (u, p) states and recomputes the rest.
//
// A row is its border pixels (the bounds-checked pass functions of
// tvnet_math.h) and its interior: a `#pragma omp simd` loop over unit-stride
// row pointers that calls the value functions with no bounds tests (a row
// outside the image reads a zero row), so it vectorises.
//
// Threads: with at least as many pairs as threads, each thread runs all the
// iterations of one pair, then takes the next free pair (one fork-join per
// call, the pair stays in its core's cache); otherwise each pass is split
// over rows. Filter gradients
// are summed per row, then over the rows of a pair in order, then over the
// pairs in order: the result does not depend on the number of threads.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <tuple>
#include <vector>

#include "tvnet_checks.h"

namespace mvaccel {
namespace tvnet {
namespace {

int64_t grain_rows(int64_t W) {
  // Enough pixels per task that small images run without fork-join waits.
  return std::max<int64_t>(1, 32768 / std::max<int64_t>(W, 1));
}

// Runs fn(n, y0, y1) on every row of the (N, H) grid, split over threads
// by rows (a task's rows may span pairs: one call per pair).
template <typename F>
void for_rows(int64_t N, int64_t H, int64_t W, const F& fn) {
  at::parallel_for(0, N * H, grain_rows(W), [&](int64_t r0, int64_t r1) {
    while (r0 < r1) {
      const int64_t n = r0 / H, y0 = r0 % H;
      const int64_t y1 = std::min(H, y0 + (r1 - r0));
      fn(n, y0, y1);
      r0 += y1 - y0;
    }
  });
}

// Whether each thread takes whole pairs (all iterations) rather than rows.
bool split_by_pair(int64_t N) { return N >= at::get_num_threads(); }

// Runs fn(n) for every pair n in [0, N), one pair at a time per thread:
// a thread takes the next pair when it is done with one, so a thread that
// runs slower (a core shared with other processes) takes fewer pairs.
template <typename F>
void for_pairs(int64_t N, const F& fn) {
  std::atomic<int64_t> next{0};
  const int64_t tasks = std::min<int64_t>(N, at::get_num_threads());
  at::parallel_for(0, tasks, 1, [&](int64_t, int64_t) {
    for (int64_t n = next++; n < N; n = next++) fn(n);
  });
}

// Planes of one pair and the numbers of one iteration.
template <typename T>
struct Iter {
  int64_t H, W;
  Taps<T> f[2], b[2];
  T l_t, theta, taut, eps, grad_eps;
  const T* zero;  // a row of W zeros
};

template <typename T>
Iter<T> iter_of(const Dims& d, const Coeffs& c, const T* wf, const T* wb,
                int64_t it, const T* zero) {
  Iter<T> s;
  s.H = d.H;
  s.W = d.W;
  for (int k = 0; k < 2; ++k) {
    s.f[k] = taps_of<T>(wf + it * kTaps, k);
    s.b[k] = taps_of<T>(wb + it * kTaps, k);
  }
  s.l_t = c.l_t;
  s.theta = c.theta;
  s.taut = c.taut;
  s.eps = c.eps;
  s.grad_eps = c.grad_eps;
  s.zero = zero;
  return s;
}

// ------------------------------------------------------------------ forward

// Pass "u" on rows [y0, y1) of one pair (u: 2 planes, p: 4, w: 3).
template <typename T>
void rows_u(T* u, const T* p, const T* w, const Iter<T>& s, int64_t y0,
            int64_t y1) {
  const int64_t H = s.H, W = s.W, HW = H * W;
  for (int64_t y = y0; y < y1; ++y) {
    const int64_t o = y * W;
    pass_u<T>(u, p, w, H, W, y, 0, s.b[0], s.b[1], s.l_t, s.theta, s.grad_eps);
    if (W > 1) {
      pass_u<T>(u, p, w, H, W, y, W - 1, s.b[0], s.b[1], s.l_t, s.theta,
                s.grad_eps);
    }
    T* u1 = u + o;
    T* u2 = u + HW + o;
    const T* p1x = p + o;
    const T* p1y = y + 1 < H ? p + HW + o : s.zero;
    const T* p1u = y > 0 ? p + HW + o - W : s.zero;
    const T* p2x = p + 2 * HW + o;
    const T* p2y = y + 1 < H ? p + 3 * HW + o : s.zero;
    const T* p2u = y > 0 ? p + 3 * HW + o - W : s.zero;
    const T* rc = w + o;
    const T* ix = w + HW + o;
    const T* iy = w + 2 * HW + o;
    const Taps<T> b1 = s.b[0], b2 = s.b[1];
    const T l_t = s.l_t, theta = s.theta, grad_eps = s.grad_eps;
#pragma omp simd
    for (int64_t x = 1; x < W - 1; ++x) {
      const T div1 = div_taps<T>(p1x[x - 1], p1x[x], p1u[x], p1y[x], b1);
      const T div2 = div_taps<T>(p2x[x - 1], p2x[x], p2u[x], p2y[x], b2);
      update_u_at<T>(u1[x], u2[x], rc[x], ix[x], iy[x], div1, div2, l_t, theta,
                     grad_eps, u1[x], u2[x]);
    }
  }
}

// Interior of pass "p" on one row of one component: x in [0, W - 1).
template <typename T, bool kDown>
void row_p(const T* uc, const T* ud, T* p1, T* p2, int64_t W, Taps<T> f, T taut,
           T eps) {
#pragma omp simd
  for (int64_t x = 0; x < W - 1; ++x) {
    update_p_at<T>(uc[x], uc[x + 1], kDown ? ud[x] : T(0), true, kDown, f, taut,
                   eps, p1[x], p2[x]);
  }
}

// Pass "p" on rows [y0, y1) of one pair.
template <typename T>
void rows_p(const T* u, T* p, const Iter<T>& s, int64_t y0, int64_t y1) {
  const int64_t H = s.H, W = s.W, HW = H * W;
  for (int64_t y = y0; y < y1; ++y) {
    const int64_t o = y * W;
    for (int k = 0; k < 2; ++k) {
      const T* uc = u + k * HW + o;
      T* p1 = p + 2 * k * HW + o;
      T* p2 = p1 + HW;
      if (y + 1 < H) {
        row_p<T, true>(uc, uc + W, p1, p2, W, s.f[k], s.taut, s.eps);
      } else {
        row_p<T, false>(uc, uc, p1, p2, W, s.f[k], s.taut, s.eps);
      }
    }
    pass_p<T>(u, p, H, W, y, W - 1, s.f[0], s.f[1], s.taut, s.eps);
  }
}

template <typename T>
void forward_impl(T* u, T* p, const T* warped, const T* wf, const T* wb,
                  T* states, const Dims& d, const Coeffs& c) {
  const int64_t N = d.N, H = d.H, W = d.W, HW = d.H * d.W;
  const std::vector<T> zero_row(W, T(0));
  auto save = [&](int64_t n, int64_t it) {
    if (states == nullptr) return;
    T* s = states + (it * N + n) * 6 * HW;
    std::copy(u + n * 2 * HW, u + (n + 1) * 2 * HW, s);
    std::copy(p + n * 4 * HW, p + (n + 1) * 4 * HW, s + 2 * HW);
  };
  auto iter = [&](int64_t it) {
    return iter_of<T>(d, c, wf, wb, it, zero_row.data());
  };
  if (split_by_pair(N)) {
    for_pairs(N, [&](int64_t n) {
      T* un = u + n * 2 * HW;
      T* pn = p + n * 4 * HW;
      for (int64_t it = 0; it < d.K; ++it) {
        const Iter<T> s = iter(it);
        save(n, it);
        rows_u<T>(un, pn, warped + n * 3 * HW, s, 0, H);
        rows_p<T>(un, pn, s, 0, H);
      }
    });
    return;
  }
  for (int64_t it = 0; it < d.K; ++it) {
    const Iter<T> s = iter(it);
    at::parallel_for(0, N, 1, [&](int64_t n0, int64_t n1) {
      for (int64_t n = n0; n < n1; ++n) save(n, it);
    });
    for_rows(N, H, W, [&](int64_t n, int64_t y0, int64_t y1) {
      rows_u<T>(u + n * 2 * HW, p + n * 4 * HW, warped + n * 3 * HW, s, y0, y1);
    });
    for_rows(N, H, W, [&](int64_t n, int64_t y0, int64_t y1) {
      rows_p<T>(u + n * 2 * HW, p + n * 4 * HW, s, y0, y1);
    });
  }
}

// ----------------------------------------------------------------- backward

// Interior of pass "p" transposed on one row of one component, x in
// [0, W - 1); adds the wf terms to a[0..4).
template <typename T, bool kDown>
void row_p_backward(const T* uc, const T* ud, const T* p1, const T* p2, T* g1,
                    T* g2, T* gx, T* gy, int64_t W, Taps<T> f, T taut, T eps,
                    T* a) {
  T a0 = T(0), a1 = T(0), a2 = T(0), a3 = T(0);
#pragma omp simd reduction(+ : a0, a1, a2, a3)
  for (int64_t x = 0; x < W - 1; ++x) {
    update_p_backward_at<T>(uc[x], uc[x + 1], kDown ? ud[x] : T(0), true, kDown,
                            f, p1[x], p2[x], taut, eps, g1[x], g2[x], gx[x],
                            gy[x], a0, a1, a2, a3);
  }
  a[0] += a0;
  a[1] += a1;
  a[2] += a2;
  a[3] += a3;
}

// Pass "p" transposed on rows [y0, y1) of one pair; row sums of the wf
// terms to rs[y * 2 * kTaps + j].
template <typename T>
void rows_p_backward(const T* ucur, const T* pold, T* gp, T* g4,
                     const Iter<T>& s, int64_t y0, int64_t y1, T* rs) {
  const int64_t H = s.H, W = s.W, HW = H * W;
  for (int64_t y = y0; y < y1; ++y) {
    const int64_t o = y * W;
    T acc[kTaps] = {};
    for (int k = 0; k < 2; ++k) {
      const T* uc = ucur + k * HW + o;
      const T* p1 = pold + 2 * k * HW + o;
      T* g1 = gp + 2 * k * HW + o;
      T* gx = g4 + 2 * k * HW + o;
      if (y + 1 < H) {
        row_p_backward<T, true>(uc, uc + W, p1, p1 + HW, g1, g1 + HW, gx,
                                gx + HW, W, s.f[k], s.taut, s.eps, acc + 4 * k);
      } else {
        row_p_backward<T, false>(uc, uc, p1, p1 + HW, g1, g1 + HW, gx, gx + HW,
                                 W, s.f[k], s.taut, s.eps, acc + 4 * k);
      }
    }
    pass_p_backward<T>(ucur, pold, gp, g4, H, W, y, W - 1, s.f, s.taut, s.eps,
                       acc);
    std::copy(acc, acc + kTaps, rs + y * 2 * kTaps);
  }
}

// Pass "g" on rows [y0, y1) of one pair: gu becomes G.
template <typename T>
void rows_g(T* gu, const T* g4, const Iter<T>& s, int64_t y0, int64_t y1) {
  const int64_t H = s.H, W = s.W, HW = H * W;
  for (int64_t y = y0; y < y1; ++y) {
    const int64_t o = y * W;
    pass_g<T>(gu, g4, H, W, y, 0, s.f);
    for (int k = 0; k < 2; ++k) {
      T* g = gu + k * HW + o;
      const T* gx = g4 + 2 * k * HW + o;
      const T* gy = gx + HW;
      const T* gyu = y > 0 ? gy - W : s.zero;
      const Taps<T> f = s.f[k];
#pragma omp simd
      for (int64_t x = 1; x < W; ++x) {
        g[x] = grad_u_total<T>(g[x], gx[x], gy[x], gx[x - 1], gyu[x], f);
      }
    }
  }
}

// Interior of the divergence part of pass "u" transposed on one row of one
// component, x in [1, W - 1); adds the wb terms to a[0..4).
template <typename T, bool kUp, bool kDown>
void row_div_backward(const T* G, const T* Gd, const T* px, const T* pyu,
                      const T* py, T* gpx, T* gpy, int64_t W, Taps<T> b,
                      T theta, T* a) {
  T a0 = T(0), a1 = T(0), a2 = T(0), a3 = T(0);
#pragma omp simd reduction(+ : a0, a1, a2, a3)
  for (int64_t x = 1; x < W - 1; ++x) {
    div_backward_at<T>(G[x], G[x + 1], kDown ? Gd[x] : T(0), px[x - 1], px[x],
                       kUp ? pyu[x] : T(0), kDown ? py[x] : T(0), true, true,
                       kUp, kDown, b, theta, gpx[x], gpy[x], a0, a1, a2, a3);
  }
  a[0] += a0;
  a[1] += a1;
  a[2] += a2;
  a[3] += a3;
}

// Pass "u" transposed on rows [y0, y1) of one pair; row sums of the wb
// terms to rs[y * 2 * kTaps + j].
template <typename T>
void rows_u_backward(const T* uold, const T* pold, const T* w, const T* G,
                     T* gp, T* gw, T* gu_old, const Iter<T>& s, int64_t y0,
                     int64_t y1, T* rs) {
  const int64_t H = s.H, W = s.W, HW = H * W;
  for (int64_t y = y0; y < y1; ++y) {
    const int64_t o = y * W;
    T acc[kTaps] = {};
    pass_div_backward<T>(pold, G, gp, H, W, y, 0, s.b, s.theta, acc);
    if (W > 1) {
      pass_div_backward<T>(pold, G, gp, H, W, y, W - 1, s.b, s.theta, acc);
    }
    const bool up = y > 0, dn = y + 1 < H;
    for (int k = 0; k < 2; ++k) {
      const T* g = G + k * HW + o;
      const T* px = pold + 2 * k * HW + o;
      const T* py = px + HW;
      T* gpx = gp + 2 * k * HW + o;
      T* gpy = gpx + HW;
      const T* pyu = up ? py - W : s.zero;
      const T* gd = dn ? g + W : s.zero;
      T* a = acc + 4 * k;
      if (up && dn) {
        row_div_backward<T, true, true>(g, gd, px, pyu, py, gpx, gpy, W, s.b[k],
                                        s.theta, a);
      } else if (up) {
        row_div_backward<T, true, false>(g, gd, px, pyu, py, gpx, gpy, W,
                                         s.b[k], s.theta, a);
      } else if (dn) {
        row_div_backward<T, false, true>(g, gd, px, pyu, py, gpx, gpy, W,
                                         s.b[k], s.theta, a);
      } else {
        row_div_backward<T, false, false>(g, gd, px, pyu, py, gpx, gpy, W,
                                          s.b[k], s.theta, a);
      }
    }
    std::copy(acc, acc + kTaps, rs + y * 2 * kTaps);
    // Thresholding: per pixel, no neighbours.
    const T* u1 = uold + o;
    const T* u2 = uold + HW + o;
    const T* rc = w + o;
    const T* ix = w + HW + o;
    const T* iy = w + 2 * HW + o;
    const T* G1 = G + o;
    const T* G2 = G + HW + o;
    T* grc = gw + o;
    T* gix = gw + HW + o;
    T* giy = gw + 2 * HW + o;
    T* go1 = gu_old + o;
    T* go2 = gu_old + HW + o;
    const T l_t = s.l_t, grad_eps = s.grad_eps;
#pragma omp simd
    for (int64_t x = 0; x < W; ++x) {
      T gu1 = T(0), gu2 = T(0);
      threshold_backward<T>(u1[x], u2[x], rc[x], ix[x], iy[x], l_t, grad_eps,
                            G1[x], G2[x], gu1, gu2, grc[x], gix[x], giy[x]);
      go1[x] = gu1;
      go2[x] = gu2;
    }
  }
}

template <typename T>
void backward_impl(T* gu, T* gu_next, T* gp, T* gw, T* gwf, T* gwb,
                   const T* states, const T* u_out, const T* warped,
                   const T* wf, const T* wb, const Dims& d, const Coeffs& c) {
  const int64_t N = d.N, H = d.H, W = d.W, K = d.K, HW = d.H * d.W;
  const std::vector<T> zero_row(W, T(0));
  std::vector<T> tmp(N * 4 * HW);  // g4 = (gux1, guy1, gux2, guy2)
  // Row sums of one iteration: rows[(n * H + y) * 2 * kTaps + j], wf terms
  // then wb terms; their sums over rows: sums[(it * N + n) * 2 * kTaps + j].
  std::vector<T> rows(N * H * 2 * kTaps);
  std::vector<T> sums(K * N * 2 * kTaps, T(0));
  T* g4 = tmp.data();
  auto state = [&](int64_t it, int64_t n) {
    return states + (it * N + n) * 6 * HW;
  };
  auto ucur = [&](int64_t it, int64_t n) -> const T* {
    return it == K - 1 ? u_out + n * 2 * HW : state(it + 1, n);
  };
  auto pass_a = [&](const Iter<T>& s, int64_t it, int64_t n, int64_t y0,
                    int64_t y1) {
    rows_p_backward<T>(ucur(it, n), state(it, n) + 2 * HW, gp + n * 4 * HW,
                       g4 + n * 4 * HW, s, y0, y1,
                       rows.data() + n * H * 2 * kTaps);
  };
  auto pass_b = [&](const Iter<T>& s, T* g, int64_t n, int64_t y0, int64_t y1) {
    rows_g<T>(g + n * 2 * HW, g4 + n * 4 * HW, s, y0, y1);
  };
  auto pass_c = [&](const Iter<T>& s, const T* g, T* g_old, int64_t it,
                    int64_t n, int64_t y0, int64_t y1) {
    const T* st = state(it, n);
    rows_u_backward<T>(st, st + 2 * HW, warped + n * 3 * HW, g + n * 2 * HW,
                       gp + n * 4 * HW, gw + n * 3 * HW, g_old + n * 2 * HW, s,
                       y0, y1, rows.data() + n * H * 2 * kTaps + kTaps);
  };
  // Sums the row sums of pair n (rows in order) into sums of iteration it.
  auto reduce = [&](int64_t it, int64_t n) {
    T* out = sums.data() + (it * N + n) * 2 * kTaps;
    const T* r = rows.data() + n * H * 2 * kTaps;
    for (int64_t y = 0; y < H; ++y) {
      for (int j = 0; j < 2 * kTaps; ++j) out[j] += r[y * 2 * kTaps + j];
    }
  };
  const bool by_pair = split_by_pair(N);
  if (by_pair) {
    for_pairs(N, [&](int64_t n) {
      T* a = gu;
      T* b = gu_next;
      for (int64_t it = K - 1; it >= 0; --it) {
        const Iter<T> s = iter_of<T>(d, c, wf, wb, it, zero_row.data());
        pass_a(s, it, n, 0, H);
        pass_b(s, a, n, 0, H);
        pass_c(s, a, b, it, n, 0, H);
        reduce(it, n);
        std::swap(a, b);
      }
    });
  } else {
    T* a = gu;
    T* b = gu_next;
    for (int64_t it = K - 1; it >= 0; --it) {
      const Iter<T> s = iter_of<T>(d, c, wf, wb, it, zero_row.data());
      for_rows(N, H, W, [&](int64_t n, int64_t y0, int64_t y1) {
        pass_a(s, it, n, y0, y1);
      });
      for_rows(N, H, W, [&](int64_t n, int64_t y0, int64_t y1) {
        pass_b(s, a, n, y0, y1);
      });
      for_rows(N, H, W, [&](int64_t n, int64_t y0, int64_t y1) {
        pass_c(s, a, b, it, n, y0, y1);
      });
      for (int64_t n = 0; n < N; ++n) reduce(it, n);
      std::swap(a, b);
    }
  }
  // Filter gradients: pairs in order.
  for (int64_t it = 0; it < K; ++it) {
    for (int64_t n = 0; n < N; ++n) {
      const T* r = sums.data() + (it * N + n) * 2 * kTaps;
      for (int j = 0; j < kTaps; ++j) {
        gwf[it * kTaps + j] += r[j];
        gwb[it * kTaps + j] += r[kTaps + j];
      }
    }
  }
}

Coeffs coeffs(double l_t, double theta, double taut, double eps,
              double grad_eps) {
  return {l_t, theta, taut, eps, grad_eps};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> tvnet_iterations_cpu(
    const at::Tensor& u_in, const at::Tensor& p_in, const at::Tensor& warped_in,
    const at::Tensor& wf_in, const at::Tensor& wb_in, double l_t, double theta,
    double taut, double eps, double grad_eps, bool save_states) {
  const Dims d =
      check_tvnet_iterations(u_in, p_in, warped_in, wf_in, wb_in, save_states);
  at::Tensor u = u_in.contiguous().clone();
  at::Tensor p = p_in.contiguous().clone();
  const at::Tensor warped = warped_in.contiguous();
  const at::Tensor wf = wf_in.contiguous(), wb = wb_in.contiguous();
  at::Tensor states = save_states
                          ? at::empty({d.K, d.N, 6, d.H, d.W}, u.options())
                          : at::empty({0}, u.options());
  if (u.numel() == 0 || d.K == 0) return {u, p, states};
  const Coeffs c = coeffs(l_t, theta, taut, eps, grad_eps);
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "mvaccel_tvnet_cpu", [&] {
    forward_impl<scalar_t>(
        u.mutable_data_ptr<scalar_t>(), p.mutable_data_ptr<scalar_t>(),
        warped.const_data_ptr<scalar_t>(), wf.const_data_ptr<scalar_t>(),
        wb.const_data_ptr<scalar_t>(),
        save_states ? states.mutable_data_ptr<scalar_t>() : nullptr, d, c);
  });
  return {u, p, states};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
tvnet_iterations_backward_cpu(const at::Tensor& grad_u_in,
                              const at::Tensor& grad_p_in,
                              const at::Tensor& states_in,
                              const at::Tensor& u_out_in,
                              const at::Tensor& warped_in,
                              const at::Tensor& wf_in, const at::Tensor& wb_in,
                              double l_t, double theta, double taut, double eps,
                              double grad_eps) {
  const Dims d = check_tvnet_iterations_backward(
      grad_u_in, grad_p_in, states_in, u_out_in, warped_in, wf_in, wb_in);
  at::Tensor gu = grad_u_in.contiguous().clone();
  at::Tensor gu_next = at::empty_like(gu);
  at::Tensor gp = grad_p_in.contiguous().clone();
  at::Tensor gw = at::zeros_like(warped_in, at::MemoryFormat::Contiguous);
  at::Tensor gwf = at::zeros({d.K, kTaps}, wf_in.options());
  at::Tensor gwb = at::zeros({d.K, kTaps}, wb_in.options());
  if (gu.numel() == 0 || d.K == 0) return {gu, gp, gw, gwf, gwb};
  const at::Tensor states = states_in.contiguous();
  const at::Tensor u_out = u_out_in.contiguous();
  const at::Tensor warped = warped_in.contiguous();
  const at::Tensor wf = wf_in.contiguous(), wb = wb_in.contiguous();
  const Coeffs c = coeffs(l_t, theta, taut, eps, grad_eps);
  AT_DISPATCH_FLOATING_TYPES(gu.scalar_type(), "mvaccel_tvnet_bwd_cpu", [&] {
    backward_impl<scalar_t>(
        gu.mutable_data_ptr<scalar_t>(), gu_next.mutable_data_ptr<scalar_t>(),
        gp.mutable_data_ptr<scalar_t>(), gw.mutable_data_ptr<scalar_t>(),
        gwf.mutable_data_ptr<scalar_t>(), gwb.mutable_data_ptr<scalar_t>(),
        states.const_data_ptr<scalar_t>(), u_out.const_data_ptr<scalar_t>(),
        warped.const_data_ptr<scalar_t>(), wf.const_data_ptr<scalar_t>(),
        wb.const_data_ptr<scalar_t>(), d, c);
  });
  // Each iteration writes the other buffer: after an odd number of
  // iterations the gradient of u is in gu_next.
  return {d.K % 2 == 1 ? gu_next : gu, gp, gw, gwf, gwb};
}

}  // namespace
}  // namespace tvnet

TORCH_LIBRARY_IMPL(mvaccel, CPU, m) {
  m.impl("tvnet_iterations", &tvnet::tvnet_iterations_cpu);
  m.impl("_tvnet_iterations_backward", &tvnet::tvnet_iterations_backward_cpu);
}

}  // namespace mvaccel
