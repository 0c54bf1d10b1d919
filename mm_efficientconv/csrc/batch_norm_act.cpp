// Fused training-mode batch normalisation + activation for float32 CPU tensors.
//
//   y = (x - mean) * invstd * weight + bias      (batch statistics, biased variance)
//   z = act(y),  act in {identity, ReLU, SiLU}
//
// Between two convolutions of a mobile network the normalisation and the activation are
// memory-bound: stock PyTorch reads the input three times and writes it twice in the forward
// (statistics, normalise, activate), keeps the normalised tensor for the activation's backward,
// and reads/writes five more tensors in the backward. Here the forward reads x twice and writes z
// once; only x is kept; the backward recomputes y from x and reads x and dz twice, writing dx once.
//
// NCHW tensors are walked plane by plane (one channel per task), channels-last tensors row by
// row (all channels of a pixel, per-thread channel accumulators). Statistics and the backward
// sums accumulate in double, shifted by each channel's first value. The work split depends on
// the tensor's shape and the thread count only (not on scheduling). setup.py compiles with
// -fno-trapping-math, which lets GCC turn the selects below (ReLU, the sigmoid's sign) into vector
// blends; every loop is compiled for AVX2 + FMA and for baseline x86-64 (MMEFF_DISPATCH).
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#define MMEFF_INLINE __attribute__((always_inline)) static inline

// Every loop is compiled twice, for AVX2 + FMA and for baseline x86-64, and picked per call on
// the CPU's features (GCC's target_clones has no AVX2 + FMA clone that AMD CPUs would select; the
// FMA halves the cost of the SiLU's exponential).
#if defined(__GNUC__) && defined(__x86_64__)
#define MMEFF_FAST_TARGET __attribute__((target("avx2,fma")))
static bool fast_cpu() {
  static const bool fast = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return fast;
}
#else
#define MMEFF_FAST_TARGET
static bool fast_cpu() { return false; }
#endif
#define MMEFF_DISPATCH(name, params, args)                         \
  MMEFF_FAST_TARGET void name##_fast params { name##_any args; } \
  void name##_base params { name##_any args; }                    \
  void name params {                                              \
    if (fast_cpu())                                               \
      name##_fast args;                                           \
    else                                                          \
      name##_base args;                                           \
  }

namespace mmeff {
namespace {

enum Act : int64_t { kIdentity = 0, kReLU = 1, kSiLU = 2 };

// exp(-a) for a in [0, 87]: range reduction by ln 2 (rounded with the 1.5 * 2^23 trick, exact in
// round-to-nearest) and Cephes' degree-6 polynomial of expf (relative error ~1e-7); plain
// arithmetic so that the loops around it vectorise.
MMEFF_INLINE float exp_neg(float a) {
  const float x = -a;
  const float magic = 12582912.0f;  // 1.5 * 2^23
  const float n = (x * 1.44269504088896341f + magic) - magic;
  float r = x - n * 0.693359375f;  // ln 2 split in two parts (Cody-Waite)
  r = r + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

constexpr int32_t kBits87 = 0x42ae0000;  // 87.0f

// sigmoid(y) from t = exp(-|y|) in (0, 1], which cannot overflow; |y| is clamped to 87 with an
// integer min of its bits. (A float compare lets GCC if-convert the clamp and evaluate the
// clamped branch's constants in every lane: y * sigmoid(-87) is a denormal for |y| < 0.7, and
// denormals made the whole loop 2-3x slower on the AMD EPYC this was measured on.) NaN gives a
// finite value here and NaN in the callers, which multiply by y.
MMEFF_INLINE float sigmoid(float y) {
  float a = std::fabs(y);
  int32_t bits;
  std::memcpy(&bits, &a, sizeof(bits));
  bits = bits < kBits87 ? bits : kBits87;
  std::memcpy(&a, &bits, sizeof(a));
  const float t = exp_neg(a);
  const float s = 1.0f / (1.0f + t);
  return y < 0.0f ? t * s : s;
}

// NaN propagates as in PyTorch: relu(NaN) = NaN, and ReLU's gradient at NaN is passed through
// (threshold_backward masks only where the output is <= 0).
template <int A>
MMEFF_INLINE float activate(float y) {
  if (A == kReLU) return y < 0.0f ? 0.0f : y;
  if (A == kSiLU) return y * sigmoid(y);
  return y;
}

// d act(y) / dy
template <int A>
MMEFF_INLINE float act_grad(float y) {
  if (A == kReLU) return y <= 0.0f ? 0.0f : 1.0f;
  if (A == kSiLU) {
    const float s = sigmoid(y);
    return s * (1.0f + y * (1.0f - s));
  }
  return 1.0f;
}

struct Shape {
  int64_t n, c, hw;  // batch, channels, pixels per plane
  bool channels_last;
  int64_t count() const { return n * hw; }  // values per channel
};

// Row ranges of the channels-last walk: a fixed split into `parts` chunks.
MMEFF_INLINE void chunk(int64_t rows, int64_t parts, int64_t i, int64_t* r0, int64_t* r1) {
  *r0 = rows * i / parts;
  *r1 = rows * (i + 1) / parts;
}

int64_t num_parts(int64_t rows) {
  return std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), rows / 64));
}

// ----------------------------------------------------------------------------- statistics
// Channels-last sums: float partial sums over blocks of kFlushRows rows (8-lane vectors, the
// accumulators stay in L1), added to the double sums after each block.
constexpr int64_t kFlushRows = 16;

MMEFF_INLINE void sums_cl_rows_any(const float* __restrict__ x, const float* __restrict__ shift,
                                   double* __restrict__ s1, double* __restrict__ s2, int64_t r0,
                                   int64_t r1, int64_t C) {
  std::vector<float> acc(2 * C);
  float* __restrict__ a1 = acc.data();
  float* __restrict__ a2 = acc.data() + C;
  for (int64_t b = r0; b < r1; b += kFlushRows) {
    std::fill(acc.begin(), acc.end(), 0.0f);
    for (int64_t r = b; r < std::min(r1, b + kFlushRows); ++r) {
      const float* xr = x + r * C;
      for (int64_t c = 0; c < C; ++c) {
        const float d = xr[c] - shift[c];
        a1[c] += d;
        a2[c] += d * d;
      }
    }
    for (int64_t c = 0; c < C; ++c) {
      s1[c] += a1[c];
      s2[c] += a2[c];
    }
  }
}
MMEFF_DISPATCH(sums_cl_rows, (const float* x, const float* shift, double* s1, double* s2, int64_t r0, int64_t r1, int64_t C), (x, shift, s1, s2, r0, r1, C))

MMEFF_INLINE void sums_plane_any(const float* __restrict__ x, float shift, int64_t hw, double* __restrict__ s1, double* __restrict__ s2) {
  double a = 0.0, b = 0.0;
#pragma omp simd reduction(+ : a, b)
  for (int64_t i = 0; i < hw; ++i) {
    const double d = static_cast<double>(x[i] - shift);
    a += d;
    b += d * d;
  }
  *s1 += a;
  *s2 += b;
}
MMEFF_DISPATCH(sums_plane, (const float* x, float shift, int64_t hw, double* s1, double* s2), (x, shift, hw, s1, s2))

// per-channel sums of (x - shift) and (x - shift)^2, shift = the channel's first value
void channel_sums(const float* x, const Shape& s, std::vector<float>& shift,
                  std::vector<double>& s1, std::vector<double>& s2) {
  const int64_t C = s.c;
  shift.assign(C, 0.0f);
  s1.assign(C, 0.0);
  s2.assign(C, 0.0);
  if (s.channels_last) {
    std::copy(x, x + C, shift.begin());
    const int64_t rows = s.count(), parts = num_parts(rows);
    std::vector<double> acc(2 * parts * C, 0.0);
    at::parallel_for(0, parts, 1, [&](int64_t p0, int64_t p1) {
      for (int64_t p = p0; p < p1; ++p) {
        int64_t r0, r1;
        chunk(rows, parts, p, &r0, &r1);
        sums_cl_rows(x, shift.data(), acc.data() + 2 * p * C, acc.data() + (2 * p + 1) * C, r0,
                     r1, C);
      }
    });
    for (int64_t p = 0; p < parts; ++p)
      for (int64_t c = 0; c < C; ++c) {
        s1[c] += acc[2 * p * C + c];
        s2[c] += acc[(2 * p + 1) * C + c];
      }
  } else {
    for (int64_t c = 0; c < C; ++c) shift[c] = x[c * s.hw];
    at::parallel_for(0, C, 1, [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c)
        for (int64_t b = 0; b < s.n; ++b)
          sums_plane(x + (b * C + c) * s.hw, shift[c], s.hw, &s1[c], &s2[c]);
    });
  }
}

// ------------------------------------------------------------------------------- forward
template <int A>
MMEFF_INLINE void transform_rows_impl(const float* __restrict__ x, float* __restrict__ z, const float* __restrict__ scale,
                                       const float* __restrict__ offset, int64_t r0, int64_t r1, int64_t C) {
  for (int64_t r = r0; r < r1; ++r)
    for (int64_t c = 0; c < C; ++c)
      z[r * C + c] = activate<A>(x[r * C + c] * scale[c] + offset[c]);
}

template <int A>
MMEFF_INLINE void transform_plane_impl(const float* __restrict__ x, float* __restrict__ z, float scale, float offset,
                                        int64_t len) {
  for (int64_t i = 0; i < len; ++i) z[i] = activate<A>(x[i] * scale + offset);
}

// ------------------------------------------------------------------------------ backward
// sums of g = dz * act'(y) and of g * (x - mean)
template <int A>
MMEFF_INLINE void grad_sums_cl_rows_impl(const float* __restrict__ dz, const float* __restrict__ x,
                                         const float* __restrict__ scale,
                                         const float* __restrict__ offset,
                                         const float* __restrict__ mean, double* __restrict__ sg,
                                         double* __restrict__ sgx, int64_t r0, int64_t r1,
                                         int64_t C) {
  std::vector<float> acc(2 * C);
  float* __restrict__ ag = acc.data();
  float* __restrict__ agx = acc.data() + C;
  for (int64_t b = r0; b < r1; b += kFlushRows) {
    std::fill(acc.begin(), acc.end(), 0.0f);
    for (int64_t r = b; r < std::min(r1, b + kFlushRows); ++r) {
      const float* xr = x + r * C;
      const float* dr = dz + r * C;
      for (int64_t c = 0; c < C; ++c) {
        const float g = dr[c] * act_grad<A>(xr[c] * scale[c] + offset[c]);
        ag[c] += g;
        agx[c] += g * (xr[c] - mean[c]);
      }
    }
    for (int64_t c = 0; c < C; ++c) {
      sg[c] += ag[c];
      sgx[c] += agx[c];
    }
  }
}

template <int A>
MMEFF_INLINE void grad_sums_plane_impl(const float* __restrict__ dz, const float* __restrict__ x, float scale,
                                        float offset, float mean, int64_t hw, double* __restrict__ sg,
                                        double* __restrict__ sgx) {
  double a = 0.0, b = 0.0;
#pragma omp simd reduction(+ : a, b)
  for (int64_t i = 0; i < hw; ++i) {
    const float g = dz[i] * act_grad<A>(x[i] * scale + offset);
    a += static_cast<double>(g);
    b += static_cast<double>(g * (x[i] - mean));
  }
  *sg += a;
  *sgx += b;
}

// dx = k_g * g + k_0 - k_x * (x - mean): x - mean first, as stock BatchNorm's backward (k_x * x -
// k_x * mean cancels when |mean| >> std; that lost ~10x more gradient precision than stock)
template <int A>
MMEFF_INLINE void grad_input_rows_impl(const float* __restrict__ dz, const float* __restrict__ x, float* __restrict__ dx,
                                        const float* __restrict__ scale, const float* __restrict__ offset, const float* __restrict__ kg,
                                        const float* __restrict__ k0, const float* __restrict__ kx, const float* __restrict__ mean, int64_t r0, int64_t r1,
                                        int64_t C) {
  for (int64_t r = r0; r < r1; ++r)
    for (int64_t c = 0; c < C; ++c) {
      const int64_t i = r * C + c;
      const float g = dz[i] * act_grad<A>(x[i] * scale[c] + offset[c]);
      dx[i] = kg[c] * g + k0[c] - kx[c] * (x[i] - mean[c]);
    }
}

template <int A>
MMEFF_INLINE void grad_input_plane_impl(const float* __restrict__ dz, const float* __restrict__ x, float* __restrict__ dx, float scale,
                                         float offset, float kg, float k0, float kx, float mean,
                                         int64_t len) {
  for (int64_t i = 0; i < len; ++i) {
    const float g = dz[i] * act_grad<A>(x[i] * scale + offset);
    dx[i] = kg * g + k0 - kx * (x[i] - mean);
  }
}

// One multiversioned function per loop; the activation is dispatched outside the loop.
#define MMEFF_SWITCH_ACT(act)          \
  switch (act) {                       \
    case kReLU: MMEFF_CALL(kReLU); break; \
    case kSiLU: MMEFF_CALL(kSiLU); break; \
    default: MMEFF_CALL(kIdentity);    \
  }

MMEFF_INLINE void transform_rows_any(int64_t act, const float* __restrict__ x, float* __restrict__ z, const float* __restrict__ scale,
                                       const float* __restrict__ offset, int64_t r0, int64_t r1, int64_t C) {
#define MMEFF_CALL(A) transform_rows_impl<A>(x, z, scale, offset, r0, r1, C)
  MMEFF_SWITCH_ACT(act)
#undef MMEFF_CALL
}
MMEFF_DISPATCH(transform_rows, (int64_t act, const float* x, float* z, const float* scale, const float* offset, int64_t r0, int64_t r1, int64_t C), (act, x, z, scale, offset, r0, r1, C))

MMEFF_INLINE void transform_plane_any(int64_t act, const float* __restrict__ x, float* __restrict__ z, float scale,
                                        float offset, int64_t len) {
#define MMEFF_CALL(A) transform_plane_impl<A>(x, z, scale, offset, len)
  MMEFF_SWITCH_ACT(act)
#undef MMEFF_CALL
}
MMEFF_DISPATCH(transform_plane, (int64_t act, const float* x, float* z, float scale, float offset, int64_t len), (act, x, z, scale, offset, len))

MMEFF_INLINE void grad_sums_cl_rows_any(int64_t act, const float* __restrict__ dz, const float* __restrict__ x,
                                          const float* __restrict__ scale, const float* __restrict__ offset,
                                          const float* __restrict__ mean, double* __restrict__ sg, double* __restrict__ sgx, int64_t r0,
                                          int64_t r1, int64_t C) {
#define MMEFF_CALL(A) grad_sums_cl_rows_impl<A>(dz, x, scale, offset, mean, sg, sgx, r0, r1, C)
  MMEFF_SWITCH_ACT(act)
#undef MMEFF_CALL
}
MMEFF_DISPATCH(grad_sums_cl_rows, (int64_t act, const float* dz, const float* x, const float* scale, const float* offset, const float* mean, double* sg, double* sgx, int64_t r0, int64_t r1, int64_t C), (act, dz, x, scale, offset, mean, sg, sgx, r0, r1, C))

MMEFF_INLINE void grad_sums_plane_any(int64_t act, const float* __restrict__ dz, const float* __restrict__ x, float scale,
                                        float offset, float mean, int64_t hw, double* __restrict__ sg,
                                        double* __restrict__ sgx) {
#define MMEFF_CALL(A) grad_sums_plane_impl<A>(dz, x, scale, offset, mean, hw, sg, sgx)
  MMEFF_SWITCH_ACT(act)
#undef MMEFF_CALL
}
MMEFF_DISPATCH(grad_sums_plane, (int64_t act, const float* dz, const float* x, float scale, float offset, float mean, int64_t hw, double* sg, double* sgx), (act, dz, x, scale, offset, mean, hw, sg, sgx))

MMEFF_INLINE void grad_input_rows_any(int64_t act, const float* __restrict__ dz, const float* __restrict__ x, float* __restrict__ dx,
                                        const float* __restrict__ scale, const float* __restrict__ offset, const float* __restrict__ kg,
                                        const float* __restrict__ k0, const float* __restrict__ kx, const float* __restrict__ mean, int64_t r0, int64_t r1,
                                        int64_t C) {
#define MMEFF_CALL(A) grad_input_rows_impl<A>(dz, x, dx, scale, offset, kg, k0, kx, mean, r0, r1, C)
  MMEFF_SWITCH_ACT(act)
#undef MMEFF_CALL
}
MMEFF_DISPATCH(grad_input_rows, (int64_t act, const float* dz, const float* x, float* dx, const float* scale, const float* offset, const float* kg, const float* k0, const float* kx, const float* mean, int64_t r0, int64_t r1, int64_t C), (act, dz, x, dx, scale, offset, kg, k0, kx, mean, r0, r1, C))

MMEFF_INLINE void grad_input_plane_any(int64_t act, const float* __restrict__ dz, const float* __restrict__ x, float* __restrict__ dx,
                                         float scale, float offset, float kg, float k0, float kx, float mean,
                                         int64_t len) {
#define MMEFF_CALL(A) grad_input_plane_impl<A>(dz, x, dx, scale, offset, kg, k0, kx, mean, len)
  MMEFF_SWITCH_ACT(act)
#undef MMEFF_CALL
}
MMEFF_DISPATCH(grad_input_plane, (int64_t act, const float* dz, const float* x, float* dx, float scale, float offset, float kg, float k0, float kx, float mean, int64_t len), (act, dz, x, dx, scale, offset, kg, k0, kx, mean, len))

void transform(int64_t act, const float* x, float* z, const Shape& s, const std::vector<float>& scale,
               const std::vector<float>& offset) {
  const int64_t C = s.c;
  if (s.channels_last) {
    at::parallel_for(0, s.count(), 256, [&](int64_t r0, int64_t r1) {
      transform_rows(act, x, z, scale.data(), offset.data(), r0, r1, C);
    });
  } else {
    at::parallel_for(0, s.n * C, 1, [&](int64_t p0, int64_t p1) {
      for (int64_t p = p0; p < p1; ++p)
        transform_plane(act, x + p * s.hw, z + p * s.hw, scale[p % C], offset[p % C], s.hw);
    });
  }
}

void backward(int64_t act, const float* dz, const float* x, float* dx, const Shape& s,
              const std::vector<float>& scale, const std::vector<float>& offset,
              const float* mean, const float* invstd, const float* weight, double* sg,
              double* sgx, bool need_input_grad) {
  const int64_t C = s.c;
  if (s.channels_last) {
    const int64_t rows = s.count(), parts = num_parts(rows);
    std::vector<double> acc(2 * parts * C, 0.0);
    at::parallel_for(0, parts, 1, [&](int64_t p0, int64_t p1) {
      for (int64_t p = p0; p < p1; ++p) {
        int64_t r0, r1;
        chunk(rows, parts, p, &r0, &r1);
        grad_sums_cl_rows(act, dz, x, scale.data(), offset.data(), mean,
                             acc.data() + 2 * p * C, acc.data() + (2 * p + 1) * C, r0, r1, C);
      }
    });
    for (int64_t p = 0; p < parts; ++p)
      for (int64_t c = 0; c < C; ++c) {
        sg[c] += acc[2 * p * C + c];
        sgx[c] += acc[(2 * p + 1) * C + c];
      }
  } else {
    at::parallel_for(0, C, 1, [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c)
        for (int64_t b = 0; b < s.n; ++b) {
          const int64_t off = (b * C + c) * s.hw;
          grad_sums_plane(act, dz + off, x + off, scale[c], offset[c], mean[c], s.hw, &sg[c],
                             &sgx[c]);
        }
    });
  }
  if (!need_input_grad) return;
  // dx = w * invstd * (g - sum(g) / m - (x - mean) * invstd^2 * sum(g * (x - mean)) / m)
  std::vector<float> kg(C), k0(C), kx(C);
  const double m = static_cast<double>(s.count());
  for (int64_t c = 0; c < C; ++c) {
    const double a = static_cast<double>(weight[c]) * invstd[c];
    const double q = static_cast<double>(invstd[c]) * invstd[c] * sgx[c] / m;
    kg[c] = static_cast<float>(a);
    kx[c] = static_cast<float>(a * q);
    k0[c] = static_cast<float>(-a * sg[c] / m);
  }
  if (s.channels_last) {
    at::parallel_for(0, s.count(), 256, [&](int64_t r0, int64_t r1) {
      grad_input_rows(act, dz, x, dx, scale.data(), offset.data(), kg.data(), k0.data(),
                      kx.data(), mean, r0, r1, C);
    });
  } else {
    at::parallel_for(0, s.n * C, 1, [&](int64_t p0, int64_t p1) {
      for (int64_t p = p0; p < p1; ++p) {
        const int64_t c = p % C;
        grad_input_plane(act, dz + p * s.hw, x + p * s.hw, dx + p * s.hw, scale[c], offset[c],
                            kg[c], k0[c], kx[c], mean[c], s.hw);
      }
    });
  }
}

// ---------------------------------------------------------------------------- interface
Shape check_input(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias,
                  int64_t act) {
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == at::kFloat && x.dim() == 4,
              "batch_norm_act: a 4-D float32 CPU input expected");
  const bool cl = !x.is_contiguous() && x.is_contiguous(at::MemoryFormat::ChannelsLast);
  TORCH_CHECK(x.is_contiguous() || cl,
              "batch_norm_act: the input must be contiguous (NCHW) or channels-last");
  const int64_t C = x.size(1);
  for (const auto* t : {&weight, &bias})
    TORCH_CHECK(t->is_contiguous() && t->scalar_type() == at::kFloat && t->dim() == 1 &&
                    t->size(0) == C,
                "batch_norm_act: weight and bias must be contiguous float32 of shape (C,)");
  TORCH_CHECK(act == kIdentity || act == kReLU || act == kSiLU,
              "batch_norm_act: act must be 0 (identity), 1 (ReLU) or 2 (SiLU), got ", act);
  Shape s{x.size(0), C, x.size(2) * x.size(3), cl};
  TORCH_CHECK(s.count() > 1, "batch_norm_act: more than one value per channel expected");
  return s;
}

void scale_offset(const float* mean, const float* invstd, const float* weight, const float* bias,
                  int64_t C, std::vector<float>& scale, std::vector<float>& offset) {
  scale.resize(C);
  offset.resize(C);
  for (int64_t c = 0; c < C; ++c) {
    scale[c] = weight[c] * invstd[c];
    offset[c] = bias[c] - mean[c] * scale[c];
  }
}

}  // namespace

// Returns (z, mean, biased variance, invstd); the running statistics are the caller's.
std::vector<torch::Tensor> batch_norm_act_forward(const torch::Tensor& x,
                                                  const torch::Tensor& weight,
                                                  const torch::Tensor& bias, double eps,
                                                  int64_t act) {
  const Shape s = check_input(x, weight, bias, act);
  const int64_t C = s.c;
  const float* xp = x.data_ptr<float>();
  std::vector<float> shift;
  std::vector<double> s1, s2;
  channel_sums(xp, s, shift, s1, s2);
  auto opts = x.options().memory_format(at::MemoryFormat::Contiguous);
  auto mean = torch::empty({C}, opts), var = torch::empty({C}, opts),
       invstd = torch::empty({C}, opts);
  float* mp = mean.data_ptr<float>();
  float* vp = var.data_ptr<float>();
  float* ip = invstd.data_ptr<float>();
  const double m = static_cast<double>(s.count());
  for (int64_t c = 0; c < C; ++c) {
    const double d = s1[c] / m;
    const double v = std::max(0.0, s2[c] / m - d * d);
    mp[c] = static_cast<float>(shift[c] + d);
    vp[c] = static_cast<float>(v);
    ip[c] = static_cast<float>(1.0 / std::sqrt(v + eps));
  }
  std::vector<float> scale, offset;
  scale_offset(mp, ip, weight.data_ptr<float>(), bias.data_ptr<float>(), C, scale, offset);
  auto z = torch::empty_like(x);  // same memory format as x
  float* zp = z.data_ptr<float>();
  transform(act, xp, zp, s, scale, offset);
  return {z, mean, var, invstd};
}

// Returns (dx or an undefined tensor, dweight, dbias); dz is laid out like x.
std::vector<torch::Tensor> batch_norm_act_backward(const torch::Tensor& dz, const torch::Tensor& x,
                                                   const torch::Tensor& weight,
                                                   const torch::Tensor& bias,
                                                   const torch::Tensor& mean,
                                                   const torch::Tensor& invstd, int64_t act,
                                                   bool need_input_grad) {
  const Shape s = check_input(x, weight, bias, act);
  TORCH_CHECK(dz.sizes() == x.sizes() && dz.scalar_type() == at::kFloat &&
                  dz.is_contiguous(s.channels_last ? at::MemoryFormat::ChannelsLast
                                                   : at::MemoryFormat::Contiguous),
              "batch_norm_act: the gradient must be float32, contiguous in the input's format");
  TORCH_CHECK(mean.is_contiguous() && invstd.is_contiguous() && mean.numel() == s.c &&
                  invstd.numel() == s.c,
              "batch_norm_act: mean and invstd of shape (C,) expected");
  const int64_t C = s.c;
  const float* mp = mean.data_ptr<float>();
  const float* ip = invstd.data_ptr<float>();
  const float* wp = weight.data_ptr<float>();
  std::vector<float> scale, offset;
  scale_offset(mp, ip, wp, bias.data_ptr<float>(), C, scale, offset);
  std::vector<double> sg(C, 0.0), sgx(C, 0.0);
  torch::Tensor dx;
  if (need_input_grad) dx = torch::empty_like(x);
  backward(act, dz.data_ptr<float>(), x.data_ptr<float>(),
           need_input_grad ? dx.data_ptr<float>() : nullptr, s, scale, offset, mp, ip, wp,
           sg.data(), sgx.data(), need_input_grad);
  auto opts = x.options().memory_format(at::MemoryFormat::Contiguous);
  auto dweight = torch::empty({C}, opts), dbias = torch::empty({C}, opts);
  float* dwp = dweight.data_ptr<float>();
  float* dbp = dbias.data_ptr<float>();
  for (int64_t c = 0; c < C; ++c) {
    dwp[c] = static_cast<float>(sgx[c] * ip[c]);
    dbp[c] = static_cast<float>(sg[c]);
  }
  return {dx, dweight, dbias};
}

}  // namespace mmeff
