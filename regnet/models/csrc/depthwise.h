// What the cells' C++ steps share: vector math, and the efficient gate form's depthwise 3x3 convolutions
// (forward, transposed, kernels' gradients) over one image, for G gates at a time.
//
// Why kernels of their own: in PyTorch ops a cell step is a depthwise convolution per gate and input and a
// dozen element-wise passes over maps as large as the block's features, each bound by memory traffic. Here
// a pixel's gates, activations and state update are computed while its 3x3 neighbourhood is in registers
// and L1, so a step reads and writes each map once.
//
// Layouts: maps are [N, H, W, C] (a channels-last NCHW tensor's memory); kernels [G, 9, C], bias [G, C]
// (GateConv._folded's, see regnet/models/native.py); gate gradients of one image D [H*W, G, C]. An empty
// tensor stands for a zero state or a zero gradient.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cstdint>
#include <cstring>
#include <type_traits>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif
#include <vector>

namespace regnet {

constexpr int kTaps = 9;
constexpr int kLanes = 16;

// 16 channels as one value (a GCC/Clang vector): one AVX-512 register, two AVX2 or four SSE ones. The code is
// templated over T = Vec (16 channels at a time) or T = float (the channels left over), so that a pixel's
// accumulators stay in registers whatever the width, and the compiler never has to prove a loop safe to
// vectorise (it would not vectorise floorf, for one).
typedef float Vec __attribute__((vector_size(kLanes * sizeof(float))));
typedef int32_t IVec __attribute__((vector_size(kLanes * sizeof(int32_t))));

#define ALWAYS_INLINE inline __attribute__((always_inline))

ALWAYS_INLINE int32_t to_int(float x) { return static_cast<int32_t>(x); }
ALWAYS_INLINE IVec to_int(Vec x) { return __builtin_convertvector(x, IVec); }

template <class T>
ALWAYS_INLINE T load(const float* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

template <class T>
ALWAYS_INLINE void store(float* p, const T& v) {
  std::memcpy(p, &v, sizeof(T));
}

template <class T>
ALWAYS_INLINE T splat(float x) {
  return T{} + x;
}

// exp(x) by range reduction, x = n ln 2 + r with |r| <= ln 2 / 2, and a degree-6 polynomial for e^r fitted to
// the relative error (1.1e-7 in float32; degree 5's 2.2e-7 moved a shipped model's logits by 2e-5); round(x / ln 2)
// by adding and subtracting 1.5 * 2^23. The product by 2^n is one scalef on AVX-512, else built in the exponent bits.
ALWAYS_INLINE float times_two_to(float p, float n) { return p * __builtin_bit_cast(float, (to_int(n) + 127) << 23); }
ALWAYS_INLINE Vec times_two_to(Vec p, Vec n) {
#if defined(__AVX512F__)
  return reinterpret_cast<Vec>(_mm512_scalef_ps(reinterpret_cast<__m512>(p), reinterpret_cast<__m512>(n)));
#else
  return p * __builtin_bit_cast(Vec, (to_int(n) + 127) << 23);
#endif
}

template <class T>
ALWAYS_INLINE T exp_approx(T x) {
  x = x < splat<T>(-87.0f) ? splat<T>(-87.0f) : x;
  x = x > splat<T>(88.0f) ? splat<T>(88.0f) : x;
  const T n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  T r = x - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  T p = splat<T>(1.38368038e-3f);
  p = p * r + 8.37481581e-3f;
  p = p * r + 4.16682251e-2f;
  p = p * r + 1.66664198e-1f;
  p = p * r + 4.99999911e-1f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  return times_two_to(p, n);
}

// 1 / d for d >= 1. On AVX-512 by the 14-bit reciprocal and one Newton step (to about 1 ulp): a division
// costs ten times as much, and an LSTM step divides five times per value.
ALWAYS_INLINE float reciprocal(float d) { return 1.0f / d; }
ALWAYS_INLINE Vec reciprocal(Vec d) {
#if defined(__AVX512F__)
  const Vec r = reinterpret_cast<Vec>(_mm512_rcp14_ps(reinterpret_cast<__m512>(d)));
  return r * (2.0f - d * r);
#else
  return 1.0f / d;
#endif
}

template <class T>
ALWAYS_INLINE T sigmoid(T x) {
  return reciprocal(1.0f + exp_approx(-x));
}

template <class T>
ALWAYS_INLINE T tanh_approx(T x) {
  return 1.0f - 2.0f * reciprocal(1.0f + exp_approx(x * 2.0f));
}

// body(T{}, c0) over a pixel's channels: blocks of 16 as Vec, then the rest one by one as float.
template <class Body>
ALWAYS_INLINE void for_blocks(int64_t channels, Body&& body) {
  int64_t c0 = 0;
  for (; c0 + kLanes <= channels; c0 += kLanes) body(Vec{}, c0);
  for (; c0 < channels; ++c0) body(0.0f, c0);
}

struct Shape {
  int64_t n, h, w, c;
  int64_t map() const { return h * w * c; }
  int64_t at(int64_t y, int64_t x) const { return (y * w + x) * c; }
};

inline Shape shape_of(const at::Tensor& x) { return {x.size(0), x.size(2), x.size(3), x.size(1)}; }

inline const float* data_or_null(const at::Tensor& t) { return t.numel() ? t.data_ptr<float>() : nullptr; }
inline float* data_or_null(at::Tensor& t) { return t.numel() ? t.data_ptr<float>() : nullptr; }

// Image n's part of a map (null stays null).
template <class P>
ALWAYS_INLINE P* image(P* base, const Shape& s, int64_t n) {
  return base ? base + n * s.map() : nullptr;
}

inline void check_map(const at::Tensor& t, const Shape& s) {
  if (!t.numel()) return;
  TORCH_CHECK(t.dtype() == at::kFloat && t.device().is_cpu(), "maps must be float32 CPU tensors");
  TORCH_CHECK(t.dim() == 4 && t.size(0) == s.n && t.size(1) == s.c && t.size(2) == s.h && t.size(3) == s.w,
              "maps must have the input's shape");
  TORCH_CHECK(t.is_contiguous(at::MemoryFormat::ChannelsLast), "maps must be channels-last");
}

inline void check_kernels(const at::Tensor& k, const at::Tensor& bias, int gates, const Shape& s) {
  TORCH_CHECK(k.is_contiguous() && k.numel() == gates * kTaps * s.c, "kernels must be [gates, 9, C]");
  TORCH_CHECK(!bias.defined() || (bias.is_contiguous() && bias.numel() == gates * s.c), "bias must be [gates, C]");
}

inline at::Tensor empty_map(const Shape& s, const at::Tensor& like) {
  return at::empty({s.n, s.c, s.h, s.w}, like.options().memory_format(at::MemoryFormat::ChannelsLast));
}

inline at::Tensor none_like(const at::Tensor& like) { return at::empty({0}, like.options()); }

// A per-thread buffer of at least n floats, kept between calls: one image's working maps (hundreds of KB)
// allocated afresh on every call would come from mmap, and their page faults serialise the threads.
inline float* scratch(size_t n) {
  thread_local std::vector<float> buffer;
  if (buffer.size() < n) buffer.resize(n);
  return buffer.data();
}

// a[p][k] += the 3x3 taps of M around pixel (y, x + p) weighted by w[k, tap], for a channel block from c0, for
// P neighbouring pixels of a row (x + P - 1 < width): each kernel value loaded serves all P. A tap outside the
// image reads zero.
template <int G, int P, class T>
ALWAYS_INLINE void add_taps(const float* M, const float* w, const Shape& s, int64_t y, int64_t x, int64_t c0,
                            T (&a)[P][G]) {
#pragma GCC unroll 3
  for (int ky = 0; ky < 3; ++ky) {
    const int64_t yy = y + ky - 1;
    if (yy < 0 || yy >= s.h) continue;
#pragma GCC unroll 3
    for (int kx = 0; kx < 3; ++kx) {
      T m[P];
#pragma GCC unroll 4
      for (int p = 0; p < P; ++p) {
        const int64_t xx = x + p + kx - 1;
        m[p] = xx >= 0 && xx < s.w ? load<T>(M + s.at(yy, xx) + c0) : T{};
      }
#pragma GCC unroll 4
      for (int k = 0; k < G; ++k) {
        const T wk = load<T>(w + (k * kTaps + ky * 3 + kx) * s.c + c0);
#pragma GCC unroll 4
        for (int p = 0; p < P; ++p) a[p][k] += wk * m[p];
      }
    }
  }
}

// The G pre-activations at (y, x + p) for P neighbouring pixels: bias + kx * X + kh * H (H null: a zero state).
template <int G, int P, class T>
ALWAYS_INLINE void gate_sums(const float* X, const float* H, const float* kx, const float* kh, const float* bias,
                             const Shape& s, int64_t y, int64_t x, int64_t c0, T (&a)[P][G]) {
#pragma GCC unroll 4
  for (int k = 0; k < G; ++k) {
    const T b = load<T>(bias + k * s.c + c0);
#pragma GCC unroll 4
    for (int p = 0; p < P; ++p) a[p][k] = b;
  }
  add_taps<G, P, T>(X, kx, s, y, x, c0, a);
  if (H) add_taps<G, P, T>(H, kh, s, y, x, c0, a);
}

// How many neighbouring pixels of a row have their taps computed together: each kernel value loaded serves
// them all. A ConvLSTM step at P = 4 keeps its 16 accumulators and their operands in AVX-512's 32 registers;
// AVX2's 16 registers, two per 16 channels, take P = 2.
#if defined(__AVX512F__)
constexpr int kRun = 4;
#else
constexpr int kRun = 2;
#endif

template <int P, class Body>
ALWAYS_INLINE void for_run(int64_t y, int64_t x, int64_t channels, Body& body) {
  for_blocks(channels, [&](auto lanes, int64_t c0) { body(y, x, std::integral_constant<int, P>{}, lanes, c0); });
}

// body(y, x, P, T{}, c0) over an image's pixels, kRun neighbours of a row at a time, then a pair and a last one
// alone where the row leaves them, and their channel blocks; P arrives as std::integral_constant.
template <class Body>
ALWAYS_INLINE void for_pixel_runs(int64_t height, int64_t width, int64_t channels, Body&& body) {
  for (int64_t y = 0; y < height; ++y) {
    int64_t x = 0;
    if constexpr (kRun == 4)
      for (; x + 3 < width; x += 4) for_run<4>(y, x, channels, body);
    for (; x + 1 < width; x += 2) for_run<2>(y, x, channels, body);
    if (x < width) for_run<1>(y, x, channels, body);
  }
}

// dX (and dH, if dh is given) at (y, x + p) for P neighbouring pixels of a row: the transposed depthwise
// convolutions of D [H*W, G, C], the sum over taps and gates of w[k, tap] * D[the output pixel whose tap reads
// (y, x + p), k]. Each kernel value loaded serves the P pixels and each D value both sums; a tap outside the
// image reads `zeros` (G*C zeros). With kAddX (kAddH) the results are added to what dx (dh) holds.
template <int G, int P, bool kWithH, bool kAddX, bool kAddH, class T>
ALWAYS_INLINE void transposed_at(const float* D, const float* zeros, const float* kx, const float* kh,
                                 const Shape& s, int64_t y, int64_t x, int64_t c0, float* dx, float* dh) {
  T ax[P] = {}, ah[P] = {};
#pragma GCC unroll 3
  for (int ky = 0; ky < 3; ++ky) {
    const int64_t ry = y - ky + 1;
    if (ry < 0 || ry >= s.h) continue;
#pragma GCC unroll 3
    for (int kx_ = 0; kx_ < 3; ++kx_) {
      const float* d[P];
#pragma GCC unroll 4
      for (int p = 0; p < P; ++p) {
        const int64_t rx = x + p - kx_ + 1;
        d[p] = (rx >= 0 && rx < s.w ? D + (ry * s.w + rx) * G * s.c : zeros) + c0;
      }
#pragma GCC unroll 4
      for (int k = 0; k < G; ++k) {
        const int64_t w = (k * kTaps + ky * 3 + kx_) * s.c + c0;
        const T wx = load<T>(kx + w), wh = kWithH ? load<T>(kh + w) : T{};
#pragma GCC unroll 4
        for (int p = 0; p < P; ++p) {
          const T dk = load<T>(d[p] + k * s.c);
          ax[p] += wx * dk;
          if (kWithH) ah[p] += wh * dk;
        }
      }
    }
  }
#pragma GCC unroll 4
  for (int p = 0; p < P; ++p) {
    const int64_t q = s.at(y, x + p) + c0;
    store(dx + q, kAddX ? load<T>(dx + q) + ax[p] : ax[p]);
    if (kWithH) store(dh + q, kAddH ? load<T>(dh + q) + ah[p] : ah[p]);
  }
}

// X's (and H's) gradients of one image from D, over every pixel (see transposed_at).
template <int G, bool kAddX, bool kAddH>
void transposed(const float* D, const float* kx, const float* kh, const Shape& s, float* dx, float* dh) {
  const std::vector<float> zeros(G * s.c, 0.0f);
  for_pixel_runs(s.h, s.w, s.c, [&](int64_t y, int64_t x, auto pixels, auto lanes, int64_t c0) {
    constexpr int P = decltype(pixels)::value;
    using T = decltype(lanes);
    if (dh) transposed_at<G, P, true, kAddX, kAddH, T>(D, zeros.data(), kx, kh, s, y, x, c0, dx, dh);
    else transposed_at<G, P, false, kAddX, kAddH, T>(D, zeros.data(), kx, kh, s, y, x, c0, dx, nullptr);
  });
}

template <class T>
ALWAYS_INLINE void add_lanes(double* out, const T& v) {
  float lanes[sizeof(T) / sizeof(float)];
  std::memcpy(lanes, &v, sizeof(T));
  for (size_t j = 0; j < sizeof(T) / sizeof(float); ++j) out[j] += lanes[j];
}

// dkx[k, tap, block] (and dkh, if H is given) += the sum over the pixels p whose tap is inside the image of
// D[p, k] * X[p + tap] (and * H[p + tap]), in one pass over D; at the centre tap, which sees every pixel, the
// bias's gradient (the sum of D) too.
template <int G, bool kWithH, class T>
ALWAYS_INLINE void weight_grads_at(const float* D, const float* X, const float* H, const Shape& s, int ky, int kx,
                                   int64_t c0, double* dkx, double* dkh, double* db) {
  T ax[G] = {}, ah[G] = {}, ab[G] = {};
  const bool centre = ky == 1 && kx == 1;
  const int64_t y0 = ky == 0 ? 1 : 0, y1 = ky == 2 ? s.h - 1 : s.h;
  const int64_t x0 = kx == 0 ? 1 : 0, x1 = kx == 2 ? s.w - 1 : s.w;
  for (int64_t y = y0; y < y1; ++y)
    for (int64_t x = x0; x < x1; ++x) {
      const float* d = D + (y * s.w + x) * G * s.c + c0;
      const int64_t q = s.at(y + ky - 1, x + kx - 1) + c0;
      const T xq = load<T>(X + q), hq = kWithH ? load<T>(H + q) : T{};
#pragma GCC unroll 4
      for (int k = 0; k < G; ++k) {
        const T dk = load<T>(d + k * s.c);
        ax[k] += dk * xq;
        if (kWithH) ah[k] += dk * hq;
        if (centre) ab[k] += dk;
      }
    }
  for (int k = 0; k < G; ++k) {
    const int64_t w = (k * kTaps + ky * 3 + kx) * s.c + c0;
    add_lanes(dkx + w, ax[k]);
    if (kWithH) add_lanes(dkh + w, ah[k]);
    if (centre) add_lanes(db + k * s.c + c0, ab[k]);
  }
}

// The kernels' and bias's gradients of one image from D: into sums = [dkx (G*9*C), dkh (G*9*C), dbias (G*C)].
template <int G>
void weight_grads(const float* D, const float* X, const float* H, const Shape& s, double* sums) {
  const int64_t nk = G * kTaps * s.c;
  for (int ky = 0; ky < 3; ++ky)
    for (int kx = 0; kx < 3; ++kx)
      for_blocks(s.c, [&](auto lanes, int64_t c0) {
        using T = decltype(lanes);
        if (H) weight_grads_at<G, true, T>(D, X, H, s, ky, kx, c0, sums, sums + nk, sums + 2 * nk);
        else weight_grads_at<G, false, T>(D, X, nullptr, s, ky, kx, c0, sums, nullptr, sums + 2 * nk);
      });
}

// Per-thread float64 sums of the kernels' gradients, added up in the threads' order at the end, so that they
// do not depend on how at::parallel_for scheduled the images.
class ThreadSums {
 public:
  explicit ThreadSums(int64_t size) : size_(size), threads_(at::get_num_threads()), sums_(threads_ * size, 0.0) {}

  double* mine() {
    const int thread = at::get_thread_num();
    TORCH_CHECK(thread < threads_, "more threads than at the start of the backward");
    return sums_.data() + thread * size_;
  }

  // The totals as float32 tensors of the given sizes and shapes, in order.
  std::vector<at::Tensor> totals(const std::vector<std::vector<int64_t>>& shapes, const at::TensorOptions& opts) {
    auto total = at::zeros({size_}, opts.dtype(at::kDouble));
    double* out = total.data_ptr<double>();
    for (int t = 0; t < threads_; ++t)
      for (int64_t j = 0; j < size_; ++j) out[j] += sums_[t * size_ + j];
    auto grads = total.to(at::kFloat);
    std::vector<at::Tensor> parts;
    int64_t start = 0;
    for (const auto& shape : shapes) {
      int64_t n = 1;
      for (auto d : shape) n *= d;
      parts.push_back(grads.narrow(0, start, n).view(shape));
      start += n;
    }
    return parts;
  }

 private:
  int64_t size_;
  int threads_;
  std::vector<double> sums_;
};

}  // namespace regnet
