// Fused CPU kernels for the DO-Conv kernel composition (forward and backward).
//
//   K[o, j, t]  = sum_m W[o, j, m] * D[c, t, m]        c = (o / (O / G)) * Cg + j
//   gW[o, j, m] = sum_t gK[o, j, t] * D[c, t, m]
//   gD[c, t, m] = sum_o gK[o, j, t] * W[o, j, m]
//
// W: (O, Cg, M), D: (C, T, M) (the full depthwise kernel D' + I), K and gK: (O, Cg, T), all
// contiguous. On a CPU the composition is memory-bound (about 2 flops per byte), so what matters
// is touching every byte of W, K, gK and gW exactly once, in storage order. The batched-matmul
// formulation needs the input channel as the batch dimension, i.e. transposed copies of the
// kernel-sized tensors in both directions (about twice the memory traffic, measured).
//
// Both kernels walk the output channels in blocks of rows (kRowBlock forward, kBackwardRows
// backward) and, within a block, the input channels in storage order; the per-channel 9x9 matrix
// stays in registers (8-lane vectors + a scalar) for the rows of the block. Compiled for AVX-512,
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

// Y[o, j, :] = X[o, j, :] A[c] for the rows of blocks [b0, b1): X, Y (O, Cg, 9), A (C, 9, 9).
// Forward: X = W, A = D transposed over (t, m), Y = K. Backward pass 1: X = gK, A = D, Y = gW.
template <typename S>
MMEFF_INLINE void rows_times_matrix(const S* X, const S* A, S* Y, int64_t b0, int64_t b1,
                                   const Layout& s) {
  using V = typename Vec8<S>::type;
  const int64_t cg = s.in_per_group;
  for (int64_t b = b0; b < b1; ++b) {
    int64_t g, o0, o1;
    block_rows(s, b, &g, &o0, &o1);
    for (int64_t j = 0; j < cg; ++j) {
      const S* ac = A + (g * cg + j) * 81;
      V a[9];
      S al[9];
      for (int r = 0; r < 9; ++r) { a[r] = load<V>(ac + r * 9); al[r] = ac[r * 9 + 8]; }
      for (int64_t o = o0; o < o1; ++o) {
        const int64_t i = (o * cg + j) * 9;
        const S* x = X + i;
        V y = x[0] * a[0];
        S last = x[0] * al[0];
        for (int r = 1; r < 9; ++r) { y += x[r] * a[r]; last += x[r] * al[r]; }
        store(Y + i, y);
        Y[i + 8] = last;
      }
    }
  }
}

// Backward: pass 1 is rows_times_matrix(gK, D, gW); pass 2 gathers into the gD accumulators of
// channel c (acc8: (C, T, 8) for m < 8, accl: (C, T) for m = 8) the outer products
// gK[o, j, :] W[o, j, :] of the block's rows, re-read from cache.
template <typename S, int T, int M>
MMEFF_INLINE void backward_blocks(const S* gK, const S* W, const S* D, S* gW, S* acc8, S* accl,
                                  int64_t b0, int64_t b1, const Layout& s) {
  static_assert(T == 9 && M == 9, "8 + 1 lanes");
  using V = typename Vec8<S>::type;
  const int64_t cg = s.in_per_group;
  for (int64_t b = b0; b < b1; ++b) {
    int64_t g, o0, o1;
    block_rows(s, b, &g, &o0, &o1);
    rows_times_matrix(gK, D, gW, b, b + 1, s);  // pass 1: gW
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

MMEFF_MULTIVERSION void forward_3x3(const float* W, const float* Dt, float* K, int64_t b0, int64_t b1,
                                    const Layout& s) {
  rows_times_matrix<float>(W, Dt, K, b0, b1, s);
}
MMEFF_MULTIVERSION void forward_3x3(const double* W, const double* Dt, double* K, int64_t b0, int64_t b1,
                                    const Layout& s) {
  rows_times_matrix<double>(W, Dt, K, b0, b1, s);
}
MMEFF_MULTIVERSION void backward_3x3(const float* gK, const float* W, const float* D, float* gW, float* acc8,
                                     float* accl, int64_t b0, int64_t b1, const Layout& s) {
  backward_blocks<float, kTaps, kDMul>(gK, W, D, gW, acc8, accl, b0, b1, s);
}
MMEFF_MULTIVERSION void backward_3x3(const double* gK, const double* W, const double* D, double* gW,
                                     double* acc8, double* accl, int64_t b0, int64_t b1, const Layout& s) {
  backward_blocks<double, kTaps, kDMul>(gK, W, D, gW, acc8, accl, b0, b1, s);
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
  auto Dt = D.transpose(1, 2).contiguous();
  auto K = torch::empty({W.size(0), W.size(1), kTaps}, W.options());
  const Layout s = layout_of(W, groups, kRowBlock);
  AT_DISPATCH_FLOATING_TYPES(W.scalar_type(), "doconv_compose_forward", [&] {
    const scalar_t* w = W.data_ptr<scalar_t>();
    const scalar_t* dt = Dt.data_ptr<scalar_t>();
    scalar_t* k = K.data_ptr<scalar_t>();
    at::parallel_for(0, groups * s.blocks_per_group, 1,
                     [&](int64_t b0, int64_t b1) { forward_3x3(w, dt, k, b0, b1, s); });
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
  AT_DISPATCH_FLOATING_TYPES(W.scalar_type(), "doconv_compose_backward", [&] {
    const scalar_t* g = gK.data_ptr<scalar_t>();
    const scalar_t* w = W.data_ptr<scalar_t>();
    const scalar_t* d = D.data_ptr<scalar_t>();
    scalar_t* gw = gW.data_ptr<scalar_t>();
    scalar_t* a8 = acc8.data_ptr<scalar_t>();
    scalar_t* al = accl.data_ptr<scalar_t>();
    at::parallel_for(0, workers, 1, [&](int64_t w0, int64_t w1) {
      for (int64_t k = w0; k < w1; ++k)
        backward_3x3(g, w, d, gw, a8 + k * C * kTaps * 8, al + k * C * kTaps, k * per_worker,
                     std::min(blocks, (k + 1) * per_worker), sb);
    });
  });
  auto gD = torch::cat({acc8.sum(0), accl.sum(0).unsqueeze(2)}, 2);
  return {gW, gD};
}

}  // namespace mmeff
