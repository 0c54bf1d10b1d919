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
// Both kernels walk the output channels in blocks of kRowBlock rows and, within a block, the input
// channels in storage order; the per-channel D (9 vectors) stays in registers for the rows of the
// block. A vector holds kLanes values (t or m padded with zeros); compiled for AVX-512, AVX2 and
// baseline x86-64 and picked at load time (GCC function multi-versioning).
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

namespace {

constexpr int kLanes = 16;
constexpr int64_t kRowBlock = 4;
constexpr int kTaps = 9;   // 3x3 kernels
constexpr int kDMul = 9;   // D_mul = kh * kw

template <typename S>
struct Vec {
  typedef S type __attribute__((vector_size(kLanes * sizeof(S))));
};

template <typename V, typename S>
MMEFF_INLINE V load(const S* p) { V v; std::memcpy(&v, p, sizeof(V)); return v; }
template <typename V, typename S>
MMEFF_INLINE V load_n(const S* p, int n) { V v = {}; std::memcpy(&v, p, n * sizeof(S)); return v; }
template <typename V, typename S>
MMEFF_INLINE void store(S* p, const V& v) { std::memcpy(p, &v, sizeof(V)); }

struct Layout {
  int64_t out_channels, in_per_group, groups, out_per_group, blocks_per_group;
};

Layout layout_of(const torch::Tensor& W, int64_t groups) {
  const int64_t opg = W.size(0) / groups;
  return Layout{W.size(0), W.size(1), groups, opg, (opg + kRowBlock - 1) / kRowBlock};
}

// rows [o0, o1) of block b, all in group g
MMEFF_INLINE void block_rows(const Layout& s, int64_t b, int64_t* g, int64_t* o0, int64_t* o1) {
  *g = b / s.blocks_per_group;
  *o0 = *g * s.out_per_group + (b % s.blocks_per_group) * kRowBlock;
  *o1 = std::min((*g + 1) * s.out_per_group, *o0 + kRowBlock);
}

// Dt: (C, M, kLanes) = D transposed over (t, m), zero padded in t.
template <typename S, int T, int M>
MMEFF_INLINE void forward_blocks(const S* W, const S* Dt, S* K, int64_t b0, int64_t b1, const Layout& s) {
  using V = typename Vec<S>::type;
  const int64_t cg = s.in_per_group;
  for (int64_t b = b0; b < b1; ++b) {
    int64_t g, o0, o1;
    block_rows(s, b, &g, &o0, &o1);
    for (int64_t j = 0; j < cg; ++j) {
      const S* dt = Dt + (g * cg + j) * M * kLanes;
      V d[M];
      for (int m = 0; m < M; ++m) d[m] = load<V>(dt + m * kLanes);
      for (int64_t o = o0; o < o1; ++o) {
        const S* w = W + (o * cg + j) * M;
        V acc = {};
        for (int m = 0; m < M; ++m) acc += w[m] * d[m];
        S* k = K + (o * cg + j) * T;
        // a full-width store spills into channel j + 1 of the same row, which is written next
        if (j + 1 < cg) store(k, acc);
        else std::memcpy(k, &acc, T * sizeof(S));
      }
    }
  }
}

// Dp: (C, T, kLanes) = D zero padded in m; acc: this worker's (C, T, kLanes) partial sums of gD.
template <typename S, int T, int M>
MMEFF_INLINE void backward_blocks(const S* gK, const S* W, const S* Dp, S* gW, S* acc, int64_t b0, int64_t b1,
                                  const Layout& s) {
  using V = typename Vec<S>::type;
  const int64_t cg = s.in_per_group;
  const int64_t w_numel = s.out_channels * cg * M;
  for (int64_t b = b0; b < b1; ++b) {
    int64_t g, o0, o1;
    block_rows(s, b, &g, &o0, &o1);
    for (int64_t j = 0; j < cg; ++j) {
      const int64_t c = g * cg + j;
      const S* dp = Dp + c * T * kLanes;
      S* ap = acc + c * T * kLanes;
      V d[T], a[T];
      for (int t = 0; t < T; ++t) { d[t] = load<V>(dp + t * kLanes); a[t] = load<V>(ap + t * kLanes); }
      for (int64_t o = o0; o < o1; ++o) {
        const int64_t i = o * cg + j;
        const S* gk = gK + i * T;
        // lanes >= M of a full-width load hold the next channel's W; they only reach lanes of a[]
        // that are never stored into gD
        const V w = (i * M + kLanes <= w_numel) ? load<V>(W + i * M) : load_n<V>(W + i * M, M);
        V gw = {};
        for (int t = 0; t < T; ++t) {
          const S gt = gk[t];
          gw += gt * d[t];
          a[t] += gt * w;
        }
        if (j + 1 < cg) store(gW + i * M, gw);
        else std::memcpy(gW + i * M, &gw, M * sizeof(S));
      }
      for (int t = 0; t < T; ++t) store(ap + t * kLanes, a[t]);
    }
  }
}

MMEFF_MULTIVERSION void forward_3x3(const float* W, const float* Dt, float* K, int64_t b0, int64_t b1,
                                    const Layout& s) {
  forward_blocks<float, kTaps, kDMul>(W, Dt, K, b0, b1, s);
}
MMEFF_MULTIVERSION void forward_3x3(const double* W, const double* Dt, double* K, int64_t b0, int64_t b1,
                                    const Layout& s) {
  forward_blocks<double, kTaps, kDMul>(W, Dt, K, b0, b1, s);
}
MMEFF_MULTIVERSION void backward_3x3(const float* gK, const float* W, const float* Dp, float* gW, float* acc,
                                     int64_t b0, int64_t b1, const Layout& s) {
  backward_blocks<float, kTaps, kDMul>(gK, W, Dp, gW, acc, b0, b1, s);
}
MMEFF_MULTIVERSION void backward_3x3(const double* gK, const double* W, const double* Dp, double* gW,
                                     double* acc, int64_t b0, int64_t b1, const Layout& s) {
  backward_blocks<double, kTaps, kDMul>(gK, W, Dp, gW, acc, b0, b1, s);
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
  auto Dt = torch::zeros({D.size(0), kDMul, kLanes}, D.options());
  Dt.narrow(2, 0, kTaps).copy_(D.transpose(1, 2));
  auto K = torch::empty({W.size(0), W.size(1), kTaps}, W.options());
  const Layout s = layout_of(W, groups);
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
  auto Dp = torch::zeros({D.size(0), kTaps, kLanes}, D.options());
  Dp.narrow(2, 0, kDMul).copy_(D);
  auto gW = torch::empty_like(W);
  const Layout s = layout_of(W, groups);
  const int64_t blocks = groups * s.blocks_per_group;
  // fixed work split (not the OpenMP thread id), so the gD sums do not depend on scheduling
  const int64_t workers = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), blocks));
  const int64_t per_worker = (blocks + workers - 1) / workers;
  auto acc = torch::zeros({workers, D.size(0), kTaps, kLanes}, D.options());
  AT_DISPATCH_FLOATING_TYPES(W.scalar_type(), "doconv_compose_backward", [&] {
    const scalar_t* g = gK.data_ptr<scalar_t>();
    const scalar_t* w = W.data_ptr<scalar_t>();
    const scalar_t* dp = Dp.data_ptr<scalar_t>();
    scalar_t* gw = gW.data_ptr<scalar_t>();
    scalar_t* a = acc.data_ptr<scalar_t>();
    const int64_t acc_numel = D.size(0) * kTaps * kLanes;
    at::parallel_for(0, workers, 1, [&](int64_t w0, int64_t w1) {
      for (int64_t k = w0; k < w1; ++k)
        backward_3x3(g, w, dp, gw, a + k * acc_numel, k * per_worker, std::min(blocks, (k + 1) * per_worker), s);
    });
  });
  auto gD = acc.sum(0).narrow(2, 0, kDMul).contiguous();
  return {gW, gD};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "mm_efficientconv compiled ops (CPU)";
  m.def("doconv_compose_forward", &compose_forward, "DO-Conv kernel composition (3x3, D_mul=9)");
  m.def("doconv_compose_backward", &compose_backward, "Gradients of the DO-Conv kernel composition");
}
