// Fused CPU kernels for the DO-Conv kernel composition (forward and backward).
//
//   K[o, j, t]  = sum_m W[o, j, m] * D[c, t, m]        c = (o / (O / G)) * Cg + j
//   gW[o, j, m] = sum_t gK[o, j, t] * D[c, t, m]
//   gD[c, t, m] = sum_o gK[o, j, t] * W[o, j, m]
//
// W: (O, Cg, M), D: (C, T, M) (the full depthwise kernel D' + I), K and gK: (O, Cg, T), all
// contiguous. On a CPU the composition streams memory (about 2 flops per byte), so every byte of
// W, K, gK and gW is touched once, in storage order; for kernels that fit in the caches the
// loads per entry bound it instead (see four_rows_times_matrix). The batched-matmul
// formulation needs the input channel as the batch dimension, i.e. transposed copies of the
// kernel-sized tensors in both directions (about twice the memory traffic, measured).
//
// Both kernels walk the output channels in blocks of rows (kRowBlock forward, kBackwardRows
// backward) and, within a block, the input channels in storage order; the per-channel 9x9 matrix
// (packed: pack_matrices) stays in registers for the rows of the block. Compiled for AVX-512,
// AVX2 and baseline x86-64 and picked at load time (GCC function multi-versioning).
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>
#include <vector>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define MMEFF_MULTIVERSION __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define MMEFF_MULTIVERSION
#endif
#define MMEFF_INLINE __attribute__((always_inline)) static inline

namespace mmeff {
namespace {

constexpr int64_t kRowBlock = 4;
// Rows of a block are one kernel row apart in memory (a page apart for 512 input channels): each
// row is its own stream for the TLB and the prefetcher. 4 or 8 backward rows (3 tensors: 12 or 24
// streams) measured 1.3-1.6x faster than 16 (median of 60 interleaved calls, 512x512, one thread,
// AVX2 EPYC VM: 4 rows 5.0 ms, 8 rows 6.1 ms, 16 rows 8.2 ms); tiling the input channels as well
// did not help.
constexpr int64_t kBackwardRows = 4;
constexpr int kTaps = 9;   // 3x3 kernels
constexpr int kDMul = 9;   // D_mul = kh * kw
static_assert(kRowBlock == 4 && kBackwardRows == 4, "rows_times_matrix works on blocks of 4 rows");

template <typename V, typename S>
MMEFF_INLINE V load(const S* p) { V v; std::memcpy(&v, p, sizeof(V)); return v; }
template <typename V, typename S>
MMEFF_INLINE void store(S* p, const V& v) { std::memcpy(p, &v, sizeof(V)); }

struct Layout {
  int64_t out_channels, in_per_group, groups, out_per_group, rows, blocks_per_group;
};

Layout layout_of(const torch::Tensor& W, int64_t groups, int64_t rows) {
  const int64_t opg = W.size(0) / groups;
  return Layout{W.size(0), W.size(1), groups, opg, rows, (opg + rows - 1) / rows};
}

// rows [o0, o1) of block b, all in group g
MMEFF_INLINE void block_rows(const Layout& s, int64_t b, int64_t* g, int64_t* o0, int64_t* o1) {
  *g = b / s.blocks_per_group;
  *o0 = *g * s.out_per_group + (b % s.blocks_per_group) * s.rows;
  *o1 = std::min((*g + 1) * s.out_per_group, *o0 + s.rows);
}

// Vectors of 8 lanes (one AVX2 register of floats) plus a scalar for the ninth entry, so that the
// 9 vectors of a channel's matrix stay in registers (16-lane vectors padded from 9 spilled on AVX2:
// the former backward was 13x slower than the forward).
template <typename S>
struct Vec8 {
  typedef S type __attribute__((vector_size(8 * sizeof(S))));
};

// Per-channel matrices A[c] (9x9, row r multiplies x[r]) packed for the kernels: rows 0-8 hold
// the first 8 columns (one vector each), row 9 the ninth column of rows 0-7, P[80] = A[8][8].
constexpr int kPacked = 88;
// Forward: A[c] = D[c] transposed (x = W[o, j, :] indexes m), backward: A[c] = D[c].
template <typename S>
void pack_matrices(const S* D, int64_t C, bool transpose, S* P) {
  for (int64_t c = 0; c < C; ++c) {
    const S* d = D + c * 81;
    S* p = P + c * kPacked;
    auto a = [&](int r, int m) { return transpose ? d[m * 9 + r] : d[r * 9 + m]; };
    for (int r = 0; r < 9; ++r)
      for (int m = 0; m < 8; ++m) p[r * 8 + m] = a(r, m);
    for (int r = 0; r < 8; ++r) p[72 + r] = a(r, 8);
    p[80] = a(8, 8);
    for (int k = 81; k < kPacked; ++k) p[k] = 0;
  }
}

// Lane-wise sums of pairs: [a0+a1, a2+a3, b0+b1, b2+b3, a4+a5, a6+a7, b4+b5, b6+b7].
template <typename V>
MMEFF_INLINE V pair_sums(V a, V b) {
  return __builtin_shufflevector(a, b, 0, 2, 8, 10, 4, 6, 12, 14) +
         __builtin_shufflevector(a, b, 1, 3, 9, 11, 5, 7, 13, 15);
}

// y_o = x_o A for the 4 rows x_o = X[i0 + o * stride : +9]: the first 8 columns by broadcasting
// x_o[r] against the matrix rows (kept in registers for the 4 rows), the ninth as the dot product
// x_o[0:8] . A[0:8, 8] summed for the 4 rows together (one pairwise tree) + x_o[8] A[8, 8]: per
// row 9 broadcasts and one vector load, where the former kernel loaded a broadcast and a scalar
// of the matrix per entry and was bound by the load ports (5.5 ns per row in L1, one thread).
template <typename S>
MMEFF_INLINE void four_rows_times_matrix(const S* X, const S* p, S* Y, int64_t i0,
                                         int64_t stride) {
  using V = typename Vec8<S>::type;
  V a[9];
  for (int r = 0; r < 9; ++r) a[r] = load<V>(p + r * 8);
  const V col = load<V>(p + 72);
  const S a88 = p[80];
  V dots[2];
  for (int half = 0; half < 2; ++half) {
    V d[2];
    for (int k = 0; k < 2; ++k) {
      const int64_t i = i0 + (2 * half + k) * stride;
      const S* x = X + i;
      V y = x[0] * a[0];
      for (int r = 1; r < 9; ++r) y += x[r] * a[r];
      store(Y + i, y);
      d[k] = load<V>(x) * col;
    }
    dots[half] = pair_sums(d[0], d[1]);
  }
  const V u = pair_sums(dots[0], dots[1]);  // [s0 s1 s2 s3] of lanes 0-3, then of lanes 4-7
  for (int o = 0; o < 4; ++o) {
    const int64_t i = i0 + o * stride;
    Y[i + 8] = (u[o] + u[o + 4]) + X[i + 8] * a88;
  }
}

template <typename S>
MMEFF_INLINE void row_times_matrix(const S* x, const S* p, S* y) {
  using V = typename Vec8<S>::type;
  V v = x[0] * load<V>(p);
  S last = x[0] * p[72];
  for (int r = 1; r < 9; ++r) {
    v += x[r] * load<V>(p + r * 8);
    if (r < 8) last += x[r] * p[72 + r];
  }
  store(y, v);
  y[8] = last + x[8] * p[80];
}

// Y[o, j, :] = X[o, j, :] A[c] for the rows of blocks [b0, b1): X, Y (O, Cg, 9), P packed A.
template <typename S>
MMEFF_INLINE void rows_times_matrix(const S* X, const S* P, S* Y, int64_t b0, int64_t b1,
                                   const Layout& s) {
  const int64_t cg = s.in_per_group;
  for (int64_t b = b0; b < b1; ++b) {
    int64_t g, o0, o1;
    block_rows(s, b, &g, &o0, &o1);
    for (int64_t j = 0; j < cg; ++j) {
      const S* p = P + (g * cg + j) * kPacked;
      if (o1 - o0 == 4) {
        four_rows_times_matrix(X, p, Y, (o0 * cg + j) * 9, cg * 9);
      } else {
        for (int64_t o = o0; o < o1; ++o) {
          const int64_t i = (o * cg + j) * 9;
          row_times_matrix(X + i, p, Y + i);
        }
      }
    }
  }
}

// Backward: pass 1 is rows_times_matrix(gK, D, gW) (PD: D packed); pass 2 gathers into the gD accumulators of
// channel c (acc8: (C, T, 8) for m < 8, accl: (C, T) for m = 8) the outer products
// gK[o, j, :] W[o, j, :] of the block's rows, re-read from cache.
template <typename S, int T, int M>
MMEFF_INLINE void backward_blocks(const S* gK, const S* W, const S* PD, S* gW, S* acc8, S* accl,
                                  int64_t b0, int64_t b1, const Layout& s) {
  static_assert(T == 9 && M == 9, "8 + 1 lanes");
  using V = typename Vec8<S>::type;
  const int64_t cg = s.in_per_group;
  for (int64_t b = b0; b < b1; ++b) {
    int64_t g, o0, o1;
    block_rows(s, b, &g, &o0, &o1);
    rows_times_matrix(gK, PD, gW, b, b + 1, s);  // pass 1: gW
    for (int64_t j = 0; j < cg; ++j) {  // pass 2: gD
      const int64_t c = g * cg + j;
      S* a8 = acc8 + c * T * 8;
      S* al = accl + c * T;
      V a[T];
      for (int t = 0; t < T; ++t) a[t] = load<V>(a8 + t * 8);
      V col = load<V>(al);
      S col_last = al[8];
      for (int64_t o = o0; o < o1; ++o) {
        const int64_t i = o * cg + j;
        const S* gk = gK + i * T;
        const V w = load<V>(W + i * M);
        const S w_last = W[i * M + 8];
        for (int t = 0; t < T; ++t) a[t] += gk[t] * w;
        col += load<V>(gk) * w_last;
        col_last += gk[8] * w_last;
      }
      for (int t = 0; t < T; ++t) store(a8 + t * 8, a[t]);
      store(al, col);
      al[8] = col_last;
    }
  }
}

MMEFF_MULTIVERSION void forward_3x3(const float* W, const float* P, float* K, int64_t b0, int64_t b1,
                                    const Layout& s) {
  rows_times_matrix<float>(W, P, K, b0, b1, s);
}
MMEFF_MULTIVERSION void forward_3x3(const double* W, const double* P, double* K, int64_t b0, int64_t b1,
                                    const Layout& s) {
  rows_times_matrix<double>(W, P, K, b0, b1, s);
}
MMEFF_MULTIVERSION void backward_3x3(const float* gK, const float* W, const float* PD, float* gW,
                                     float* acc8, float* accl, int64_t b0, int64_t b1, const Layout& s) {
  backward_blocks<float, kTaps, kDMul>(gK, W, PD, gW, acc8, accl, b0, b1, s);
}
MMEFF_MULTIVERSION void backward_3x3(const double* gK, const double* W, const double* PD, double* gW,
                                     double* acc8, double* accl, int64_t b0, int64_t b1, const Layout& s) {
  backward_blocks<double, kTaps, kDMul>(gK, W, PD, gW, acc8, accl, b0, b1, s);
}

void check_inputs(const torch::Tensor& W, const torch::Tensor& D, int64_t groups) {
  TORCH_CHECK(W.device().is_cpu() && D.device().is_cpu(), "doconv compose: CPU tensors expected");
  TORCH_CHECK(W.scalar_type() == D.scalar_type() &&
                  (W.scalar_type() == at::kFloat || W.scalar_type() == at::kDouble),
              "doconv compose: W and D must both be float32 or both float64");
  TORCH_CHECK(W.dim() == 3 && D.dim() == 3 && W.is_contiguous() && D.is_contiguous(),
              "doconv compose: contiguous W (out, in/groups, D_mul) and D (in, kh*kw, D_mul) expected");
  TORCH_CHECK(D.size(1) == kTaps && D.size(2) == kDMul && W.size(2) == kDMul,
              "doconv compose: the fused kernel supports 3x3 kernels with D_mul = 9 only");
  TORCH_CHECK(groups >= 1 && W.size(0) % groups == 0 && D.size(0) == W.size(1) * groups,
              "doconv compose: shapes do not match groups=", groups);
}

}  // namespace

torch::Tensor compose_forward(const torch::Tensor& W, const torch::Tensor& D, int64_t groups) {
  check_inputs(W, D, groups);
  auto P = torch::empty({D.size(0), kPacked}, D.options());
  auto K = torch::empty({W.size(0), W.size(1), kTaps}, W.options());
  const Layout s = layout_of(W, groups, kRowBlock);
  AT_DISPATCH_FLOATING_TYPES(W.scalar_type(), "doconv_compose_forward", [&] {
    const scalar_t* w = W.data_ptr<scalar_t>();
    scalar_t* p = P.data_ptr<scalar_t>();
    pack_matrices(D.data_ptr<scalar_t>(), D.size(0), /*transpose=*/true, p);
    scalar_t* k = K.data_ptr<scalar_t>();
    at::parallel_for(0, groups * s.blocks_per_group, 1,
                     [&](int64_t b0, int64_t b1) { forward_3x3(w, p, k, b0, b1, s); });
  });
  return K;
}

std::vector<torch::Tensor> compose_backward(const torch::Tensor& gK, const torch::Tensor& W,
                                            const torch::Tensor& D, int64_t groups) {
  check_inputs(W, D, groups);
  TORCH_CHECK(gK.is_contiguous() && gK.scalar_type() == W.scalar_type() && gK.dim() == 3 &&
                  gK.size(0) == W.size(0) && gK.size(1) == W.size(1) && gK.size(2) == kTaps,
              "doconv compose: grad must be a contiguous (out, in/groups, kh*kw) tensor of W's dtype");
  auto gW = torch::empty_like(W);
  // more rows per block than the forward: fewer reloads of the gD accumulators (see kBackwardRows)
  const Layout sb = layout_of(W, groups, kBackwardRows);
  const int64_t blocks = groups * sb.blocks_per_group;
  // fixed work split (not the OpenMP thread id), so the gD sums do not depend on scheduling
  const int64_t workers = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), blocks));
  const int64_t per_worker = (blocks + workers - 1) / workers;
  const int64_t C = D.size(0);
  auto acc8 = torch::zeros({workers, C, kTaps, 8}, D.options());
  auto accl = torch::zeros({workers, C, kTaps}, D.options());
  auto P = torch::empty({C, kPacked}, D.options());
  AT_DISPATCH_FLOATING_TYPES(W.scalar_type(), "doconv_compose_backward", [&] {
    const scalar_t* g = gK.data_ptr<scalar_t>();
    const scalar_t* w = W.data_ptr<scalar_t>();
    scalar_t* pd = P.data_ptr<scalar_t>();
    pack_matrices(D.data_ptr<scalar_t>(), C, /*transpose=*/false, pd);
    scalar_t* gw = gW.data_ptr<scalar_t>();
    scalar_t* a8 = acc8.data_ptr<scalar_t>();
    scalar_t* al = accl.data_ptr<scalar_t>();
    at::parallel_for(0, workers, 1, [&](int64_t w0, int64_t w1) {
      for (int64_t k = w0; k < w1; ++k)
        backward_3x3(g, w, pd, gw, a8 + k * C * kTaps * 8, al + k * C * kTaps, k * per_worker,
                     std::min(blocks, (k + 1) * per_worker), sb);
    });
  });
  auto gD = torch::cat({acc8.sum(0), accl.sum(0).unsqueeze(2)}, 2);
  return {gW, gD};
}

}  // namespace mmeff
