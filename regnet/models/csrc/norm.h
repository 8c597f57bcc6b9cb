// The regulator's norm on H (BN + ReLU, paper Fig. 3) fused with the concatenation [features, ReLU(BN(H))]
// that the fusion's 1x1 convolution reads, and folded into the cells' C++ steps.
//
// Why: in PyTorch ops the norm is a statistics pass, a normalising pass, a ReLU and a concatenation forward,
// and a ReLU backward, a BN backward and two gradient additions backward (H's and X2's gradients arrive
// from two places each), each a pass over a map as large as the block's features. Here the forward step
// also gives H's moments (per image, while H is in L2), the fusion builds the concatenation per image in L2
// instead of writing it out, and the cell's backward adds the norm's gradient to H's and the features'
// gradient to X's as it reads them.
//
// The concatenation B (and its gradient dB) is [N, H, W, 2C]: a pixel's features, then its ReLU(BN(H)).
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

  // The output's gradient at pixel p where the ReLU passed (scale * h + shift > 0), else 0; h's value into hv.
  template <class T>
  ALWAYS_INLINE T passed(const Shape& s, int64_t p, int64_t c0, const float* scale, const float* shift, T& hv) const {
    hv = load<T>(h + p * s.c + c0);
    const T g = load<T>(dB + p * stride + c0);
    return load<T>(scale + c0) * hv + load<T>(shift + c0) > T{} ? g : T{};
  }

  template <class T>
  ALWAYS_INLINE T at(const Shape& s, int64_t p, int64_t c0) const {
    T hv;
    const T g = passed<T>(s, p, c0, coef, coef + s.c, hv);
    return load<T>(coef + 2 * s.c + c0) * g - load<T>(coef + 3 * s.c + c0) - load<T>(coef + 4 * s.c + c0) * hv;
  }
};

// Adds one image's sums per channel of g and of g * (h - mean) to sums [2, C], g = NormGrad::passed: what the
// norm's backward needs before any pixel's gradient (see the Python side's _norm_backward).
inline void add_norm_sums(const NormGrad& g, const float* scale, const float* shift, const float* mean,
                          const Shape& s, double* sums) {
  for_blocks(s.c, [&](auto lanes, int64_t c0) {
    using T = decltype(lanes);
    T total{}, centred{}, hv;
    for (int64_t p = 0; p < s.h * s.w; ++p) {
      const T passed = g.template passed<T>(s, p, c0, scale, shift, hv);
      total += passed;
      centred += passed * (hv - load<T>(mean + c0));
    }
    add_lanes(sums + c0, total);
    add_lanes(sums + s.c + c0, centred);
  });
}

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

// A channel block in float64, for sums that must not lose precision: two registers of 8 doubles (a generic
// 16-double vector compiles to spills).
typedef double Double8 __attribute__((vector_size(8 * sizeof(double))));
struct WideVec {
  Double8 lo, hi;
  ALWAYS_INLINE WideVec operator+(const WideVec& o) const { return {lo + o.lo, hi + o.hi}; }
  ALWAYS_INLINE WideVec operator-(const WideVec& o) const { return {lo - o.lo, hi - o.hi}; }
  ALWAYS_INLINE WideVec operator*(const WideVec& o) const { return {lo * o.lo, hi * o.hi}; }
  ALWAYS_INLINE WideVec operator/(double d) const { return {lo / d, hi / d}; }
  ALWAYS_INLINE WideVec& operator+=(const WideVec& o) { return *this = *this + o; }
};
typedef float Float8 __attribute__((vector_size(8 * sizeof(float))));
ALWAYS_INLINE double widen(float x) { return x; }
// The halves by memcpy (register moves once compiled), not __builtin_shufflevector, which GCC has only from 12.
ALWAYS_INLINE WideVec widen(Vec x) {
  Float8 half[2];
  std::memcpy(half, &x, sizeof(Vec));
  return {__builtin_convertvector(half[0], Double8), __builtin_convertvector(half[1], Double8)};
}
ALWAYS_INLINE float narrow(double x) { return static_cast<float>(x); }
ALWAYS_INLINE Vec narrow(const WideVec& x) {
  const Float8 half[2] = {__builtin_convertvector(x.lo, Float8), __builtin_convertvector(x.hi, Float8)};
  Vec out;
  std::memcpy(&out, half, sizeof(Vec));
  return out;
}

// The mean and biased variance per channel of a map over N*H*W, from each image's mean and sum of squared
// deviations (computed while the image is in L2, so the second pass over it is cheap), combined in image order
// at the end in float64: no cancellation however far the mean is from 0, and no dependence on the threads.
class ImageMoments {
 public:
  ImageMoments(const Shape& s, bool wanted) : s_(s), values_(wanted ? s.n * 2 * s.c : 0) {}

  // Image n's moments, from its map h [H*W, C]: each row summed in float32, the rows in float64 (a float32 sum
  // over a whole stage-1 image is ~1e-6 off, and more where the mean is far from 0; float64 throughout is
  // several times slower).
  void add(const float* h, int64_t n) {
    double* out = values_.data() + n * 2 * s_.c;
    for_blocks(s_.c, [&](auto lanes, int64_t c0) {
      using T = decltype(lanes);
      using W = decltype(widen(lanes));
      constexpr int L = sizeof(W) / sizeof(double);  // 16 or 1
      W total{}, squares{};
      for (int64_t y = 0; y < s_.h; ++y) {
        T row{};
        for (int64_t x = 0; x < s_.w; ++x) row += load<T>(h + s_.at(y, x) + c0);
        total += widen(row);
      }
      const W mean = total / static_cast<double>(s_.h * s_.w);
      const T centre = narrow(mean);
      for (int64_t y = 0; y < s_.h; ++y) {
        T row{};
        for (int64_t x = 0; x < s_.w; ++x) {
          const T d = load<T>(h + s_.at(y, x) + c0) - centre;
          row += d * d;
        }
        squares += widen(row);
      }
      std::memcpy(out + c0, &mean, L * sizeof(double));  // squares are about `centre`, within 1e-7 of the mean
      std::memcpy(out + s_.c + c0, &squares, L * sizeof(double));
    });
  }

  // [2, C]: the mean and the biased variance.
  at::Tensor result(const at::TensorOptions& opts) const {
    auto out = at::empty({2, s_.c}, opts.dtype(at::kDouble));
    double* o = out.data_ptr<double>();
    const double hw = static_cast<double>(s_.h * s_.w);
    for (int64_t c = 0; c < s_.c; ++c) {
      double mean = 0.0, squares = 0.0;
      for (int64_t n = 0; n < s_.n; ++n) mean += values_[n * 2 * s_.c + c];  // the images' means
      mean /= s_.n;
      for (int64_t n = 0; n < s_.n; ++n) {
        const double d = values_[n * 2 * s_.c + c] - mean;
        squares += values_[n * 2 * s_.c + s_.c + c] + hw * d * d;
      }
      o[c] = mean, o[s_.c + c] = squares / (hw * s_.n);
    }
    return out.to(at::kFloat);
  }

 private:
  Shape s_;
  std::vector<double> values_;
};

}  // namespace regnet
