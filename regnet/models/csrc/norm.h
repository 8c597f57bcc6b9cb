// The regulator's norm on H (BN + ReLU, paper Fig. 3) fused with the concatenation [features, ReLU(BN(H))]
// that the fusion's 1x1 convolution reads, and folded into the cells' C++ steps.
//
// Why: in PyTorch ops the norm is a statistics pass, a normalising pass, a ReLU and a concatenation forward,
// and a ReLU backward, a BN backward and two gradient additions backward (H's and X2's gradients arrive
// from two places each), each a pass over a map as large as the block's features. Here the forward step
// also gives H's moments (per image, while H is in L2), one pass writes the concatenation, and the cell's
// backward adds the norm's gradient to H's and the features' gradient to X's as it reads them.
//
// The concatenation B is [N, H, W, 2C]: a pixel's features, then its ReLU(BN(H)).
#pragma once

#include "depthwise.h"

// BLAS's single-precision GEMM, which torch's CPU library carries (MKL or OpenBLAS) and exports. Weak: where a
// build of torch does not export it, the fusion's kernels report has_gemm() false and are not used.
extern "C" void sgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k,
                       const float* alpha, const float* a, const int* lda, const float* b, const int* ldb,
                       const float* beta, float* c, const int* ldc) __attribute__((weak));

namespace regnet {

// Column-major C [m, n] = op(A) [m, k] . op(B) [k, n] + beta * C, as BLAS.
inline void gemm(char transa, char transb, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
                 const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  const int mi = m, ni = n, ki = k, la = lda, lb = ldb, lc = ldc;
  const float one = 1.0f;
  sgemm_(&transa, &transb, &mi, &ni, &ki, &one, a, &la, b, &lb, &beta, c, &lc);
}

inline void check_fusion_weight(const at::Tensor& w, const Shape& s) {
  TORCH_CHECK(w.is_contiguous() && w.numel() == 2 * s.c * s.c && w.dtype() == at::kFloat,
              "the fusion's weight must be a contiguous float32 [C, 2C]");
}

// H's gradient through the norm (BN + ReLU), a pixel's channel block at a time. With y = scale * h + shift,
// g = the output's gradient where y > 0 (else 0), it is a * g - b0 - b1 * h: a = weight * invstd, and b0, b1
// the batch statistics' terms (zero for running statistics). coef = [scale, shift, a, b0, b1] x C. The output's
// gradient is the last C channels of a map of `stride` channels: dB's H half (stride 2C), or a plain map's.
struct NormGrad {
  const float *dB, *h, *coef;  // one image's (dB at its first channel of H); dB null: nothing reaches H
  int64_t stride;

  template <class T>
  ALWAYS_INLINE T at(const Shape& s, int64_t p, int64_t c0) const {
    const T hv = load<T>(h + p * s.c + c0), g = load<T>(dB + p * stride + c0);
    const T y = load<T>(coef + c0) * hv + load<T>(coef + s.c + c0);
    const T passed = y > T{} ? g : T{};
    return load<T>(coef + 2 * s.c + c0) * passed - load<T>(coef + 3 * s.c + c0) - load<T>(coef + 4 * s.c + c0) * hv;
  }
};

// A gradient map for NormGrad: the concatenation's [N, 2C, H, W] or a plain [N, C, H, W], channels-last.
inline void check_concat(const at::Tensor& B, const Shape& s) {
  TORCH_CHECK(B.dim() == 4 && B.size(0) == s.n && (B.size(1) == 2 * s.c || B.size(1) == s.c) && B.size(2) == s.h &&
                  B.size(3) == s.w && B.is_contiguous(at::MemoryFormat::ChannelsLast) && B.dtype() == at::kFloat,
              "the gradient must be a channels-last float32 [N, C or 2C, H, W]");
}

inline void check_norm(const at::Tensor& dB, const at::Tensor& h, const at::Tensor& coef, const Shape& s) {
  if (!dB.numel()) return;
  check_concat(dB, s);
  check_map(h, s);
  TORCH_CHECK(h.numel() && coef.is_contiguous() && coef.numel() == 5 * s.c, "H and coef [5, C] expected with dB");
}

// Image n's NormGrad; dB has C channels (a BN+ReLU's output) or 2C (the concatenation, its H half read).
inline NormGrad norm_grad(const at::Tensor& dB, const at::Tensor& h, const at::Tensor& coef, const Shape& s,
                          int64_t n) {
  if (!dB.numel()) return {nullptr, nullptr, nullptr, 0};
  const int64_t stride = dB.size(1);
  return {dB.data_ptr<float>() + n * stride * s.h * s.w + stride - s.c, h.data_ptr<float>() + n * s.map(),
          coef.defined() ? coef.data_ptr<float>() : nullptr, stride};
}

// dx of an image starts as the concatenation's features half (the features are X itself), for the cell's
// backward to add to.
inline void features_grad_into(const NormGrad& g, const Shape& s, float* dx) {
  const float* dB = g.dB - (g.stride - s.c);
  for (int64_t p = 0; p < s.h * s.w; ++p) std::memcpy(dx + p * s.c, dB + p * g.stride, s.c * sizeof(float));
}

// Adds one image's moments of H per channel to sums [3, C]: the sum, the image's count times its mean squared,
// and the sum of squared deviations from the image's mean (no cancellation: H is in L2 by then, so the
// second pass is cheap). See moments_of for the totals.
inline void add_moments(const float* h, const Shape& s, double* sums) {
  const int64_t hw = s.h * s.w;
  for_blocks(s.c, [&](auto lanes, int64_t c0) {
    using T = decltype(lanes);
    constexpr int L = sizeof(T) / sizeof(float);
    T total{};
    for (int64_t p = 0; p < hw; ++p) total += load<T>(h + p * s.c + c0);
    const T mean = total / static_cast<float>(hw);
    T squares{};
    for (int64_t p = 0; p < hw; ++p) {
      const T d = load<T>(h + p * s.c + c0) - mean;
      squares += d * d;
    }
    float t[L], sq[L];
    std::memcpy(t, &total, sizeof(T));
    std::memcpy(sq, &squares, sizeof(T));
    for (int j = 0; j < L; ++j) {
      sums[c0 + j] += t[j];
      sums[s.c + c0 + j] += static_cast<double>(t[j]) * t[j] / hw;
      sums[2 * s.c + c0 + j] += sq[j];
    }
  });
}

// [2, C]: the mean and biased variance over N*H*W from add_moments' sums (in float64: the between-image
// part, sum of count*mean^2 less total^2 / count, cancels there harmlessly).
inline at::Tensor moments_of(ThreadSums& sums, const Shape& s, const at::TensorOptions& opts) {
  auto t = sums.totals64();
  const double count = static_cast<double>(s.n * s.h * s.w);
  auto out = at::empty({2, s.c}, opts.dtype(at::kDouble));
  const double* v = t.data_ptr<double>();
  double* o = out.data_ptr<double>();
  for (int64_t c = 0; c < s.c; ++c) {
    o[c] = v[c] / count;
    o[s.c + c] = std::max(0.0, (v[2 * s.c + c] + v[s.c + c] - v[c] * v[c] / count) / count);
  }
  return out.to(at::kFloat);
}

}  // namespace regnet
